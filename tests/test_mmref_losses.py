"""MMRef losses against naive per-row loops (cosines, log-softmax and cross-entropy written by hand)."""

from __future__ import annotations

import math
from dataclasses import replace

import pytest
import torch

from softref.config import MMRefConfig
from softref.losses.mmref import (
    global_fusion_loss,
    identity_contrastive_loss,
    mmref_objective,
    proxy_logits,
    proxy_loss,
    reconstruction_loss,
    reference_guidance_loss,
    soft_identity_targets,
)
from softref.models.mmref import MMRefHead

# ----------------------------------------------------------------------------- naive helpers


def _unit(row: list[float]) -> list[float]:
    norm = math.sqrt(sum(v * v for v in row))
    return [v / norm for v in row]


def _rows(x: torch.Tensor) -> list[list[float]]:
    return [_unit([float(v) for v in row]) for row in x.detach().double()]


def _cos_matrix(a: torch.Tensor, b: torch.Tensor, tau: float) -> list[list[float]]:
    ra, rb = _rows(a), _rows(b)
    return [[sum(x * y for x, y in zip(u, v)) / tau for v in rb] for u in ra]


def _log_softmax(row: list[float]) -> list[float]:
    top = max(row)
    log_total = top + math.log(sum(math.exp(v - top) for v in row))
    return [v - log_total for v in row]


def _soft_ce(logits: list[list[float]], targets: list[list[float]]) -> float:
    losses = []
    for row, target in zip(logits, targets):
        logp = _log_softmax(row)
        losses.append(-sum(t * lp for t, lp in zip(target, logp)))
    return sum(losses) / len(losses)


def _one_hot(index: list[int], size: int) -> list[list[float]]:
    return [[1.0 if j == i else 0.0 for j in range(size)] for i in index]


def _naive_proxy(features: torch.Tensor, refs: torch.Tensor, targets: list[list[float]], tau: float) -> float:
    return _soft_ce(_cos_matrix(features, refs, tau), targets)


def _naive_soft_targets(teacher: torch.Tensor, index: list[int], soft_tau: float, mix: float) -> list[list[float]]:
    sims = _cos_matrix(teacher, teacher, soft_tau)
    out = []
    for i in index:
        probs = [math.exp(v) for v in _log_softmax(sims[i])]
        out.append([(1 - mix) * (1.0 if j == i else 0.0) + mix * p for j, p in enumerate(probs)])
    return out


@pytest.fixture()
def batch() -> dict[str, torch.Tensor]:
    generator = torch.Generator().manual_seed(0)
    return {
        "image": torch.randn(6, 8, generator=generator),
        "text": torch.randn(6, 8, generator=generator),
        "bank": torch.randn(5, 8, generator=generator),
        "teacher": torch.randn(5, 12, generator=generator),
        "index": torch.tensor([0, 0, 3, 1, 3, 4]),
    }


# ----------------------------------------------------------------------------- proxy losses


def test_proxy_logits_are_cosines_over_tau(batch):
    logits = proxy_logits(batch["image"], batch["bank"], 0.1)
    assert logits.shape == (6, 5) and logits.dtype == torch.float32
    expected = torch.tensor(_cos_matrix(batch["image"], batch["bank"], 0.1), dtype=torch.float32)
    torch.testing.assert_close(logits, expected, rtol=1e-5, atol=1e-5)


def test_proxy_loss_hard_and_soft_targets(batch):
    index = batch["index"].tolist()
    hard = proxy_loss(batch["image"], batch["bank"], batch["index"], 0.07)
    expected = _naive_proxy(batch["image"], batch["bank"], _one_hot(index, 5), 0.07)
    assert hard.item() == pytest.approx(expected, rel=1e-5)

    soft = _naive_soft_targets(batch["teacher"], index, 0.2, 0.3)
    got = proxy_loss(batch["image"], batch["bank"], torch.tensor(soft, dtype=torch.float32), 0.07)
    assert got.item() == pytest.approx(_naive_proxy(batch["image"], batch["bank"], soft, 0.07), rel=1e-5)


def test_proxy_loss_computes_in_float32_for_half_inputs(batch):
    loss = proxy_loss(batch["image"].half(), batch["bank"].half(), batch["index"], 0.05)
    assert loss.dtype == torch.float32
    reference = proxy_loss(batch["image"].half().float(), batch["bank"].half().float(), batch["index"], 0.05)
    torch.testing.assert_close(loss, reference)


def test_proxy_loss_checks_its_inputs(batch):
    with pytest.raises(ValueError, match="embedding dim"):
        proxy_loss(batch["image"], batch["teacher"], batch["index"], 0.05)
    with pytest.raises(ValueError, match="targets"):
        proxy_loss(batch["image"], batch["bank"], batch["index"][:3], 0.05)
    with pytest.raises(ValueError, match=r"\[0, 5\)"):
        proxy_loss(batch["image"], batch["bank"], batch["index"] + 1, 0.05)
    with pytest.raises(ValueError, match="sum to 1"):
        proxy_loss(batch["image"], batch["bank"], torch.full((6, 5), 0.3), 0.05)
    with pytest.raises(ValueError, match=r"\(6, 5\)"):
        proxy_loss(batch["image"], batch["bank"], torch.full((6, 4), 0.25), 0.05)
    with pytest.raises(ValueError, match="temperature"):
        proxy_loss(batch["image"], batch["bank"], batch["index"], 0.0)


