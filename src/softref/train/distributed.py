"""Process-group helpers: one code path for a single process and for torchrun / DDP.

A run is distributed when torchrun's environment (``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``) is
present; the process group then uses NCCL on CUDA and gloo on CPU. Everything else here is a
no-op in a single process, so the trainer never branches on "are we distributed" beyond
asking the :class:`DistributedContext`.

Gathering: with ``gather=True`` the trainer concatenates the embeddings and teacher features
of all processes (in rank order) before the losses. :func:`gather_with_grad` keeps the
autograd graph: its backward sums, over the processes, the gradient each one computed for
this process's slice. Every process computes the same loss over the gathered batch, so each
slice receives ``world_size`` times its share; DDP then averages the parameter gradients
over the ``world_size`` processes, which cancels that factor exactly. Two processes of batch
B/2 therefore produce the loss and gradients of one process of batch B, without rescaling.
"""

from __future__ import annotations

import logging
import os
import warnings
from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch import Tensor

__all__ = [
    "DistributedContext",
    "env_is_distributed",
    "init_distributed",
    "cleanup_distributed",
    "gather_with_grad",
    "gather_no_grad",
    "all_reduce_mean",
    "any_across",
    "barrier",
    "broadcast_from_main",
    "shard_batches",
]

logger = logging.getLogger(__name__)

_ENV_KEYS = ("RANK", "WORLD_SIZE", "LOCAL_RANK")


@dataclass(frozen=True)
class DistributedContext:
    """Where this process stands: its rank, the number of processes, and its device."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: torch.device = torch.device("cpu")
    backend: str | None = None
    initialized_here: bool = False

    @property
    def is_distributed(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        """Only the main process (rank 0) writes files and shows progress."""
        return self.rank == 0


def env_is_distributed() -> bool:
    """True when torchrun's variables are set (``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``)."""
    return all(key in os.environ for key in _ENV_KEYS)


def _env_int(key: str) -> int:
    value = os.environ[key]
    try:
        return int(value)
    except ValueError:
        raise ValueError(f"environment variable {key}: expected an integer, found {value!r}") from None


def _resolve_device(device: str | torch.device | None, local_rank: int, distributed: bool) -> torch.device:
    if device is None:
        if torch.cuda.is_available():
            return torch.device("cuda", local_rank if distributed else torch.cuda.current_device())
        return torch.device("cpu")
    device = torch.device(device)
    if device.type == "cuda" and device.index is None:
        return torch.device("cuda", local_rank if distributed else torch.cuda.current_device())
    return device


def init_distributed(device: str | torch.device | None = None) -> DistributedContext:
    """Join torchrun's process group when its environment is present; else a single process.

    Args:
        device: the device to train on; None picks ``cuda:LOCAL_RANK`` when CUDA is available,
            else the CPU. ``"cuda"`` without an index becomes ``cuda:LOCAL_RANK``.

    Returns:
        The context. ``initialized_here`` says whether this call created the process group
        (and :func:`cleanup_distributed` should destroy it).
    """
    if not env_is_distributed():
        return DistributedContext(device=_resolve_device(device, 0, distributed=False))
    rank, world_size, local_rank = (_env_int(k) for k in _ENV_KEYS)
    if not 0 <= rank < world_size:
        raise ValueError(f"environment: RANK={rank} must be in [0, WORLD_SIZE={world_size})")
    resolved = _resolve_device(device, local_rank, distributed=True)
    if resolved.type == "cuda":
        torch.cuda.set_device(resolved)
    backend = "nccl" if resolved.type == "cuda" else "gloo"
    initialized_here = False
    if dist.is_available() and not dist.is_initialized():
        dist.init_process_group(backend=backend, rank=rank, world_size=world_size)
        initialized_here = True
    elif dist.is_initialized():
        backend = str(dist.get_backend())
    logger.info("process %d of %d (local rank %d) on %s, backend %s", rank, world_size, local_rank, resolved, backend)
    return DistributedContext(rank, world_size, local_rank, resolved, backend, initialized_here)


def cleanup_distributed(ctx: DistributedContext) -> None:
    """Destroy the process group if :func:`init_distributed` created it."""
    if ctx.initialized_here and dist.is_initialized():
        dist.destroy_process_group()


