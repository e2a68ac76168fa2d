"""PackedStrings and StringIndex: strings in numpy arrays, exact lookups, refusals."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from softref.data.strings import PackedStrings, StringIndex

WORDS = ["a man on a horse", "", "café crème", "日本語のキャプション", "x" * 300, "tab\there"]


@pytest.mark.parametrize("make", [list, tuple, lambda v: np.asarray(v, dtype=object), pd.Series, iter])
def test_packed_strings_round_trip(make) -> None:
    packed = PackedStrings.from_strings(make(WORDS))
    assert len(packed) == len(WORDS)
    assert [packed[i] for i in range(len(WORDS))] == WORDS
    assert packed.tolist() == WORDS == list(packed)
    assert packed[-1] == WORDS[-1] and packed[1:4] == WORDS[1:4] and packed.take([3, 0, 3]) == [WORDS[3], WORDS[0], WORDS[3]]
    assert isinstance(packed.data, np.ndarray) and packed.data.dtype == np.uint8
    assert packed.offsets.dtype == np.int64 and packed.offsets[-1] == sum(len(w.encode()) for w in WORDS)
    assert PackedStrings.from_strings([]).tolist() == [] and len(PackedStrings.from_strings([])) == 0


def test_packed_strings_refusals() -> None:
    with pytest.raises(ValueError, match=r"captions: expected a string at every position, found a missing value at 1"):
        PackedStrings.from_strings(["a", None, "b"], "captions")
    with pytest.raises(ValueError, match="ids: expected strings"):
        PackedStrings.from_strings(["a", 3], "ids")
    packed = PackedStrings.from_strings(["a", "b"])
    with pytest.raises(IndexError, match="index 2 out of range for 2 strings"):
        packed[2]
    with pytest.raises(ValueError, match="offsets must rise"):
        PackedStrings(np.zeros(3, np.uint8), np.array([0, 2, 1, 3]))


def test_string_index_lookup() -> None:
    keys = ["b", "a", "ab", "c#1", "é", "10", "9"]
    index = StringIndex(keys, values=np.arange(len(keys)) * 10)
    queries = ["9", "a", "é", "zz", "ab", "a", "c#1", "", "b"]
    expected = [keys.index(q) * 10 if q in keys else -1 for q in queries]
    assert index.lookup(queries).tolist() == expected
    found = index.find(queries)
    assert [index.keys[k].decode() if k >= 0 else None for k in found] == [q if q in keys else None for q in queries]
    assert "ab" in index and "abc" not in index and 3 not in index
    assert index.lookup([]).tolist() == [] and len(index) == len(keys)
    # Default values: positions.
    assert StringIndex(keys).lookup(["c#1", "b"]).tolist() == [3, 0]


def test_string_index_longer_and_nul_queries_are_no_key() -> None:
    index = StringIndex(["abc", "a"])
    # A query longer than every key must not be cut to a key; "a\x00" must not read as "a".
    assert index.lookup(["abcd", "abc", "a\x00", "\x00", "a"]).tolist() == [-1, 0, -1, -1, 1]
    # The same without a NUL query: ASCII batches take the one-cast path, which must refuse them too.
    assert index.lookup(["abcd", "abc", "abcdefgh", "a", "ab", ""]).tolist() == [-1, 0, -1, 1, -1, -1]
    assert index.lookup(["abcd"]).tolist() == [-1] and index.lookup(["é", "abc"]).tolist() == [-1, 0]
    with pytest.raises(ValueError, match="contains NUL"):
        StringIndex(["ok", "bad\x00"])
    empty = StringIndex([])
    assert empty.lookup(["a"]).tolist() == [-1] and empty.find(["a"]).tolist() == [-1]


def test_string_index_duplicates() -> None:
    index = StringIndex(["x", "y", "x", "z", "y"], values=[0, 1, 2, 3, 4])
    assert sorted(index.duplicates()) == [("x", 0, 2), ("y", 1, 4)]
    assert StringIndex(["p", "q"]).duplicates() == []
    with pytest.raises(ValueError, match="2 keys but 1 values"):
        StringIndex(["p", "q"], values=[0])


def test_string_index_agrees_with_a_dict_on_many_keys() -> None:
    rng = np.random.default_rng(0)
    keys = [str(48 + 2 * i) for i in range(30_000)] + [f"p{i:05d}_é#{i % 7}" for i in range(3_000)]
    values = rng.permutation(len(keys))
    index = StringIndex(keys, values)
    reference = dict(zip(keys, values.tolist()))
    queries = [keys[i] for i in rng.integers(0, len(keys), 5_000)] + [str(49 + 2 * i) for i in range(2_000)]
    queries += ["", "x" * 40, "p00001_é#1", "p00001_é#2"]
    rng.shuffle(queries)
    assert index.lookup(queries).tolist() == [reference.get(q, -1) for q in queries]