# ----------------------------------------------------------------------------- fusion and guidance


def _stacked_targets(batch, soft=None) -> list[list[float]]:
    rows = soft if soft is not None else _one_hot(batch["index"].tolist(), 5)
    return rows + rows


def test_global_fusion_matches_the_naive_loss_and_trains_the_bank_only(batch):
    image = batch["image"].clone().requires_grad_(True)
    text = batch["text"].clone().requires_grad_(True)
    bank = batch["bank"].clone().requires_grad_(True)
    loss = global_fusion_loss(image, text, bank, batch["index"], 0.05)
    features = torch.cat([batch["image"], batch["text"]])
    assert loss.item() == pytest.approx(_naive_proxy(features, batch["bank"], _stacked_targets(batch), 0.05), rel=1e-5)
    loss.backward()
    assert image.grad is None and text.grad is None
    assert bank.grad is not None and float(bank.grad.abs().sum()) > 0


def test_reference_guidance_matches_the_naive_loss_and_trains_the_features_only(batch):
    image = batch["image"].clone().requires_grad_(True)
    text = batch["text"].clone().requires_grad_(True)
    bank = batch["bank"].clone().requires_grad_(True)
    loss = reference_guidance_loss(image, text, bank, batch["index"], 0.05)
    features = torch.cat([batch["image"], batch["text"]])
    assert loss.item() == pytest.approx(_naive_proxy(features, batch["bank"], _stacked_targets(batch), 0.05), rel=1e-5)
    loss.backward()
    assert bank.grad is None
    assert float(image.grad.abs().sum()) > 0 and float(text.grad.abs().sum()) > 0


def test_soft_targets_are_repeated_for_images_and_texts(batch):
    index = batch["index"].tolist()
    soft = _naive_soft_targets(batch["teacher"], index, 0.1, 0.5)
    soft_t = soft_identity_targets(batch["teacher"], batch["index"], soft_tau=0.1, soft_mix=0.5)
    features = torch.cat([batch["image"], batch["text"]])
    expected = _naive_proxy(features, batch["bank"], _stacked_targets(batch, soft), 0.05)
    for fn in (global_fusion_loss, reference_guidance_loss):
        got = fn(batch["image"], batch["text"], batch["bank"], batch["index"], 0.05, soft_targets=soft_t)
        assert got.item() == pytest.approx(expected, rel=1e-5)
    with pytest.raises(ValueError, match="soft_targets"):
        global_fusion_loss(batch["image"], batch["text"], batch["bank"], batch["index"], 0.05, soft_t[:3])


def test_soft_identity_targets_match_the_naive_mixture(batch):
    index = batch["index"].tolist()
    got = soft_identity_targets(batch["teacher"], batch["index"], soft_tau=0.2, soft_mix=0.25)
    expected = torch.tensor(_naive_soft_targets(batch["teacher"], index, 0.2, 0.25), dtype=torch.float32)
    assert got.shape == (6, 5)
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(got.sum(dim=1), torch.ones(6))
    one_hot = soft_identity_targets(batch["teacher"], batch["index"], soft_tau=0.2, soft_mix=0.0)
    assert torch.equal(one_hot, torch.nn.functional.one_hot(batch["index"], 5).float())
    with pytest.raises(ValueError, match="soft_mix"):
        soft_identity_targets(batch["teacher"], batch["index"], soft_tau=0.2, soft_mix=1.5)
    with pytest.raises(ValueError, match="soft_tau"):
        soft_identity_targets(batch["teacher"], batch["index"], soft_tau=0.0, soft_mix=0.5)


# ----------------------------------------------------------------------------- identity contrastive


def test_identity_contrastive_loss_matches_the_naive_loss(batch):
    index = batch["index"].tolist()
    pos = [[index[i] == index[j] for j in range(6)] for i in range(6)]

    def targets(flags_rows):
        return [[1.0 / sum(flags) if f else 0.0 for f in flags] for flags in flags_rows]

    logits = _cos_matrix(batch["image"], batch["text"], 0.05)
    logits_t = [list(col) for col in zip(*logits)]
    pos_t = [list(col) for col in zip(*pos)]
    expected = (_soft_ce(logits, targets(pos)) + _soft_ce(logits_t, targets(pos_t))) / 2
    got = identity_contrastive_loss(batch["image"], batch["text"], 0.05, batch["index"])
    assert got.item() == pytest.approx(expected, rel=1e-5)


# ----------------------------------------------------------------------------- reconstruction


