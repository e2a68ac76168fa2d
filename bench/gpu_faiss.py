"""FAISS on the GPU against FAISS on the CPU for the MMRef neighbour index, at reference size.

The references of ``configs/mmref-person.yaml`` are one unit vector per training identity:
11,003 CUHK-PEDES identities (``--rows``) of 512 (Unicom embedding) + 768 (all-mpnet-base-v2)
= 1,280 values (``--dim``). Per index kind (``--kinds``: flat, the preset's, and ivf),
``softref.references.index.make_index`` builds it (on the CPU, and on GPU 0 with ``gpu=True``)
and every reference searches its k + 1 nearest (``--k`` 10, plus itself), as
``build_neighbour_index`` lists neighbours; build and search times are the medians of
``--repeats`` runs after a warm-up. Whether the two agree is reported too: the flat index's
neighbour lists must match except where scores tie within float rounding.

Only a FAISS with GPU support (``faiss-gpu`` installed in place of ``faiss-cpu``) that sees a
GPU runs the GPU side; otherwise the script says so and times the CPU alone.

    python bench/gpu_faiss.py --rows 11003 --dim 1280
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time

import faiss
import numpy as np

from softref.references.index import gpu_available, make_index


def _unit_rows(rows: int, dim: int) -> np.ndarray:
    x = np.random.default_rng(0).standard_normal((rows, dim)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def _timed(kind: str, vectors: np.ndarray, k: int, gpu: bool, repeats: int) -> tuple[float, float, np.ndarray]:
    """Median build and search seconds of ``repeats`` runs (after a warm-up); the labels found."""
    builds, searches, labels = [], [], None
    for run in range(repeats + 1):
        start = time.perf_counter()
        index = make_index(vectors, kind=kind, gpu=gpu)
        built = time.perf_counter()
        _, labels = index.search(vectors, k + 1)
        done = time.perf_counter()
        if run:  # the first run warms up (GPU resources, kernels, threads)
            builds.append(built - start)
            searches.append(done - built)
        del index
    assert labels is not None
    return statistics.median(builds), statistics.median(searches), labels


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=11003, help="references (default 11003, CUHK-PEDES train)")
    parser.add_argument("--dim", type=int, default=1280, help="reference dimension (default 1280 = 512 + 768)")
    parser.add_argument("--k", type=int, default=10, help="neighbours per reference (default 10)")
    parser.add_argument("--kinds", nargs="+", choices=["flat", "ivf"], default=["flat", "ivf"])
    parser.add_argument("--repeats", type=int, default=3, help="timed runs per side (default 3)")
    args = parser.parse_args(argv)
    gpu_build = hasattr(faiss, "StandardGpuResources")
    gpu = gpu_available()
    print(f"(d) FAISS {faiss.__version__}: {args.rows} references x {args.dim}, {args.k} + 1 nearest of each, "
          f"CPU threads {faiss.omp_get_max_threads()}; GPU support in this FAISS: "
          f"{'yes' if gpu_build else 'no (faiss-cpu is installed; faiss-gpu replaces it)'}"
          + (f", GPUs seen: {faiss.get_num_gpus()}" if gpu_build else ""))
    if not gpu:
        print("    faiss-gpu against faiss-cpu: not measured here (no FAISS GPU support or no GPU); the CPU alone:")
    vectors = _unit_rows(args.rows, args.dim)
    for kind in args.kinds:
        cpu_build, cpu_search, cpu_labels = _timed(kind, vectors, args.k, False, args.repeats)
        line = f"    {kind:<4} cpu: build {cpu_build:7.3f} s, search {cpu_search:7.3f} s"
        if gpu:
            gpu_build_s, gpu_search, gpu_labels = _timed(kind, vectors, args.k, True, args.repeats)
            same = float(np.mean(np.sort(cpu_labels, axis=1) == np.sort(gpu_labels, axis=1)))
            line += (f" | gpu: build {gpu_build_s:7.3f} s, search {gpu_search:7.3f} s | search cpu / gpu "
                     f"{cpu_search / gpu_search:6.1f}x, total {(cpu_build + cpu_search) / (gpu_build_s + gpu_search):6.1f}x"
                     f" | neighbour lists equal: {100 * same:.2f} %")
        print(line)
    return 0


if __name__ == "__main__":
    sys.exit(main())
