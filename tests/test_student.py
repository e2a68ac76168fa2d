"""The CUSA student on the tiny demo config: shapes, heads, temperatures, gradients, state dicts;
non-square ViT students (position embeddings interpolated from the pretrained grid) and a fixed tau."""

from __future__ import annotations

import pickle

import open_clip
import pytest
import torch
import torch.nn.functional as F
from open_clip.transform import PreprocessCfg, image_transform_v2
from PIL import Image

from softref.checkpoints import save_checkpoint
from softref.losses import cusa_objective
from softref.models.student import MODEL_CONFIG_DIR, Student, load_student, register_model_configs
from softref.train.trainer import parameter_groups

BATCH = 6


@pytest.fixture(scope="module")
def student() -> Student:
    torch.manual_seed(0)
    return Student("softref-tiny")


@pytest.fixture(scope="module")
def inputs(student):
    gen = torch.Generator().manual_seed(1)
    images = torch.randn(BATCH, 3, student.image_size, student.image_size, generator=gen)
    colours = ["red", "blue", "green", "black", "white", "grey"]
    captions = [f"a {c} bird with a {p} beak" for c, p in zip(colours, ["short", "long"] * 3)]
    return images, student.tokenizer(captions)


@pytest.fixture
def teachers():
    gen = torch.Generator().manual_seed(2)
    return torch.randn(BATCH, 40, generator=gen).half(), torch.randn(BATCH, 24, generator=gen)


def test_register_model_configs_is_idempotent():
    register_model_configs()
    count = len(open_clip.list_models())
    register_model_configs()
    assert len(open_clip.list_models()) == count
    assert "softref-tiny" in open_clip.list_models()
    cfg = open_clip.get_model_config("softref-tiny")
    assert cfg["text_cfg"]["vocab_size"] == 49408
    assert (MODEL_CONFIG_DIR / "softref-tiny.json").is_file()


def test_attributes(student):
    assert student.embed_dim == 64
    assert student.image_size == 64
    tokens = student.tokenizer(["a bird"])
    assert tokens.shape == (1, 32)
    pixels = student.transform(Image.new("RGB", (90, 70), (200, 10, 10)))
    assert pixels.shape == (3, 64, 64)
    # DataLoader workers receive the transform by pickling.
    assert pickle.loads(pickle.dumps(student.transform))(Image.new("RGB", (64, 64))).shape == (3, 64, 64)


def test_forward_shapes_and_norms(student, inputs):
    out = student(*inputs)
    for key in ("image_emb", "text_emb", "image_uni", "text_uni"):
        assert out[key].shape == (BATCH, 64), key
        assert torch.allclose(out[key].norm(dim=-1), torch.ones(BATCH), atol=1e-5), key
    for key in ("tau", "tau_c", "tau_image", "tau_text"):
        assert out[key].dim() == 0 and out[key].requires_grad, key
    assert out["tau"].item() == pytest.approx(0.05)
    assert out["tau_c"].item() == pytest.approx(0.45)
    # Cross and uni heads are distinct projections of the same features.
    assert not torch.allclose(out["image_emb"], out["image_uni"])


def test_encode_matches_forward(student, inputs):
    student.eval()
    with torch.no_grad():
        out = student(*inputs)
        assert torch.allclose(student.encode_image(inputs[0]), out["image_emb"], atol=1e-6)
        assert torch.allclose(student.encode_image(inputs[0], head="uni"), out["image_uni"], atol=1e-6)
        assert torch.allclose(student.encode_text(inputs[1]), out["text_emb"], atol=1e-6)
        assert torch.allclose(student.encode_text(inputs[1], head="uni"), out["text_uni"], atol=1e-6)
    with pytest.raises(ValueError, match="head: expected one of"):
        student.encode_text(inputs[1], head="both")


def _head_grads(student: Student) -> dict[str, float]:
    grads = {}
    for name in ("image_cross_proj", "text_cross_proj", "image_uni_proj", "text_uni_proj"):
        weight = getattr(student, name)[1].weight
        grads[name] = 0.0 if weight.grad is None else float(weight.grad.abs().sum())
    return grads


def test_cusa_gradients_reach_all_heads_and_temperatures(student, inputs, teachers):
    student.train()
    student.zero_grad(set_to_none=True)
    out = student(*inputs)
    positives = torch.eye(BATCH, dtype=torch.bool)
    positives[0, 1] = positives[1, 0] = True
    cusa_objective(out, *teachers, positives, "cusa")["total"].backward()
    for name in ("tau", "tau_c", "tau_image", "tau_text"):
        grad = getattr(student, name).grad
        assert grad is not None and grad.abs().item() > 0, name
    assert all(value > 0 for value in _head_grads(student).values()), _head_grads(student)
    assert student.clip.logit_scale.grad is None and not student.clip.logit_scale.requires_grad


def test_base_method_leaves_uni_heads_without_gradient(student, inputs, teachers):
    student.zero_grad(set_to_none=True)
    out = student(*inputs)
    cusa_objective(out, None, None, None, "base")["total"].backward()
    grads = _head_grads(student)
    assert grads["image_cross_proj"] > 0 and grads["text_cross_proj"] > 0
    assert grads["image_uni_proj"] == 0 and grads["text_uni_proj"] == 0
    assert student.tau.grad is not None and student.tau_c.grad is None


def test_temperatures_are_clamped_at_forward(inputs):
    torch.manual_seed(0)
    model = Student("softref-tiny", tau_range=(0.02, 0.08), tau_init=0.05)
    with torch.no_grad():
        model.tau.fill_(0.5)
        model.tau_c.fill_(0.01)
        model.tau_image.fill_(3.0)
        model.tau_text.fill_(-1.0)
    out = model(*inputs)
    assert out["tau"].item() == pytest.approx(0.08)
    assert out["tau_c"].item() == pytest.approx(0.10)
    assert out["tau_image"].item() == pytest.approx(1.0)
    assert out["tau_text"].item() == pytest.approx(0.10)
    assert model.tau.item() == pytest.approx(0.08)  # clamped in place


def test_bad_temperature_settings_raise():
    with pytest.raises(ValueError, match="tau_init: expected a value in"):
        Student("softref-tiny", tau_init=0.5)
    with pytest.raises(ValueError, match="tau_c_range"):
        Student("softref-tiny", tau_c_range=(0.9, 0.1))


def test_unknown_architecture_and_missing_weights_raise(tmp_path):
    with pytest.raises(ValueError, match="unknown open_clip architecture 'no-such-model'"):
        Student("no-such-model")
    with pytest.raises(FileNotFoundError, match="missing.pt"):
        Student("softref-tiny", pretrained=str(tmp_path / "missing.pt"))


def test_state_dict_round_trip(student, inputs, tmp_path):
    path = tmp_path / "student.pt"
    torch.save(student.state_dict(), path)
    torch.manual_seed(123)  # a different random init
    restored = Student("softref-tiny")
    restored.load_state_dict(torch.load(path, weights_only=True))
    student.eval()
    restored.eval()
    with torch.no_grad():
        expected, got = student(*inputs), restored(*inputs)
    for key in expected:
        assert torch.equal(expected[key], got[key]), key


def test_clip_weights_load_through_pretrained_path(student, inputs, tmp_path):
    path = tmp_path / "clip.pt"
    torch.save(student.clip.state_dict(), path)
    torch.manual_seed(321)
    loaded = Student("softref-tiny", pretrained=str(path))
    student.eval()
    loaded.eval()
    with torch.no_grad():
        assert torch.equal(student.clip.encode_image(inputs[0]), loaded.clip.encode_image(inputs[0]))
        assert torch.equal(student.clip.encode_text(inputs[1]), loaded.clip.encode_text(inputs[1]))


# ---------------------------------------------------------------------------------------------
# Non-square students, fixed temperature
# ---------------------------------------------------------------------------------------------


