"""Extraction overhead benchmark: softref's extractors against the bare models, side by side.

(a) images: ``extract_image_features`` end to end (manifest, DataLoader decoding in workers,
    teacher forward, shard writing) against ``teacher.encode`` on the same images preloaded
    as tensors; target ratio >= 0.90.
(b) texts: ``extract_text_features`` end to end against plain ``SentenceTransformer.encode``
    on the same (preprocessed) captions; target ratio >= 0.95.

The two sides of each pair run alternately (A, B, A, B, ...) in one process with the same
threads, and the ratio is taken from the medians, so a noisy machine affects both alike.
Uses the real demo teachers from ``models/`` (``softref fetch-teachers`` puts them there) and
generated images and captions (or the images of ``resources/demo`` when present).

    python bench/extract.py --images 128 --texts 512 --batch-size 32 --repeats 3
"""

from __future__ import annotations

import argparse
import logging
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from PIL import Image, ImageDraw

from softref.data.manifest import write_manifest
from softref.features.extract import extract_image_features, extract_text_features
from softref.teachers import load_teacher
from softref.teachers.base import TeacherSpec

REPO = Path(__file__).resolve().parents[1]
# Local models only; no hub look-ups, no loading bars.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
IMAGE_TARGET = 0.90
TEXT_TARGET = 0.95
_WORDS = (
    "a woman man person wearing black white red blue green yellow grey dark light long short "
    "sleeve shirt jacket coat trousers jeans skirt dress shoes boots sneakers bag backpack "
    "carrying holding walking standing hair ponytail glasses hat cap with and the in on of "
    "her his striped plaid checked loose tight pants shorts sandals umbrella phone"
).split()


