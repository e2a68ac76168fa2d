"""Which figures a config calls for, and what each compares: fixed rules over the config's tables.

Every table gets its numbers as a figure (``values.png``), its experiments' training curves side by
side (``curves.png``) and its Markdown rendered for the report (``table.html``); every experiment its
own training curves. A table's kind adds the papers' figures (:data:`FIGURES_BY_KIND`):

``tsne`` (CUSA Figure 4, kind ``retrieval``)
    test embeddings without and with USA: the table's baseline (its method without the ``usa``
    term) and the table's experiment with the most CUSA terms that include ``usa`` (the last listed
    on a tie; rows standing for a paper row, ``paper_method`` set, before diagnostic rows), on the
    table's first benchmark that ranks images and captions.
``case-study`` (CUSA Figure 5, kinds ``retrieval`` and ``eccv``)
    the baseline against the table's other experiment with the most CUSA terms (the last listed on
    a tie), on the same kind of benchmark; the benchmark's relevance marks what is relevant.
``refinement`` and ``neighbours`` (MMRef, kind ``person``)
    the table's first experiment that refines (``mmref.refine``) on its first ``person`` benchmark;
    the teacher references and FAISS neighbours of its dataset.

A figure of one run reads the experiment's first seed (:func:`figure_seed`). At import this module
loads only the light layer, so the Snakemake rules plan the figures at parse time without
matplotlib or torch.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from softref import paths
from softref.config import Config
from softref.names import CUSA_TERMS, METHOD_FAMILIES

__all__ = [
    "CAPTION_PROTOCOLS",
    "Comparison",
    "FIGURES_BY_KIND",
    "PAPERS",
    "all_figures",
    "case_study_comparison",
    "comparison_facts",
    "figure_seed",
    "neighbours_facts",
    "neighbours_source",
    "paper_of",
    "paper_of_table",
    "refinement_facts",
    "refinement_run",
    "run_facts",
    "table_facts",
    "table_figures",
    "tsne_comparison",
]

#: Protocols whose benchmarks rank the images and captions of one split both ways.
CAPTION_PROTOCOLS: tuple[str, ...] = ("image-text", "eccv")
#: The papers' figures a table of each kind adds to its values, curves and rendered table.
FIGURES_BY_KIND: dict[str, tuple[str, ...]] = {
    "retrieval": ("tsne", "case-study"),
    "eccv": ("case-study",),
    "person": ("refinement", "neighbours"),
}
_TABLE_FIGURE_PATHS = {
    "values": paths.TABLE_VALUES_FIGURE,
    "curves": paths.TABLE_CURVES_FIGURE,
    "table": paths.TABLE_HTML,
    "tsne": paths.TSNE_FIGURE,
    "case-study": paths.CASE_STUDY_FIGURE,
    "refinement": paths.REFINEMENT_FIGURE,
    "neighbours": paths.NEIGHBOURS_FIGURE,
}


@dataclass(frozen=True)
class Comparison:
    """Two experiments of one table on one benchmark: ``baseline`` against ``other``."""

    table: str
    benchmark: str
    baseline: str
    other: str


def figure_seed(cfg: Config, experiment: str) -> int:
    """The seed whose run a single-run figure shows: the experiment's first seed."""
    return cfg.experiments[experiment].run_seeds[0]


def _terms(cfg: Config, experiment: str) -> tuple[str, ...]:
    return CUSA_TERMS.get(cfg.experiments[experiment].method, ())


def _richest(cfg: Config, candidates: list[str]) -> str | None:
    """The candidate with the most CUSA terms among those standing for a paper row (``paper_method``
    set; a table's diagnostic and deviation rows only when it has no paper row); the last listed
    among equals."""
    def rank(name: str) -> tuple[bool, int]:
        return cfg.experiments[name].paper_method is not None, len(_terms(cfg, name))

    best = None
    for name in candidates:
        if best is None or rank(name) >= rank(best):
            best = name
    return best


def _caption_benchmark(cfg: Config, table: str, experiments: tuple[str, ...]) -> str | None:
    """The table's first benchmark ranking images and captions that every one of ``experiments`` has."""
    tb = cfg.tables[table]
    cells = set(tb.cells(cfg.experiments, cfg.benchmarks))
    for b in tb.benchmarks:
        if cfg.benchmarks[b].protocol in CAPTION_PROTOCOLS and all((e, b) in cells for e in experiments):
            return b
    return None


def tsne_comparison(cfg: Config, table: str) -> Comparison | None:
    """Without USA (the baseline) against with USA (module docstring); None when the table has no such pair."""
    tb = cfg.tables[table]
    baseline = tb.baseline_experiment
    if baseline is None or "usa" in _terms(cfg, baseline):
        return None
    other = _richest(cfg, [e for e in tb.experiments if "usa" in _terms(cfg, e)])
    benchmark = None if other is None else _caption_benchmark(cfg, table, (baseline, other))
    return None if benchmark is None else Comparison(table, benchmark, baseline, other)


def case_study_comparison(cfg: Config, table: str) -> Comparison | None:
    """The baseline against the table's richest other CUSA experiment; None without one."""
    tb = cfg.tables[table]
    baseline = tb.baseline_experiment
    others = [e for e in tb.experiments if e != baseline and _terms(cfg, e)]
    if baseline is None or not _terms(cfg, baseline) or not others:
        return None
    other = _richest(cfg, others)
    benchmark = _caption_benchmark(cfg, table, (baseline, other))
    return None if benchmark is None else Comparison(table, benchmark, baseline, other)


def refinement_run(cfg: Config, table: str) -> tuple[str, str] | None:
    """(experiment, benchmark): the table's first refining experiment on its first person benchmark."""
    tb = cfg.tables[table]
    cells = tb.cells(cfg.experiments, cfg.benchmarks)
    for e in tb.experiments:
        if cfg.experiments[e].refines():
            for cell_e, b in cells:
                if cell_e == e and cfg.benchmarks[b].protocol == "person":
                    return e, b
    return None


def neighbours_source(cfg: Config, table: str) -> tuple[str, str] | None:
    """(dataset, teachers): the references of the table's first experiment that trains with them."""
    for e in cfg.tables[table].experiments:
        ex = cfg.experiments[e]
        if ex.needs_references():
            return ex.dataset, ex.references_name
    return None


_CHOICES = {"tsne": tsne_comparison, "case-study": case_study_comparison, "refinement": refinement_run,
            "neighbours": neighbours_source}


def table_figures(cfg: Config, table: str) -> dict[str, str]:
    """Figure kind -> path of every figure (and the rendered table) ``table`` gets."""
    kinds = ["values", "curves", "table"]
    kinds += [k for k in FIGURES_BY_KIND.get(cfg.tables[table].kind, ()) if _CHOICES[k](cfg, table) is not None]
    return {k: _TABLE_FIGURE_PATHS[k].format(table=table) for k in kinds}


def all_figures(cfg: Config) -> list[str]:
    """Every figure path the config calls for: the curves of each experiment a table shows (the DAG
    trains no other), then each table's figures."""
    shown = {e for tb in cfg.tables.values() for e in tb.experiments}
    runs = [paths.RUN_CURVES_FIGURE.format(experiment=e) for e in cfg.experiments if e in shown]
    return runs + [p for t in cfg.tables for p in table_figures(cfg, t).values()]


# ---------------------------------------------------------------------------------------------
# What each figure shows, for the rules' params (a change redraws it) and the report's captions
# ---------------------------------------------------------------------------------------------

#: The paper of each method family, as the report's categories name it.
PAPERS: dict[str, str] = {"cusa": "CUSA (AAAI 2024)", "mmref": "MMRef (TMM 2025)"}


def paper_of(cfg: Config, experiment: str) -> str:
    """The report category of an experiment: the paper of its method's family."""
    family = METHOD_FAMILIES[cfg.experiments[experiment].method]
    return PAPERS.get(family, family)


