"""The identity-aware P x K sampler and the neighbours table reader."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from softref.references.index import NEIGHBOUR_SCHEMA
from softref.train.sampler import IdentityBatchSampler, neighbours_from_parquet


def _identities(counts: dict[str, int]) -> list[str]:
    """Item i's identity, items of one identity interleaved with the others'."""
    items: list[str] = []
    remaining = dict(counts)
    while any(remaining.values()):
        for name in sorted(remaining):
            if remaining[name]:
                items.append(name)
                remaining[name] -= 1
    return items


def _groups_of(batch: list[int], identities: list[str]) -> list[str]:
    return list(dict.fromkeys(identities[i] for i in batch))


COUNTS = {f"id{i:02d}": 2 + i % 5 for i in range(20)}  # 2 to 6 items each
IDENTITIES = _identities(COUNTS)


def test_batches_are_p_by_k_and_use_every_identity_once():
    sampler = IdentityBatchSampler(IDENTITIES, batch_size=12, samples_per_identity=3, seed=0)
    sampler.set_epoch(0)
    batches = list(sampler)
    assert len(batches) == len(sampler) == 5  # 20 identities, P = 4
    seen: list[str] = []
    for batch in batches:
        names = [IDENTITIES[i] for i in batch]
        counts = Counter(names)
        assert set(counts.values()) == {3}
        # K items of an identity are contiguous.
        assert _groups_of(batch, IDENTITIES) == [names[j] for j in range(0, len(names), 3)]
        seen.extend(counts)
    assert sorted(seen) == sorted(COUNTS)
    assert all(len(b) == 12 for b in batches[:-1])
    assert len(batches[-1]) == 12  # 20 = 4 * 5: the last batch is full too

    sampler = IdentityBatchSampler(IDENTITIES, batch_size=18, samples_per_identity=3, seed=0)
    batches = list(sampler)
    assert [len(b) for b in batches] == [18, 18, 18, 6]  # P = 6: 6 + 6 + 6 + 2 identities


def test_items_without_replacement_when_enough():
    identities = _identities({"a": 5, "b": 2, "c": 4, "d": 3})
    sampler = IdentityBatchSampler(identities, batch_size=6, samples_per_identity=3, seed=1)
    for batch in sampler:
        for name in _groups_of(batch, identities):
            picked = [i for i in batch if identities[i] == name]
            owned = [i for i, n in enumerate(identities) if n == name]
            assert set(picked) <= set(owned)
            if len(owned) >= 3:
                assert len(set(picked)) == 3
            else:
                assert set(picked) == set(owned)  # all of them, the rest with replacement


def test_determinism_per_seed_and_epoch():
    def run(seed: int, epoch: int) -> list[list[int]]:
        sampler = IdentityBatchSampler(IDENTITIES, batch_size=8, samples_per_identity=2, seed=seed)
        sampler.set_epoch(epoch)
        return list(sampler)

    assert run(3, 0) == run(3, 0)
    assert run(3, 1) == run(3, 1)
    assert run(3, 0) != run(3, 1)
    assert run(3, 0) != run(4, 0)
    # seed + epoch seeds the generator, so an epoch does not depend on earlier ones.
    assert run(3, 1) == run(4, 0)


def test_neighbours_join_their_anchor_batch():
    names = sorted(COUNTS)
    # Each identity's neighbours: the next two names (cyclic).
    neighbours = {n: [names[(i + 1) % 20], names[(i + 2) % 20]] for i, n in enumerate(names)}
    sampler = IdentityBatchSampler(
        IDENTITIES, batch_size=8, samples_per_identity=2, seed=5, neighbours=neighbours, neighbours_per_anchor=1
    )
    for epoch in range(3):
        sampler.set_epoch(epoch)
        groups = [[names[i] for i in group] for group in sampler.identity_groups()]
        assert sorted(n for g in groups for n in g) == names
        # Walk the groups in placement order: an anchor, then its first neighbour not used so far
        # (when one is left and the batch has room), then the next anchor.
        used: set[str] = set()
        placed = 0
        for group in groups:
            pos = 0
            while pos < len(group):
                anchor = group[pos]
                used.add(anchor)
                pos += 1
                follower = next((n for n in neighbours[anchor] if n not in used), None)
                if follower is not None and pos < 4:
                    assert pos < len(group) and group[pos] == follower
                    used.add(follower)
                    pos += 1
                    placed += 1
        assert placed >= 5
        batches = list(sampler)
        for group, batch in zip(groups, batches):
            assert _groups_of(batch, IDENTITIES) == group


def test_neighbour_rank_order_skips_used_identities():
    names = sorted(COUNTS)
    neighbours = {n: [m for m in names if m != n] for n in names}  # everyone's first neighbour is id00 or id01
    sampler = IdentityBatchSampler(
        IDENTITIES, batch_size=12, samples_per_identity=2, seed=2, neighbours=neighbours, neighbours_per_anchor=2
    )
    groups = [[names[i] for i in g] for g in sampler.identity_groups()]
    assert len(groups) == 4 and [len(g) for g in groups] == [6, 6, 6, 2]
    assert sorted(n for g in groups for n in g) == names
    used: set[str] = set()
    for group in groups:
        for start in range(0, len(group), 3):
            anchor = group[start]
            used.add(anchor)
            expected = [n for n in neighbours[anchor] if n not in used][: min(2, len(group) - start - 1)]
            assert group[start + 1 : start + 3] == expected
            used.update(expected)


@pytest.mark.parametrize(("num", "per_batch", "sizes"), [(9, 4, [4, 3, 2]), (5, 2, [2, 3]), (7, 3, [3, 2, 2])])
def test_last_batch_never_holds_a_single_identity(num, per_batch, sizes):
    identities = _identities({f"x{i}": 2 for i in range(num)})
    sampler = IdentityBatchSampler(identities, batch_size=2 * per_batch, samples_per_identity=2, seed=0)
    groups = sampler.identity_groups()
    assert [len(g) for g in groups] == sizes
    assert len(sampler) == len(groups) == len(list(sampler))
    assert sorted(i for g in groups for i in g) == list(range(num))


def test_world_size_two_covers_each_global_batch_exactly():
    kwargs = dict(batch_size=8, samples_per_identity=2, seed=9)
    whole = IdentityBatchSampler(IDENTITIES, **kwargs)
    parts = [IdentityBatchSampler(IDENTITIES, rank=r, world_size=2, **kwargs) for r in range(2)]
    for epoch in (0, 1):
        for s in (whole, *parts):
            s.set_epoch(epoch)
        global_batches = list(whole)
        local = [list(p) for p in parts]
        assert len(local[0]) == len(local[1]) == len(global_batches) == len(whole)
        for b, batch in enumerate(global_batches):
            assert len(local[0][b]) == len(local[1][b]) == len(batch) // 2
            assert local[0][b] + local[1][b] == batch


def test_world_size_pads_an_odd_last_batch_from_its_own_items():
    identities = _identities({f"x{i}": 3 for i in range(5)})
    kwargs = dict(batch_size=6, samples_per_identity=3, seed=0)  # P = 2, 5 identities: last batch 9 items
    whole = list(IdentityBatchSampler(identities, **kwargs))
    parts = [list(IdentityBatchSampler(identities, rank=r, world_size=2, **kwargs)) for r in range(2)]
    assert len(whole[-1]) == 9
    last = parts[0][-1] + parts[1][-1]
    assert len(parts[0][-1]) == len(parts[1][-1]) == 5
    assert last == whole[-1] + whole[-1][:1]


def test_sampler_checks_its_arguments():
    with pytest.raises(ValueError, match="multiple of samples_per_identity"):
        IdentityBatchSampler(IDENTITIES, batch_size=10, samples_per_identity=3, seed=0)
    with pytest.raises(ValueError, match="at least 2"):
        IdentityBatchSampler(IDENTITIES, batch_size=4, samples_per_identity=4, seed=0)
    with pytest.raises(ValueError, match="divisible"):
        IdentityBatchSampler(IDENTITIES, batch_size=9, samples_per_identity=3, seed=0, world_size=2)
    with pytest.raises(ValueError, match="no neighbours table"):
        IdentityBatchSampler(IDENTITIES, batch_size=8, samples_per_identity=2, seed=0, neighbours_per_anchor=1)
    with pytest.raises(ValueError, match="no entry"):
        IdentityBatchSampler(
            IDENTITIES, batch_size=8, samples_per_identity=2, seed=0, neighbours={"id00": []}, neighbours_per_anchor=1
        )
    bad = {n: ["nobody"] for n in COUNTS}
    with pytest.raises(ValueError, match="nobody"):
        IdentityBatchSampler(
            IDENTITIES, batch_size=8, samples_per_identity=2, seed=0, neighbours=bad, neighbours_per_anchor=1
        )


# ----------------------------------------------------------------------------- neighbours table


def _write_neighbours(path: Path, rows: list[tuple[str, int, str, float]]) -> Path:
    columns = list(zip(*rows))
    table = pa.Table.from_arrays(
        [
            pa.array(columns[0], pa.string()),
            pa.array(columns[1], pa.int32()),
            pa.array(columns[2], pa.string()),
            pa.array(columns[3], pa.float32()),
        ],
        schema=NEIGHBOUR_SCHEMA,
    )
    pq.write_table(table, path)
    return path


def test_neighbours_from_parquet(tmp_path):
    path = _write_neighbours(
        tmp_path / "n.parquet",
        [
            ("a", 2, "c", 0.5),
            ("a", 1, "b", 0.9),
            ("a", 3, "z", 0.1),
            ("b", 1, "a", 0.9),
            ("c", 1, "z", 0.8),
            ("c", 2, "a", 0.5),
            ("z", 1, "a", 0.3),
        ],
    )
    assert neighbours_from_parquet(path, ["a", "b", "c"]) == {"a": ["b", "c"], "b": ["a"], "c": ["a"]}
    with pytest.raises(ValueError, match=r"n\.parquet.*\['d'\]"):
        neighbours_from_parquet(path, ["a", "b", "d"])
    with pytest.raises(FileNotFoundError):
        neighbours_from_parquet(tmp_path / "missing.parquet", ["a"])
