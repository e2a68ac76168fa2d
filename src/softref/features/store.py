"""FeatureStore: random access by id to the teacher features of one (dataset, teacher, modality).

The store reads only the ``ids`` datasets when it opens (to build an id -> row index), the
attributes it checks and the chunk index of each ``features`` dataset; features are read row
by row on demand, so memory does not grow with the dataset beyond that index. The index is
numpy arrays (:class:`~softref.data.strings.StringIndex`), not a dict of Python strings, so
forked DataLoader workers share it with the parent instead of copying it page by page.

Rows are read as the bytes HDF5 stored (:class:`~softref.features.shards.RowTable`: one
``os.preadv`` per run of rows adjacent in a file, straight into the output array), since
h5py costs about 70 us per row read on its own (measured: 128 random rows of 37,632-d float16,
warm, 1.2 ms by ``preadv`` against 10-14 ms by h5py slices). Datasets whose rows are not plain
bytes in the file (filters, chunks narrower than a row) are read through h5py.

HDF5 handles and file descriptors are opened lazily and kept per process id, so a store built
in the main process can be handed to DataLoader workers (each reopens its files after the
fork, and pickling drops the handles for the spawn start method).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from types import TracebackType
from typing import Any

import h5py
import numpy as np

from softref.data.strings import StringIndex
from softref.features.shards import (
    attrs_equal,
    CONSISTENT_ATTRS,
    MODALITIES,
    TMP_MARKER,
    RowTable,
    ShardError,
    parse_shard_filename,
    read_complete_attrs,
    read_rows,
    read_shard_attrs,
    row_layout,
)

__all__ = ["FeatureStore", "shard_paths"]

log = logging.getLogger(__name__)

# Attributes that differ from shard to shard by design.
_PER_SHARD = ("shard", "created")


def shard_paths(directory: Path | str, modality: str) -> list[Path]:
    """The ``{modality}-{shard}.h5`` files of a teacher directory, sorted by shard index.

    Temporary files of interrupted or running extractions (``*.h5.tmp-<pid>``) are not listed.
    """
    directory = Path(directory)
    if modality not in MODALITIES:
        raise ValueError(f"modality must be one of {list(MODALITIES)}, got {modality!r}")
    if not directory.is_dir():
        raise FileNotFoundError(f"feature directory not found: {directory}")
    found = []
    for path in directory.iterdir():
        parsed = parse_shard_filename(path.name)
        if parsed is not None and parsed[0] == modality:
            found.append((parsed[1], path))
    return [path for _, path in sorted(found)]


#: IEEE exponent bits of each float width: all ones mean NaN or inf.
_EXPONENT = {2: (np.uint16, 0x7C00), 4: (np.uint32, 0x7F800000), 8: (np.uint64, 0x7FF0000000000000)}


#: Values per block of :func:`_all_finite`: its scratch (512 KB of float16) stays in the L2 cache.
_FINITE_BLOCK = 1 << 18


def _all_finite(rows: np.ndarray) -> bool:
    """Whether every value of ``rows`` is finite, from the exponent bits (no value is converted):
    about 15x faster than ``np.isfinite`` on float16. Blocks of :data:`_FINITE_BLOCK` values
    through one cache-resident scratch array: 0.67 against 1.11 ms for the whole batch at once
    (128 rows of 37,632 float16, about one memcpy of the batch)."""
    if rows.dtype.kind != "f" or rows.dtype.itemsize not in _EXPONENT or not rows.flags.c_contiguous:
        return bool(np.isfinite(rows).all())
    uint, mask = _EXPONENT[rows.dtype.itemsize]
    flat, mask = rows.reshape(-1).view(uint), uint(mask)
    scratch = np.empty(min(_FINITE_BLOCK, flat.size), dtype=uint)
    for start in range(0, flat.size, _FINITE_BLOCK):
        part = flat[start : start + _FINITE_BLOCK]
        exponent = np.bitwise_and(part, mask, out=scratch[: part.size])
        if exponent.max() == mask:
            return False
    return True


class FeatureStore:
    """Teacher features of several shards of one (dataset, teacher, modality), fetched by id.

    ``expect`` maps attribute names to the values the consumer requires (e.g. ``teacher``,
    ``weights_sha256``, ``manifest_sha256``, ``dim``); a shard that disagrees is refused with
    an error naming the key, the expected value, the found value and the file. Also refused:
    incomplete shards (``complete`` unset, or a temporary ``*.tmp-*`` file), shards that
    disagree with each other, a missing shard index, and ids present in two shards.
    """

    def __init__(self, paths: Sequence[Path | str], expect: Mapping[str, Any] | None = None) -> None:
        paths = [Path(p) for p in paths]
        if not paths:
            raise ShardError("FeatureStore needs at least one shard file, got none")
        metas = [self._check_file(p, expect) for p in paths]
        order = sorted(range(len(paths)), key=lambda i: int(metas[i]["shard"]))
        self._paths: list[Path] = [paths[i] for i in order]
        metas = [metas[i] for i in order]
        self._check_consistent(self._paths, metas)
        self._check_shard_indices(self._paths, metas)
        self._attrs = {k: v for k, v in metas[0].items() if k not in _PER_SHARD}
        self._dim = int(self._attrs["dim"])

        # The index: id -> global row; file boundaries in _offsets. Only ids (and the chunk
        # index of each features dataset) are read here.
        ids: list[str] = []
        dtypes: list[np.dtype] = []
        self._has_tokens: list[bool] = []
        layouts = []
        offsets = [0]
        for i, path in enumerate(self._paths):
            with h5py.File(path, "r") as f:
                file_ids = f["ids"].asstr()[:].tolist() if len(f["ids"]) else []
                nfeat = f["features"].shape[0]
                self._has_tokens.append("tokens" in f)
                layouts.append(row_layout(f["features"]))
                dtypes.append(f["features"].dtype)
            if nfeat != len(file_ids):
                raise ShardError(
                    f"{path}: 'ids' has {len(file_ids)} rows but 'features' has {nfeat}; expected equal"
                )
            ids.extend(file_ids)
            offsets.append(offsets[-1] + len(file_ids))
        self._offsets = np.asarray(offsets, dtype=np.int64)
        self._dtype = np.result_type(*dtypes)
        self._index = StringIndex(ids)
        del ids
        self._by_row = np.argsort(self._index.values)  # sorted-key position of each global row
        self._check_unique()
        # Per dataset: its RowTable and the place of every global row (None: h5py).
        self._tables: dict[str, tuple[RowTable, np.ndarray] | None] = {"features": self._row_table(layouts)}
        self._pid = os.getpid()
        # Per dataset: which global rows this process has found finite (_check_finite).
        self._finite_rows: dict[str, np.ndarray] = {}
        self._handles: dict[int, h5py.File] = {}
        self._fds: dict[int, int] = {}

    @classmethod
    def from_dir(
        cls,
        directory: Path | str,
        modality: str,
        expect: Mapping[str, Any] | None = None,
    ) -> FeatureStore:
        """Open every ``{modality}-{shard}.h5`` of a teacher directory.

        A leftover temporary file next to a complete shard is ignored (with a warning); one
        standing in for a missing shard is named in the missing-shard error.
        """
        directory = Path(directory)
        paths = shard_paths(directory, modality)
        tmps = sorted(p for p in directory.glob(f"{modality}-*.h5{TMP_MARKER}*"))
        if not paths:
            extra = f"; temporary files of unfinished extractions: {[p.name for p in tmps]}" if tmps else ""
            raise FileNotFoundError(
                f"no feature shards {modality}-<shard>.h5 in {directory}{extra}"
            )
        pending = []
        for tmp in tmps:
            final = tmp.name.split(TMP_MARKER)[0]
            if (directory / final).exists():
                log.warning("ignoring leftover temporary file %s (the shard %s is complete)", tmp, final)
            else:
                pending.append(tmp.name)
        try:
            store = cls(paths, expect=expect)
        except ShardError as exc:
            if pending:
                raise ShardError(
                    f"{exc}; temporary files of unfinished extractions: {pending}"
                ) from None
            raise
        for path in store._paths:
            _, shard = parse_shard_filename(path.name)  # type: ignore[misc]
            found = read_shard_attrs(path)["shard"]
            if int(found) != shard:
                raise ShardError(f"{path}: attr 'shard' expected {shard} (from the file name), found {found}")
        return store

    # -- checks ---------------------------------------------------------------------------
    @staticmethod
    def _check_file(path: Path, expect: Mapping[str, Any] | None) -> dict[str, Any]:
        attrs = read_complete_attrs(path)
        for key in CONSISTENT_ATTRS + ("shard",):
            if key not in attrs:
                raise ShardError(f"{path}: attr {key!r} missing; found attrs {sorted(attrs)}")
        for key, value in (expect or {}).items():
            found = attrs.get(key, "<missing>")
            if not attrs_equal(found, value):
                raise ShardError(
                    f"{path}: attr {key!r} expected {value!r}, found {found!r}"
                )
        return attrs

    @staticmethod
    def _check_consistent(paths: list[Path], metas: list[dict[str, Any]]) -> None:
        first = metas[0]
        for path, meta in zip(paths[1:], metas[1:]):
            for key in CONSISTENT_ATTRS:
                if not attrs_equal(meta[key], first[key]):
                    raise ShardError(
                        f"{path}: attr {key!r} expected {first[key]!r} (as in {paths[0]}), "
                        f"found {meta[key]!r}; all shards of a store must agree"
                    )

    @staticmethod
    def _check_shard_indices(paths: list[Path], metas: list[dict[str, Any]]) -> None:
        num_shards = int(metas[0]["num_shards"])
        seen: dict[int, Path] = {}
        for path, meta in zip(paths, metas):
            shard = int(meta["shard"])
            if shard in seen:
                raise ShardError(f"shard {shard} given twice: {seen[shard]} and {path}")
            seen[shard] = path
        missing = sorted(set(range(num_shards)) - set(seen))
        if missing:
            where = paths[0].parent
            raise ShardError(
                f"missing shard(s) {missing} of {num_shards} ({metas[0]['modality']}, teacher "
                f"{metas[0]['teacher']!r}) in {where}: expected shards 0..{num_shards - 1}, "
                f"found {sorted(seen)}"
            )

    @staticmethod
    def _file_of(position: int, offsets: Sequence[int] | np.ndarray) -> int:
        return int(np.searchsorted(np.asarray(offsets), position, side="right")) - 1

    def _check_unique(self) -> None:
        repeats = self._index.duplicates()
        if repeats:
            id_, first, other = repeats[0]
            first, other = sorted((first, other))
            where = self._file_of(other, self._offsets)
            raise ShardError(
                f"duplicate id {id_!r}: in {self._paths[self._file_of(first, self._offsets)]} and in "
                f"{self._paths[where]} (row {other - int(self._offsets[where])}); expected each id in exactly one shard"
                + (f" ({len(repeats)} duplicates in all)" if len(repeats) > 1 else "")
            )

    # -- properties -----------------------------------------------------------------------
    @property
    def ids(self) -> list[str]:
        """All ids, shard by shard in row order."""
        return self._row_ids(0, len(self))

    @property
    def dim(self) -> int:
        return self._dim

    @property
    def dtype(self) -> np.dtype:
        """The stored dtype of the features (the widest, should shards differ)."""
        return self._dtype

    @property
    def attrs(self) -> dict[str, Any]:
        """The attributes the shards share (without per-shard ``shard`` and ``created``)."""
        return dict(self._attrs)

    @property
    def paths(self) -> list[Path]:
        return list(self._paths)

    @property
    def has_tokens(self) -> bool:
        return all(self._has_tokens)

    def __len__(self) -> int:
        return int(self._offsets[-1])

    def __contains__(self, id_: object) -> bool:
        return id_ in self._index

    def contains(self, ids: Sequence[str]) -> np.ndarray:
        """(len(ids),) bool: which of ``ids`` the store holds (one vectorised lookup)."""
        return self._index.lookup(list(ids)) >= 0

    def __repr__(self) -> str:
        return (
            f"FeatureStore({self._attrs.get('modality')!r}, teacher={self._attrs.get('teacher')!r}, "
            f"rows={len(self)}, dim={self._dim}, shards={len(self._paths)})"
        )

    def _row_ids(self, start: int, stop: int) -> list[str]:
        keys = self._index.keys[self._by_row[start:stop]]
        return [key.decode("utf-8") for key in keys.tolist()]

    # -- reading --------------------------------------------------------------------------
    def _this_process(self) -> None:
        pid = os.getpid()
        if pid != self._pid:
            # Handles inherited over fork share the parent's HDF5 state: never reuse them (the
            # descriptors would work with pread, but close() must not close the parent's).
            self._handles, self._fds, self._pid = {}, {}, pid

    def _file(self, i: int) -> h5py.File:
        self._this_process()
        handle = self._handles.get(i)
        if handle is None:
            handle = h5py.File(self._paths[i], "r")
            self._handles[i] = handle
        return handle

    def _fd_list(self) -> list[int]:
        """This process's read-only descriptor of every file (opened on first use)."""
        self._this_process()
        if len(self._fds) < len(self._paths):
            for i, path in enumerate(self._paths):
                if i not in self._fds:
                    self._fds[i] = os.open(path, os.O_RDONLY)
        return [self._fds[i] for i in range(len(self._paths))]

    def _row_table(self, layouts: Sequence[Any]) -> tuple[RowTable, np.ndarray] | None:
        """One table of every file's rows and the place of each global row, or None (then h5py reads
        the rows) when a file's rows are not plain bytes or the files disagree on dtype or row shape."""
        if any(layout is None for layout in layouts):
            return None
        try:
            table = RowTable(layouts, self._offsets)
        except ValueError:
            return None
        return table, table.places(np.arange(len(self), dtype=np.int64))

    def _table(self, name: str) -> tuple[RowTable, np.ndarray] | None:
        if name not in self._tables:
            self._tables[name] = self._row_table([row_layout(self._file(i)[name]) for i in range(len(self._paths))])
        return self._tables[name]

    def _find(self, ids: Sequence[str]) -> np.ndarray:
        """Where each id is among the index's sorted keys; KeyError naming the first unknown id."""
        at = self._index.find(ids)
        unknown = np.flatnonzero(at < 0)
        if len(unknown):
            raise KeyError(
                f"id {ids[int(unknown[0])]!r} not in the {self._attrs.get('modality')} features of teacher "
                f"{self._attrs.get('teacher')!r} ({len(self)} ids in "
                f"{self._paths[0].parent})"
            )
        return at

    def _gather(self, positions: np.ndarray, name: str, dtype: Any, out: np.ndarray | None = None) -> np.ndarray:
        """Rows ``positions`` (global rows, checked by the caller) of dataset ``name``, in order."""
        fast = self._table(name)
        if fast is not None:
            table, places = fast
            shape, stored = (len(positions),) + table.row_shape, table.dtype
        else:
            datasets = [self._file(i)[name] for i in range(len(self._paths))]
            shape, stored = (len(positions),) + tuple(datasets[0].shape[1:]), np.result_type(*(d.dtype for d in datasets))
        want = stored if dtype is None else np.dtype(dtype)
        if out is not None and (out.shape != shape or out.dtype != want or not out.flags.c_contiguous):
            raise ValueError(f"out: expected a C-contiguous {want} array of shape {shape}, found {out.dtype} "
                             f"{out.shape}{'' if out.flags.c_contiguous else ' (not C-contiguous)'}")
        if fast is not None:
            rows = out if out is not None and want == stored else np.empty(shape, dtype=stored)
            table.read(self._fd_list(), places[positions], rows)
        else:
            # h5py reads sorted distinct rows per file; each request then takes its row.
            uniq, inverse = np.unique(positions, return_inverse=True)
            files = np.searchsorted(self._offsets, uniq, side="right") - 1
            buf = np.empty((len(uniq),) + shape[1:], dtype=stored)
            for i in np.unique(files).tolist():
                buf[files == i] = read_rows(datasets[i], uniq[files == i] - self._offsets[i])
            rows = buf[inverse.reshape(-1)]
        self._check_finite(rows, positions, name)
        if out is None:
            return rows.astype(want, copy=False)
        if rows is not out:
            out[...] = rows
        return out

    def _positions(self, rows: Any) -> np.ndarray:
        """``rows`` as an int64 array of global rows: TypeError unless a 1-d integer array,
        IndexError naming the first row out of range."""
        positions = np.asarray(rows)
        if positions.ndim != 1 or not (positions.dtype.kind in "iu" or positions.size == 0):
            raise TypeError(f"rows: expected a 1-d array of integer store rows (from FeatureStore.rows), found "
                            f"{positions.dtype} of shape {positions.shape}")
        positions = positions.astype(np.int64, copy=False)
        bad = np.flatnonzero((positions < 0) | (positions >= len(self)))
        if len(bad):
            raise IndexError(f"row {int(positions[bad[0]])} is not a row of the {self._attrs.get('modality')} features "
                             f"of teacher {self._attrs.get('teacher')!r} ({len(self)} rows in {self._paths[0].parent}); "
                             f"expected rows from this store's rows(ids)")
        return positions

    def _check_finite(self, rows: np.ndarray, positions: np.ndarray, name: str) -> None:
        """ShardError naming the shard, row and id of the first NaN/inf row among those read (the
        writer refuses such rows, so they come from a damaged or foreign file).

        Each row is checked the first time this process reads it, in one pass over the batch (a
        scan of the shards would read them whole); a batch of rows all checked before is not
        checked again, since a complete shard never changes (the store reads the files it opened;
        :meth:`close` forgets what was checked).
        So epoch 1 pays the check, where the rows come from the disk anyway, and later epochs,
        which read them from the page cache, do not: a warm batch of 128 Unicom rows costs one
        raw read plus the id lookup (bench/scale.py, fetch).
        """
        if not len(rows):
            return
        checked = self._finite_rows.get(name)
        if checked is None:
            checked = self._finite_rows[name] = np.zeros(len(self), dtype=bool)
        if checked[positions].all():
            return
        if _all_finite(rows):
            checked[positions] = True
            return
        finite = np.isfinite(rows.reshape(len(rows), -1)).all(axis=1)
        if finite.all():
            return
        bad = np.flatnonzero(~finite)
        first = int(bad[0])
        position = int(positions[first])
        file = int(np.searchsorted(self._offsets, position, side="right") - 1)
        path, row = self._paths[file], position - int(self._offsets[file])
        raise ShardError(
            f"{path}: row {row} (id {self._row_ids(position, position + 1)[0]!r}) holds non-finite {name} (NaN/inf); "
            f"{len(bad)} of the {len(rows)} rows just read do; expected finite teacher features. "
            f"`softref validate {path.parent}` lists every such row; delete the shard and rerun its extraction"
        )

    def rows(self, ids: Sequence[str]) -> np.ndarray:
        """The global row of each id, in order (int64): what :meth:`get_rows` reads.

        A row is the id's place in the shards taken in shard order (row ``r - n`` of the shard
        whose rows start at ``n``), fixed while the store is open. A consumer that fetches the
        same ids many times (the trainer's collator, every epoch) looks them up once here.
        Raises KeyError naming the first unknown id.
        """
        return self._index.values[self._find(list(ids))]

    def get(self, ids: Sequence[str], dtype: Any = np.float32, out: np.ndarray | None = None) -> np.ndarray:
        """Features of ``ids`` in request order: ``(len(ids), dim)`` in ``dtype``.

        ``dtype=None`` keeps the stored dtype (:attr:`dtype`). ``out``: a C-contiguous array of
        that shape and dtype to read into (e.g. shared or pinned memory; rows in the stored dtype
        land there without a copy), returned. Raises KeyError naming the first unknown id,
        ShardError naming the shard, row and id of a NaN/inf row.
        """
        return self._gather(self.rows(ids), "features", dtype, out)

    def get_rows(self, rows: Sequence[int] | np.ndarray, dtype: Any = np.float32,
                 out: np.ndarray | None = None) -> np.ndarray:
        """Features of global ``rows`` (:meth:`rows`) in request order, as :meth:`get` reads them
        without the id lookup: the trainer's collator calls it, with ``dtype=None``, and casts on
        the device. Raises IndexError naming the first row out of range, ShardError as :meth:`get`.
        """
        return self._gather(self._positions(rows), "features", dtype, out)

    def get_tokens(self, ids: Sequence[str], dtype: Any = np.float32) -> np.ndarray:
        """Token features of ``ids`` in request order: ``(len(ids), T, C)`` in ``dtype`` (None: as stored)."""
        if not self.has_tokens:
            without = [str(p) for p, has in zip(self._paths, self._has_tokens) if not has]
            raise ShardError(f"no 'tokens' dataset in {without}; extract with store_tokens=True")
        return self._gather(self.rows(ids), "tokens", dtype)

    def iter_blocks(
        self, block_rows: int = 4096, dtype: Any = np.float32
    ) -> Iterator[tuple[list[str], np.ndarray]]:
        """Stream all rows shard by shard in blocks: ``(ids, features)`` per block."""
        for i in range(len(self._paths)):
            start, stop = int(self._offsets[i]), int(self._offsets[i + 1])
            dataset = self._file(i)["features"]
            for a in range(0, stop - start, block_rows):
                b = min(stop - start, a + block_rows)
                yield self._row_ids(start + a, start + b), dataset[a:b].astype(dtype, copy=False)

    # -- lifetime -------------------------------------------------------------------------
    def close(self) -> None:
        """Close the HDF5 handles and descriptors this process opened (the store reopens them on next use)."""
        if self._pid == os.getpid():
            for handle in self._handles.values():
                try:
                    handle.close()
                except Exception:  # already closed by h5py at interpreter exit
                    pass
            for fd in self._fds.values():
                os.close(fd)
        self._handles, self._fds = {}, {}
        # The files reopen by path on next use, maybe replaced by a rerun: their rows are checked anew.
        self._finite_rows = {}
        self._pid = os.getpid()

    def __enter__(self) -> FeatureStore:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state["_handles"], state["_fds"] = {}, {}
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._pid = os.getpid()
