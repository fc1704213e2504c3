"""A HuggingFace transformers model through the Python API: a tiny GPT-2 built from a config with
random weights (no download). It returns an output object with `.logits` (B, T, V), ties its input
and output embeddings, and its loss is a per-token cross-entropy: the centre of the surface must be
that loss computed directly, and the token accuracy must be the direct one.

`transformers` is an optional extra (requirements-test.txt installs it, so this test runs in CI);
without it these tests are reported as skipped, never as a collection error.
"""
import numpy as np
import pytest
import torch
import torch.nn.functional as F

import landscape

transformers = pytest.importorskip("transformers", reason="the optional extra [hf] (transformers) is not installed",
                                   exc_type=ImportError)


def token_loss(outputs, targets):
    """Mean cross-entropy per token: outputs (B, T, V), targets (B, T)."""
    return F.cross_entropy(outputs.reshape(-1, outputs.shape[-1]), targets.reshape(-1))


@pytest.fixture(scope="module")
def tiny_gpt2():
    torch.manual_seed(0)
    config = transformers.GPT2Config(vocab_size=40, n_positions=24, n_embd=32, n_layer=2, n_head=2)
    model = transformers.GPT2LMHeadModel(config).eval()
    g = torch.Generator().manual_seed(1)
    tokens = torch.randint(0, 40, (48, 17), generator=g)
    return model, (tokens[:, :-1], tokens[:, 1:])


@pytest.mark.parametrize("dir_type", ["weights", "states"])
def test_tiny_gpt2_surface_centre_is_the_direct_token_loss(tiny_gpt2, dir_type):
    model, (x, y) = tiny_gpt2
    assert model.lm_head.weight is model.transformer.wte.weight     # tied: one tensor, two state_dict names
    res = landscape.surface(model, (x, y), loss=token_loss, x="-0.5:0.5:3", y="-0.5:0.5:3", dir_type=dir_type,
                            device="cpu")
    assert set(res.values) == {"train_loss", "train_acc"} and res["train_loss"].shape == (3, 3)
    with torch.no_grad():
        logits = model(x).logits.double()
    assert res["train_loss"][1, 1] == pytest.approx(token_loss(logits, y).item(), rel=1e-5)
    assert res["train_acc"][1, 1] == pytest.approx(100 * (logits.argmax(-1) == y).double().mean().item())
    assert np.isfinite(res["train_loss"]).all() and (res["train_loss"] > res["train_loss"][1, 1] - 1e-6).any()


def test_tiny_gpt2_hessian_top_eigenvalue(tiny_gpt2):
    model, (x, y) = tiny_gpt2
    r = landscape.hessian(model, (x[:8], y[:8]), loss=token_loss, params=r"h\.1\.mlp\.c_proj", top_k=2,
                          trace_samples=10, device="cpu")
    assert r.parameters == 128 * 32 + 32 and r.eigenvalues[0] >= r.eigenvalues[1] and np.isfinite(r.trace)
