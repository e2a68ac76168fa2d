"""Training losses of softref as pure functions: contrastive (InfoNCE), CUSA's CSA and USA.

Import from here: ``from softref.losses import contrastive_loss, csa_loss, usa_loss``.
"""

from softref.losses.contrastive import contrastive_loss
from softref.losses.cusa import CUSA_METHODS, csa_loss, cusa_objective, usa_loss

__all__ = ["CUSA_METHODS", "contrastive_loss", "csa_loss", "cusa_objective", "usa_loss"]
