"""The Snakemake workflow: lint, dry runs (local and SLURM), config errors, and a real run of the
feature DAG on a tiny demo config."""

from __future__ import annotations

import copy
import os
import re
import subprocess
import sys
from pathlib import Path

import h5py
import numpy as np
import pandas as pd
import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]


def snakemake(*args: str, cwd: Path = REPO, check: bool = True, timeout: int = 1200) -> subprocess.CompletedProcess:
    """Run the workflow's Snakemake with ``args``; output is returned, the run checked. Every call
    passes ``--directory`` to a test's own folder: a checkout's results/ (left by `make demo`) or a
    running demo's lock must never change what a test sees."""
    cmd = [sys.executable, "-m", "snakemake", "--snakefile", str(REPO / "Snakefile"), *args]
    proc = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, timeout=timeout)
    if check and proc.returncode != 0:
        raise AssertionError(f"{' '.join(cmd)} failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}")
    return proc


def default_config() -> dict:
    return yaml.safe_load((REPO / "config.yaml").read_text())


def write_config(path: Path, cfg: dict) -> Path:
    path.write_text(yaml.safe_dump(cfg, sort_keys=False))
    return path


def tiny_config(models: Path) -> dict:
    """The default config shrunk to a few identities, with the teachers' weights given by absolute path."""
    cfg = default_config()
    cfg["demo"].update(num_identities=10, images_per_identity=2, captions_per_image=2, sts_pairs=10)
    cfg["teachers"]["efficientnet-lite0"]["weights"] = str(models / "efficientnet-lite0" / "efficientnet-lite0-57934424.pth")
    cfg["teachers"]["all-mpnet-base-v2"]["weights"] = str(models / "all-mpnet-base-v2")
    cfg["features"]["num_workers"] = 0
    cfg["references"] = {"index": {"k": 3}}  # 6 training identities
    cfg["figures"] = {"dpi": FIGURE_DPI}  # cheap to render; the sizes scale with it
    for ex in cfg["experiments"].values():
        ex.update(epochs=2, batch_size=8, seeds=[], seed=23)  # one run each: results/runs/{experiment}/seed-23
    # The tiny DAG builds every table kind with the fewest runs: Tables 1-2 the paper's two rows (the
    # demo's diagnostic rows are the demo's, not the DAG's), Table 13 one online row.
    for name in ("table1", "table2"):
        cfg["tables"][name]["experiments"] = ["demo-base", "demo-cusa"]
    cfg["tables"]["table13"]["experiments"] = ["demo-base", "demo-cusa", "demo-cusa-online"]
    cfg["report"] = {"questions": [q for q in cfg["report"]["questions"]
                                   if q["row"] in ("demo-cusa", "demo-usa", "demo-mmref")]}
    return cfg


#: Resolution of the tiny DAG's figures.
FIGURE_DPI = 50