def test_reconstruction_loss_averages_over_masked_tokens():
    generator = torch.Generator().manual_seed(1)
    logits = torch.randn(2, 4, 7, generator=generator)
    labels = torch.full((2, 4), -100)
    labels[0, 1], labels[1, 0], labels[1, 3] = 3, 6, 0
    expected = []
    for b, position in [(0, 1), (1, 0), (1, 3)]:
        row = [float(v) for v in logits[b, position]]
        expected.append(-_log_softmax(row)[int(labels[b, position])])
    got = reconstruction_loss(logits, labels)
    assert got.item() == pytest.approx(sum(expected) / 3, rel=1e-5)
    assert reconstruction_loss(logits.half(), labels).dtype == torch.float32
    # The (N, V) form of the masked positions only gives the same value.
    masked = labels != -100
    assert reconstruction_loss(logits[masked], labels[masked]).item() == pytest.approx(sum(expected) / 3, rel=1e-5)
    with pytest.raises(ValueError, match="labels"):
        reconstruction_loss(logits[masked], labels)


def test_reconstruction_loss_checks_its_inputs():
    logits = torch.randn(2, 4, 7)
    with pytest.raises(ValueError, match="no masked position"):
        reconstruction_loss(logits, torch.full((2, 4), -100))
    with pytest.raises(ValueError, match="labels"):
        reconstruction_loss(logits, torch.zeros(2, 3, dtype=torch.int64))
    labels = torch.full((2, 4), -100)
    labels[0, 0] = 7
    with pytest.raises(ValueError, match=r"\[0, 7\)"):
        reconstruction_loss(logits, labels)


# ----------------------------------------------------------------------------- objective


@pytest.fixture()
def objective_inputs(batch):
    torch.manual_seed(2)
    head = MMRefHead(5, 8, 16, 11, heads=2)
    out = {
        "image_emb": batch["image"].clone().requires_grad_(True),
        "text_emb": batch["text"].clone().requires_grad_(True),
        "tau": torch.tensor(0.05),
    }
    logits = torch.randn(6, 4, 11)
    labels = torch.full((6, 4), -100)
    labels[:, 1] = torch.arange(6)
    return head, out, logits, labels


def test_objective_sums_the_switched_on_terms(batch, objective_inputs):
    head, out, logits, labels = objective_inputs
    cfg = replace(MMRefConfig(), fuse_weight=0.5, guidance_weight=2.0, reconstruction_weight=0.25)
    terms = mmref_objective(out, head, batch["index"], cfg=cfg, mlm_logits=logits, mlm_labels=labels)
    assert set(terms) == {"id", "fuse", "guide", "recon", "total"}
    expected_total = terms["id"] + 0.5 * terms["fuse"] + 2.0 * terms["guide"] + 0.25 * terms["recon"]
    torch.testing.assert_close(terms["total"], expected_total)
    torch.testing.assert_close(
        terms["fuse"], global_fusion_loss(out["image_emb"], out["text_emb"], head.bank, batch["index"], 0.05)
    )
    torch.testing.assert_close(terms["recon"], reconstruction_loss(logits, labels))

    only_id = replace(cfg, global_fusion=False, reference_guidance=False, local_reconstruction=False)
    terms = mmref_objective(out, head, batch["index"], cfg=only_id)
    assert set(terms) == {"id", "total"}
    torch.testing.assert_close(terms["total"], terms["id"])


def test_objective_routes_gradients(batch, objective_inputs):
    head, out, _, _ = objective_inputs
    cfg = replace(MMRefConfig(), local_reconstruction=False, reference_guidance=False)
    terms = mmref_objective(out, head, batch["index"], cfg=cfg)
    grad_image, grad_bank = torch.autograd.grad(terms["fuse"], [out["image_emb"], head.bank], allow_unused=True)
    assert grad_image is None and float(grad_bank.abs().sum()) > 0


def test_objective_soft_targets(batch, objective_inputs):
    head, out, logits, labels = objective_inputs
    cfg = replace(MMRefConfig(), soft_targets=True, local_reconstruction=False, soft_tau=0.1, soft_mix=0.5)
    terms = mmref_objective(out, head, batch["index"], cfg=cfg, teacher_references=batch["teacher"])
    soft = soft_identity_targets(batch["teacher"], batch["index"], soft_tau=0.1, soft_mix=0.5)
    expected = reference_guidance_loss(out["image_emb"], out["text_emb"], head.bank, batch["index"], 0.05, soft)
    torch.testing.assert_close(terms["guide"], expected)
    hard = mmref_objective(out, head, batch["index"], cfg=replace(cfg, soft_targets=False))
    assert not torch.allclose(terms["guide"], hard["guide"])


def test_objective_never_skips_a_term_silently(batch, objective_inputs):
    head, out, logits, labels = objective_inputs
    soft_cfg = replace(MMRefConfig(), soft_targets=True)
    with pytest.raises(ValueError, match="teacher_references"):
        mmref_objective(out, head, batch["index"], cfg=soft_cfg, mlm_logits=logits, mlm_labels=labels)
    with pytest.raises(ValueError, match="mlm_logits"):
        mmref_objective(out, head, batch["index"], cfg=MMRefConfig(), mlm_logits=logits)
    with pytest.raises(ValueError, match="tau"):
        no_tau = {"image_emb": out["image_emb"], "text_emb": out["text_emb"]}
        mmref_objective(no_tau, head, batch["index"], cfg=MMRefConfig())
