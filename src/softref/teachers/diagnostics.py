"""How much a teacher's soft labels say: match separation (ROC AUC) and row entropy, per batch.

CUSA's soft labels are built per training batch of B (caption, image) pairs: the image teacher's
row i is ``softmax_j(cos(t_img_i, t_img_j) / teacher_tau)``, the target for image i against the
batch's captions j; the text teacher's row i is ``softmax_j(cos(t_txt_i, t_txt_j) /
teacher_tau)``, the target for caption i against the batch's images j (``softref.losses.csa_loss``).
:func:`soft_label_diagnostics` measures, over random batches drawn as training draws them, how
well those rows point at the right entries:

**Matching.** ``relevant(batch)`` gives the (B, B) matrix R with ``R[i, j]`` = "caption i of the
batch is true of image j of the batch". Then an entry (i, j) of an *image*-teacher row matches
when ``R[j, i]`` (caption j, whose image is compared with image i, is true of image i: images i
and j are relevant to a common caption, caption j), and an entry of a *text*-teacher row matches
when ``R[i, j]`` (caption i is true of image j: captions i and j are true of a common image,
image j). Two relevances are provided: :func:`identity_relevance` (a caption is true of every
image of its identity: the person protocol) and :func:`fact_relevance` (a caption is true of an
image when every fact it mentions holds there: the demo's ground truth,
:func:`softref.data.facts.truth_matrix`).

**AUC.** The ROC AUC of the cosine similarities of all off-diagonal entries (i != j) of all
batches, pooled, matching against non-matching (Mann-Whitney, ties count one half); the diagonal
(an item with itself, cosine 1, always matching) is left out as it says nothing. Two pairs of one
batch may share their image (two captions of it); such entries match and, for an image teacher,
have cosine 1. Given each pair's image (``image_of_pair``), ``auc_other_images`` also leaves
them out: how well the teacher finds the *other* images a caption is true of, the false
negatives soft labels are for.

**Entropy.** For each ``teacher_tau``, the mean over rows of the entropy of the soft-label row
divided by ``ln B`` (1.0: uniform, no information), with the mass the row puts on its diagonal
and on the other matching entries (beside ``other_match_share``, the share of a row's
entries that are other matches, i.e. that mass under a uniform row).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np

from softref.data.facts import truth_matrix

__all__ = [
    "fact_relevance",
    "identity_relevance",
    "roc_auc",
    "soft_label_diagnostics",
]

Relevance = Callable[[np.ndarray], np.ndarray]


def identity_relevance(identities: Sequence[Any]) -> Relevance:
    """``relevant(batch)`` for pairs labelled by identity: caption i is true of image j when the
    pairs share the identity."""
    _, codes = np.unique(np.asarray([str(i) for i in identities], dtype=object), return_inverse=True)

    def relevant(batch: np.ndarray) -> np.ndarray:
        labels = codes[batch]
        return labels[:, None] == labels[None, :]

    return relevant


def fact_relevance(caption_codes: np.ndarray, image_codes: np.ndarray) -> Relevance:
    """``relevant(batch)`` from each pair's caption facts and image facts (``fact_codes`` rows, one
    per pair): caption i is true of image j when every fact caption i mentions holds in image j."""
    caption_codes, image_codes = np.asarray(caption_codes), np.asarray(image_codes)
    if caption_codes.shape != image_codes.shape:
        raise ValueError(f"fact_relevance: caption codes {caption_codes.shape} and image codes "
                         f"{image_codes.shape} must have one row per pair each")

    def relevant(batch: np.ndarray) -> np.ndarray:
        return truth_matrix(caption_codes[batch], image_codes[batch])

    return relevant


def roc_auc(scores: np.ndarray, labels: np.ndarray) -> float:
    """ROC AUC of ``scores`` for the boolean ``labels``: P(score of a positive > score of a
    negative), ties one half (Mann-Whitney U / (n_pos * n_neg)); NaN without both classes."""
    scores = np.asarray(scores, dtype=np.float64).ravel()
    labels = np.asarray(labels, dtype=bool).ravel()
    if scores.shape != labels.shape:
        raise ValueError(f"roc_auc: {scores.shape[0]} scores but {labels.shape[0]} labels")
    n_pos = int(labels.sum())
    n_neg = labels.size - n_pos
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    order = np.argsort(scores, kind="stable")
    ranks = np.empty(scores.size, dtype=np.float64)
    sorted_scores = scores[order]
    # Average ranks over runs of equal scores (1-based), so ties count one half.
    starts = np.flatnonzero(np.r_[True, sorted_scores[1:] != sorted_scores[:-1]])
    ends = np.r_[starts[1:], scores.size]
    ranks[order] = np.repeat((starts + ends + 1) / 2.0, ends - starts)
    u = ranks[labels].sum() - n_pos * (n_pos + 1) / 2.0
    return float(u / (n_pos * n_neg))


def _cosine(features: np.ndarray) -> np.ndarray:
    x = np.asarray(features, dtype=np.float64)
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    x = x / np.maximum(norms, 1e-12)
    return x @ x.T


def _row_stats(similarity: np.ndarray, match: np.ndarray, tau: float) -> tuple[float, float, float]:
    """Mean over rows of (entropy / ln B, mass on the diagonal, mass on other matches) of softmax(S / tau)."""
    logits = similarity / tau
    logits = logits - logits.max(axis=1, keepdims=True)
    p = np.exp(logits)
    p /= p.sum(axis=1, keepdims=True)
    entropy = -(p * np.log(np.maximum(p, 1e-300))).sum(axis=1) / np.log(similarity.shape[0])
    eye = np.eye(similarity.shape[0], dtype=bool)
    return float(entropy.mean()), float(p[eye].mean()), float((p * (match & ~eye)).sum(axis=1).mean())


def _batches(num_pairs: int, batch_size: int, seed: int, max_batches: int | None) -> list[np.ndarray]:
    """One shuffled epoch of full batches (the last partial batch is dropped), as training draws them."""
    order = np.random.default_rng(seed).permutation(num_pairs)
    count = num_pairs // batch_size
    if max_batches is not None:
        count = min(count, max_batches)
    return [order[k * batch_size : (k + 1) * batch_size] for k in range(count)]


def soft_label_diagnostics(
    features: Mapping[str, np.ndarray],
    relevant: Relevance,
    *,
    batch_size: int = 32,
    seed: int = 0,
    teacher_taus: Sequence[float] = (1.0, 0.1),
    max_batches: int | None = None,
    image_of_pair: Sequence[Any] | None = None,
) -> dict[str, Any]:
    """AUC and soft-label row statistics of image and/or text teacher features over random batches.

    Args:
        features: ``{"image": (P, D), "text": (P, D')}`` (either or both): the teacher feature
            of each pair's image and of each pair's caption, row p for pair p.
        relevant: ``relevant(batch)`` -> (B, B) bool, caption i true of image j, for the pair
            indices ``batch`` (:func:`identity_relevance`, :func:`fact_relevance`).
        batch_size: B (32 like the demo); seed: the batches' shuffle; max_batches: a cap.
        teacher_taus: the temperatures of the rows (the paper's 1.0, and a lower one).
        image_of_pair: each pair's image id; adds ``auc_other_images`` and ``same_image_pairs``.

    Returns:
        ``{"batch_size", "seed", "num_pairs", "num_batches", "teacher_taus", "<modality>":
        {"auc", "matching_pairs", "non_matching_pairs", "other_match_share", "rows": {"<tau>":
        {"entropy_ratio", "diagonal_mass", "other_match_mass"}}}}`` (with ``image_of_pair``
        also ``"auc_other_images"`` and ``"same_image_pairs"``); see the module docstring.
    """
    if not features or set(features) - {"image", "text"}:
        raise ValueError(f"features: expected 'image' and/or 'text', got {sorted(features)}")
    sizes = {m: len(f) for m, f in features.items()}
    if len(set(sizes.values())) != 1:
        raise ValueError(f"features: one row per pair in each modality, got {sizes}")
    num_pairs = next(iter(sizes.values()))
    if batch_size < 2 or num_pairs < batch_size:
        raise ValueError(f"batch_size must be in [2, {num_pairs}] (the number of pairs), got {batch_size}")
    batches = _batches(num_pairs, batch_size, seed, max_batches)
    if image_of_pair is not None and len(image_of_pair) != num_pairs:
        raise ValueError(f"image_of_pair: {len(image_of_pair)} entries for {num_pairs} pairs")
    image_codes = None if image_of_pair is None else np.unique([str(i) for i in image_of_pair], return_inverse=True)[1]
    out: dict[str, Any] = {"batch_size": batch_size, "seed": seed, "num_pairs": num_pairs,
                           "num_batches": len(batches), "teacher_taus": [float(t) for t in teacher_taus]}
    for modality, values in features.items():
        out[modality] = _modality_diagnostics(np.asarray(values), modality, relevant, batches, teacher_taus, image_codes)
    return out


def _modality_diagnostics(values: np.ndarray, modality: str, relevant: Relevance, batches: list[np.ndarray],
                          teacher_taus: Sequence[float], image_codes: np.ndarray | None) -> dict[str, Any]:
    """One teacher's entry of :func:`soft_label_diagnostics`."""
    scores, labels, same = [], [], []
    rows = {t: np.zeros(3) for t in teacher_taus}
    share = 0.0
    for batch in batches:
        truth = np.asarray(relevant(batch), dtype=bool)
        match = truth.T if modality == "image" else truth
        similarity = _cosine(values[batch])
        off = ~np.eye(len(batch), dtype=bool)
        scores.append(similarity[off])
        labels.append(match[off])
        if image_codes is not None:
            same.append((image_codes[batch][:, None] == image_codes[batch][None, :])[off])
        share += float((match & off).sum(axis=1).mean()) / len(batch)
        for tau in teacher_taus:
            rows[tau] += _row_stats(similarity, match, float(tau))
    scores_all, labels_all = np.concatenate(scores), np.concatenate(labels)
    result: dict[str, Any] = {
        "auc": roc_auc(scores_all, labels_all),
        "matching_pairs": int(labels_all.sum()),
        "non_matching_pairs": int((~labels_all).sum()),
        "other_match_share": share / len(batches),
        "rows": {
            f"{float(tau):g}": dict(zip(("entropy_ratio", "diagonal_mass", "other_match_mass"),
                                        (float(v) / len(batches) for v in rows[tau])))
            for tau in teacher_taus
        },
    }
    if image_codes is not None:
        other = ~np.concatenate(same)
        result["auc_other_images"] = roc_auc(scores_all[other], labels_all[other])
        result["same_image_pairs"] = int((~other).sum())
    return result
