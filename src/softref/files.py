"""Files that appear whole or not at all, with the umask's permissions, and their sha256.

Every artifact of the DAG is written through :func:`atomic_path`: the writer fills a temporary
file ``<name>.tmp-<pid>`` beside the target, which is renamed over the target only when the
writer returns. A killed job therefore never leaves a file that looks complete. The temporary
file gets the permissions a plain ``open()`` would give (``0666 & ~umask``, so 0644 under the
usual 0022; ``tempfile.mkstemp`` alone would give 0600, unreadable by a lab's group), and a
temporary file of the same target left by a process that no longer runs on this host (a job
killed by SIGKILL) is removed by the next write of that target.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import shutil
from collections.abc import Iterator
from pathlib import Path

__all__ = [
    "TMP_MARKER",
    "atomic_path",
    "file_mode",
    "file_sha256",
    "link_atomic",
    "publish",
    "remove_stale_temporaries",
    "temporary_name",
    "write_bytes_atomic",
    "write_text_atomic",
]

log = logging.getLogger(__name__)

#: Marks a temporary file: ``<name>.tmp-<pid>``. Readers ignore such files.
TMP_MARKER = ".tmp-"


def file_mode() -> int:
    """The mode a new file gets from ``open()`` under the current umask (``0o666 & ~umask``)."""
    umask = os.umask(0)
    os.umask(umask)
    return 0o666 & ~umask


def file_sha256(path: str | os.PathLike[str]) -> str:
    """Hex SHA-256 of a file's bytes, read in 1 MiB blocks."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"file not found (for its sha256): {path}")
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _pid_alive(pid: int) -> bool:
    """Whether ``pid`` is a running process here; a zombie (killed, not yet reaped: a job whose
    Snakemake was killed with it) writes nothing more and counts as gone."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's live process
        return True
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:  # no /proc (macOS): the signal test is all there is
        return True
    return stat.rpartition(")")[2].split()[:1] != ["Z"]


def remove_stale_temporaries(path: str | os.PathLike[str]) -> list[Path]:
    """Remove ``<path>.tmp-<pid>`` files whose process no longer runs here; return what was removed.

    A temporary file of a live process (another writer on this host) is kept. Snakemake runs at
    most one job per output, so on a cluster a temporary file of a job killed on another node is
    also removed here whenever its pid is not a live process on this host.
    """
    path = Path(path)
    removed = []
    if not path.parent.is_dir():
        return removed
    for tmp in path.parent.glob(f"{path.name}{TMP_MARKER}*"):
        suffix = tmp.name[len(path.name) + len(TMP_MARKER):]
        if not suffix.isdigit() or int(suffix) == os.getpid() or _pid_alive(int(suffix)):
            continue
        if tmp.is_dir():
            shutil.rmtree(tmp, ignore_errors=True)
        else:
            tmp.unlink(missing_ok=True)
        removed.append(tmp)
        log.warning("removed %s, left by a process that no longer runs (a killed job)", tmp)
    return removed


def temporary_name(path: str | os.PathLike[str]) -> Path:
    """The temporary file :func:`atomic_path` writes for ``path``: ``<path>.tmp-<pid>``."""
    path = Path(path)
    return path.with_name(f"{path.name}{TMP_MARKER}{os.getpid()}")


def publish(tmp: str | os.PathLike[str], path: str | os.PathLike[str]) -> Path:
    """Give the finished temporary file ``tmp`` the umask's mode and rename it over ``path``."""
    tmp, path = Path(tmp), Path(path)
    if tmp.is_file():
        os.chmod(tmp, file_mode())
    os.replace(tmp, path)
    return path


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield a temporary path to write; on success give it the umask's mode and rename it to ``path``.

    The parent folder is created. If the block raises (or the writer wrote nothing), the
    temporary file is removed and ``path`` is left as it was.

    Example:
        >>> import tempfile, pathlib
        >>> out = pathlib.Path(tempfile.mkdtemp()) / "x.txt"
        >>> with atomic_path(out) as tmp:
        ...     _ = tmp.write_text("done")
        >>> out.read_text()
        'done'
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_temporaries(path)
    tmp = temporary_name(path)
    try:
        yield tmp
        if not tmp.exists():
            raise FileNotFoundError(f"{path}: the writer produced no file at {tmp}")
        publish(tmp, path)
    except BaseException:
        if tmp.is_dir():
            shutil.rmtree(tmp, ignore_errors=True)
        else:
            tmp.unlink(missing_ok=True)
        raise


def write_text_atomic(path: str | os.PathLike[str], text: str) -> Path:
    """Write ``text`` (UTF-8, newlines as given) atomically (:func:`atomic_path`); returns ``path``."""
    with atomic_path(path) as tmp:
        with open(tmp, "w", encoding="utf-8", newline="") as fh:
            fh.write(text)
    return Path(path)


def write_bytes_atomic(path: str | os.PathLike[str], data: bytes) -> Path:
    """Write ``data`` atomically (:func:`atomic_path`); returns ``path``."""
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)
    return Path(path)


def link_atomic(src: str | os.PathLike[str], dst: str | os.PathLike[str]) -> Path:
    """Give ``dst`` the bytes of ``src`` atomically (:func:`atomic_path`); returns ``dst``.

    ``dst`` becomes a hard link to ``src`` where the file system allows one (one copy on disk:
    a selected model is as large as the student), else a copy. Its modification time is set to
    now either way, as a copy's would be, so that Snakemake sees a fresh output. Both files are
    only ever replaced whole (renamed over), never written in place, so the shared bytes never
    change under either name.
    """
    src, dst = Path(src), Path(dst)
    if dst.exists() and os.path.samefile(src, dst):
        # Renaming a link over another link of the same file does nothing (POSIX rename).
        os.utime(dst)
        return dst
    with atomic_path(dst) as tmp:
        try:
            os.link(src, tmp)
        except OSError:
            shutil.copyfile(src, tmp)
    os.utime(dst)
    return dst