def paper_of_table(cfg: Config, table: str) -> str:
    """The report category of a table: the paper of its first experiment."""
    experiments = cfg.tables[table].experiments
    return paper_of(cfg, experiments[0]) if experiments else "tables"


def _drawing(cfg: Config) -> dict[str, int]:
    return dataclasses.asdict(cfg.figures)


def _title(table: str) -> str:
    from softref.tables.render import display_title  # pandas: only when a rule's params are evaluated

    return display_title(table)


def run_facts(cfg: Config, experiment: str) -> dict[str, object]:
    """What an experiment's curves show: its row label, method, dataset and seeds."""
    ex = cfg.experiments[experiment]
    return {"drawing": _drawing(cfg), "label": ex.row_label, "method": ex.method, "dataset": ex.dataset,
            "seeds": ", ".join(map(str, ex.run_seeds))}


def table_facts(cfg: Config, table: str) -> dict[str, object]:
    """What a table's figures show: its title, label and rows (label and seeds)."""
    tb = cfg.tables[table]
    rows = {cfg.experiments[e].row_label: ", ".join(map(str, cfg.experiments[e].run_seeds)) for e in tb.experiments}
    return {"drawing": _drawing(cfg), "title": _title(table), "label": tb.label, "rows": rows,
            "benchmarks": ", ".join(tb.benchmarks)}


def _relevance(cfg: Config, benchmark: str) -> str:
    bm = cfg.benchmarks[benchmark]
    if bm.protocol == "eccv" and bm.options.get("relevance", "eccv") == "eccv":
        return f"ECCV Caption's positives ({bm.options.get('eccv_dir') or 'the eccv_caption package data'})"
    return "same identity (the manifests' identity column)"


def comparison_facts(cfg: Config, kind: str, table: str) -> dict[str, object]:
    """What a t-SNE (``kind`` ``tsne``) or case study (``case-study``) of ``table`` compares, on which data."""
    comparison = tsne_comparison(cfg, table) if kind == "tsne" else case_study_comparison(cfg, table)
    if comparison is None:
        raise ValueError(f"table {table!r} has no {kind} figure (softref.figures.plan)")
    bm = cfg.benchmarks[comparison.benchmark]
    runs = {role: {"experiment": e, "label": cfg.experiments[e].row_label, "seed": figure_seed(cfg, e)}
            for role, e in (("baseline", comparison.baseline), ("other", comparison.other))}
    return {"drawing": _drawing(cfg), "title": _title(table), "benchmark": comparison.benchmark,
            "dataset": bm.dataset, "split": bm.split, "relevance": _relevance(cfg, comparison.benchmark), **runs}


def refinement_facts(cfg: Config, table: str) -> dict[str, object]:
    """What a table's refinement gallery shows: the run, the benchmark and the refinement parameters."""
    chosen = refinement_run(cfg, table)
    if chosen is None:
        raise ValueError(f"table {table!r} has no refinement figure (softref.figures.plan)")
    experiment, benchmark = chosen
    bm = cfg.benchmarks[benchmark]
    return {"drawing": _drawing(cfg), "title": _title(table), "experiment": experiment,
            "label": cfg.experiments[experiment].row_label, "seed": figure_seed(cfg, experiment),
            "benchmark": benchmark, "dataset": bm.dataset, "split": bm.split, "refine": dataclasses.asdict(bm.refine)}


def neighbours_facts(cfg: Config, table: str) -> dict[str, object]:
    """What a table's reference-neighbours figure shows: the references and their index."""
    source = neighbours_source(cfg, table)
    if source is None:
        raise ValueError(f"table {table!r} has no neighbours figure (softref.figures.plan)")
    dataset, teachers = source
    return {"drawing": _drawing(cfg), "title": _title(table), "dataset": dataset, "teachers": teachers,
            "split": cfg.references.split, "index": cfg.references.index.kind, "k": cfg.references.index.k}
