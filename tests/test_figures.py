"""softref.figures: which figures a config calls for, the fixed rules that pick what they show, and
each figure drawn from small real inputs (a tiny synthetic demo, an untrained tiny student), checked
to be a PNG of the documented size with the same bytes when drawn twice."""

from __future__ import annotations

import copy
import dataclasses
import struct
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from softref.checkpoints import save_checkpoint
from softref.config import load_config, validate_raw
from softref.data.adapters import prepare
from softref.data.synthetic import synthesize_demo
from softref.figures import plan
from softref.figures.case_study import Model, case_study_height, choose_queries, plot_case_study, similar_pair
from softref.figures.curves import loss_columns, plot_run_curves, plot_table_curves, selected_epoch, temperature_columns
from softref.figures.embeddings import read_embeddings, write_embeddings
from softref.figures.items import Relevance, benchmark_relevance, load_items, ranks_of_first
from softref.figures.mmref import anchor_identities, plot_neighbours, plot_refinement, refined_query
from softref.figures.style import pixel_size
from softref.figures.tables import markdown_html, plot_table_values, values_height
from softref.figures.timings import plot_timings, read_benchmarks, timings_height, timings_html
from softref.figures.tsne import identity_agreement, plot_tsne, tsne_rows
from softref.models.student import Student
from softref.tables.render import CSV_COLUMNS, csv_text

pytestmark = pytest.mark.usefixtures("one_thread")

DPI = 30
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def png_size(path: Path) -> tuple[int, int]:
    """(width, height) from a PNG's IHDR chunk; fails on a file that is not a PNG."""
    data = Path(path).read_bytes()
    assert data[:8] == PNG_SIGNATURE and data[12:16] == b"IHDR", path
    return struct.unpack(">II", data[16:24])


def assert_png(path: Path, height_in: float, dpi: int = DPI) -> None:
    assert png_size(path) == pixel_size(height_in, dpi)
    data = Path(path).read_bytes()
    assert b"Software" not in data and b"matplotlib" not in data.lower()  # no version text, no date


def config(edit=None):
    """The default config.yaml, edited by ``edit``, checked and typed as the rules do."""
    import yaml

    raw = yaml.safe_load((Path(__file__).resolve().parents[1] / "config.yaml").read_text())
    if edit:
        edit(raw)
    return load_config(validate_raw(copy.deepcopy(raw)))


# ---------------------------------------------------------------------------------------------
# plan: which figures, what they compare
# ---------------------------------------------------------------------------------------------


def test_plan_of_the_default_config() -> None:
    cfg = config()
    assert plan.tsne_comparison(cfg, "table1") == plan.Comparison("table1", "demo-coco-test", "demo-base", "demo-cusa")
    assert plan.case_study_comparison(cfg, "table2").benchmark == "demo-coco-eccv"
    assert plan.refinement_run(cfg, "mmref/table1") == ("demo-mmref", "demo-person-test")
    assert plan.neighbours_source(cfg, "mmref/table1") == ("demo-person", "efficientnet-lite0+all-mpnet-base-v2")
    assert set(plan.table_figures(cfg, "table1")) == {"values", "curves", "table", "tsne", "case-study"}
    assert set(plan.table_figures(cfg, "table3")) == {"values", "curves", "table"}
    assert set(plan.table_figures(cfg, "mmref/table1")) == {"values", "curves", "table", "refinement", "neighbours"}
    figures = plan.all_figures(cfg)
    assert len(figures) == len(set(figures))
    assert all(p.startswith("results/figures/") and p.endswith((".png", ".html")) for p in figures)
    assert "results/figures/runs/demo-base/curves.png" in figures
    assert plan.paper_of_table(cfg, "mmref/table3").startswith("MMRef") and plan.paper_of(cfg, "demo-usa").startswith("CUSA")


