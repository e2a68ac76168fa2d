"""softref.files: atomic publishing of a file under a second name (link_atomic)."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from softref.files import TMP_MARKER, link_atomic


def _old(path: Path, content: bytes) -> Path:
    path.write_bytes(content)
    os.utime(path, (1_000_000_000, 1_000_000_000))
    return path


def test_link_atomic_links_and_refreshes_the_time(tmp_path: Path) -> None:
    best = _old(tmp_path / "best.pt", b"weights")
    ckpt = link_atomic(best, tmp_path / "checkpoint.pt")
    assert ckpt.samefile(best) and ckpt.read_bytes() == b"weights"
    # A fresh output for Snakemake, as a copy would be (the link shares best.pt's inode, so both move).
    assert ckpt.stat().st_mtime > 1_000_000_000 + 10
    assert sorted(p.name for p in tmp_path.iterdir()) == ["best.pt", "checkpoint.pt"]
    assert stat.S_IMODE(ckpt.stat().st_mode) == 0o666 & ~_umask()


def test_link_atomic_again_on_the_same_file_leaves_no_temporary(tmp_path: Path) -> None:
    # rename(2) of a link over another link of the same file does nothing and would leave the temporary.
    best = tmp_path / "best.pt"
    best.write_bytes(b"weights")
    link_atomic(best, tmp_path / "checkpoint.pt")
    os.utime(tmp_path / "checkpoint.pt", (1_000_000_000, 1_000_000_000))
    link_atomic(best, tmp_path / "checkpoint.pt")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["best.pt", "checkpoint.pt"]
    assert best.stat().st_nlink == 2 and (tmp_path / "checkpoint.pt").stat().st_mtime > 1_000_000_000 + 10


def test_link_atomic_replaces_an_older_file_and_later_replacing_the_source_leaves_it(tmp_path: Path) -> None:
    best = tmp_path / "best.pt"
    best.write_bytes(b"epoch 2")
    (tmp_path / "checkpoint.pt").write_bytes(b"epoch 1")
    link_atomic(best, tmp_path / "checkpoint.pt")
    assert (tmp_path / "checkpoint.pt").read_bytes() == b"epoch 2"
    # best.pt is only ever renamed over (softref.files.atomic_path): the published name keeps its bytes.
    fresh = tmp_path / "new"
    fresh.write_bytes(b"epoch 3")
    os.replace(fresh, best)
    assert (tmp_path / "checkpoint.pt").read_bytes() == b"epoch 2" and best.read_bytes() == b"epoch 3"


def test_link_atomic_copies_where_the_file_system_has_no_hard_links(tmp_path: Path, monkeypatch) -> None:
    def refuse(src, dst, *args, **kwargs):
        raise PermissionError(1, "Operation not permitted", str(src))

    best = _old(tmp_path / "best.pt", b"weights")
    monkeypatch.setattr(os, "link", refuse)
    ckpt = link_atomic(best, tmp_path / "checkpoint.pt")
    assert not ckpt.samefile(best) and ckpt.read_bytes() == b"weights"
    assert ckpt.stat().st_mtime > 1_000_000_000 + 10 and best.stat().st_mtime == 1_000_000_000
    assert not [p for p in tmp_path.iterdir() if TMP_MARKER in p.name]


def test_link_atomic_of_a_missing_source_writes_nothing(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        link_atomic(tmp_path / "best.pt", tmp_path / "checkpoint.pt")
    assert list(tmp_path.iterdir()) == []


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask
