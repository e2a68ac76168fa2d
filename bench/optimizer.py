"""Optimizer-step benchmark: the trainer's fused AdamW against torch's default AdamW.

Both optimizers hold the same student's parameters (``parameter_groups``, weight decay 1e-4)
with the same gradients (one InfoNCE backward on a random batch); their steps run interleaved
(default, fused, default, fused, ...) in one process with the same threads, and the ratio
comes from the medians, so a noisy machine affects both alike. Also printed: the largest
difference between the two optimizers' parameters after ``--repeats`` steps from the same
state (the same update up to float rounding).

    python bench/optimizer.py --architecture softref-tiny-rn --repeats 20
"""

from __future__ import annotations

import argparse
import copy
import statistics
import sys
import time

import torch

from softref.losses import contrastive_loss
from softref.models.student import Student
from softref.train.trainer import make_optimizer, parameter_groups


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--architecture", default="softref-tiny-rn", help="open_clip architecture (random weights)")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=20, help="timed steps of each optimizer")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (the demo's jobs use 1)")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    device = torch.device("cpu")
    torch.manual_seed(0)
    students = [Student(args.architecture, None)]
    students.append(copy.deepcopy(students[0]))
    size = students[0].image_size if isinstance(students[0].image_size, int) else students[0].image_size[0]
    images = torch.randn(args.batch_size, 3, size, size)
    tokens = students[0].tokenize([f"a photo of thing number {i}" for i in range(args.batch_size)])
    optimizers = [torch.optim.AdamW(parameter_groups(students[0], 1e-4), lr=1e-3),
                  make_optimizer(parameter_groups(students[1], 1e-4), 1e-3, device)]
    for student in students:
        out = student(images, tokens)
        contrastive_loss(out["image_emb"], out["text_emb"], out["tau"]).backward()
    times: list[list[float]] = [[], []]
    for repeat in range(args.repeats + 2):
        for k, optimizer in enumerate(optimizers):
            start = time.perf_counter()
            optimizer.step()
            if repeat >= 2:
                times[k].append(time.perf_counter() - start)
    default, fused = (statistics.median(t) * 1e3 for t in times)
    numel = sum(p.numel() for p in students[0].parameters())
    with torch.no_grad():
        drift = max(float((a - b).abs().max()) for a, b in zip(students[0].parameters(), students[1].parameters()))
    print(f"{args.architecture}: {numel / 1e6:.2f} M parameters, {args.threads} thread(s), {args.repeats} steps each")
    print(f"  AdamW step, torch default: {default:8.2f} ms (median)")
    print(f"  AdamW step, trainer's (fused={optimizers[1].defaults.get('fused')}): {fused:8.2f} ms (median)")
    print(f"  fused / default: {fused / default:.3f}x")
    print(f"  largest parameter difference after {args.repeats + 2} steps from the same state: {drift:.2e}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
