"""Table 1 (kind retrieval) through the one table builder: CSV schema, RSUM, paper values only on a
match, deterministic output, refusals."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest

from softref.tables import CSV_COLUMNS, build_table, load_paper_values, paper_value
from softref.tables.paper import load_person_reference


def _result(seed: float, benchmark: str = "demo-coco") -> dict:
    i2t = {"R@1": 10.0 + seed, "R@5": 40.123456 + seed, "R@10": 70.0 + seed}
    t2i = {"R@1": 8.5 + seed, "R@5": 33.333333 + seed, "R@10": 66.666667 + seed}
    return {
        "benchmark": benchmark, "protocol": "image-text", "split": "test", "num_images": 24, "num_texts": 120,
        "i2t": i2t, "t2i": t2i, "rsum": sum(i2t.values()) + sum(t2i.values()),
    }


def _rows(tmp_path: Path) -> list[dict]:
    rows = []
    for k, (method, paper_model, paper_dataset) in enumerate(
        [("cusa", "CLIP-ViT-B/32", "coco-5k"), ("base", "CLIP-ViT-B/32", "coco-5k"), ("cusa", None, None)]
    ):
        path = tmp_path / f"eval{k}.json"
        path.write_text(json.dumps(_result(k)))
        rows.append({"eval": path, "student": "tiny" if paper_model else "other", "method": method,
                     "label": method, "experiment": f"e{k}", "benchmark": "demo-coco", "paper_model": paper_model,
                     "paper_method": method if paper_model else None, "paper_dataset": paper_dataset})
    return rows


def build_retrieval_table(table: str, rows: list[dict], csv_path: Path, md_path: Path, *, label: str) -> list[dict]:
    return build_table("retrieval", table, label=label, entries=rows, csv_path=csv_path, md_path=md_path)


def _entry(result: dict, **keys) -> dict:
    return {"result": result, "student": "s", "method": "m", "label": "m", "experiment": "e",
            "benchmark": result["benchmark"], **keys}


def _read(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as fh:
        return list(csv.DictReader(fh))


def test_csv_schema_rsum_and_paper_values(tmp_path: Path) -> None:
    rows = _rows(tmp_path)
    build_retrieval_table("table1", rows, tmp_path / "t.csv", tmp_path / "t.md",
                          label="Demo: synthetic benchmark, not MSCOCO")
    with open(tmp_path / "t.csv", newline="") as fh:
        assert next(csv.reader(fh)) == list(CSV_COLUMNS)
    table = _read(tmp_path / "t.csv")
    assert len(table) == 3 * 7
    groups: dict[tuple, dict] = {}
    for r in table:
        # The column's dataset: the paper's name where the row maps to the paper, else the benchmark.
        assert r["table"] == "table1" and r["dataset"] == ("coco-5k" if r["student"] == "tiny" else "demo-coco")
        groups.setdefault((r["student"], r["method"]), {})[(r["direction"], r["metric"])] = r
    assert set(groups) == {("tiny", "cusa"), ("tiny", "base"), ("other", "cusa")}
    for cells in groups.values():
        assert set(cells) == {(d, m) for d in ("i2t", "t2i") for m in ("R@1", "R@5", "R@10")} | {("both", "RSUM")}
        six = sum(float(c["value"]) for key, c in cells.items() if key[0] != "both")
        assert float(cells[("both", "RSUM")]["value"]) == pytest.approx(six, abs=1e-3)
    # Paper values: CLIP-ViT-B/32 on coco-5k, Table 1 (cusa i2t R@1 57.3, base RSUM 422.6).
    assert float(groups[("tiny", "cusa")][("i2t", "R@1")]["paper_value"]) == 57.3
    assert float(groups[("tiny", "base")][("both", "RSUM")]["paper_value"]) == 422.6
    assert all(c["paper_value"] != "" for c in groups[("tiny", "cusa")].values())
    assert all(c["paper_value"] == "" for c in groups[("other", "cusa")].values())
    # Values rounded to 4 decimals.
    assert groups[("tiny", "cusa")][("i2t", "R@5")]["value"] == "40.1235"


def test_markdown_names_table_label_and_data(tmp_path: Path) -> None:
    build_retrieval_table("table1", _rows(tmp_path), tmp_path / "t.csv", tmp_path / "t.md",
                          label="Demo: synthetic benchmark, not MSCOCO")
    md = (tmp_path / "t.md").read_text()
    assert md.startswith("# Table 1\n\nDemo: synthetic benchmark, not MSCOCO\n")
    assert "| tiny | cusa | 10.00 (57.30) |" in md
    assert "| other | cusa | - | - | - | - | - | - | - | 12.00 |" in md
    assert "Numbers measured on benchmark `demo-coco` (image-text, split `test`; 24 images, 120 texts)." in md
    assert "the same method with CLIP-ViT-B/32 (for tiny) on coco-5k (`demo-coco`)." in md
    lines = md.splitlines()
    # Rows sorted by student, then method in the paper's order (base before cusa).
    body = [line for line in lines if line.startswith("| ") and not line.startswith("| Student")]
    assert [line.split(" | ")[:2] for line in body] == [["| other", "cusa"], ["| tiny", "base"], ["| tiny", "cusa"]]


def test_output_is_deterministic_whatever_the_row_order(tmp_path: Path) -> None:
    rows = _rows(tmp_path)
    build_retrieval_table("table1", rows, tmp_path / "a.csv", tmp_path / "a.md", label="x")
    build_retrieval_table("table1", rows[::-1], tmp_path / "b.csv", tmp_path / "b.md", label="x")
    assert (tmp_path / "a.csv").read_bytes() == (tmp_path / "b.csv").read_bytes()
    assert (tmp_path / "a.md").read_bytes() == (tmp_path / "b.md").read_bytes()
    assert not list(tmp_path.glob("*.tmp-*"))


def test_two_datasets_make_two_column_blocks(tmp_path: Path) -> None:
    rows = [
        _entry(_result(0, "coco"), student="tiny", method="cusa", label="cusa", experiment="cusa-coco",
               paper_model="CLIP-ViT-B/32", paper_method="cusa", paper_dataset="coco-5k"),
        _entry(_result(1, "flickr"), student="tiny", method="cusa", label="cusa", experiment="cusa-flickr",
               paper_model="CLIP-ViT-B/32", paper_method="cusa", paper_dataset="flickr30k-1k"),
    ]
    long_rows = build_retrieval_table("table1", rows, tmp_path / "t.csv", tmp_path / "t.md", label="demo")
    assert len(long_rows) == 14
    md = (tmp_path / "t.md").read_text()
    header = next(line for line in md.splitlines() if line.startswith("| Student"))
    assert header.count("|") == 2 + 14 + 1
    assert "coco-5k RSUM" in header and "flickr30k-1k RSUM" in header
    flickr = {(r["direction"], r["metric"]): r["paper_value"] for r in long_rows if r["dataset"] == "flickr30k-1k"}
    assert flickr[("both", "RSUM")] == 526.3


def test_bad_rows_are_refused(tmp_path: Path) -> None:
    no_method = _entry(_result(0))
    del no_method["method"]
    with pytest.raises(ValueError, match="missing or empty \\['method'\\]"):
        build_retrieval_table("t", [no_method], tmp_path / "t.csv", tmp_path / "t.md", label="")
    bad = _result(0)
    bad["rsum"] += 1
    with pytest.raises(ValueError, match="not the sum of the six"):
        build_retrieval_table("t", [_entry(bad)], tmp_path / "t.csv", tmp_path / "t.md", label="")
    dup = _entry(_result(0))
    with pytest.raises(ValueError, match="two results"):
        build_retrieval_table("t", [dup, dup], tmp_path / "t.csv", tmp_path / "t.md", label="")
    absent = {k: v for k, v in _entry(_result(0)).items() if k != "result"}
    with pytest.raises(FileNotFoundError, match="absent.json"):
        build_retrieval_table("t", [{**absent, "eval": tmp_path / "absent.json"}],
                              tmp_path / "t.csv", tmp_path / "t.md", label="")
    # Two experiments of the same method are two rows when their labels differ, and refused when not.
    other = _entry(_result(1), experiment="f")
    with pytest.raises(ValueError, match="distinct labels"):
        build_retrieval_table("t", [_entry(_result(0)), other], tmp_path / "t.csv", tmp_path / "t.md", label="")
    two = build_retrieval_table("t2", [_entry(_result(0)), {**other, "label": "m seed 2"}], tmp_path / "u.csv",
                                tmp_path / "u.md", label="")
    assert {r["method"] for r in two} == {"m", "m seed 2"}
    # A JSON written for another experiment or benchmark is stale: refused with both names.
    stale = _result(0)
    stale["experiment"] = "old"
    with pytest.raises(ValueError, match="key 'experiment': expected 'e' \\(the table's entry\\), found 'old'"):
        build_retrieval_table("t", [_entry(stale)], tmp_path / "t.csv", tmp_path / "t.md", label="")
    assert not (tmp_path / "t.csv").exists()


def test_packaged_paper_values() -> None:
    values = load_paper_values()
    assert len(values) == 1367  # Tables 1-5 (448) + appendix Tables 8-11 (919)
    assert paper_value("CLIP-ViT-B/32", "cusa", "coco-5k", "t2i", "R@1") == 44.2
    assert paper_value("CLIP-ViT-B/32", "usa", "coco-5k", "both", "RSUM", table="table5") is not None
    assert paper_value("CLIP-ViT-B/32", "usa", "coco-5k", "i2t", "R@1") == 56.3  # appendix Table 8
    assert paper_value("CLIP-ViT-B/32", "usa", "coco-5k", "i2t", "R@1", table="table5") == 56.3
    assert paper_value("CLIP-ViT-B/32", "usa", "sop", "both", "RSUM") is None
    assert paper_value(None, "cusa", "coco-5k", "i2t", "R@1") is None
    person = load_person_reference()
    irra = next(r for r in person if r["method"] == "IRRA" and r["dataset"] == "cuhk-pedes")
    assert irra["R@1"] == 73.38 and next(r for r in person if r["method"] == "CFine")["mAP"] is None


def _seeded(seed: int, rsum_shift: float, experiment: str, method: str, ci: float | None = None) -> dict:
    result = _result(rsum_shift)
    result["experiment"], result["seed"] = experiment, seed
    rows = []
    for d in ("i2t", "t2i"):
        for m in ("R@1", "R@5", "R@10"):
            row = {"dataset": "demo-coco", "direction": d, "metric": m, "value": result[d][m], "variant": ""}
            if ci is not None:
                row.update(ci_low=result[d][m] - ci, ci_high=result[d][m] + ci)
            rows.append(row)
    rows.append({"dataset": "demo-coco", "direction": "both", "metric": "RSUM", "value": result["rsum"], "variant": ""})
    result["metrics"] = rows
    return {"result": result, "student": "s", "method": method, "label": method, "experiment": experiment,
            "seed": seed, "benchmark": "demo-coco"}


def test_seeds_give_the_mean_and_a_t_interval(tmp_path: Path) -> None:
    """Three seeds of one experiment: their mean, std and the 95 % t-interval of the mean; a row whose
    interval clears the baseline's is marked, one whose interval overlaps it is not."""
    from scipy.stats import t

    entries = [_seeded(s, shift, "base", "base") for s, shift in ((1, 0.0), (2, 1.0), (3, 2.0))]
    entries += [_seeded(s, shift, "cusa", "cusa") for s, shift in ((1, 10.0), (2, 10.5), (3, 11.0))]
    entries += [_seeded(s, shift, "csa", "csa") for s, shift in ((1, 0.5), (2, 3.0), (3, 1.5))]
    rows = build_table("retrieval", "table1", label="x", entries=entries, csv_path=tmp_path / "t.csv",
                       md_path=tmp_path / "t.md", baseline="base")
    got = {(r["method"], r["direction"], r["metric"]): r for r in rows}
    base = got[("base", "i2t", "R@1")]
    assert base["value"] == pytest.approx(11.0) and base["seeds"] == 3 and base["std"] == pytest.approx(1.0)
    half = t.ppf(0.975, 2) * 1.0 / 3 ** 0.5
    assert (base["ci_low"], base["ci_high"]) == (pytest.approx(11.0 - half), pytest.approx(11.0 + half))
    assert base["interval"] == "seeds" and base["vs_baseline"] == ""
    assert got[("cusa", "i2t", "R@1")]["vs_baseline"] == "above"
    assert got[("csa", "i2t", "R@1")]["vs_baseline"] == ""  # overlapping intervals: not supported
    md = (tmp_path / "t.md").read_text()
    assert "| s | cusa (3 seeds) | 20.50 ± 1.24* |" in md
    assert "| s | csa (3 seeds) | 11.67 ±" in md and "n = 3 runs" in md and "baseline row's (base)" in md
    csv_rows = _read(tmp_path / "t.csv")
    assert list(csv_rows[0]) == list(CSV_COLUMNS) and {r["seeds"] for r in csv_rows} == {"3"}
    # A JSON of another seed than its entry's is stale.
    stale = _seeded(4, 0.0, "base", "base")
    stale["seed"] = 5
    with pytest.raises(ValueError, match=r"key 'seed': expected 5 \(the table's entry\), found 4"):
        build_table("retrieval", "table1", label="x", entries=[stale], csv_path=tmp_path / "u.csv",
                    md_path=tmp_path / "u.md")
    with pytest.raises(ValueError, match="two results for experiment 'base', benchmark 'demo-coco', seed 1"):
        build_table("retrieval", "table1", label="x", entries=entries[:1] * 2, csv_path=tmp_path / "u.csv",
                    md_path=tmp_path / "u.md")


