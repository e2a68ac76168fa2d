"""Preflight: every mistake of a config found in one pass, before any job starts.

``softref check-config CONFIG`` and the start of every Snakemake run (``workflow/rules/common.smk``)
call :func:`check_config`. It runs the schema check and the cross references of
:mod:`softref.config`, then what neither can see, and lists every problem at once, each starting
with its key path:

- numbers are finite wherever the schema has numbers (``lr``, ``alpha``, weight decay, the
  ``mmref`` and ``refine`` floats, ...): YAML's ``.nan`` and ``.inf`` pass a JSON schema's
  bounds, and torch's "Invalid learning rate: nan" names no key, hours later;
- ``min_lr <= lr`` (else the cosine schedule rises);
- dataset formats are known (:data:`softref.data.adapters.FORMATS`) and their ``options`` are
  options of the format (an adapter's keyword-only parameters), with a "did you mean" where a
  known name is close; benchmark ``options`` are options of their protocol;
- splits (of benchmarks and of the references) are :data:`softref.names.SPLITS`;
- the files the run needs exist: the local weights of every teacher a dataset or an experiment
  names, the local
  ``pretrained`` weights of every student an experiment trains, and each dataset's root and
  annotation file, except what the DAG writes itself (:data:`DAG_OUTPUTS`, the demo's data).

Relative paths are read from ``base``, the folder Snakemake runs in (``--directory``). Importing
this module loads neither torch nor snakemake (the adapters' registry only loads pandas, which
Snakemake has loaded already), so the check costs a fraction of a second.
"""

from __future__ import annotations

import copy
import dataclasses
import difflib
import math
import os
from collections.abc import Collection, Iterator, Mapping
from pathlib import Path
from typing import Any

import yaml

from softref.config import BLOCKS, SCHEMA_PATH, Config, ConfigError, load_config, validate_raw
from softref.data.adapters import FORMATS, adapter_options
from softref.names import PROTOCOL_OPTIONS, SPLITS

__all__ = ["DAG_OUTPUTS", "check_config", "check_config_file", "is_local_path", "is_student_path", "preflight"]

#: Folders the DAG writes before reading them (rule synthesize_demo): never "missing" beforehand.
DAG_OUTPUTS: tuple[str, ...] = ("resources/demo",)

# Suffixes of weight files: a value ending so names a file even when it does not exist yet (.json:
# the demo's oracle teachers read their facts from one).
_WEIGHT_SUFFIXES = (".pt", ".pth", ".bin", ".safetensors", ".ckpt", ".json")


def is_local_path(value: str, base: str | os.PathLike[str] = ".") -> bool:
    """Whether a ``weights`` / ``pretrained`` value names a file on disk rather than a hub name or
    an open_clip tag (``ViT-B/32``, ``sentence-transformers/all-mpnet-base-v2``, ``openai``)."""
    return (
        (Path(base) / Path(value).expanduser()).exists()
        or os.path.isabs(value)
        or value.startswith((".", "~", "models"))
        or value.endswith(_WEIGHT_SUFFIXES)
    )


def _suggest(word: Any, known: Collection[str]) -> str:
    close = difflib.get_close_matches(str(word), list(known), n=1, cutoff=0.6)
    return f"; did you mean {close[0]!r}?" if close else ""


def _entries(raw: Mapping[str, Any], block: str) -> Iterator[tuple[str, Mapping[str, Any]]]:
    """The (name, mapping) entries of a named block, skipping what the schema already refuses."""
    entries = raw.get(block)
    if isinstance(entries, Mapping):
        for name, values in entries.items():
            if isinstance(values, Mapping):
                yield str(name), values


# ---------------------------------------------------------------------------------------------
# Numbers
# ---------------------------------------------------------------------------------------------


def _bounds(node: Mapping[str, Any]) -> str:
    """A schema node's bounds as words: ``" > 0"``, ``" in [0, 1]"``, ``""``."""
    low = node.get("exclusiveMinimum", node.get("minimum"))
    high = node.get("exclusiveMaximum", node.get("maximum"))
    if low is not None and high is not None:
        left = "(" if "exclusiveMinimum" in node else "["
        right = ")" if "exclusiveMaximum" in node else "]"
        return f" in {left}{low}, {high}{right}"
    if low is not None:
        return f" {'>' if 'exclusiveMinimum' in node else '>='} {low}"
    if high is not None:
        return f" {'<' if 'exclusiveMaximum' in node else '<='} {high}"
    return ""