def _images(root: Path, n: int, source: Path | None) -> tuple[pd.DataFrame, Path]:
    """n images and their dataset root: the first n of ``source`` if any, else JPEGs generated under root."""
    rows = []
    files = sorted(p for p in source.rglob("*") if p.suffix.lower() in (".jpg", ".jpeg", ".png"))[:n] if source else []
    if files:
        assert source is not None
        root = source
        for i, path in enumerate(files):
            rows.append((f"im{i:06d}", path.relative_to(source).as_posix(), f"p{i // 4}"))
    else:
        rng = np.random.default_rng(0)
        (root / "imgs").mkdir(parents=True, exist_ok=True)
        for i in range(n):
            w, h = int(rng.integers(160, 320)), int(rng.integers(240, 400))
            noise = rng.integers(0, 255, size=(h // 8, w // 8, 3), dtype=np.uint8)
            image = Image.fromarray(noise).resize((w, h), Image.BILINEAR)
            draw = ImageDraw.Draw(image)
            for _ in range(6):
                x0, y0 = int(rng.integers(0, w - 20)), int(rng.integers(0, h - 20))
                draw.ellipse((x0, y0, x0 + 40, y0 + 60), fill=tuple(int(c) for c in rng.integers(0, 255, 3)))
            rel = f"imgs/{i:06d}.jpg"
            image.save(root / rel, quality=90)
            rows.append((f"im{i:06d}", rel, f"p{i // 4}"))
    df = pd.DataFrame(
        {"image_id": [r[0] for r in rows], "path": [r[1] for r in rows],
         "identity": [r[2] for r in rows], "split": ["train"] * len(rows)}
    )
    return df, root


def _captions(n: int) -> list[str]:
    """Person-description-like captions of 8 to 60 words (CUHK-PEDES averages about 23)."""
    rng = np.random.default_rng(1)
    lengths = np.clip(rng.normal(24, 10, n).astype(int), 8, 60)
    return [" ".join(rng.choice(_WORDS, size=k)).capitalize() + "." for k in lengths]


def _alternate(a: Callable[[], float], b: Callable[[], float], repeats: int) -> tuple[list[float], list[float]]:
    """Run a and b once each to warm up, then alternately; each returns seconds."""
    a(), b()
    ta, tb = [], []
    for _ in range(repeats):
        ta.append(a())
        tb.append(b())
    return ta, tb


def _report(label: str, n: int, ta: list[float], tb: list[float], target: float, a_name: str, b_name: str) -> bool:
    ra, rb = n / statistics.median(ta), n / statistics.median(tb)
    ratio = ra / rb
    ok = ratio >= target
    print(f"  {a_name:<34} {ra:9.1f} {label}/s  (runs: {', '.join(f'{t:.2f}s' for t in ta)})")
    print(f"  {b_name:<34} {rb:9.1f} {label}/s  (runs: {', '.join(f'{t:.2f}s' for t in tb)})")
    print(f"  ratio {ratio:.3f}  target >= {target:.2f}  {'PASS' if ok else 'FAIL'}")
    return ok


def bench_images(args: argparse.Namespace, work: Path) -> bool | None:
    weights = args.models / "efficientnet-lite0" / "efficientnet-lite0-57934424.pth"
    if not weights.is_file():
        print(f"images: skipped, {weights} is absent (run `softref fetch-teachers {args.models}`)")
        return None
    teacher = load_teacher(TeacherSpec(name="efficientnet-lite0", kind="efficientnet-lite0",
                                       modality="image", weights=str(weights)), device="auto")
    source = REPO / "resources" / "demo"
    df, root = _images(work, args.images, source if source.is_dir() else None)
    manifest = work / "images.parquet"
    write_manifest(df, manifest, "images")
    n = len(df)
    # Model-only side: the same images, decoded and transformed once, outside the timing.
    pixels = torch.stack([teacher.transform(Image.open(root / p).convert("RGB")) for p in df["path"]])
    out = work / "features" / "images-0.h5"

    def ours() -> float:
        start = time.perf_counter()
        extract_image_features(manifest, root, teacher, out, shard=0, num_shards=1,
                               batch_size=args.batch_size, num_workers=args.num_workers)
        elapsed = time.perf_counter() - start
        out.unlink()
        return elapsed

    def model_only() -> float:
        start = time.perf_counter()
        with torch.no_grad():
            for a in range(0, n, args.batch_size):
                teacher.encode(pixels[a : a + args.batch_size])
        return time.perf_counter() - start

    print(f"(a) images: {n} {'generated' if root == work else 'demo'} images, batch size "
          f"{args.batch_size}, DataLoader workers {args.num_workers}, device {teacher.device}")
    ta, tb = _alternate(ours, model_only, args.repeats)
    return _report("img", n, ta, tb, IMAGE_TARGET, "extract_image_features (end to end)", "teacher.encode (preloaded tensors)")


def bench_texts(args: argparse.Namespace, work: Path) -> bool | None:
    folder = args.models / "all-mpnet-base-v2"
    if not (folder / "model.safetensors").is_file():
        print(f"texts: skipped, {folder} is absent (run `softref fetch-teachers {args.models}`)")
        return None
    teacher = load_teacher(TeacherSpec(name="all-mpnet-base-v2", kind="sentence-transformers",
                                       modality="text", weights=str(folder)), device="auto")
    captions = _captions(args.texts)
    n = len(captions)
    df = pd.DataFrame({"text_id": [f"tx{i:07d}" for i in range(n)], "image_id": [f"im{i // 2:06d}" for i in range(n)],
                       "identity": [f"p{i // 8}" for i in range(n)], "caption": captions, "split": ["train"] * n})
    manifest = work / "texts.parquet"
    write_manifest(df, manifest, "texts")
    # Plain encode gets the captions the teacher would see (after its caption cleaning); the
    # zero-padded ids keep the manifest in generation order.
    prepared = [teacher.preprocess_text(c) for c in captions]
    out = work / "features" / "texts-0.h5"
    model = teacher.model  # type: ignore[attr-defined]

    def ours() -> float:
        start = time.perf_counter()
        extract_text_features(manifest, teacher, out, shard=0, num_shards=1, batch_size=args.text_batch_size)
        elapsed = time.perf_counter() - start
        out.unlink()
        return elapsed

    def plain() -> float:
        start = time.perf_counter()
        model.encode(prepared, batch_size=args.text_batch_size, convert_to_numpy=True, show_progress_bar=False)
        return time.perf_counter() - start

    print(f"(b) texts: {n} generated captions, batch size {args.text_batch_size}, device {teacher.device}")
    ta, tb = _alternate(ours, plain, args.repeats)
    return _report("text", n, ta, tb, TEXT_TARGET, "extract_text_features (end to end)", "SentenceTransformer.encode")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--images", type=int, default=128, help="images to extract (default 128)")
    parser.add_argument("--texts", type=int, default=512, help="captions to extract (default 512)")
    parser.add_argument("--batch-size", type=int, default=32, help="image batch size (default 32)")
    parser.add_argument("--text-batch-size", type=int, default=64, help="text batch size (default 64)")
    parser.add_argument("--num-workers", type=int, default=2, help="DataLoader workers for images (default 2)")
    parser.add_argument("--repeats", type=int, default=3, help="timed runs of each side (default 3)")
    parser.add_argument("--models", type=Path, default=REPO / "models", help="folder of the demo teachers")
    parser.add_argument("--only", choices=["images", "texts"], help="run one of the two benchmarks")
    args = parser.parse_args(argv)
    # WARNING hides progress bars on both sides alike.
    logging.basicConfig(level=logging.WARNING)

    print(f"torch {torch.__version__}, threads {torch.get_num_threads()}, repeats {args.repeats} (medians)")
    results = []
    with tempfile.TemporaryDirectory(prefix="softref-bench-") as tmp:
        if args.only in (None, "images"):
            (Path(tmp) / "img").mkdir()
            results.append(bench_images(args, Path(tmp) / "img"))
        if args.only in (None, "texts"):
            (Path(tmp) / "txt").mkdir()
            results.append(bench_texts(args, Path(tmp) / "txt"))
    return 1 if any(r is False for r in results) else 0


if __name__ == "__main__":
    sys.exit(main())
