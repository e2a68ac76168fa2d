"""MMRef model blocks: per-token text features, caption masking, the reference head."""

from __future__ import annotations

import open_clip
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from softref.losses.mmref import identity_contrastive_loss, reconstruction_loss
from softref.models.mmref import (
    IGNORE_INDEX,
    MMRefHead,
    mask_token_id_for,
    mask_tokens,
    text_token_features,
    token_scheme_for,
)
from softref.models.student import Student

CAPTIONS = [
    "a man in a white cap and pink shoes",
    "a woman with a black bag",
    "a small red bird on a branch",
    "a yellow flower with five petals",
]
SOT, EOT, MASK = 49406, 49407, 49405
SPECIAL = (SOT, EOT)
VOCAB = 49408


@pytest.fixture(scope="module")
def students() -> dict[str, Student]:
    torch.manual_seed(0)
    return {name: Student(name).eval() for name in ("softref-tiny", "softref-tiny-rn")}


@pytest.fixture(scope="module")
def tokens(students: dict[str, Student]) -> torch.Tensor:
    return students["softref-tiny"].tokenizer(CAPTIONS)


# ----------------------------------------------------------------------------- text features


@pytest.mark.parametrize("name", ["softref-tiny", "softref-tiny-rn"])
def test_token_features_pooled_at_eot_match_encode_text(students, tokens, name):
    student = students[name]
    with torch.no_grad():
        feats = text_token_features(student, tokens)
        assert feats.shape == (len(CAPTIONS), tokens.shape[1], 128)
        eot = (tokens == EOT).int().argmax(dim=1)
        pooled = feats[torch.arange(len(CAPTIONS)), eot] @ student.clip.text_projection
        torch.testing.assert_close(pooled, student.clip.encode_text(tokens), rtol=1e-5, atol=1e-6)
        ours = F.normalize(student.text_cross_proj(pooled), dim=-1)
        torch.testing.assert_close(ours, student.encode_text(tokens), rtol=1e-5, atol=1e-6)


def test_token_features_of_a_custom_text_clip(students, tokens):
    cfg = open_clip.get_model_config("softref-tiny")
    torch.manual_seed(1)
    custom = open_clip.model.CustomTextCLIP(**cfg).eval()
    shell = Student("softref-tiny")
    shell.clip = custom
    with torch.no_grad():
        feats = text_token_features(shell, tokens)
        eot = tokens.argmax(dim=1)
        pooled = feats[torch.arange(len(CAPTIONS)), eot] @ custom.text.text_projection
        torch.testing.assert_close(pooled, custom.encode_text(tokens), rtol=1e-5, atol=1e-6)


def test_token_features_with_an_appended_class_token(tokens):
    tower = open_clip.transformer.TextTransformer(
        context_length=32, width=32, heads=2, layers=1, output_dim=16, embed_cls=True
    )
    shell = nn.Module()
    shell.clip = nn.Module()
    shell.clip.text = tower
    with torch.no_grad():
        feats = text_token_features(shell, tokens[:, :31])
    assert feats.shape == (len(CAPTIONS), 31, 32)


def test_token_features_refuse_other_towers(tokens):
    shell = nn.Module()
    shell.clip = nn.Module()
    shell.clip.text = nn.Linear(4, 4)
    with pytest.raises(TypeError, match="TextTransformer"):
        text_token_features(shell, tokens)
    shell.clip = nn.Linear(4, 4)
    with pytest.raises(TypeError, match="missing"):
        text_token_features(shell, tokens)
    with pytest.raises(TypeError, match="Student"):
        text_token_features(object(), tokens)


def test_token_features_check_the_tokens(students, tokens):
    student = students["softref-tiny"]
    with pytest.raises(ValueError, match="context length"):
        text_token_features(student, torch.cat([tokens, tokens], dim=1))
    with pytest.raises(ValueError, match=r"\(B, L\)"):
        text_token_features(student, tokens[0])
    short = text_token_features(student, tokens[:, :12])
    assert short.shape == (len(CAPTIONS), 12, 128)


def test_token_scheme_of_the_clip_tokenizer(students):
    scheme = token_scheme_for(students["softref-tiny"])
    assert scheme.mask_token_id == MASK == mask_token_id_for(students["softref-tiny-rn"])
    assert scheme.special_ids == SPECIAL
    assert scheme.pad_token_id == 0
    assert scheme.vocab_size == VOCAB


# ----------------------------------------------------------------------------- masking


def _mask(tokens: torch.Tensor, seed: int, mask_prob: float = 0.15) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    return mask_tokens(
        tokens, mask_prob=mask_prob, mask_token_id=MASK, vocab_size=VOCAB, special_ids=SPECIAL, generator=generator
    )


