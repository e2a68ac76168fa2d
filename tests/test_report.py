"""softref report: answers from evaluation JSONs, their intervals and verdicts, the README block."""

from __future__ import annotations

import copy
import json
import math
from pathlib import Path

import pytest
import yaml
from scipy.stats import t

from softref import paths
from softref.cli import main
from softref.config import load_config, validate_raw
from softref.report import BEGIN, END, answer, report_markdown, update_between_markers

REPO = Path(__file__).resolve().parents[1]


def _config(seeds_row=(1, 2, 3), seeds_base=(1, 2, 3), questions=None):
    raw = yaml.safe_load((REPO / "config.yaml").read_text())
    raw["experiments"] = {
        "row": {**copy.deepcopy(raw["experiments"]["demo-cusa"]), "seeds": list(seeds_row)},
        "base": {**copy.deepcopy(raw["experiments"]["demo-base"]), "seeds": list(seeds_base)},
    }
    raw["tables"] = {}
    raw["report"] = {"questions": questions or [
        {"question": "Does row beat base?", "row": "row", "baseline": "base", "benchmark": "demo-coco-test",
         "direction": "both", "metric": "RSUM"}]}
    return load_config(validate_raw(raw))


def _write(results: Path, experiment: str, seed: int, value: float, ci: tuple[float, float] | None = None,
           metric: str = "RSUM", direction: str = "both", variant: str = "") -> None:
    path = paths.evaluation(experiment, seed, "demo-coco-test", results)
    path.parent.mkdir(parents=True, exist_ok=True)
    rows = json.loads(path.read_text())["metrics"] if path.exists() else []
    row = {"dataset": "demo-coco", "direction": direction, "metric": metric, "variant": variant, "value": value,
           "ci_low": None if ci is None else ci[0], "ci_high": None if ci is None else ci[1]}
    path.write_text(json.dumps({"metrics": rows + [row]}))


def test_paired_seeds_give_a_t_interval(tmp_path: Path):
    cfg = _config()
    for seed, (a, b) in zip((1, 2, 3), ((110.0, 100.0), (112.0, 101.0), (108.0, 102.0))):
        _write(tmp_path, "row", seed, a)
        _write(tmp_path, "base", seed, b)
    got = answer(cfg, cfg.report.questions[0], tmp_path)
    diffs = [10.0, 11.0, 6.0]
    mean = sum(diffs) / 3
    std = math.sqrt(sum((d - mean) ** 2 for d in diffs) / 2)
    half = t.ppf(0.975, 2) * std / math.sqrt(3)
    assert got.difference == pytest.approx(mean)
    assert (got.low, got.high) == (pytest.approx(mean - half), pytest.approx(mean + half))
    assert got.seeds == (1, 2, 3) and got.interval == "seeds"
    assert got.row == pytest.approx(110.0) and got.baseline == pytest.approx(101.0)
    assert got.verdict == "yes"  # 9 +- 6.6: the interval lies above zero


def test_verdict_follows_the_interval_only(tmp_path: Path):
    cfg = _config()
    # A mean difference of +1 with seeds that disagree: the interval contains zero.
    for seed, (a, b) in zip((1, 2, 3), ((105.0, 100.0), (96.0, 100.0), (102.0, 100.0))):
        _write(tmp_path, "row", seed, a)
        _write(tmp_path, "base", seed, b)
    got = answer(cfg, cfg.report.questions[0], tmp_path)
    assert got.difference == pytest.approx(1.0) and got.low < 0 < got.high
    assert got.verdict == "not supported"
    worse = tmp_path / "worse"
    for seed, (a, b) in zip((1, 2, 3), ((90.0, 100.0), (91.0, 100.0), (89.0, 100.0))):
        _write(worse, "row", seed, a)
        _write(worse, "base", seed, b)
    assert answer(cfg, cfg.report.questions[0], worse).verdict == "no, worse"


def test_one_shared_seed_combines_the_bootstrap_intervals(tmp_path: Path):
    cfg = _config(seeds_row=(1,), seeds_base=(1, 2))
    _write(tmp_path, "row", 1, 50.0, ci=(47.0, 53.0))
    _write(tmp_path, "base", 1, 46.0, ci=(42.0, 50.0))
    got = answer(cfg, cfg.report.questions[0], tmp_path)
    assert got.seeds == (1,) and got.interval == "queries"
    assert (got.low, got.high) == (pytest.approx(4.0 - 5.0), pytest.approx(4.0 + 5.0))  # hypot(3, 4) = 5
    assert got.verdict == "not supported"
    no_ci = tmp_path / "no-ci"
    _write(no_ci, "row", 1, 50.0)
    _write(no_ci, "base", 1, 46.0)
    got = answer(cfg, cfg.report.questions[0], no_ci)
    assert got.interval == "none" and got.verdict == "not supported"


