"""Losses against naive per-row loop implementations (softmax, CE and KL written by hand)."""

from __future__ import annotations

import math

import pytest
import torch

from softref.losses import CUSA_METHODS, contrastive_loss, csa_loss, cusa_objective, usa_loss


def _unit(row: list[float]) -> list[float]:
    norm = math.sqrt(sum(v * v for v in row))
    return [v / norm for v in row]


def _dot(a: list[float], b: list[float]) -> float:
    return sum(x * y for x, y in zip(a, b))


def _softmax(row: list[float]) -> list[float]:
    top = max(row)
    exps = [math.exp(v - top) for v in row]
    total = sum(exps)
    return [e / total for e in exps]


def _rows(x: torch.Tensor) -> list[list[float]]:
    return [_unit([float(v) for v in row]) for row in x.double()]


def _sim(a: list[list[float]], b: list[list[float]], tau: float) -> list[list[float]]:
    return [[_dot(x, y) / tau for y in b] for x in a]


def _soft_ce(logits: list[list[float]], pos: list[list[bool]]) -> float:
    total = 0.0
    for row, flags in zip(logits, pos):
        probs = _softmax(row)
        count = sum(flags)
        total += -sum((1.0 / count) * math.log(p) for p, f in zip(probs, flags) if f)
    return total / len(logits)


def _kl_rows(teacher_logits: list[list[float]], student_logits: list[list[float]]) -> float:
    total = 0.0
    for t_row, s_row in zip(teacher_logits, student_logits):
        p, q = _softmax(t_row), _softmax(s_row)
        total += sum(pi * (math.log(pi) - math.log(qi)) for pi, qi in zip(p, q))
    return total / len(teacher_logits)


def _transpose(m):
    return [list(col) for col in zip(*m)]


def naive_contrastive(img, txt, tau, positives=None):
    a, b = _rows(img), _rows(txt)
    n = len(a)
    pos = [[i == j for j in range(n)] for i in range(n)] if positives is None else positives.tolist()
    logits = _sim(a, b, tau)
    return (_soft_ce(logits, pos) + _soft_ce(_transpose(logits), _transpose(pos))) / 2


def naive_csa(img, txt, t_img, t_txt, tau, teacher_tau=1.0):
    a, b = _rows(img), _rows(txt)
    ti, tt = _rows(t_img.reshape(len(a), -1)), _rows(t_txt.reshape(len(a), -1))
    logits = _sim(a, b, tau)
    return (
        _kl_rows(_sim(ti, ti, teacher_tau), logits) + _kl_rows(_sim(tt, tt, teacher_tau), _transpose(logits))
    ) / 2


def naive_usa(u, v, t_img, t_txt, tau_i, tau_t, teacher_tau=1.0):
    a, b = _rows(u), _rows(v)
    ti, tt = _rows(t_img), _rows(t_txt)
    return (
        _kl_rows(_sim(ti, ti, teacher_tau), _sim(a, a, tau_i))
        + _kl_rows(_sim(tt, tt, teacher_tau), _sim(b, b, tau_t))
    ) / 2


@pytest.fixture
def batch():
    gen = torch.Generator().manual_seed(7)
    b, d = 6, 5
    return {
        "img": torch.randn(b, d, generator=gen) * 3,  # not unit norm on purpose
        "txt": torch.randn(b, d, generator=gen) * 0.5,
        "t_img": torch.randn(b, 11, generator=gen),  # teacher dims differ from the student's
        "t_txt": torch.randn(b, 7, generator=gen) * 4,
    }


def multi_positive(b: int) -> torch.Tensor:
    # Images 0-2 share an identity; text 4 is also a positive of image 5 (a caption duplicate).
    pos = torch.eye(b, dtype=torch.bool)
    pos[:3, :3] = True
    pos[5, 4] = True
    return pos


def test_contrastive_diagonal_matches_naive(batch):
    got = contrastive_loss(batch["img"], batch["txt"], 0.07)
    assert got.item() == pytest.approx(naive_contrastive(batch["img"], batch["txt"], 0.07), rel=1e-5)


def test_contrastive_diagonal_equals_clip_loss(batch):
    img = torch.nn.functional.normalize(batch["img"], dim=-1)
    txt = torch.nn.functional.normalize(batch["txt"], dim=-1)
    logits = img @ txt.T / 0.05
    labels = torch.arange(len(img))
    ce = torch.nn.functional.cross_entropy
    clip = (ce(logits, labels) + ce(logits.T, labels)) / 2
    assert contrastive_loss(batch["img"], batch["txt"], 0.05).item() == pytest.approx(clip.item(), rel=1e-5)