def test_plan_follows_the_config_not_names() -> None:
    def edit(raw):
        raw["tables"]["table1"]["experiments"] = ["demo-csa", "demo-usa", "demo-cusa"]
        raw["tables"]["table1"]["baseline"] = "demo-csa"
        raw["tables"]["table5"]["kind"] = "retrieval"
        raw["tables"]["table5"]["benchmarks"] = ["demo-coco-test"]
        raw["tables"]["table5"]["baseline"] = "demo-usa"  # has USA: no "without USA" side

    cfg = config(edit)
    # Without USA = the baseline; with USA = the most terms with usa (cusa over usa).
    assert plan.tsne_comparison(cfg, "table1") == plan.Comparison("table1", "demo-coco-test", "demo-csa", "demo-cusa")
    assert plan.tsne_comparison(cfg, "table5") is None
    assert plan.case_study_comparison(cfg, "table5").other == "demo-cusa"
    assert "tsne" not in plan.table_figures(cfg, "table5")
    # An MMRef table has no CUSA comparison; a CUSA table no refinement.
    assert plan.case_study_comparison(cfg, "mmref/table1") is None and plan.refinement_run(cfg, "table1") is None
    facts = plan.comparison_facts(cfg, "case-study", "table2")
    assert facts["baseline"]["label"] == "base" and facts["other"]["seed"] == cfg.experiments["demo-cusa"].run_seeds[0] and facts["drawing"]["dpi"] == 200
    with pytest.raises(ValueError, match="table5.*tsne"):
        plan.comparison_facts(cfg, "tsne", "table5")


# ---------------------------------------------------------------------------------------------
# Training curves and tables
# ---------------------------------------------------------------------------------------------


def train_log(seed: int, method_terms=("itr", "csa"), epochs: int = 5) -> pd.DataFrame:
    from softref.train.trainer import LOG_COLUMNS

    rng = np.random.default_rng(seed)
    log = pd.DataFrame({c: np.nan for c in LOG_COLUMNS}, index=range(epochs))
    log["epoch"] = np.arange(1, epochs + 1)
    for term in ("total",) + tuple(method_terms):
        log[f"loss_{term}"] = np.linspace(3, 1, epochs) + rng.uniform(0, 0.1, epochs)
    log["tau"] = np.linspace(0.07, 0.05, epochs)
    log["val_rsum"] = [10.0, 30.0, 50.0, 50.0, 40.0]
    return log


def test_curve_columns_match_the_trainers_log() -> None:
    from softref.train.trainer import LOG_COLUMNS, LOSS_TERMS, TEMPERATURES

    full = pd.DataFrame({c: [1.0] for c in LOG_COLUMNS})
    assert set(loss_columns(full)) == {f"loss_{t}" for t in LOSS_TERMS}
    assert loss_columns(full)[0] == "loss_total"
    assert set(temperature_columns(full)) == set(TEMPERATURES)
    log = train_log(0)
    assert loss_columns(log) == ["loss_total", "loss_itr", "loss_csa"] and temperature_columns(log) == ["tau"]
    assert selected_epoch(log) == 3  # the first of the two best epochs, as the trainer keeps it


def test_run_and_table_curves(tmp_path: Path) -> None:
    logs = {23: train_log(23), 24: train_log(24)}
    out = plot_run_curves(logs, title="demo-cusa", out=tmp_path / "a.png", dpi=DPI)
    assert_png(out, 2.6)
    again = plot_run_curves(logs, title="demo-cusa", out=tmp_path / "b.png", dpi=DPI)
    assert out.read_bytes() == again.read_bytes()
    assert plot_run_curves({1: train_log(1)}, title="x", out=tmp_path / "c.png", dpi=DPI).read_bytes() != out.read_bytes()
    table = plot_table_curves([("base", {23: train_log(1)}), ("cusa", logs)], title="Table 1", out=tmp_path / "t.png",
                              dpi=DPI)
    assert_png(table, 2.8)


