"""What a file records and compares on resume (landscape/io/provenance.py): the user's loss, metrics,
model and dataset code fingerprinted; the tool's version; the arithmetic (precision, TF32) of the loss maps."""
import copy

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

import landscape
from helpers import mlp_and_data


def test_code_fingerprints_tell_settings_code_and_closures_apart():
    from landscape.io.provenance import code_sha256
    assert code_sha256(nn.CrossEntropyLoss()) == code_sha256(nn.CrossEntropyLoss())
    assert code_sha256(nn.CrossEntropyLoss()) != code_sha256(nn.CrossEntropyLoss(label_smoothing=0.5))
    assert code_sha256(nn.CrossEntropyLoss(weight=torch.ones(10))) != code_sha256(nn.CrossEntropyLoss(weight=torch.arange(10.)))
    one = lambda o, t: F.cross_entropy(o, t)                                        # noqa: E731
    same = lambda o, t: F.cross_entropy(o, t)                                       # noqa: E731
    two = lambda o, t: 2 * F.cross_entropy(o, t)                                    # noqa: E731
    assert code_sha256(one) == code_sha256(same) != code_sha256(two)

    def scaled(k):
        return lambda o, t: k * F.cross_entropy(o, t)
    assert code_sha256(scaled(1.0)) == code_sha256(scaled(1.0)) != code_sha256(scaled(3.0))
    assert code_sha256({"m": one}) != code_sha256({"m": two})


def resume(loss=None, metrics=None, out="s.h5", **kw):
    net, data = mlp_and_data()
    return landscape.surface(net, data, loss=loss, metrics=metrics, x="-1:1:3", out=out, **kw)


@pytest.mark.parametrize("first,second", [
    (nn.CrossEntropyLoss(), nn.CrossEntropyLoss(label_smoothing=0.5)),
    (lambda o, t: F.cross_entropy(o, t), lambda o, t: 2 * F.cross_entropy(o, t)),
], ids=["label_smoothing", "lambda"])
def test_resume_with_another_loss_callable_is_refused_naming_the_loss(in_tmp, first, second):
    a = resume(first)
    b = resume(copy.deepcopy(first))                  # the same loss again: resumes, nothing recomputed
    assert b.stats["points"] == 0 and (b.values["train_loss"] == a.values["train_loss"]).all()
    before = open("s.h5", "rb").read()
    with pytest.raises(landscape.LandscapeError, match="another loss"):
        resume(second)
    assert open("s.h5", "rb").read() == before


def test_resume_with_another_metric_function_is_refused_naming_the_metrics(in_tmp):
    resume(metrics={"m": lambda o, t: o.mean()})
    resume(metrics={"m": lambda o, t: o.mean()})      # the same code
    with pytest.raises(landscape.LandscapeError, match="another metrics"):
        resume(metrics={"m": lambda o, t: 10 * o.mean()})


def test_a_hessian_direction_file_refuses_another_loss(in_tmp):
    net, data = mlp_and_data()
    kw = dict(x="-1:1:2", directions="hessian", dir_file="d.h5")
    landscape.surface(net, data, loss=nn.CrossEntropyLoss(), out="a.h5", **kw)
    with pytest.raises(landscape.LandscapeError, match="direction file 'd.h5'.*another loss"):
        landscape.surface(net, data, loss=nn.CrossEntropyLoss(label_smoothing=0.5), out="b.h5", **kw)


LOSS_FILE = "import torch.nn as nn\ndef loss():\n    return nn.CrossEntropyLoss(label_smoothing={})\n"


def test_cli_resume_with_an_edited_loss_file_is_refused_naming_the_loss(mlp_ckpt, in_tmp, capsys):
    from landscape.cli import plot_surface
    from landscape.errors import run_cli
    (in_tmp / "myloss.py").write_text(LOSS_FILE.format(0.0))
    argv = ["--dataset", "digits", "--model", "digits_mlp", "--model_file", mlp_ckpt, "--x=-1:1:3",
            "--loss_name", "myloss.py:loss", "--surf_file", "s.h5", "--dir_file", "", "--xnorm", "filter"]
    assert run_cli(plot_surface.main, argv) == 0
    assert run_cli(plot_surface.main, argv) == 0                       # unchanged: resumes
    (in_tmp / "myloss.py").write_text(LOSS_FILE.format(0.5))
    capsys.readouterr()
    assert run_cli(plot_surface.main, argv) == 2
    err = capsys.readouterr().err.strip()
    assert "another loss" in err and len(err.splitlines()) == 1


