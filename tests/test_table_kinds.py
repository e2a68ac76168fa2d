"""Table kinds: derived rows, paper values only on a match (the declared paper role), errors, determinism."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest

from softref.tables import CSV_COLUMNS, TABLE_KINDS, build_table, display_title
from softref.tables.paper import person_reference_value

MODEL = "CLIP-ViT-B/32"


def _m(dataset: str, direction: str, metric: str, value: float, variant: str = "") -> dict:
    return {"dataset": dataset, "direction": direction, "metric": metric, "value": value, "variant": variant}


def _json(protocol: str, benchmark: str, experiment: str, metrics: list[dict], paper_dataset: str | None = None,
          **extra) -> dict:
    return {"benchmark": benchmark, "protocol": protocol, "split": "test", "dataset": benchmark,
            "paper_dataset": paper_dataset, "experiment": experiment, "metrics": metrics, **extra}


def _entry(result: dict, *, student: str = "tiny", method: str = "cusa", label: str | None = None,
           paper_model: str | None = None, paper_method: str | None = "same", tmp: Path | None = None) -> dict:
    # The paper role: by default the method itself where a paper model is named (the CUSA presets).
    role = (method if paper_model else None) if paper_method == "same" else paper_method
    entry = {"student": student, "paper_model": paper_model, "experiment": result["experiment"], "method": method,
             "label": label or method, "paper_method": role, "benchmark": result["benchmark"],
             "paper_dataset": result["paper_dataset"]}
    if tmp is None:
        entry["result"] = result
    else:
        path = tmp / f"{result['experiment']}-{result['benchmark']}.json"
        path.write_text(json.dumps(result))
        entry["eval"] = path
    return entry


def _eccv(experiment: str, benchmark: str, paper_dataset: str | None, seed: float) -> dict:
    dataset = paper_dataset or benchmark
    metrics = [_m(dataset, d, m, seed + 10 * i + j) for i, d in enumerate(("i2t", "t2i"))
               for j, m in enumerate(("mAP@R", "R-P", "R@1"))]
    return _json("eccv", benchmark, experiment, metrics, paper_dataset, num_images=20, num_texts=100)


def _ir(experiment: str, benchmark: str, paper_dataset: str | None, value: float) -> dict:
    return _json("image-retrieval", benchmark, experiment, [_m(paper_dataset or benchmark, "i2i", "R@1", value)],
                 paper_dataset, num_images=30)


def _sts(experiment: str, benchmark: str, paper_dataset: str | None, tasks: dict[str, float]) -> dict:
    rows = [_m(t, "t2t", "spearman", v) for t, v in tasks.items()]
    rows.append(_m("avg", "t2t", "spearman", sum(tasks.values()) / len(tasks)))
    return _json("sts", benchmark, experiment, rows, paper_dataset, num_pairs=50)


def _image_text(experiment: str, benchmark: str, paper_dataset: str | None, rsum: float, rows: bool) -> dict:
    i2t = {"R@1": rsum / 6, "R@5": rsum / 6, "R@10": rsum / 6}
    result = _json("image-text", benchmark, experiment, [], paper_dataset, i2t=i2t, t2i=dict(i2t), rsum=rsum)
    if rows:
        result["metrics"] = [_m(paper_dataset or benchmark, "both", "RSUM", rsum)]
    else:
        del result["metrics"]
    return result


def _person(experiment: str, benchmark: str, paper_dataset: str | None, seed: float, refined: bool) -> dict:
    dataset = paper_dataset or benchmark
    metrics = [_m(dataset, "t2i", m, seed + k) for k, m in enumerate(("R@1", "R@5", "R@10", "mAP", "mINP"))]
    if refined:
        metrics += [_m(dataset, "t2i", m, seed + 1 + k, "refined")
                    for k, m in enumerate(("R@1", "R@5", "R@10", "mAP", "mINP"))]
    return _json("person", benchmark, experiment, metrics, paper_dataset, num_queries=12, num_gallery=40)


def _read(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as fh:
        return list(csv.DictReader(fh))


def _build(tmp_path: Path, kind: str, entries: list[dict], table: str = "t", label: str = "demo") -> tuple:
    rows = build_table(kind, table, label=label, entries=entries, csv_path=tmp_path / "t.csv",
                       md_path=tmp_path / "t.md")
    return rows, _read(tmp_path / "t.csv"), (tmp_path / "t.md").read_text()


def _index(rows: list[dict]) -> dict[tuple, dict]:
    return {(r["student"], r["method"], r["dataset"], r["direction"], r["metric"]): r for r in rows}


def test_eccv_six_numbers_and_paper_values_only_when_mapped(tmp_path: Path) -> None:
    entries = [
        _entry(_eccv("cusa-coco", "eccv", "eccv-caption", 1.0), method="cusa", paper_model=MODEL, tmp=tmp_path),
        _entry(_eccv("base-coco", "eccv", "eccv-caption", 2.0), method="base", paper_model=MODEL, tmp=tmp_path),
        _entry(_eccv("demo-cusa", "demo-eccv", None, 3.0), student="other", method="cusa", paper_model=MODEL),
    ]
    rows, table, md = _build(tmp_path, "eccv", entries, table="table2", label="Demo: not the paper's data")
    with open(tmp_path / "t.csv", newline="") as fh:
        assert next(csv.reader(fh)) == list(CSV_COLUMNS)
    assert len(rows) == len(table) == 18
    got = _index(table)
    assert float(got[("tiny", "cusa", "eccv-caption", "i2t", "mAP@R")]["value"]) == 1.0
    assert float(got[("tiny", "cusa", "eccv-caption", "t2i", "R@1")]["value"]) == 13.0
    assert got[("tiny", "cusa", "eccv-caption", "t2i", "R@1")]["paper_value"] == "85.7"
    assert got[("tiny", "base", "eccv-caption", "i2t", "mAP@R")]["paper_value"] == "28.5"
    # Demo entry (no paper dataset) never gets a paper value, even with a paper model.
    assert all(r["paper_value"] == "" for r in table if r["student"] == "other")
    assert md.startswith("# Table 2\n\nDemo: not the paper's data\n\n")
    assert "| tiny | cusa | 1.00 (29.60) |" in md
    assert "eccv-caption i2t mAP@R" in md
    body = [line.split(" | ")[:2] for line in md.splitlines() if line.startswith("| ") and "Student" not in line]
    assert body == [["| other", "cusa"], ["| tiny", "base"], ["| tiny", "cusa"]]


def test_image_retrieval_average_needs_every_benchmark(tmp_path: Path) -> None:
    values = {"cub": 40.0, "sop": 50.0, "inshop": 30.0, "inaturalist": 44.0}
    entries = [_entry(_ir("base-coco", f"bm-{ds}", ds, v), method="base", paper_model=MODEL)
               for ds, v in values.items()]
    # An experiment lacking one benchmark gets no average.
    entries += [_entry(_ir("cusa-coco", f"bm-{ds}", ds, 1.0), method="cusa", paper_model=MODEL)
                for ds in ("cub", "sop", "inshop")]
    rows, table, md = _build(tmp_path, "image-retrieval", entries, table="table3")
    got = _index(rows)
    assert got[("tiny", "base", "avg", "i2i", "R@1")]["value"] == pytest.approx(41.0)
    assert got[("tiny", "base", "avg", "i2i", "R@1")]["paper_value"] == 40.7
    assert got[("tiny", "base", "cub", "i2i", "R@1")]["paper_value"] == 41.5
    assert ("tiny", "cusa", "avg", "i2i", "R@1") not in got
    assert got[("tiny", "cusa", "sop", "i2i", "R@1")]["paper_value"] == 56.5
    header = next(line for line in md.splitlines() if line.startswith("| Student"))
    assert header == "| Student | Method | cub R@1 | sop R@1 | inshop R@1 | inaturalist R@1 | avg R@1 |"
    assert "| tiny | cusa | 1.00 (49.60) | 1.00 (56.50) | 1.00 (34.10) | - | - |" in md


def test_image_retrieval_average_of_other_sets_has_no_paper_value(tmp_path: Path) -> None:
    entries = [_entry(_ir("base-coco", f"bm-{ds}", ds, v), method="base", paper_model=MODEL)
               for ds, v in (("cub", 10.0), ("sop", 20.0))]
    entries += [_entry(_ir("demo", f"demo-{k}", None, v), student="demo", method="base")
                for k, v in (("a", 1.0), ("b", 2.0))]
    rows, _, md = _build(tmp_path, "image-retrieval", entries[:2], table="table3")
    avg = _index(rows)[("tiny", "base", "avg", "i2i", "R@1")]
    assert avg["value"] == pytest.approx(15.0) and avg["paper_value"] is None
    rows, table, md = _build(tmp_path, "image-retrieval", entries[2:], table="table3")
    assert _index(rows)[("demo", "base", "avg", "i2i", "R@1")]["value"] == pytest.approx(1.5)
    assert all(r["paper_value"] == "" for r in table)
    assert "no paper values shown" in md


def test_sts_rows_as_they_are(tmp_path: Path) -> None:
    real = {"sts12": 60.0, "sts13": 61.0, "sts14": 62.0, "sts15": 63.0, "sts16": 64.0, "sts12-16": 62.0,
            "stsb": 70.0, "sickr": 72.0}
    entries = [
        _entry(_sts("cusa-coco", "senteval", "sts", real), paper_model=MODEL),
        _entry(_sts("demo", "demo-sts", None, {"task-a": 50.0, "task-b": 60.0}), student="demo"),
    ]
    rows, table, md = _build(tmp_path, "sts", entries, table="table4")
    got = _index(rows)
    assert len(rows) == 9 + 3
    assert got[("tiny", "cusa", "stsb", "t2t", "spearman")]["paper_value"] == 78.3
    assert got[("tiny", "cusa", "avg", "t2t", "spearman")]["paper_value"] == 73.2
    assert got[("tiny", "cusa", "sts12", "t2t", "spearman")]["paper_value"] == 63.6  # appendix Table 11
    assert got[("demo", "cusa", "avg", "t2t", "spearman")]["value"] == 55.0
    assert got[("demo", "cusa", "avg", "t2t", "spearman")]["paper_value"] is None
    header = next(line for line in md.splitlines() if line.startswith("| Student"))
    cols = header.split(" | ")[2:]
    assert cols[0] == "sts12 spearman" and cols[5] == "sts12-16 spearman" and cols[-1] == "avg spearman |"
    # An average over other tasks than the paper's gets no paper value.
    partial = _sts("cusa-coco", "senteval", "sts", {"stsb": 70.0})
    rows, _, _ = _build(tmp_path, "sts", [_entry(partial, paper_model=MODEL)], table="table4")
    assert _index(rows)[("tiny", "cusa", "avg", "t2t", "spearman")]["paper_value"] is None
    assert _index(rows)[("tiny", "cusa", "stsb", "t2t", "spearman")]["paper_value"] == 78.3


def _ablation_entries(method: str, seed: float, mapped: bool) -> list[dict]:
    ex = f"{method}-coco" if mapped else f"demo-{method}"
    pd = (lambda name: name) if mapped else (lambda name: None)
    model = MODEL if mapped else None
    results = [
        _image_text(ex, "coco", pd("coco-5k"), 400.0 + seed, rows=False),
        _image_text(ex, "flickr", pd("flickr30k-1k"), 500.0 + seed, rows=True),
        _eccv(ex, "eccv", pd("eccv-caption"), seed),
        # The seven tasks of the paper's Avg. (and their STS12-16 mean), as the evaluator writes them.
        _sts(ex, "senteval", pd("sts"), {**{f"sts1{y}": 70.0 for y in range(2, 7)},
                                        "sts12-16": 70.0, "stsb": 60.0 + seed, "sickr": 80.0}),
    ]
    results += [_ir(ex, f"bm-{ds}", pd(ds), 40.0 + seed + k)
                for k, ds in enumerate(("cub", "sop", "inshop", "inaturalist"))]
    student = "tiny" if mapped else "demo"
    return [_entry(r, student=student, method=method, label=method.upper(), paper_model=model) for r in results]


def test_ablation_summaries_use_the_paper_vocabulary(tmp_path: Path) -> None:
    entries = _ablation_entries("base", 0.0, True) + _ablation_entries("cusa", 1.0, True)
    entries += _ablation_entries("cusa", 2.0, False)
    rows, table, md = _build(tmp_path, "ablation", entries, table="table5")
    got = _index(rows)
    keys = {(r["dataset"], r["direction"], r["metric"]) for r in rows if r["method"] == "BASE"}
    assert keys == {("coco-5k", "both", "RSUM"), ("flickr30k-1k", "both", "RSUM"), ("eccv-caption", "both", "avg"),
                    ("image-retrieval", "i2i", "avg R@1"), ("sts", "t2t", "avg spearman")}
    base = {k[2:]: v for k, v in got.items() if k[:2] == ("tiny", "BASE")}
    assert base[("coco-5k", "both", "RSUM")]["value"] == 400.0
    assert base[("coco-5k", "both", "RSUM")]["paper_value"] == 422.6
    assert base[("flickr30k-1k", "both", "RSUM")]["paper_value"] == 520.0
    # ECCV: mean of 0,1,2,10,11,12.
    assert base[("eccv-caption", "both", "avg")]["value"] == pytest.approx(6.0)
    assert base[("eccv-caption", "both", "avg")]["paper_value"] == 52.6
    assert base[("image-retrieval", "i2i", "avg R@1")]["value"] == pytest.approx(41.5)
    assert base[("image-retrieval", "i2i", "avg R@1")]["paper_value"] == 40.7
    assert base[("sts", "t2t", "avg spearman")]["value"] == pytest.approx(70.0)
    assert base[("sts", "t2t", "avg spearman")]["paper_value"] == 69.4
    cusa = {k[2:]: v for k, v in got.items() if k[:2] == ("tiny", "CUSA")}
    assert cusa[("coco-5k", "both", "RSUM")]["paper_value"] == 429.7
    demo = [r for r in rows if r["experiment"] == "demo-cusa"]
    assert len(demo) == 5 and all(r["paper_value"] is None for r in demo)
    assert {r["dataset"] for r in demo} == {"coco", "flickr", "eccv", "image-retrieval", "sts"}
    header = next(line for line in md.splitlines() if line.startswith("| Student"))
    assert header.startswith("| Student | Method | coco-5k RSUM | flickr30k-1k RSUM | coco RSUM | flickr RSUM |")
    assert header.endswith("| image-retrieval avg R@1 | sts avg spearman |")
    assert "| tiny | BASE | 400.00 (422.60) |" in md


def test_person_variants_paper_value_and_references(tmp_path: Path) -> None:
    entries = [
        _entry(_person("mmref-rstp", "rstp", "rstpreid", 50.0, refined=True), method="mmref", label="MMRef",
               paper_model="ViT-B/16", paper_method="MMRef"),
        _entry(_person("base-rstp", "rstp", "rstpreid", 40.0, refined=False), method="base", label="Base",
               paper_model="ViT-B/16"),
    ]
    rows, table, md = _build(tmp_path, "person", entries, table="mmref/table1", label="RSTPReid")
    got = _index(rows)
    assert len(rows) == 15
    refined = got[("tiny", "MMRef + refinement", "rstpreid", "t2i", "R@1")]
    assert refined["value"] == 51.0 and refined["paper_value"] == 56.2 and refined["variant"] == "refined"
    assert got[("tiny", "MMRef + refinement", "rstpreid", "t2i", "mAP")]["paper_value"] is None
    assert got[("tiny", "MMRef", "rstpreid", "t2i", "R@1")]["paper_value"] is None
    assert all(r["paper_value"] is None for r in rows if r["label"] == "Base")
    assert md.startswith("# MMRef Table 1\n\nRSTPReid\n\n")
    assert "| tiny | MMRef + refinement | 51.00 (56.20) | 52.00 | 53.00 | 54.00 | 55.00 |" in md
    assert "| reference (IRRA README) | IRRA | 60.20 | 81.30 | 88.20 | 47.17 | 25.28 |" in md
    assert "| reference (RaSa README) | RaSa | 66.90 | 86.50 | 91.35 | 52.31 | - |" in md
    assert "cuhk-pedes" not in md.split("Numbers measured")[0]
    body = [line.split(" | ")[1] for line in md.splitlines() if line.startswith("| tiny")]
    assert body == ["Base", "MMRef", "MMRef + refinement"]


def test_person_demo_gets_no_paper_values_nor_references(tmp_path: Path) -> None:
    entries = [_entry(_person("mmref-demo", "demo-person", None, 50.0, refined=True), method="mmref",
                      paper_method="MMRef")]
    rows, table, md = _build(tmp_path, "person", entries)
    assert all(r["paper_value"] == "" for r in table)
    assert "reference (" not in md and "IRRA" not in md


def _cross_domain_entries(refined: bool = False) -> list[dict]:
    """Two MMRef models (one label) trained on CUHK-PEDES and ICFG-PEDES, each on both test splits;
    in-domain numbers 20 points above the cross-domain ones."""
    entries = []
    for train, seed in (("cuhk-pedes", 70.0), ("icfg-pedes", 60.0)):
        for benchmark, dataset in (("cuhk-test", "cuhk-pedes"), ("icfg-test", "icfg-pedes")):
            value = seed if dataset == train else seed - 20.0
            entry = _entry(_person(f"{train}-mmref", benchmark, dataset, value, refined), method="mmref",
                           label="MMRef", paper_model="ViT-B/16", paper_method="MMRef")
            entries.append({**entry, "train_dataset": train})
    return entries


def test_cross_domain_rows_are_training_datasets(tmp_path: Path) -> None:
    rows, table, md = _build(tmp_path, "cross-domain", _cross_domain_entries(), table="mmref/cross-domain",
                             label="Cross-domain")
    got = _index(rows)
    assert len(rows) == 2 * 2 * 3  # 2 models x 2 test splits x (R@1, mAP, mINP)
    assert got[("tiny", "train cuhk-pedes: MMRef", "cuhk-pedes", "t2i", "R@1")]["value"] == 70.0
    assert got[("tiny", "train cuhk-pedes: MMRef", "icfg-pedes", "t2i", "R@1")]["value"] == 50.0
    assert got[("tiny", "train icfg-pedes: MMRef", "cuhk-pedes", "t2i", "mAP")]["value"] == 43.0
    assert got[("tiny", "train icfg-pedes: MMRef", "icfg-pedes", "t2i", "mINP")]["value"] == 64.0
    assert {r["metric"] for r in rows} == {"R@1", "mAP", "mINP"}
    # No published cross-domain numbers: none beside any cell, no reference rows of in-domain numbers.
    assert all(r["paper_value"] is None for r in rows) and all(r["paper_value"] == "" for r in table)
    header = next(line for line in md.splitlines() if line.startswith("| Student"))
    assert header == ("| Student | Method | cuhk-pedes R@1 | cuhk-pedes mAP | cuhk-pedes mINP | icfg-pedes R@1 | "
                      "icfg-pedes mAP | icfg-pedes mINP |")
    assert "| tiny | train cuhk-pedes: MMRef | 70.00 | 73.00 | 74.00 | 50.00 | 53.00 | 54.00 |" in md
    assert "| tiny | train icfg-pedes: MMRef | 40.00 | 43.00 | 44.00 | 60.00 | 63.00 | 64.00 |" in md
    assert "reference (" not in md and "No published numbers are packaged for this layout" in md
    assert md.startswith("# MMRef cross-domain\n\nCross-domain\n")


def test_cross_domain_refined_rows_and_errors(tmp_path: Path) -> None:
    rows, _, md = _build(tmp_path, "cross-domain", _cross_domain_entries(refined=True))
    assert len(rows) == 24 and {r["variant"] for r in rows} == {"", "refined"}
    assert "| tiny | train icfg-pedes: MMRef + refinement | 41.00 | 44.00 | 45.00 | 61.00 | 64.00 | 65.00 |" in md
    # One label on one benchmark from two models: a cross-domain table tells them apart by their
    # training dataset; a person table cannot.
    with pytest.raises(ValueError, match="both give the row student 'tiny', label 'MMRef' on benchmark"):
        _build(tmp_path, "person", _cross_domain_entries())
    entries = _cross_domain_entries()
    for entry in entries[:2]:  # both evaluations of the CUHK-PEDES model
        del entry["train_dataset"]
    with pytest.raises(ValueError, match="a 'cross-domain' table names each row by the dataset its model trained on"):
        _build(tmp_path, "cross-domain", entries)
    entries = _cross_domain_entries()
    entries[1]["train_dataset"] = "rstpreid"  # one experiment, two training datasets: miswired
    with pytest.raises(ValueError, match="train_dataset expected 'cuhk-pedes'"):
        _build(tmp_path, "cross-domain", entries)


def test_zero_shot(tmp_path: Path) -> None:
    metrics = [_m("cub", "t2i", "AP@50", 30.0), _m("cub", "i2t", "top-1", 45.0)]
    entries = [
        _entry(_json("zero-shot", "cub-zs", "mmref-cub", metrics, "cub"), method="mmref", paper_model="x"),
        _entry(_json("zero-shot", "demo-zs", "demo", [_m("demo-zs", "t2i", "AP@10", 5.0),
                                                      _m("demo-zs", "i2t", "top-1", 6.0)]), student="demo"),
    ]
    rows, table, md = _build(tmp_path, "zero-shot", entries, table="mmref/table3")
    got = _index(rows)
    assert got[("tiny", "mmref", "cub", "t2i", "AP@50")]["value"] == 30.0
    assert got[("tiny", "mmref", "cub", "i2t", "top-1")]["value"] == 45.0
    assert got[("demo", "cusa", "demo-zs", "t2i", "AP@10")]["value"] == 5.0
    assert all(r["paper_value"] == "" for r in table)
    header = next(line for line in md.splitlines() if line.startswith("| Student"))
    assert header.split(" | ")[2:4] == ["cub t2i AP@50", "cub i2t top-1"]


def test_mmref_ablation_rows_are_experiments(tmp_path: Path) -> None:
    entries = [
        _entry(_person("full", "rstp", "rstpreid", 50.0, refined=True), method="mmref", label="MMRef",
               paper_method="MMRef"),
        _entry(_person("no-fuse", "rstp", "rstpreid", 40.0, refined=True), method="mmref", label="w/o L_fuse"),
        _entry(_person("full", "demo", None, 10.0, refined=True), method="mmref", label="MMRef",
               paper_method="MMRef"),
    ]
    rows, table, md = _build(tmp_path, "mmref-ablation", entries, table="mmref/table2")
    assert len(rows) == 30
    got = _index(rows)
    assert got[("tiny", "MMRef + refinement", "rstpreid", "t2i", "R@1")]["paper_value"] == 56.2
    assert got[("tiny", "MMRef + refinement", "demo", "t2i", "R@1")]["paper_value"] is None
    # An ablated run is not the paper's model: no published number beside it.
    assert got[("tiny", "w/o L_fuse + refinement", "rstpreid", "t2i", "R@1")]["paper_value"] is None
    body = [line for line in md.splitlines() if line.startswith("| tiny")]
    assert [line.split(" | ")[1] for line in body] == ["MMRef", "w/o L_fuse"]
    header = next(line for line in md.splitlines() if line.startswith("| Student")).split(" | ")
    assert len(header) == 2 + 20
    assert header[2:4] == ["rstpreid R@1", "rstpreid R@5"] and header[7] == "rstpreid R@1 (refined)"
    assert "reference (" not in md


def test_same_inputs_in_any_order_give_identical_files(tmp_path: Path) -> None:
    entries = _ablation_entries("base", 0.0, True) + _ablation_entries("cusa", 1.0, False)
    for kind, chosen in (("ablation", entries),
                         ("person", [_entry(_person(f"e{k}", "rstp", "rstpreid", k, refined=bool(k % 2)),
                                            method="mmref", label=f"L{k}") for k in range(3)])):
        build_table(kind, "t", label="x", entries=chosen, csv_path=tmp_path / "a.csv", md_path=tmp_path / "a.md")
        build_table(kind, "t", label="x", entries=chosen[::-1], csv_path=tmp_path / "b.csv",
                    md_path=tmp_path / "b.md")
        assert (tmp_path / "a.csv").read_bytes() == (tmp_path / "b.csv").read_bytes()
        assert (tmp_path / "a.md").read_bytes() == (tmp_path / "b.md").read_bytes()
    assert not list(tmp_path.glob("*.tmp-*"))


def test_errors_name_the_file_key_and_expectation(tmp_path: Path) -> None:
    def build(kind: str, entries: list[dict]) -> None:
        build_table(kind, "t", label="", entries=entries, csv_path=tmp_path / "t.csv", md_path=tmp_path / "t.md")

    wrong = _entry(_eccv("e", "eccv", None, 0.0), tmp=tmp_path)
    expected = r"e-eccv\.json: key 'protocol': a 'person' table expects 'person', found 'eccv'"
    with pytest.raises(ValueError, match=expected):
        build("person", [wrong])
    with pytest.raises(ValueError, match=r"e-eccv\.json.*expects one of \['image-text', 'eccv'"):
        build("ablation", [_entry(_person("e", "eccv", None, 0.0, False), tmp=tmp_path)])
    lacking = _eccv("e", "eccv2", None, 0.0)
    lacking["metrics"] = [r for r in lacking["metrics"] if r["metric"] != "R-P"]
    with pytest.raises(ValueError, match=r"e-eccv2\.json: metrics: expected a row direction 'i2t', metric 'R-P'"):
        build("eccv", [_entry(lacking, tmp=tmp_path)])
    no_metrics = _ir("e", "cub", None, 1.0)
    del no_metrics["metrics"]
    with pytest.raises(ValueError, match=r"e-cub\.json: key 'metrics': expected a list"):
        build("image-retrieval", [_entry(no_metrics, tmp=tmp_path)])
    half = _person("e", "p", None, 0.0, True)
    half["metrics"] = [r for r in half["metrics"] if not (r["variant"] and r["metric"] == "mINP")]
    with pytest.raises(ValueError, match=r"e-p\.json: metrics: .*'mINP', variant 'refined'"):
        build("person", [_entry(half, tmp=tmp_path)])
    other = _entry(_ir("e", "cub", None, 1.0))
    other["experiment"] = "f"
    with pytest.raises(ValueError, match=r"key 'experiment': expected 'f' \(the table's entry\), found 'e'"):
        build("image-retrieval", [other])
    with pytest.raises(ValueError, match="two results for experiment 'e', benchmark 'cub'"):
        build("image-retrieval", [_entry(_ir("e", "cub", None, 1.0))] * 2)
    with pytest.raises(ValueError, match="distinct labels"):
        build("image-retrieval", [_entry(_ir("e", "cub", None, 1.0)), _entry(_ir("f", "cub", None, 1.0))])
    absent = _entry(_eccv("e", "x", None, 0.0))
    del absent["result"]
    with pytest.raises(FileNotFoundError, match="absent.json"):
        build("eccv", [{**absent, "eval": tmp_path / "absent.json"}])
    with pytest.raises(ValueError, match=r"e-eccv\.json: key 'protocol': a 'retrieval' table expects 'image-text'"):
        build("retrieval", [wrong])
    with pytest.raises(ValueError, match="kind expected one of"):
        build("nope", [wrong])
    bad_value = _ir("e", "cub", None, 1.0)
    bad_value["metrics"][0]["value"] = float("nan")
    with pytest.raises(ValueError, match=r"metrics\[0\]: 'value' expected a finite number"):
        build("image-retrieval", [_entry(bad_value)])
    assert not (tmp_path / "t.csv").exists() and not (tmp_path / "t.md").exists()


def test_titles_kinds_and_person_reference() -> None:
    assert display_title("mmref/table1") == "MMRef Table 1"
    assert display_title("table5") == "Table 5"
    assert display_title("custom") == "custom"
    # One table system: Table 1's kind is a kind like every other.
    assert "retrieval" in TABLE_KINDS and "mmref-ablation" in TABLE_KINDS
    assert person_reference_value("MMRef", "rstpreid", "R@1") == 56.2
    assert person_reference_value("MMRef", "rstpreid", "mAP") is None
    assert person_reference_value("MMRef", None, "R@1") is None
    with pytest.raises(ValueError, match="metric expected one of"):
        person_reference_value("MMRef", "rstpreid", "RSUM")


def _cost(experiment: str, minutes: float, host_gb: float, sources: tuple[str, str] = ("shards", "shards"),
          gpu_mb: float | None = None) -> dict:
    metrics = [_m("demo-cost", "train", "time per epoch (min)", minutes), _m("demo-cost", "train", "host memory (GB)", host_gb)]
    if gpu_mb is not None:
        metrics.append(_m("demo-cost", "train", "GPU memory (MB)", gpu_mb))
    machine = {"device": "cpu", "device_name": "x86_64", "processes": 1, "threads": 1, "cpus": 2}
    return _json("training-cost", "demo-cost", experiment, metrics, machine=machine,
                 teacher_features={"image": sources[0], "text": sources[1]}, num_epochs=2)


def test_resources_table_ratios_and_table13_reference(tmp_path: Path) -> None:
    entries = [
        _entry(_cost("base", 2.0, 1.0), method="base", label="contrastive", paper_method="base"),
        _entry(_cost("cusa", 2.2, 1.5), method="cusa", label="+CUSA (shards)", paper_method="cusa"),
        _entry(_cost("cusa-online", 3.0, 2.5, ("online", "online"), gpu_mb=100.0), method="cusa",
               label="+CUSA (online)", paper_method="cusa"),
        _entry(_cost("csa-ours", 2.1, 1.2), method="csa", label="+CSA (no role)", paper_method=None),
    ]
    rows, table, md = _build(tmp_path, "resources", entries, table="table13", label="Demo, CPU")
    got = _index(rows)
    assert got[("tiny", "+CUSA (shards)", "demo-cost", "train", "time / contrastive")]["value"] == pytest.approx(1.1)
    # Table 13: CUSA from disk 12.68 min over the contrastive 12.13 min.
    assert got[("tiny", "+CUSA (shards)", "demo-cost", "train", "time / contrastive")]["paper_value"] == \
        pytest.approx(12.68 / 12.13)
    assert got[("tiny", "+CUSA (shards)", "demo-cost", "train", "time per epoch (min)")]["paper_value"] == 12.68
    assert got[("tiny", "+CUSA (shards)", "demo-cost", "train", "host memory (GB)")]["paper_value"] == 116.0
    assert got[("tiny", "+CUSA (online)", "demo-cost", "train", "time per epoch (min)")]["paper_value"] == 16.90
    assert got[("tiny", "+CUSA (online)", "demo-cost", "train", "GPU memory (MB)")]["value"] == 100.0
    assert got[("tiny", "contrastive", "demo-cost", "train", "host memory (GB)")]["paper_value"] == 48.0
    assert all(r["paper_value"] is None for r in rows if r["label"] == "+CSA (no role)")
    header = next(line for line in md.splitlines() if line.startswith("| Student"))
    assert header.split(" | ")[2:6] == ["demo-cost time per epoch (min)", "demo-cost time / contrastive",
                                        "demo-cost host memory (GB)", "demo-cost GPU memory (MB) |"]
    assert "Trained on cpu (x86_64), 1 process(es) x 1 thread(s) of 2 CPU(s)." in md
    assert "appendix's Table 13" in md
