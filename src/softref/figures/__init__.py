"""Figures of a run: training curves, the papers' figures (CUSA's t-SNE and case study, MMRef's
refinement gallery and reference neighbours), the tables as figures, feature shards at a glance.

:mod:`softref.figures.plan` (which figures a config calls for; light: no matplotlib) is what the
Snakemake rules read at parse time; :mod:`softref.figures.build` holds the rules' entry points; one
module per figure draws it (matplotlib's Agg backend, :mod:`softref.figures.style`).
"""

from __future__ import annotations

from softref.figures.plan import all_figures, table_figures

__all__ = ["all_figures", "table_figures"]
