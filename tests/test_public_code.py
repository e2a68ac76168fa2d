"""The CUSA presets train with the public CUSA code's arithmetic (lerogo/aaai24_itr_cusa, unire/model.py).

One training step's losses of a preset's experiment (the preset's weights, temperatures and
switches; a tiny student and random teacher features in place of CLIP and Unicom) are checked
against an independent implementation of the public code's loss arithmetic, written here from
its source and not imported from softref: ``ContrastiveLoss`` in "mean" mode, ``KLContrastiveSimLoss``
with "kl" for CSA (``cross_softlabel_mode: each``) and USA, each halved and multiplied by its rate.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from softref.config import read_config
from softref.models.student import Student
from softref.train.data import Batch
from softref.train.methods.cusa import training_losses

CONFIGS = Path(__file__).resolve().parents[1] / "configs"
pytestmark = pytest.mark.usefixtures("one_thread")


def _public_code_losses(out: dict, idx: torch.Tensor, teacher_image: torch.Tensor, teacher_text: torch.Tensor,
                        alpha: float, beta: float) -> dict[str, torch.Tensor]:
    """The public code's forward losses, from its source: similarities of L2-normalised features,
    soft-label cosines of the raw teacher features, teacher temperature 1.0 (blocked)."""
    img, txt = F.normalize(out["image_emb"], dim=1), F.normalize(out["text_emb"], dim=1)
    logits_per_image = img @ txt.t()
    logits_per_text = logits_per_image.t()
    # ContrastiveLoss, contrastive_loss_mode "mean": a mean over each row, then over the batch.
    pos_idx = torch.eq(idx.view(-1, 1), idx.view(1, -1)).float()
    sim_targets = pos_idx / pos_idx.sum(1, keepdim=True)
    loss_i2t = -torch.mean(F.log_softmax(logits_per_image / out["tau"], dim=1) * sim_targets, dim=1).mean()
    loss_t2i = -torch.mean(F.log_softmax(logits_per_text / out["tau"], dim=1) * sim_targets, dim=1).mean()
    contrastive = (loss_i2t + loss_t2i) / 2.0 * 1.00

    def cos_sim(a: torch.Tensor) -> torch.Tensor:
        a = a.reshape(a.shape[0], -1).float()
        a = a / a.norm(dim=1, keepdim=True)
        return a @ a.t()

    def kl(logits: torch.Tensor, softlabel: torch.Tensor, tau: torch.Tensor) -> torch.Tensor:
        targets = F.softmax(softlabel / 1.00, dim=1)
        return F.kl_div(F.log_softmax(logits / tau, dim=1), targets, reduction="batchmean")

    image_sim, text_sim = cos_sim(teacher_image), cos_sim(teacher_text)
    cross = (kl(logits_per_image, image_sim, out["tau_c"]) + kl(logits_per_text, text_sim, out["tau_c"])) / 2.0 * alpha
    uimg, utxt = F.normalize(out["image_uni"], dim=1), F.normalize(out["text_uni"], dim=1)
    uni = (kl(uimg @ uimg.t(), image_sim, out["tau_image"]) + kl(utxt @ utxt.t(), text_sim, out["tau_text"])) / 2.0
    uni = uni * beta
    return {"itr": contrastive, "csa_weighted": cross, "usa_weighted": uni, "total": cross + uni + contrastive}


@pytest.mark.parametrize(("preset", "experiment"), [("cusa-coco-vitb32", "cusa-coco-vitb32-cusa"),
                                                    ("cusa-ablation-vitb32", "cusa-coco-vitb32-csa"),
                                                    ("cusa-ablation-vitb32", "cusa-coco-vitb32-usa")])
@pytest.mark.parametrize("batch_size", [8, 16])
def test_a_preset_step_has_the_public_code_losses(preset: str, experiment: str, batch_size: int) -> None:
    cfg = read_config(CONFIGS / f"{preset}.yaml").experiments[experiment]
    assert cfg.public_code_weighting and not cfg.gather and cfg.student_pre_caption
    generator = torch.Generator().manual_seed(batch_size)
    torch.manual_seed(0)
    student = Student("softref-tiny", pre_caption=cfg.student_pre_caption)
    # Two captions per image, as COCO's pairs come: positives off the diagonal.
    idx = torch.arange(batch_size) // 2
    captions = [f"A figure, number {i}: with a RED hat!" for i in range(batch_size)]
    batch = Batch(
        images=torch.randn(batch_size, 3, 64, 64, generator=generator), tokens=student.tokenize(captions),
        image_index=idx, image_ids=tuple(str(int(i)) for i in idx), text_ids=tuple(str(i) for i in range(batch_size)),
        teacher_image=torch.randn(batch_size, 49, 24, generator=generator).half(),
        teacher_text=torch.randn(batch_size, 48, generator=generator),
    )
    student.train()
    terms = {k: v.detach() for k, v in training_losses(student, batch, cfg).items()}
    with torch.no_grad():
        out = dict(student(batch.images, batch.tokens))
    alpha = cfg.alpha if cfg.method in ("csa", "cusa") else 0.0
    beta = cfg.beta if cfg.method in ("usa", "cusa") else 0.0
    with torch.no_grad():
        public = _public_code_losses(out, idx, batch.teacher_image, batch.teacher_text, alpha, beta)
    assert float(terms["itr"]) == pytest.approx(float(public["itr"]), abs=1e-6)
    if "csa" in terms:
        assert float(cfg.alpha * terms["csa"]) == pytest.approx(float(public["csa_weighted"]), abs=1e-6)
    if "usa" in terms:
        assert float(cfg.beta * terms["usa"]) == pytest.approx(float(public["usa_weighted"]), abs=1e-6)
    assert float(terms["total"]) == pytest.approx(float(public["total"]), abs=1e-6)
    # The usual InfoNCE would weigh the contrastive term batch_size times more: the switch matters.
    usual = {k: v.detach() for k, v in training_losses(student, batch, replace(cfg, public_code_weighting=False)).items()}
    assert float(usual["itr"]) == pytest.approx(batch_size * float(terms["itr"]), rel=1e-5)
