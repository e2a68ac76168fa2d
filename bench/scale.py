"""Cost at benchmark scale, side by side in one run; one section per part of the pipeline.

Sections (``--sections``; default: all):

eval: evaluation metrics against one GEMM at COCO 5K size by default: 5,000 images and 25,000
    captions (``--images``, ``--captions``), D = 512 random unit embeddings, caption j describes
    image j // 5 (COCO pairing; ``--identity-size N`` makes N consecutive images one identity, an
    image then has 5N relevant captions and a caption N relevant images).
    (a) one GEMM: ``scores = images @ captions.T``;
    (b) ``image_text_metrics`` (its own GEMM, then R@1/5/10 in both directions);
        goal: (b) / (a) <= 1.5;
    (c) GEMM + ``map_r_precision_r1_both_ways`` (mAP@R, R-P, R@1 in both directions, the fused
        function ``eccv_scores`` uses) on the dense relevance matrix; goal: (c) / (a) <= 3;
    (d) GEMM + ``first_relevant_ranks_both_ways`` + ``recall_from_ranks``: the image-text
        evaluation's own path (the numbers of (b) and every query's rank); goal: (d) / (a) <= 1.5;
    (e) the bootstrap of the image-text rows from (d)'s ranks (1000 resamples of the images and
        of the captions; R@1/5/10 both ways and RSUM); goal: (e) / (d) <= 0.25;
    (f) GEMM + ``map_r_precision_r1_per_query_both_ways`` (the numbers of (c) and the per-query
        values, one pass); goal: (f) / (a) <= 3;
    (g) the bootstrap of the ECCV rows from (f)'s per-query values; reported beside (f);
    (h) the bootstrap's worst case: three columns of distinct per-query values for each image and
        caption (no two queries alike, so every resample draws its index matrix); beside (f);
    memory: the peak above the inputs while (b) or (c) runs, less the score matrix they create;
        goal: one block's temporaries, at most 16 bytes for each of the CHUNK_ELEMENTS (4M)
        scores of a block (64 MiB), i.e. peak <= score matrix + a chunk.
        On CUDA from ``torch.cuda.max_memory_allocated``. On the CPU from the kernel's peak
        resident set size (VmHWM of /proc/self/status, reset through /proc/self/clear_refs) in
        separate runs after the timed ones, with glibc told (``mallopt``) to serve every
        allocation of 64 KiB or more by mmap and to give the heap's free pages back first
        (``malloc_trim``), so that each tensor is resident while it lives and leaves the RSS
        when freed; where the peak cannot be reset, the RSS is sampled every millisecond
        instead (a temporary living under a millisecond may then be missed).

fetch: teacher fetch per batch of ``--batch-size`` (128) against the raw read of the same rows, on
    COCO-scale random shards built first (see "Data" below). Batches are those of the training
    sampler (``EpochBatchSampler`` over the caption-image pairs): image rows by image_id, text
    rows by text_id. The raw read is one ``os.preadv`` per distinct row of the batch, of exactly
    the row's bytes at its file offset (from the HDF5 chunk index, looked up before the clock
    starts), in file order, into one preallocated buffer: no id lookup, no ordering, no copy.
    For the text rows (ten to an HDF5 chunk) also against the raw read of the chunks holding
    them, the measure of the earlier note (what h5py has to read).
    The fetch is ``FeatureStore.get_rows(rows, dtype=None)``, what ``BatchCollator`` calls (rows in
    request order, repeats included, in the stored float16; the float32 cast is ``Batch.to``'s,
    on the device), with the batch's store rows found before the clock starts, as the collator
    finds every pair's rows once when it is built (``FeatureStore.rows``). Warm, beside it: the
    fetch by id (``get(ids)``: the id lookup in every batch, as before). The fetch checks a row for NaN/inf the first time its store reads it: the warm
    reads (rows read once before) skip the check, as a training's epochs after the first do; the
    cold reads (rows not read before) include it, as epoch 1 does. Beside them, for reference:
    the previous read path (h5py row slices, then a float32 cast on the host), and for the text
    rows the other options weighed: a memory map of the shards (a row copy each) and the whole
    text features in RAM (a numpy gather).
    Warm: every batch's rows were read once before (page cache), and each read is timed
    ``--repeats`` times, the best kept (other jobs on the cores stretch single runs at random);
    both into buffers allocated before (the read path alone) and into memory each call allocates
    (as a collator gets it, first-touch page faults included). Cold: each timed read follows
    ``posix_fadvise(DONTNEED)`` on every shard (the page cache dropped; HDF5's own metadata
    cache stays, as in training, but its chunk cache is emptied before the cold reads), each
    method on batches of its own. Goal: fetch / raw <= 1.5 for image, text and both, warm and
    cold. The rows read by the fetch are checked bit for bit against h5py's.
memory: host memory of the training loader over ``--memory-batches`` (1,000) batches in
    ``--memory-epochs`` (2) epochs, for each of ``--workers`` (0 2 4) DataLoader workers, each
    count in a fresh process: ``TrainPairs`` of the COCO-scale pairs (566,747 captions), the real
    ``BatchCollator`` with open_clip's ViT-B-32 tokenizer and the two ``FeatureStore``s,
    ``make_loader``; each batch goes through ``Batch.to("cpu")`` and is dropped (no model: the
    student lives on the GPU). Images are one small JPEG hard-linked under every image path,
    decoded by PIL and blown up to ``--pixels`` (224) square float32, so each batch carries the
    pixel bytes of a real one. PSS (proportional set size: shared pages split between the
    processes sharing them) is summed over the process and its workers
    (``/proc/<pid>/smaps_rollup``) every ``--sample-every`` batches, less its shared-memory part,
    plus what /dev/shm holds beyond its level before the run: torch passes each batch from a
    worker in an unlinked /dev/shm file, and a batch waiting in the queue is mapped by no
    process, so no PSS shows it (each shared page thus counts once). The main process does
    with each batch what it does before a GPU step: it reads every byte of its tensors, as the
    copy to the device does (the float32 cast of the teacher rows then runs on the device, so
    no host memory; on a CPU-only run the cast and the step are the host's, outside this
    measure). Goals: peak under 3 GB with 4 workers;
    flat in batches: growth from batch 100 to the last (a least-squares line through the samples,
    as the batches in flight make single samples swing) under 64 MiB for every worker count;
    flat in workers: a worker's private memory (Private_Dirty: what it allocated and what it
    copied on write, where copies of the parent's lists and dicts would land) at most the
    decoded pixels of the batch it builds plus 128 MiB, growing under 16 MiB over the run; the
    rest a worker adds are the batches it prefetches (2), shown as /dev/shm. The main process
    runs one torch thread, as the workers do.

Data (fetch, memory): COCO-scale random data in a temporary folder under ``--workdir``
(default: the system temp folder), removed when the script ends, also on Ctrl-C or SIGTERM:
manifests of ``--text-rows`` (566,747) captions of ``--image-rows`` (113,287) images, written by
``write_manifest`` and read back by ``load_pairs``; ``--shards`` (8) image-teacher shards of
``--image-dim`` (37,632) float16 and as many text shards of ``--text-dim`` (768), written by
``ShardWriter``. The default is the full COCO size: 9.4 GB on disk (8.5 GB image rows), built in
about 1.5 minutes on this machine; smaller ``--image-rows`` / ``--text-rows`` build less.

The timed parts run alternately (a, b, c, a, b, c, ...) after one warm-up each, with the same
threads; the medians of ``--repeats`` runs and their ratios are printed with PASS / FAIL per
goal. The script is a report: it exits 0 whatever the verdicts. The machine's load average
is printed before and after: with other jobs on the cores, torch's threads wait for each other
at every operation (the metrics run hundreds of them, the GEMM a few), so on a loaded machine
give ``--threads`` the number of idle cores.

    python bench/scale.py --sections eval --repeats 3
    python bench/scale.py --sections fetch memory
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import itertools
import json
import mmap
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import h5py
import numpy as np
import pandas as pd
import torch

from softref.data.manifest import file_sha256, read_images, read_texts, shard_rows, write_manifest
from softref.data.strings import StringIndex
from softref.evaluate.intervals import Bootstrap
from softref.evaluate.metrics import (
    CHUNK_ELEMENTS,
    first_relevant_ranks_both_ways,
    map_r_precision_r1_both_ways,
    map_r_precision_r1_per_query_both_ways,
    recall_from_ranks,
)
from softref.evaluate.retrieval import image_text_metrics
from softref.features import FeatureStore, ShardWriter
from softref.features.shards import read_rows, row_layout
from softref.train.data import BATCHES_IN_FLIGHT, BatchCollator, EpochBatchSampler, TrainPairs, load_pairs, make_loader

CAPTIONS_PER_IMAGE = 5
RECALL_TARGET = 1.5
ECCV_TARGET = 3.0
BOOTSTRAP_TARGET = 0.25
KS = (1, 5, 10)
CHUNK_BYTES = 16 * CHUNK_ELEMENTS
FETCH_TARGET = 1.5
MEMORY_PEAK_TARGET = 3e9  # bytes, with 4 workers
GROWTH_TARGET = 64 * 2**20  # bytes, from batch GROWTH_FROM to the last
GROWTH_FROM = 100
WORKER_RUNTIME = 128 * 2**20  # private bytes a worker may hold besides the decoded pixels of one batch
WORKER_GROWTH_TARGET = 16 * 2**20  # bytes a worker's private memory may grow over the run


def _unit(x: torch.Tensor) -> torch.Tensor:
    return x / x.norm(dim=1, keepdim=True)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _timed(fn: Callable[[], Any], device: torch.device) -> float:
    _sync(device)
    start = time.perf_counter()
    out = fn()
    _sync(device)
    elapsed = time.perf_counter() - start
    del out
    return elapsed


def _rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def _libc() -> Any:
    try:
        return ctypes.CDLL("libc.so.6")
    except OSError:
        return None


def _mmap_every_tensor() -> bool:
    """Make glibc serve allocations >= 64 KiB by mmap and return freed memory, if it is glibc."""
    libc = _libc()
    if libc is None:
        return False
    m_trim_threshold, m_mmap_threshold = -1, -3
    return bool(libc.mallopt(m_mmap_threshold, 64 * 1024)) and bool(libc.mallopt(m_trim_threshold, 128 * 1024))


def _release_free_heap() -> None:
    """Give the heap's free pages back (malloc_trim), so that reusing them shows in the RSS."""
    libc = _libc()
    if libc is not None:
        libc.malloc_trim(0)