def _nonfinite(node: Any, value: Any, where: list[str], problems: list[str]) -> None:
    """Every NaN / inf under ``value``, with the bounds its schema ``node`` gives."""
    node = node if isinstance(node, Mapping) else {}
    if isinstance(value, float) and not math.isfinite(value):
        types = node.get("type", "number")
        if "integer" in types and "number" not in types:
            return  # the schema check already refuses a float where an integer belongs
        problems.append(f"{'.'.join(where)}: expected a finite number{_bounds(node)}, found {value!r}")
    elif isinstance(value, Mapping):
        properties = node.get("properties", {})
        others = node.get("additionalProperties")
        for key, sub in value.items():
            _nonfinite(properties.get(key, others), sub, [*where, str(key)], problems)
    elif isinstance(value, (list, tuple)):
        for k, sub in enumerate(value):
            _nonfinite(node.get("items"), sub, [*where, str(k)], problems)


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _learning_rates(raw: Mapping[str, Any], problems: list[str]) -> None:
    fields = {f.name for f in dataclasses.fields(BLOCKS["experiments"])}
    for name, ex in _entries(raw, "experiments"):
        if set(ex) - fields:
            continue  # a misspelt key (``learning_rate``) left lr at its default: one problem, not two
        lr, min_lr = ex.get("lr"), ex.get("min_lr")
        if _is_number(lr) and _is_number(min_lr) and min_lr > lr:
            problems.append(
                f"experiments.{name}.min_lr: expected <= lr ({lr:g}), found {min_lr:g} "
                f"(the cosine schedule would rise from lr to min_lr)"
            )


# ---------------------------------------------------------------------------------------------
# Names: formats, options, splits
# ---------------------------------------------------------------------------------------------


def _formats(raw: Mapping[str, Any], problems: list[str]) -> None:
    for name, ds in _entries(raw, "datasets"):
        fmt = ds.get("format")
        if not isinstance(fmt, str):
            continue
        if fmt not in FORMATS:
            problems.append(
                f"datasets.{name}.format: unknown format {fmt!r}; known: {sorted(FORMATS)}{_suggest(fmt, FORMATS)}"
            )
            continue
        options = ds.get("options")
        known = adapter_options(fmt)
        for key in options if isinstance(options, Mapping) else ():
            if key not in known:
                problems.append(
                    f"datasets.{name}.options.{key}: not an option of format {fmt!r}; its options: "
                    f"{sorted(known) or 'none'}{_suggest(key, known)}"
                )


def _splits_and_protocol_options(raw: Mapping[str, Any], problems: list[str]) -> None:
    def split(where: str, value: Any) -> None:
        if isinstance(value, str) and value not in SPLITS:
            problems.append(f"{where}: expected one of {list(SPLITS)}, found {value!r}{_suggest(value, SPLITS)}")

    for name, bm in _entries(raw, "benchmarks"):
        split(f"benchmarks.{name}.split", bm.get("split"))
        protocol, options = bm.get("protocol"), bm.get("options")
        if protocol in PROTOCOL_OPTIONS and isinstance(options, Mapping):
            known = PROTOCOL_OPTIONS[protocol]
            for key in options:
                # A key of no protocol at all is the schema's to report (with its "did you mean").
                if key not in known and any(key in names for names in PROTOCOL_OPTIONS.values()):
                    problems.append(
                        f"benchmarks.{name}.options.{key}: not an option of protocol {protocol!r}; its "
                        f"options: {sorted(known) or 'none'}{_suggest(key, known)}"
                    )
    references = raw.get("references")
    if isinstance(references, Mapping):
        split("references.split", references.get("split"))


# ---------------------------------------------------------------------------------------------
# Files
# ---------------------------------------------------------------------------------------------


def is_student_path(pretrained: str) -> bool:
    """Whether a student's ``pretrained`` names a local checkpoint (else an open_clip tag such as
    ``openai``), as :class:`softref.models.student.Student` reads it."""
    return os.sep in pretrained or "/" in pretrained or pretrained.endswith(_WEIGHT_SUFFIXES)


def _written_by_dag(value: str, produced: Collection[str]) -> bool:
    if os.path.isabs(value):
        return False
    parts = Path(os.path.normpath(value)).parts
    return any(parts[: len(Path(p).parts)] == Path(p).parts for p in produced)


