"""Segmentation losses: cross-entropy, OHEM cross-entropy, and the pseudo-label
alternatives of the paper's Table 2 (soft top-k labels, CRST model regulariser).

All losses compute in float32 (safe under autocast) and return 0, not NaN, when
no pixel counts. The hard losses average over the pixels that count in the
whole batch (as HRNet and mmsegmentation do), not per image.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from csst_data import IGNORE

LOSS_KINDS = ("ce", "ohem")
PSEUDO_LOSSES = ("hard", "soft-topk", "hard+mr", "online")
OHEM_THRESH = 0.7
OHEM_MIN_KEPT = 100_000


def _check(logits, target):
    if logits.ndim != 4 or target.shape != (logits.shape[0], *logits.shape[2:]):
        raise ValueError(
            f"logits {tuple(logits.shape)} and labels {tuple(target.shape)} do not match: "
            "expected logits (N, C, H, W) and labels (N, H, W)"
        )


def _masked_mean(values, mask):
    return _mean(torch.where(mask, values, 0.0).sum(), mask.sum())


def _mean(total, count):
    # An empty selection gives 0 with a gradient path, instead of NaN; no host sync.
    return total / torch.as_tensor(count, device=total.device).clamp_min(1)


def _pixel_ce(logits, target, ignore_index):
    """Per-pixel cross-entropy (N, H, W) and the mask of pixels that count."""
    _check(logits, target)
    valid = target != ignore_index
    loss = F.cross_entropy(logits.float(), target.long(), ignore_index=ignore_index, reduction="none")
    return loss, valid


def _ohem_keep(logits, target, valid, thresh, min_kept):
    """HRNet / mmsegmentation OHEM: keep valid pixels whose true-class probability
    is below max(thresh, the min_kept-th smallest such probability)."""
    with torch.no_grad():
        prob = logits.float().softmax(1)
        t = torch.where(valid, target.long(), 0)
        p = prob.gather(1, t.unsqueeze(1)).squeeze(1)
        pv = p[valid]
        if pv.numel() == 0:
            return valid
        # Same indexing as HRNet: sorted[min(min_kept, n - 1)].
        k = min(int(min_kept), pv.numel() - 1)
        kth = pv.kthvalue(k + 1).values  # (k+1)-th smallest == sorted[k]
        threshold = torch.clamp(kth, min=thresh)
        return valid & (p < threshold)


def cross_entropy(logits: torch.Tensor, target: torch.Tensor, ignore_index: int = IGNORE) -> torch.Tensor:
    """Mean cross-entropy over pixels whose label is not `ignore_index`."""
    loss, valid = _pixel_ce(logits, target, ignore_index)
    return _masked_mean(loss, valid)


def ohem_cross_entropy(logits: torch.Tensor, target: torch.Tensor, thresh: float = OHEM_THRESH, min_kept: int = OHEM_MIN_KEPT,
                       ignore_index: int = IGNORE) -> torch.Tensor:
    """Online hard example mining cross-entropy, mean over the kept pixels."""
    loss, valid = _pixel_ce(logits, target, ignore_index)
    keep = _ohem_keep(logits, target, valid, thresh, min_kept)
    return _masked_mean(loss, keep)


def _soft_topk_terms(logits, topk_idx, topk_prob, ignore_mask):
    """Per-pixel soft cross-entropy against top-k probabilities renormalised to sum 1."""
    if topk_idx.shape != topk_prob.shape or topk_idx.ndim != 4 or topk_idx.shape[0] != logits.shape[0]:
        raise ValueError(
            f"topk_idx {tuple(topk_idx.shape)} and topk_prob {tuple(topk_prob.shape)} must both be "
            f"(N, K, H, W) with N = {logits.shape[0]}"
        )
    if topk_idx.shape[2:] != logits.shape[2:]:
        raise ValueError(f"top-k labels {tuple(topk_idx.shape)} do not match logits {tuple(logits.shape)}")
    # Stored probabilities are uint8 (p * 255); the scale cancels in the renormalisation.
    q = topk_prob.float()
    s = q.sum(1, keepdim=True)
    q = q / s.clamp_min(1e-12)
    logp = logits.float().log_softmax(1).gather(1, topk_idx.long())
    loss = -(q * logp).sum(1)
    valid = (s.squeeze(1) > 0) & ~ignore_mask.bool()
    return loss, valid


def soft_topk_loss(logits: torch.Tensor, topk_idx: torch.Tensor, topk_prob: torch.Tensor,
                   ignore_mask: torch.Tensor) -> torch.Tensor:
    """Cross-entropy against stored top-k probabilities (renormalised), mean over
    pixels not in `ignore_mask` (N, H, W) and with some probability mass."""
    loss, valid = _soft_topk_terms(logits, topk_idx, topk_prob, ignore_mask)
    return _masked_mean(loss, valid)


def model_regulariser(logits: torch.Tensor, valid_mask: torch.Tensor) -> torch.Tensor:
    """CRST model regulariser (paper Eq. 7): -mean over valid pixels of (1/C) sum_c log p_c.

    It is smallest for a uniform prediction, so it punishes overconfident outputs."""
    term = -logits.float().log_softmax(1).mean(1)
    valid = valid_mask.bool()
    return _masked_mean(term, valid)


def segmentation_loss(
    logits: torch.Tensor,
    batch: dict,
    kind: str = "ce",
    pseudo_loss: str = "hard",
    mr_weight: float = 0.1,
    thresh: float = OHEM_THRESH,
    min_kept: int = OHEM_MIN_KEPT,
    ignore_index: int = IGNORE,
) -> torch.Tensor:
    """The training loss for a batch of real and pseudo-labelled crops.

    batch: "label" (N, H, W) int, "is_pseudo" (N,) bool, and for pseudo_loss
    "soft-topk" also "topk_idx" / "topk_prob" (N, K, H, W). Real samples always
    get hard CE (kind "ce") or OHEM (kind "ohem"). Pseudo samples get:
    - "hard": the same hard loss on their pseudo labels;
    - "soft-topk": soft cross-entropy against their top-k probabilities; the
      result is the mean over all counted pixels, real and pseudo (Eq. 6);
    - "hard+mr": the hard loss plus mr_weight times the model regulariser over
      their labelled pixels (Eq. 7);
    - "online": the hard loss here; the unlabelled crops' loss against the
      network's own predictions is added by the step (online.py, Eq. 4).
    """
    if kind not in LOSS_KINDS:
        raise ValueError(f"unknown loss kind {kind!r}: choose one of {', '.join(LOSS_KINDS)}")
    if pseudo_loss not in PSEUDO_LOSSES:
        raise ValueError(f"unknown pseudo-label loss {pseudo_loss!r}: choose one of {', '.join(PSEUDO_LOSSES)}")
    target = batch["label"].to(logits.device)
    is_pseudo = _is_pseudo(batch, logits)
    loss, valid = _pixel_ce(logits, target, ignore_index)
    hard, soft = valid, None
    if pseudo_loss == "soft-topk":
        hard, soft = _soft_part(logits, batch, valid, is_pseudo)
    if kind == "ohem":
        hard = _ohem_keep(logits, target, hard, thresh, min_kept)

    total, count = torch.where(hard, loss, 0.0).sum(), hard.sum()
    if soft is not None:
        soft_loss, soft_valid = soft
        total, count = total + torch.where(soft_valid, soft_loss, 0.0).sum(), count + soft_valid.sum()
    out = _mean(total, count)
    if pseudo_loss == "hard+mr" and mr_weight:
        out = out + mr_weight * model_regulariser(logits, valid & is_pseudo.view(-1, 1, 1))
    return out


def _is_pseudo(batch, logits):
    """The batch's "is_pseudo" flags as an (N,) bool tensor on the logits' device (all False without it)."""
    n = logits.shape[0]
    is_pseudo = batch.get("is_pseudo")
    if is_pseudo is None:
        is_pseudo = torch.zeros(n, dtype=torch.bool, device=logits.device)
    is_pseudo = torch.as_tensor(is_pseudo, device=logits.device).bool().reshape(-1)
    if is_pseudo.numel() != n:
        raise ValueError(f"batch 'is_pseudo' has {is_pseudo.numel()} entries for {n} samples")
    return is_pseudo


def _soft_part(logits, batch, valid, is_pseudo):
    """For "soft-topk": (the mask of pixels left to the hard loss, (soft loss, its mask) or None)."""
    has_topk = "topk_idx" in batch and "topk_prob" in batch
    # A batch from the loader says which samples have soft labels ("has_topk"); without that
    # key every pseudo sample must have one.
    if not has_topk and "has_topk" not in batch and bool(is_pseudo.any()):
        raise ValueError(
            "pseudo loss 'soft-topk' needs 'topk_idx' and 'topk_prob' in the batch "
            "(pseudo labels written with --topk)"
        )
    if not has_topk:
        return valid, None
    # Pseudo samples without a soft label ("has_topk" False) keep their hard loss.
    soft_samples = is_pseudo & torch.as_tensor(batch.get("has_topk", True), device=logits.device).bool().reshape(-1)
    pseudo_px = soft_samples.view(-1, 1, 1)
    soft_loss, soft_valid = _soft_topk_terms(
        logits,
        batch["topk_idx"].to(logits.device),
        batch["topk_prob"].to(logits.device),
        ~valid,
    )
    return valid & ~pseudo_px, (soft_loss, soft_valid & pseudo_px)