def table_csv(path: Path) -> Path:
    rows = []
    for method, value, paper in (("base", 40.0, None), ("cusa", 45.0, 47.5)):
        for metric, scale in (("R@1", 1.0), ("R@5", 1.5), ("RSUM", 4.0)):
            rows.append({"table": "table1", "student": "tiny", "method": method, "dataset": "demo", "direction": "t2i",
                         "metric": metric, "value": value * scale, "paper_value": paper, "seeds": 2, "std": 1.0,
                         "ci_low": value * scale - 2, "ci_high": value * scale + 2, "interval": "seeds",
                         "vs_baseline": ""})
    path.write_text(csv_text(rows))
    assert list(pd.read_csv(path).columns) == list(CSV_COLUMNS)
    return path


def test_table_values_and_html(tmp_path: Path) -> None:
    csv = table_csv(tmp_path / "table1.csv")
    out = plot_table_values(csv, title="Table 1", out=tmp_path / "values.png", dpi=DPI)
    assert_png(out, values_height(3))
    assert plot_table_values(csv, title="Table 1", out=tmp_path / "v2.png", dpi=DPI).read_bytes() == out.read_bytes()
    md = tmp_path / "table1.md"
    md.write_text("# Table 1\n\nDemo <data>, `demo-coco`\n\n| Method | R@1 |\n|---|---:|\n| base | 40.00 |\n| cusa | 45.00* |\n")
    page = markdown_html(md, tmp_path / "table.html").read_text()
    assert "<h1>Table 1</h1>" in page and "Demo &lt;data&gt;, <code>demo-coco</code>" in page
    assert page.count("<tr>") == 3 and '<td style="text-align:right">45.00*</td>' in page
    with pytest.raises(ValueError, match="missing"):
        plot_table_values(md, title="x", out=tmp_path / "bad.png", dpi=DPI)


def test_timings(tmp_path: Path) -> None:
    for rule, job, seconds in (("train", "demo-base/seed-23", 12.5), ("train", "demo-cusa/seed-23", 20.0),
                               ("evaluate", "demo-base/seed-23/demo-coco-test", 3.0)):
        path = tmp_path / "benchmarks" / rule / f"{job}.tsv"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(f"s\th:m:s\tmax_rss\tcpu_time\n{seconds}\t0:00:{int(seconds):02d}\t512.5\t{seconds}\n")
    jobs = read_benchmarks(tmp_path / "benchmarks")
    assert sorted(jobs["rule"]) == ["evaluate", "train", "train"]
    assert set(jobs["job"]) == {"demo-base/seed-23", "demo-cusa/seed-23", "demo-base/seed-23/demo-coco-test"}
    assert_png(plot_timings(jobs, out=tmp_path / "timings.png", dpi=DPI), timings_height(2))
    page = timings_html(jobs, tmp_path / "timings.html").read_text()
    assert "<td>32.50</td>" in page  # train: 12.5 + 20.0 s
    with pytest.raises(ValueError, match="no benchmark file"):
        read_benchmarks(tmp_path / "empty")


# ---------------------------------------------------------------------------------------------
# Rankings: ranks, the case study's choices, refinement's query
# ---------------------------------------------------------------------------------------------


def test_ranks_of_first() -> None:
    scores = np.array([[0.9, 0.5, 0.5, 0.1], [0.1, 0.2, 0.3, 0.4]])
    relevant = np.array([[False, False, True, False], [False, False, False, False]])
    assert ranks_of_first(scores, relevant).tolist() == [3, 5]  # tie at 0.5: the lower index first; none: G + 1