def _files(raw: Mapping[str, Any], base: Path, produced: Collection[str], problems: list[str]) -> None:
    def missing(where: str, value: Any, what: str, folder: bool = False) -> bool:
        if not isinstance(value, str) or not value or _written_by_dag(value, produced):
            return False
        path = base / Path(value).expanduser()
        if path.is_dir() if folder else path.exists():
            return False
        problems.append(f"{where}: {what} not found: {path}")
        return True

    datasets = dict(_entries(raw, "datasets"))
    experiments = [ex for _, ex in _entries(raw, "experiments")]
    used_teachers = {t for ds in datasets.values() for t in ds.get("teachers") or () if isinstance(t, str)}
    used_teachers |= {ex.get(key) for ex in experiments for key in ("image_teacher", "text_teacher")}
    for name, teacher in _entries(raw, "teachers"):
        weights = teacher.get("weights")
        if name in used_teachers and isinstance(weights, str) and is_local_path(weights, base):
            missing(f"teachers.{name}.weights", weights, "teacher weights")
    used_students = {ex.get("student") for ex in experiments}
    for name, student in _entries(raw, "students"):
        pretrained = student.get("pretrained")
        if name in used_students and isinstance(pretrained, str) and is_student_path(pretrained):
            missing(f"students.{name}.pretrained", pretrained, "student weights")
    for name, ds in datasets.items():
        root = ds.get("root")
        if missing(f"datasets.{name}.root", root, "dataset root folder", folder=True) or not isinstance(root, str):
            continue
        annotations = ds.get("annotations")
        if isinstance(annotations, str) and annotations:
            missing(f"datasets.{name}.annotations", os.path.join(root, annotations), "annotation file")


# ---------------------------------------------------------------------------------------------
# The check
# ---------------------------------------------------------------------------------------------


def _known_keys_only(raw: Mapping[str, Any]) -> dict[str, Any]:
    """A copy of ``raw`` without the keys the schema refuses as unknown inside named blocks, so a
    misspelt key is reported once (by the schema) and its entry still builds: the tables and
    experiments naming it then raise no second, derived problem."""
    out = copy.deepcopy(dict(raw))
    for block in ("datasets", "teachers", "students", "experiments", "benchmarks", "tables"):
        fields = {f.name for f in dataclasses.fields(BLOCKS[block])}
        for _, values in _entries(out, block):
            for key in [k for k in values if k not in fields]:
                del values[key]  # type: ignore[attr-defined]
    return out


def _refined(problems: list[str]) -> list[str]:
    """The problems without those another one repeats and extends (the schema's "expected one of"
    for a split, then the same words with a "did you mean")."""
    return [p for p in problems if not any(q != p and q.startswith(p) for q in problems)]


def _path_of(problem: str) -> str:
    return problem.split(": ", 1)[0]


def check_config(
    raw: dict[str, Any],
    *,
    base: str | os.PathLike[str] = ".",
    produced: Collection[str] = DAG_OUTPUTS,
    check_files: bool = True,
) -> tuple[Config | None, list[str]]:
    """Check ``raw`` (filling the schema's defaults in place, as Snakemake's ``validate``) and return
    the typed config (None when it cannot be built) and every problem found, one line each.

    A key the schema flags is not flagged again by a later check (one line per mistake).
    """
    if not isinstance(raw, dict):
        return None, [f"config: expected a mapping at the top level, found {type(raw).__name__}"]
    problems: list[str] = []
    _nonfinite(yaml.safe_load(SCHEMA_PATH.read_text(encoding="utf-8")), raw, [], problems)
    flagged = {_path_of(p) for p in problems}
    try:
        validate_raw(raw)
    except ConfigError as err:
        problems += [p for p in err.problems if _path_of(p) not in flagged]
    cfg = None
    try:
        cfg = load_config(_known_keys_only(raw))
    except ConfigError as err:
        seen = {_path_of(p) for p in problems}
        problems += [p for p in err.problems if _path_of(p) not in seen]
    except (KeyError, TypeError, AttributeError):
        # The cross references assume a config the schema accepted; the schema's problems say why not.
        if not problems:
            raise
    _learning_rates(raw, problems)
    _formats(raw, problems)
    _splits_and_protocol_options(raw, problems)
    if check_files:
        _files(raw, Path(base), produced, problems)
    problems = _refined(list(dict.fromkeys(problems)))
    return (cfg if not problems else None), problems


def preflight(raw: dict[str, Any], **kwargs: Any) -> Config:
    """:func:`check_config`, raising one :class:`ConfigError` that lists every problem."""
    cfg, problems = check_config(raw, **kwargs)
    if problems or cfg is None:
        raise ConfigError(problems or ["config: could not be built"])
    return cfg


def check_config_file(path: str | os.PathLike[str], **kwargs: Any) -> tuple[Config | None, list[str]]:
    """:func:`check_config` of a YAML file; an unreadable file is one problem naming it."""
    path = Path(path)
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return None, [f"{path}: config file not found"]
    except yaml.YAMLError as err:
        return None, [f"{path}: not valid YAML: {err}"]
    return check_config(raw if raw is not None else {}, **kwargs)
