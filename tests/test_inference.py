import pytest
import torch
import torch.nn.functional as F
from torch import nn

from csst_train.inference import IMAGENET_MEAN, IMAGENET_STD, normalise, predict_probs
from csst_train.models import build_model

C = 4


def _pointwise():
    torch.manual_seed(0)
    return nn.Conv2d(3, C, 1).eval()


def _symmetric3x3():
    """A 3x3 convolution whose kernels are mirror-symmetric left-right: flip-equivariant."""
    torch.manual_seed(1)
    conv = nn.Conv2d(3, C, 3, padding=1)
    with torch.no_grad():
        conv.weight.copy_((conv.weight + conv.weight.flip(-1)) / 2)
    return conv.eval()


def _image(h=37, w=53, n=2, seed=2):
    return torch.randn(n, 3, h, w, generator=torch.Generator().manual_seed(seed))


def test_normalise():
    g = torch.Generator().manual_seed(0)
    nchw = torch.randint(0, 256, (2, 3, 5, 7), generator=g, dtype=torch.uint8)
    out = normalise(nchw)
    assert out.dtype == torch.float32 and out.shape == (2, 3, 5, 7)
    want = (nchw[:, 1].float() / 255 - IMAGENET_MEAN[1]) / IMAGENET_STD[1]
    assert torch.allclose(out[:, 1], want, atol=1e-5)
    assert torch.equal(normalise(nchw.permute(0, 2, 3, 1)), out)
    with pytest.raises(ValueError, match="uint8"):
        normalise(nchw.float())
    with pytest.raises(ValueError, match="3 channels"):
        normalise(torch.zeros(1, 4, 5, 6, dtype=torch.uint8))


@pytest.mark.parametrize("crop,stride", [(16, 10), (16, None), ((20, 64), (7, 9)), (13, 13)])
def test_sliding_window_equals_whole_image(crop, stride):
    model, x = _pointwise(), _image()
    whole = predict_probs(model, x, C)
    slid = predict_probs(model, x, C, crop=crop, stride=stride)
    assert slid.shape == (2, C, 37, 53)
    assert torch.isfinite(slid).all()  # every pixel covered by some window
    assert torch.allclose(slid, whole, atol=1e-5)


def test_sliding_window_averages_overlapping_windows():
    # A 3x3 conv sees zero padding at window borders, so sliding differs from whole;
    # check against a direct average of the two overlapping windows.
    model = _symmetric3x3()
    x = _image(h=10, w=14, n=1)
    got = predict_probs(model, x, C, crop=(10, 10), stride=(10, 4))
    with torch.no_grad():
        acc = torch.zeros(1, C, 10, 14)
        cnt = torch.zeros(1, 1, 10, 14)
        for x1 in (0, 4):
            acc[..., x1 : x1 + 10] += model(x[..., x1 : x1 + 10])
            cnt[..., x1 : x1 + 10] += 1
    assert torch.allclose(got, (acc / cnt).softmax(1), atol=1e-5)


def test_flip_averaging():
    x = _image()
    model = _symmetric3x3()
    assert torch.allclose(predict_probs(model, x, C, flip=True), predict_probs(model, x, C), atol=1e-5)
    # A model that is not flip-equivariant: the mean of the two passes.
    model = nn.Conv2d(3, C, 3, padding=1).eval()
    with torch.no_grad():
        want = (model(x).softmax(1) + model(x.flip(-1)).flip(-1).softmax(1)) / 2
    assert torch.allclose(predict_probs(model, x, C, flip=True), want, atol=1e-5)


def test_multi_scale_matches_manual_average():
    model, x = _symmetric3x3(), _image(h=31, w=45)
    with torch.no_grad():
        ps = []
        for s in (0.5, 1.5):
            xs = F.interpolate(x, size=(round(31 * s), round(45 * s)), mode="bilinear", align_corners=False)
            y = F.interpolate(model(xs), size=(31, 45), mode="bilinear", align_corners=False)
            ps.append(y.softmax(1))
    got = predict_probs(model, x, C, scales=(0.5, 1.5))
    assert torch.allclose(got, sum(ps) / 2, atol=1e-5)
    assert torch.allclose(got.sum(1), torch.ones(2, 31, 45), atol=1e-5)


def test_output_shape_odd_sizes_with_all_options():
    model = build_model("fastscnn", 3).eval()
    x = _image(h=97, w=131, n=1)
    p = predict_probs(model, x, 3, scales=(0.75, 1.25), flip=True, crop=64)
    assert p.shape == (1, 3, 97, 131) and p.dtype == torch.float32
    assert torch.allclose(p.sum(1), torch.ones(1, 97, 131), atol=1e-4)
    bf = predict_probs(model, x, 3, amp_dtype=torch.bfloat16)
    assert bf.dtype == torch.float32 and bf.shape == (1, 3, 97, 131)
    assert (bf - predict_probs(model, x, 3)).abs().max() < 0.1


def test_bad_inputs():
    model, x = _pointwise(), _image()
    with pytest.raises(ValueError, match=r"expected \(N, 5, H, W\)"):
        predict_probs(model, x, 5)
    with pytest.raises(ValueError, match="normalised float image"):
        predict_probs(model, x.to(torch.uint8), C)
    with pytest.raises(ValueError, match="scales must be positive"):
        predict_probs(model, x, C, scales=(0.0,))
