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

The timed parts run alternately (a, b, c, a, b, c, ...) after one warm-up each, with the same
threads; the medians of ``--repeats`` runs and their ratios are printed with PASS / FAIL per
goal. The script is a report: it exits 0 whatever the verdicts. The machine's load average
is printed before and after: with other jobs on the cores, torch's threads wait for each other
at every operation (the metrics run hundreds of them, the GEMM a few), so on a loaded machine
give ``--threads`` the number of idle cores.

    python bench/scale.py --sections eval --repeats 3
"""

from __future__ import annotations

import argparse
import ctypes
import os
import statistics
import sys
import threading
import time
from collections.abc import Callable
from typing import Any

import numpy as np
import torch

from softref.evaluate.intervals import Bootstrap
from softref.evaluate.metrics import (
    CHUNK_ELEMENTS,
    first_relevant_ranks_both_ways,
    map_r_precision_r1_both_ways,
    map_r_precision_r1_per_query_both_ways,
    recall_from_ranks,
)
from softref.evaluate.retrieval import image_text_metrics

CAPTIONS_PER_IMAGE = 5
RECALL_TARGET = 1.5
ECCV_TARGET = 3.0
BOOTSTRAP_TARGET = 0.25
KS = (1, 5, 10)
CHUNK_BYTES = 16 * CHUNK_ELEMENTS


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


SECTIONS: dict[str, Callable[[argparse.Namespace, torch.device], None]] = {"eval": section_eval}


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
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    for name in args.sections:
        SECTIONS[name](args, device)
    return 0


if __name__ == "__main__":
    sys.exit(main())
