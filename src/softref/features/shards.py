"""HDF5 feature shards: the atomic writer, the attribute reader and the row read path.

One shard file holds the teacher features of a contiguous block of manifest rows of one
(dataset, teacher, modality):

``ids``
    variable-length utf-8 strings, the manifest ids of the rows, in order.
``features``
    N x D, float16 by default (float32 on request), chunked by rows. Stored as the teacher
    returns them; the ``normalized`` attribute says whether the teacher L2-normalises.
``tokens`` (optional)
    N x T x C token features, one row per chunk.

Root attributes: :data:`SHARD_ATTRS`. ``complete`` is written last and only after every row
has been written; the file appears under its final name only then (it is written as
``<name>.tmp-<pid>`` in the same directory and renamed), so a killed job never leaves a file
that looks complete.
"""

from __future__ import annotations

import datetime as _dt
import io
import os
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any

import h5py
import numpy as np

from softref import __version__
from softref.files import TMP_MARKER, publish, remove_stale_temporaries, temporary_name

__all__ = [
    "SHARD_ATTRS",
    "REQUIRED_ATTRS",
    "CONSISTENT_ATTRS",
    "MODALITIES",
    "TMP_MARKER",
    "ShardError",
    "attrs_equal",
    "ShardWriter",
    "RowLayout",
    "RowTable",
    "chunk_rows",
    "read_rows",
    "row_layout",
    "read_shard_attrs",
    "shard_filename",
    "parse_shard_filename",
]

MODALITIES: tuple[str, ...] = ("images", "texts")

# Attributes the caller of ShardWriter supplies; the writer adds dim, dtype, softref_version,
# created and complete itself.
REQUIRED_ATTRS: tuple[str, ...] = (
    "teacher",
    "weights_sha256",
    "preprocess",
    "normalized",
    "manifest_sha256",
    "shard",
    "num_shards",
    "modality",
)
SHARD_ATTRS: tuple[str, ...] = REQUIRED_ATTRS[:3] + (
    "dim",
    "dtype",
) + REQUIRED_ATTRS[3:] + ("softref_version", "created", "complete")

# Attributes every shard of one (dataset, teacher, modality) must share: a difference means
# the shards come from different teachers, weights, preprocessing or manifests.
CONSISTENT_ATTRS: tuple[str, ...] = (
    "teacher",
    "weights_sha256",
    "preprocess",
    "normalized",
    "manifest_sha256",
    "dim",
    "num_shards",
    "modality",
)

_DTYPES = {"float16": np.float16, "float32": np.float32}
# Target bytes per chunk. Random single-row reads cost about the same for chunks of 1 to ~40
# rows while the page cache is warm (measured: 128 random rows of a 20000 x 1280 float16
# shard in 1.5-2.8 ms); small chunks keep cold reads from pulling unneeded rows from disk,
# and a few rows per chunk keep the chunk index small for large shards.
_CHUNK_BYTES = 16 * 1024
_SHOW = 5
_FILENAME = re.compile(r"^(images|texts)-(\d+)\.h5$")


class ShardError(ValueError):
    """A feature shard is incomplete, malformed or disagrees with what the reader expects."""


def shard_filename(modality: str, shard: int) -> str:
    """File name of a shard inside its teacher directory: ``{modality}-{shard}.h5``."""
    if modality not in MODALITIES:
        raise ValueError(f"modality must be one of {list(MODALITIES)}, got {modality!r}")
    return f"{modality}-{int(shard)}.h5"


def parse_shard_filename(name: str) -> tuple[str, int] | None:
    """``(modality, shard)`` for a name like ``images-3.h5``; ``None`` for any other name."""
    match = _FILENAME.match(name)
    if match is None:
        return None
    return match.group(1), int(match.group(2))