def test_contrastive_multi_positive_matches_naive(batch):
    pos = multi_positive(6)
    got = contrastive_loss(batch["img"], batch["txt"], 0.05, positives=pos)
    assert got.item() == pytest.approx(naive_contrastive(batch["img"], batch["txt"], 0.05, pos), rel=1e-5)


def test_contrastive_public_code_weighting_divides_by_batch(batch):
    pos = multi_positive(6)
    usual = contrastive_loss(batch["img"], batch["txt"], 0.05, positives=pos)
    public = contrastive_loss(batch["img"], batch["txt"], 0.05, positives=pos, public_code_weighting=True)
    assert public.item() == pytest.approx(usual.item() / 6, rel=1e-6)


def test_contrastive_rejects_rows_without_positive(batch):
    pos = torch.eye(6, dtype=torch.bool)
    pos[2, 2] = False
    with pytest.raises(ValueError, match="1 image row"):
        contrastive_loss(batch["img"], batch["txt"], 0.05, positives=pos)
    with pytest.raises(ValueError, match="positives: expected shape"):
        contrastive_loss(batch["img"], batch["txt"], 0.05, positives=torch.eye(5, dtype=torch.bool))


def test_csa_matches_naive_with_other_teacher_dims(batch):
    got = csa_loss(batch["img"], batch["txt"], batch["t_img"], batch["t_txt"], 0.45)
    want = naive_csa(batch["img"], batch["txt"], batch["t_img"], batch["t_txt"], 0.45)
    assert got.item() == pytest.approx(want, rel=1e-5)


def test_csa_teacher_tau(batch):
    got = csa_loss(batch["img"], batch["txt"], batch["t_img"], batch["t_txt"], 0.3, teacher_tau=0.2)
    want = naive_csa(batch["img"], batch["txt"], batch["t_img"], batch["t_txt"], 0.3, teacher_tau=0.2)
    assert got.item() == pytest.approx(want, rel=1e-5)


def test_csa_fp16_teacher_is_upcast(batch):
    t_img, t_txt = batch["t_img"].half(), batch["t_txt"].half()
    got = csa_loss(batch["img"], batch["txt"], t_img, t_txt, 0.45)
    # The reference sees the same fp16-rounded values, computed in float64.
    want = naive_csa(batch["img"], batch["txt"], t_img.double(), t_txt.double(), 0.45)
    assert got.dtype == torch.float32
    assert got.item() == pytest.approx(want, rel=1e-5)


def test_csa_token_teacher_features_are_flattened(batch):
    tokens = torch.randn(6, 4, 3, generator=torch.Generator().manual_seed(1))
    got = csa_loss(batch["img"], batch["txt"], tokens, batch["t_txt"], 0.45)
    want = csa_loss(batch["img"], batch["txt"], tokens.reshape(6, 12), batch["t_txt"], 0.45)
    assert got.item() == pytest.approx(want.item(), rel=1e-6)


def test_csa_teacher_gets_no_gradient(batch):
    t_img = batch["t_img"].clone().requires_grad_(True)
    img = batch["img"].clone().requires_grad_(True)
    csa_loss(img, batch["txt"], t_img, batch["t_txt"], 0.45).backward()
    assert t_img.grad is None
    assert img.grad is not None and img.grad.abs().sum() > 0


def test_csa_rejects_teacher_batch_mismatch(batch):
    with pytest.raises(ValueError, match="teacher_image: expected shape \\(6, D_t\\)"):
        csa_loss(batch["img"], batch["txt"], batch["t_img"][:5], batch["t_txt"], 0.45)


def test_usa_matches_naive(batch):
    got = usa_loss(batch["img"], batch["txt"], batch["t_img"], batch["t_txt"], 0.45, 0.8)
    want = naive_usa(batch["img"], batch["txt"], batch["t_img"], batch["t_txt"], 0.45, 0.8)
    assert got.item() == pytest.approx(want, rel=1e-5)


def test_usa_fp16_teacher(batch):
    t_img, t_txt = batch["t_img"].half(), batch["t_txt"].half()
    got = usa_loss(batch["img"], batch["txt"], t_img, t_txt, 0.3, 0.5, teacher_tau=0.5)
    want = naive_usa(batch["img"], batch["txt"], t_img.double(), t_txt.double(), 0.3, 0.5, teacher_tau=0.5)
    assert got.item() == pytest.approx(want, rel=1e-5)


