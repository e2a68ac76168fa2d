"""The figure rules' entry points: a config, a table or an experiment, the rule's input files, one call.

Each function reads what its rule declared as inputs, picks what it compares by the fixed rules of
:mod:`softref.figures.plan` and writes its outputs atomically. Titles name the experiments by their
table row labels and the data by its benchmark, dataset and split.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

from softref.config import Config
from softref.figures.embeddings import read_embeddings
from softref.figures import plan
from softref.tables.render import display_title

__all__ = ["case_study_figure", "neighbours_figure", "refinement_figure", "run_curves_figure", "table_figures",
           "timings_figures", "tsne_figure"]


def _logs(paths: Sequence[Path], seeds: Sequence[int]) -> dict[int, object]:
    from softref.figures.curves import read_train_log

    if len(paths) != len(seeds):
        raise ValueError(f"expected one train log per seed {list(seeds)}, found {len(paths)}: {list(paths)}")
    return {seed: read_train_log(Path(p)) for seed, p in zip(seeds, paths)}


def run_curves_figure(cfg: Config, experiment: str, logs: Sequence[Path], out: Path) -> Path:
    """One experiment's training curves, every seed (``logs``: its train logs in ``run_seeds`` order)."""
    from softref.figures.curves import plot_run_curves

    ex = cfg.experiments[experiment]
    title = (f"{ex.row_label} ({experiment}, method {ex.method}) on {ex.dataset}: seeds "
             f"{', '.join(map(str, ex.run_seeds))}")
    return plot_run_curves(_logs(logs, ex.run_seeds), title=title, out=out, dpi=cfg.figures.dpi)


def table_figures(cfg: Config, table: str, *, csv: Path, md: Path, logs: Mapping[str, Sequence[Path]],
                  values: Path, curves: Path, html: Path) -> None:
    """A table's values figure, its experiments' curves side by side and its Markdown as HTML
    (``logs``: experiment -> its train logs in ``run_seeds`` order)."""
    from softref.figures.curves import plot_table_curves
    from softref.figures.tables import markdown_html, plot_table_values

    tb, dpi = cfg.tables[table], cfg.figures.dpi
    plot_table_values(Path(csv), title=display_title(table), out=Path(values), dpi=dpi)
    runs = [(cfg.experiments[e].row_label, _logs(logs[e], cfg.experiments[e].run_seeds)) for e in tb.experiments]
    plot_table_curves(runs, title=f"{display_title(table)}: training of its experiments", out=Path(curves), dpi=dpi)
    markdown_html(Path(md), Path(html))


def _pair(cfg: Config, comparison: plan.Comparison, baseline: Path, other: Path, images: Path, texts: Path):
    """The items and both runs' embeddings of a comparison, checked to hold the same items."""
    from softref.figures.items import load_items

    emb_b, emb_o = read_embeddings(Path(baseline)), read_embeddings(Path(other))
    if (emb_b.image_ids, emb_b.text_ids) != (emb_o.image_ids, emb_o.text_ids):
        raise ValueError(f"{baseline} and {other}: the two runs' embeddings hold different items")
    bm = cfg.benchmarks[comparison.benchmark]
    items = load_items(emb_b, Path(images), Path(texts), Path(cfg.datasets[bm.dataset].root))
    return items, emb_b, emb_o


def _name(cfg: Config, experiment: str) -> str:
    return f"{cfg.experiments[experiment].row_label} (seed {plan.figure_seed(cfg, experiment)})"


def _data(cfg: Config, benchmark: str) -> str:
    bm = cfg.benchmarks[benchmark]
    return f"{bm.dataset} {bm.split} split (benchmark {benchmark})"


