"""The OpenAPI document and its Swagger UI, served with self-hosted assets."""

import re
import subprocess
import sys
from pathlib import Path

import requests

from tests.api.test_native_endpoints import ALL_ENDPOINTS as ENDPOINTS

ROOT = Path(__file__).resolve().parents[2]


def test_schema_generates_and_validates_without_warnings(tmp_path):
    out = tmp_path / "schema.yaml"
    result = subprocess.run(
        [sys.executable, "manage.py", "spectacular", "--validate", "--fail-on-warn", "--file", out],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    assert "Warning" not in result.stderr and "Error" not in result.stderr, result.stderr
    assert out.read_text().startswith("openapi: 3.")


def test_schema_is_served_and_documents_every_endpoint(api_server):
    response = requests.get(api_server.url + "/api/v1/schema/?format=json", timeout=30)
    assert response.status_code == 200, response.text
    doc = response.json()
    assert doc["openapi"].startswith("3.")
    operations = [
        (method.upper(), path)
        for path, item in doc["paths"].items()
        for method in item
        if method != "parameters"
    ]
    assert len(operations) == len(ENDPOINTS), operations
    assert ("GET", "/api/v1/tenants/me/") in operations
    assert ("POST", "/api/v1/access-keys/{key_id}/revoke/") in operations
    scheme = doc["components"]["securitySchemes"]["accessKey"]
    assert scheme == {**scheme, "type": "http", "scheme": "bearer"}
    # No operation is left public by accident.
    for path, item in doc["paths"].items():
        for method, op in item.items():
            assert op.get("security") == [{"accessKey": []}], (method, path)


def test_swagger_ui_loads_with_assets_from_static(api_server):
    page = requests.get(api_server.url + "/api/v1/schema/ui/", timeout=30)
    assert page.status_code == 200
    assert page.headers["Content-Type"].startswith("text/html")
    assert "/api/v1/schema/" in page.text
    assets = re.findall(r'(?:src|href)="([^"]+)"', page.text)
    assert any(a.endswith("swagger-ui-bundle.js") for a in assets), assets
    assert any(a.endswith("swagger-ui.css") for a in assets), assets
    for asset in assets:
        assert asset.startswith("/static/drf_spectacular_sidecar/"), asset  # never a CDN
        served = requests.get(api_server.url + asset, timeout=30)
        assert served.status_code == 200, asset
        kind = served.headers["Content-Type"]
        if asset.endswith(".js"):
            assert "javascript" in kind and len(served.content) > 10_000, (asset, kind)
        elif asset.endswith(".css"):
            assert kind.startswith("text/css"), (asset, kind)


def test_static_view_serves_only_static_files(api_server):
    for path in (
        "/static/nosuch.js",
        "/static/%2e%2e/meshapi/settings.py",
        "/static/..%2f..%2fmeshapi/settings.py",
    ):
        response = requests.get(api_server.url + path, timeout=30)
        assert response.status_code in (400, 404), (path, response.status_code)
        assert "SECRET_KEY" not in response.text
    posted = requests.post(
        api_server.url + "/static/drf_spectacular_sidecar/swagger-ui-dist/swagger-ui.css",
        timeout=30,
    )
    assert posted.status_code in (403, 404, 405)