def test_case_study_chooses_by_rank_change() -> None:
    # Four captions, four images; caption t is relevant to image t only. Unit vectors by angle.
    def unit(deg):
        rad = np.radians(deg)
        return np.stack([np.cos(rad), np.sin(rad)], axis=1)

    images = unit(np.array([0.0, 90.0, 180.0, 270.0]))
    base_texts = unit(np.array([170.0, 95.0, 265.0, 10.0]))
    other_texts = unit(np.array([5.0, 175.0, 180.0, 15.0]))
    relevance = Relevance(np.eye(4, dtype=bool), np.ones(4, dtype=bool), "pairs")
    base, other = Model("base", images, base_texts), Model("cusa", images, other_texts)
    rank_b = ranks_of_first(base_texts @ images.T, np.eye(4, dtype=bool))
    rank_o = ranks_of_first(other_texts @ images.T, np.eye(4, dtype=bool))
    queries = choose_queries(base, other, relevance, 2)
    change = rank_b - rank_o
    best = sorted(range(4), key=lambda t: (-change[t], t))[:2]
    assert [q.row for q in queries[:2]] == best
    assert queries[-1].row == int(np.argmin(change)) and change.min() < 0  # the caption it hurts most comes last
    assert all((q.baseline_rank, q.other_rank) == (rank_b[q.row], rank_o[q.row]) for q in queries)
    assert similar_pair(np.array([[1.0, 0.0], [0.0, 1.0], [0.9, 0.1]])) == (0, 2)
    with pytest.raises(ValueError, match="no caption"):
        choose_queries(base, other, Relevance(np.zeros((4, 4), bool), np.ones(4, bool), "none"), 2)


def test_refined_query_and_anchors() -> None:
    relevant = np.array([[False, True, False], [True, False, False]])
    scores = np.array([[0.9, 0.1, 0.5], [0.9, 0.5, 0.1]])
    refined = np.array([[0.1, 0.9, 0.5], [0.9, 0.5, 0.1]])
    assert refined_query(scores, refined, relevant) == (0, 3, 1)
    assert anchor_identities([str(i) for i in range(10)], 3) == ["0", "4", "9"]
    assert anchor_identities(["b", "a"], 5) == ["a", "b"]


def test_identity_agreement() -> None:
    points = np.array([[1.0, 0.0], [0.99, 0.05], [0.0, 1.0], [0.05, 0.99]])
    assert identity_agreement(points, ["a", "a", "b", "b"], k=1) == 1.0
    assert identity_agreement(points, ["a", "b", "a", "b"], k=1) == 0.0


# ---------------------------------------------------------------------------------------------
# Embeddings of a student, and the figures drawn from them (tiny demo, untrained tiny student)
# ---------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> dict:
    root = tmp_path_factory.mktemp("figures")
    raw = synthesize_demo(root / "raw", num_identities=20, images_per_identity=2, captions_per_image=2, image_size=32,
                          person_size=(32, 16), sts_pairs=0)
    prepare("karpathy", raw["coco_root"], root / "coco", annotations=str(raw["coco_annotations"]),
            identity_pattern=r"^id(\d+)_")
    prepare("cuhk-pedes", raw["person_root"], root / "person")
    torch.manual_seed(0)
    state = Student("softref-tiny").state_dict()
    runs = {}
    for name, seed in (("base", 1), ("cusa", 2)):
        torch.manual_seed(seed)
        bank = torch.nn.functional.normalize(torch.randn(6, 64), dim=1)
        config = {"experiment": {"name": f"tiny-{name}", "method": name, "seed": seed},
                  "student": {"name": "tiny", "architecture": "softref-tiny"}}
        state = {k: v + 0.01 * seed * torch.randn_like(v) if v.is_floating_point() else v for k, v in state.items()}
        runs[name] = root / name / "checkpoint.pt"
        save_checkpoint({"model": state, "config": config, "epoch": seed, "mmref_head": {"bank": bank},
                         "mmref": {"identities": list("abcdef"), "config": {}}}, runs[name])
    return {"root": root, "raw": raw, "runs": runs}


def embed(demo: dict, run: str, dataset: str = "coco", name: str = "test.npz") -> Path:
    folder = demo["root"] / dataset
    root = demo["raw"]["coco_root"] if dataset == "coco" else demo["raw"]["person_root"]
    return write_embeddings(demo["runs"][run], dataset_root=root, images_manifest=folder / "images.parquet",
                            texts_manifest=folder / "texts.parquet", split="test", dataset=dataset,
                            out=demo["root"] / run / dataset / name, batch_size=7)


