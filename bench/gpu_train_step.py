"""A CUSA training step of an open_clip student in fp32 and in bf16 autocast: time and peak memory.

The step is the trainer's: ``Batch.to`` (teacher rows cast to float32 on the device), the CUSA
family's ``training_losses`` (student forward, InfoNCE + CSA + USA of
``softref.losses.cusa_objective``), backward, AdamW over ``parameter_groups``. The student is
open_clip ``--architecture`` (ViT-B-32) with random weights (nothing is downloaded), the batch
``--batch-size`` (128, the public code's per-GPU batch) image-caption pairs of random pixels,
random-word captions and random teacher rows of the real sizes (Unicom ViT-B/32
``forward_features``: 37,632; all-mpnet-base-v2: 768), every caption of a different image.

Per precision (``--precisions``; a fresh student and optimizer each, seeded alike): ``--warmup``
untimed steps, then ``--steps`` timed ones (device synchronised around each); the median ms per
step, pairs per second, and the peak device memory of the timed steps
(``torch.cuda.max_memory_allocated``: weights, AdamW state, activations; CUDA only). bf16 runs the
forward and the losses under ``torch.autocast(dtype=torch.bfloat16)`` and the backward outside it,
no loss scaling (bf16 has fp32's exponent range). softref trains in fp32, as the public code: bf16
is measured here, not offered by the trainer.

    python bench/gpu_train_step.py --device cuda --batch-size 128 --steps 20
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import math
import statistics
import sys
import time
from typing import Any

import numpy as np
import torch

from softref.config import ExperimentConfig
from softref.models.student import Student
from softref.train.data import Batch
from softref.train.methods.cusa import training_losses
from softref.train.trainer import make_optimizer, parameter_groups

_WORDS = ("a man woman dog cat red blue green white black small large wooden old young sitting standing "
          "running on in next to the with holding table street field grass water bench car bus train").split()
DTYPES = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _host_batch(student: Student, batch_size: int, image_dim: int, text_dim: int, seed: int) -> Batch:
    """One collated batch as the loader hands it over: pixels, tokens, float16 teacher rows."""
    rng = np.random.default_rng(seed)
    generator = torch.Generator().manual_seed(seed)
    height, width = (student.image_size, student.image_size) if isinstance(student.image_size, int) \
        else tuple(student.image_size)
    captions = [" ".join(rng.choice(_WORDS, size=int(rng.integers(9, 16)))) for _ in range(batch_size)]
    return Batch(
        images=torch.randn(batch_size, 3, height, width, generator=generator),
        tokens=student.tokenizer(captions),
        image_index=torch.arange(batch_size),
        image_ids=tuple(f"i{i}" for i in range(batch_size)), text_ids=tuple(f"t{i}" for i in range(batch_size)),
        teacher_image=torch.randn(batch_size, image_dim, generator=generator).half(),
        teacher_text=torch.randn(batch_size, text_dim, generator=generator).half(),
    )


def run_precision(name: str, args: argparse.Namespace, device: torch.device) -> dict[str, Any]:
    """Time ``args.steps`` CUSA steps in precision ``name``; ms per step, memory, last losses."""
    torch.manual_seed(0)
    student = Student(args.architecture, None).to(device)
    student.train()
    optimizer = make_optimizer(parameter_groups(student, 1e-4), 1e-5, device)
    cfg = ExperimentConfig(name="bench", dataset="bench", student="bench", method="cusa", gather=False,
                           image_teacher="bench-images", text_teacher="bench-texts")
    batch = _host_batch(student, args.batch_size, args.image_dim, args.text_dim, seed=0)
    pinned = batch.pin_memory() if device.type == "cuda" else batch
    dtype = DTYPES[name]
    autocast = (contextlib.nullcontext() if dtype is None
                else torch.autocast(device_type=device.type, dtype=dtype))
    scaler = torch.amp.GradScaler(device.type) if dtype is torch.float16 else None

    def step() -> dict[str, float]:
        moved = pinned.to(device, non_blocking=True)
        with autocast:
            terms = training_losses(student, moved, cfg)
        optimizer.zero_grad(set_to_none=True)
        if scaler is None:
            terms["total"].backward()
            optimizer.step()
        else:
            scaler.scale(terms["total"]).backward()
            scaler.step(optimizer)
            scaler.update()
        return {k: float(v.detach()) for k, v in terms.items()}

    for _ in range(args.warmup):
        step()
    if device.type == "cuda":
        _sync(device)
        torch.cuda.reset_peak_memory_stats(device)
    times, losses = [], {}
    for _ in range(args.steps):
        _sync(device)
        start = time.perf_counter()
        losses = step()  # the float() of every term waits for the step, as the trainer's check does
        _sync(device)
        times.append(time.perf_counter() - start)
    peak = torch.cuda.max_memory_allocated(device) / 2**20 if device.type == "cuda" else None
    del student, optimizer
    if device.type == "cuda":
        torch.cuda.empty_cache()
    return {"ms": 1000.0 * statistics.median(times), "min_ms": 1000.0 * min(times), "peak_mb": peak,
            "losses": losses}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--architecture", default="ViT-B-32", help="open_clip student, random init (default ViT-B-32)")
    parser.add_argument("--batch-size", type=int, default=128, help="pairs per step (default 128)")
    parser.add_argument("--steps", type=int, default=20, help="timed steps per precision (default 20)")
    parser.add_argument("--warmup", type=int, default=3, help="untimed steps first (default 3)")
    parser.add_argument("--precisions", nargs="+", choices=sorted(DTYPES), default=["fp32", "bf16"],
                        help="precisions to run (default fp32 bf16)")
    parser.add_argument("--image-dim", type=int, default=37632, help="image teacher row (default 37632, Unicom tokens)")
    parser.add_argument("--text-dim", type=int, default=768, help="text teacher row (default 768, all-mpnet-base-v2)")
    parser.add_argument("--threads", type=int, default=None, help="torch intra-op threads (default: torch's)")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    logging.basicConfig(level=logging.ERROR)  # open_clip warns that a random init loads no weights
    device = torch.device(args.device)
    where = f"{device} {torch.cuda.get_device_name(device)}" if device.type == "cuda" else f"{device}"
    # fp32 here is the trainer's: torch's default matmul precision (no TF32 unless the process allows it).
    print(f"(b) CUSA step, student {args.architecture} (random init), batch {args.batch_size}, teacher rows "
          f"{args.image_dim} + {args.text_dim} (float16 on the host), device {where}, {args.warmup} warm-up + "
          f"{args.steps} timed steps per precision (medians); fp32 matmul precision "
          f"{torch.get_float32_matmul_precision()!r}")
    results = {}
    for name in args.precisions:
        results[name] = found = run_precision(name, args, device)
        memory = f"{found['peak_mb']:8.0f} MiB peak" if found["peak_mb"] is not None else "peak memory n/a off CUDA"
        finite = all(math.isfinite(v) for v in found["losses"].values())
        print(f"    {name:<5} {found['ms']:8.1f} ms/step (best {found['min_ms']:.1f})  "
              f"{1000.0 * args.batch_size / found['ms']:8.0f} pairs/s  {memory}  "
              f"loss {found['losses']['total']:.4f}{'' if finite else ' NOT FINITE'}")
    if "fp32" in results:
        for name, found in results.items():
            if name != "fp32":
                memory = (f", memory {found['peak_mb'] / results['fp32']['peak_mb']:.2f}x"
                          if found["peak_mb"] is not None else "")
                print(f"    {name} / fp32: time {found['ms'] / results['fp32']['ms']:.2f}x{memory}")
    return 0 if all(all(math.isfinite(v) for v in r["losses"].values()) for r in results.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