def test_a_single_run_keeps_its_bootstrap_interval(tmp_path: Path) -> None:
    entries = [_seeded(1, 0.0, "base", "base", ci=0.5), _seeded(1, 3.0, "cusa", "cusa", ci=0.5),
               _seeded(1, 0.4, "csa", "csa", ci=0.5)]
    rows = build_table("retrieval", "table1", label="x", entries=entries, csv_path=tmp_path / "t.csv",
                       md_path=tmp_path / "t.md")
    got = {(r["method"], r["direction"], r["metric"]): r for r in rows}
    assert got[("cusa", "t2i", "R@5")]["interval"] == "queries" and got[("cusa", "t2i", "R@5")]["seeds"] == 1
    assert (got[("cusa", "t2i", "R@5")]["ci_low"], got[("cusa", "t2i", "R@5")]["ci_high"]) == (
        pytest.approx(36.333333 - 0.5), pytest.approx(36.333333 + 0.5))
    assert got[("cusa", "t2i", "R@5")]["vs_baseline"] == "above" and got[("csa", "t2i", "R@5")]["vs_baseline"] == ""
    assert got[("cusa", "both", "RSUM")]["interval"] == ""  # no interval given for it: none shown
    md = (tmp_path / "t.md").read_text()
    assert "| s | cusa | 13.00 ± 0.50* |" in md and "bootstrap over queries" in md
