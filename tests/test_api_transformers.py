"""A HuggingFace transformers model through the Python API: a tiny GPT-2 built from a config with
random weights (no download). It returns an output object with `.logits` (B, T, V), ties its input
and output embeddings, and its loss is a per-token cross-entropy: the centre of the surface must be
that loss computed directly, and the token accuracy must be the direct one.

`transformers` is an optional extra (requirements-test.txt installs it, so this test runs in CI);
without it these tests are reported as skipped, never as a collection error.
"""
import copy
import re

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


SUBSET = r"h\.1\.(mlp\.c_proj\.bias|ln_2\.)"          # 3 x 32 parameters: small enough for dense matrices


def dense_curvature(model, x, y, names):
    """{'hessian', 'ggn', 'ef'}: dense float64 matrices of the mean token loss w.r.t. `names` (torch.func)."""
    m = copy.deepcopy(model).double().eval()
    shapes = [dict(m.named_parameters())[n].shape for n in names]
    sizes = [int(np.prod(s)) for s in shapes]
    w0 = torch.cat([dict(m.named_parameters())[n].detach().reshape(-1) for n in names])

    def logits(w, xb=x):
        ws = {n: t.view(s) for n, t, s in zip(names, w.split(sizes), shapes)}
        return torch.func.functional_call(m, ws, (xb,)).logits                      # (B, T, V)
    H = torch.func.hessian(lambda w: token_loss(logits(w), y))(w0)
    J = torch.func.jacrev(logits)(w0).reshape(-1, len(w0))                       # (B T V, P)
    p = F.softmax(logits(w0), -1).detach().reshape(-1, 40)                       # (B T, V)
    Jr = J.view(-1, 40, len(w0))
    pj = torch.einsum("nv,nvp->np", p, Jr)
    G = (torch.einsum("nvp,nv,nvq->pq", Jr, p, Jr) - pj.T @ pj) / len(p)        # J^T (diag p - p p^T) J / positions
    per = torch.func.jacrev(lambda w: torch.stack([token_loss(logits(w, x[i:i + 1]), y[i:i + 1])
                                                   for i in range(len(y))]))(w0)   # (B, P): each sequence's own loss
    return {"hessian": H.detach(), "ggn": G.detach(), "ef": (per.T @ per / len(y)).detach()}


def test_tiny_gpt2_hessian_top_eigenvalue(tiny_gpt2):
    model, (x, y) = tiny_gpt2
    r = landscape.hessian(model, (x[:8], y[:8]), loss=token_loss, params=r"h\.1\.mlp\.c_proj", top_k=2,
                          trace_samples=10, device="cpu")
    assert r.parameters == 128 * 32 + 32 and r.eigenvalues[0] >= r.eigenvalues[1] and np.isfinite(r.trace)
    assert r.converged and r.lanczos_products < 100


@pytest.mark.parametrize("curvature", ["hessian", "ggn", "ef"])
def test_tiny_gpt2_curvature_matches_dense_matrices(tiny_gpt2, curvature):
    """Top eigenvalues, the smallest and the trace of each matrix against torch.func's dense one, on the
    tied-embedding GPT-2 with its (B, T, V) logits (the GGN's closed-form cross-entropy at every position)."""
    model, (x, y) = tiny_gpt2
    x, y = x[:6], y[:6]
    names = [n for n, _ in model.named_parameters() if re.search(SUBSET, n)]
    M = dense_curvature(model, x, y, names)[curvature]
    ev = torch.linalg.eigvalsh(M)
    r = landscape.hessian(model, (x, y), loss=token_loss, curvature=curvature, params=SUBSET, top_k=2,
                          trace_samples=200, trace_rel_se=None, device="cpu")
    assert r.param_names == names and r.parameters == M.shape[0] == 96 and r.converged
    np.testing.assert_allclose(r.eigenvalues, ev.flip(0)[:2].numpy(), rtol=1e-4)
    assert r.min_eig == pytest.approx(float(ev[0]), rel=1e-4, abs=1e-4 * float(ev.abs().max()))
    se = max(r.trace_stderr, 1e-6 * abs(r.trace))                     # 0 where exact (the Fisher's ||G||^2 / N)
    assert abs(r.trace - float(torch.trace(M))) <= 3 * se