def _active() -> bool:
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def gather_with_grad(x: Tensor) -> Tensor:
    """Concatenate ``x`` of every process along dim 0 (rank order), keeping gradients.

    Identity in a single process. Every process must pass the same shape.
    """
    if not _active():
        return x
    from torch.distributed.nn.functional import all_gather

    with warnings.catch_warnings():
        # Deprecated in favour of a private functional API; this one's backward is documented.
        warnings.filterwarnings("ignore", message=".*all_gather is deprecated", category=FutureWarning)
        parts = all_gather(x)
    return torch.cat(parts, dim=0)


def gather_no_grad(x: Tensor) -> Tensor:
    """Concatenate ``x`` of every process along dim 0 (rank order), without gradient."""
    if not _active():
        return x
    parts = [torch.empty_like(x) for _ in range(dist.get_world_size())]
    dist.all_gather(parts, x.contiguous())
    return torch.cat(parts, dim=0)


def all_reduce_mean(x: Tensor) -> Tensor:
    """The mean of ``x`` over the processes (a copy; ``x`` itself in a single process)."""
    if not _active():
        return x
    y = x.detach().clone()
    dist.all_reduce(y, op=dist.ReduceOp.SUM)
    return y / dist.get_world_size()


def any_across(flag: bool, device: torch.device) -> bool:
    """True when ``flag`` is True on any process (so that all processes stop together)."""
    if not _active():
        return flag
    t = torch.tensor([1 if flag else 0], device=device, dtype=torch.int32)
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return bool(t.item())


def broadcast_from_main(values: Sequence[float], device: torch.device) -> list[float]:
    """Rank 0's ``values`` on every process (the input itself in a single process)."""
    if not _active():
        return [float(v) for v in values]
    t = torch.tensor([float(v) for v in values], dtype=torch.float64, device=device)
    dist.broadcast(t, src=0)
    return t.cpu().tolist()


def barrier() -> None:
    """Wait for every process (no-op in a single process)."""
    if _active():
        dist.barrier()


def shard_batches(
    order: Sequence[int] | Tensor,
    batch_size: int,
    rank: int = 0,
    world_size: int = 1,
) -> list[list[int]]:
    """Cut a (shuffled) order into global batches and give each process its slice of each.

    Global batch k is ``order[k*B:(k+1)*B]``; process r takes the r-th of ``world_size``
    contiguous equal pieces of it, so concatenating the processes' batches in rank order
    gives back the global batch exactly. The last global batch is topped up with items from
    the start of the order (as ``DistributedSampler`` pads) until its length divides by
    ``world_size``, so every process sees the same number of batches of the same sizes.

    Args:
        order: item indices in the epoch's order.
        batch_size: the global batch size B; must be divisible by ``world_size``.
        rank, world_size: this process and the number of processes.

    Returns:
        This process's batches, lists of item indices.
    """
    if batch_size < 1:
        raise ValueError(f"batch_size: expected a positive integer, found {batch_size}")
    if world_size < 1 or not 0 <= rank < world_size:
        raise ValueError(f"rank {rank} / world_size {world_size}: expected 0 <= rank < world_size")
    if batch_size % world_size:
        raise ValueError(
            f"batch_size {batch_size} (the global batch) must be divisible by the number of "
            f"processes {world_size}"
        )
    items = order.tolist() if isinstance(order, Tensor) else [int(i) for i in order]
    if not items:
        return []
    batches: list[list[int]] = []
    for start in range(0, len(items), batch_size):
        batch = items[start : start + batch_size]
        short = -len(batch) % world_size
        if short:
            batch = batch + [items[i % len(items)] for i in range(short)]
        piece = len(batch) // world_size
        batches.append(batch[rank * piece : (rank + 1) * piece])
    return batches


def broadcast_parameters(module: torch.nn.Module) -> None:
    """Copy rank 0's parameters and buffers to every process (no-op in one process)."""
    if not _active():
        return
    with torch.no_grad():
        for tensor in module.state_dict().values():
            if torch.is_tensor(tensor):
                dist.broadcast(tensor, src=0)


def average_gradients(module: torch.nn.Module) -> None:
    """Average every parameter gradient over the processes in one flat all-reduce (no-op in one process).

    Parameters without a gradient (heads a method does not use) have none on every process, so
    the flat buffer has the same layout everywhere.
    """
    if not _active():
        return
    grads = [p.grad for p in module.parameters() if p.grad is not None]
    if not grads:
        return
    flat = torch.cat([g.reshape(-1) for g in grads])
    dist.all_reduce(flat)
    flat /= dist.get_world_size()
    offset = 0
    for g in grads:
        g.copy_(flat[offset : offset + g.numel()].view_as(g))
        offset += g.numel()
