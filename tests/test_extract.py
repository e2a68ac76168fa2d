"""extract_image_features / extract_text_features with small stand-in teachers."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import h5py
import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image
from torch import nn
from torchvision import transforms as T

from softref.data.manifest import file_sha256, shard_rows, write_manifest
from softref.features import FeatureStore, read_shard_attrs, validate_shards
from softref.features.extract import ImageReadError, extract_image_features, extract_text_features
from softref.features.shards import TMP_MARKER
from softref.teachers.base import ImageTeacher, TextTeacher

SIZE = 16


class TinyImageTeacher(ImageTeacher):
    """A random conv net with the ImageTeacher attributes; counts its forward calls."""

    def __init__(self, fail_on_call: int | None = None) -> None:
        torch.manual_seed(0)
        super().__init__(
            name="tiny", dim=8, weights_sha256="f" * 64, preprocess_description="resize 16, to tensor",
            normalized=False, transform=T.Compose([T.Resize((SIZE, SIZE)), T.ToTensor()]),
            device=torch.device("cpu"), input_size=SIZE, token_shape=(4, 8),
        )
        self.net = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(2)).eval()
        self.calls = 0
        self.fail_on_call = fail_on_call

    def _forward(self, pixels: torch.Tensor) -> torch.Tensor:
        self.calls += 1
        if self.fail_on_call is not None and self.calls == self.fail_on_call:
            raise RuntimeError("teacher failed mid-way")
        return self.net(pixels).mean(dim=(2, 3)) * 10

    def _forward_tokens(self, pixels: torch.Tensor) -> torch.Tensor:
        return self.net(pixels).flatten(2).transpose(1, 2)


class CharTextTeacher(TextTeacher):
    """Deterministic bag-of-characters features; records the texts it was given."""

    def __init__(self) -> None:
        super().__init__(name="chars", dim=5, weights_sha256="e" * 64, preprocess_description="lower",
                         normalized=True, device=torch.device("cpu"), apply_pre_caption=False)
        self.seen: list[str] = []

    def preprocess_text(self, caption: str) -> str:
        return caption.lower()

    def _encode(self, texts: list[str], batch_size: int, show_progress: bool) -> np.ndarray:
        self.seen.extend(texts)
        out = np.zeros((len(texts), self.dim), np.float32)
        for i, text in enumerate(texts):
            for ch in text:
                out[i, ord(ch) % self.dim] += 1
        return out / np.maximum(np.linalg.norm(out, axis=1, keepdims=True), 1e-6)


def make_images(root: Path, n: int = 11) -> Path:
    rng = np.random.default_rng(0)
    (root / "imgs").mkdir(parents=True)
    for i in range(n):
        size = (20 + i, 18 + 2 * i)
        mode = "L" if i % 4 == 0 else "RGB"  # grey images are converted to RGB
        arr = rng.integers(0, 255, size=(size[1], size[0]) + (() if mode == "L" else (3,)), dtype=np.uint8)
        Image.fromarray(arr, mode).save(root / "imgs" / f"{i}.png")
    df = pd.DataFrame({
        "image_id": [f"im{i:02d}" for i in range(n)],
        "path": [f"imgs/{i}.png" for i in range(n)],
        "identity": [f"p{i // 3}" for i in range(n)],
        "split": ["train"] * n,
    })
    manifest = root / "images.parquet"
    write_manifest(df, manifest, "images")
    return manifest


def direct(teacher: TinyImageTeacher, root: Path, ids: list[str]) -> np.ndarray:
    pixels = torch.stack([
        teacher.transform(Image.open(root / "imgs" / f"{int(i[2:])}.png").convert("RGB")) for i in ids
    ])
    return teacher.encode(pixels).numpy()


@pytest.mark.parametrize("num_workers", [0, 2])
def test_image_extraction_matches_direct_forward(tmp_path: Path, num_workers: int) -> None:
    manifest = make_images(tmp_path)
    teacher = TinyImageTeacher()
    out_dir = tmp_path / "feat"
    for shard in range(2):
        extract_image_features(manifest, tmp_path, teacher, out_dir / f"images-{shard}.h5",
                               shard=shard, num_shards=2, batch_size=4, num_workers=num_workers)
    attrs = read_shard_attrs(out_dir / "images-1.h5")
    assert attrs["teacher"] == "tiny" and attrs["weights_sha256"] == "f" * 64
    assert attrs["preprocess"] == "resize 16, to tensor" and attrs["normalized"] is False
    assert attrs["manifest_sha256"] == file_sha256(manifest) and attrs["modality"] == "images"
    assert (attrs["shard"], attrs["num_shards"], attrs["dtype"], attrs["complete"]) == (1, 2, "float16", True)
    ids = [f"im{i:02d}" for i in range(11)]
    with FeatureStore.from_dir(out_dir, "images", expect={"teacher": "tiny"}) as store:
        assert store.ids == ids
        start, stop = shard_rows(11, 1, 2)
        with h5py.File(out_dir / "images-1.h5", "r") as f:
            assert f["ids"].asstr()[:].tolist() == ids[start:stop]
        np.testing.assert_allclose(store.get(ids), direct(teacher, tmp_path, ids), rtol=2e-3, atol=2e-3)
    assert validate_shards(out_dir, images_manifest=manifest).ok


def test_image_tokens_float32(tmp_path: Path) -> None:
    manifest = make_images(tmp_path, n=5)
    teacher = TinyImageTeacher()
    out = tmp_path / "feat" / "images-0.h5"
    extract_image_features(manifest, tmp_path, teacher, out, shard=0, num_shards=1, batch_size=2,
                           num_workers=0, dtype="float32", store_tokens=True)
    ids = [f"im{i:02d}" for i in range(5)]
    pixels = torch.stack([teacher.transform(Image.open(tmp_path / "imgs" / f"{i}.png").convert("RGB")) for i in range(5)])
    with h5py.File(out, "r") as f:
        assert f["features"].dtype == np.float32 and f["tokens"].shape == (5, 4, 8)
        np.testing.assert_allclose(f["features"][:], teacher.encode(pixels).numpy(), rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(f["tokens"][:], teacher.encode_tokens(pixels).numpy(), rtol=1e-5, atol=1e-6)
        assert f["ids"].asstr()[:].tolist() == ids


def test_missing_image_named_before_model_work(tmp_path: Path) -> None:
    manifest = make_images(tmp_path)
    (tmp_path / "imgs" / "7.png").unlink()
    (tmp_path / "imgs" / "9.png").unlink()
    teacher = TinyImageTeacher()
    out = tmp_path / "feat" / "images-1.h5"
    with pytest.raises(FileNotFoundError) as err:
        extract_image_features(manifest, tmp_path, teacher, out, shard=1, num_shards=2, num_workers=0)
    msg = str(err.value)
    assert "2 of 5 images of shard 1/2" in msg
    assert f"{tmp_path / 'imgs' / '7.png'} (image_id 'im07', manifest row 7)" in msg
    assert "image_id 'im09', manifest row 9" in msg
    assert teacher.calls == 0
    assert not out.exists() and not list((tmp_path).rglob(f"*{TMP_MARKER}*"))


@pytest.mark.parametrize("num_workers", [0, 2])
def test_corrupt_image_named(tmp_path: Path, num_workers: int) -> None:
    manifest = make_images(tmp_path)
    (tmp_path / "imgs" / "5.png").write_bytes(b"\x89PNG\r\n\x1a\n garbage")
    out = tmp_path / "feat" / "images-0.h5"
    with pytest.raises(ImageReadError) as err:
        extract_image_features(manifest, tmp_path, TinyImageTeacher(), out, shard=0, num_shards=1,
                               batch_size=4, num_workers=num_workers)
    msg = str(err.value)
    assert f"cannot read image {tmp_path / 'imgs' / '5.png'} (image_id 'im05')" in msg
    assert "Traceback" not in msg
    assert not (tmp_path / "feat").exists() or not list((tmp_path / "feat").iterdir())


def test_exception_mid_extraction_then_rerun(tmp_path: Path) -> None:
    manifest = make_images(tmp_path)
    out = tmp_path / "feat" / "images-0.h5"
    with pytest.raises(RuntimeError, match="teacher failed mid-way"):
        extract_image_features(manifest, tmp_path, TinyImageTeacher(fail_on_call=2), out,
                               shard=0, num_shards=1, batch_size=3, num_workers=0)
    assert not list((tmp_path / "feat").iterdir())
    extract_image_features(manifest, tmp_path, TinyImageTeacher(), out, shard=0, num_shards=1,
                           batch_size=3, num_workers=0)
    assert read_shard_attrs(out)["complete"] is True


_CHILD = """
import sys, time
from pathlib import Path
sys.path.insert(0, {tests!r})
import torch
from test_extract import TinyImageTeacher
from softref.features.extract import extract_image_features

