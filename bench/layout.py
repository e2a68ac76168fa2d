"""Memory-layout benchmark: a convolutional student in PyTorch's default layout against channels-last.

Two students with the same weights, one built with ``channels_last=False`` (NCHW weights and
inputs), one as the trainer builds it (``Student`` puts a convolutional image tower in the
channels-last layout, weights and inputs). Each runs a training step (forward, InfoNCE,
backward, the trainer's AdamW) and an evaluation forward of the image tower on the same batch;
the variants run interleaved (default, channels-last, default, ...) in one process with the same
threads and the ratios come from the medians, so a noisy machine affects both alike. Also
printed: the largest difference between the two students' image embeddings (the same model, its
sums ordered differently) and between their parameters after the timed steps.

    python bench/layout.py --architecture softref-tiny-rn --repeats 20
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections.abc import Callable

import torch

from softref.losses import contrastive_loss
from softref.models.student import Student
from softref.train.trainer import make_optimizer, parameter_groups


def _median_ms(values: list[float]) -> float:
    return statistics.median(values) * 1e3


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--architecture", default="softref-tiny-rn", help="open_clip architecture (random weights)")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=20, help="timed steps of each layout")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (the demo's jobs use 1)")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    device = torch.device("cpu")
    torch.manual_seed(0)
    default = Student(args.architecture, None, channels_last=False)
    last = Student(args.architecture, None)
    last.load_state_dict(default.state_dict())
    if not last.channels_last:
        print(f"{args.architecture}: its image tower is not convolutional; both layouts are the default one")
    students = {"default": default, "channels-last": last}
    size = default.image_size if isinstance(default.image_size, int) else default.image_size[0]
    images = torch.randn(args.batch_size, 3, size, size)
    tokens = default.tokenize([f"a photo of thing number {i}" for i in range(args.batch_size)])
    optimizers = {name: make_optimizer(parameter_groups(s, 1e-4), 1e-3, device) for name, s in students.items()}

    def train_step(name: str) -> Callable[[], None]:
        def run() -> None:
            out = students[name](images, tokens)
            optimizers[name].zero_grad(set_to_none=True)
            contrastive_loss(out["image_emb"], out["text_emb"], out["tau"]).backward()
            optimizers[name].step()
        return run

    def encode(name: str) -> Callable[[], None]:
        def run() -> None:
            with torch.no_grad():
                students[name].encode_image(images)
        return run

    with torch.no_grad():
        embedding_gap = float((default.encode_image(images) - last.encode_image(images)).abs().max())
    times: dict[tuple[str, str], list[float]] = {}
    for repeat in range(args.repeats + 2):
        for kind, make in (("train step", train_step), ("image forward", encode)):
            for name in students:
                fn = make(name)
                start = time.perf_counter()
                fn()
                if repeat >= 2:
                    times.setdefault((kind, name), []).append(time.perf_counter() - start)
    with torch.no_grad():
        drift = max(float((a - b).abs().max()) for a, b in zip(default.parameters(), last.parameters()))
    print(f"{args.architecture}: batch {args.batch_size} at {size} px, {args.threads} thread(s), "
          f"{args.repeats} timed steps each (interleaved, medians)")
    for kind in ("train step", "image forward"):
        base, fast = _median_ms(times[kind, "default"]), _median_ms(times[kind, "channels-last"])
        print(f"  {kind:<14} default {base:8.2f} ms | channels-last {fast:8.2f} ms | channels-last / default "
              f"{fast / base:.3f}x")
    print(f"  largest image-embedding difference, same weights: {embedding_gap:.2e}")
    print(f"  largest parameter difference after {args.repeats + 2} steps from the same state: {drift:.2e}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
