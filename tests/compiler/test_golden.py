"""Golden files: every case compiles to exactly its reviewed JSON (UPDATE_GOLDEN=1 rewrites)."""

import os

import pytest

from tests.compiler.cases import TESTDATA, case_names, compile_case, render


@pytest.mark.parametrize("case", case_names())
def test_golden(case):
    snapshots = compile_case(case)
    for snapshot in snapshots:
        assert snapshot.consistent() == [], snapshot.node_id
    text = render(snapshots)
    golden = TESTDATA / f"{case}.golden.json"
    if os.environ.get("UPDATE_GOLDEN"):
        golden.write_text(text)
    assert golden.exists(), f"no {golden.name}; run with UPDATE_GOLDEN=1 and review the diff"
    assert text == golden.read_text(), (
        f"{case} differs from {golden.name}; review, then UPDATE_GOLDEN=1"
    )


def test_every_case_has_a_golden_and_vice_versa():
    inputs = set(case_names())
    goldens = {p.name.removesuffix(".golden.json") for p in TESTDATA.glob("*.golden.json")}
    assert goldens == inputs
