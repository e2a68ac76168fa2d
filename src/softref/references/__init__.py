"""Per-identity teacher references and the FAISS index of their nearest neighbours.

``build_references`` / ``References`` (HDF5, :mod:`softref.references.build`) need h5py and
numpy only; ``build_neighbour_index`` / ``NeighbourIndex`` (:mod:`softref.references.index`)
import FAISS on first use.
"""

from __future__ import annotations

from typing import Any

from softref.references.build import References, ReferencesError, build_references, read_reference_attrs

__all__ = [
    "NeighbourIndex",
    "References",
    "ReferencesError",
    "build_neighbour_index",
    "build_references",
    "read_neighbours",
    "read_reference_attrs",
]


def __getattr__(name: str) -> Any:
    # FAISS loads OpenMP and BLAS: readers of references (training workers) need not import it.
    if name in ("NeighbourIndex", "build_neighbour_index", "read_neighbours"):
        from softref.references import index

        return getattr(index, name)
    raise AttributeError(f"module 'softref.references' has no attribute {name!r}")
