"""Training curves from ``train_log.csv``: per experiment (every loss term, the temperatures, val RSUM)
and per table (its experiments' total loss and val RSUM side by side).

A log's loss terms are its ``loss_*`` columns with any value (a method leaves the terms it does not
use empty) and its temperatures the ``tau*`` columns with any value. The selected epoch is the
first with the highest ``val_rsum``, as the trainer keeps it (a later epoch replaces the best only
when strictly better). One seed is drawn as a line; several as one thin line each and their mean.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import pandas as pd

from softref.figures.style import colour, figure, save

__all__ = ["RUN_HEIGHT", "TABLE_HEIGHT", "loss_columns", "plot_run_curves", "plot_table_curves", "read_train_log",
           "selected_epoch", "temperature_columns"]

#: Heights (inches) of an experiment's and of a table's curves.
RUN_HEIGHT, TABLE_HEIGHT = 2.6, 2.8

_REQUIRED = ("epoch", "loss_total", "val_rsum")


def read_train_log(path: Path) -> pd.DataFrame:
    """A run's ``train_log.csv`` with its epochs in order; an error names the file and the missing columns."""
    path = Path(path)
    log = pd.read_csv(path)
    missing = [c for c in _REQUIRED if c not in log.columns]
    if missing or log.empty:
        raise ValueError(f"{path}: expected epoch rows with columns {list(_REQUIRED)}; found {len(log)} row(s), "
                         f"missing {missing}")
    return log.sort_values("epoch").reset_index(drop=True)


def _filled(log: pd.DataFrame, prefix: str) -> list[str]:
    return [c for c in log.columns if c.startswith(prefix) and log[c].notna().any()]


def loss_columns(log: pd.DataFrame) -> list[str]:
    """The ``loss_*`` columns the run filled, ``loss_total`` first."""
    found = _filled(log, "loss_")
    return sorted(found, key=lambda c: c != "loss_total")


def temperature_columns(log: pd.DataFrame) -> list[str]:
    """The temperature columns (``tau``, ``tau_c``, ``tau_image``, ``tau_text``) the run filled."""
    return _filled(log, "tau")


def selected_epoch(log: pd.DataFrame) -> int:
    """The epoch the trainer selects: the first with the highest ``val_rsum``."""
    return int(log.loc[log["val_rsum"].to_numpy().argmax(), "epoch"])


def _draw(ax, logs: Mapping[int, pd.DataFrame], column: str, colour_: str, label: str) -> None:
    """One column over epochs: a line per seed (thin when there are several) and their mean."""
    from matplotlib.ticker import MaxNLocator

    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    frames = [log[["epoch", column]].dropna() for log in logs.values()]
    if len(frames) == 1:
        ax.plot(frames[0]["epoch"], frames[0][column], color=colour_, lw=1.2, label=label)
        return
    for frame in frames:
        ax.plot(frame["epoch"], frame[column], color=colour_, lw=0.5, alpha=0.45)
    mean = pd.concat(frames).groupby("epoch")[column].mean()
    ax.plot(mean.index, mean.to_numpy(), color=colour_, lw=1.4, label=label)


def _mark_selected(ax, logs: Mapping[int, pd.DataFrame], colour_: str = "0.3") -> None:
    for log in logs.values():
        epoch = selected_epoch(log)
        ax.axvline(epoch, color=colour_, lw=0.7, ls="--")
        ax.plot([epoch], [log.loc[log["epoch"] == epoch, "val_rsum"].iloc[0]], marker="o", ms=3, color=colour_)


def plot_run_curves(logs: Mapping[int, pd.DataFrame], *, title: str, out: Path, dpi: int) -> Path:
    """One experiment's curves, three panels: loss terms, temperatures, val RSUM with the selected
    epoch of each seed marked (``logs``: seed -> its train log)."""
    if not logs:
        raise ValueError(f"{out}: no train log to draw")
    first = next(iter(logs.values()))
    with figure(RUN_HEIGHT, 1, 3) as (fig, axes):
        loss_ax, tau_ax, val_ax = axes[0]
        for i, column in enumerate(loss_columns(first)):
            _draw(loss_ax, logs, column, colour(i), column.removeprefix("loss_"))
        loss_ax.set(title="loss terms (train)", xlabel="epoch", ylabel="mean loss of the epoch")
        loss_ax.legend(frameon=False, fontsize=6)
        taus = temperature_columns(first)
        for i, column in enumerate(taus):
            _draw(tau_ax, logs, column, colour(i), column)
        tau_ax.set(title="temperatures", xlabel="epoch")
        if taus:
            tau_ax.legend(frameon=False, fontsize=6)
        else:
            tau_ax.text(0.5, 0.5, "none learned", ha="center", va="center", transform=tau_ax.transAxes)
        _draw(val_ax, logs, "val_rsum", colour(0), "val RSUM")
        _mark_selected(val_ax, logs)
        val_ax.set(title="val RSUM", xlabel="epoch", ylabel="RSUM")
        fig.suptitle(f"{title}\n{_legend_note(len(logs) > 1)}", fontsize=8)
        return save(fig, out, dpi)


def _legend_note(several_seeds: bool) -> str:
    seeds = "one line per seed (thin) and their mean (thick); " if several_seeds else ""
    return f"{seeds}dashed line: the selected epoch (best val RSUM)"


def plot_table_curves(runs: Sequence[tuple[str, Mapping[int, pd.DataFrame]]], *, title: str, out: Path,
                      dpi: int) -> Path:
    """A table's experiments on one figure: total training loss and val RSUM per epoch, one colour
    each (``runs``: (row label, seed -> train log) in the table's order)."""
    if not runs:
        raise ValueError(f"{out}: no experiment to draw")
    with figure(TABLE_HEIGHT, 1, 2) as (fig, axes):
        loss_ax, val_ax = axes[0]
        for i, (label, logs) in enumerate(runs):
            _draw(loss_ax, logs, "loss_total", colour(i), label)
            _draw(val_ax, logs, "val_rsum", colour(i), label)
            _mark_selected(val_ax, logs, colour(i))
        loss_ax.set(title="total training loss", xlabel="epoch", ylabel="loss")
        val_ax.set(title="val RSUM", xlabel="epoch", ylabel="RSUM")
        handles, labels = val_ax.get_legend_handles_labels()
        fig.legend(handles, labels, loc="outside lower center", ncols=min(3, len(labels)), frameon=False)
        fig.suptitle(f"{title}\n{_legend_note(any(len(logs) > 1 for _, logs in runs))}", fontsize=8)
        return save(fig, out, dpi)

