"""Issue #24: the field's model zoo by name (segmentation-models-pytorch over its and timm's encoders),
random weights only (no network): build, train, resume exactly, evaluate, label, predict; local pretrained
files through --init; the encoder's input normalisation kept in the checkpoint; channels-last and compile."""

import io
import json
import os
import subprocess
import sys

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from csst_cli.main import cli
from csst_train.models import build_model, init_from, normalisation, zoo
from test_trainer import data  # noqa: F401  (the fixture: 12 + 3 small shard samples and their index)

try:
    zoo.import_smp()
    HAVE_ZOO = True
except ValueError:
    HAVE_ZOO = False

needs_zoo = pytest.mark.skipif(not HAVE_ZOO, reason="segmentation-models-pytorch / timm (the models extra) not installed")
SMALL = "smp:FPN:tu-mobilevit_xxs"  # 2.7 M parameters; timm's statistics for it are mean 0, std 1


@needs_zoo
@pytest.mark.parametrize("name", ["smp:DeepLabV3Plus:resnet18", "smp:PSPNet:resnet18", "smp:UPerNet:resnet18",
                                  "smp:Segformer:mit_b0", "smp:Unet:tu-resnet18", SMALL])
def test_zoo_models_give_logits_at_any_input_size(name):
    torch.manual_seed(0)
    model = build_model(name, 5).eval()
    with torch.no_grad():
        assert model(torch.randn(2, 3, 45, 70)).shape == (2, 5, 45, 70)  # not a multiple of any stride


def test_a_malformed_or_unknown_zoo_name_is_one_line():
    with pytest.raises(ValueError, match=r"expected smp:ARCH:ENCODER, e.g. smp:DeepLabV3Plus:resnext50_32x4d"):
        build_model("smp:DeepLabV3Plus", 3)
    if HAVE_ZOO:
        with pytest.raises(ValueError, match="unknown architecture 'NoSuchNet'"):
            build_model("smp:NoSuchNet:resnet18", 3)
        with pytest.raises(ValueError, match="unknown encoder"):
            build_model("smp:Unet:no_such_encoder", 3)
    with pytest.raises(ValueError, match="only the zoo's models"):
        build_model("fastscnn", 3, pretrained="imagenet")


