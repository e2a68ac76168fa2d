"""`softref neighbours --references FILE --identity NAME`: nearest identities through the FAISS index."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from softref.cli import main
from softref.references.index import build_neighbour_index
from test_references import build, make_dataset


@pytest.fixture()
def layout(tmp_path: Path) -> Path:
    """results/data/<ds>/ manifests and results/references/<ds>/<pair>.{h5,faiss}, as the DAG lays them out."""
    results = tmp_path / "results"
    ds = make_dataset(results / "data" / "demo")
    refs = build(ds, results / "references" / "demo" / "imgteacher+txtteacher.h5")
    build_neighbour_index(refs, refs.with_suffix(".faiss"), refs.with_suffix(".neighbours.parquet"), k=3)
    return refs


def test_identity_neighbours_match_brute_force(layout: Path, capsys: pytest.CaptureFixture) -> None:
    from softref.references.build import References

    refs = References.open(layout)
    row = refs.index("p003")
    scores = refs.multimodal @ refs.multimodal[row]
    scores[row] = -np.inf
    expected = [refs.identities[i] for i in np.argsort(-scores, kind="stable")[:4]]

    assert main(["neighbours", "--references", str(layout), "--identity", "p003", "--k", "4"]) == 0
    out = capsys.readouterr().out
    assert out.splitlines()[0].startswith("identity p003 (")
    listed = [line.split()[2] for line in out.splitlines() if line.startswith("    ")]
    assert listed == expected
    assert "captions, e.g. 'caption" in out  # the manifest next to the references was found


def test_identity_neighbours_errors(layout: Path, capsys: pytest.CaptureFixture) -> None:
    assert main(["neighbours", "--references", str(layout), "--identity", "nobody"]) == 2
    assert "nobody" in capsys.readouterr().err
    assert main(["neighbours", "--references", str(layout)]) == 2
    assert "--identity" in capsys.readouterr().err
    assert main(["neighbours", "--references", str(layout.with_name("absent.h5")), "--identity", "p001"]) == 2
    assert "absent.h5" in capsys.readouterr().err