def _reset_peak_rss() -> bool:
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")  # resets VmHWM to the current RSS
        return True
    except OSError:
        return False


def _peak_rss_bytes() -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    raise RuntimeError("/proc/self/status has no VmHWM line")


def _memory_method(device: torch.device) -> str:
    if device.type == "cuda":
        return "torch.cuda.max_memory_allocated"
    mmap = ", glibc mmap for >= 64 KiB" if _mmap_every_tensor() else ""
    return ("kernel peak RSS (VmHWM)" if _reset_peak_rss() else "RSS sampled every 1 ms") + mmap


def _peak_extra(fn: Callable[[], Any], device: torch.device) -> int:
    """Peak memory above the level before ``fn`` while it runs, in bytes (see the docstring)."""
    if device.type == "cuda":
        _sync(device)
        torch.cuda.reset_peak_memory_stats(device)
        before = torch.cuda.memory_allocated(device)
        fn()
        _sync(device)
        return torch.cuda.max_memory_allocated(device) - before
    _release_free_heap()
    if _reset_peak_rss():
        before = _rss_bytes()
        fn()
        return _peak_rss_bytes() - before
    before = _rss_bytes()
    peak = [before]
    done = threading.Event()

    def sample() -> None:
        while not done.is_set():
            peak[0] = max(peak[0], _rss_bytes())
            time.sleep(0.001)

    watcher = threading.Thread(target=sample, daemon=True)
    watcher.start()
    try:
        fn()
    finally:
        done.set()
        watcher.join()
    return max(peak[0], _rss_bytes()) - before


def _load() -> str:
    try:
        one, five, _ = os.getloadavg()
    except OSError:
        return "load average unknown"
    return f"load average {one:.2f} (1 min), {five:.2f} (5 min) on {os.cpu_count()} cores"


def _runs(times: list[float]) -> str:
    return ", ".join(f"{t:.3f}" for t in times)


def _verdict(ok: bool) -> str:
    return "PASS" if ok else "FAIL"