@pytest.fixture(scope="module")
def tiny_dag(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """(run folder, config path) of the tiny DAG, shared by the tests of this module: the end-to-end run
    builds it stage by stage, the report test reuses what it built (or builds it, run alone)."""
    folder = tmp_path_factory.mktemp("tiny_dag")
    return folder, write_config(folder / "tiny.yaml", tiny_config(REPO / "models"))


def test_lint_reports_nothing(tmp_path, demo_teachers):
    # The default config with its teachers by absolute path: the preflight at parse time checks that
    # the weights exist, and relative paths are read from the run folder (--directory).
    cfg_path = _default_config_in(tmp_path, demo_teachers)
    proc = snakemake("--lint", "--directory", str(tmp_path), "--configfile", str(cfg_path), check=False)
    text = proc.stdout + proc.stderr
    assert proc.returncode == 0, text
    assert "Lints for" not in text, text


def _default_config_in(folder: Path, demo_teachers: dict[str, Path]) -> Path:
    """The default config, its teachers' weights by absolute path, written into ``folder``."""
    raw = default_config()
    for name, path in demo_teachers.items():
        raw["teachers"][name]["weights"] = str(path)
    return write_config(folder / "default.yaml", raw)


def test_dry_run_lists_every_shard(tmp_path, demo_teachers):
    """The default config in an empty run folder (so a checkout's own results/ cannot hide jobs)."""
    cfg_path = _default_config_in(tmp_path, demo_teachers)
    proc = snakemake("-n", "features", "--directory", str(tmp_path), "--configfile", str(cfg_path))
    text = proc.stdout + proc.stderr
    counts = dict(re.findall(r"^(\w+)\s+(\d+)\s*$", text, flags=re.M))
    from softref.config import read_config

    cfg = read_config(cfg_path)
    for modality in ("image", "text"):
        shards = sum(ds.num_shards * len(cfg.teachers_of(name, modality)) for name, ds in cfg.datasets.items())
        assert int(counts[f"extract_{modality}_features"]) == shards, text
    # Only datasets that teachers encode have features (the demo's retrieval and STS sets do not).
    assert int(counts["prepare_manifest"]) == sum(bool(ds.teachers) for ds in cfg.datasets.values()), text
    assert int(counts["synthesize_demo"]) == 1, text


def test_slurm_dry_run_asks_gpus_for_extraction(tmp_path, demo_teachers):
    """In an empty run folder: after `make demo` the checkout has nothing left to do, which must not
    make this test see an empty job list."""
    cfg_path = _default_config_in(tmp_path, demo_teachers)
    proc = snakemake(
        "-n",
        "--executor",
        "slurm",
        "--workflow-profile",
        str(REPO / "workflow" / "profiles" / "slurm"),
        "-j",
        "10",
        "features",
        "--directory",
        str(tmp_path),
        "--configfile",
        str(cfg_path),
    )
    text = proc.stdout + proc.stderr
    # Each job block of the dry run lists its rule, then its resources.
    blocks = re.split(r"\n(?=(?:local)?rule \w+:)", text)
    extraction = [b for b in blocks if re.match(r"(?:local)?rule extract_(image|text)_features:", b)]
    assert extraction, text
    for block in extraction:
        assert re.search(r"resources:.*\bgpu=1\b", block, flags=re.S), block
        assert "slurm_partition=gpu" in block, block
    manifest = [b for b in blocks if re.match(r"(?:local)?rule prepare_manifest:", b)]
    assert manifest and all("gpu=1" not in b for b in manifest), text


@pytest.mark.parametrize(
    ("edit", "expected"),
    [
        (lambda c: c["datasets"]["demo-coco"].update(num_shards=0), "num_shards"),
        (lambda c: c["datasets"]["demo-coco"].update(teachers=["no-such-teacher"]), "no-such-teacher"),
        (lambda c: c["teachers"]["all-mpnet-base-v2"].update(modality="audio"), "audio"),
        (lambda c: c.update(typo_block={}), "typo_block"),
    ],
)
def test_bad_config_names_the_key(tmp_path, edit, expected):
    cfg = copy.deepcopy(default_config())
    edit(cfg)
    path = write_config(tmp_path / "bad.yaml", cfg)
    proc = snakemake("features", "-n", "--directory", str(tmp_path), "--configfile", str(path), check=False)
    assert proc.returncode != 0
    assert expected in proc.stdout + proc.stderr


@pytest.mark.slow
def test_dag_runs_end_to_end(tiny_dag, demo_teachers):
    """The real DAG on a tiny demo: manifests and every shard, then training, evaluation and Table 1;
    reruns have nothing to do."""
    tmp_path, cfg = tiny_dag
    cfg_raw = yaml.safe_load(cfg.read_text())
    snakemake("features", "--cores", "2", "--directory", str(tmp_path), "--configfile", str(cfg))

    images = pd.read_parquet(tmp_path / "results/data/demo-coco/images.parquet")
    texts = pd.read_parquet(tmp_path / "results/data/demo-coco/texts.parquet")
    assert len(images) == 10 * 2 and len(texts) == 10 * 2 * 2
    for teacher, modality, frame, id_col, dim in (
        ("efficientnet-lite0", "images", images, "image_id", 1280),
        ("all-mpnet-base-v2", "texts", texts, "text_id", 768),
    ):
        ids = []
        for shard in range(2):
            with h5py.File(tmp_path / f"results/features/demo-coco/{teacher}/{modality}-{shard}.h5") as f:
                assert f.attrs["complete"] and f.attrs["teacher"] == teacher
                assert f["features"].shape[1] == dim and f["features"].dtype == np.float16
                assert np.isfinite(f["features"][:]).all()
                ids += [i.decode() if isinstance(i, bytes) else i for i in f["ids"][:]]
        # Only the splits the dataset names in feature_splits are encoded (the demo: train).
        encoded = frame[frame["split"].isin(cfg_raw["datasets"]["demo-coco"]["feature_splits"])]
        assert 0 < len(encoded) < len(frame) and ids == list(encoded[id_col])
    for log in ("logs/synthesize_demo.log", "logs/prepare_manifest/demo-coco.log"):
        assert (tmp_path / log).exists()
    assert list((tmp_path / "benchmarks/extract_image_features/demo-coco/efficientnet-lite0").glob("*.tsv"))

    again = snakemake("features", "-n", "--directory", str(tmp_path), "--configfile", str(cfg))
    assert "Nothing to be done" in again.stdout + again.stderr

    # The rest of the DAG on the same shards: train (base and CUSA), evaluate, Table 1.
    snakemake("results/table1.csv", "--cores", "2", "--directory", str(tmp_path), "--configfile", str(cfg))
    table = pd.read_csv(tmp_path / "results/table1.csv")
    assert list(table.columns) == ["table", "student", "method", "dataset", "direction", "metric", "value", "paper_value",
                                   "seeds", "std", "ci_low", "ci_high", "interval", "vs_baseline"]
    assert set(table["method"]) == {"base", "cusa"}
    assert table["paper_value"].isna().all()  # the demo is not a dataset of the paper
    for _, rows in table.groupby("method"):
        recalls = rows[rows["direction"].isin(["i2t", "t2i"])]
        assert len(recalls) == 6 and set(recalls["metric"]) == {"R@1", "R@5", "R@10"}
        rsum = rows[(rows["direction"] == "both") & (rows["metric"] == "RSUM")]["value"].item()
        assert rsum == pytest.approx(recalls["value"].sum(), abs=1e-3)
    md = (tmp_path / "results/table1.md").read_text()
    assert "synthetic" in md and "not MSCOCO" in md
    for run in ("demo-base", "demo-cusa"):
        log = pd.read_csv(tmp_path / f"results/runs/{run}/seed-23/train_log.csv")
        assert list(log["epoch"]) == [1, 2]
    again = snakemake("results/table1.csv", "-n", "--directory", str(tmp_path), "--configfile", str(cfg))
    assert "Nothing to be done" in again.stdout + again.stderr

    # Everything else: CUSA Tables 2-5 and MMRef's tables, from the same demo.
    snakemake("--cores", "2", "--directory", str(tmp_path), "--configfile", str(cfg))
    expected = {
        "table2": {("i2t", "mAP@R"), ("i2t", "R-P"), ("i2t", "R@1"), ("t2i", "mAP@R"), ("t2i", "R-P"), ("t2i", "R@1")},
        "table3": {("i2i", "R@1")},
        "table4": {("t2t", "spearman")},
        "table5": {("both", "RSUM"), ("both", "avg"), ("i2i", "avg R@1"), ("t2t", "avg spearman")},
        "mmref/table1": {("t2i", m) for m in ("R@1", "R@5", "R@10", "mAP", "mINP")},
        "mmref/table2": {("t2i", f"AP@{cfg_raw['benchmarks']['demo-person-zero-shot']['options']['k']}"), ("i2t", "top-1")},
        "mmref/table3": {("t2i", m) for m in ("R@1", "R@5", "R@10", "mAP", "mINP")},
    }
    for name, cells in expected.items():
        table = pd.read_csv(tmp_path / f"results/{name}.csv")
        assert set(zip(table["direction"], table["metric"])) >= cells, name
        assert table["paper_value"].isna().all(), name
        assert np.isfinite(table["value"]).all(), name
        assert "Demo" in (tmp_path / f"results/{name}.md").read_text(), name
    table5 = pd.read_csv(tmp_path / "results/table5.csv")
    assert set(table5["method"]) == {"base", "csa", "usa", "cusa"}
    person = pd.read_csv(tmp_path / "results/mmref/table1.csv")
    assert any(m.endswith("+ refinement") for m in person["method"])  # the MMRef row, refined
    ablation = pd.read_csv(tmp_path / "results/mmref/table3.csv")
    assert ablation["method"].nunique() >= 6
    log = pd.read_csv(tmp_path / "results/runs/demo-mmref/seed-23/train_log.csv")
    assert log[["loss_id", "loss_fuse", "loss_guide", "loss_recon"]].notna().all().all()
    again = snakemake("-n", "--directory", str(tmp_path), "--configfile", str(cfg))
    assert "Nothing to be done" in again.stdout + again.stderr


def _expected_heights(folder: Path, cfg, path: str) -> set[float]:
    """The heights (inches) softref.figures documents for the figure at ``path`` of the tiny run."""
    from softref.figures import case_study, curves, mmref, tables, timings, tsne

    name = Path(path).name
    if path.startswith("results/figures/runs/"):
        return {curves.RUN_HEIGHT}
    if path == "results/figures/timings.png":
        return {timings.timings_height(len([p for p in (folder / "benchmarks").iterdir() if p.is_dir()]))}
    table = str(Path(path).parent.relative_to("results/figures"))
    if name == "values.png":
        frame = tables.read_table_csv(folder / f"results/{table}.csv")
        return {tables.values_height(len(set(zip(frame["dataset"], frame["direction"], frame["metric"]))))}
    if name == "case-study.png":  # the chosen queries, and one more when some caption got worse
        count = cfg.figures.case_queries
        return {case_study.case_study_height(n) for n in range(1, count + 2)}
    if name == "neighbours.png":
        identities = pd.read_parquet(folder / "results/data/demo-person/images.parquet").query("split == 'train'")
        return {mmref.neighbours_height(min(3, identities["identity"].nunique()))}
    return {{"curves.png": curves.TABLE_HEIGHT, "tsne.png": tsne.HEIGHT, "refinement.png": mmref.REFINEMENT_HEIGHT}[name]}


def _png_size(path: Path) -> tuple[int, int]:
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and data[12:16] == b"IHDR", f"{path}: not a PNG"
    return tuple(int.from_bytes(data[i:i + 4], "big") for i in (16, 20))


@pytest.mark.slow
def test_report_of_the_tiny_dag(tiny_dag, demo_teachers):
    """The tiny DAG's figures and its Snakemake report (reusing the end-to-end run's folder): every figure
    a PNG of its documented size, every figure and rendered table named in the report, and the figures
    that draw from data with a seed (t-SNE, case study, curves) the same bytes when drawn again."""
    from softref.config import read_config
    from softref.figures import plan
    from softref.figures.style import pixel_size

    folder, cfg_path = tiny_dag
    snakemake("--cores", "2", "--directory", str(folder), "--configfile", str(cfg_path))  # done already, if run after
    cfg = read_config(cfg_path)
    figures = plan.all_figures(cfg) + ["results/figures/timings.png", "results/figures/timings.html"]
    assert any(p.endswith("/tsne.png") for p in figures) and any(p.endswith("/refinement.png") for p in figures)
    for path in figures:
        assert (folder / path).is_file(), path
        if path.endswith(".png"):
            assert _png_size(folder / path) in {pixel_size(h, FIGURE_DPI) for h in _expected_heights(folder, cfg, path)}, path
        else:
            assert "<table>" in (folder / path).read_text(), path

    report = folder / "results" / "report.html"
    snakemake("--report", str(report), "--directory", str(folder), "--configfile", str(cfg_path))
    html = report.read_text()
    for path in figures:
        assert f'"{path}"' in html, path  # the report's results are keyed by their path
    for category in ("CUSA (AAAI 2024)", "MMRef (TMM 2025)", "Training curves", "Table 1", "MMRef Table 1", "Timings"):
        assert category in html, category

    again = [p for p in figures if p.endswith(("/tsne.png", "/case-study.png", "/values.png"))][:4]
    again.append("results/figures/runs/demo-cusa/curves.png")
    before = {p: (folder / p).read_bytes() for p in again}
    snakemake("--cores", "2", "--force", *again, "--directory", str(folder), "--configfile", str(cfg_path))
    assert {p: (folder / p).read_bytes() for p in again} == before


def _chromium() -> str | None:
    import shutil

    return next((shutil.which(n) for n in ("chromium", "chromium-browser") if shutil.which(n)), None)


@pytest.mark.slow
@pytest.mark.skipif(not os.environ.get("SOFTREF_BROWSER_TESTS"), reason="opt in with SOFTREF_BROWSER_TESTS=1")
@pytest.mark.skipif(_chromium() is None, reason="no chromium on PATH (Debian: apt-get install chromium)")
def test_report_renders_in_a_browser(tiny_dag, demo_teachers, tmp_path):
    """The report opened in headless Chromium: the screenshot is not blank."""
    from PIL import Image

    folder, cfg_path = tiny_dag
    report = folder / "results" / "report.html"
    if not report.is_file():
        snakemake("--cores", "2", "--directory", str(folder), "--configfile", str(cfg_path))
        snakemake("--report", str(report), "--directory", str(folder), "--configfile", str(cfg_path))
    shot = tmp_path / "report.png"
    subprocess.run([_chromium(), "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
                    "--window-size=1280,900", "--virtual-time-budget=10000", f"--screenshot={shot}",
                    report.as_uri()], check=True, capture_output=True, timeout=300)
    pixels = np.asarray(Image.open(shot).convert("L"), dtype=np.float64)
    assert pixels.shape == (900, 1280)
    assert pixels.std() > 10 and len(np.unique(pixels)) > 16, "the report's screenshot is blank"
