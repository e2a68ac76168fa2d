"""Many strings in a few numpy arrays: a packed string column and a sorted string index.

Why not Python lists and dicts: DataLoader workers are forked from the training process, and
every Python object a worker reads has its reference count written, which copies the object's
memory page into the worker (copy on write). A list of 566,747 captions or a dict of as many
ids is then copied, page by page, into every worker over an epoch. A numpy array is one
object whose data pages are only read, so the workers share them with the parent for good.

:class:`PackedStrings` stores strings as Arrow does: one utf-8 byte buffer and int64 offsets.
:class:`StringIndex` maps strings to int64 values through a sorted fixed-width byte array
(``np.searchsorted``): memory is ``len(keys) x (longest key in bytes + 16)``, meant for ids
and identities (short strings), not for captions.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from typing import Any, overload

import numpy as np
import pyarrow as pa

__all__ = ["PackedStrings", "StringIndex"]


class PackedStrings(Sequence[str]):
    """A read-only sequence of strings held as utf-8 bytes and offsets (no Python object per string).

    ``strings[i]`` decodes string i; ``data[offsets[i]:offsets[i + 1]]`` are its bytes.
    """

    __slots__ = ("data", "offsets")

    def __init__(self, data: np.ndarray, offsets: np.ndarray) -> None:
        self.data = np.asarray(data, dtype=np.uint8)
        self.offsets = np.asarray(offsets, dtype=np.int64)
        if self.offsets.ndim != 1 or len(self.offsets) < 1 or self.offsets[0] != 0 \
                or self.offsets[-1] != len(self.data) or (np.diff(self.offsets) < 0).any():
            raise ValueError(f"PackedStrings: offsets must rise from 0 to len(data)={len(self.data)}, "
                             f"found {len(self.offsets)} offsets from {self.offsets[:1]} to {self.offsets[-1:]}")

    @classmethod
    def from_strings(cls, values: Iterable[Any], what: str = "strings") -> PackedStrings:
        """Pack ``values`` (str; a pandas column or numpy array of str works too).

        Raises ValueError naming ``what`` and the first position of a missing value (None, NaN).
        """
        if hasattr(values, "to_numpy"):
            values = values.to_numpy()
        elif not isinstance(values, (np.ndarray, list, tuple)):
            values = list(values)
        try:
            array = pa.array(values, type=pa.large_string(), from_pandas=True)
        except (pa.ArrowInvalid, pa.ArrowTypeError) as exc:
            raise ValueError(f"{what}: expected strings, {exc}") from None
        if array.null_count:
            first = int(np.flatnonzero(array.is_null().to_numpy(zero_copy_only=False))[0])
            raise ValueError(f"{what}: expected a string at every position, found a missing value at {first}")
        _, offsets, data = array.buffers()
        offsets = np.frombuffer(offsets, dtype=np.int64)[: len(array) + 1]
        data = np.frombuffer(data, dtype=np.uint8) if data is not None else np.empty(0, np.uint8)
        # Copies: the arrays own their memory (none left in Arrow's allocator when workers fork).
        return cls(data[: offsets[-1]].copy(), offsets - offsets[0])

    def __len__(self) -> int:
        return len(self.offsets) - 1

    @overload
    def __getitem__(self, i: int) -> str: ...
    @overload
    def __getitem__(self, i: slice) -> list[str]: ...

    def __getitem__(self, i: int | slice) -> str | list[str]:
        if isinstance(i, slice):
            return self.take(range(*i.indices(len(self))))
        n = len(self)
        if not -n <= i < n:
            raise IndexError(f"PackedStrings index {i} out of range for {n} strings")
        i = int(i) % n
        return self.data[self.offsets[i] : self.offsets[i + 1]].tobytes().decode("utf-8")

    def __iter__(self) -> Iterator[str]:
        return iter(self.tolist())

    def take(self, indices: Iterable[int]) -> list[str]:
        """The strings at ``indices``, in that order."""
        return [self[int(i)] for i in indices]

    def tolist(self) -> list[str]:
        """All strings as a Python list."""
        if len(self) == 0:
            return []
        return pa.LargeStringArray.from_buffers(len(self), pa.py_buffer(self.offsets), pa.py_buffer(self.data)).to_pylist()

    def __repr__(self) -> str:
        return f"PackedStrings({len(self)} strings, {len(self.data)} bytes)"


def _fixed_width(values: Sequence[str]) -> np.ndarray:
    """utf-8 bytes of ``values`` as one fixed-width ``S`` array (width: the longest, at least 1)."""
    encoded = [v.encode("utf-8") for v in values]
    return np.array(encoded, dtype=f"S{max(1, max(map(len, encoded), default=1))}")


class StringIndex:
    """Exact lookup string -> int64 value over fixed-width sorted keys (``np.searchsorted``).

    Args:
        keys: the strings (no key may contain NUL; duplicates are reported by :meth:`duplicates`).
        values: one int64 per key (default: the key's position).
    """

    __slots__ = ("keys", "values")

    def __init__(self, keys: Sequence[str], values: Sequence[int] | np.ndarray | None = None) -> None:
        keys = keys.tolist() if isinstance(keys, PackedStrings) else list(keys)
        values = np.arange(len(keys), dtype=np.int64) if values is None else np.asarray(values, dtype=np.int64)
        if len(values) != len(keys):
            raise ValueError(f"StringIndex: {len(keys)} keys but {len(values)} values; expected one value per key")
        nul = next((k for k in keys if "\x00" in k), None)
        if nul is not None:
            raise ValueError(f"StringIndex: key {nul!r} contains NUL; expected keys without NUL")
        raw = _fixed_width(keys)
        order = np.argsort(raw, kind="stable")
        self.keys = raw[order]
        self.values = values[order]

    def __len__(self) -> int:
        return len(self.keys)

    def duplicates(self) -> list[tuple[str, int, int]]:
        """Keys given more than once: ``(key, first value, other value)`` per repeat, in key order."""
        same = np.flatnonzero(self.keys[1:] == self.keys[:-1])
        return [(self.keys[k].decode("utf-8"), int(self.values[k]), int(self.values[k + 1])) for k in same]

    def lookup(self, queries: Sequence[str]) -> np.ndarray:
        """int64 values of ``queries`` in order; -1 where a query is not a key."""
        at = self.find(queries)
        return np.where(at >= 0, self.values[at], -1) if len(self.values) else at

    def find(self, queries: Sequence[str]) -> np.ndarray:
        """Where each query is in :attr:`keys` (sorted), in order; -1 where a query is not a key.

        For arrays aligned with the sorted keys: ``other[find(q)]``.
        """
        if len(queries) == 0 or len(self.keys) == 0:
            return np.full(len(queries), -1, dtype=np.int64)
        width = self.keys.dtype.itemsize
        # ASCII queries (every id softref writes) go to bytes in one numpy cast, one byte wider than
        # the keys: a query longer than every key has a byte in that last column and matches none
        # (cut to the keys' width, it could). An ``S`` array drops trailing NULs ("a\x00" would read
        # as "a"), and keys have no NUL, so a query with one goes the general way, as non-ASCII does.
        wide = None
        if "\x00" not in "".join(queries):
            try:
                wide = np.array(queries, dtype=f"S{width + 1}")
            except UnicodeEncodeError:
                pass
        if wide is not None:
            fits = wide.view(np.uint8).reshape(len(wide), width + 1)[:, width] == 0
            candidates = wide.astype(self.keys.dtype)  # the keys' width: searchsorted casts nothing
            at = np.minimum(np.searchsorted(self.keys, candidates), len(self.keys) - 1)
            return np.where(fits & (self.keys[at] == candidates), at, -1)
        out = np.full(len(queries), -1, dtype=np.int64)
        encoded = [q.encode("utf-8") for q in queries]
        fits = [len(e) <= width and b"\x00" not in e for e in encoded]
        candidates = np.array([e for e, ok in zip(encoded, fits) if ok], dtype=self.keys.dtype)
        where = np.flatnonzero(fits)
        at = np.minimum(np.searchsorted(self.keys, candidates), len(self.keys) - 1)
        found = self.keys[at] == candidates
        out[where[found]] = at[found]
        return out

    def __contains__(self, key: object) -> bool:
        return isinstance(key, str) and bool(self.lookup([key])[0] >= 0)

    def __repr__(self) -> str:
        return f"StringIndex({len(self)} keys of up to {self.keys.dtype.itemsize} bytes)"
