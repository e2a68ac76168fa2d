"""FAISS neighbour index over the multi-modal references, and the k nearest identities table.

The multi-modal references are unit vectors (see :mod:`softref.references.build`), so the
inner product is the cosine similarity; every index here uses ``METRIC_INNER_PRODUCT``:

``flat``
    ``IndexFlatIP``: exact, the default.
``ivf``
    ``IndexIVFFlat`` trained on the references themselves; ``nlist`` lists (default
    ``min(4 sqrt(M), M / 39)``, at least 1: FAISS wants about 39 training points per
    centroid), ``nprobe`` lists visited per query (default ``min(16, nlist)``). Approximate.
``hnsw``
    ``IndexHNSWFlat`` with ``m`` links per node, ``ef_construction`` and ``ef_search``
    (default ``max(64, 2 (k + 1))``). Approximate; CPU only (FAISS has no GPU HNSW).

A GPU is used when ``use_gpu`` allows it and FAISS has GPU support and sees a GPU
(``faiss-gpu`` installed instead of ``faiss-cpu``); the index is copied back to the CPU
for writing, so the file reads the same either way. ``nprobe`` and ``ef_search`` are stored in
the index file.

Rows of the index are the rows of the references file (identities sorted by code point);
:class:`NeighbourIndex` pairs the two and checks that they belong together.

``neighbours.parquet``: ``identity`` (str), ``rank`` (int32, 1..k), ``neighbour`` (str),
``score`` (float32, the inner product = cosine), one row per (identity, rank), sorted by
identity then rank; an identity is never its own neighbour. Within an identity, equal scores
are ordered by neighbour name; which of several tied candidates make the cut at rank k is
FAISS's choice. With an approximate index, an identity may get fewer than k neighbours (a
warning says how many); the flat index always gives k.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal, Union

import faiss
import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
from tqdm.auto import tqdm

from softref import __version__
from softref.files import atomic_path, file_sha256
from softref.runtime import progress_disabled
from softref.references.build import References, ReferencesError

__all__ = [
    "INDEX_KINDS",
    "NEIGHBOUR_SCHEMA",
    "NeighbourIndex",
    "build_neighbour_index",
    "default_nlist",
    "gpu_available",
    "make_index",
    "read_neighbours",
]

log = logging.getLogger(__name__)

INDEX_KINDS: tuple[str, ...] = ("flat", "ivf", "hnsw")
NEIGHBOUR_SCHEMA = pa.schema(
    [
        ("identity", pa.string()),
        ("rank", pa.int32()),
        ("neighbour", pa.string()),
        ("score", pa.float32()),
    ]
)
UseGpu = Union[bool, Literal["auto"]]
# Queries per FAISS search call while listing neighbours (for the progress bar).
_SEARCH_BLOCK = 8192
# Rows compared when NeighbourIndex checks that an index holds the references' vectors.
_CHECK_ROWS = 8
# Training points per IVF centroid below which FAISS warns that the clustering is poor.
_POINTS_PER_CENTROID = 39


def gpu_available() -> bool:
    """True when the installed FAISS has GPU support and sees at least one GPU."""
    return hasattr(faiss, "StandardGpuResources") and faiss.get_num_gpus() > 0


def _resolve_gpu(use_gpu: UseGpu, kind: str) -> bool:
    if use_gpu not in ("auto", True, False):
        raise ValueError(f"use_gpu must be 'auto', true or false, got {use_gpu!r}")
    if kind == "hnsw":
        if use_gpu is True:
            raise ValueError("use_gpu=true with kind 'hnsw': FAISS has no GPU HNSW; use 'auto' or false")
        return False
    available = gpu_available()
    if use_gpu is True and not available:
        raise RuntimeError(
            "use_gpu=true but FAISS "
            + ("has no GPU support (faiss-cpu is installed; install faiss-gpu)"
               if not hasattr(faiss, "StandardGpuResources") else "sees no GPU")
        )
    return available if use_gpu == "auto" else bool(use_gpu)


def default_nlist(num_vectors: int) -> int:
    """IVF lists for ``num_vectors`` vectors: about 4 sqrt(N), with >= 39 training points each."""
    return max(1, min(int(round(4 * math.sqrt(num_vectors))), num_vectors // _POINTS_PER_CENTROID))


def _as_float32(vectors: Any, what: str) -> np.ndarray:
    if hasattr(vectors, "detach"):  # a torch tensor
        vectors = vectors.detach().cpu().numpy()
    x = np.ascontiguousarray(np.asarray(vectors, dtype=np.float32))
    if x.ndim != 2:
        raise ValueError(f"{what}: expected a (N, D) matrix, found shape {x.shape}")
    if not np.isfinite(x).all():
        raise ValueError(f"{what}: {int((~np.isfinite(x).all(axis=1)).sum())} row(s) hold NaN/inf")
    return x


def make_index(
    vectors: np.ndarray,
    *,
    kind: str = "flat",
    nlist: int | None = None,
    nprobe: int | None = None,
    m: int = 32,
    ef_construction: int = 40,
    ef_search: int = 64,
    gpu: bool = False,
) -> faiss.Index:
    """An inner-product FAISS index of ``kind`` holding ``vectors`` (trained where needed).

    With ``gpu`` the index lives on GPU 0 (flat and ivf only); the caller copies it back with
    ``faiss.index_gpu_to_cpu`` to write it.
    """
    if kind not in INDEX_KINDS:
        raise ValueError(f"index kind must be one of {list(INDEX_KINDS)}, got {kind!r}")
    x = _as_float32(vectors, "index vectors")
    n, d = x.shape
    if n == 0:
        raise ValueError("index vectors: expected at least one vector, found none")
    if kind == "flat":
        index: faiss.Index = faiss.IndexFlatIP(d)
    elif kind == "ivf":
        nlist = default_nlist(n) if nlist is None else int(nlist)
        if not 1 <= nlist <= n:
            raise ValueError(f"nlist must be in [1, {n}] (the number of vectors it is trained on), got {nlist}")
        nprobe = min(16, nlist) if nprobe is None else int(nprobe)
        if not 1 <= nprobe <= nlist:
            raise ValueError(f"nprobe must be in [1, nlist={nlist}], got {nprobe}")
        quantizer = faiss.IndexFlatIP(d)
        index = faiss.IndexIVFFlat(quantizer, d, nlist, faiss.METRIC_INNER_PRODUCT)
        index.nprobe = nprobe
    else:
        if gpu:
            raise ValueError("FAISS has no GPU HNSW index; build kind 'hnsw' with gpu=False")
        if m < 2 or ef_construction < 1 or ef_search < 1:
            raise ValueError(
                f"hnsw: expected m >= 2, ef_construction >= 1, ef_search >= 1; found m={m}, "
                f"ef_construction={ef_construction}, ef_search={ef_search}"
            )
        index = faiss.IndexHNSWFlat(d, int(m), faiss.METRIC_INNER_PRODUCT)
        index.hnsw.efConstruction = int(ef_construction)
        index.hnsw.efSearch = int(ef_search)
    if gpu:
        resources = faiss.StandardGpuResources()
        cpu_index = index
        index = faiss.index_cpu_to_gpu(resources, 0, cpu_index)
        # index_cpu_to_gpu does not keep its resources alive: the GPU index must hold them.
        index.referenced_objects = [resources, cpu_index]
        if kind == "ivf":
            faiss.GpuParameterSpace().set_index_parameter(index, "nprobe", nprobe)
    if not index.is_trained:
        index.train(x)
    index.add(x)
    return index


def _neighbour_rows(
    identities: Sequence[str], scores: np.ndarray, labels: np.ndarray, k: int
) -> tuple[list[str], list[int], list[str], list[float], int]:
    """Per identity: its candidates without itself, sorted by (-score, name), cut at k."""
    out_id: list[str] = []
    out_rank: list[int] = []
    out_nb: list[str] = []
    out_score: list[float] = []
    short = 0
    for row, identity in enumerate(identities):
        found = [
            (-float(s), identities[int(j)])
            for s, j in zip(scores[row], labels[row])
            if j >= 0 and int(j) != row
        ]
        found.sort()
        found = found[:k]
        if len(found) < k:
            short += 1
        for rank, (neg, name) in enumerate(found, 1):
            out_id.append(identity)
            out_rank.append(rank)
            out_nb.append(name)
            out_score.append(-neg)
    return out_id, out_rank, out_nb, out_score, short


def build_neighbour_index(
    references_path: Path | str,
    out_index: Path | str,
    out_neighbours: Path | str,
    *,
    kind: str = "flat",
    k: int = 10,
    nlist: int | None = None,
    nprobe: int | None = None,
    m: int = 32,
    ef_construction: int = 40,
    ef_search: int | None = None,
    use_gpu: UseGpu = "auto",
    threads: int | None = None,
) -> tuple[Path, Path]:
    """Index the multi-modal references with FAISS and list each identity's k nearest others.

    Args:
        references_path: a file written by :func:`softref.references.build_references`.
        out_index: the FAISS index file (``faiss.write_index``), written atomically.
        out_neighbours: the neighbours table (Parquet, schema :data:`NEIGHBOUR_SCHEMA`).
        kind: ``"flat"`` (exact), ``"ivf"`` or ``"hnsw"`` (approximate, for large sets).
        k: neighbours per identity, excluding the identity itself (needs k < #identities).
        nlist, nprobe: IVF lists and lists visited per query (see the module docstring).
        m, ef_construction, ef_search: HNSW links per node and beam widths.
        use_gpu: ``"auto"`` (a GPU when FAISS can use one), True (required) or False.
        threads: FAISS (OpenMP) threads; None leaves FAISS's default (all cores).

    Returns:
        ``(out_index, out_neighbours)``.
    """
    references_path, out_index, out_neighbours = Path(references_path), Path(out_index), Path(out_neighbours)
    refs = _open_references(references_path, kind, k)
    n = len(refs)
    if threads is not None:
        faiss.omp_set_num_threads(int(threads))
    gpu = _resolve_gpu(use_gpu, kind)
    ef_search = max(64, 2 * (k + 1)) if ef_search is None else int(ef_search)
    vectors = np.ascontiguousarray(refs.multimodal, dtype=np.float32)
    log.info("building a %s index over %d references (dim %d) on %s", kind, n, refs.dim, "GPU" if gpu else "CPU")
    index = make_index(vectors, kind=kind, nlist=nlist, nprobe=nprobe, m=m,
                       ef_construction=ef_construction, ef_search=ef_search, gpu=gpu)
    scores, labels = _search_all(index, vectors, k, kind)
    if gpu:
        index = faiss.index_gpu_to_cpu(index)
    table = _neighbour_table(refs, references_path, scores, labels, kind, k)

    # Both files are finished before either is renamed into place.
    with atomic_path(out_index) as tmp_index, atomic_path(out_neighbours) as tmp_neighbours:
        faiss.write_index(index, str(tmp_index))
        pq.write_table(table, tmp_neighbours, compression="snappy", version="2.6")
    log.info("wrote %s and %s (%d rows)", out_index, out_neighbours, table.num_rows)
    return out_index, out_neighbours


def _open_references(references_path: Path, kind: str, k: int) -> References:
    """The references to index, once ``kind`` and ``k`` are known to suit them."""
    if kind not in INDEX_KINDS:
        raise ValueError(f"index kind must be one of {list(INDEX_KINDS)}, got {kind!r}")
    refs = References.open(references_path)
    n = len(refs)
    if not 1 <= k < n:
        raise ValueError(
            f"k must be in [1, {n - 1}]: {references_path} holds {n} identities, each has at "
            f"most {n - 1} others; got k={k}"
        )
    return refs


def _search_all(index: faiss.Index, vectors: np.ndarray, k: int, kind: str) -> tuple[np.ndarray, np.ndarray]:
    """``(scores, labels)``, (N, k + 1) each: every vector's k + 1 nearest rows of ``index``."""
    n = len(vectors)
    # k + 1: the identity itself is normally its own first hit.
    scores = np.empty((n, k + 1), dtype=np.float32)
    labels = np.empty((n, k + 1), dtype=np.int64)
    disable = progress_disabled(log)
    for start in tqdm(range(0, n, _SEARCH_BLOCK), desc=f"{kind} neighbours", unit="block", disable=disable):
        stop = min(n, start + _SEARCH_BLOCK)
        scores[start:stop], labels[start:stop] = index.search(vectors[start:stop], k + 1)
    return scores, labels


def _neighbour_table(
    refs: References, references_path: Path, scores: np.ndarray, labels: np.ndarray, kind: str, k: int
) -> pa.Table:
    """The neighbours table (:data:`NEIGHBOUR_SCHEMA`, with the build in its metadata) of the
    search results; warns when an identity got fewer than k neighbours."""
    ids, ranks, neighbours, values, short = _neighbour_rows(refs.identities, scores, labels, k)
    if short:
        log.warning(
            "%d of %d identities got fewer than k=%d neighbours from the %s index (raise nprobe "
            "or ef_search)", short, len(refs), k, kind,
        )
    return pa.Table.from_arrays(
        [
            pa.array(ids, type=pa.string()),
            pa.array(ranks, type=pa.int32()),
            pa.array(neighbours, type=pa.string()),
            pa.array(values, type=pa.float32()),
        ],
        schema=NEIGHBOUR_SCHEMA.with_metadata(
            {
                "softref_version": __version__,
                "index_kind": kind,
                "k": str(k),
                "references_sha256": file_sha256(references_path),
                "image_teacher": str(refs.attrs["image_teacher"]),
                "text_teacher": str(refs.attrs["text_teacher"]),
                "split": str(refs.attrs["split"]),
            }
        ),
    )


def read_neighbours(path: Path | str) -> pd.DataFrame:
    """Read a neighbours table, checking its columns and types against :data:`NEIGHBOUR_SCHEMA`."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"neighbours table not found: {path}")
    try:
        table = pq.read_table(path)
    except (pa.ArrowException, OSError) as exc:
        raise ReferencesError(f"{path}: not a readable Parquet file ({exc})") from exc
    found = [(f.name, str(f.type)) for f in table.schema]
    expected = [(f.name, str(f.type)) for f in NEIGHBOUR_SCHEMA]
    if found != expected:
        raise ReferencesError(f"{path}: expected columns {expected}, found {found}")
    return table.to_pandas()


class NeighbourIndex:
    """A FAISS index file paired with the references file whose multi-modal rows it holds.

    ``open`` refuses a pair that does not belong together (other row count, dimension,
    metric, or vectors). :meth:`search` takes vectors in the multi-modal reference space.
    """

    def __init__(self, index: faiss.Index, references: References, path: Path) -> None:
        self.index = index
        self.references = references
        self.path = path

    @classmethod
    def open(
        cls,
        index_path: Path | str,
        references_path: Path | str,
        *,
        nprobe: int | None = None,
        ef_search: int | None = None,
    ) -> NeighbourIndex:
        """Read ``index_path`` (CPU) and ``references_path``; optionally override nprobe / ef_search."""
        index_path = Path(index_path)
        if not index_path.is_file():
            raise FileNotFoundError(f"FAISS index not found: {index_path}")
        refs = References.open(references_path)
        try:
            index = faiss.read_index(str(index_path))
        except RuntimeError as exc:
            raise ReferencesError(f"{index_path}: not a readable FAISS index ({exc})") from exc
        checks = (
            ("rows", int(index.ntotal), len(refs)),
            ("dim", int(index.d), refs.dim),
            ("metric", int(index.metric_type), int(faiss.METRIC_INNER_PRODUCT)),
        )
        for what, found, expected in checks:
            if found != expected:
                raise ReferencesError(
                    f"{index_path}: {what} expected {expected} (as {refs.path}), found {found}; "
                    f"the index was not built from these references"
                )
        rows = np.unique(np.linspace(0, len(refs) - 1, min(len(refs), _CHECK_ROWS)).astype(np.int64))
        ivf = faiss.try_extract_index_ivf(index)
        if ivf is not None:
            ivf.make_direct_map()
        stored = np.stack([index.reconstruct(int(i)) for i in rows])
        if not np.array_equal(stored, refs.multimodal[rows]):
            raise ReferencesError(
                f"{index_path}: its vectors differ from the multi-modal references of {refs.path} "
                f"(rows {rows.tolist()} compared); the index was built from another references file"
            )
        if nprobe is not None:
            if ivf is None:
                raise ValueError(f"{index_path}: nprobe given but the index is not an IVF index")
            ivf.nprobe = int(nprobe)
        if ef_search is not None:
            if not hasattr(index, "hnsw"):
                raise ValueError(f"{index_path}: ef_search given but the index is not an HNSW index")
            index.hnsw.efSearch = int(ef_search)
        return cls(index, refs, index_path)

    @property
    def identities(self) -> tuple[str, ...]:
        return self.references.identities

    @property
    def dim(self) -> int:
        return int(self.index.d)

    def __len__(self) -> int:
        return int(self.index.ntotal)

    def search(self, vectors: Any, k: int) -> tuple[np.ndarray, np.ndarray]:
        """The k references nearest each row of ``vectors`` by cosine similarity.

        Args:
            vectors: (N, dim) numpy array or tensor; rows are L2-normalised here.
            k: neighbours per row (1 <= k <= number of references).

        Returns:
            ``(scores, identities)``: (N, k) float32 cosines, best first, and (N, k) object
            array of identity names. Slots an approximate index leaves empty hold ``None``
            with score ``-inf``.
        """
        x = _as_float32(vectors, "search vectors")
        if x.shape[1] != self.dim:
            raise ValueError(f"search vectors: expected dim {self.dim} ({self.path}), found {x.shape[1]}")
        if not 1 <= k <= len(self):
            raise ValueError(f"k must be in [1, {len(self)}] (references in {self.path}), got {k}")
        norms = np.linalg.norm(x, axis=1, keepdims=True)
        x = np.ascontiguousarray(x / np.maximum(norms, 1e-12), dtype=np.float32)
        scores, labels = self.index.search(x, k)
        names = np.empty(labels.shape, dtype=object)
        lookup = np.asarray(self.identities, dtype=object)
        valid = labels >= 0
        names[valid] = lookup[labels[valid]]
        scores = np.where(valid, scores, -np.inf).astype(np.float32)
        return scores, names

    def __repr__(self) -> str:
        return f"NeighbourIndex({str(self.path)!r}, {type(self.index).__name__}, rows={len(self)}, dim={self.dim})"