def test_embeddings_round_trip(demo: dict) -> None:
    path = embed(demo, "base")
    emb = read_embeddings(path)
    texts = pd.read_parquet(demo["root"] / "coco" / "texts.parquet")
    test = texts[texts["split"] == "test"]
    assert emb.text_ids == tuple(test["text_id"]) and emb.text_emb.shape == (len(test), emb.image_emb.shape[1])
    assert np.allclose(np.linalg.norm(emb.image_emb, axis=1), 1, atol=1e-5)
    assert emb.references.shape == (6, 64) and emb.meta["experiment"] == "tiny-base" and emb.meta["selected_epoch"] == 1
    assert embed(demo, "base", name="again.npz").read_bytes() == path.read_bytes()
    with np.load(path, allow_pickle=False) as data:  # plain arrays only
        assert set(data.files) >= {"image_emb", "text_emb", "image_ids", "text_ids", "text_image_ids", "meta"}
    broken = demo["root"] / "broken.npz"
    np.savez(broken, image_emb=emb.image_emb)
    with pytest.raises(ValueError, match="broken.npz.*missing"):
        read_embeddings(broken)


def coco_items(demo: dict, run: str):
    emb = read_embeddings(embed(demo, run))
    folder = demo["root"] / "coco"
    return load_items(emb, folder / "images.parquet", folder / "texts.parquet", demo["raw"]["coco_root"]), emb


def test_eccv_relevance_from_the_demo_ground_truth(demo: dict) -> None:
    from softref.config import BenchmarkConfig
    from softref.data.imagetext import load_eccv_annotations

    items, _ = coco_items(demo, "base")
    eccv = BenchmarkConfig(name="b", dataset="coco", protocol="eccv", options={"relevance": "eccv", "eccv_dir": "eccv"})
    relevance = benchmark_relevance(items, eccv, demo["raw"]["coco_root"])
    truth = load_eccv_annotations(demo["raw"]["coco_eccv"])
    texts = {int(t): k for k, t in enumerate(items.text_ids)}
    images = {int(i): k for k, i in enumerate(items.image_ids)}
    for caption, positives in truth.caption_to_image.items():
        assert set(np.flatnonzero(relevance.relevant[:, texts[caption]])) >= {images[p] for p in positives}
    assert (relevance.relevant | ~items.paired()).all()  # the annotated pair is always relevant
    assert relevance.queries.sum() == len(truth.caption_to_image)
    identity = benchmark_relevance(items, BenchmarkConfig(name="t", dataset="coco"), demo["raw"]["coco_root"])
    assert identity.name == "same identity" and identity.relevant.sum() > items.paired().sum()


def test_case_study_and_tsne_figures(demo: dict, tmp_path: Path) -> None:
    from softref.config import BenchmarkConfig

    items, base = coco_items(demo, "base")
    _, cusa = coco_items(demo, "cusa")
    bm = BenchmarkConfig(name="b", dataset="coco", protocol="eccv", options={"relevance": "eccv", "eccv_dir": "eccv"})
    relevance = benchmark_relevance(items, bm, demo["raw"]["coco_root"])
    models = Model("base", base.image_emb, base.text_emb), Model("cusa", cusa.image_emb, cusa.text_emb)
    queries = choose_queries(*models, relevance, 2)
    out = plot_case_study(items, relevance, *models, count=2, title="case", out=tmp_path / "case.png", dpi=DPI)
    assert_png(out, case_study_height(len(queries)))
    again = plot_case_study(items, relevance, *models, count=2, title="case", out=tmp_path / "case2.png", dpi=DPI)
    assert again.read_bytes() == out.read_bytes()

    images, texts, chosen = tsne_rows(items, 2, seed=0)
    assert len(chosen) == 2 and set(items.image_identities[i] for i in images) == set(chosen)
    assert set(items.text_identities[t] for t in texts) == set(chosen)
    assert tsne_rows(items, 2, seed=0)[2] == chosen
    assert len({tuple(tsne_rows(items, 2, seed=s)[2]) for s in range(6)}) > 1  # the seed draws them
    panels = [(name, e.image_emb[images], e.text_emb[texts]) for name, e in (("without", base), ("with", cusa))]
    labels = ([items.image_identities[i] for i in images], [items.text_identities[t] for t in texts])
    tsne = plot_tsne(panels, *labels, title="t-SNE", out=tmp_path / "tsne.png", dpi=DPI, seed=0)
    assert_png(tsne, 3.9)
    assert plot_tsne(panels, *labels, title="t-SNE", out=tmp_path / "tsne2.png", dpi=DPI, seed=0).read_bytes() \
        == tsne.read_bytes()


