"""Check the feature shards of a teacher directory, against their manifests when given.

:func:`validate_shards` reads every ``{modality}-{shard}.h5`` of a directory in blocks and
reports, per file, rows, dim, dtype, completeness, non-finite rows and row-norm statistics,
and collects problems: incomplete or unreadable shards, NaN/inf rows, dims that disagree
with the attributes, shards that disagree with each other, missing shard indices, duplicate
ids, and, with a manifest, ids that are not the manifest rows of that shard
(:func:`softref.data.manifest.shard_rows`) or a ``manifest_sha256`` of another file.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from softref.data.manifest import file_sha256, read_images, read_texts, shard_rows
from softref.features.shards import (
    CONSISTENT_ATTRS,
    MODALITIES,
    REQUIRED_ATTRS,
    TMP_MARKER,
    parse_shard_filename,
    read_shard_attrs,
)

__all__ = ["ShardReport", "ValidationReport", "validate_shards"]

log = logging.getLogger(__name__)

_BLOCK_ROWS = 4096
_SHOW = 5


@dataclass(frozen=True)
class ShardReport:
    """What one shard file holds."""

    path: Path
    modality: str
    shard: int | None
    num_shards: int | None
    rows: int
    dim: int | None
    dtype: str | None
    complete: bool
    nonfinite_rows: int
    norm_min: float | None
    norm_mean: float | None
    norm_max: float | None
    has_tokens: bool = False
    attrs: dict[str, Any] = field(default_factory=dict, compare=False, repr=False)

    def line(self) -> str:
        """One human-readable summary line."""
        norms = (
            f"norm min/mean/max {self.norm_min:.4f}/{self.norm_mean:.4f}/{self.norm_max:.4f}"
            if self.norm_mean is not None
            else "norm -"
        )
        shard = f"shard {self.shard}/{self.num_shards}" if self.shard is not None else "shard ?"
        return (
            f"{self.path.name}: {shard}, {self.rows} rows x {self.dim} {self.dtype}, "
            f"complete={self.complete}, non-finite rows {self.nonfinite_rows}, {norms}"
            + (", tokens" if self.has_tokens else "")
        )


@dataclass(frozen=True)
class ValidationReport:
    """Per-file reports and the problems found; ``ok`` when there are none."""

    directory: Path
    files: tuple[ShardReport, ...]
    problems: tuple[str, ...]
    warnings: tuple[str, ...] = ()

    @property
    def ok(self) -> bool:
        return not self.problems


def _quote(values: Sequence[Any]) -> str:
    values = list(values)
    shown = ", ".join(repr(v) for v in values[:_SHOW])
    return shown + (f" (and {len(values) - _SHOW} more)" if len(values) > _SHOW else "")


def _scan_file(path: Path, modality: str, problems: list[str]) -> tuple[ShardReport, list[str]]:
    """Read one shard in blocks; append its problems; return its report and its ids."""
    try:
        attrs = read_shard_attrs(path)
    except (OSError, ValueError) as exc:
        problems.append(f"{path}: unreadable ({exc})")
        return ShardReport(path, modality, None, None, 0, None, None, False, 0, None, None, None), []
    missing = [k for k in REQUIRED_ATTRS + ("dim", "dtype", "complete") if k not in attrs]
    if missing:
        problems.append(f"{path}: attrs missing {missing}")
    complete = attrs.get("complete") is True
    if not complete:
        problems.append(f"{path}: incomplete: attr 'complete' expected True, found {attrs.get('complete', '<missing>')!r}")
    if attrs.get("modality", modality) != modality:
        problems.append(f"{path}: attr 'modality' expected {modality!r} (from the file name), found {attrs['modality']!r}")

    with h5py.File(path, "r") as f:
        if "ids" not in f or "features" not in f:
            problems.append(f"{path}: datasets 'ids' and 'features' expected, found {sorted(f)}")
            return ShardReport(path, modality, attrs.get("shard"), attrs.get("num_shards"), 0,
                               None, None, complete, 0, None, None, None, attrs=attrs), []
        ids_ds, feats = f["ids"], f["features"]
        ids = ids_ds.asstr()[:].tolist() if len(ids_ds) else []
        rows = feats.shape[0]
        dim = feats.shape[1] if feats.ndim == 2 else None
        dtype = str(feats.dtype)
        if feats.ndim != 2:
            problems.append(f"{path}: 'features' expected 2-D (rows x dim), found shape {feats.shape}")
        if len(ids) != rows:
            problems.append(f"{path}: 'ids' has {len(ids)} rows, 'features' has {rows}; expected equal")
        if "dim" in attrs and dim is not None and int(attrs["dim"]) != dim:
            problems.append(f"{path}: dim mismatch: attr 'dim' is {attrs['dim']}, 'features' has {dim} columns")
        if "dtype" in attrs and attrs["dtype"] != dtype:
            problems.append(f"{path}: attr 'dtype' is {attrs['dtype']!r}, 'features' is {dtype}")
        has_tokens = "tokens" in f
        if has_tokens and f["tokens"].shape[0] != rows:
            problems.append(f"{path}: 'tokens' has {f['tokens'].shape[0]} rows, 'features' has {rows}")

        bad_rows: list[int] = []
        nmin, nmax, nsum, ncount = np.inf, -np.inf, 0.0, 0
        if feats.ndim == 2:
            for start in range(0, rows, _BLOCK_ROWS):
                block = feats[start : start + _BLOCK_ROWS].astype(np.float64)
                finite = np.isfinite(block).all(axis=1)
                if has_tokens:
                    tok = f["tokens"][start : start + _BLOCK_ROWS]
                    finite &= np.isfinite(tok.reshape(len(tok), -1)).all(axis=1)
                bad_rows.extend((np.flatnonzero(~finite) + start).tolist())
                norms = np.linalg.norm(block[finite], axis=1)
                if len(norms):
                    nmin, nmax = min(nmin, norms.min()), max(nmax, norms.max())
                    nsum += float(norms.sum())
                    ncount += len(norms)
        if bad_rows:
            first = [f"row {r} id {ids[r]!r}" if r < len(ids) else f"row {r}" for r in bad_rows[:_SHOW]]
            problems.append(
                f"{path}: {len(bad_rows)} row(s) with NaN/inf features"
                + (" or tokens" if has_tokens else "")
                + f"; first: {', '.join(first)}"
            )
    report = ShardReport(
        path=path,
        modality=modality,
        shard=attrs.get("shard"),
        num_shards=attrs.get("num_shards"),
        rows=rows,
        dim=dim,
        dtype=dtype,
        complete=complete,
        nonfinite_rows=len(bad_rows),
        norm_min=float(nmin) if ncount else None,
        norm_mean=nsum / ncount if ncount else None,
        norm_max=float(nmax) if ncount else None,
        has_tokens=has_tokens,
        attrs=attrs,
    )
    return report, ids


def _agreed(key: str, reports: list[ShardReport], evidence: dict[str, Any]) -> tuple[bool, Any]:
    """The value of attr ``key`` the shards should share: the one outside evidence names (the
    folder's teacher, the file names' modality) when a shard has it, else the value most shards
    have; ``(False, None)`` when neither decides (two shards, two values)."""
    values = [r.attrs[key] for r in reports if key in r.attrs]
    if key in evidence and evidence[key] in values:
        return True, evidence[key]
    counts: dict[str, int] = {}
    for value in values:
        counts[repr(value)] = counts.get(repr(value), 0) + 1
    ranked = sorted(counts.values(), reverse=True)
    if not ranked or (len(ranked) > 1 and ranked[0] == ranked[1]):
        return False, None
    top = max(counts, key=counts.__getitem__)
    return True, next(v for v in values if repr(v) == top)


def _check_agreement(
    modality: str, usable: list[ShardReport], evidence: dict[str, Any], why: dict[str, str],
    skip: tuple[str, ...], problems: list[str],
) -> None:
    """Blame the shards whose attrs differ from the agreed value (never the good shard of a pair)."""
    for key in CONSISTENT_ATTRS:
        if key in skip or len({repr(r.attrs[key]) for r in usable if key in r.attrs}) < 2:
            continue
        decided, value = _agreed(key, usable, evidence)
        if not decided:
            found = ", ".join(f"{r.path.name} has {r.attrs[key]!r}" for r in usable if key in r.attrs)
            problems.append(
                f"{usable[0].path.parent}: the {modality} shards disagree on attr {key!r} ({found}) and "
                f"nothing says which is right; all {modality} shards must agree"
            )
            continue
        agree = [r.path.name for r in usable if key in r.attrs and r.attrs[key] == value]
        reason = f"as {why[key]}" if key in evidence and value == evidence[key] else f"as in {', '.join(agree[:_SHOW])}"
        for r in usable:
            if key in r.attrs and r.attrs[key] != value:
                problems.append(
                    f"{r.path}: attr {key!r} is {r.attrs[key]!r}, expected {value!r} ({reason}); "
                    f"all {modality} shards must agree"
                )


def _check_group(
    modality: str,
    reports: list[ShardReport],
    ids_of: dict[Path, list[str]],
    problems: list[str],
    skip: tuple[str, ...] = (),
) -> None:
    """Shards of one modality agree (but on the attrs in ``skip``), none is missing, no id is in
    two of them."""
    usable = [r for r in reports if r.attrs]
    if not usable:
        return
    first = usable[0]
    # What the folder says: results/features/<dataset>/<teacher>/<modality>-<shard>.h5.
    evidence = {"modality": modality, "teacher": first.path.parent.name}
    why = {"modality": "the file names say", "teacher": "the folder's name says"}
    _check_agreement(modality, usable, evidence, why, skip, problems)
    _, num_shards = _agreed("num_shards", usable, {})
    if isinstance(num_shards, int):
        present = {r.shard for r in usable}
        missing = sorted(set(range(num_shards)) - present)
        if missing:
            problems.append(
                f"{first.path.parent}: missing {modality} shard(s) {missing} of {num_shards}"
            )
    for r in usable:
        parsed = parse_shard_filename(r.path.name)
        if parsed is not None and r.shard is not None and parsed[1] != r.shard:
            problems.append(f"{r.path}: attr 'shard' is {r.shard}, the file name says {parsed[1]}")
    owner: dict[str, Path] = {}
    duplicates: list[str] = []
    for r in reports:
        for id_ in ids_of.get(r.path, []):
            other = owner.setdefault(id_, r.path)
            if other != r.path:
                duplicates.append(f"{id_!r} ({other.name} and {r.path.name})")
    if duplicates:
        problems.append(
            f"{first.path.parent}: {len(duplicates)} duplicate {modality} id(s) across shards; "
            f"first: {', '.join(duplicates[:_SHOW])}"
        )


def _check_manifest(
    modality: str,
    manifest: Path,
    reports: list[ShardReport],
    ids_of: dict[Path, list[str]],
    problems: list[str],
) -> None:
    """Each shard holds exactly its block of manifest rows and names this manifest's sha256."""
    if modality == "images":
        df, id_col = read_images(manifest), "image_id"
    else:
        df, id_col = read_texts(manifest), "text_id"
    if not reports:
        problems.append(f"no {modality} shards to check against {manifest}")
        return
    sha = file_sha256(manifest)
    for r in reports:
        # A shard covers its recorded splits' rows (extraction of the train split only), else all.
        covered = str(r.attrs.get("splits", "all"))
        rows = df if covered == "all" else df[df["split"].isin(covered.split(","))]
        manifest_ids = rows[id_col].tolist()
        found_sha = r.attrs.get("manifest_sha256")
        if found_sha is not None and found_sha != sha:
            problems.append(
                f"{r.path}: manifest_sha256 mismatch: shard has {found_sha!r}, {manifest} has {sha!r}"
            )
        if r.shard is None or r.num_shards is None:
            continue
        try:
            start, stop = shard_rows(len(manifest_ids), int(r.shard), int(r.num_shards))
        except ValueError as exc:
            problems.append(f"{r.path}: shard {r.shard} of {r.num_shards}: {exc}")
            continue
        expected = manifest_ids[start:stop]
        found = ids_of.get(r.path, [])
        if len(found) != len(expected):
            problems.append(
                f"{r.path}: expected {len(expected)} ids (manifest rows [{start}, {stop}) of "
                f"{manifest}), found {len(found)}"
            )
        differ = [k for k, (a, b) in enumerate(zip(expected, found)) if a != b]
        if differ:
            k = differ[0]
            problems.append(
                f"{r.path}: {len(differ)} id(s) differ from {manifest}; first at row {k}: "
                f"expected {expected[k]!r} (manifest row {start + k}), found {found[k]!r}"
            )