MODEL_FILE = ("import torch, torch.nn as nn\n"
              "def model():\n    return nn.Sequential(nn.Flatten(), nn.Linear(64, 10))\n"
              "def data():\n"
              "    g = torch.Generator().manual_seed(0)\n"
              "    return (torch.randn(32, 1, 8, 8, generator=g), torch.randint(0, 10, (32,), generator=g)), \\\n"
              "           (torch.randn(8, 1, 8, 8, generator=g), torch.randint(0, 10, (8,), generator=g))\n")


@pytest.mark.parametrize("edited,what", [("model", "--model code"), ("dataset", "--dataset code")])
def test_cli_resume_with_an_edited_model_or_dataset_file_is_refused(in_tmp, capsys, edited, what):
    from landscape.cli import plot_surface
    from landscape.errors import run_cli
    for name in ("model", "dataset"):
        (in_tmp / f"{name}.py").write_text(MODEL_FILE)
    torch.manual_seed(0)
    torch.save({"state_dict": nn.Sequential(nn.Flatten(), nn.Linear(64, 10)).state_dict()}, in_tmp / "m.t7")
    argv = ["--model", "model.py:model", "--dataset", "dataset.py:data", "--model_file", "m.t7", "--x=-1:1:3",
            "--xnorm", "filter", "--surf_file", "s.h5"]
    assert run_cli(plot_surface.main, argv) == 0
    (in_tmp / f"{edited}.py").write_text(MODEL_FILE.replace("Linear(64, 10))", "Linear(64, 10)).double().float()"))
    capsys.readouterr()
    assert run_cli(plot_surface.main, argv) == 2
    assert f"another {what}" in capsys.readouterr().err


def test_the_hessian_json_records_the_tool_version(mlp_ckpt, in_tmp):
    import json
    import shutil
    from landscape.cli import plot_hessian_eigen
    from landscape.errors import run_cli
    shutil.copy(mlp_ckpt, in_tmp / "m.t7")
    assert run_cli(plot_hessian_eigen.main, ["--dataset", "digits", "--model", "digits_mlp", "--model_file", "m.t7",
                                             "--at_center", "--trace_samples", "2", "--max_iter", "20"]) == 0
    record = json.load(open(in_tmp / "m.t7_hessian.json"))
    assert record["landscape_version"] == landscape.__version__


@pytest.fixture
def tf32_switches():
    """PyTorch's TF32 switches, set by the test and restored after it (monkeypatch cannot: they are properties)."""
    saved = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = False, True   # PyTorch's defaults
    yield
    torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = saved


def test_the_arithmetic_follows_precision_and_device_type(tf32_switches):
    from landscape.evaluation import arithmetic_name
    assert [arithmetic_name(p, "cpu") for p in ("default", "fp32", "tf32", "bf16")] == \
        ["fp32", "fp32", "fp32", "bf16 autocast"]
    assert [arithmetic_name(p, "cuda") for p in ("default", "fp32", "tf32", "bf16")] == \
        ["tf32 convolutions", "fp32", "tf32", "bf16 autocast"]
    torch.backends.cuda.matmul.allow_tf32 = True
    assert arithmetic_name("default", torch.device("cuda", 1)) == "tf32"


def test_a_surface_begun_in_one_arithmetic_refuses_to_resume_in_another(in_tmp, monkeypatch, tf32_switches):
    """--precision default begun on a CPU (fp32), resumed where it means TF32 convolutions (a CUDA device)."""
    from landscape import evaluation
    first = resume()
    assert first.attrs["arithmetic"] == "fp32"
    real = evaluation.arithmetic_name
    monkeypatch.setattr(evaluation, "arithmetic_name", lambda precision, device: real(precision, "cuda"))
    with pytest.raises(landscape.LandscapeError, match=r"another arithmetic.*\(fp32 vs tf32 convolutions\)"):
        resume()