def _interpolated_grid(original: torch.Tensor, old: tuple[int, int], new: tuple[int, int]) -> torch.Tensor:
    """The expected position embeddings: class token kept, the patch grid resized bicubic (antialiased)."""
    grid = original[1:].reshape(1, old[0], old[1], -1).permute(0, 3, 1, 2)
    grid = F.interpolate(grid, size=new, mode="bicubic", antialias=True, align_corners=False)
    return torch.cat([original[:1], grid.permute(0, 2, 3, 1).reshape(new[0] * new[1], -1)])


def test_vit_b16_at_384_by_128_interpolates_the_pretrained_position_embeddings(tmp_path):
    # A random-init ViT-B-16 state dict stands in for the pretrained file: nothing is downloaded.
    torch.manual_seed(0)
    square = open_clip.create_model("ViT-B-16")
    path = tmp_path / "vit-b-16.pt"
    torch.save(square.state_dict(), path)
    model = Student("ViT-B-16", str(path), image_size=(384, 128))
    original = square.visual.positional_embedding.detach()
    got = model.clip.visual.positional_embedding.detach()
    assert original.shape == (197, 768) and got.shape == (1 + 24 * 8, 768)
    assert torch.equal(got[0], original[0])  # the class token is kept as it is
    assert torch.allclose(got, _interpolated_grid(original, (14, 14), (24, 8)), atol=1e-6)
    assert not torch.allclose(got[1:193], original[1:193])  # really resized, not truncated
    # Every other weight loads unchanged.
    assert torch.equal(model.clip.visual.conv1.weight, square.visual.conv1.weight)
    assert torch.equal(model.clip.positional_embedding, square.positional_embedding)
    assert model.image_size == (384, 128)
    assert model.transform(Image.new("RGB", (70, 190), (9, 9, 9))).shape == (3, 384, 128)
    model.eval()
    with torch.no_grad():  # one forward: ViT-B-16 is heavy on the CPU
        assert model.encode_image(torch.randn(1, 3, 384, 128)).shape == (1, 512)


def test_a_square_config_is_unchanged():
    """No image_size: the model and the transform are open_clip's own, bit for bit."""
    torch.manual_seed(5)
    student = Student("softref-tiny")
    torch.manual_seed(5)
    clip = open_clip.create_model("softref-tiny")
    reference = clip.state_dict()
    assert all(torch.equal(student.clip.state_dict()[k], reference[k]) for k in reference)
    expected = image_transform_v2(PreprocessCfg(**open_clip.get_model_preprocess_cfg(clip)), is_train=False)
    assert repr(student.transform) == repr(expected)
    image = Image.new("RGB", (90, 70), (200, 10, 10))
    image.putpixel((3, 4), (0, 255, 0))
    assert torch.equal(student.transform(image), expected(image))
    assert student.image_size == 64 and "tau" in dict(student.named_parameters())


def test_a_forced_size_resizes_without_cropping():
    torch.manual_seed(5)
    tall = Student("softref-tiny", image_size=(96, 32))
    assert tall.image_size == (96, 32) and tall.clip.visual.positional_embedding.shape[0] == 1 + 6 * 2
    # A red top row and a blue bottom row survive: the whole image is resized, nothing cropped.
    image = Image.new("RGB", (40, 160), (128, 128, 128))
    for x in range(40):
        image.putpixel((x, 0), (255, 0, 0))
        image.putpixel((x, 159), (0, 0, 255))
    pixels = tall.transform(image)
    assert pixels.shape == (3, 96, 32)
    assert pixels[0, 0].mean() > pixels[2, 0].mean() and pixels[2, -1].mean() > pixels[0, -1].mean()
    with pytest.raises(ValueError, match=r"expected multiples of 'softref-tiny'.s patch size 16"):
        Student("softref-tiny", image_size=(100, 32))
    with pytest.raises(ValueError, match="a non-square input needs an open_clip ViT; 'softref-tiny-rn' is not one"):
        Student("softref-tiny-rn", image_size=(96, 32))