def validate_shards(
    directory: Path | str,
    images_manifest: Path | str | None = None,
    texts_manifest: Path | str | None = None,
) -> ValidationReport:
    """Check every shard of a teacher directory (and their ids against the manifests given)."""
    directory = Path(directory)
    if not directory.is_dir():
        raise FileNotFoundError(f"feature directory not found: {directory}")
    problems: list[str] = []
    warnings: list[str] = []
    files: list[ShardReport] = []
    by_modality: dict[str, list[ShardReport]] = {m: [] for m in MODALITIES}
    ids_of: dict[Path, list[str]] = {}

    entries = sorted(directory.iterdir(), key=lambda p: (parse_shard_filename(p.name) or ("", -1), p.name))
    for path in entries:
        parsed = parse_shard_filename(path.name)
        if parsed is None:
            if TMP_MARKER in path.name:
                final = directory / path.name.split(TMP_MARKER)[0]
                note = f"{path}: temporary file of an interrupted or running extraction"
                if final.exists():
                    warnings.append(note + f" (ignored: {final.name} is complete)")
                else:
                    problems.append(note + f"; {final.name} is missing")
            continue
        log.debug("checking %s", path)
        report, ids = _scan_file(path, parsed[0], problems)
        files.append(report)
        by_modality[parsed[0]].append(report)
        ids_of[path] = ids
    if not files:
        problems.append(f"{directory}: no feature shards (images-<shard>.h5 / texts-<shard>.h5)")

    manifests = {"images": images_manifest, "texts": texts_manifest}
    for modality, reports in by_modality.items():
        # With its manifest, a shard of another manifest is blamed by _check_manifest, shard by shard.
        skip = ("manifest_sha256",) if manifests[modality] is not None else ()
        _check_group(modality, reports, ids_of, problems, skip)
    for modality, manifest in manifests.items():
        if manifest is not None:
            _check_manifest(modality, Path(manifest), by_modality[modality], ids_of, problems)
    return ValidationReport(directory, tuple(files), tuple(problems), tuple(warnings))