def test_float64_inputs_keep_float64(batch):
    img, txt = batch["img"].double(), batch["txt"].double()
    assert contrastive_loss(img, txt, 0.05).dtype == torch.float64
    got = csa_loss(img, txt, batch["t_img"].double(), batch["t_txt"].double(), 0.45)
    assert got.item() == pytest.approx(naive_csa(img, txt, batch["t_img"], batch["t_txt"], 0.45), rel=1e-10)


@pytest.mark.parametrize("loss_name", ["contrastive", "csa", "usa"])
def test_gradient_reaches_tensor_temperatures(batch, loss_name):
    tau = torch.tensor(0.2, requires_grad=True)
    tau2 = torch.tensor(0.6, requires_grad=True)
    if loss_name == "contrastive":
        loss = contrastive_loss(batch["img"], batch["txt"], tau, positives=multi_positive(6))
    elif loss_name == "csa":
        loss = csa_loss(batch["img"], batch["txt"], batch["t_img"], batch["t_txt"], tau)
    else:
        loss = usa_loss(batch["img"], batch["txt"], batch["t_img"], batch["t_txt"], tau, tau2)
    loss.backward()
    assert tau.grad is not None and tau.grad.abs().item() > 0
    if loss_name == "usa":
        assert tau2.grad is not None and tau2.grad.abs().item() > 0
    # A 0-d tensor temperature gives the same value as the float.
    assert loss.item() == pytest.approx(
        {
            "contrastive": lambda: contrastive_loss(batch["img"], batch["txt"], 0.2, positives=multi_positive(6)),
            "csa": lambda: csa_loss(batch["img"], batch["txt"], batch["t_img"], batch["t_txt"], 0.2),
            "usa": lambda: usa_loss(batch["img"], batch["txt"], batch["t_img"], batch["t_txt"], 0.2, 0.6),
        }[loss_name]().item(),
        rel=1e-6,
    )


def _fake_out(batch):
    return {
        "image_emb": batch["img"],
        "text_emb": batch["txt"],
        "image_uni": batch["img"] * 2 + 1,
        "text_uni": batch["txt"] - 1,
        "tau": torch.tensor(0.05),
        "tau_c": torch.tensor(0.45),
        "tau_image": torch.tensor(0.5),
        "tau_text": torch.tensor(0.6),
    }


@pytest.mark.parametrize("method", sorted(CUSA_METHODS))
def test_cusa_objective_terms(batch, method):
    out = _fake_out(batch)
    pos = multi_positive(6)
    terms = cusa_objective(out, batch["t_img"], batch["t_txt"], pos, method, alpha=0.1, beta=0.5)
    itr = contrastive_loss(out["image_emb"], out["text_emb"], out["tau"], pos)
    csa = csa_loss(out["image_emb"], out["text_emb"], batch["t_img"], batch["t_txt"], out["tau_c"])
    usa = usa_loss(out["image_uni"], out["text_uni"], batch["t_img"], batch["t_txt"], 0.5, 0.6)
    expected_keys = {"itr", "total"} | ({"csa"} if "csa" in CUSA_METHODS[method] else set())
    expected_keys |= {"usa"} if "usa" in CUSA_METHODS[method] else set()
    assert set(terms) == expected_keys
    total = itr.item()
    if "csa" in terms:
        assert terms["csa"].item() == pytest.approx(csa.item())
        total += 0.1 * csa.item()
    if "usa" in terms:
        assert terms["usa"].item() == pytest.approx(usa.item())
        total += 0.5 * usa.item()
    assert terms["itr"].item() == pytest.approx(itr.item())
    assert terms["total"].item() == pytest.approx(total, rel=1e-6)


def test_cusa_objective_base_needs_no_teacher(batch):
    terms = cusa_objective(_fake_out(batch), None, None, None, "base")
    assert set(terms) == {"itr", "total"}
    with pytest.raises(ValueError, match="needs teacher_image and teacher_text"):
        cusa_objective(_fake_out(batch), None, batch["t_txt"], None, "csa")


def test_cusa_objective_unknown_method(batch):
    with pytest.raises(ValueError, match=r"'cusa\+\+'.*\['base', 'csa', 'cusa', 'usa'\]"):
        cusa_objective(_fake_out(batch), batch["t_img"], batch["t_txt"], None, "cusa++")