def section_eval(args: argparse.Namespace, device: torch.device) -> None:
    """Evaluation metrics at COCO scale against one GEMM (see the module docstring)."""
    num_images, num_captions = args.images, args.captions
    gen = torch.Generator().manual_seed(0)
    images = _unit(torch.randn(num_images, args.dim, generator=gen)).to(device)
    captions = _unit(torch.randn(num_captions, args.dim, generator=gen)).to(device)
    owner = np.minimum(np.arange(num_captions) // CAPTIONS_PER_IMAGE, num_images - 1)
    identity = np.arange(num_images) // args.identity_size
    relevant = identity[:, None] == identity[owner][None, :]  # (images, captions) bool
    if not relevant.any(axis=1).all():
        print(f"eval: skipped: with {num_captions} captions some of the {num_images} images have no caption "
              f"(need at least {CAPTIONS_PER_IMAGE * num_images} captions)")
        return
    relevant_t = torch.from_numpy(relevant)
    per_image = relevant.sum(axis=1).mean()
    per_caption = relevant.sum(axis=0).mean()

    def gemm() -> torch.Tensor:
        return images @ captions.T

    def recall() -> dict[str, Any]:
        return image_text_metrics(images, captions, relevant_t)

    def eccv() -> tuple[dict[str, float], dict[str, float]]:
        return map_r_precision_r1_both_ways(images @ captions.T, relevant_t)

    def ranks() -> tuple[np.ndarray, np.ndarray]:
        found = first_relevant_ranks_both_ways(images @ captions.T, relevant_t)
        for r in found:
            recall_from_ranks(r, KS)
        return found

    def eccv_per_query() -> tuple[Any, Any]:
        return map_r_precision_r1_per_query_both_ways(images @ captions.T, relevant_t)

    score_bytes = num_images * num_captions * 4
    print(
        f"eval: {num_images} images x {num_captions} captions, D={args.dim}, {per_image:.1f} relevant captions "
        f"per image, {per_caption:.1f} relevant images per caption, device {device}, "
        f"threads {torch.get_num_threads()}; score matrix {score_bytes / 2**20:.0f} MiB; {_load()}"
    )
    results = (recall(), eccv())  # warm-up, and the numbers
    gemm()
    rank_pair, eccv_pair = ranks(), eccv_per_query()

    def boot_recall() -> None:
        boot = Bootstrap()
        for name, r in zip(("images", "captions"), rank_pair):
            boot.means(name, {f"R@{k}": 100.0 * (r < k) for k in KS})

    def boot_eccv() -> None:
        boot = Bootstrap()
        for name, found in zip(("images", "captions"), eccv_pair):
            boot.means(name, found.per_query)

    distinct = [np.random.default_rng(0).random((n, 3)) for n in (num_images, num_captions)]

    def boot_distinct() -> None:
        boot = Bootstrap()
        for name, values in zip(("images", "captions"), distinct):
            boot.means(name, {str(c): values[:, c] for c in range(3)})

    parts = {"a": gemm, "b": recall, "c": eccv, "d": ranks, "e": boot_recall, "f": eccv_per_query, "g": boot_eccv,
             "h": boot_distinct}
    times: dict[str, list[float]] = {key: [] for key in parts}
    for _ in range(args.repeats):
        for key, fn in parts.items():
            times[key].append(_timed(fn, device))
    median = {key: statistics.median(t) for key, t in times.items()}
    ta, tb, tc = times["a"], times["b"], times["c"]
    ma, mb, mc = median["a"], median["b"], median["c"]
    exact = recall_from_ranks(rank_pair[0], KS) == {k: results[0]["i2t"][f"R@{k}"] for k in KS} \
        and (eccv_pair[0].means, eccv_pair[1].means) == results[1]
    memory_how = _memory_method(device)
    memory_b = _peak_extra(recall, device) - score_bytes
    memory_c = _peak_extra(eccv, device) - score_bytes

    metrics_b, (i2t, t2i) = results
    print(f"  {'(a) one GEMM images @ captions.T':<52} median {ma:8.3f} s  (runs: {_runs(ta)})")
    print(f"  {'(b) image_text_metrics (GEMM + R@1/5/10 both ways)':<52} median {mb:8.3f} s  (runs: {_runs(tb)})")
    print(f"  {'(c) GEMM + map_r_precision_r1_both_ways':<52} median {mc:8.3f} s  (runs: {_runs(tc)})")
    print(f"  ratio (b) / (a): {mb / ma:5.2f}  goal <= {RECALL_TARGET}  {_verdict(mb / ma <= RECALL_TARGET)}  "
          f"(i2t R@1 {metrics_b['i2t']['R@1']:.2f}, t2i R@1 {metrics_b['t2i']['R@1']:.2f}, "
          f"rsum {metrics_b['rsum']:.2f})")
    print(f"  ratio (c) / (a): {mc / ma:5.2f}  goal <= {ECCV_TARGET}  {_verdict(mc / ma <= ECCV_TARGET)}  "
          f"(i2t mAP@R {i2t['mAP@R']:.3f} R-P {i2t['R-P']:.3f} R@1 {i2t['R@1']:.2f}; "
          f"t2i mAP@R {t2i['mAP@R']:.3f} R-P {t2i['R-P']:.3f} R@1 {t2i['R@1']:.2f})")
    md, me, mf, mg = median["d"], median["e"], median["f"], median["g"]
    print(f"  {'(d) GEMM + first_relevant_ranks_both_ways':<52} median {md:8.3f} s  (runs: {_runs(times['d'])})")
    print(f"  {'(e) bootstrap of the image-text rows (B=1000)':<52} median {me:8.3f} s  (runs: {_runs(times['e'])})")
    print(f"  {'(f) GEMM + map_r_precision_r1_per_query_both_ways':<52} median {mf:8.3f} s  "
          f"(runs: {_runs(times['f'])})")
    print(f"  {'(g) bootstrap of the ECCV rows (B=1000)':<52} median {mg:8.3f} s  (runs: {_runs(times['g'])})")
    print(f"  {'(h) bootstrap, all per-query values distinct':<52} median {median['h']:8.3f} s  "
          f"(runs: {_runs(times['h'])})")
    print(f"  ratio (d) / (a): {md / ma:5.2f}  goal <= {RECALL_TARGET}  {_verdict(md / ma <= RECALL_TARGET)}")
    print(f"  ratio (e) / (d): {me / md:5.2f}  goal <= {BOOTSTRAP_TARGET}  {_verdict(me / md <= BOOTSTRAP_TARGET)}")
    print(f"  ratio (f) / (a): {mf / ma:5.2f}  goal <= {ECCV_TARGET}  {_verdict(mf / ma <= ECCV_TARGET)}  "
          f"(g) / (f): {mg / mf:5.2f}  (h) / (f): {median['h'] / mf:5.2f}")
    print(f"  per-query paths give the numbers of (b) and (c) exactly: {_verdict(exact)}")
    for name, extra in (("(b)", memory_b), ("(c)", memory_c)):
        print(f"  peak memory of {name}: score matrix + {extra / 2**20:6.1f} MiB  goal <= score matrix + a chunk "
              f"({CHUNK_BYTES / 2**20:.0f} MiB)  {_verdict(extra <= CHUNK_BYTES)}  ({memory_how})")
    print(f"  after the runs: {_load()}")


# ---------------------------------------------------------------------------------------------
# data of the fetch and memory sections
# ---------------------------------------------------------------------------------------------
_WORDS = ("a man woman dog cat bus train plate pizza table street sitting standing riding on in of "
          "the with next to near white black red blue large small two people field water grass "
          "holding looking top front background kitchen room bed surfboard wave skateboard").split()


@dataclass(frozen=True)
class ScaleData:
    """COCO-scale manifests, teacher shards and image files under ``root``."""

    root: Path
    dataset_root: Path
    images_manifest: Path
    texts_manifest: Path
    image_shards: tuple[Path, ...]
    text_shards: tuple[Path, ...]

    @classmethod
    def at(cls, root: Path, num_shards: int) -> ScaleData:
        shards = root / "features"
        return cls(root, root / "coco", root / "images.parquet", root / "texts.parquet",
                   tuple(shards / "images" / f"images-{k}.h5" for k in range(num_shards)),
                   tuple(shards / "texts" / f"texts-{k}.h5" for k in range(num_shards)))


def _write_manifests(data: ScaleData, num_images: int, num_texts: int) -> None:
    """COCO-like manifests: cocoid image ids, sentid caption ids, ~5 random-word captions an image."""
    rng = np.random.default_rng(0)
    cocoid = 9 + 5 * np.arange(num_images)
    image_ids = cocoid.astype(str)
    images = pd.DataFrame({"image_id": image_ids,
                           "path": [f"train2014/COCO_train2014_{c:012d}.jpg" for c in cocoid.tolist()],
                           "identity": image_ids, "split": "train"})
    owner = np.arange(num_texts) * num_images // num_texts
    lengths = rng.integers(8, 15, num_texts)
    words = np.asarray(_WORDS, dtype=object)[rng.integers(0, len(_WORDS), int(lengths.sum()))]
    cuts = np.cumsum(lengths)[:-1]
    captions = [" ".join(w) for w in np.split(words, cuts)]
    texts = pd.DataFrame({"text_id": (48 + 2 * np.arange(num_texts)).astype(str), "image_id": image_ids[owner],
                          "identity": image_ids[owner], "caption": captions, "split": "train"})
    write_manifest(images, data.images_manifest, "images")
    write_manifest(texts, data.texts_manifest, "texts")


def _write_shards(paths: Sequence[Path], manifest: Path, ids: list[str], modality: str, dim: int) -> None:
    """Random float16 rows for ``ids`` in id-sorted blocks, as extraction writes them.

    Row r is one of 251 random rows with r written into its first two values, so every row differs.
    """
    pool = np.random.default_rng(1).standard_normal((251, dim), dtype=np.float32).astype(np.float16)
    sha = file_sha256(manifest)
    for shard, path in enumerate(paths):
        start, stop = shard_rows(len(ids), shard, len(paths))
        attrs = {"teacher": f"random-{modality}-teacher", "weights_sha256": "0" * 64, "preprocess": "random",
                 "normalized": False, "manifest_sha256": sha, "shard": shard, "num_shards": len(paths),
                 "modality": modality}
        with ShardWriter(path, num_rows=stop - start, dim=dim, attrs=attrs) as writer:
            for a in range(start, stop, 1024):
                b = min(stop, a + 1024)
                rows = np.arange(a, b)
                block = pool[rows % len(pool)]
                block[:, 0], block[:, 1] = rows // 2048, rows % 2048
                writer.write(a - start, ids[a:b], block)
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)  # clean pages, so that posix_fadvise(DONTNEED) can drop them
        finally:
            os.close(fd)


