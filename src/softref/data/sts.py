"""Adapter of the semantic textual similarity benchmarks (CUSA Table 4) in SentEval's layout.

``senteval-sts`` reads, under SentEval's ``data/downstream`` folder (the root):

- STS12-16: ``STS/STS1X-en-test/STS.input.<task>.txt`` (tab-separated sentence pairs; extra
  columns after the pair are ignored) and ``STS.gs.<task>.txt`` (one gold score per line,
  the same number of lines). Pairs with an empty gold line are left out, as SentEval does.
- STS-B: ``STS/STSBenchmark/sts-test.csv``, tab-separated, no header: score in column 5,
  sentences in columns 6 and 7 (1-based).
- SICK-R: ``SICK/SICK_test_annotated.txt``, tab-separated with a header line: ``pair_ID``,
  ``sentence_A``, ``sentence_B``, ``relatedness_score``, ...

It writes ``pairs.parquet`` (see :mod:`softref.data.manifest`), every pair in split ``test``,
with ``task`` = ``STS12/MSRpar`` ... (year/task, so the "all" setting pools a year's tasks),
``STSBenchmark`` or ``SICK-R``, and ``pair_id`` = ``<task>#<n>``, ``n`` the 0-based line of
the input file, zero-padded to 4 digits (SICK-R: its ``pair_ID``). The images and texts
manifests are empty.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from pathlib import Path

import pandas as pd

from softref.data.common import (
    AdapterOutput,
    AnnotationError,
    PathLike,
    check_duplicates,
    frame,
    quote,
    read_lines,
    require_file,
    resolve_folder,
)
from softref.data.manifest import IMAGE_COLUMNS, PAIR_COLUMNS, TEXT_COLUMNS

__all__ = ["STS_YEARS", "STS_TASKS", "read_senteval_sts"]

logger = logging.getLogger("softref.data.adapters")

# SentEval's tasks of each STS year (STS13's SMT is not distributed).
STS_YEARS: dict[str, tuple[str, ...]] = {
    "STS12": ("MSRpar", "MSRvid", "SMTeuroparl", "surprise.OnWN", "surprise.SMTnews"),
    "STS13": ("FNWN", "HDL", "OnWN"),
    "STS14": ("deft-forum", "deft-news", "headlines", "images", "OnWN", "tweet-news"),
    "STS15": ("answers-forums", "answers-students", "belief", "headlines", "images"),
    "STS16": ("answer-answer", "headlines", "plagiarism", "postediting", "question-question"),
}
STS_TASKS: tuple[str, ...] = (*STS_YEARS, "STSBenchmark", "SICK-R")


def _score(value: str, where: str, name: str) -> float:
    try:
        score = float(value)
    except ValueError:
        raise AnnotationError(f"{name}: {where}: score must be a number, found {value!r}") from None
    if not math.isfinite(score):
        raise AnnotationError(f"{name}: {where}: score must be finite, found {value!r}")
    return score


def _read_year(root: Path, year: str) -> list[tuple[object, ...]]:
    folder = root / "STS" / f"{year}-en-test"
    rows: list[tuple[object, ...]] = []
    for task in STS_YEARS[year]:
        inputs = require_file(folder / f"STS.input.{task}.txt", "senteval-sts", f"{year} input")
        golds = require_file(folder / f"STS.gs.{task}.txt", "senteval-sts", f"{year} gold scores")
        pairs = read_lines(inputs)
        scores = read_lines(golds)
        if len(pairs) != len(scores):
            raise AnnotationError(
                f"{golds.name}: {len(scores)} lines, expected one per pair of {inputs.name} "
                f"({len(pairs)} lines) in {folder}"
            )
        skipped = 0
        for n, (line, gold) in enumerate(zip(pairs, scores)):
            if gold.strip() == "":
                skipped += 1
                continue
            fields = line.split("\t")
            if len(fields) < 2:
                raise AnnotationError(
                    f"{inputs.name}: line {n + 1} has no field 'sentence2': expected two "
                    f"tab-separated sentences, found {line!r}"
                )
            score = _score(gold.strip(), f"line {n + 1}", golds.name)
            task_name = f"{year}/{task}"
            rows.append((f"{task_name}#{n:04d}", fields[0], fields[1], score,
                         task_name, "test"))
        if skipped:
            logger.info("%s/%s: left out %d pair(s) without a gold score", year, task, skipped)
    return rows


def _read_stsb(root: Path) -> list[tuple[object, ...]]:
    path = require_file(
        root / "STS" / "STSBenchmark" / "sts-test.csv", "senteval-sts", "STS-B test"
    )
    rows: list[tuple[object, ...]] = []
    names = ("genre", "file", "year", "id", "score", "sentence1", "sentence2")
    for n, line in enumerate(read_lines(path)):
        if not line.strip():
            continue
        fields = line.strip().split("\t")
        if len(fields) < 7:
            raise AnnotationError(
                f"{path.name}: line {n + 1} has no field {names[len(fields)]!r}: expected at "
                f"least 7 tab-separated fields, found {len(fields)}"
            )
        score = _score(fields[4], f"line {n + 1}", path.name)
        rows.append((f"STSBenchmark#{n:04d}", fields[5], fields[6], score, "STSBenchmark", "test"))
    return rows


def _read_sick(root: Path) -> list[tuple[object, ...]]:
    path = require_file(root / "SICK" / "SICK_test_annotated.txt", "senteval-sts", "SICK-R test")
    lines = read_lines(path)
    header = ("pair_ID", "sentence_A", "sentence_B", "relatedness_score")
    if not lines or tuple(lines[0].strip().split("\t")[:4]) != header:
        found = lines[0] if lines else "an empty file"
        raise AnnotationError(
            f"{path.name}: line 1 must be the header starting {' '.join(header)!r}, found "
            f"{found!r}"
        )
    rows: list[tuple[object, ...]] = []
    places: list[str] = []
    for n, line in enumerate(lines[1:], 2):
        if not line.strip():
            continue
        fields = line.strip().split("\t")
        if len(fields) < 4:
            raise AnnotationError(
                f"{path.name}: line {n} has no field {header[len(fields)]!r}: expected at least 4 "
                f"tab-separated fields, found {len(fields)}"
            )
        score = _score(fields[3], f"line {n}", path.name)
        rows.append((f"SICK-R#{fields[0]}", fields[1], fields[2], score, "SICK-R", "test"))
        places.append(f"line {n}")
    check_duplicates([r[0] for r in rows], places, "pair_ID", path.name)
    return rows


def read_senteval_sts(
    root: Path, annotations: PathLike | None = None, *, tasks: Sequence[str] = STS_TASKS
) -> AdapterOutput:
    """Read SentEval's STS test sets; see the module docstring.

    ``annotations`` is SentEval's ``data/downstream`` folder (relative to ``root``; default
    ``root``); ``tasks`` is a subset of :data:`STS_TASKS` (``STS12`` ... ``STS16``,
    ``STSBenchmark``, ``SICK-R``), each of whose files must exist.
    """
    if isinstance(tasks, str):
        tasks = [tasks]
    unknown = [t for t in tasks if t not in STS_TASKS]
    if unknown or not tasks:
        raise ValueError(
            f"senteval-sts: tasks must be a non-empty subset of {list(STS_TASKS)}, found "
            f"{list(tasks)} (unknown: {quote(unknown)})"
        )
    folder = resolve_folder(root, annotations, "senteval-sts")
    rows: list[tuple[object, ...]] = []
    for task in dict.fromkeys(tasks):
        if task in STS_YEARS:
            rows.extend(_read_year(folder, task))
        elif task == "STSBenchmark":
            rows.extend(_read_stsb(folder))
        else:
            rows.extend(_read_sick(folder))
    pairs = pd.DataFrame(rows, columns=list(PAIR_COLUMNS))
    pairs = pairs.astype({c: object for c in PAIR_COLUMNS if c != "score"})
    return AdapterOutput(
        images=frame([], IMAGE_COLUMNS),
        texts=frame([], TEXT_COLUMNS),
        annotations=folder,
        pairs=pairs,
    )
