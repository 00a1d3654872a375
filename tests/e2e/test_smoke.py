def test_alice_creates_and_lists_a_mesh(alice, charlie):
    client = alice.appmesh()
    client.create_mesh(meshName="shop")
    assert [m["meshName"] for m in client.list_meshes()["meshes"]] == ["shop"]
    assert charlie.appmesh().list_meshes()["meshes"] == []
