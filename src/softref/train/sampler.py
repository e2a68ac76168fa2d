"""Identity-aware P x K batches for MMRef: identities with their neighbours, K items each.

A batch holds P = batch_size // K identities and K items (captions) of each. Identities come
in a per-epoch shuffled order; each batch is filled by taking the next identity not yet used
this epoch (the *anchor*), then up to ``neighbours_per_anchor`` of its neighbours from the
teacher-reference neighbour table (in rank order, skipping those already used this epoch),
then the next anchor, until the batch holds P identities. Every identity is used exactly once
per epoch, as an anchor or as a neighbour, so an epoch has ceil(#identities / P) batches.

Items of an identity: K of them drawn without replacement when it has at least K; when it has
fewer, all of them plus K - n drawn with replacement from them. An identity's K items are
contiguous in the batch.

Last batch: it may hold fewer than P identities. A batch with a single identity gives the
identity contrastive loss nothing to contrast, so when the last batch would hold one identity
and there is an earlier batch, the sampler avoids it: with P >= 3 the last identity of the
previous batch moves into the last batch (both then hold at least two identities and at most
P); with P = 2 the single identity joins the previous batch, which then holds 3 identities
(3 K items, more than batch_size). Only a split with a single identity gives a
single-identity batch.

The randomness of an epoch comes from a ``torch.Generator`` seeded with ``seed + epoch``, the
same on every process. Each global batch is cut across processes as
:func:`softref.train.distributed.shard_batches` does: process r takes the r-th of
``world_size`` contiguous equal pieces, a batch whose length does not divide by
``world_size`` being topped up with its own first items.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Iterator, Mapping, Sequence
from pathlib import Path

import torch
from torch.utils.data import Sampler

from softref.references.index import read_neighbours
from softref.train.distributed import shard_batches

__all__ = ["IdentityBatchSampler", "neighbours_from_parquet"]

logger = logging.getLogger(__name__)


def neighbours_from_parquet(path: Path | str, identities: Iterable[str]) -> dict[str, list[str]]:
    """Neighbours of each of ``identities`` from a neighbours table, in rank order.

    Reads the table with :func:`softref.references.index.read_neighbours` (columns identity,
    rank, neighbour, score) and keeps the rows of ``identities`` whose neighbour is also one
    of ``identities`` (a neighbour outside the split cannot join a batch).

    Raises:
        ValueError: naming the file, when an identity has no row in the table.
    """
    path = Path(path)
    wanted = set(identities)
    table = read_neighbours(path)
    table = table[table["identity"].isin(wanted)]
    missing = sorted(wanted - set(table["identity"]))
    if missing:
        raise ValueError(
            f"{path}: {len(missing)} identity(ies) of the training split have no row in the neighbours "
            f"table; first: {missing[:5]}"
        )
    outside = ~table["neighbour"].isin(wanted)
    if bool(outside.any()):
        logger.info("%s: dropped %d neighbour row(s) naming identities outside the split", path, int(outside.sum()))
    table = table[~outside].sort_values(["identity", "rank"], kind="stable")
    result: dict[str, list[str]] = {identity: [] for identity in sorted(wanted)}
    for identity, neighbour in zip(table["identity"].tolist(), table["neighbour"].tolist()):
        result[identity].append(neighbour)
    return result


class IdentityBatchSampler(Sampler[list[int]]):
    """This process's P x K batches of an epoch (see the module docstring).

    Call :meth:`set_epoch` before iterating.

    Args:
        identities: ``identities[i]`` is the identity of dataset item i.
        batch_size: the global batch size (all processes together), a multiple of K and of
            ``world_size``.
        samples_per_identity: K, items per identity in a batch.
        seed: the epoch's generator is seeded with ``seed + epoch``.
        neighbours: identity -> its neighbour identities in rank order
            (:func:`neighbours_from_parquet`); needed when ``neighbours_per_anchor > 0``.
        neighbours_per_anchor: neighbours placed in the batch of each anchor (0: none).
        rank, world_size: this process and the number of processes.
    """

    def __init__(
        self,
        identities: Sequence[str],
        *,
        batch_size: int,
        samples_per_identity: int,
        seed: int,
        neighbours: Mapping[str, Sequence[str]] | None = None,
        neighbours_per_anchor: int = 0,
        rank: int = 0,
        world_size: int = 1,
    ) -> None:
        if len(identities) < 1:
            raise ValueError("IdentityBatchSampler: no items to sample (identities is empty)")
        if samples_per_identity < 1:
            raise ValueError(f"samples_per_identity: expected a positive integer, found {samples_per_identity}")
        if batch_size < 1 or batch_size % samples_per_identity:
            raise ValueError(
                f"batch_size {batch_size}: expected a positive multiple of samples_per_identity {samples_per_identity}"
            )
        per_batch = batch_size // samples_per_identity
        if per_batch < 2:
            raise ValueError(
                f"batch_size {batch_size} // samples_per_identity {samples_per_identity} = {per_batch} identities "
                f"per batch; expected at least 2"
            )
        if neighbours_per_anchor < 0:
            raise ValueError(f"neighbours_per_anchor: expected 0 or more, found {neighbours_per_anchor}")
        # Validates rank and world_size against batch_size up front.
        shard_batches([0], batch_size, rank, world_size)

        self.batch_size = int(batch_size)
        self.samples_per_identity = int(samples_per_identity)
        self.identities_per_batch = per_batch
        self.seed = int(seed)
        self.rank = int(rank)
        self.world_size = int(world_size)
        self.neighbours_per_anchor = int(neighbours_per_anchor)
        self.epoch = 0

        items: dict[str, list[int]] = {}
        for i, identity in enumerate(identities):
            items.setdefault(str(identity), []).append(i)
        self.identity_names: tuple[str, ...] = tuple(sorted(items))
        self._items = [torch.tensor(items[name], dtype=torch.int64) for name in self.identity_names]
        position = {name: i for i, name in enumerate(self.identity_names)}
        if len(self.identity_names) == 1:
            logger.warning("IdentityBatchSampler: a single identity; every batch holds only it")

        self._neighbours: list[list[int]] = [[] for _ in self.identity_names]
        if self.neighbours_per_anchor > 0:
            if neighbours is None:
                raise ValueError(
                    f"neighbours_per_anchor is {neighbours_per_anchor} but no neighbours table was given"
                )
            missing = [name for name in self.identity_names if name not in neighbours]
            if missing:
                raise ValueError(
                    f"neighbours: {len(missing)} identity(ies) of the items have no entry; first: {missing[:5]}"
                )
            for name in self.identity_names:
                unknown = [n for n in neighbours[name] if n not in position]
                if unknown:
                    raise ValueError(
                        f"neighbours[{name!r}]: neighbour(s) {unknown[:5]} are not identities of the items "
                        f"(filter the table with neighbours_from_parquet)"
                    )
                self._neighbours[position[name]] = [position[n] for n in neighbours[name] if n != name]

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def identity_groups(self) -> list[list[int]]:
        """The epoch's identities per global batch, as indices into :attr:`identity_names`."""
        generator = torch.Generator().manual_seed(self.seed + self.epoch)
        return self._groups(torch.randperm(len(self.identity_names), generator=generator).tolist())

    def _groups(self, order: list[int]) -> list[list[int]]:
        per_batch = self.identities_per_batch
        used = [False] * len(order)
        groups: list[list[int]] = []
        group: list[int] = []
        for anchor in order:
            if used[anchor]:
                continue
            if len(group) == per_batch:
                groups.append(group)
                group = []
            used[anchor] = True
            group.append(anchor)
            taken = 0
            for neighbour in self._neighbours[anchor]:
                if taken == self.neighbours_per_anchor or len(group) == per_batch:
                    break
                if not used[neighbour]:
                    used[neighbour] = True
                    group.append(neighbour)
                    taken += 1
        groups.append(group)
        if len(groups) > 1 and len(groups[-1]) == 1:
            if per_batch >= 3:
                groups[-1].insert(0, groups[-2].pop())
            else:
                groups[-2].extend(groups.pop())
        return groups

    def batches(self) -> list[list[int]]:
        """This process's batches of the epoch (lists of item indices)."""
        generator = torch.Generator().manual_seed(self.seed + self.epoch)
        order = torch.randperm(len(self.identity_names), generator=generator).tolist()
        k = self.samples_per_identity
        result: list[list[int]] = []
        for group in self._groups(order):
            batch: list[int] = []
            for identity in group:
                items = self._items[identity]
                if len(items) >= k:
                    picked = items[torch.randperm(len(items), generator=generator)[:k]]
                else:
                    extra = items[torch.randint(len(items), (k - len(items),), generator=generator)]
                    picked = torch.cat([items, extra])
                batch.extend(picked.tolist())
            # One global batch, padded to a multiple of world_size from its own start.
            size = -(-len(batch) // self.world_size) * self.world_size
            result.append(shard_batches(batch, size, self.rank, self.world_size)[0])
        return result

    def __iter__(self) -> Iterator[list[int]]:
        return iter(self.batches())

    def __len__(self) -> int:
        num, per_batch = len(self.identity_names), self.identities_per_batch
        count = -(-num // per_batch)
        if count > 1 and num % per_batch == 1 and per_batch == 2:
            count -= 1
        return count
