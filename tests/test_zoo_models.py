"""Every reference zoo model has the reference's state_dict and computes the reference's function.

The reference logits in tests/data/model_outputs.json were generated with the reference
implementation's architectures by the recipe given in ../shared/reference/README.md (also in the
file's `recipe` field), quoted here. They are "the logits that the reference architectures compute,
in eval mode and float32, on a fixed input under deterministic weights":

- weights: walk the `state_dict` entries in order with one `torch.Generator().manual_seed(0)`.
  Each floating entry gets `torch.randn(shape, generator=g) * 0.1`; entries whose key ends in
  `running_var` get `abs()` of that `+ 0.5`; integer entries get zeros.
- input: `torch.randn(4, 3, 32, 32, generator=torch.Generator().manual_seed(1))`.
- `logits[name]` is the 4x10 output, rounded to 7 significant digits.

`deterministic_state` reproduces those weights and the test rebuilds that input, so the same
architecture must give the same logits (atol 1e-4, as the README states).
"""
import json
import os

import pytest
import torch

import models

DATA = os.path.join(os.path.dirname(__file__), "data")
MANIFEST = json.load(open(os.path.join(DATA, "model_state_dicts.json")))
OUTPUTS = json.load(open(os.path.join(DATA, "model_outputs.json")))


def deterministic_state(entries):
    """The weights that generated model_outputs.json, by the recipe in ../shared/reference/README.md."""
    # One generator seeded 0, walked in state_dict order: floating entries randn(shape) * 0.1,
    # entries ending in running_var abs() of that + 0.5, integer entries zeros.
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
    x = torch.randn(4, 3, 32, 32, generator=torch.Generator().manual_seed(1))  # the recipe's input
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