def _link_images(data: ScaleData, paths: Sequence[str]) -> None:
    """One small JPEG, hard-linked under every image path of the manifest."""
    from PIL import Image

    pixels = np.random.default_rng(2).integers(0, 255, (32, 32, 3), dtype=np.uint8)
    links_per_file = 50_000  # ext4 allows 65,000 links to one file
    for k, path in enumerate(paths):
        source = data.root / f"image-{k // links_per_file}.jpg"
        if k % links_per_file == 0:
            Image.fromarray(pixels).save(source, quality=90)
        target = data.dataset_root / path
        target.parent.mkdir(parents=True, exist_ok=True)
        os.link(source, target)


def build_scale_data(root: Path, args: argparse.Namespace) -> ScaleData:
    """Write the manifests, the image and text teacher shards and the image files under ``root``."""
    data = ScaleData.at(root, args.shards)
    start = time.perf_counter()
    _write_manifests(data, args.image_rows, args.text_rows)
    images, texts = read_images(data.images_manifest), read_texts(data.texts_manifest)
    _write_shards(data.image_shards, data.images_manifest, images["image_id"].tolist(), "images", args.image_dim)
    _write_shards(data.text_shards, data.texts_manifest, texts["text_id"].tolist(), "texts", args.text_dim)
    _link_images(data, images["path"].tolist())
    size = sum(p.stat().st_size for p in data.image_shards + data.text_shards)
    print(f"data: {len(images)} images, {len(texts)} captions; shards {size / 1e9:.2f} GB "
          f"({args.shards} image shards of {args.image_dim}-d float16, {args.shards} text shards of "
          f"{args.text_dim}-d float16) in {root}, built in {time.perf_counter() - start:.0f} s")
    return data


