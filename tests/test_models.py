import sys

import pytest
import torch

from csst_train.losses import segmentation_loss
from csst_train.models import MODEL_NAMES, build_model, count_parameters, load_init


@pytest.mark.parametrize("name", MODEL_NAMES)
def test_forward_odd_sizes(name):
    torch.manual_seed(0)
    model = build_model(name, 7)
    with torch.no_grad():
        model.eval()
        assert model(torch.randn(2, 3, 97, 131)).shape == (2, 7, 97, 131)
        assert model(torch.randn(1, 3, 33, 65)).shape == (1, 7, 33, 65)
    # Training mode with one image per process must work (no BatchNorm on pooled 1x1 maps).
    model.train()
    y = model(torch.randn(1, 3, 65, 49))
    assert y.shape == (1, 7, 65, 49)
    y.mean().backward()
    assert all(p.grad is not None for p in model.parameters() if p.requires_grad)


def test_fastscnn_size():
    n = count_parameters(build_model("fastscnn", 19))
    assert 1.0e6 < n < 1.25e6


# torchvision's ResNet trunks (without fc): parameter counts and a few key shapes.
TV = {
    "deeplabv3plus-r18": (
        11_689_512 - (512 * 1000 + 1000),
        122 - 2,
        {
            "conv1.weight": (64, 3, 7, 7),
            "layer1.1.conv2.weight": (64, 64, 3, 3),
            "layer2.0.downsample.0.weight": (128, 64, 1, 1),
            "layer4.1.bn2.running_var": (512,),
        },
    ),
    "deeplabv3plus-r50": (
        25_557_032 - (2048 * 1000 + 1000),
        320 - 2,
        {
            "layer1.0.downsample.0.weight": (256, 64, 1, 1),
            "layer2.0.conv2.weight": (128, 128, 3, 3),
            "layer3.5.conv3.weight": (1024, 256, 1, 1),
            "layer4.2.conv3.weight": (2048, 512, 1, 1),
            "layer4.0.downsample.1.num_batches_tracked": (),
        },
    ),
}


@pytest.mark.parametrize("name", sorted(TV))
def test_backbone_matches_torchvision_layout(name):
    params, keys, shapes = TV[name]
    backbone = build_model(name, 19).backbone
    sd = backbone.state_dict()
    assert count_parameters(backbone) == params
    assert len(sd) == keys
    for k, shape in shapes.items():
        assert tuple(sd[k].shape) == shape, k


def test_unknown_model_lists_names():
    with pytest.raises(ValueError, match="fastscnn.*deeplabv3plus-r18"):
        build_model("unet", 3)
    with pytest.raises(ValueError, match="no_such_module"):
        build_model("no_such_module:make", 3)


def _write_user_module(tmp_path, monkeypatch, body):
    (tmp_path / "user_seg_models.py").write_text(body)
    monkeypatch.syspath_prepend(str(tmp_path))
    sys.modules.pop("user_seg_models", None)


USER_MODEL = """
import torch.nn as nn

def tiny(num_classes):
    return nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, num_classes, 1))

def not_a_model(num_classes):
    return 42
"""


def test_user_factory_builds_and_trains(tmp_path, monkeypatch):
    _write_user_module(tmp_path, monkeypatch, USER_MODEL)
    torch.manual_seed(0)
    model = build_model("user_seg_models:tiny", 4)
    assert model[-1].out_channels == 4
    with pytest.raises(ValueError, match="not a torch.nn.Module"):
        build_model("user_seg_models:not_a_model", 4)
    with pytest.raises(ValueError, match="cannot import"):
        build_model("user_seg_models:missing", 4)

    # The label is a function of the pixel colour, so a few steps must lower the loss.
    x = torch.randn(4, 3, 16, 16)
    batch = {"label": x.argmax(1), "is_pseudo": torch.tensor([False, True, False, True])}
    opt = torch.optim.SGD(model.parameters(), lr=0.5, momentum=0.9)
    losses = []
    for _ in range(30):
        loss = segmentation_loss(model(x), batch)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.5 * losses[0]


def _torchvision_like(name):
    torch.manual_seed(1)
    sd = {k: v.clone() for k, v in build_model(name, 19).backbone.state_dict().items()}
    for k, v in sd.items():
        if v.is_floating_point():
            v.normal_()
    width = 512 if name.endswith("r18") else 2048
    sd["fc.weight"] = torch.randn(1000, width)
    sd["fc.bias"] = torch.randn(1000)
    return sd


def test_load_init_torchvision_backbone(tmp_path):
    sd = _torchvision_like("deeplabv3plus-r18")
    path = tmp_path / "resnet18.pth"
    torch.save(sd, path)
    model = build_model("deeplabv3plus-r18", 5)
    head_before = model.classifier.weight.clone()
    missing, unexpected = load_init(model, path)
    assert missing == [] and unexpected == []
    got = model.backbone.state_dict()
    for k, v in sd.items():
        if not k.startswith("fc."):
            assert torch.equal(got[k], v), k
    assert torch.equal(model.classifier.weight, head_before)


def test_load_init_wrapped_whole_model(tmp_path):
    src = build_model("fastscnn", 6)
    for p in src.parameters():
        p.data.normal_()
    wrapped = {"model": {"module." + k: v for k, v in src.state_dict().items()}, "epoch": 3}
    wrapped["model"]["extra.weight"] = torch.zeros(2)
    torch.save(wrapped, tmp_path / "ckpt.pt")
    dst = build_model("fastscnn", 6)
    missing, unexpected = load_init(dst, tmp_path / "ckpt.pt")
    assert missing == [] and unexpected == ["extra.weight"]
    for (k, a), b in zip(src.state_dict().items(), dst.state_dict().values()):
        assert torch.equal(a, b), k

    torch.save({"state_dict": src.state_dict()}, tmp_path / "sd.pt")
    assert load_init(build_model("fastscnn", 6), tmp_path / "sd.pt") == ([], [])


def test_load_init_shape_mismatch_and_partial(tmp_path):
    src = build_model("fastscnn", 6)
    sd = src.state_dict()
    del sd["learning_to_downsample.0.0.weight"]
    torch.save(sd, tmp_path / "six.pt")
    dst = build_model("fastscnn", 3)  # a different number of classes
    missing, unexpected = load_init(dst, tmp_path / "six.pt")
    assert set(missing) == {"learning_to_downsample.0.0.weight", "classifier.3.weight", "classifier.3.bias"}
    assert set(unexpected) == {"classifier.3.weight", "classifier.3.bias"}
    assert torch.equal(dst.fusion.high[0].weight, src.fusion.high[0].weight)


def test_load_init_errors(tmp_path):
    model = build_model("fastscnn", 3)
    with pytest.raises(ValueError, match="nothing.pt: no such file"):
        load_init(model, tmp_path / "nothing.pt")
    torch.save({"foo.weight": torch.zeros(3)}, tmp_path / "other.pt")
    with pytest.raises(ValueError, match="other.pt: none of its 1 tensors match"):
        load_init(model, tmp_path / "other.pt")
    (tmp_path / "junk.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(ValueError, match="junk.pt: cannot read"):
        load_init(model, tmp_path / "junk.pt")
    torch.save({"epoch": 1}, tmp_path / "empty.pt")
    with pytest.raises(ValueError, match="empty.pt: holds no state dict"):
        load_init(model, tmp_path / "empty.pt")