def test_refinement_and_neighbours_figures(demo: dict, tmp_path: Path) -> None:
    from softref.config import RefineConfig

    emb = read_embeddings(embed(demo, "cusa", "person"))
    folder = demo["root"] / "person"
    items = load_items(emb, folder / "images.parquet", folder / "texts.parquet", demo["raw"]["person_root"])
    out = plot_refinement(items, emb, dataclasses.asdict(RefineConfig(k=2, top_k=5)), title="refine",
                          out=tmp_path / "refine.png", dpi=DPI)
    assert_png(out, 3.9)
    no_bank = dataclasses.replace(emb, references=None)
    with pytest.raises(ValueError, match="no trained reference bank"):
        plot_refinement(items, no_bank, dataclasses.asdict(RefineConfig()), title="x", out=tmp_path / "x.png", dpi=DPI)

    images = pd.read_parquet(folder / "images.parquet")
    train = sorted(images[images["split"] == "train"]["identity"].unique())
    rows = [{"identity": a, "rank": r + 1, "neighbour": b, "score": 0.9 - 0.1 * r}
            for a in train for r, b in enumerate([x for x in train if x != a][:3])]
    neighbours = pd.DataFrame(rows)
    out = plot_neighbours(neighbours, images, demo["raw"]["person_root"], split="train", title="refs",
                          out=tmp_path / "n.png", dpi=DPI, anchors=2, k=5)
    assert_png(out, 0.6 + 1.55 * 2)
    with pytest.raises(ValueError, match="no image of split 'test'"):
        plot_neighbours(neighbours, images, demo["raw"]["person_root"], split="test", title="refs",
                        out=tmp_path / "n2.png", dpi=DPI)


# ---------------------------------------------------------------------------------------------
# softref inspect --plot
# ---------------------------------------------------------------------------------------------


def test_inspect_plot_draws_a_shard(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from softref.cli import main
    from softref.features import ShardWriter

    ids = [f"im{i:03d}" for i in range(300)]
    feats = np.random.default_rng(0).standard_normal((300, 16)).astype(np.float32)
    attrs = {"teacher": "toy", "weights_sha256": "a" * 64, "preprocess": "none", "normalized": False,
             "manifest_sha256": "b" * 64, "shard": 0, "num_shards": 1, "modality": "images"}
    shard = tmp_path / "images-0.h5"
    with ShardWriter(shard, num_rows=len(ids), dim=16, attrs=attrs) as w:
        w.write(0, ids, feats)
    out = tmp_path / "plots" / "shard.png"
    assert main(["inspect", str(shard), "--plot", str(out), "--dpi", str(DPI)]) == 0
    assert f"plot: {out}" in capsys.readouterr().out
    assert_png(out, 3.2)
    first = out.read_bytes()
    assert main(["inspect", str(shard), "--plot", str(out), "--dpi", str(DPI)]) == 0
    assert out.read_bytes() == first
    manifest = tmp_path / "images.parquet"
    pd.DataFrame({"image_id": ["a"], "path": ["a.png"], "identity": ["1"], "split": ["test"]}).to_parquet(manifest)
    assert main(["inspect", str(manifest), "--plot", str(tmp_path / "x.png")]) == 2
    assert "--plot draws feature shards" in capsys.readouterr().err
