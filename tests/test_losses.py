import numpy as np
import pytest
import torch
import torch.nn.functional as F

from csst_train.losses import (
    cross_entropy,
    model_regulariser,
    ohem_cross_entropy,
    segmentation_loss,
    soft_topk_loss,
)

C = 5


def _data(seed, n=2, h=9, w=11, ignore_frac=0.2):
    g = torch.Generator().manual_seed(seed)
    logits = torch.randn(n, C, h, w, generator=g) * 2
    target = torch.randint(0, C, (n, h, w), generator=g)
    target[torch.rand(n, h, w, generator=g) < ignore_frac] = 255
    return logits, target


def _ohem_reference(logits, target, thresh, min_kept):
    """HRNet's OhemCrossEntropy, written on sorted probabilities in numpy."""
    x = logits.double().numpy().transpose(0, 2, 3, 1).reshape(-1, C)
    t = target.numpy().reshape(-1)
    valid = t != 255
    x, t = x[valid], t[valid]
    p = np.exp(x - x.max(1, keepdims=True))
    p /= p.sum(1, keepdims=True)
    pt = p[np.arange(len(t)), t]
    order = np.argsort(pt, kind="stable")
    pt_sorted = pt[order]
    threshold = max(pt_sorted[min(min_kept, len(pt_sorted) - 1)], thresh)
    kept = order[pt_sorted < threshold]
    return float(np.mean(-np.log(pt[kept])))


@pytest.mark.parametrize(
    "thresh,min_kept",
    [(0.7, 0), (0.7, 20), (0.7, 10_000), (0.05, 50), (0.05, 0), (0.3, 100)],
)
def test_ohem_matches_reference(thresh, min_kept):
    logits, target = _data(0)
    got = ohem_cross_entropy(logits, target, thresh=thresh, min_kept=min_kept)
    want = _ohem_reference(logits, target, thresh, min_kept)
    assert got.item() == pytest.approx(want, rel=1e-5)


def test_ohem_keeps_hard_pixels_and_min_kept():
    logits, target = _data(1, ignore_frac=0.0)
    # Low threshold: exactly the min_kept hardest pixels are kept.
    p = logits.softmax(1).gather(1, target.unsqueeze(1)).squeeze(1).reshape(-1)
    ce = F.cross_entropy(logits, target, reduction="none").reshape(-1)
    hardest = torch.argsort(p)[:30]
    got = ohem_cross_entropy(logits, target, thresh=1e-9, min_kept=30)
    assert got.item() == pytest.approx(ce[hardest].mean().item(), rel=1e-5)
    # min_kept beyond the batch: the threshold is the largest probability itself and,
    # as in HRNet and mmsegmentation (strict <), only that easiest pixel drops out.
    assert p.max() > 0.7
    got = ohem_cross_entropy(logits, target, thresh=0.7, min_kept=10**9)
    assert got.item() == pytest.approx(ce[torch.argsort(p)[:-1]].mean().item(), rel=1e-5)


def test_ignore_handling():
    logits, target = _data(2)
    want = F.cross_entropy(logits, target, ignore_index=255)
    assert cross_entropy(logits, target).item() == pytest.approx(want.item(), rel=1e-6)
    # Logits at ignored pixels change nothing, in either loss.
    other = logits.clone()
    other.permute(0, 2, 3, 1)[target == 255] = 50.0
    assert cross_entropy(other, target).item() == pytest.approx(want.item(), rel=1e-6)
    a = ohem_cross_entropy(logits, target, min_kept=10)
    b = ohem_cross_entropy(other, target, min_kept=10)
    assert a.item() == pytest.approx(b.item(), rel=1e-6)


def test_all_ignore_gives_zero_without_nan():
    logits, target = _data(3)
    target[:] = 255
    logits.requires_grad_(True)
    batch = {
        "label": target,
        "is_pseudo": torch.tensor([False, True]),
        "topk_idx": torch.zeros(2, 2, 9, 11, dtype=torch.uint8),
        "topk_prob": torch.zeros(2, 2, 9, 11, dtype=torch.uint8),
    }
    losses = [
        cross_entropy(logits, target),
        ohem_cross_entropy(logits, target),
        model_regulariser(logits, target != 255),
        soft_topk_loss(logits, batch["topk_idx"], batch["topk_prob"], target == 255),
    ]
    for kind in ("ce", "ohem"):
        for pseudo in ("hard", "soft-topk", "hard+mr"):
            losses.append(segmentation_loss(logits, batch, kind=kind, pseudo_loss=pseudo))
    for loss in losses:
        assert loss.item() == 0.0
        (grad,) = torch.autograd.grad(loss, logits)
        assert torch.isfinite(grad).all() and not grad.any()


def test_soft_topk_with_all_classes_equals_soft_ce():
    g = torch.Generator().manual_seed(4)
    logits = torch.randn(2, C, 6, 7, generator=g)
    q = torch.distributions.Dirichlet(torch.ones(C)).sample((2, 6, 7)).permute(0, 3, 1, 2)
    # Store the full distribution as top-k in a shuffled class order, with k = C.
    idx = torch.stack([torch.randperm(C, generator=g) for _ in range(2 * 6 * 7)]).reshape(2, 6, 7, C)
    idx = idx.permute(0, 3, 1, 2).contiguous()
    prob = q.gather(1, idx)
    ignore = torch.zeros(2, 6, 7, dtype=torch.bool)
    want = -(q * logits.log_softmax(1)).sum(1).mean()
    got = soft_topk_loss(logits, idx.to(torch.uint8), prob, ignore)
    assert got.item() == pytest.approx(want.item(), rel=1e-5)
    # Scaled (e.g. uint8-quantised) probabilities are renormalised to sum 1.
    assert soft_topk_loss(logits, idx, prob * 7.0, ignore).item() == pytest.approx(want.item(), rel=1e-5)
    # Ignored pixels drop out of the mean.
    ignore[0] = True
    want1 = -(q[1] * logits[1].log_softmax(0)).sum(0).mean()
    assert soft_topk_loss(logits, idx, prob, ignore).item() == pytest.approx(want1.item(), rel=1e-5)


