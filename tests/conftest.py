"""Shared fixtures: paths of the checkout and of the demo teachers fetched by `make install`."""

from __future__ import annotations

import os
import shutil
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


@pytest.fixture(scope="module", autouse=True)
def module_folders_removed(request, tmp_path_factory):
    """Folders a module's fixtures make (``tmp_path_factory.mktemp``) are removed once its last test
    is done, unless one of its tests failed (then they stay for a look, as a failed test's tmp_path
    does). Without this a module's trained runs and DAG outputs (up to 2.4 GB for test_workflow's
    tiny DAG) stay on disk until the session ends; with it the suite's peak on disk is one module's
    folders per pytest-xdist worker."""
    made: list[Path] = []
    mktemp = tmp_path_factory.mktemp

    def recording(basename: str, numbered: bool = True) -> Path:
        made.append(mktemp(basename, numbered))
        return made[-1]

    failed = request.session.testsfailed
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(tmp_path_factory, "mktemp", recording)
        yield
    if request.session.testsfailed == failed:
        for folder in made:
            shutil.rmtree(folder, ignore_errors=True)
