"""Person metrics' switch from counting to sorting: where ``_SORT_SLOTS`` should be.

``cmc_map_minp`` ranks every hit of a query. A query with at most ``_SORT_SLOTS`` hits has its
hits' ranks counted (one pass over its row per hit slot, so the cost grows with the hits); one
with more is ranked by a stable sort of its row (a cost that does not depend on the hits). This
script times both paths on the same random scores, in one process and interleaved (count, sort,
count, sort, ...), for each shape and number of hits per query, checks that they give the same
numbers, and prints the break-even (the hits per query where counting starts to cost more than
sorting, interpolated between the measured points) beside the switch in use.

    python bench/cmc_switch.py --shapes 6000x3000 3000x20000 --hits 20 40 80 160 240 320

A shape is queries x gallery items; a query's hits are the gallery items of its identity, every
identity has ``hits`` items (the last one the remainder).
"""

from __future__ import annotations

import argparse
import statistics
import time

import numpy as np
import torch

from softref.evaluate import metrics


def _shape(text: str) -> tuple[int, int]:
    try:
        queries, gallery = (int(part) for part in text.lower().split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected QUERIESxGALLERY (e.g. 6000x3000), found {text!r}") from None
    if queries < 1 or gallery < 1:
        raise argparse.ArgumentTypeError(f"expected positive sizes, found {text!r}")
    return queries, gallery


def _time_paths(scores: torch.Tensor, query_labels: np.ndarray, gallery_labels: np.ndarray, repeats: int
                ) -> tuple[float, float, bool]:
    """Median seconds of the counting path and of the sorting path, and whether they agree."""
    saved = metrics._SORT_SLOTS
    times: dict[str, list[float]] = {"count": [], "sort": []}
    results: dict[str, dict[str, float]] = {}
    try:
        for _ in range(repeats):
            for path, slots in (("count", scores.shape[1]), ("sort", -1)):
                metrics._SORT_SLOTS = slots
                start = time.perf_counter()
                results[path] = metrics.cmc_map_minp(scores, query_labels, gallery_labels)
                times[path].append(time.perf_counter() - start)
    finally:
        metrics._SORT_SLOTS = saved
    agree = all(abs(results["count"][key] - results["sort"][key]) <= 1e-6 for key in results["count"])
    return statistics.median(times["count"]), statistics.median(times["sort"]), agree


def _break_even(points: list[tuple[int, float]]) -> str:
    """The hits where count / sort crosses 1, linearly between the measured points."""
    for (h0, r0), (h1, r1) in zip(points, points[1:]):
        if r0 <= 1.0 < r1:
            return f"~{h0 + (1.0 - r0) * (h1 - h0) / (r1 - r0):.0f}"
    if points and points[-1][1] <= 1.0:
        return f"> {points[-1][0]}"
    return f"< {points[0][0]}" if points else "not measured"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--shapes", type=_shape, nargs="+", default=[(6000, 3000), (3000, 20000)],
                        help="QUERIESxGALLERY score shapes (default 6000x3000 3000x20000)")
    parser.add_argument("--hits", type=int, nargs="+", default=[20, 40, 80, 160, 240, 320],
                        help="hits per query to time (default 20 40 80 160 240 320)")
    parser.add_argument("--repeats", type=int, default=3, help="timed runs of each path (default 3)")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    print(f"cmc_map_minp, counting against sorting; _SORT_SLOTS = {metrics._SORT_SLOTS}; "
          f"threads {torch.get_num_threads()}, {args.repeats} runs each (median)")
    worst = 1.0
    for queries, gallery in args.shapes:
        scores = torch.randn(queries, gallery, generator=torch.Generator().manual_seed(0))
        points = []
        for hits in sorted(h for h in args.hits if 0 < h <= gallery):
            identities = gallery // hits
            labels = np.minimum(np.arange(gallery) // hits, identities - 1)
            query_labels = np.random.default_rng(0).integers(0, identities, queries)
            count, sort, agree = _time_paths(scores, query_labels, labels, args.repeats)
            ratio = count / sort
            chosen = count if hits <= metrics._SORT_SLOTS else sort
            worst = max(worst, chosen / min(count, sort))
            points.append((hits, ratio))
            print(f"  {queries} x {gallery}, {hits:4d} hits: count {count:7.3f} s  sort {sort:7.3f} s  "
                  f"count / sort {ratio:5.2f}  switch picks {'count' if hits <= metrics._SORT_SLOTS else 'sort '} "
                  f"({chosen / min(count, sort):.2f}x the faster)  same numbers: {'PASS' if agree else 'FAIL'}",
                  flush=True)
        print(f"  {queries} x {gallery}: break-even {_break_even(points)} hits per query")
    print(f"worst pick: {worst:.2f}x the faster path")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
