"""Every reference zoo model has the reference's state_dict and computes the reference's function."""
import json
import os

import pytest
import torch

import models

DATA = os.path.join(os.path.dirname(__file__), "data")
MANIFEST = json.load(open(os.path.join(DATA, "model_state_dicts.json")))
OUTPUTS = json.load(open(os.path.join(DATA, "model_outputs.json")))


def deterministic_state(entries):
    """The recipe of model_outputs.json: randn*0.1 in state_dict order, |.|+0.5 for running_var."""
    g = torch.Generator().manual_seed(0)
    state = {}
    for key, shape, dtype in entries:
        if dtype.startswith("float"):
            t = torch.randn(shape, generator=g) * 0.1
            state[key] = t.abs() + 0.5 if key.endswith("running_var") else t
        else:
            state[key] = torch.zeros(shape, dtype=getattr(torch, dtype))
    return state


def test_zoo_has_every_reference_name():
    assert set(MANIFEST) <= set(models.ZOO)
    assert len(MANIFEST) == 29


@pytest.mark.parametrize("name", sorted(MANIFEST))
def test_model_matches_manifest_and_reference_logits(name):
    net = models.ZOO[name]()
    ref = MANIFEST[name]
    mine = [[k, list(v.shape), str(v.dtype).replace("torch.", "")] for k, v in net.state_dict().items()]
    assert mine == ref["state_dict"]
    assert [[n, list(p.shape)] for n, p in net.named_parameters()] == ref["parameters"]
    assert sum(p.numel() for p in net.parameters()) == ref["num_parameters"]

    net.load_state_dict(deterministic_state(ref["state_dict"]))
    net.eval()
    x = torch.randn(4, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        logits = net(x)
    torch.testing.assert_close(logits, torch.tensor(OUTPUTS["logits"][name]), atol=1e-4, rtol=0)


@pytest.mark.parametrize("name", ["digits_mlp", "digits_cnn"])
def test_digits_models_take_8x8_images(name):
    net = models.ZOO[name]().eval()
    assert net(torch.zeros(5, 1, 8, 8)).shape == (5, 10)


def test_digits_cnn_has_batchnorm_state():
    keys = models.ZOO["digits_cnn"]().state_dict()
    assert any(k.endswith("running_mean") for k in keys)