def test_variant_against_the_same_experiment(tmp_path: Path):
    cfg = _config(questions=[{"question": "Does refinement help?", "row": "row", "baseline": "row",
                              "benchmark": "demo-coco-test", "direction": "t2i", "metric": "R@1",
                              "variant": "refined"}])
    for seed, (plain, refined) in zip((1, 2, 3), ((40.0, 43.0), (41.0, 45.0), (39.0, 42.5))):
        _write(tmp_path, "row", seed, plain, metric="R@1", direction="t2i")
        _write(tmp_path, "row", seed, refined, metric="R@1", direction="t2i", variant="refined")
    got = answer(cfg, cfg.report.questions[0], tmp_path)
    assert got.difference == pytest.approx((3.0 + 4.0 + 3.5) / 3) and got.verdict == "yes"


def test_missing_and_ambiguous_evaluations_are_named(tmp_path: Path):
    cfg = _config()
    with pytest.raises(FileNotFoundError, match=r"evaluation not found: .*runs/row/seed-1/.*demo-coco-test"):
        answer(cfg, cfg.report.questions[0], tmp_path)
    _write(tmp_path, "row", 1, 1.0, metric="R@1")
    with pytest.raises(ValueError, match=r"expected one metric row \('both', 'RSUM', variant ''\), found 0"):
        answer(cfg, cfg.report.questions[0], tmp_path)
    with pytest.raises(ValueError, match="share no seed"):
        disjoint = _config(seeds_row=(1,), seeds_base=(2,))
        answer(disjoint, disjoint.report.questions[0], tmp_path)


def test_markdown_block_and_readme_update(tmp_path: Path, capsys):
    cfg = _config()
    for seed in (1, 2, 3):
        _write(tmp_path / "results", "row", seed, 110.0 + seed)
        _write(tmp_path / "results", "base", seed, 100.0 + 2 * seed)
    block = report_markdown(cfg, tmp_path / "results", wall_seconds=600)
    assert block.startswith(BEGIN) and block.rstrip().endswith(END)
    assert "| Does row beat base? | +8.00 [" in block and "(seeds) | yes | 3 | 112.00 | 104.00 |" in block
    assert "commit" in block and "CPU" in block and "10.0 minutes" in block

    readme = tmp_path / "README.md"
    readme.write_text(f"# title\n\nbefore\n\n{BEGIN}\nold numbers\n{END}\n\nafter\n")
    cfg_path = tmp_path / "config.yaml"
    raw = yaml.safe_load((REPO / "config.yaml").read_text())
    raw["experiments"] = {n: {**raw["experiments"][src], "seeds": [1, 2, 3]}
                          for n, src in (("row", "demo-cusa"), ("base", "demo-base"))}
    raw["tables"], raw["report"] = {}, {"questions": [
        {"question": "Does row beat base?", "row": "row", "baseline": "base", "benchmark": "demo-coco-test",
         "direction": "both", "metric": "RSUM"}]}
    cfg_path.write_text(yaml.safe_dump(raw))
    assert main(["report", str(cfg_path), "--results", str(tmp_path / "results"), "--update", str(readme)]) == 0
    text = readme.read_text()
    assert "old numbers" not in text and "before" in text and "after" in text and "+8.00" in text
    assert text.count(BEGIN) == 1 and text.count(END) == 1
    assert "updated" in capsys.readouterr().out

    assert main(["report", str(cfg_path), "--results", str(tmp_path / "results")]) == 0
    assert "+8.00" in capsys.readouterr().out

    no_markers = tmp_path / "plain.md"
    no_markers.write_text("no markers here\n")
    assert main(["report", str(cfg_path), "--results", str(tmp_path / "results"), "--update", str(no_markers)]) == 2
    assert "plain.md: report: the markers are missing" in capsys.readouterr().err
    assert no_markers.read_text() == "no markers here\n"  # nothing lost


def test_update_between_markers_keeps_the_rest():
    text = f"a\n{BEGIN}\nx\n{END}\nb\n"
    assert update_between_markers(text, f"{BEGIN}\ny\n{END}\n") == f"a\n{BEGIN}\ny\n{END}\nb\n"
    with pytest.raises(ValueError, match="markers are missing"):
        update_between_markers("a\n", "x")


def test_job_times_per_rule_come_from_the_benchmark_files(tmp_path: Path):
    cfg = _config()
    for seed in (1, 2, 3):
        _write(tmp_path / "results", "row", seed, 110.0 + seed)
        _write(tmp_path / "results", "base", seed, 100.0 + 2 * seed)
    bench = tmp_path / "benchmarks"
    for rule, job, seconds in (("train", "row/seed-1", 30.0), ("train", "row/seed-2", 50.0),
                               ("evaluate", "row/seed-1/b", 20.0)):
        path = bench / rule / f"{job}.tsv"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(f"s\th:m:s\tmax_rss\tcpu_time\n{seconds}\t0:00:30\t100.0\t{seconds}\n")
    block = report_markdown(cfg, tmp_path / "results", benchmarks=bench)
    assert "3 timed jobs, 100 s in all" in block
    assert "| train | 2 | 80 | 80 % | 40.0 | 50.0 |" in block
    assert "| evaluate | 1 | 20 | 20 % | 20.0 | 20.0 |" in block
    assert block.index("| train |") < block.index("| evaluate |")
    assert "Job time" not in report_markdown(cfg, tmp_path / "results")
    with pytest.raises(ValueError, match="no benchmark file"):
        report_markdown(cfg, tmp_path / "results", benchmarks=tmp_path / "empty")
