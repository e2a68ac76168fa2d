"""Training-step time of one student architecture at two input sizes, side by side.

The person field trains CLIP ViT-B/16 at 384 x 128 (a 24 x 8 patch grid, 192 patches) where
CLIP's own input is 224 x 224 (14 x 14, 196 patches). This builds the architecture twice, random
init: at its own square size (A) and at ``--image-size H W`` (B), and times for each:

- a training step on one batch: forward of images and captions, the identity-level contrastive
  loss at a fixed tau 0.02 (the person preset's baseline objective), backward, AdamW step;
- the batch's images through the student's transform and IRRA's augmentation (``augment: reid``),
  from person-shaped PIL images (``--source-size``, height x width).

The variants run interleaved (A, B, A, B, ...) in one process with the same threads, after one
warm-up step each, and the ratios come from the medians, so a busy machine affects both alike.
The load average is printed with the numbers.

    python bench/student_size.py --architecture ViT-B-16 --image-size 384 128 --batch-size 8 --repeats 5
"""

from __future__ import annotations

import argparse
import os
import statistics
import time

import torch
from PIL import Image

from softref.losses.mmref import identity_contrastive_loss
from softref.models.student import Student
from softref.train.augment import augmentation, item_generator
from softref.train.trainer import make_optimizer, parameter_groups


def _variant(architecture: str, image_size: tuple[int, int] | None, batch: int) -> dict:
    torch.manual_seed(0)
    student = Student(architecture, None, image_size=image_size, tau_init=0.02, tau_fixed=True)
    student.train()
    size = student.image_size if isinstance(student.image_size, tuple) else (student.image_size,) * 2
    captions = [f"a person in a {c} shirt with {b} shoes" for c, b in zip(["red", "blue"] * batch, ["black"] * batch)]
    return {
        "name": f"{size[0]} x {size[1]}", "student": student, "size": size,
        "optimizer": make_optimizer(parameter_groups(student, 1e-4), 1e-5, torch.device("cpu")),
        "images": torch.randn(batch, 3, *size, generator=torch.Generator().manual_seed(1)),
        "tokens": student.tokenize(captions[:batch]),
        "identities": torch.arange(batch) // 2,
        "augment": augmentation("reid", student.preprocess_cfg),
    }


def _step(v: dict) -> float:
    start = time.perf_counter()
    out = v["student"](v["images"], v["tokens"])
    loss = identity_contrastive_loss(out["image_emb"], out["text_emb"], out["tau"], v["identities"])
    v["optimizer"].zero_grad(set_to_none=True)
    loss.backward()
    v["optimizer"].step()
    return time.perf_counter() - start


def _data(v: dict, source: list[Image.Image], epoch: int) -> float:
    start = time.perf_counter()
    pixels = [v["augment"](v["student"].transform(image), item_generator(23, epoch, i)) for i, image in enumerate(source)]
    assert torch.stack(pixels).shape[-2:] == v["size"]
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--architecture", default="ViT-B-16")
    parser.add_argument("--image-size", type=int, nargs=2, default=(384, 128), metavar=("H", "W"))
    parser.add_argument("--source-size", type=int, nargs=2, default=(384, 160), metavar=("H", "W"))
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    variants = [_variant(args.architecture, None, args.batch_size),
                _variant(args.architecture, tuple(args.image_size), args.batch_size)]
    source = [Image.new("RGB", (args.source_size[1], args.source_size[0]), (40 * i % 255, 90, 140))
              for i in range(args.batch_size)]
    for v in variants:  # warm-up
        _step(v)
        _data(v, source, 0)
    steps: dict[str, list[float]] = {v["name"]: [] for v in variants}
    data: dict[str, list[float]] = {v["name"]: [] for v in variants}
    load_before = os.getloadavg()
    for repeat in range(args.repeats):
        for v in variants:
            steps[v["name"]].append(_step(v))
            data[v["name"]].append(_data(v, source, repeat + 1))
    load_after = os.getloadavg()
    a, b = (v["name"] for v in variants)
    print(f"{args.architecture}, batch {args.batch_size}, {args.threads} threads, {args.repeats} interleaved repeats; "
          f"load average before {load_before[0]:.2f}, after {load_after[0]:.2f} (1 min)")
    for name in (a, b):
        print(f"  {name}: train step median {statistics.median(steps[name]):.3f} s "
              f"(all: {', '.join(f'{t:.2f}' for t in steps[name])}); transform + reid augmentation of the batch "
              f"median {statistics.median(data[name]) * 1000:.1f} ms")
    print(f"  ratio {b} / {a}: train step {statistics.median(steps[b]) / statistics.median(steps[a]):.3f}, "
          f"data {statistics.median(data[b]) / statistics.median(data[a]):.3f}")


if __name__ == "__main__":
    main()