def test_a_fixed_tau_is_not_a_parameter(inputs):
    torch.manual_seed(0)
    model = Student("softref-tiny", tau_init=0.02, tau_fixed=True)
    assert "tau" not in dict(model.named_parameters()) and "tau" in model.state_dict()
    assert all(p is not model.tau for g in parameter_groups(model, 1e-4) for p in g["params"])
    out = model(*inputs)
    assert out["tau"].item() == pytest.approx(0.02) and not out["tau"].requires_grad
    assert out["tau_c"].requires_grad  # CUSA's other temperatures still learn
    with pytest.raises(ValueError, match="a fixed temperature must be positive"):
        Student("softref-tiny", tau_init=0.0, tau_fixed=True)
    # Learned, 0.02 is a start value, and a parameter.
    assert "tau" in dict(Student("softref-tiny", tau_init=0.02).named_parameters())


def test_load_student_rebuilds_size_and_temperature(inputs, tmp_path):
    torch.manual_seed(0)
    model = Student("softref-tiny", image_size=(96, 32), tau_init=0.02, tau_fixed=True)
    config = {"student": {"name": "tiny", "architecture": "softref-tiny", "image_size": [96, 32]},
              "experiment": {"name": "e", "tau_mode": "fixed", "tau": 0.02}}
    save_checkpoint({"model": model.state_dict(), "config": config}, tmp_path / "checkpoint.pt")
    loaded, _ = load_student(tmp_path / "checkpoint.pt")
    assert loaded.image_size == (96, 32) and loaded.tau_fixed and "tau" not in dict(loaded.named_parameters())
    assert repr(loaded.transform) == repr(model.transform)
    images = torch.randn(2, 3, 96, 32)
    model.eval()
    with torch.no_grad():
        assert torch.equal(loaded.encode_image(images), model.encode_image(images))


def test_a_convolutional_tower_runs_channels_last_with_the_same_outputs_and_gradients(tmp_path):
    """softref-tiny-rn (a ResNet) trains and evaluates in the channels-last layout: its conv weights
    are stored so and its inputs converted by a hook, whatever layout the caller gives. Against the
    default layout with the same weights: the same embeddings and gradients up to float rounding,
    and a checkpoint of either loads into the other. A ViT keeps the default layout."""
    torch.manual_seed(0)
    default = Student("softref-tiny-rn", channels_last=False)
    last = Student("softref-tiny-rn")
    last.load_state_dict(default.state_dict())
    assert last.channels_last and not default.channels_last
    assert last.clip.visual.conv1.weight.is_contiguous(memory_format=torch.channels_last)
    assert not last.clip.visual.conv1.weight.is_contiguous()
    assert default.clip.visual.conv1.weight.is_contiguous()
    assert not Student("softref-tiny").channels_last  # one Conv2d: the patch embedding

    gen = torch.Generator().manual_seed(3)
    images = torch.randn(4, 3, 64, 64, generator=gen)
    tokens = default.tokenize(["a red cube", "a blue ball", "two green cones", "a white ring"])
    for model in (default, last):
        out = model(images, tokens)
        contrastive = F.cross_entropy(out["image_emb"] @ out["text_emb"].T / out["tau"], torch.arange(4))
        contrastive.backward()
    with torch.no_grad():
        assert torch.allclose(default(images, tokens)["image_emb"], last(images, tokens)["image_emb"], atol=1e-5)
    for (name, a), (_, b) in zip(default.named_parameters(), last.named_parameters()):
        if a.grad is not None:
            assert torch.allclose(a.grad, b.grad, rtol=1e-4, atol=1e-5), name

    config = {"student": {"name": "tiny", "architecture": "softref-tiny-rn"}, "experiment": {"name": "e"}}
    save_checkpoint({"model": last.state_dict(), "config": config}, tmp_path / "checkpoint.pt")
    loaded, _ = load_student(tmp_path / "checkpoint.pt")
    assert loaded.channels_last
    default.load_state_dict(loaded.state_dict())  # and back into the default layout
    default.eval()
    last.eval()
    with torch.no_grad():
        nchw = images.contiguous()
        assert torch.equal(loaded.encode_image(nchw), last.encode_image(nchw))
        assert torch.allclose(default.encode_image(nchw), loaded.encode_image(nchw), atol=1e-5)
