"""Shared fixtures: paths of the checkout and of the demo teachers fetched by `make install`."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
MODELS = REPO / "models"
MPNET = MODELS / "all-mpnet-base-v2"
EFFNET = MODELS / "efficientnet-lite0" / "efficientnet-lite0-57934424.pth"

# Tests never reach a model hub.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")


@pytest.fixture(scope="session")
def repo() -> Path:
    return REPO


@pytest.fixture(scope="session")
def demo_teachers() -> dict[str, Path]:
    """The real demo teacher weights; `make install` fetches them, so their absence is a failure."""
    missing = [str(p) for p in (MPNET, EFFNET) if not p.exists()]
    if missing:
        pytest.fail(f"demo teacher weights missing: {missing}; run `make install` (it fetches them)")
    return {"all-mpnet-base-v2": MPNET, "efficientnet-lite0": EFFNET}


@pytest.fixture(scope="module")
def one_thread():
    """Torch on one thread for a module of tiny-model tests (``pytestmark = usefixtures("one_thread")``)."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
