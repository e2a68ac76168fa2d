"""MMRef building blocks: per-token text features, caption masking and the reference head.

The MMRef student is the :class:`~softref.models.student.Student` plus an :class:`MMRefHead`:

- the *reference bank* ``R`` (M x D, one learnable row per training identity, rows in the
  order of the sorted train identities), trained by Global Fusion and Local Reconstruction and
  used by Reference-Guided Representation Learning (losses in :mod:`softref.losses.mmref`);
- the *Local Reconstruction* decoder ``H = FFN2(CrossAttn(FFN1(SelfAttn(Q)), K, V))`` over the
  student's per-token text features of a masked caption (queries ``Q``), cross-attending to
  reference rows (keys and values ``K = V`` = rows of ``R`` projected to the text width), and
  an MLM head predicting the masked words.

Masking (:func:`mask_tokens`) returns new tensors and never touches the caption tokens the other
losses see. open_clip's ``SimpleTokenizer`` has no mask token, so softref uses the highest
non-special id of the vocabulary (id 49405 of the CLIP BPE vocabulary, its last and rarest
merge) as the mask token: the token embedding table of the student stays as it is, and a real
caption contains that word almost never. Tokenizers that define a mask token (HuggingFace
ones) use theirs. :func:`token_scheme_for` gathers the ids a student's tokenizer uses.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from open_clip.tokenizer import SimpleTokenizer
from open_clip.transformer import TextTransformer
from torch import Tensor, nn

__all__ = [
    "IGNORE_INDEX",
    "MMRefHead",
    "TokenScheme",
    "mask_token_id_for",
    "mask_tokens",
    "text_token_features",
    "token_scheme_for",
]

logger = logging.getLogger(__name__)

#: Label of the positions that carry no reconstruction target (PyTorch's cross-entropy default).
IGNORE_INDEX = -100

# Fractions of the chosen positions replaced by the mask token and by a random token (BERT).
_MASK_FRACTION = 0.8
_RANDOM_FRACTION = 0.1


# ----------------------------------------------------------------------------- text features


def _clip_model(student: Any) -> nn.Module:
    model = getattr(student, "clip", None)
    if not isinstance(model, nn.Module):
        raise TypeError(
            f"student: expected a softref Student (an object whose `clip` attribute is the open_clip "
            f"model), found {type(student).__name__} without one"
        )
    return model


def text_token_features(student: Any, tokens: Tensor) -> Tensor:
    """(B, L) token ids -> (B, L, W) per-token hidden states of the student's text tower.

    The same computation as open_clip's ``encode_text`` before pooling: token embedding plus
    positional embedding, the text transformer with its attention mask (causal for CLIP),
    then ``ln_final``. Two layouts of open_clip are supported:

    - ``CLIP``: the text tower lives on the model (``transformer``, ``token_embedding``,
      ``positional_embedding``, ``ln_final``, ``attn_mask``);
    - ``CustomTextCLIP`` / CoCa: ``model.text`` is an open_clip ``TextTransformer``. When it
      appends a class token (CoCa's ``embed_cls``) that token is dropped and ``ln_final`` is
      applied to the sequence tokens too (open_clip returns them before ``ln_final``).

    Other text towers (HuggingFace encoders) raise TypeError. ``L`` may be shorter than the
    tower's context length (the positional embedding and causal mask are cut to ``L``).
    """
    model = _clip_model(student)
    if not isinstance(tokens, Tensor) or tokens.dim() != 2:
        found = tuple(tokens.shape) if isinstance(tokens, Tensor) else type(tokens).__name__
        raise ValueError(f"tokens: expected a (B, L) tensor of token ids, found {found}")
    if tokens.dtype not in (torch.int64, torch.int32):
        raise ValueError(f"tokens: expected integer token ids, found dtype {tokens.dtype}")
    length = tokens.shape[1]

    text = getattr(model, "text", None)
    if isinstance(text, TextTransformer):
        if length > text.context_length:
            raise ValueError(
                f"tokens: {length} positions, more than the text tower's context length {text.context_length}"
            )
        x, attn_mask = text._embeds(tokens)
        x = text.transformer(x, attn_mask=attn_mask)
        if text.cls_emb is not None:
            x = x[:, :-1]
        return text.ln_final(x)
    if text is not None:
        raise TypeError(
            f"text_token_features: the text tower {type(text).__name__} of {type(model).__name__} is not "
            f"an open_clip TextTransformer; only open_clip's own text towers are supported"
        )
    needed = ("transformer", "token_embedding", "positional_embedding", "ln_final")
    missing = [name for name in needed if getattr(model, name, None) is None]
    if missing:
        raise TypeError(
            f"text_token_features: {type(model).__name__} has neither an open_clip TextTransformer "
            f"`text` nor the CLIP text tower attributes (missing {missing})"
        )
    context = model.positional_embedding.shape[0]
    if length > context:
        raise ValueError(f"tokens: {length} positions, more than the text tower's context length {context}")
    cast_dtype = model.transformer.get_cast_dtype()
    x = model.token_embedding(tokens).to(cast_dtype)
    x = x + model.positional_embedding[:length].to(cast_dtype)
    attn_mask = getattr(model, "attn_mask", None)
    if attn_mask is not None:
        attn_mask = attn_mask[:length, :length]
    x = model.transformer(x, attn_mask=attn_mask)
    return model.ln_final(x)


# ----------------------------------------------------------------------------- masking


@dataclass(frozen=True)
class TokenScheme:
    """The token ids a student's tokenizer uses, as masking needs them.

    Attributes:
        vocab_size: rows of the text tower's token embedding.
        mask_token_id: the id written at masked positions.
        pad_token_id: the padding id (0 for open_clip's SimpleTokenizer).
        special_ids: ids never masked nor drawn as random tokens (start / end of text, ...).
    """

    vocab_size: int
    mask_token_id: int
    pad_token_id: int
    special_ids: tuple[int, ...]


def token_scheme_for(student: Any) -> TokenScheme:
    """The :class:`TokenScheme` of ``student.tokenizer`` and its text tower.

    SimpleTokenizer (CLIP BPE): mask = the highest id below the vocabulary size that is not a
    special id (49405 for CLIP), pad = 0, specials = start and end of text. A HuggingFace
    tokenizer: its own mask, pad and special ids; without a mask token it raises ValueError.
    """
    model = _clip_model(student)
    vocab_size = getattr(model, "vocab_size", None)
    if not isinstance(vocab_size, int):
        raise TypeError(f"{type(model).__name__}: expected an integer `vocab_size`, found {vocab_size!r}")
    tokenizer = getattr(student, "tokenizer", None)
    if isinstance(tokenizer, SimpleTokenizer):
        special = tuple(sorted(int(i) for i in tokenizer.all_special_ids))
        if tokenizer.vocab_size > vocab_size:
            raise ValueError(
                f"tokenizer vocabulary ({tokenizer.vocab_size} ids) is larger than the text tower's "
                f"token embedding ({vocab_size} rows)"
            )
        mask_id = next(i for i in range(tokenizer.vocab_size - 1, 0, -1) if i not in special)
        return TokenScheme(vocab_size, mask_id, 0, special)
    hf = getattr(tokenizer, "tokenizer", None)
    mask_id = getattr(hf, "mask_token_id", None)
    if mask_id is None:
        raise ValueError(
            f"token_scheme_for: tokenizer {type(tokenizer).__name__} is neither open_clip's SimpleTokenizer "
            f"nor a HuggingFace tokenizer with a mask token; masked reconstruction needs one"
        )
    pad_id = getattr(hf, "pad_token_id", None)
    special = tuple(sorted({int(i) for i in getattr(hf, "all_special_ids", [])} - {int(mask_id)}))
    return TokenScheme(vocab_size, int(mask_id), 0 if pad_id is None else int(pad_id), special)


def mask_token_id_for(student: Any) -> int:
    """The id :func:`mask_tokens` should write at masked positions for ``student`` (see :func:`token_scheme_for`)."""
    return token_scheme_for(student).mask_token_id


def mask_tokens(
    tokens: Tensor,
    *,
    mask_prob: float,
    mask_token_id: int,
    vocab_size: int,
    special_ids: Sequence[int],
    pad_id: int = 0,
    generator: torch.Generator | None = None,
) -> tuple[Tensor, Tensor]:
    """BERT masking of caption tokens for Local Reconstruction; ``tokens`` is left untouched.

    Candidates are the positions whose id is neither ``pad_id`` nor one of ``special_ids``.
    Each candidate is chosen with probability ``mask_prob``; a caption with candidates but no
    chosen position gets one candidate chosen uniformly, so every such caption has a target.
    Of the chosen positions 80 % become ``mask_token_id``, 10 % a random id drawn uniformly
    from ``[0, vocab_size)`` without the pad, special and mask ids, and 10 % keep their id.

    Args:
        tokens: (B, L) integer token ids.
        mask_prob: probability that a candidate is chosen, in (0, 1].
        mask_token_id: id written at masked positions (:func:`mask_token_id_for`).
        vocab_size: size of the vocabulary the random replacements come from.
        special_ids: ids never chosen nor drawn (start / end of text).
        pad_id: padding id, never chosen nor drawn.
        generator: the random source (draws run on its device, else on the tokens' device);
            the result is a function of the tokens and the generator state.

    Returns:
        ``(masked_tokens, labels)``: new (B, L) tensors; labels hold the original id at the
        chosen positions and -100 (:data:`IGNORE_INDEX`) elsewhere.
    """
    if not isinstance(tokens, Tensor) or tokens.dim() != 2:
        found = tuple(tokens.shape) if isinstance(tokens, Tensor) else type(tokens).__name__
        raise ValueError(f"tokens: expected a (B, L) tensor of token ids, found {found}")
    if tokens.is_floating_point() or tokens.is_complex() or tokens.dtype == torch.bool:
        raise ValueError(f"tokens: expected integer token ids, found dtype {tokens.dtype}")
    if not 0.0 < float(mask_prob) <= 1.0:
        raise ValueError(f"mask_prob: expected a probability in (0, 1], found {mask_prob}")
    if not 0 <= mask_token_id < vocab_size:
        raise ValueError(f"mask_token_id: expected an id in [0, {vocab_size}), found {mask_token_id}")
    if int(mask_token_id) in {int(i) for i in special_ids} | {int(pad_id)}:
        raise ValueError(f"mask_token_id {mask_token_id}: expected an id other than the pad and special ids")
    excluded = {int(i) for i in special_ids} | {int(pad_id), int(mask_token_id)}
    allowed = torch.arange(vocab_size, dtype=torch.int64)
    allowed = allowed[~torch.isin(allowed, torch.tensor(sorted(excluded), dtype=torch.int64))]
    if allowed.numel() == 0:
        raise ValueError(
            f"vocab_size {vocab_size}: no id left for random replacement after excluding {sorted(excluded)}"
        )

    device = generator.device if generator is not None else tokens.device
    source = tokens.detach().to(device=device, dtype=torch.int64)
    special = torch.tensor(sorted({int(i) for i in special_ids} | {int(pad_id)}), dtype=torch.int64, device=device)
    candidates = ~torch.isin(source, special)

    chosen = (torch.rand(source.shape, generator=generator, device=device) < mask_prob) & candidates
    # Rows with candidates but nothing chosen: choose one candidate uniformly (argmax of noise).
    empty = candidates.any(dim=1) & ~chosen.any(dim=1)
    noise = torch.rand(source.shape, generator=generator, device=device).masked_fill(~candidates, -1.0)
    forced = F.one_hot(noise.argmax(dim=1), source.shape[1]).bool() & empty[:, None]
    chosen = chosen | forced

    action = torch.rand(source.shape, generator=generator, device=device)
    to_mask = chosen & (action < _MASK_FRACTION)
    to_random = chosen & (action >= _MASK_FRACTION) & (action < _MASK_FRACTION + _RANDOM_FRACTION)
    random_ids = allowed.to(device)[
        torch.randint(allowed.numel(), source.shape, generator=generator, device=device)
    ]

    masked = source.clone()
    masked[to_mask] = int(mask_token_id)
    masked[to_random] = random_ids[to_random]
    labels = torch.full_like(source, IGNORE_INDEX)
    labels[chosen] = source[chosen]
    return masked.to(device=tokens.device, dtype=tokens.dtype), labels.to(tokens.device)


# ----------------------------------------------------------------------------- head


def _init_linear(linear: nn.Linear, std: float) -> nn.Linear:
    nn.init.normal_(linear.weight, std=std)
    if linear.bias is not None:
        nn.init.zeros_(linear.bias)
    return linear


def _feed_forward(width: int, std: float) -> nn.Sequential:
    return nn.Sequential(
        _init_linear(nn.Linear(width, 4 * width), std),
        nn.GELU(),
        _init_linear(nn.Linear(4 * width, width), std),
    )


class MMRefHead(nn.Module):
    """The reference bank R and the Local Reconstruction decoder with its MLM head.

    Decoder, one layer of pre-norm residual blocks over the queries ``Q`` (per-token text
    features of a masked caption, :func:`text_token_features`)::

        x = Q + SelfAttn(LN(Q))                    (bidirectional; padding keys masked)
        x = x + FFN1(LN(x))
        x = x + CrossAttn(LN(x), KV, KV)           KV = LN(Linear_{D->W}(R_rows / |R_rows|))
        x = x + FFN2(LN(x))
        logits = Linear_{W->V}(LN(x))               (the MLM head)

    ``R_rows`` are :meth:`context_rows` of the caption's identity; their gradient reaches the
    bank, so Local Reconstruction shapes R together with Global Fusion.

    Args:
        num_identities: M, rows of the bank (one per training identity, sorted by name).
        embed_dim: D, the student's joint embedding size (the bank lives in that space).
        text_width: W, the width of the student's text tower (the token features).
        vocab_size: V, the text tower's vocabulary (MLM head outputs).
        heads: attention heads of the decoder; must divide ``text_width``.
        reconstruction_context: C, reference rows each caption attends to: its identity's
            row first, then the C - 1 rows nearest to it in the bank (cosine).
        init_std: standard deviation of the normal initialisation of the bank and the
            decoder's linear layers.
    """

    def __init__(
        self,
        num_identities: int,
        embed_dim: int,
        text_width: int,
        vocab_size: int,
        *,
        heads: int = 4,
        reconstruction_context: int = 1,
        init_std: float = 0.02,
    ) -> None:
        super().__init__()
        for name, value in (
            ("num_identities", num_identities),
            ("embed_dim", embed_dim),
            ("text_width", text_width),
            ("vocab_size", vocab_size),
            ("heads", heads),
        ):
            if int(value) < 1:
                raise ValueError(f"MMRefHead {name}: expected a positive integer, found {value}")
        if text_width % heads:
            raise ValueError(f"MMRefHead: heads {heads} must divide text_width {text_width}")
        if not 1 <= reconstruction_context <= num_identities:
            raise ValueError(
                f"MMRefHead reconstruction_context: expected 1 <= C <= num_identities ({num_identities}), "
                f"found {reconstruction_context}"
            )
        if not init_std > 0:
            raise ValueError(f"MMRefHead init_std: expected a positive value, found {init_std}")
        self.num_identities = int(num_identities)
        self.embed_dim = int(embed_dim)
        self.text_width = int(text_width)
        self.vocab_size = int(vocab_size)
        self.heads = int(heads)
        self.reconstruction_context = int(reconstruction_context)

        self.bank = nn.Parameter(torch.randn(self.num_identities, self.embed_dim) * init_std)

        width = self.text_width
        self.kv_proj = _init_linear(nn.Linear(self.embed_dim, width), init_std)
        self.ln_kv = nn.LayerNorm(width)
        self.ln_self = nn.LayerNorm(width)
        self.self_attn = nn.MultiheadAttention(width, heads, batch_first=True)
        self.ln_ffn1 = nn.LayerNorm(width)
        self.ffn1 = _feed_forward(width, init_std)
        self.ln_cross = nn.LayerNorm(width)
        self.cross_attn = nn.MultiheadAttention(width, heads, batch_first=True)
        self.ln_ffn2 = nn.LayerNorm(width)
        self.ffn2 = _feed_forward(width, init_std)
        self.mlm_head = nn.Sequential(nn.LayerNorm(width), _init_linear(nn.Linear(width, self.vocab_size), init_std))

    def references(self, normalize: bool = True) -> Tensor:
        """The bank, (M, D); L2-normalised rows unless ``normalize`` is False."""
        return F.normalize(self.bank, dim=-1) if normalize else self.bank

    def _check_identity_index(self, identity_index: Tensor) -> Tensor:
        if not isinstance(identity_index, Tensor) or identity_index.dim() != 1:
            found = tuple(identity_index.shape) if isinstance(identity_index, Tensor) else type(identity_index).__name__
            raise ValueError(f"identity_index: expected a (B,) tensor of bank rows, found {found}")
        if identity_index.is_floating_point() or identity_index.dtype == torch.bool:
            raise ValueError(f"identity_index: expected integer bank rows, found dtype {identity_index.dtype}")
        if identity_index.numel() and not (
            0 <= int(identity_index.min()) and int(identity_index.max()) < self.num_identities
        ):
            raise ValueError(
                f"identity_index: expected rows in [0, {self.num_identities}), found "
                f"[{int(identity_index.min())}, {int(identity_index.max())}]"
            )
        return identity_index.to(device=self.bank.device, dtype=torch.int64)

    @torch.no_grad()
    def context_rows(self, identity_index: Tensor) -> Tensor:
        """(B,) identity rows -> (B, C) bank rows to attend to: own row first, then its C - 1 nearest others.

        Nearest by cosine between bank rows, chosen without gradient; ties go to the lower row.
        """
        index = self._check_identity_index(identity_index)
        if self.reconstruction_context == 1:
            return index[:, None]
        refs = self.references().detach().float()
        sims = refs[index] @ refs.T
        sims[torch.arange(index.shape[0], device=index.device), index] = float("-inf")
        # Stable sort: equal cosines keep the lower row first.
        others = torch.sort(sims, dim=1, descending=True, stable=True).indices[:, : self.reconstruction_context - 1]
        return torch.cat([index[:, None], others], dim=1)

    def reconstruct(
        self, token_features: Tensor, identity_index: Tensor, padding_mask: Tensor | None = None,
        positions: Tensor | None = None,
    ) -> Tensor:
        """Masked-token logits from the token features of masked captions and their identities.

        Args:
            token_features: (B, L, W) features of the masked captions (:func:`text_token_features`).
            identity_index: (B,) bank row of each caption's identity.
            padding_mask: optional (B, L) bool, True at padding positions (ignored as keys of
                the self-attention, as ``key_padding_mask`` of ``nn.MultiheadAttention``).
            positions: optional (B, L) bool, the positions whose logits are wanted (the masked
                tokens). The MLM head then runs on those N positions only: the same logits
                as the full (B, L, V) output there, without the (B, L, V) product that
                dominates the step (V is 49,408 for CLIP's vocabulary).

        Returns:
            (B, L, V) logits, or (N, V) with ``positions`` (row-major order of the True
            entries); the loss is :func:`softref.losses.mmref.reconstruction_loss`.
        """
        if not isinstance(token_features, Tensor) or token_features.dim() != 3:
            found = tuple(token_features.shape) if isinstance(token_features, Tensor) else type(token_features).__name__
            raise ValueError(f"token_features: expected a (B, L, {self.text_width}) tensor, found {found}")
        batch, length, width = token_features.shape
        if width != self.text_width:
            raise ValueError(f"token_features: expected width {self.text_width}, found {width}")
        if identity_index.shape != (batch,):
            raise ValueError(f"identity_index: expected shape ({batch},), found {tuple(identity_index.shape)}")
        if padding_mask is not None:
            if padding_mask.shape != (batch, length):
                raise ValueError(f"padding_mask: expected shape ({batch}, {length}), found {tuple(padding_mask.shape)}")
            padding_mask = padding_mask.to(device=token_features.device, dtype=torch.bool)
            # A fully masked row would give NaN attention; such a caption has no target anyway.
            padding_mask = padding_mask & ~padding_mask.all(dim=1, keepdim=True)

        rows = self.context_rows(identity_index)
        dtype = self.kv_proj.weight.dtype
        x = token_features.to(dtype)
        kv = self.ln_kv(self.kv_proj(self.references()[rows]))  # (B, C, W), grads reach the bank

        h = self.ln_self(x)
        x = x + self.self_attn(h, h, h, key_padding_mask=padding_mask, need_weights=False)[0]
        x = x + self.ffn1(self.ln_ffn1(x))
        x = x + self.cross_attn(self.ln_cross(x), kv, kv, need_weights=False)[0]
        x = x + self.ffn2(self.ln_ffn2(x))
        if positions is not None:
            if tuple(positions.shape) != (batch, length) or positions.dtype != torch.bool:
                raise ValueError(
                    f"positions: expected a ({batch}, {length}) bool tensor, found {tuple(positions.shape)} "
                    f"of dtype {positions.dtype}"
                )
            x = x[positions.to(x.device)]
        return self.mlm_head(x)
