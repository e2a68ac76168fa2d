"""The `softref` command: inspect, validate, neighbours and error reporting, via main([...])."""

from __future__ import annotations

from pathlib import Path

import h5py
import numpy as np
import pandas as pd
import pytest

from softref.cli import build_parser, main
from softref.data.manifest import file_sha256, write_manifest
from softref.features import ShardWriter


def _write_shard(path: Path, ids: list[str], feats: np.ndarray, modality: str, shard: int,
                 num_shards: int, manifest_sha: str) -> None:
    attrs = {"teacher": "toy", "weights_sha256": "a" * 64, "preprocess": "none", "normalized": False,
             "manifest_sha256": manifest_sha, "shard": shard, "num_shards": num_shards,
             "modality": modality}
    with ShardWriter(path, num_rows=len(ids), dim=feats.shape[1], attrs=attrs) as w:
        w.write(0, ids, feats)


@pytest.fixture()
def results(tmp_path: Path) -> Path:
    """results/data/demo/{images,texts}.parquet and results/features/demo/toy/*.h5 (2 shards each)."""
    data = tmp_path / "results" / "data" / "demo"
    n_img, n_txt = 9, 12
    images = pd.DataFrame({
        "image_id": [f"im{i}" for i in range(n_img)],
        "path": [f"imgs/{i}.jpg" for i in range(n_img)],
        "identity": [f"person{i // 3}" for i in range(n_img)],
        "split": ["train"] * 6 + ["test"] * 3,
    })
    texts = pd.DataFrame({
        "text_id": [f"tx{i:02d}" for i in range(n_txt)],
        "image_id": [f"im{i % n_img}" for i in range(n_txt)],
        "identity": [f"person{(i % n_img) // 3}" for i in range(n_txt)],
        "caption": [f"caption number {i}" for i in range(n_txt)],
        "split": ["train" if (i % n_img) < 6 else "test" for i in range(n_txt)],
    })
    write_manifest(images, data / "images.parquet", "images")
    write_manifest(texts, data / "texts.parquet", "texts")
    feat_dir = tmp_path / "results" / "features" / "demo" / "toy"
    rng = np.random.default_rng(0)
    for modality, df, id_col in (("images", images, "image_id"), ("texts", texts, "text_id")):
        sha = file_sha256(data / f"{modality}.parquet")
        ids = sorted(df[id_col])
        feats = rng.standard_normal((len(ids), 4)).astype(np.float32)
        if modality == "images":
            feats[4] = feats[0] * 3 + 0.01  # im4 is im0's nearest neighbour by cosine
        for s, rows in enumerate(np.array_split(np.arange(len(ids)), 2)):
            _write_shard(feat_dir / f"{modality}-{s}.h5", [ids[r] for r in rows], feats[rows],
                         modality, s, 2, sha)
    return tmp_path / "results"


def test_every_subcommand_has_help() -> None:
    parser = build_parser()
    sub = next(a for a in parser._actions if a.__class__.__name__ == "_SubParsersAction")
    assert set(sub.choices) == {"inspect", "validate", "neighbours", "prepare", "check-dataset", "check-config",
                                "fetch-teachers", "teacher-diagnostics", "report"}
    helps = {a.dest: a.help for a in sub._choices_actions}
    assert all(helps[name] for name in sub.choices)