def _random_captions(rows: int, length: int, seed: int) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    tokens = torch.zeros(rows, length, dtype=torch.int64)
    lengths = torch.randint(1, length - 1, (rows,), generator=generator)
    for i, n in enumerate(lengths.tolist()):
        tokens[i, 0] = SOT
        tokens[i, 1 : n + 1] = torch.randint(1, MASK, (n,), generator=generator)
        tokens[i, n + 1] = EOT
    return tokens


def test_masking_returns_new_tensors_and_leaves_the_input(tokens):
    before = tokens.clone()
    masked, labels = _mask(tokens, seed=0, mask_prob=0.5)
    assert torch.equal(tokens, before)
    assert masked.data_ptr() != tokens.data_ptr() and labels.data_ptr() != tokens.data_ptr()
    assert masked.dtype == tokens.dtype and masked.shape == tokens.shape
    chosen = labels != IGNORE_INDEX
    assert torch.equal(labels[chosen], tokens[chosen])
    assert torch.equal(masked[~chosen], tokens[~chosen])
    # Never a special or padding position.
    assert not bool((chosen & ((tokens == 0) | (tokens == SOT) | (tokens == EOT))).any())


def test_masking_is_deterministic_given_the_generator(tokens):
    big = _random_captions(64, 32, seed=3)
    a, la = _mask(big, seed=11)
    b, lb = _mask(big, seed=11)
    c, lc = _mask(big, seed=12)
    assert torch.equal(a, b) and torch.equal(la, lb)
    assert not torch.equal(la, lc)


def test_every_caption_with_candidates_gets_a_target():
    tokens = _random_captions(200, 16, seed=4)
    tokens[0] = 0
    tokens[0, :2] = torch.tensor([SOT, EOT])  # an empty caption: no candidate
    _, labels = _mask(tokens, seed=5, mask_prob=0.01)
    has_target = (labels != IGNORE_INDEX).any(dim=1)
    assert not bool(has_target[0])
    assert bool(has_target[1:].all())


def test_mask_statistics_on_a_large_batch():
    tokens = _random_captions(2000, 32, seed=6)
    masked, labels = _mask(tokens, seed=7)
    candidates = ~torch.isin(tokens, torch.tensor([0, SOT, EOT]))
    chosen = labels != IGNORE_INDEX
    rate = chosen.sum().item() / candidates.sum().item()
    # 15 % plus the few forced choices of captions where nothing was drawn.
    assert 0.14 < rate < 0.18
    n = chosen.sum().item()
    as_mask = (masked[chosen] == MASK).sum().item() / n
    unchanged = (masked[chosen] == tokens[chosen]).sum().item() / n
    replaced = 1 - as_mask - unchanged
    assert 0.77 < as_mask < 0.83
    assert 0.08 < unchanged < 0.12
    assert 0.08 < replaced < 0.12
    random_ids = masked[chosen & (masked != MASK) & (masked != tokens)]
    assert not bool(torch.isin(random_ids, torch.tensor([0, SOT, EOT, MASK])).any())
    assert int(random_ids.max()) < VOCAB


def test_masking_checks_its_arguments(tokens):
    with pytest.raises(ValueError, match="mask_prob"):
        _mask(tokens, seed=0, mask_prob=0.0)
    with pytest.raises(ValueError, match="mask_token_id"):
        mask_tokens(tokens, mask_prob=0.15, mask_token_id=SOT, vocab_size=VOCAB, special_ids=SPECIAL)
    with pytest.raises(ValueError, match="integer"):
        mask_tokens(tokens.float(), mask_prob=0.15, mask_token_id=MASK, vocab_size=VOCAB, special_ids=SPECIAL)


def test_masking_does_not_change_what_the_other_losses_see(students, tokens):
    student = students["softref-tiny"]
    torch.manual_seed(8)
    images = torch.randn(len(CAPTIONS), 3, 64, 64)
    identity = torch.tensor([0, 0, 1, 2])
    original = tokens.clone()
    with torch.no_grad():
        before = identity_contrastive_loss(**_pairs(student(images, tokens)), identity_index=identity)
        masked, labels = _mask(tokens, seed=9, mask_prob=0.5)
        head = MMRefHead(3, student.embed_dim, 128, VOCAB)
        logits = head.reconstruct(text_token_features(student, masked), identity, padding_mask=tokens == 0)
        assert torch.isfinite(reconstruction_loss(logits, labels))
        after = identity_contrastive_loss(**_pairs(student(images, tokens)), identity_index=identity)
    assert torch.equal(tokens, original)
    assert torch.equal(before, after)