class Hanging(TinyImageTeacher):
    def _forward(self, pixels):
        self.calls += 1
        if self.calls == 2:
            Path({flag!r}).touch()
            time.sleep(120)
        return self.net(pixels).mean(dim=(2, 3))

extract_image_features(Path({manifest!r}), Path({root!r}), Hanging(), Path({out!r}),
                       shard=0, num_shards=1, batch_size=3, num_workers=0)
"""


def test_killed_extraction_leaves_no_shard(tmp_path: Path) -> None:
    # A fresh interpreter, not a fork: a forked child of a process that already ran torch's
    # thread pool can deadlock in OpenMP.
    manifest = make_images(tmp_path)
    out = tmp_path / "feat" / "images-0.h5"
    flag = tmp_path / "second-batch"
    script = _CHILD.format(tests=str(Path(__file__).parent), flag=str(flag), manifest=str(manifest),
                           root=str(tmp_path), out=str(out))
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(Path(__file__).parents[1] / "src"),
                                                       os.environ.get("PYTHONPATH", "")]))
    proc = subprocess.Popen([sys.executable, "-c", script], env=env)
    try:
        deadline = time.monotonic() + 120
        while not flag.exists() and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.1)
        assert flag.exists(), f"child extraction never reached its second batch (exit {proc.poll()})"
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait(30)
    assert not out.exists()
    leftovers = list((tmp_path / "feat").glob(f"images-0.h5{TMP_MARKER}*"))
    assert [p.name for p in leftovers] == [f"images-0.h5{TMP_MARKER}{proc.pid}"]
    extract_image_features(manifest, tmp_path, TinyImageTeacher(), out, shard=0, num_shards=1,
                           batch_size=3, num_workers=0)
    with FeatureStore.from_dir(tmp_path / "feat", "images") as store:  # the stale tmp is ignored
        assert len(store) == 11


def test_store_tokens_needs_token_teacher(tmp_path: Path) -> None:
    manifest = make_images(tmp_path, n=3)
    teacher = TinyImageTeacher()
    teacher.token_shape = None
    with pytest.raises(ValueError, match="exposes no token features"):
        extract_image_features(manifest, tmp_path, teacher, tmp_path / "images-0.h5", shard=0,
                               num_shards=1, num_workers=0, store_tokens=True)
    assert teacher.calls == 0


def test_text_extraction(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import softref.features.extract as extract

    monkeypatch.setattr(extract, "TEXT_CHUNK", 4)  # several chunks per shard
    n = 23
    captions = [f"A Person in a {'red' if i % 2 else 'Blue'} coat #{i}" for i in range(n)]
    df = pd.DataFrame({
        "text_id": [f"tx{i:03d}" for i in range(n)],
        "image_id": [f"im{i // 2:02d}" for i in range(n)],
        "identity": [f"p{i // 4}" for i in range(n)],
        "caption": captions,
        "split": ["train"] * n,
    })
    manifest = tmp_path / "texts.parquet"
    write_manifest(df, manifest, "texts")
    teacher = CharTextTeacher()
    out_dir = tmp_path / "feat"
    for shard in range(3):
        extract_text_features(manifest, teacher, out_dir / f"texts-{shard}.h5", shard=shard,
                              num_shards=3, batch_size=2)
    assert teacher.seen == [c.lower() for c in captions]
    attrs = read_shard_attrs(out_dir / "texts-2.h5")
    assert attrs["modality"] == "texts" and attrs["normalized"] is True and attrs["teacher"] == "chars"
    with FeatureStore.from_dir(out_dir, "texts") as store:
        expected = CharTextTeacher().encode([c.lower() for c in captions])
        np.testing.assert_allclose(store.get(df["text_id"].tolist()), expected, rtol=2e-3, atol=2e-3)
    report = validate_shards(out_dir, texts_manifest=manifest)
    assert report.ok, report.problems


# ---------------------------------------------------------------------------------------------
# The real demo teachers (weights fetched by `make install`)
# ---------------------------------------------------------------------------------------------
@pytest.mark.slow
def test_real_demo_teachers(tmp_path: Path, demo_teachers: dict[str, Path]) -> None:
    from softref.teachers import TeacherSpec, load_teacher

    image_teacher = load_teacher(TeacherSpec(name="efficientnet-lite0", kind="efficientnet-lite0", modality="image",
                                             weights=str(demo_teachers["efficientnet-lite0"])))
    manifest = make_images(tmp_path, n=6)
    out_dir = tmp_path / "feat"
    extract_image_features(manifest, tmp_path, image_teacher, out_dir / "images-0.h5", shard=0, num_shards=1,
                           batch_size=4, num_workers=1)
    ids = [f"im{i:02d}" for i in range(6)]
    with FeatureStore.from_dir(out_dir, "images", expect={"weights_sha256": image_teacher.weights_sha256}) as store:
        expected = direct(image_teacher, tmp_path, ids)
        np.testing.assert_allclose(store.get(ids), expected, rtol=2e-3, atol=2e-3 * np.abs(expected).max())
        assert store.dim == 1280 and store.attrs["normalized"] is False

    text_teacher = load_teacher(TeacherSpec(name="all-mpnet-base-v2", kind="sentence-transformers", modality="text",
                                            weights=str(demo_teachers["all-mpnet-base-v2"])))
    captions = ["A man in a RED jacket.", "She wears blue jeans, white shoes", "a dog"]
    df = pd.DataFrame({"text_id": ["t0", "t1", "t2"], "image_id": ["im00", "im01", "im02"],
                       "identity": ["p0", "p0", "p0"], "caption": captions, "split": ["train"] * 3})
    texts = tmp_path / "texts.parquet"
    write_manifest(df, texts, "texts")
    extract_text_features(texts, text_teacher, out_dir / "texts-0.h5", shard=0, num_shards=1)
    with FeatureStore.from_dir(out_dir, "texts") as store:
        expected = text_teacher.encode([text_teacher.preprocess_text(c) for c in captions])
        np.testing.assert_allclose(store.get(["t0", "t1", "t2"]), expected, atol=2e-3)
        assert store.attrs["normalized"] is True and store.dim == 768
    assert validate_shards(out_dir, images_manifest=manifest, texts_manifest=texts).ok
