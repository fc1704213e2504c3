"""Checkpoints load safely: reference formats, prefixes, and refusals with one-line messages; a model
file (--model file.py:fn) with `from __future__ import annotations` and a dataclass builds and runs."""
import pickle

import pytest
import torch
import torch.nn as nn

import model_loader
from helpers import FILTER_X, loss_of, ok, read_map
from landscape.errors import UserError


def test_trainer_checkpoint_loads_and_computes_the_same_function(cnn_ckpt):
    ckpt = torch.load(cnn_ckpt, weights_only=True)
    assert set(ckpt) == {"acc", "epoch", "state_dict"}
    net = model_loader.load("digits", "digits_cnn", cnn_ckpt)
    assert not net.training
    for k, v in net.state_dict().items():
        assert torch.equal(v, ckpt["state_dict"][k])


@pytest.mark.parametrize("prefix", ["module.", "_orig_mod.", "module._orig_mod."])
def test_prefixed_checkpoints_load(tmp_path, cnn_ckpt, prefix):
    ckpt = torch.load(cnn_ckpt, weights_only=True)
    path = tmp_path / "prefixed.t7"
    torch.save({"state_dict": {prefix + k: v for k, v in ckpt["state_dict"].items()}}, path)
    net = model_loader.load("digits", "digits_cnn", str(path))
    for k, v in net.state_dict().items():
        assert torch.equal(v, ckpt["state_dict"][k])


def test_bare_state_dict_loads(tmp_path, cnn_ckpt):
    ckpt = torch.load(cnn_ckpt, weights_only=True)
    path = tmp_path / "bare.pt"
    torch.save(ckpt["state_dict"], path)
    net = model_loader.load("digits", "digits_cnn", str(path))
    assert torch.equal(net.conv1.weight, ckpt["state_dict"]["conv1.weight"])


class Exploit:
    """Unpickling this would create a file: proof that code ran."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (open, (self.marker, "w"))


def test_checkpoint_with_code_is_refused_without_running_it(tmp_path):
    marker = tmp_path / "pwned"
    path = tmp_path / "evil.t7"
    torch.save({"state_dict": {"w": torch.zeros(1)}, "payload": Exploit(str(marker))}, path)
    with pytest.raises(UserError, match="objects other than tensors"):
        model_loader.load("digits", "digits_mlp", str(path))
    assert not marker.exists()


def test_plain_pickle_with_code_is_refused(tmp_path):
    marker = tmp_path / "pwned"
    path = tmp_path / "evil.pkl"
    with open(path, "wb") as f:
        pickle.dump(Exploit(str(marker)), f)
    with pytest.raises(UserError):
        model_loader.load("digits", "digits_mlp", str(path))
    assert not marker.exists()


def test_other_architecture_gives_one_line_naming_model_file_and_keys(cnn_ckpt):
    with pytest.raises(UserError) as e:
        model_loader.load("digits", "digits_mlp", cnn_ckpt)
    msg = str(e.value)
    assert "\n" not in msg and "digits_mlp" in msg and cnn_ckpt in msg
    assert "missing keys" in msg and "fc1.weight" in msg or "size mismatch" in msg


def test_truncated_checkpoint_is_reported(tmp_path, cnn_ckpt):
    data = open(cnn_ckpt, "rb").read()
    path = tmp_path / "cut.t7"
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(UserError, match="truncated or corrupt"):
        model_loader.load("digits", "digits_cnn", str(path))


def test_missing_checkpoint_and_unknown_model():
    with pytest.raises(UserError, match="does not exist"):
        model_loader.load("digits", "digits_cnn", "/no/such/file.t7")
    with pytest.raises(UserError, match="unknown model 'resnet57'"):
        model_loader.load("cifar10", "resnet57")


def test_nan_weights_warn(tmp_path, cnn_ckpt, capsys):
    ckpt = torch.load(cnn_ckpt, weights_only=True)
    ckpt["state_dict"]["conv1.weight"][0, 0, 0, 0] = float("nan")
    path = tmp_path / "nan.t7"
    torch.save(ckpt, path)
    model_loader.load("digits", "digits_cnn", str(path))
    assert "NaN" in capsys.readouterr().err


def test_custom_model_from_file_and_module(tmp_path, monkeypatch):
    (tmp_path / "mymodels.py").write_text(
        "import torch.nn as nn\n"
        "def tiny():\n    return nn.Sequential(nn.Flatten(), nn.Linear(64, 10))\n"
        "def not_a_model():\n    return 3\n")
    net = model_loader.load("digits", f"{tmp_path}/mymodels.py:tiny")
    assert net(torch.zeros(2, 1, 8, 8)).shape == (2, 10)
    monkeypatch.syspath_prepend(str(tmp_path))
    assert model_loader.build("mymodels:tiny") is not None
    with pytest.raises(UserError, match="not a torch.nn.Module"):
        model_loader.build(f"{tmp_path}/mymodels.py:not_a_model")
    with pytest.raises(UserError, match="no callable named 'nope'"):
        model_loader.build(f"{tmp_path}/mymodels.py:nope")


DATACLASS_MODEL = '''from __future__ import annotations

from dataclasses import dataclass

import torch.nn as nn


@dataclass
class Config:
    hidden: int = 16
    classes: int = 10


def factory(cfg: Config | None = None) -> nn.Module:
    cfg = cfg or Config()
    return nn.Sequential(nn.Flatten(), nn.Linear(64, cfg.hidden), nn.ReLU(), nn.Linear(cfg.hidden, cfg.classes))
'''


def test_model_file_with_future_annotations_and_a_dataclass(tmp_path, digits, cli):
    (tmp_path / "dcmodel.py").write_text(DATACLASS_MODEL)
    torch.manual_seed(0)
    net = nn.Sequential(nn.Flatten(), nn.Linear(64, 16), nn.ReLU(), nn.Linear(16, 10)).eval()
    torch.save({"state_dict": net.state_dict()}, tmp_path / "dc.t7")
    ok(cli(["--dataset", "digits", "--model", "dcmodel.py:factory", "--model_file", "dc.t7", "--threads", "1",
            "--x=-1:1:3", *FILTER_X, "--surf_file", "s.h5"], tmp_path))
    assert read_map(tmp_path / "s.h5")[1] == pytest.approx(loss_of(net, digits.train_x, digits.train_y), rel=1e-5)


def test_model_loader_builds_a_dataclass_model_file(tmp_path, monkeypatch):
    (tmp_path / "dcmodel.py").write_text(DATACLASS_MODEL)
    monkeypatch.chdir(tmp_path)
    net = model_loader.build("dcmodel.py:factory")
    assert isinstance(net, nn.Module) and net[1].out_features == 16