def _pairs(out: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {"image_emb": out["image_emb"], "text_emb": out["text_emb"], "tau": out["tau"]}


# ----------------------------------------------------------------------------- head


def test_head_shapes_and_references():
    torch.manual_seed(0)
    head = MMRefHead(5, 16, 32, 100, heads=4)
    assert head.bank.shape == (5, 16)
    assert 0.01 < float(head.bank.detach().std()) < 0.04
    refs = head.references()
    torch.testing.assert_close(refs.norm(dim=1), torch.ones(5))
    assert torch.equal(head.references(normalize=False), head.bank)
    logits = head.reconstruct(torch.randn(3, 7, 32), torch.tensor([0, 4, 2]))
    assert logits.shape == (3, 7, 100)


def test_context_rows_put_the_own_identity_first():
    torch.manual_seed(0)
    head = MMRefHead(6, 8, 16, 50, heads=2, reconstruction_context=3)
    index = torch.tensor([0, 5, 2, 2])
    rows = head.context_rows(index)
    assert rows.shape == (4, 3)
    assert torch.equal(rows[:, 0], index)
    refs = F.normalize(head.bank.detach(), dim=-1)
    for b, own in enumerate(index.tolist()):
        sims = [(float(refs[own] @ refs[j]), j) for j in range(6) if j != own]
        expected = [j for _, j in sorted(sims, key=lambda t: (-t[0], t[1]))[:2]]
        assert rows[b, 1:].tolist() == expected
        assert len(set(rows[b].tolist())) == 3
    single = MMRefHead(6, 8, 16, 50, heads=2)
    assert torch.equal(single.context_rows(index), index[:, None])


def test_reconstruction_gradients_reach_the_bank_rows_used():
    torch.manual_seed(0)
    head = MMRefHead(6, 8, 16, 50, heads=2)
    feats = torch.randn(2, 5, 16, requires_grad=True)
    logits = head.reconstruct(feats, torch.tensor([1, 3]))
    labels = torch.full((2, 5), IGNORE_INDEX)
    labels[:, 2] = torch.tensor([7, 9])
    reconstruction_loss(logits, labels).backward()
    grad_rows = head.bank.grad.abs().sum(dim=1)
    assert grad_rows[1] > 0 and grad_rows[3] > 0
    assert float(grad_rows[[0, 2, 4, 5]].sum()) == 0.0
    assert feats.grad is not None and float(feats.grad.abs().sum()) > 0


def test_masked_positions_only_give_the_same_logits_loss_and_gradients():
    torch.manual_seed(3)
    feats = torch.randn(3, 6, 16)
    index = torch.tensor([0, 2, 1])
    labels = torch.full((3, 6), IGNORE_INDEX)
    labels[0, 1], labels[1, 4], labels[1, 5], labels[2, 0] = 7, 3, 29, 11
    positions = labels != IGNORE_INDEX
    grads, losses = [], []
    for subset in (False, True):
        torch.manual_seed(0)
        head = MMRefHead(4, 8, 16, 30, heads=2)
        logits = head.reconstruct(feats, index, positions=positions if subset else None)
        if subset:
            assert logits.shape == (4, 30)
            loss = reconstruction_loss(logits, labels[positions])
        else:
            assert logits.shape == (3, 6, 30)
            full = logits.detach()
            loss = reconstruction_loss(logits, labels)
        loss.backward()
        losses.append(loss.detach())
        grads.append(torch.cat([p.grad.flatten() for p in head.parameters() if p.grad is not None]))
        if subset:
            torch.testing.assert_close(logits.detach(), full[positions])
    torch.testing.assert_close(losses[0], losses[1])
    torch.testing.assert_close(grads[0], grads[1])
    head = MMRefHead(4, 8, 16, 30, heads=2)
    with pytest.raises(ValueError, match="positions"):
        head.reconstruct(feats, index, positions=positions[:, :5])
    with pytest.raises(ValueError, match="positions"):
        head.reconstruct(feats, index, positions=positions.long())


def test_padding_keys_do_not_change_the_other_positions():
    torch.manual_seed(0)
    head = MMRefHead(4, 8, 16, 30, heads=2).eval()
    feats = torch.randn(2, 6, 16)
    padding = torch.zeros(2, 6, dtype=torch.bool)
    padding[:, 4:] = True
    padding[1] = True  # a fully padded caption must not give NaN
    changed = feats.clone()
    changed[:, 4:] = torch.randn(2, 2, 16)
    index = torch.tensor([0, 2])
    with torch.no_grad():
        a = head.reconstruct(feats, index, padding)
        b = head.reconstruct(changed, index, padding)
    torch.testing.assert_close(a[0, :4], b[0, :4])
    assert bool(torch.isfinite(a).all())


def test_head_checks_its_arguments():
    with pytest.raises(ValueError, match="divide"):
        MMRefHead(4, 8, 10, 30, heads=4)
    with pytest.raises(ValueError, match="reconstruction_context"):
        MMRefHead(4, 8, 16, 30, heads=2, reconstruction_context=5)
    head = MMRefHead(4, 8, 16, 30, heads=2)
    with pytest.raises(ValueError, match="identity_index"):
        head.context_rows(torch.tensor([4]))
    with pytest.raises(ValueError, match="width"):
        head.reconstruct(torch.randn(2, 3, 8), torch.tensor([0, 1]))
    with pytest.raises(ValueError, match="identity_index"):
        head.reconstruct(torch.randn(2, 3, 16), torch.tensor([0]))