def chunk_rows(dim: int, itemsize: int, num_rows: int) -> int:
    """Rows per HDF5 chunk: about 16 KiB of features, at least 1, at most ``num_rows``."""
    rows = max(1, _CHUNK_BYTES // max(1, dim * itemsize))
    return max(1, min(rows, num_rows))


def _plain(value: Any) -> Any:
    """HDF5 attribute value -> plain Python value (numpy scalars and bytes unwrapped)."""
    if isinstance(value, bytes):
        return value.decode("utf-8")
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    return value


def read_h5_attrs(path: Path | str, what: str = "feature shard", error: type[Exception] = ShardError) -> dict[str, Any]:
    """The root attributes of an HDF5 artifact (``what``: shard, references) as plain Python values."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{what} not found: {path}")
    try:
        with h5py.File(path, "r") as f:
            return {key: _plain(value) for key, value in f.attrs.items()}
    except OSError as exc:
        raise error(f"{path}: not a readable HDF5 file ({exc})") from exc


def read_complete_attrs(
    path: Path | str, what: str = "shard", job: str = "extraction", error: type[Exception] = ShardError
) -> dict[str, Any]:
    """The attributes of a finished HDF5 artifact; refuses temporary files and files not marked complete."""
    path = Path(path)
    if TMP_MARKER in path.name:
        raise error(
            f"{path}: incomplete {what} (a temporary file of an interrupted or running "
            f"{job}); expected a finished {path.name.split(TMP_MARKER)[0]}"
        )
    attrs = read_h5_attrs(path, what, error)
    if attrs.get("complete") is not True:
        raise error(
            f"{path}: incomplete {what}: attr 'complete' expected True, found {attrs.get('complete', '<missing>')!r}"
        )
    return attrs


def read_shard_attrs(path: Path | str) -> dict[str, Any]:
    """The root attributes of a shard as plain Python values (without loading any dataset)."""
    return read_h5_attrs(path)


def _runs(rows: np.ndarray) -> list[tuple[int, int, int]]:
    """Sorted unique rows -> ``(out_start, first_row, stop_row)`` runs of consecutive rows."""
    if len(rows) == 0:
        return []
    breaks = np.flatnonzero(np.diff(rows) != 1) + 1
    starts = np.concatenate(([0], breaks))
    stops = np.concatenate((breaks, [len(rows)]))
    return [(int(a), int(rows[a]), int(rows[b - 1]) + 1) for a, b in zip(starts, stops)]


def read_rows(dataset: h5py.Dataset, rows: np.ndarray | Sequence[int]) -> np.ndarray:
    """Rows of a row-chunked dataset, in the given (sorted, unique) order, in its own dtype.

    Reads each run of consecutive rows as one slice and each isolated row on its own. h5py
    fancy indexing (``dataset[rows]``) builds a point selection that is much slower: measured
    for 128 sorted random rows, 9-13 ms vs 1.5 ms (20000 x 1280 float16) and 180 ms vs 5 ms
    (4000 x 37632 float16).
    """
    rows = np.asarray(rows, dtype=np.int64)
    out = np.empty((len(rows),) + tuple(dataset.shape[1:]), dtype=dataset.dtype)
    for at, first, stop in _runs(rows):
        if stop - first == 1:
            out[at] = dataset[first]
        else:
            out[at : at + stop - first] = dataset[first:stop]
    return out


@dataclass(frozen=True)
class RowLayout:
    """Where the rows of an unfiltered, row-chunked (or contiguous) HDF5 dataset lie in its file.

    Row ``r`` is the ``row_bytes`` bytes at ``chunk_offsets[r // rows_per_chunk] +
    (r % rows_per_chunk) * row_bytes``: an HDF5 chunk of full rows stores them one after the
    other, row-major, and a contiguous dataset is one chunk of every row.
    """

    path: str
    dtype: np.dtype
    row_shape: tuple[int, ...]
    rows_per_chunk: int
    chunk_offsets: np.ndarray

    @property
    def row_bytes(self) -> int:
        return int(self.dtype.itemsize * np.prod(self.row_shape, dtype=np.int64))

    def offsets(self, rows: np.ndarray) -> np.ndarray:
        """File byte offset of each of ``rows``."""
        rows = np.asarray(rows, dtype=np.int64)
        return self.chunk_offsets[rows // self.rows_per_chunk] + (rows % self.rows_per_chunk) * self.row_bytes


def row_layout(dataset: h5py.Dataset) -> RowLayout | None:
    """The :class:`RowLayout` of ``dataset``, or None when its rows cannot be read as plain bytes.

    None for: filters (compression, checksums), chunks narrower than a row, a dtype other than
    native float16/float32, an external or virtual layout, or a chunk never written (HDF5
    would return fill values that are in no byte of the file). Reads the chunk index once
    (``chunk_iter``: about 4 us per chunk).
    """
    num_rows = dataset.shape[0] if dataset.shape else 0
    dtype = dataset.dtype
    if not dataset.shape or dtype not in (np.dtype(np.float16), np.dtype(np.float32)) \
            or not dtype.isnative or dataset.is_virtual or dataset.external:
        return None
    path = dataset.file.filename
    row_shape = tuple(int(x) for x in dataset.shape[1:])
    if num_rows == 0:  # nothing to read (an empty shard): no chunk at all
        return RowLayout(path, dtype, row_shape, 1, np.empty(0, dtype=np.int64))
    if dataset.id.get_create_plist().get_nfilters():
        return None
    if dataset.chunks is None:
        try:
            offset = dataset.id.get_offset()
        except (ValueError, RuntimeError):  # a compact layout has no file offset
            offset = None
        if offset is None:
            return None
        return RowLayout(path, dtype, row_shape, num_rows, np.asarray([offset], dtype=np.int64))
    rows_per_chunk = int(dataset.chunks[0])
    if tuple(dataset.chunks[1:]) != row_shape:
        return None
    infos: list[Any] = []
    dataset.id.chunk_iter(infos.append)
    num_chunks = -(-num_rows // rows_per_chunk)
    chunk_bytes = rows_per_chunk * int(dtype.itemsize * np.prod(row_shape, dtype=np.int64))
    if len(infos) != num_chunks:
        return None
    starts = np.fromiter((info.chunk_offset[0] for info in infos), np.int64, num_chunks)
    offsets = np.fromiter((info.byte_offset for info in infos), np.int64, num_chunks)
    healthy = all(info.size == chunk_bytes and info.filter_mask == 0 for info in infos)
    if not healthy or not np.array_equal(np.sort(starts), np.arange(num_chunks, dtype=np.int64) * rows_per_chunk):
        return None
    chunk_offsets = np.empty(num_chunks, dtype=np.int64)
    chunk_offsets[starts // rows_per_chunk] = offsets
    return RowLayout(path, dtype, row_shape, rows_per_chunk, chunk_offsets)


# Buffers per preadv call: Linux's IOV_MAX.
_IOV_MAX = 1024


class RowTable:
    """The rows of several files (one dataset per file, same dtype and row shape) as one table.

    Global row ``g`` is row ``g - starts[f]`` of file ``f`` (``starts``: the first global row of
    each file, then the total). :meth:`places` gives each row one int64, ``f * stride + byte
    offset``: sorting places sorts reads file by file and by offset within a file, and two rows
    follow each other in one file exactly when their places differ by the row size.
    :meth:`read` reads rows by their places with ``os.preadv``.
    """

    def __init__(self, layouts: Sequence[RowLayout], starts: Sequence[int] | np.ndarray) -> None:
        first = layouts[0]
        for layout in layouts[1:]:
            if layout.dtype != first.dtype or layout.row_shape != first.row_shape:
                raise ValueError(f"RowTable: {layout.path} holds {layout.dtype} rows of {layout.row_shape}, "
                                 f"expected {first.dtype} rows of {first.row_shape} as in {first.path}")
        self.paths = [layout.path for layout in layouts]
        self.dtype, self.row_shape, self.row_bytes = first.dtype, first.row_shape, first.row_bytes
        self.starts = np.asarray(starts, dtype=np.int64)
        self.rows_per_chunk = np.asarray([layout.rows_per_chunk for layout in layouts], dtype=np.int64)
        counts = [len(layout.chunk_offsets) for layout in layouts]
        self.chunk_base = np.concatenate(([0], np.cumsum(counts)[:-1])).astype(np.int64)
        self.chunk_offsets = np.concatenate([layout.chunk_offsets for layout in layouts])
        # Past the end of any row of any file, and never a row size away from one: the last row of
        # a file and the first of the next cannot look adjacent.
        self.stride = int(self.chunk_offsets.max(initial=0)) + int(self.rows_per_chunk.max()) * self.row_bytes + 1

    def places(self, rows: np.ndarray | Sequence[int]) -> np.ndarray:
        """``file * stride + byte offset`` of each global row."""
        rows = np.asarray(rows, dtype=np.int64)
        files = np.searchsorted(self.starts, rows, side="right") - 1
        local = rows - self.starts[files]
        per_chunk = self.rows_per_chunk[files]
        offsets = self.chunk_offsets[self.chunk_base[files] + local // per_chunk] + (local % per_chunk) * self.row_bytes
        return files * self.stride + offsets

    def read(self, fds: Sequence[int], places: np.ndarray, out: np.ndarray) -> None:
        """Read the row at ``places[k]`` (:meth:`places`) into ``out[k]`` for every k, bytes as stored.

        ``fds[f]`` is file f open for reading; ``out`` is (len(places), *row_shape) C-contiguous
        in :attr:`dtype`. Rows are read in file order (ascending offsets: what a disk reads best
        cold); rows that follow each other in a file are read by one ``os.preadv`` that scatters
        them straight into their slots (no second copy). A row asked twice is read twice:
        cheaper than finding repeats, which a random batch rarely has. Raises ShardError when a
        file ends before a row.
        """
        if not out.flags.c_contiguous or out.dtype != self.dtype or len(out) != len(places):
            raise ValueError(f"RowTable.read: out must be C-contiguous {self.dtype} with {len(places)} rows, "
                             f"found {out.dtype} {out.shape}")
        if len(places) == 0:
            return
        size = self.row_bytes
        order = np.argsort(places, kind="stable")
        ordered = places[order]
        view = memoryview(out.reshape(-1).view(np.uint8))
        files, offsets = np.divmod(ordered, self.stride)
        descriptors = [fds[f] for f in files.tolist()]
        offsets, slots = offsets.tolist(), (order * size).tolist()
        joined = np.diff(ordered) == size
        if not joined.any():  # the common case of a random batch: one read a row
            self._read_singles(view, size, descriptors, slots, offsets, fds)
            return
        # Runs of rows that follow each other: one preadv each; the rows alone as above.
        starts = np.flatnonzero(np.concatenate(([True], ~joined)))
        lengths = np.diff(np.concatenate((starts, [len(order)])))
        alone = starts[lengths == 1].tolist()
        self._read_singles(view, size, [descriptors[k] for k in alone], [slots[k] for k in alone],
                           [offsets[k] for k in alone], fds)
        for start, length in zip(starts[lengths > 1].tolist(), lengths[lengths > 1].tolist()):
            for a in range(start, start + length, _IOV_MAX):
                b = min(start + length, a + _IOV_MAX)
                buffers = [view[at : at + size] for at in slots[a:b]]
                if os.preadv(descriptors[a], buffers, offsets[a]) != (b - a) * size:
                    self._truncated(fds, descriptors[a], offsets[a], (b - a) * size)

    def _read_singles(self, view: memoryview, size: int, descriptors: list[int], slots: list[int],
                      offsets: list[int], fds: Sequence[int]) -> None:
        for fd, at, offset in zip(descriptors, slots, offsets):
            if os.preadv(fd, [view[at : at + size]], offset) != size:
                self._truncated(fds, fd, offset, size)

    def _truncated(self, fds: Sequence[int], fd: int, offset: int, expected: int) -> None:
        path = self.paths[list(fds).index(fd)]
        raise ShardError(f"{path}: rows at byte {offset}: expected {expected} bytes, read fewer; the file is truncated")


def _quote(values: Sequence[Any]) -> str:
    shown = ", ".join(repr(v) for v in list(values)[:_SHOW])
    return shown + (f" (and {len(values) - _SHOW} more)" if len(values) > _SHOW else "")


class _ShardFile(io.FileIO):
    """The temporary file under a writer's HDF5 handle (h5py's file-object driver).

    After a failed write (a full disk, a file-size limit) the writer sets ``dropped``: later writes
    are discarded, so the HDF5 handles, which flush when they close, close cleanly before the file
    is deleted. With h5py's own file driver a handle whose flush fails stays registered in the HDF5
    library, which then crashes when the process exits (a segmentation fault, seen with h5py 3 and
    RLIMIT_FSIZE); with this file the job ends with its error.
    """

    dropped = False

    def write(self, data: Any) -> int:
        return memoryview(data).nbytes if self.dropped else super().write(data)

    def truncate(self, size: int | None = None) -> int:
        return int(size or 0) if self.dropped else super().truncate(size)

    def flush(self) -> None:
        if not self.dropped:
            super().flush()


class ShardWriter:
    """Write one shard atomically: ``<path>.tmp-<pid>`` first, renamed to ``path`` on success.

    Use as a context manager::

        with ShardWriter(path, num_rows=n, dim=d, attrs=attrs) as writer:
            writer.write(0, ids[:b], features[:b])
            ...

    On a clean exit every row must have been written; ``complete`` is then set and the file is
    renamed into place. On an exception (or a missing row) the temporary file is deleted and
    nothing appears at ``path``. Batches with NaN/inf features are refused.
    """

    def __init__(
        self,
        path: Path | str,
        *,
        num_rows: int,
        dim: int,
        dtype: str = "float16",
        attrs: Mapping[str, Any],
        token_shape: tuple[int, int] | None = None,
    ) -> None:
        self.path = Path(path)
        if dtype not in _DTYPES:
            raise ShardError(f"{self.path}: dtype must be one of {list(_DTYPES)}, got {dtype!r}")
        if int(num_rows) < 0:
            raise ShardError(f"{self.path}: num_rows must be >= 0, got {num_rows}")
        if int(dim) < 1:
            raise ShardError(f"{self.path}: dim must be >= 1, got {dim}")
        missing = [key for key in REQUIRED_ATTRS if key not in attrs]
        if missing:
            raise ShardError(
                f"{self.path}: attrs lack required key(s) {missing}; expected all of "
                f"{list(REQUIRED_ATTRS)}, found {sorted(attrs)}"
            )
        reserved = [key for key in ("dim", "dtype", "softref_version", "created", "complete")
                    if key in attrs]
        if reserved:
            raise ShardError(f"{self.path}: attrs {reserved} are set by the writer, not the caller")
        if attrs["modality"] not in MODALITIES:
            raise ShardError(
                f"{self.path}: attr 'modality' must be one of {list(MODALITIES)}, "
                f"found {attrs['modality']!r}"
            )
        shard, num_shards = int(attrs["shard"]), int(attrs["num_shards"])
        if num_shards < 1 or not 0 <= shard < num_shards:
            raise ShardError(
                f"{self.path}: attrs shard={shard}, num_shards={num_shards}: expected "
                f"0 <= shard < num_shards"
            )
        self.num_rows = int(num_rows)
        self.dim = int(dim)
        self.dtype = dtype
        self.attrs = dict(attrs)
        self.token_shape = None if token_shape is None else tuple(int(x) for x in token_shape)
        self.tmp_path = temporary_name(self.path)
        self._raw: _ShardFile | None = None
        self._file: h5py.File | None = None
        self._datasets: dict[str, h5py.Dataset] = {}
        self._written: np.ndarray | None = None

    # -- context management ---------------------------------------------------------------
    def __enter__(self) -> ShardWriter:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        remove_stale_temporaries(self.path)
        np_dtype = _DTYPES[self.dtype]
        self._raw = _ShardFile(self.tmp_path, "w+")
        try:
            self._file = h5py.File(self._raw, "w")
            f = self._file
            for key, value in self.attrs.items():
                f.attrs[key] = value
            f.attrs["dim"] = self.dim
            f.attrs["dtype"] = self.dtype
            f.attrs["softref_version"] = __version__
            f.attrs["created"] = _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")
            f.attrs["complete"] = False
            # An empty shard (more shards than rows) cannot be chunked: HDF5 needs chunk <= shape.
            chunked = self.num_rows > 0
            f.create_dataset(
                "ids",
                shape=(self.num_rows,),
                dtype=h5py.string_dtype("utf-8"),
                chunks=(min(self.num_rows, 1024),) if chunked else None,
            )
            f.create_dataset(
                "features",
                shape=(self.num_rows, self.dim),
                dtype=np_dtype,
                chunks=(chunk_rows(self.dim, np.dtype(np_dtype).itemsize, self.num_rows), self.dim)
                if chunked
                else None,
            )
            if self.token_shape is not None:
                f.create_dataset(
                    "tokens",
                    shape=(self.num_rows,) + self.token_shape,
                    dtype=np_dtype,
                    chunks=(1,) + self.token_shape if chunked else None,
                )
        except BaseException:
            self._abort()
            raise
        # Dataset handles stay open while the writer runs: one closed after each batch would flush its
        # chunks on close, where a failed write (a full disk) leaves HDF5 with a handle it cannot
        # release, which crashes the library when the process exits.
        self._datasets = {name: self._file[name] for name in self._file}
        self._written = np.zeros(self.num_rows, dtype=bool)
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if exc_type is not None:
            self._abort()
            return
        try:
            self._finish()
        except BaseException:
            self._abort()
            raise

    def _abort(self) -> None:
        if self._raw is not None:
            self._raw.dropped = True  # HDF5 flushes on close: into the void, not onto a full disk
        self._datasets = {}
        if self._file is not None:
            try:
                self._file.close()
            except Exception:  # the file is deleted next; a close error adds nothing
                pass
            self._file = None
        if self._raw is not None:
            self._raw.close()
            self._raw = None
        self.tmp_path.unlink(missing_ok=True)

    def _finish(self) -> None:
        assert self._file is not None and self._written is not None
        if not self._written.all():
            missing = np.flatnonzero(~self._written)
            raise ShardError(
                f"{self.path}: {len(missing)} of {self.num_rows} rows were never written; "
                f"first missing rows: {_quote(missing.tolist())}"
            )
        ids = self._datasets["ids"].asstr()[:] if self.num_rows else np.array([], dtype=object)
        uniq, counts = np.unique(ids, return_counts=True)
        if (counts > 1).any():
            raise ShardError(
                f"{self.path}: ids must be unique within a shard, found duplicates "
                f"{_quote(uniq[counts > 1].tolist())}"
            )
        failure = self._guarded(self._file.flush, "the last rows")  # every row on disk before `complete`
        if failure is None:
            self._file.attrs["complete"] = True
            self._datasets = {}
            failure = self._guarded(self._file.close, "the attributes")
        if failure is not None:
            raise failure
        self._file = None
        assert self._raw is not None
        self._raw.close()
        self._raw = None
        publish(self.tmp_path, self.path)

    def _guarded(self, write: Callable[[], None], what: str) -> ShardError | None:
        """Run ``write``; on a failed write (a full disk, a file-size limit) drop every later write and
        return the error to raise. It is raised outside the ``except`` block on purpose: an error
        chained to h5py's would keep h5py's objects alive until the interpreter exits, and their
        release then crashes the HDF5 library."""
        try:
            write()
        except (OSError, RuntimeError) as err:
            assert self._raw is not None
            self._raw.dropped = True
            return self._failed(err, what)
        return None

    def _failed(self, err: BaseException, what: str) -> ShardError:
        """The error of a failed write (a full disk, a file-size limit), naming the shard."""
        text = str(err)
        message = re.search(r"error message = '([^']*)'", text)
        errno = re.search(r"errno = (\d+)", text)
        if isinstance(err, OSError) and err.strerror:
            reason = f"{err.strerror} (errno {err.errno})"
        elif message and errno:
            reason = f"{message.group(1)} (errno {errno.group(1)})"
        else:
            reason = text.splitlines()[0] if text else type(err).__name__
        return ShardError(
            f"{self.path}: writing {what} failed: {reason}; is the disk full or a file-size limit "
            f"reached? The temporary file {self.tmp_path.name} is removed: no shard was written"
        )

    # -- writing ---------------------------------------------------------------------------
    def _check_finite(self, name: str, values: np.ndarray, ids: Sequence[str], start: int) -> None:
        flat = values.reshape(len(values), -1)
        bad = ~np.isfinite(flat).all(axis=1)
        if bad.any():
            rows = np.flatnonzero(bad)
            first = int(rows[0])
            raise ShardError(
                f"{self.path}: {len(rows)} row(s) of the batch at row {start} have non-finite "
                f"{name} (NaN/inf, or beyond the range of {self.dtype}); first: id "
                f"{ids[first]!r} (row {start + first})"
            )

    def write(
        self,
        start: int,
        ids: Sequence[str],
        features: np.ndarray,
        tokens: np.ndarray | None = None,
    ) -> None:
        """Write rows ``[start, start + len(ids))``: their ids, features and optional tokens."""
        if self._file is None or self._written is None:
            raise ShardError(f"{self.path}: ShardWriter.write called outside its `with` block")
        ids = [str(i) for i in ids]
        n = len(ids)
        stop = int(start) + n
        if start < 0 or stop > self.num_rows:
            raise ShardError(
                f"{self.path}: rows [{start}, {stop}) are outside the shard's {self.num_rows} rows"
            )
        empty = [i for i in ids if not i]
        if empty:
            raise ShardError(f"{self.path}: empty id in the batch at row {start}")
        features = np.asarray(features)
        if features.shape != (n, self.dim):
            raise ShardError(
                f"{self.path}: features of the batch at row {start}: expected shape "
                f"({n}, {self.dim}), found {features.shape}"
            )
        if self.token_shape is None and tokens is not None:
            raise ShardError(f"{self.path}: tokens given but the shard was created without tokens")
        if self.token_shape is not None:
            if tokens is None:
                raise ShardError(f"{self.path}: the shard stores tokens; batch at row {start} has none")
            tokens = np.asarray(tokens)
            if tokens.shape != (n,) + self.token_shape:
                raise ShardError(
                    f"{self.path}: tokens of the batch at row {start}: expected shape "
                    f"{(n,) + self.token_shape}, found {tokens.shape}"
                )
        if n == 0:
            return
        overlap = np.flatnonzero(self._written[start:stop])
        if len(overlap):
            raise ShardError(
                f"{self.path}: rows {_quote((overlap + start).tolist())} written twice"
            )
        np_dtype = _DTYPES[self.dtype]
        # Checked after the cast: float32 values beyond 65504 become inf in float16.
        with np.errstate(over="ignore"):
            features = features.astype(np_dtype, copy=False)
            if tokens is not None:
                tokens = tokens.astype(np_dtype, copy=False)
        self._check_finite("features", features, ids, start)
        if tokens is not None:
            self._check_finite("tokens", tokens, ids, start)

        def store() -> None:
            assert self._file is not None
            if tokens is not None:
                self._datasets["tokens"][start:stop] = tokens
            self._datasets["ids"][start:stop] = np.array(ids, dtype=object)
            self._datasets["features"][start:stop] = features
            # Flushed per batch so that a full disk stops the job at the batch that hit it.
            self._file.flush()

        failure = self._guarded(store, f"the batch at row {start}")
        if failure is not None:
            raise failure
        self._written[start:stop] = True


def attrs_equal(found: Any, expected: Any) -> bool:
    """Attribute equality across numpy and Python scalars; a bool never equals an int."""
    bools = (bool, np.bool_)
    if isinstance(expected, bools) or isinstance(found, bools):
        return isinstance(found, bools) and isinstance(expected, bools) and bool(found) == bool(expected)
    if isinstance(expected, (int, np.integer)) and isinstance(found, (int, np.integer)):
        return int(found) == int(expected)
    return found == expected
