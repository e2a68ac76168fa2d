"""Reference-based refinement cost over plain retrieval, side by side in one run.

A gallery of the CUHK-PEDES test size by default: 3,074 images, 6,156 caption queries and
11,003 references (the training identities), D = 512, random unit features.

(a) plain: ``scores = queries @ gallery.T``, then the full ranking (a stable descending sort
    of every query's row, as softref's metrics rank).
(b) refined: the same scores, ``refine_scores`` (profiles of queries and gallery over the
    references, re-ranking of each query's top K), then the same ranking.

The two sides run alternately (a, b, a, b, ...) after one warm-up each, with the same threads;
the medians and their ratio (b / a) are printed.

    python bench/refine.py --repeats 3
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections.abc import Callable

import torch

from softref.evaluate.refine import refine_scores


def _unit(x: torch.Tensor) -> torch.Tensor:
    return x / x.norm(dim=1, keepdim=True)


def _timed(fn: Callable[[], torch.Tensor], device: torch.device) -> float:
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    start = time.perf_counter()
    out = fn()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    elapsed = time.perf_counter() - start
    del out
    return elapsed


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--queries", type=int, default=6156, help="text queries (default 6156)")
    parser.add_argument("--gallery", type=int, default=3074, help="gallery images (default 3074)")
    parser.add_argument("--references", type=int, default=11003, help="references (default 11003)")
    parser.add_argument("--dim", type=int, default=512, help="embedding dimension (default 512)")
    parser.add_argument("--k", type=int, default=10, help="references per profile (default 10)")
    parser.add_argument("--tau", type=float, default=0.05, help="profile temperature (default 0.05)")
    parser.add_argument("--top-k", type=int, default=100, help="gallery items re-ranked per query (default 100)")
    parser.add_argument("--lam", type=float, default=0.5, help="weight of the reference similarity (default 0.5)")
    parser.add_argument("--repeats", type=int, default=3, help="timed runs of each side (default 3)")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    parser.add_argument("--device", default="cpu", help="cpu or cuda (default cpu)")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)

    gen = torch.Generator().manual_seed(0)
    queries = _unit(torch.randn(args.queries, args.dim, generator=gen)).to(device)
    gallery = _unit(torch.randn(args.gallery, args.dim, generator=gen)).to(device)
    references = _unit(torch.randn(args.references, args.dim, generator=gen)).to(device)

    def plain() -> torch.Tensor:
        scores = queries @ gallery.T
        return torch.sort(scores, dim=1, descending=True, stable=True).indices

    def refined() -> torch.Tensor:
        scores = queries @ gallery.T
        out = refine_scores(scores, queries, gallery, references, k=args.k, tau=args.tau,
                            top_k=args.top_k, lam=args.lam)
        return torch.sort(out, dim=1, descending=True, stable=True).indices

    print(
        f"refinement cost: {args.queries} queries x {args.gallery} gallery, {args.references} references, "
        f"D={args.dim}, k={args.k}, top_k={args.top_k}, device {device}, threads {torch.get_num_threads()}"
    )
    plain(), refined()  # warm-up
    ta, tb = [], []
    for _ in range(args.repeats):
        ta.append(_timed(plain, device))
        tb.append(_timed(refined, device))
    ma, mb = statistics.median(ta), statistics.median(tb)
    print(f"  {'plain: scores + ranking':<40} median {ma:8.3f} s  (runs: {', '.join(f'{t:.3f}' for t in ta)})")
    print(f"  {'refined: scores + refinement + ranking':<40} median {mb:8.3f} s  (runs: {', '.join(f'{t:.3f}' for t in tb)})")
    print(f"  ratio refined / plain: {mb / ma:.2f}  (refinement adds {mb - ma:.3f} s, "
          f"{1e3 * (mb - ma) / args.queries:.3f} ms per query)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
