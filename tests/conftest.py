"""Shared fixtures: paths of the checkout and of the demo teachers fetched by `make install`."""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
MODELS = REPO / "models"
MPNET = MODELS / "all-mpnet-base-v2"
EFFNET = MODELS / "efficientnet-lite0" / "efficientnet-lite0-57934424.pth"

# Tests never reach a model hub.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")


#: The suite's peak on disk under pytest's base folder (measured on two workers; README).
PEAK_DISK_GB = 2.0


def _free_space(config) -> tuple[float, Path]:
    folder = Path(config.option.basetemp or tempfile.gettempdir())
    while not folder.exists():
        folder = folder.parent
    return shutil.disk_usage(folder).free / 1e9, folder


def pytest_report_header(config) -> str:
    """The free space where the tests write: a suite that fails on writes at its end is often a full disk."""
    free, folder = _free_space(config)
    return f"temporary folders: {free:.1f} GB free on the file system of {folder} (the suite's peak: ~{PEAK_DISK_GB} GB)"


def pytest_sessionstart(session) -> None:
    """Say so at the start, even under -q, when the disk may not hold the suite's temporary folders."""
    if hasattr(session.config, "workerinput"):  # a pytest-xdist worker: the controller says it once
        return
    free, folder = _free_space(session.config)
    if free < 3 * PEAK_DISK_GB:
        reporter = session.config.pluginmanager.get_plugin("terminalreporter")
        line = (f"warning: only {free:.1f} GB free on the file system of {folder}, where the tests write; the suite "
                f"needs about {PEAK_DISK_GB} GB at its peak, and writes fail when the disk is full")
        if reporter is not None:
            reporter.write_line(line, yellow=True)


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
    does). Without this a module's trained runs and DAG outputs (1.9 GB for test_workflow's tiny
    DAG) stay on disk until the session ends; with it the suite's peak on disk is one module's
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
