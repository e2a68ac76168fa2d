"""The oracle-attributes teacher: the demo's facts as features, extracted by path from real files."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from softref.config import TeacherSpec
from softref.data.adapters import prepare
from softref.data.manifest import read_images, read_texts
from softref.data.synthetic import synthesize_demo
from softref.features.extract import ImageReadError, extract_image_features, extract_text_features
from softref.features.store import FeatureStore
from softref.files import file_sha256
from softref.teachers import TeacherError, load_teacher


@pytest.fixture(scope="module")
def demo(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("oracle")
    paths = synthesize_demo(root / "demo", num_identities=8, images_per_identity=2, captions_per_image=2,
                            image_size=32, person_size=(32, 16), sts_pairs=0)
    prepare("karpathy", paths["coco_root"], root / "coco", identity_pattern=r"^id(\d+)_")
    prepare("cuhk-pedes", paths["person_root"], root / "person")
    return {**paths, "coco_manifests": root / "coco", "person_manifests": root / "person"}


def spec(weights: Path, modality: str = "image", **extra) -> TeacherSpec:
    return TeacherSpec(name=f"oracle-{modality}", kind="oracle-attributes", modality=modality, weights=str(weights),
                       **extra)


def naive_vector(facts: dict[str, str], vocabulary: list[dict]) -> np.ndarray:
    """One block per fact of the sidecar's vocabulary, a 1 at the value's place (zeros when absent)."""
    blocks = []
    for entry in vocabulary:
        block = np.zeros(len(entry["values"]), dtype=np.float32)
        if entry["name"] in facts:
            block[entry["values"].index(facts[entry["name"]])] = 1.0
        blocks.append(block)
    return np.concatenate(blocks)


def extract_images(demo, part: str, teacher, out: Path) -> None:
    extract_image_features(demo[f"{part}_manifests"] / "images.parquet", demo[f"{part}_root"], teacher, out,
                           shard=0, num_shards=1, num_workers=0, batch_size=5)


@pytest.mark.parametrize("part", ["coco", "person"])
def test_image_features_are_the_facts_each_image_shows(demo, part, tmp_path):
    sidecar = json.loads(demo["oracle_attributes"].read_text())
    teacher = load_teacher(spec(demo["oracle_attributes"]))
    extract_images(demo, part, teacher, tmp_path / "images-0.h5")
    images = read_images(demo[f"{part}_manifests"] / "images.parquet")
    folder = "coco" if part == "coco" else "person"
    with FeatureStore.from_dir(tmp_path, "images") as store:
        got = store.get(images["image_id"].tolist())
        assert store.attrs["weights_sha256"] == file_sha256(demo["oracle_attributes"])
        assert "oracle-attributes" in store.attrs["preprocess"]
    expected = np.stack([naive_vector(sidecar["images"][f"{folder}/{p}"], sidecar["facts"]) for p in images["path"]])
    np.testing.assert_array_equal(got, expected)
    # COCO-style scenes show all 12 facts, person crops the 6 figure facts.
    assert set(got.sum(axis=1).tolist()) == {12.0 if part == "coco" else 6.0}


def test_text_features_are_the_facts_each_caption_mentions(demo, tmp_path):
    sidecar = json.loads(demo["oracle_attributes"].read_text())
    teacher = load_teacher(spec(demo["oracle_attributes"], "text"))
    texts = read_texts(demo["coco_manifests"] / "texts.parquet")
    extract_text_features(demo["coco_manifests"] / "texts.parquet", teacher, tmp_path / "texts-0.h5", shard=0,
                          num_shards=1)
    with FeatureStore.from_dir(tmp_path, "texts") as store:
        got = store.get(texts["text_id"].tolist())
    expected = np.stack([naive_vector(sidecar["captions"][c], sidecar["facts"]) for c in texts["caption"]])
    np.testing.assert_array_equal(got, expected)
    assert 2 <= got.sum(axis=1).min() and got.sum(axis=1).max() <= 7


def test_images_are_looked_up_by_path_never_decoded(demo, tmp_path):
    """An undecodable file stops the pixel route (ImageReadError) but not the oracle, which reads no pixels."""
    root = tmp_path / "demo"
    shutil.copytree(demo["coco_root"].parent, root)
    images = read_images(demo["coco_manifests"] / "images.parquet")
    (root / "coco" / images["path"].iloc[0]).write_bytes(b"not a png")
    teacher = load_teacher(spec(root / "oracle_attributes.json"))
    extract_image_features(demo["coco_manifests"] / "images.parquet", root / "coco", teacher, tmp_path / "f" / "images-0.h5",
                           shard=0, num_shards=1, num_workers=0)
    assert (tmp_path / "f" / "images-0.h5").is_file()

    class Pixels:  # the smallest pixel teacher: the route the oracle must not take
        name, dim, weights_sha256, preprocess_description, normalized, device = "px", 3, "x", "mean", False, "cpu"

        @staticmethod
        def transform(image):
            import torchvision.transforms.functional as F
            return F.to_tensor(image.resize((4, 4)))

        @staticmethod
        def encode(pixels):
            return pixels.mean(dim=(2, 3))

    with pytest.raises(ImageReadError, match=images["path"].iloc[0].split("/")[-1]):
        extract_image_features(demo["coco_manifests"] / "images.parquet", root / "coco", Pixels(), tmp_path / "p" / "images-0.h5",
                               shard=0, num_shards=1, num_workers=0)


def test_what_the_sidecar_lacks_is_named(demo, tmp_path):
    sidecar = json.loads(demo["oracle_attributes"].read_text())
    images = read_images(demo["coco_manifests"] / "images.parquet")
    texts = read_texts(demo["coco_manifests"] / "texts.parquet")
    gone_image = f"coco/{images['path'].iloc[3]}"
    gone_caption = texts["caption"].iloc[2]
    del sidecar["images"][gone_image], sidecar["captions"][gone_caption]
    root = tmp_path / "demo"
    shutil.copytree(demo["coco_root"].parent, root)
    (root / "oracle_attributes.json").write_text(json.dumps(sidecar))
    with pytest.raises(TeacherError, match=rf"image .*{images['path'].iloc[3]} .*is not in the fact table"):
        extract_images({**demo, "coco_root": root / "coco"}, "coco", load_teacher(spec(root / "oracle_attributes.json")),
                       tmp_path / "f" / "images-0.h5")
    assert not (tmp_path / "f" / "images-0.h5").exists()
    with pytest.raises(TeacherError, match="is not in the fact table"):
        extract_text_features(demo["coco_manifests"] / "texts.parquet", load_teacher(spec(root / "oracle_attributes.json", "text")),
                              tmp_path / "f" / "texts-0.h5", shard=0, num_shards=1)


def test_loading_checks_the_sidecar(demo, tmp_path):
    sha = file_sha256(demo["oracle_attributes"])
    assert load_teacher(spec(demo["oracle_attributes"], weights_sha256=sha)).weights_sha256 == sha
    with pytest.raises(TeacherError, match="sha256"):
        load_teacher(spec(demo["oracle_attributes"], weights_sha256="0" * 64))
    with pytest.raises(FileNotFoundError, match="fact table .* not found"):
        load_teacher(spec(tmp_path / "absent.json"))
    (tmp_path / "other.json").write_text(json.dumps({"format": "something else"}))
    with pytest.raises(TeacherError, match="expected format 'softref-oracle-attributes/1'"):
        load_teacher(spec(tmp_path / "other.json"))
    with pytest.raises(TeacherError, match="pre_caption must be false"):
        load_teacher(spec(demo["oracle_attributes"], "text", pre_caption=True))
    outside = load_teacher(spec(demo["oracle_attributes"]))
    with pytest.raises(TeacherError, match="not under the fact table's folder"):
        outside.encode_paths([str(tmp_path / "elsewhere.png")])


def test_config_declares_the_oracle_on_the_file_the_demo_rule_writes():
    from softref.config import read_config

    repo = Path(__file__).resolve().parents[1]
    cfg = read_config(repo / "config.yaml")
    rule = (repo / "workflow" / "rules" / "data.smk").read_text()
    for modality in ("image", "text"):
        teacher = cfg.teachers[f"oracle-{modality}"]
        assert (teacher.kind, teacher.modality) == ("oracle-attributes", modality)
        assert f'oracle="{teacher.weights}"' in rule
