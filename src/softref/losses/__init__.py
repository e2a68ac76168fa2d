"""Training losses of softref as pure functions: contrastive (InfoNCE), CUSA's CSA and USA, and
MMRef's identity-level, proxy (Global Fusion, reference guidance) and reconstruction terms.

Import from here: ``from softref.losses import contrastive_loss, csa_loss, usa_loss, mmref_objective``.
"""

from softref.losses.contrastive import contrastive_loss
from softref.losses.cusa import CUSA_METHODS, csa_loss, cusa_objective, usa_loss
from softref.losses.mmref import (
    MMREF_TERMS,
    global_fusion_loss,
    identity_contrastive_loss,
    mmref_objective,
    proxy_logits,
    proxy_loss,
    reconstruction_loss,
    reference_guidance_loss,
    soft_identity_targets,
)

__all__ = [
    "CUSA_METHODS",
    "MMREF_TERMS",
    "contrastive_loss",
    "csa_loss",
    "cusa_objective",
    "global_fusion_loss",
    "identity_contrastive_loss",
    "mmref_objective",
    "proxy_logits",
    "proxy_loss",
    "reconstruction_loss",
    "reference_guidance_loss",
    "soft_identity_targets",
    "usa_loss",
]