@contextlib.contextmanager
def scale_data(args: argparse.Namespace) -> Iterator[ScaleData]:
    """The data of the fetch and memory sections in a temporary folder, removed on any exit."""
    root = Path(tempfile.mkdtemp(prefix="softref-scale-", dir=args.workdir))

    def terminate(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt(f"signal {signum}")

    previous = signal.signal(signal.SIGTERM, terminate)
    try:
        yield build_scale_data(root, args)
    finally:
        shutil.rmtree(root, ignore_errors=True)
        signal.signal(signal.SIGTERM, previous)
        print(f"data: removed {root}")


# ---------------------------------------------------------------------------------------------
# fetch
# ---------------------------------------------------------------------------------------------
class _Rows:
    """The rows of one store's shards as the bench reads them: by raw preadv, h5py, mmap or RAM."""

    def __init__(self, paths: Sequence[Path]) -> None:
        self.paths = list(paths)
        self.files = [h5py.File(p, "r") for p in self.paths]
        self.datasets = [f["features"] for f in self.files]
        self.layouts = [row_layout(d) for d in self.datasets]
        if any(layout is None for layout in self.layouts):
            raise RuntimeError(f"bench: a shard of {self.paths[0].parent} has no plain row layout")
        ids = [i for f in self.files for i in f["ids"].asstr()[:].tolist()]
        self.index = StringIndex(ids)
        self.starts = np.cumsum([0] + [len(d) for d in self.datasets])
        self.fds = [os.open(p, os.O_RDONLY) for p in self.paths]
        self.row_bytes = self.layouts[0].row_bytes
        self.maps: list[np.ndarray] = []
        self.map_files()
        self.ram: np.ndarray | None = None

    def reopen(self) -> None:
        for f in self.files:
            f.close()
        self.files = [h5py.File(p, "r") for p in self.paths]
        self.datasets = [f["features"] for f in self.files]

    def plan(self, ids: Sequence[str]) -> list[tuple[int, int]]:
        """(descriptor, byte offset) of each distinct row of ``ids``, in file order (not timed)."""
        rows = np.unique(self.index.lookup(ids))
        files = np.searchsorted(self.starts, rows, side="right") - 1
        plan = []
        for i in np.unique(files).tolist():
            offsets = np.sort(self.layouts[i].offsets(rows[files == i] - self.starts[i]))
            plan += [(self.fds[i], int(o)) for o in offsets.tolist()]
        return plan

    def chunk_plan(self, ids: Sequence[str]) -> tuple[list[tuple[int, int]], int]:
        """(descriptor, byte offset) of each distinct HDF5 chunk holding a row of ``ids``, in file
        order, and the chunk size: what h5py reads for those rows (not timed)."""
        rows = np.unique(self.index.lookup(ids))
        files = np.searchsorted(self.starts, rows, side="right") - 1
        plan = []
        for i in np.unique(files).tolist():
            layout = self.layouts[i]
            chunks = np.unique((rows[files == i] - self.starts[i]) // layout.rows_per_chunk)
            plan += [(self.fds[i], int(o)) for o in np.sort(layout.chunk_offsets[chunks]).tolist()]
        return plan, self.layouts[0].rows_per_chunk * self.row_bytes

    def raw(self, plan: list[tuple[int, int]], buffer: np.ndarray) -> None:
        """The floor: one preadv of each row's bytes into a preallocated buffer."""
        view, size = memoryview(buffer.reshape(-1)), self.row_bytes
        for k, (fd, offset) in enumerate(plan):
            os.preadv(fd, [view[k * size : (k + 1) * size]], offset)

    def h5py_then_cast(self, ids: Sequence[str]) -> np.ndarray:
        """The previous fetch: h5py slices per row of each file, then a float32 cast on the host."""
        uniq, inverse = np.unique(self.index.lookup(ids), return_inverse=True)
        files = np.searchsorted(self.starts, uniq, side="right") - 1
        parts = [read_rows(self.datasets[i], uniq[files == i] - self.starts[i]) for i in np.unique(files).tolist()]
        return np.concatenate(parts)[inverse.reshape(-1)].astype(np.float32)

    def map_files(self) -> None:
        """(Re)map every shard: a fresh mapping has no page of this process yet."""
        self.maps = [np.frombuffer(mmap.mmap(fd, 0, prot=mmap.PROT_READ), dtype=np.uint8) for fd in self.fds]

    def mapped(self, ids: Sequence[str]) -> np.ndarray:
        """A memory map of each shard (made before, untimed): one row copy per requested row."""
        positions = self.index.lookup(ids)
        files = np.searchsorted(self.starts, positions, side="right") - 1
        out = np.empty((len(ids), self.row_bytes), dtype=np.uint8)
        rb = self.row_bytes
        for k, (i, row) in enumerate(zip(files.tolist(), (positions - self.starts[files]).tolist())):
            offset = int(self.layouts[i].offsets(np.asarray([row]))[0])
            out[k] = self.maps[i][offset : offset + rb]
        return out.view(self.layouts[0].dtype)

    def in_ram(self, ids: Sequence[str]) -> np.ndarray:
        """Every row held in RAM (loaded once, not timed): one numpy gather."""
        if self.ram is None:
            self.ram = np.concatenate([d[:] for d in self.datasets])
        return self.ram[self.index.lookup(ids)]

    def drop_cache(self) -> None:
        """Drop the shards' pages from the page cache (mapped pages stay: unmap them first)."""
        self.maps = []
        for fd in self.fds:
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        self.map_files()

    def close(self) -> None:
        for f in self.files:
            f.close()
        for fd in self.fds:
            os.close(fd)
        self.maps, self.ram = [], None


def _sampler_batches(data: ScaleData, batch_size: int, count: int) -> list[tuple[list[str], list[str]]]:
    """(image_ids, text_ids) of the first ``count`` batches of the training sampler's epoch 1."""
    pairs = load_pairs(data.images_manifest, data.texts_manifest, "train")
    sampler = EpochBatchSampler(len(pairs), batch_size, seed=0)
    sampler.set_epoch(1)
    image_ids, text_ids = pairs["image_id"].to_numpy(), pairs["text_id"].to_numpy()
    return [(image_ids[b].tolist(), text_ids[b].tolist()) for b in itertools.islice(sampler, count)]


def _time(fn: Callable[[], Any]) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def _fetch_methods(image: _Rows, text: _Rows, stores: tuple[FeatureStore, FeatureStore],
                   ids: tuple[list[str], list[str]], cold: bool) -> dict[tuple[str, str], Callable[[], Any]]:
    """The timed reads of one batch, by (rows, method).

    ``raw`` / ``fetch`` read into buffers allocated before (the read path alone); ``raw new`` /
    ``fetch new`` into memory allocated by the call, as a collator's fetch returns it (its
    first-touch page faults included). Cold reads use the buffers only: the disk dominates.
    """
    image_store, text_store = stores
    image_ids, text_ids = ids
    image_plan, text_plan = image.plan(image_ids), text.plan(text_ids)
    image_rows, text_rows = image_store.rows(image_ids), text_store.rows(text_ids)  # the collator's, found once
    image_buf = np.empty((len(image_plan), image.row_bytes), np.uint8)
    text_buf = np.empty((len(text_plan), text.row_bytes), np.uint8)
    image_out = np.empty((len(image_ids), image_store.dim), image_store.dtype)
    chunk_plan, chunk_bytes = text.chunk_plan(text_ids)
    chunk_buf = np.empty((len(chunk_plan), chunk_bytes), np.uint8)
    chunk_view = memoryview(chunk_buf.reshape(-1))

    def raw_chunks() -> None:
        for k, (fd, offset) in enumerate(chunk_plan):
            os.preadv(fd, [chunk_view[k * chunk_bytes : (k + 1) * chunk_bytes]], offset)

    text_out = np.empty((len(text_ids), text_store.dim), text_store.dtype)

    def raw_new(rows: _Rows, plan: list[tuple[int, int]]) -> np.ndarray:
        buffer = np.empty((len(plan), rows.row_bytes), np.uint8)
        rows.raw(plan, buffer)
        return buffer

    methods: dict[tuple[str, str], Callable[[], Any]] = {
        ("image", "raw"): lambda: image.raw(image_plan, image_buf),
        ("image", "fetch"): lambda: image_store.get_rows(image_rows, dtype=None, out=image_out),
        ("image", "h5py"): lambda: image.h5py_then_cast(image_ids),
        ("text", "raw"): lambda: text.raw(text_plan, text_buf),
        ("text", "fetch"): lambda: text_store.get_rows(text_rows, dtype=None, out=text_out),
        ("text", "h5py"): lambda: text.h5py_then_cast(text_ids),
        ("text", "mmap"): lambda: text.mapped(text_ids),
        ("text", "raw chunks"): raw_chunks,
        ("both", "raw"): lambda: (image.raw(image_plan, image_buf), text.raw(text_plan, text_buf)),
        ("both", "fetch"): lambda: (image_store.get_rows(image_rows, dtype=None, out=image_out),
                                    text_store.get_rows(text_rows, dtype=None, out=text_out)),
        ("both", "h5py"): lambda: (image.h5py_then_cast(image_ids), text.h5py_then_cast(text_ids)),
    }
    if not cold:
        methods.update({
            ("image", "raw new"): lambda: raw_new(image, image_plan),
            ("image", "fetch new"): lambda: image_store.get_rows(image_rows, dtype=None),
            ("image", "by id"): lambda: image_store.get(image_ids, dtype=None, out=image_out),
            ("text", "raw new"): lambda: raw_new(text, text_plan),
            ("text", "fetch new"): lambda: text_store.get_rows(text_rows, dtype=None),
            ("text", "by id"): lambda: text_store.get(text_ids, dtype=None, out=text_out),
            ("text", "ram"): lambda: text.in_ram(text_ids),
            ("both", "raw new"): lambda: (raw_new(image, image_plan), raw_new(text, text_plan)),
            ("both", "fetch new"): lambda: (image_store.get_rows(image_rows, dtype=None),
                                            text_store.get_rows(text_rows, dtype=None)),
            ("both", "by id"): lambda: (image_store.get(image_ids, dtype=None, out=image_out),
                                        text_store.get(text_ids, dtype=None, out=text_out)),
        })
    return methods


def _fetch_times(image: _Rows, text: _Rows, stores: tuple[FeatureStore, FeatureStore],
                 batches: list[tuple[list[str], list[str]]], cold: bool,
                 repeats: int = 1) -> dict[tuple[str, str], list[float]]:
    """Per-batch seconds of every method; the order of the methods rotates from batch to batch.

    Warm: each method reads the batch once untimed first, then each is timed on it, the best of
    ``repeats`` runs (on a shared machine other jobs stretch a run at random). Cold: the
    page cache of every shard is dropped before each timed read, and each method reads
    batches of its own (``len(batches)`` must be a multiple of the number of methods), so that
    no cache of a reader (HDF5 keeps recently read chunks) holds rows another method read.
    """
    times: dict[tuple[str, str], list[float]] = {}
    count = len(_fetch_methods(image, text, stores, batches[0], cold))
    rounds = [[ids] * count for ids in batches] if not cold else \
        [batches[k : k + count] for k in range(0, len(batches) - count + 1, count)]
    for b, round_batches in enumerate(rounds):
        methods = [_fetch_methods(image, text, stores, ids, cold) for ids in round_batches]
        keys = list(methods[0])
        turn = [(k, key) for k, key in enumerate(keys)]
        turn = turn[b % count:] + turn[: b % count]
        if not cold:
            for k, key in turn:
                methods[k][key]()
        for k, key in turn:
            if cold:
                image.drop_cache()
                text.drop_cache()
            runs = 1 if cold else repeats
            times.setdefault(key, []).append(min(_time(methods[k][key]) for _ in range(runs)))
    return times


def _identical_rows(image: _Rows, text: _Rows, stores: tuple[FeatureStore, FeatureStore],
                    batches: list[tuple[list[str], list[str]]]) -> int:
    """How many batches the fetch returns bit for bit as h5py reads them (float16, request order)."""
    same = 0
    for image_ids, text_ids in batches:
        ok = True
        for rows, store, ids in ((image, stores[0], image_ids), (text, stores[1], text_ids)):
            got = store.get_rows(store.rows(ids), dtype=None)
            ok &= got.dtype == np.float16 and np.array_equal(got.view(np.uint16),
                                                             rows.h5py_then_cast(ids).astype(np.float16).view(np.uint16))
        same += int(ok)
    return same


def _print_fetch(label: str, times: dict[tuple[str, str], list[float]], row_bytes: dict[str, int]) -> None:
    med = {key: statistics.median(value) for key, value in times.items()}
    pairs = [("raw", "fetch", "into buffers")] + ([("raw new", "fetch new", "into new memory")]
                                                  if ("image", "raw new") in med else [])
    print(f"  {label}: median over {len(next(iter(times.values())))} batches of ms per batch; goal fetch / raw "
          f"<= {FETCH_TARGET}")
    head = "".join(f" | {what + ': raw, fetch, ratio':<37}" for _, _, what in pairs)
    print(f"    {'rows':<22}{head} | h5py+cast (before)")
    for kind, what in (("image", f"image ({row_bytes['image']:,} B a row)"),
                       ("text", f"text ({row_bytes['text']:,} B a row)"), ("both", "image + text")):
        cells = ""
        for raw_key, fetch_key, _ in pairs:
            raw, fetch = med[kind, raw_key], med[kind, fetch_key]
            cells += f" | {raw * 1e3:7.2f} {fetch * 1e3:7.2f} {fetch / raw:6.2f}x {_verdict(fetch / raw <= FETCH_TARGET):<12}"
        before = med[kind, "h5py"]
        print(f"    {what:<22}{cells} | {before * 1e3:7.2f} ({before / med[kind, 'raw']:.1f}x raw)")
    options = [("preadv (the fetch)", "fetch"), ("mmap, a copy a row", "mmap"), ("in RAM, a gather", "ram"),
               ("h5py slices + cast", "h5py")]
    shown = ", ".join(f"{name} {med['text', key] * 1e3:.2f} ms ({med['text', key] / med['text', 'raw']:.2f}x raw)"
                      for name, key in options if ("text", key) in med)
    print(f"    text options: {shown}")
    if ("image", "by id") in med:
        by_id = ", ".join(f"{kind} {med[kind, 'by id'] * 1e3:.2f} ms ({med[kind, 'by id'] / med[kind, 'raw']:.2f}x raw)"
                          for kind in ("image", "text", "both"))
        print(f"    by id (get(ids), the id lookup in every batch; the collator finds rows once): {by_id}")
    chunks = med["text", "raw chunks"]
    print(f"    text against the raw read of the HDF5 chunks holding its rows (what h5py reads: "
          f"{row_bytes['text_chunk']:,} B a chunk): raw chunks {chunks * 1e3:.2f} ms, fetch / raw chunks "
          f"{med['text', 'fetch'] / chunks:.2f}x  {_verdict(med['text', 'fetch'] / chunks <= FETCH_TARGET)}")


def section_fetch(args: argparse.Namespace, device: torch.device) -> None:
    """Teacher fetch per batch against the raw read of the same rows (see the module docstring)."""
    data: ScaleData = args.scale_data
    cold_methods = 11  # the cold reads of _fetch_methods, each on batches of its own
    batches = _sampler_batches(data, args.batch_size, args.fetch_batches + args.cold_batches * cold_methods)
    image, text = _Rows(data.image_shards), _Rows(data.text_shards)
    stores = (FeatureStore(data.image_shards), FeatureStore(data.text_shards))
    ram_bytes = len(text.index) * text.row_bytes
    print(f"fetch: batches of {args.batch_size} pairs from the training sampler, {args.fetch_batches} warm and "
          f"{args.cold_batches} cold per method; image rows {len(image.index)} x {args.image_dim}, text rows "
          f"{len(text.index)} x {args.text_dim}, float16, {args.shards} shards each; {_load()}")
    try:
        warm = _fetch_times(image, text, stores, batches[: args.fetch_batches], cold=False, repeats=args.repeats)
        # Fresh h5py handles: no chunk the warm reads left in HDF5's chunk cache (8 MiB a dataset).
        image.reopen()
        text.reopen()
        cold = _fetch_times(image, text, stores, batches[args.fetch_batches :], cold=True)
        same = _identical_rows(image, text, stores, batches[: args.fetch_batches])
    finally:
        image.close()
        text.close()
        for store in stores:
            store.close()
    row_bytes = {"image": image.row_bytes, "text": text.row_bytes,
                 "text_chunk": text.layouts[0].rows_per_chunk * text.row_bytes}
    _print_fetch(f"warm (rows in the page cache; per batch the best of {args.repeats} runs)", warm, row_bytes)
    if cold[next(iter(cold))]:
        _print_fetch("cold (page cache dropped before each read)", cold, row_bytes)
    print(f"  text features in RAM would hold {ram_bytes / 1e9:.2f} GB per process tree")
    print(f"  fetched rows identical (bit for bit, float16, request order) to h5py's: {same} of "
          f"{args.fetch_batches} batches  {_verdict(same == args.fetch_batches)}")
    print(f"  after the runs: {_load()}")


# ---------------------------------------------------------------------------------------------
# memory
# ---------------------------------------------------------------------------------------------
_PSS_KINDS = ("Pss", "Pss_Shmem", "Private_Dirty")


def _pss_bytes(pid: int) -> dict[str, int]:
    """Of ``pid``, in bytes: PSS, its shared-memory part (batches in flight) and the pages it alone
    has written (Private_Dirty: its own allocations and its copies of pages copied on write)."""
    found = {}
    with open(f"/proc/{pid}/smaps_rollup") as f:
        for line in f:
            key, _, value = line.partition(":")
            if key in _PSS_KINDS:
                found[key] = int(value.split()[0]) * 1024
    if "Pss" not in found:
        raise RuntimeError(f"/proc/{pid}/smaps_rollup has no Pss line")
    return found


def _descendants(pid: int) -> list[int]:
    """``pid``'s child processes and theirs (from /proc/<pid>/task/<tid>/children)."""
    found = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        with contextlib.suppress(OSError):
            found += [int(c) for c in (task / "children").read_text().split()]
    return found + [d for c in found for d in _descendants(c)]


def _shm_used() -> int:
    """Bytes in use in /dev/shm, where torch keeps the tensors of batches on their way from a worker
    (unlinked files: a batch in the queue is mapped by no process, so no PSS shows it)."""
    stat = os.statvfs("/dev/shm")
    return (stat.f_blocks - stat.f_bfree) * stat.f_frsize


def _tree_memory(shm_base: int) -> dict[str, int]:
    """Memory of this process and its descendants: ``total`` = their PSS less its shared-memory
    part, plus /dev/shm's growth since ``shm_base`` (so each page of a batch in flight counts once,
    mapped or queued); also ``shm`` (that growth), ``workers_private`` (the workers' Private_Dirty
    summed) and ``procs``."""
    pids = [os.getpid()] + _descendants(os.getpid())
    total = dict.fromkeys(_PSS_KINDS, 0) | {"procs": len(pids), "workers_private": 0}
    for k, pid in enumerate(pids):
        with contextlib.suppress(OSError):  # a worker that just exited
            pss = _pss_bytes(pid)
            for key, value in pss.items():
                total[key] += value
            if k > 0:
                total["workers_private"] += pss.get("Private_Dirty", 0)
    total["shm"] = max(0, _shm_used() - shm_base)
    total["total"] = total["Pss"] - total.get("Pss_Shmem", 0) + total["shm"]
    return total


class _FirstBatches(torch.utils.data.Sampler):
    """The first ``count`` batches of each epoch of ``sampler`` (``set_epoch`` passes through)."""

    def __init__(self, sampler: EpochBatchSampler, count: int) -> None:
        self.sampler, self.count = sampler, count

    def set_epoch(self, epoch: int) -> None:
        self.sampler.set_epoch(epoch)

    def __iter__(self) -> Iterator[list[int]]:
        return itertools.islice(iter(self.sampler), self.count)

    def __len__(self) -> int:
        return min(self.count, len(self.sampler))


class _Pixels:
    """PIL image -> (3, size, size) float32 in [0, 1], the image tiled to size (cheap, real bytes)."""

    def __init__(self, size: int) -> None:
        self.size = size

    def __call__(self, image: Any) -> torch.Tensor:
        small = torch.from_numpy(np.asarray(image, dtype=np.uint8).copy()).permute(2, 0, 1).float().div_(255)
        h, w = small.shape[1:]
        return small.repeat(1, -(-self.size // h), -(-self.size // w))[:, : self.size, : self.size].contiguous()


def memory_child(args: argparse.Namespace) -> dict[str, Any]:
    """One worker count in this fresh process: PSS of the process tree over the loader's batches.

    One torch thread, as in the DataLoader's workers: the process does no model work, and on a
    shared machine more threads only wait for each other.
    """
    import open_clip

    torch.set_num_threads(1)

    data = ScaleData.at(Path(args.data_root), args.shards)
    pairs = load_pairs(data.images_manifest, data.texts_manifest, "train")
    dataset = TrainPairs(pairs, data.dataset_root, _Pixels(args.pixels))
    del pairs
    stores = FeatureStore(data.image_shards), FeatureStore(data.text_shards)
    collator = BatchCollator(open_clip.get_tokenizer("ViT-B-32"), *stores, pairs=dataset)
    per_epoch = -(-args.memory_batches // args.memory_epochs)
    sampler = _FirstBatches(EpochBatchSampler(len(dataset), args.batch_size, seed=0), per_epoch)
    loader = make_loader(dataset, sampler, collator, num_workers=args.memory_child)
    shm_base = _shm_used()
    setup = _tree_memory(shm_base)
    samples: list[dict[str, int]] = []
    done, start, batch_bytes, pixel_bytes = 0, time.perf_counter(), 0, 0
    for epoch in range(1, args.memory_epochs + 1):
        sampler.set_epoch(epoch)
        for batch in loader:
            tensors = (batch.images, batch.tokens, batch.image_index, batch.teacher_image, batch.teacher_text)
            batch_bytes = max(batch_bytes, sum(t.numel() * t.element_size() for t in tensors))
            pixel_bytes = batch.images.numel() * batch.images.element_size()
            for t in tensors:
                t.sum()  # read every byte, as the copy to the GPU does (the float32 cast then runs there)
            done += 1
            if done == 1 or done % args.sample_every == 0:
                samples.append({"batch": done, **_tree_memory(shm_base)})
            if done >= args.memory_batches:
                break
    seconds = time.perf_counter() - start
    del loader
    for store in stores:
        store.close()
    return {"workers": args.memory_child, "setup": setup, "samples": samples, "batches": done, "seconds": seconds,
            "batch_bytes": batch_bytes, "pixel_bytes": pixel_bytes, "shm_base": shm_base}


def _memory_run(args: argparse.Namespace, workers: int) -> dict[str, Any]:
    """Run :func:`memory_child` for ``workers`` in a fresh Python process; its JSON result."""
    command = [sys.executable, os.path.abspath(__file__), "--memory-child", str(workers),
               "--data-root", str(args.scale_data.root)]
    for flag in ("shards", "batch_size", "memory_batches", "memory_epochs", "pixels", "sample_every"):
        command += [f"--{flag.replace('_', '-')}", str(getattr(args, flag))]
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"memory run with {workers} workers failed ({done.returncode}):\n{done.stderr[-4000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def _growth(samples: list[dict[str, int]], key: str = "total") -> float:
    """Growth of ``key`` from batch GROWTH_FROM to the last sample: a least-squares line through the
    samples times the span (in-flight batches make single samples swing by several batches)."""
    later = [s for s in samples if s["batch"] >= GROWTH_FROM] or samples
    if len(later) < 2:
        return 0.0
    x = np.asarray([s["batch"] for s in later], dtype=np.float64)
    slope = np.polyfit(x, np.asarray([s[key] for s in later], dtype=np.float64), 1)[0]
    return float(slope * (x[-1] - x[0]))


def _memory_row(workers: int, result: dict[str, Any]) -> dict[str, float]:
    """Print one worker count's line; its medians (total, /dev/shm, private per worker) and peak."""
    samples = result["samples"]
    later = [s for s in samples if s["batch"] >= GROWTH_FROM] or samples
    row = {"median": statistics.median(s["total"] for s in later), "peak": max(s["total"] for s in samples),
           "shm": statistics.median(s["shm"] for s in later),
           "private": statistics.median(s["workers_private"] for s in later) / max(workers, 1)}
    growth, private_growth = _growth(samples), _growth(samples, "workers_private") / max(workers, 1)
    private_ok = workers == 0 or (row["private"] <= result["pixel_bytes"] + WORKER_RUNTIME
                                  and private_growth <= WORKER_GROWTH_TARGET)
    print(f"  {workers:>7} {result['setup']['total'] / 1e9:6.2f}G {row['median'] / 1e9:6.2f}G {row['peak'] / 1e9:6.2f}G | "
          f"{growth / 2**20:+6.0f}M {_verdict(growth <= GROWTH_TARGET):<4} | {row['shm'] / 2**20:8.0f}M | "
          f"{row['private'] / 2**20:10.0f}M {private_growth / 2**20:+6.0f}M {_verdict(private_ok):<4} | "
          f"{result['seconds'] / result['batches']:.3f}")
    return row


def section_memory(args: argparse.Namespace, device: torch.device) -> None:
    """Host memory of the training loader over batches, for 0, 2 and 4 workers (module docstring)."""
    print(f"memory: {args.memory_batches} batches of {args.batch_size} in {args.memory_epochs} epochs, "
          f"3x{args.pixels}x{args.pixels} float32 pixels per image, workers {args.workers}; PSS summed over the "
          f"process and its workers, shared memory counted from /dev/shm ({_shm_used() / 2**20:.0f} MiB in use "
          f"before), every {args.sample_every} batches; {_load()}")
    print(f"  goals: growth (batch {GROWTH_FROM} to the last) <= {GROWTH_TARGET / 2**20:.0f} MiB; a worker's private "
          f"memory <= the pixels of one batch + {WORKER_RUNTIME / 2**20:.0f} MiB, growing <= "
          f"{WORKER_GROWTH_TARGET / 2**20:.0f} MiB; peak with 4 workers < {MEMORY_PEAK_TARGET / 1e9:.0f} GB")
    print(f"  {'workers':>7} {'setup':>7} {'median':>7} {'peak':>7} | {'growth':>12} | {'/dev/shm':>9} | "
          f"{'private/worker, growth':>23} | s/batch")
    rows, results = {}, {}
    for workers in args.workers:
        results[workers] = _memory_run(args, workers)
        rows[workers] = _memory_row(workers, results[workers])
    if 4 in rows:
        print(f"  peak with 4 workers: {rows[4]['peak'] / 1e9:.2f} GB  goal < {MEMORY_PEAK_TARGET / 1e9:.0f} GB  "
              f"{_verdict(rows[4]['peak'] < MEMORY_PEAK_TARGET)}")
    if 0 in rows and len(rows) > 1:
        most = max(rows)
        per_worker = (rows[most]["median"] - rows[0]["median"]) / most
        shm, private = rows[most]["shm"] / most, rows[most]["private"]
        print(f"  per worker: (median with {most} - median with 0) / {most} = {per_worker / 2**20:.0f} MiB: "
              f"{shm / 2**20:.0f} MiB of batches in /dev/shm (a batch is {results[most]['batch_bytes'] / 2**20:.0f} "
              f"MiB; about {BATCHES_IN_FLIGHT} ready in all), {private / 2**20:.0f} MiB its private pages, "
              f"{(per_worker - shm - private) / 2**20:.0f} MiB the rest")
    print(f"  after the runs: {_load()}")

SECTIONS: dict[str, Callable[[argparse.Namespace, torch.device], None]] = {
    "eval": section_eval, "fetch": section_fetch, "memory": section_memory,
}
NEEDS_DATA = ("fetch", "memory")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sections", nargs="+", choices=sorted(SECTIONS), default=sorted(SECTIONS),
                        help="sections to run (default: all)")
    parser.add_argument("--images", type=int, default=5000, help="eval: images (default 5000, COCO 5K)")
    parser.add_argument("--captions", type=int, default=25000, help="eval: captions (default 25000)")
    parser.add_argument("--dim", type=int, default=512, help="eval: embedding dimension (default 512)")
    parser.add_argument("--identity-size", type=int, default=1,
                        help="eval: consecutive images per identity (default 1: the COCO pairing)")
    parser.add_argument("--repeats", type=int, default=3, help="timed runs of each part (default 3)")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    parser.add_argument("--device", default="cpu", help="cpu or cuda (default cpu)")
    _data_arguments(parser)
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.memory_child is not None:
        print(json.dumps(memory_child(args)))
        return 0
    device = torch.device(args.device)
    with contextlib.ExitStack() as stack:
        if any(name in NEEDS_DATA for name in args.sections):
            args.scale_data = stack.enter_context(scale_data(args))
        for name in args.sections:
            SECTIONS[name](args, device)
    return 0


def _data_arguments(parser: argparse.ArgumentParser) -> None:
    """The flags of the fetch and memory sections (and the internal ones of a memory run)."""
    add = parser.add_argument
    add("--workdir", default=None, help="fetch/memory: folder for the temporary data (default: the system temp)")
    add("--image-rows", type=int, default=113287, help="fetch/memory: images (default 113287, COCO train)")
    add("--image-dim", type=int, default=37632, help="fetch/memory: image teacher dim (default 37632, Unicom tokens)")
    add("--text-rows", type=int, default=566747, help="fetch/memory: captions (default 566747, COCO train)")
    add("--text-dim", type=int, default=768, help="fetch/memory: text teacher dim (default 768)")
    add("--shards", type=int, default=8, help="fetch/memory: shards per teacher (default 8)")
    add("--batch-size", type=int, default=128, help="fetch/memory: pairs per batch (default 128)")
    add("--fetch-batches", type=int, default=40, help="fetch: warm batches (default 40)")
    add("--cold-batches", type=int, default=10, help="fetch: cold batches (default 10)")
    add("--memory-batches", type=int, default=1000, help="memory: batches per worker count (default 1000)")
    add("--memory-epochs", type=int, default=2, help="memory: epochs the batches are spread over (default 2)")
    add("--workers", type=int, nargs="+", default=[0, 2, 4], help="memory: worker counts (default 0 2 4)")
    add("--pixels", type=int, default=224, help="memory: image side in pixels (default 224)")
    add("--sample-every", type=int, default=25, help="memory: batches between PSS samples (default 25)")
    add("--memory-child", type=int, default=None, help=argparse.SUPPRESS)
    add("--data-root", default=None, help=argparse.SUPPRESS)


if __name__ == "__main__":
    sys.exit(main())