def test_inspect_shard(results: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = results / "features" / "demo" / "toy" / "images-0.h5"
    assert main(["inspect", str(path), "--ids", "2"]) == 0
    out = capsys.readouterr().out
    assert "teacher: 'toy'" in out and "complete: True" in out
    assert "features: shape (5, 4), dtype float16, chunks" in out
    assert "row L2 norms over 5 of 5 rows" in out and "non-finite rows in the sample: 0" in out
    assert "first 2 ids:\n  im0\n  im1\n" in out


def test_inspect_manifest(results: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["inspect", str(results / "data" / "demo" / "images.parquet"), "--ids", "3"]) == 0
    out = capsys.readouterr().out
    assert "(images): 9 rows" in out and "  test: 3\n" in out and "  train: 6\n" in out
    assert "first 3 rows:" in out and "imgs/0.jpg" in out


def test_validate_ok_and_problems(results: Path, capsys: pytest.CaptureFixture[str]) -> None:
    feat_dir = results / "features" / "demo" / "toy"
    manifests = ["--images-manifest", str(results / "data" / "demo" / "images.parquet"),
                 "--texts-manifest", str(results / "data" / "demo" / "texts.parquet")]
    assert main(["validate", str(feat_dir), *manifests]) == 0
    out = capsys.readouterr().out
    assert "4 shard file(s)" in out and "images-0.h5: shard 0/2, 5 rows x 4 float16" in out
    assert "ok: no problems found" in out

    with h5py.File(feat_dir / "texts-1.h5", "a") as f:
        f["features"][2] = np.inf
    assert main(["validate", str(feat_dir), *manifests]) == 1
    out = capsys.readouterr().out
    assert "1 problem(s):" in out and "texts-1.h5: 1 row(s) with NaN/inf features; first: row 2 id 'tx08'" in out


def test_neighbours(results: Path, capsys: pytest.CaptureFixture[str]) -> None:
    feat_dir = results / "features" / "demo" / "toy"
    assert main(["neighbours", str(feat_dir), "--id", "im0", "--k", "3"]) == 0
    out = capsys.readouterr().out
    lines = out.splitlines()
    assert lines[0] == "im0 (images, teacher toy): identity person0 | imgs/0.jpg"
    assert lines[1] == "3 nearest images by cosine similarity:"
    assert "im4" in lines[2] and "+1.00" in lines[2] and "identity person1 | imgs/4.jpg" in lines[2]
    assert len(lines) == 5 and not any(" im0 " in line for line in lines[2:])

    assert main(["neighbours", str(feat_dir), "--id", "tx03", "--k", "2",
                 "--manifest-dir", str(results / "data" / "demo")]) == 0
    out = capsys.readouterr().out
    assert out.startswith("tx03 (texts, teacher toy): identity person1 | image im3 | 'caption number 3'")
    assert "'caption number" in out.splitlines()[2]


def test_neighbours_matches_brute_force(results: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from softref.cli import nearest
    from softref.features import FeatureStore

    with FeatureStore.from_dir(results / "features" / "demo" / "toy", "texts") as store:
        feats = store.get(store.ids).astype(np.float64)
        unit = feats / np.linalg.norm(feats, axis=1, keepdims=True)
        scores = unit @ unit[5]
        scores[5] = -np.inf
        expected = [store.ids[i] for i in np.argsort(-scores)[:4]]
        got = nearest(store, feats[5], 4, exclude=store.ids[5])
    assert [g[0] for g in got] == expected
    np.testing.assert_allclose([g[1] for g in got], np.sort(scores)[::-1][:4], atol=1e-5)


def test_unknown_id_is_an_error(results: Path, capsys: pytest.CaptureFixture[str]) -> None:
    feat_dir = results / "features" / "demo" / "toy"
    assert main(["neighbours", str(feat_dir), "--id", "ghost"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("softref: error: id 'ghost' is in no images or texts shard of")
    assert str(feat_dir) in err and "Traceback" not in err


def test_error_and_debug_traceback(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                   caplog: pytest.LogCaptureFixture) -> None:
    missing = tmp_path / "nothing.h5"
    assert main(["inspect", str(missing)]) == 2
    captured = capsys.readouterr()
    assert captured.err.strip() == f"softref: error: no such file: {missing}"
    assert "Traceback" not in captured.err
    with caplog.at_level("DEBUG", logger="softref"):
        assert main(["--log-level", "DEBUG", "inspect", str(missing)]) == 2
    assert any(r.exc_info for r in caplog.records)
    junk = tmp_path / "x.txt"
    junk.write_text("x")
    assert main(["inspect", str(junk)]) == 2
    assert "expected a feature shard (.h5) or a manifest (.parquet)" in capsys.readouterr().err


def test_validate_missing_dir(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["validate", str(tmp_path / "absent")]) == 2
    assert "feature directory not found" in capsys.readouterr().err


def test_prepare_karpathy(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    import json

    from PIL import Image

    root = tmp_path / "flickr"
    (root / "images").mkdir(parents=True)
    records = []
    for i, split in enumerate(["train", "train", "test"]):
        Image.new("RGB", (8, 8)).save(root / "images" / f"{i}.jpg")
        records.append({"filename": f"{i}.jpg", "imgid": i, "split": split,
                        "sentences": [{"raw": f"A dog {i}.", "sentid": 10 * i + k, "imgid": i} for k in range(2)]})
    (root / "dataset.json").write_text(json.dumps({"images": records}))
    out_dir = tmp_path / "manifests"
    assert main(["prepare", "karpathy", str(root), str(out_dir), "--annotations", "dataset.json"]) == 0
    out = capsys.readouterr().out
    assert f"wrote {out_dir / 'images.parquet'}" in out and "train: 2 images, 4 texts" in out
    (root / "images" / "2.jpg").unlink()
    assert main(["prepare", "karpathy", str(root), str(out_dir), "--annotations", "dataset.json"]) == 2
    assert "softref: error:" in capsys.readouterr().err
    assert main(["prepare", "karpathy", str(root), str(out_dir), "--annotations", "dataset.json",
                 "--skip-missing"]) == 0
    assert "skipped 1 missing images and 2 captions" in capsys.readouterr().out


def test_fetch_teachers_calls_fetch(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                    monkeypatch: pytest.MonkeyPatch) -> None:
    import softref.teachers.fetch as fetch

    seen = []

    def fake(dest: Path) -> dict[str, Path]:
        seen.append(dest)
        return {"all-mpnet-base-v2": dest / "all-mpnet-base-v2"}

    monkeypatch.setattr(fetch, "fetch_demo_teachers", fake)
    assert main(["fetch-teachers", str(tmp_path / "m")]) == 0
    assert seen == [tmp_path / "m"]
    assert capsys.readouterr().out == f"all-mpnet-base-v2: {tmp_path / 'm' / 'all-mpnet-base-v2'}\n"
    assert build_parser().parse_args(["fetch-teachers"]).dest == "models"