def test_soft_topk_renormalises_k2():
    logits = torch.randn(1, C, 3, 4)
    idx = torch.zeros(1, 2, 3, 4, dtype=torch.long)
    idx[:, 1] = 3
    prob = torch.zeros(1, 2, 3, 4, dtype=torch.uint8)
    prob[:, 0], prob[:, 1] = 153, 51  # 0.6 and 0.2 -> 0.75 and 0.25
    logp = logits.log_softmax(1)
    want = -(0.75 * logp[:, 0] + 0.25 * logp[:, 3]).mean()
    got = soft_topk_loss(logits, idx, prob, torch.zeros(1, 3, 4, dtype=torch.bool))
    assert got.item() == pytest.approx(want.item(), rel=1e-5)


def test_model_regulariser():
    logits, target = _data(5)
    valid = target != 255
    # Uniform output: -(1/C) sum log(1/C) = log C, its minimum.
    assert model_regulariser(torch.zeros_like(logits), valid).item() == pytest.approx(np.log(C))
    logp = logits.double().log_softmax(1).numpy()
    want = -logp.mean(1)[valid.numpy()].mean()
    assert model_regulariser(logits, valid).item() == pytest.approx(want, rel=1e-5)
    assert model_regulariser(logits, valid).item() > np.log(C)


def test_segmentation_loss_variants():
    logits, target = _data(6, n=4)
    is_pseudo = torch.tensor([False, True, False, True])
    batch = {"label": target, "is_pseudo": is_pseudo}
    ce = cross_entropy(logits, target)
    # Hard pseudo labels are plain CE / OHEM over the whole batch.
    assert segmentation_loss(logits, batch).item() == pytest.approx(ce.item(), rel=1e-6)
    got = segmentation_loss(logits, batch, kind="ohem", min_kept=40)
    assert got.item() == pytest.approx(ohem_cross_entropy(logits, target, min_kept=40).item(), rel=1e-6)
    # hard+mr adds the regulariser on pseudo samples only.
    mr = model_regulariser(logits[is_pseudo], target[is_pseudo] != 255)
    got = segmentation_loss(logits, batch, pseudo_loss="hard+mr", mr_weight=0.3)
    assert got.item() == pytest.approx(ce.item() + 0.3 * mr.item(), rel=1e-6)
    real_only = {"label": target, "is_pseudo": torch.zeros(4, dtype=torch.bool)}
    got = segmentation_loss(logits, real_only, pseudo_loss="hard+mr", mr_weight=0.3)
    assert got.item() == pytest.approx(ce.item(), rel=1e-6)


def test_segmentation_loss_soft_topk_mixed_batch():
    logits, target = _data(7, n=3)
    is_pseudo = torch.tensor([True, False, True])
    g = torch.Generator().manual_seed(8)
    idx = torch.randint(0, C, (3, 2, 9, 11), generator=g)
    prob = torch.randint(1, 256, (3, 2, 9, 11), generator=g).to(torch.uint8)
    batch = {"label": target, "is_pseudo": is_pseudo, "topk_idx": idx, "topk_prob": prob}
    # Oracle: sum of hard CE on real pixels plus soft CE on pseudo pixels, over all counted pixels.
    valid = target != 255
    ce = F.cross_entropy(logits, target, ignore_index=255, reduction="none")
    q = prob.double() / prob.double().sum(1, keepdim=True)
    soft = -(q * logits.double().log_softmax(1).gather(1, idx)).sum(1)
    real_px = valid & ~is_pseudo.view(3, 1, 1)
    pseudo_px = valid & is_pseudo.view(3, 1, 1)
    want = (ce[real_px].sum() + soft[pseudo_px].sum()) / (real_px.sum() + pseudo_px.sum())
    got = segmentation_loss(logits, batch, pseudo_loss="soft-topk")
    assert got.item() == pytest.approx(want.item(), rel=1e-5)
    # Real samples never use the soft labels.
    batch["is_pseudo"] = torch.zeros(3, dtype=torch.bool)
    got = segmentation_loss(logits, batch, pseudo_loss="soft-topk")
    assert got.item() == pytest.approx(cross_entropy(logits, target).item(), rel=1e-6)


def test_segmentation_loss_errors():
    logits, target = _data(9)
    with pytest.raises(ValueError, match="topk_idx"):
        segmentation_loss(logits, {"label": target, "is_pseudo": torch.tensor([True, False])}, pseudo_loss="soft-topk")
    with pytest.raises(ValueError, match="unknown loss kind"):
        segmentation_loss(logits, {"label": target}, kind="focal")
    with pytest.raises(ValueError, match="unknown pseudo-label loss"):
        segmentation_loss(logits, {"label": target}, pseudo_loss="soft")
    with pytest.raises(ValueError, match="do not match"):
        cross_entropy(logits, target[:, :5])
    with pytest.raises(ValueError, match="is_pseudo"):
        segmentation_loss(logits, {"label": target, "is_pseudo": torch.tensor([True])})
