"""Image extraction throughput of CUSA's image teacher: Unicom ViT-B/32 at 224 px, random weights.

Three numbers, in images per second, on the same generated JPEGs (``bench/extract.py``'s):

(i) ``extract_image_features`` end to end: manifest, JPEG decoding and the Unicom transform in
    ``--num-workers`` DataLoader workers, the teacher's forward (fp16 autocast on CUDA, as
    ``ImageTeacher.encode`` runs it), CUSA's 37,632-d ``forward_features`` written to a float16
    shard;
(ii) the decoding alone: the extractor's own dataset and collate in the same DataLoader, no model
    (what the workers can feed);
(iii) the model alone: ``forward_features`` on random pixels already on the device, in the same
    autocast, batch after batch (what the GPU can take).

(i) / (iii) says how close extraction comes to the model's speed; (ii) says whether decoding is
what holds it back. The model is built by ``softref.teachers.unicom.build_unicom`` (random init,
no checkpoint), so nothing is downloaded. Each side runs once to warm up, then ``--repeats``
times, interleaved; medians.

    python bench/gpu_extract.py --device cuda --images 4096 --batch-size 256 --num-workers 12
"""

from __future__ import annotations

import argparse
import logging
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch
from torch.utils.data import DataLoader

from extract import _images  # bench/extract.py: the generated JPEGs
from softref.data.manifest import write_manifest
from softref.features.extract import _collate, _ImageFiles, extract_image_features
from softref.teachers.unicom import UnicomTeacher, build_unicom


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--images", type=int, default=4096, help="JPEGs to extract (default 4096)")
    parser.add_argument("--batch-size", type=int, default=256, help="images per batch (default 256)")
    parser.add_argument("--num-workers", type=int, default=max(1, min(12, (os.cpu_count() or 2) - 2)),
                        help="DataLoader workers decoding the JPEGs (default: CPUs - 2, at most 12)")
    parser.add_argument("--repeats", type=int, default=3, help="timed runs of each side (default 3)")
    parser.add_argument("--variant", default="ViT-B/32", help="Unicom variant (default ViT-B/32, 224 px)")
    parser.add_argument("--workdir", default=None, help="folder for the JPEGs and the shard (default: system temp)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)  # no progress bars on either side
    device = torch.device(args.device)
    model = build_unicom(args.variant)
    teacher = UnicomTeacher(model, name=f"unicom-{args.variant}-random", output="features", weights_sha256="0" * 64,
                            device=device, variant=args.variant)
    size = teacher.input_size
    print(f"(a) Unicom {args.variant} (random init) at {size} px, output forward_features ({teacher.dim} values), "
          f"device {device}{' ' + torch.cuda.get_device_name(device) if device.type == 'cuda' else ''}, "
          f"{'fp16 autocast' if device.type == 'cuda' else 'float32 (autocast is CUDA only)'}, batch "
          f"{args.batch_size}, {args.num_workers} DataLoader workers on {os.cpu_count()} CPUs")

    with tempfile.TemporaryDirectory(prefix="softref-bench-", dir=args.workdir) as tmp:
        work = Path(tmp)
        started = time.perf_counter()
        frame, root = _images(work, args.images, None)
        manifest = work / "images.parquet"
        write_manifest(frame, manifest, "images")
        n = len(frame)
        print(f"    {n} JPEGs generated in {time.perf_counter() - started:.1f}s "
              f"(160-320 x 240-400 px, quality 90; resized and cropped to {size} by the transform)")
        out = work / "images-0.h5"
        paths = [str(root / p) for p in frame["path"]]
        ids = frame["image_id"].tolist()

        def end_to_end() -> float:
            start = time.perf_counter()
            extract_image_features(manifest, root, teacher, out, shard=0, num_shards=1, batch_size=args.batch_size,
                                   num_workers=args.num_workers, dtype="float16")
            elapsed = time.perf_counter() - start
            out.unlink()
            return elapsed

        def decode_only() -> float:
            loader = DataLoader(_ImageFiles(paths, ids, teacher.transform), batch_size=args.batch_size, shuffle=False,
                                collate_fn=_collate, num_workers=args.num_workers,
                                pin_memory=device.type == "cuda")
            start = time.perf_counter()
            for pixels, _, errors in loader:
                if errors:
                    raise RuntimeError(errors[0])
                pixels.to(device, non_blocking=True)
            _sync(device)
            return time.perf_counter() - start

        pixels = torch.randn(args.batch_size, 3, size, size, device=device)
        batches = [min(args.batch_size, n - a) for a in range(0, n, args.batch_size)]

        def model_only() -> float:
            _sync(device)
            start = time.perf_counter()
            with teacher._inference():
                for count in batches:
                    teacher._forward(pixels[:count])
            _sync(device)
            return time.perf_counter() - start

        sides = {"end_to_end": end_to_end, "decode_only": decode_only, "model_only": model_only}
        times: dict[str, list[float]] = {name: [] for name in sides}
        for fn in sides.values():  # warm-up: kernels, page cache, worker start
            fn()
        for _ in range(args.repeats):
            for name, fn in sides.items():
                times[name].append(fn())

    rate = {name: n / statistics.median(t) for name, t in times.items()}
    labels = {"end_to_end": "(i) extract_image_features, end to end",
              "decode_only": "(ii) JPEG decoding in the workers alone",
              "model_only": "(iii) model forward alone (pixels on the device)"}
    for name, label in labels.items():
        print(f"    {label:<50} {rate[name]:9.1f} img/s  (runs: {', '.join(f'{t:.2f}s' for t in times[name])})")
    print(f"    ratio (i) / (iii): {rate['end_to_end'] / rate['model_only']:.3f}   "
          f"(ii) / (iii): {rate['decode_only'] / rate['model_only']:.3f}   "
          f"bound by {'decoding' if rate['decode_only'] < rate['model_only'] else 'the model'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