def test_without_the_extra_the_error_says_how_to_install_it(tmp_path):
    """A Python whose path hides segmentation_models_pytorch and torchvision: one line naming the extra."""
    (tmp_path / "segmentation_models_pytorch").mkdir()
    (tmp_path / "segmentation_models_pytorch" / "__init__.py").write_text("raise ModuleNotFoundError(name=__name__)")
    (tmp_path / "torchvision").mkdir()
    (tmp_path / "torchvision" / "__init__.py").write_text("raise ModuleNotFoundError(name=__name__)")
    code = ("from csst_train.models import build_model\n"
            "try:\n    build_model('smp:Unet:resnet18', 3)\nexcept ValueError as e:\n    print(e)\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         env={**os.environ, "PYTHONPATH": str(tmp_path)}).stdout
    assert "not installed" in out and "pip install 'csst[models]'" in out and "torch==" in out


@needs_zoo
def test_offline_pretrained_weights_are_one_line_naming_the_caches(tmp_path):
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_HOME": str(tmp_path / "hf"), "TORCH_HOME": str(tmp_path / "th")}
    code = ("from csst_train.models import build_model\n"
            "try:\n    build_model('smp:Unet:resnet18', 3, pretrained='imagenet')\nexcept ValueError as e:\n"
            "    print(e)\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, env=env,
                         timeout=120).stdout.strip()
    assert "cannot fetch the 'imagenet' encoder weights" in out and str(tmp_path / "hf") in out and "--init" in out
    assert len(out.splitlines()) == 1


@needs_zoo
def test_a_local_encoder_state_dict_loads_into_the_encoder_and_says_so(tmp_path):
    import timm

    src = build_model("smp:Unet:tu-resnet18", 4)
    torch.save(timm.create_model("resnet18").state_dict(), tmp_path / "resnet18_timm.pth")  # a timm checkpoint
    report = init_from(src, tmp_path / "resnet18_timm.pth")
    assert report.target == "model.encoder.model."
    assert len(report.loaded) > 50 and all(k.startswith("model.encoder.model.") for k in report.loaded)
    smp_sd = {k: v for k, v in build_model("smp:DeepLabV3Plus:resnet18", 4).model.encoder.state_dict().items()}
    torch.save(smp_sd, tmp_path / "smp_encoder.pth")  # an smp encoder's state dict
    dst = build_model("smp:DeepLabV3Plus:resnet18", 7)
    report = init_from(dst, tmp_path / "smp_encoder.pth")
    assert report.target == "model.encoder." and set(report.loaded) == {"model.encoder." + k for k in smp_sd}
    assert "loaded" in report.summary() and "into the backbone" in report.summary()


def _train(data, out, *extra):
    args = ["train", "--data", str(data / "train"), "--index", str(data / "index.zarr"), "--val", str(data / "val"),
            "-o", str(out), "--epochs", "2", "--crop", "64", "--batch-size", "4", "--workers", "0", "--no-progress",
            "--loss", "ce", *extra]
    r = CliRunner().invoke(cli, args, catch_exceptions=False)
    assert r.exit_code == 0, r.output


@needs_zoo
def test_an_smp_model_trains_resumes_exactly_and_labels_predicts_evaluates_by_name(data, tmp_path):
    from hooks_model import KILL_BEFORE_STEP, hooks_env
    from test_trainer import _same_params

    common = ("--save-every", "2", "--model", "hooks_model:zoo")
    _train(data, tmp_path / "full", *common)
    cmd = [sys.executable, "-m", "csst_cli.main", "train", "--data", str(data / "train"), "--index",
           str(data / "index.zarr"), "--val", str(data / "val"), "-o", str(tmp_path / "killed"), "--epochs", "2",
           "--crop", "64", "--batch-size", "4", "--workers", "0", "--no-progress", "--loss", "ce", *common]
    proc = subprocess.run(cmd, capture_output=True, text=True, env=hooks_env(**{KILL_BEFORE_STEP: 5}))
    assert proc.returncode == -9, proc.stderr
    _train(data, tmp_path / "killed", *common, "--resume")
    _same_params(tmp_path / "full" / "last.pt", tmp_path / "killed" / "last.pt")

    _train(data, tmp_path / "named", "--model", SMALL, "--epochs", "1")
    ckpt = tmp_path / "named" / "best.pt"
    saved = torch.load(ckpt, weights_only=False)
    assert saved["args"]["model"] == SMALL and saved["normalisation"] == {"mean": [0.0] * 3, "std": [1.0] * 3}
    run = CliRunner().invoke
    r = run(cli, ["eval", "--checkpoint", str(ckpt), "--data", str(data / "val"), "--json", str(tmp_path / "e.json"),
                  "--no-progress"])
    assert r.exit_code == 0, r.output
    assert json.loads((tmp_path / "e.json").read_text())["images"] == 3
    r = run(cli, ["label", "--checkpoint", str(ckpt), "--input", str(data / "val"), "-o", str(tmp_path / "pseudo"),
                  "--workers", "0", "--device", "cpu", "--no-progress"])
    assert r.exit_code == 0, r.output
    r = run(cli, ["predict", "--checkpoint", str(ckpt), "--input", str(data / "val"), "-o", str(tmp_path / "pred"),
                  "--workers", "0", "--device", "cpu", "--no-progress"])
    assert r.exit_code == 0, r.output


@needs_zoo
def test_predict_uses_the_normalisation_its_checkpoint_records(data, tmp_path):
    """The checkpoint of a model whose encoder expects mean 0, std 1: predict's ids are the argmax of the
    model on images normalised that way, not with ImageNet's statistics."""
    from PIL import Image

    from csst_data.datasets import parse_source
    from csst_train.checkpoints import model_from_checkpoint
    from csst_train.inference import normalise

    _train(data, tmp_path / "run", "--model", SMALL, "--epochs", "1")
    ckpt = tmp_path / "run" / "last.pt"
    r = CliRunner().invoke(cli, ["predict", "--checkpoint", str(ckpt), "--input", str(data / "val"), "-o",
                                 str(tmp_path / "pred"), "--workers", "0", "--device", "cpu", "--no-progress"])
    assert r.exit_code == 0, r.output
    model, _ = model_from_checkpoint(ckpt)
    assert normalisation(SMALL) == ((0.0, 0.0, 0.0), (1.0, 1.0, 1.0))
    agree = {"own": [], "imagenet": []}
    for s in parse_source(str(data / "val")).iter(labels=False):
        image = torch.from_numpy(np.array(Image.open(io.BytesIO(s["image"])).convert("RGB")))[None]
        got = np.asarray(Image.open(tmp_path / "pred" / f"{s['key']}.png"))
        with torch.no_grad():
            for name, stats in (("own", normalisation(SMALL)), ("imagenet", None)):
                x = normalise(image, stats) if stats else normalise(image)
                agree[name].append(float((model(x).argmax(1)[0].numpy() == got).mean()))
    # Pillow's JPEG decode may differ from the loader's by a grey level here and there: near-equal, not equal.
    assert min(agree["own"]) > 0.99 and np.mean(agree["own"]) > np.mean(agree["imagenet"]) + 0.01, agree


@pytest.mark.parametrize("flag", ["--channels-last", "--compile"])
def test_channels_last_and_compile_give_the_default_losses_on_cpu(data, tmp_path, flag):
    """One step (4 crops), as the default and with the flag: the same loss and parameters to float rounding
    (another summation order), and a compiled model saves the plain model's names."""
    common = ("--epochs", "1", "--length", "4", "--model", "hooks_model:tiny")
    _train(data, tmp_path / "plain", *common)
    _train(data, tmp_path / "flag", *common, flag)
    a, b = ([json.loads(line)["loss"] for line in open(tmp_path / n / "metrics.jsonl")] for n in ("plain", "flag"))
    assert a == pytest.approx(b, rel=1e-4)
    pa = torch.load(tmp_path / "plain" / "last.pt", weights_only=False)["model"]
    pb = torch.load(tmp_path / "flag" / "last.pt", weights_only=False)["model"]
    assert pa.keys() == pb.keys()
    for k in pa:
        assert torch.allclose(pa[k].float(), pb[k].float(), rtol=1e-4, atol=1e-5), k


def test_the_gpu_check_exits_0_without_cuda_and_its_sections_run_on_the_cpu(tmp_path):
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    script = os.path.join(root, "benchmarks", "gpu_check.py")
    env = {**os.environ, "CUDA_VISIBLE_DEVICES": ""}
    plain = subprocess.run([sys.executable, script], capture_output=True, text=True, env=env, timeout=120)
    assert plain.returncode == 0 and "no CUDA device" in plain.stdout
    run = subprocess.run([sys.executable, script, "--cpu", "--json", str(tmp_path / "g.json")], capture_output=True,
                         text=True, env=env, timeout=600)
    assert run.returncode == 0, run.stderr[-2000:]
    result = json.loads((tmp_path / "g.json").read_text())
    for section in ("loader", "label", "decode") + (("train", "schedule") if HAVE_ZOO else ()):
        assert "error" not in result[section], (section, result[section])
    if HAVE_ZOO:
        assert result["train"]["smp:DeepLabV3Plus:resnext50_32x4d"]["crops_per_s"] > 0


def test_a_batch_of_one_crop_is_one_line_saying_how_to_avoid_it(data, tmp_path):
    """5 samples at batch 2 end the epoch with one crop, which Fast-SCNN's pooled BatchNorm cannot train on
    (was: torch's "Expected more than 1 value per channel when training")."""
    args = ["train", "--data", str(data / "train"), "--index", str(data / "index.zarr"), "-o", str(tmp_path / "r"),
            "--epochs", "1", "--length", "5", "--crop", "32", "--batch-size", "2", "--workers", "0",
            "--no-progress", "--loss", "ce"]
    r = CliRunner().invoke(cli, args)
    assert r.exit_code == 1
    line = r.output.strip().splitlines()[-1]
    assert "a batch of one crop" in line and "--length" in line and "--batch-size" in line
    six = [("6" if a == "5" else a) for a in args]
    six[six.index("-o") + 1] = str(tmp_path / "six")
    assert CliRunner().invoke(cli, six).exit_code == 0  # 6 samples: three batches of two