def tsne_figure(cfg: Config, table: str, *, baseline: Path, other: Path, images: Path, texts: Path, out: Path) -> Path:
    """CUSA Figure 4 for ``table`` (:func:`softref.figures.plan.tsne_comparison`)."""
    from softref.figures.tsne import plot_tsne, tsne_rows

    comparison = plan.tsne_comparison(cfg, table)
    if comparison is None:
        raise ValueError(f"table {table!r}: no experiment pair without and with USA for a t-SNE")
    items, emb_b, emb_o = _pair(cfg, comparison, baseline, other, images, texts)
    fig = cfg.figures
    image_rows, text_rows, _ = tsne_rows(items, fig.tsne_identities, fig.seed)
    panels = [(f"without USA: {_name(cfg, comparison.baseline)}", emb_b.image_emb[image_rows], emb_b.text_emb[text_rows]),
              (f"with USA: {_name(cfg, comparison.other)}", emb_o.image_emb[image_rows], emb_o.text_emb[text_rows])]
    return plot_tsne(panels, [items.image_identities[i] for i in image_rows],
                     [items.text_identities[t] for t in text_rows], title=f"t-SNE, {_data(cfg, comparison.benchmark)}",
                     out=Path(out), dpi=fig.dpi, seed=fig.seed)


def case_study_figure(cfg: Config, table: str, *, baseline: Path, other: Path, images: Path, texts: Path,
                      out: Path) -> Path:
    """CUSA Figure 5 for ``table`` (:func:`softref.figures.plan.case_study_comparison`)."""
    from softref.figures.case_study import Model, plot_case_study
    from softref.figures.items import benchmark_relevance

    comparison = plan.case_study_comparison(cfg, table)
    if comparison is None:
        raise ValueError(f"table {table!r}: no pair of CUSA-family experiments for a case study")
    items, emb_b, emb_o = _pair(cfg, comparison, baseline, other, images, texts)
    bm = cfg.benchmarks[comparison.benchmark]
    relevance = benchmark_relevance(items, bm, Path(cfg.datasets[bm.dataset].root))
    models = [Model(_name(cfg, e), emb.image_emb, emb.text_emb)
              for e, emb in ((comparison.baseline, emb_b), (comparison.other, emb_o))]
    return plot_case_study(items, relevance, *models, count=cfg.figures.case_queries,
                           title=f"{display_title(table)} case study, {_data(cfg, comparison.benchmark)}",
                           out=Path(out), dpi=cfg.figures.dpi)


def refinement_figure(cfg: Config, table: str, *, embeddings: Path, images: Path, texts: Path, out: Path) -> Path:
    """MMRef's refinement gallery for ``table`` (:func:`softref.figures.plan.refinement_run`)."""
    from dataclasses import asdict

    from softref.figures.items import load_items
    from softref.figures.mmref import plot_refinement

    chosen = plan.refinement_run(cfg, table)
    if chosen is None:
        raise ValueError(f"table {table!r}: no experiment that refines on a person benchmark")
    experiment, benchmark = chosen
    bm = cfg.benchmarks[benchmark]
    emb = read_embeddings(Path(embeddings))
    items = load_items(emb, Path(images), Path(texts), Path(cfg.datasets[bm.dataset].root))
    return plot_refinement(items, emb, asdict(bm.refine), title=f"{_name(cfg, experiment)}, {_data(cfg, benchmark)}",
                           out=Path(out), dpi=cfg.figures.dpi)


def neighbours_figure(cfg: Config, table: str, *, neighbours: Path, images: Path, out: Path) -> Path:
    """An identity's reference neighbours for ``table`` (:func:`softref.figures.plan.neighbours_source`)."""
    from softref.data.manifest import read_images
    from softref.figures.mmref import plot_neighbours
    from softref.references import read_neighbours

    source = plan.neighbours_source(cfg, table)
    if source is None:
        raise ValueError(f"table {table!r}: no experiment that trains with teacher references")
    dataset, teachers = source
    return plot_neighbours(read_neighbours(Path(neighbours)), read_images(Path(images)), Path(cfg.datasets[dataset].root),
                           split=cfg.references.split, title=f"{dataset} {cfg.references.split} split, {teachers}",
                           out=Path(out), dpi=cfg.figures.dpi)


def timings_figures(cfg: Config, folder: Path, *, figure: Path, html: Path) -> None:
    """The run's benchmark timings per rule as a figure and an HTML table."""
    from softref.figures.timings import plot_timings, read_benchmarks, timings_html

    jobs = read_benchmarks(Path(folder))
    plot_timings(jobs, out=Path(figure), dpi=cfg.figures.dpi)
    timings_html(jobs, Path(html))
