"""The Hessian operator, Lanczos, Hutchinson's trace and the spectral density against dense Hessians.

Every reference is the dense (P, P) float64 Hessian from torch.func.hessian on a model small enough:
a tiny tanh MLP (56 parameters) and a small trained CNN with BatchNorm in eval mode (250).
"""
import copy

import numpy as np
import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

import dataloader
import hess_vec_prod as hvp_mod


pytestmark = pytest.mark.usefixtures("one_thread")    # conftest.py


def flat(tensors):
    return torch.cat([t.detach().reshape(-1) for t in tensors])


def dense_hessian(net, params, x, y, loss=F.cross_entropy):
    """(P, P) float64 Hessian of loss(net(x), y) w.r.t. params (in order), by torch.func.hessian."""
    net64 = copy.deepcopy(net).double().eval()
    names = {id(p): n for n, p in net.named_parameters()}
    keys = [names[id(p)] for p in params]
    sizes, shapes = [p.numel() for p in params], [p.shape for p in params]

    def f(w):
        ws = {k: c.view(s) for k, c, s in zip(keys, torch.split(w, sizes), shapes)}
        return loss(torch.func.functional_call(net64, ws, (x.double(),)), y)
    return torch.func.hessian(f)(flat(params).double()).detach()


def softmax_mse(outputs, targets):
    """The reference's 'mse': mean over batch and classes of (softmax(outputs) - onehot(targets))^2."""
    probs = F.softmax(outputs, dim=1)
    return (probs - F.one_hot(targets, outputs.shape[1]).to(probs.dtype)).pow(2).mean()


class DenseOperator:
    """A matrix as an operator (float32 products), for the solvers' behaviour on a known spectrum."""

    def __init__(self, A):
        self.A, self.dim, self.device, self.products = A.float(), A.shape[0], A.device, 0

    def __call__(self, v):
        self.products += 1
        return self.A @ v

    def matmat(self, V):
        self.products += V.shape[0]
        return V @ self.A


@pytest.fixture(scope="module")
def tiny():
    """The tiny tanh MLP of test_curvature_hessian.py on random data, and its dense Hessian."""
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(5, 7), nn.Tanh(), nn.Linear(7, 3))
    x, y = torch.randn(60, 5), torch.randint(0, 3, (60,))
    return net, x, y, dense_hessian(net, hvp_mod.hessian_params(net), x, y)


@pytest.fixture(scope="module")
def cnn():
    """A small CNN with BatchNorm, trained on 128 digits, in eval mode; its dense Hessian (250 parameters)."""
    data = dataloader.load_tensors("digits")
    x, y = data.train_x[:128], data.train_y[:128]
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(1, 2, 3, padding=1), nn.BatchNorm2d(2), nn.ReLU(),
                        nn.Conv2d(2, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU(),
                        nn.AvgPool2d(4), nn.Flatten(), nn.Linear(16, 10))
    opt = torch.optim.Adam(net.parameters(), lr=0.05)
    net.train()
    for _ in range(60):                       # full batch: the spectrum of a trained net (min << max)
        opt.zero_grad()
        F.cross_entropy(net(x), y).backward()
        opt.step()
    net.eval()
    return net, x, y, dense_hessian(net, hvp_mod.hessian_params(net), x, y)


def random_rows(k, dim, seed=3):
    return torch.randn(k, dim, generator=torch.Generator().manual_seed(seed))


# ----------------------------------------------------------------------------- the operator
def test_cached_and_uncached_products_match_the_dense_hessian(cnn):
    net, x, y, dense = cnn
    cached = hvp_mod.make_hvp(net, x, y, batch_size=48, cache=True)       # 48: uneven last batch
    direct = hvp_mod.make_hvp(net, x, y, batch_size=48, cache=False)
    assert cached.cached and not direct.cached and cached.dim == dense.shape[0]
    V = random_rows(3, cached.dim)
    expect = (V.double() @ dense).float()
    scale = torch.linalg.matrix_norm(dense, 2).item()
    for got in (cached.matmat(V), direct.matmat(V), torch.stack([cached(v) for v in V])):
        torch.testing.assert_close(got, expect, rtol=1e-4, atol=1e-6 * scale)
    torch.testing.assert_close(cached.matmat(V), direct.matmat(V), rtol=1e-5, atol=1e-6 * scale)
    assert cached.products == 3 + 3 + 3 and direct.products == 3 + 3


def test_auto_cache_follows_the_memory_budget(tiny):
    net, x, y, dense = tiny
    small = hvp_mod.make_hvp(net, x, y, batch_size=16, memory_budget=0)
    large = hvp_mod.make_hvp(net, x, y, batch_size=16, memory_budget=10 ** 12)
    assert not small.cached and small.saved_bytes > 0
    assert large.cached and large.saved_bytes >= small.saved_bytes
    # a tanh MLP saves at least the hidden activations (60 x 7 float32) and the output (60 x 3)
    assert large.saved_bytes >= 4 * 60 * (7 + 3)
    v = random_rows(1, large.dim)[0]
    for op in (small, large):
        torch.testing.assert_close(op(v).double(), dense @ v.double(), rtol=1e-4, atol=1e-6)


def test_cached_graph_follows_weights_moved_in_place(tiny):
    net, x, y, _ = tiny
    net = copy.deepcopy(net)
    op = hvp_mod.make_hvp(net, x, y, cache=True)
    v = random_rows(1, op.dim)[0]
    op(v)
    with torch.no_grad():                         # as net_plotter.PointSetter moves a model
        torch._foreach_add_(list(net.parameters()), [torch.full_like(p, 0.3) for p in net.parameters()])
    moved = dense_hessian(net, hvp_mod.hessian_params(net), x, y)
    torch.testing.assert_close(op(v).double(), moved @ v.double(), rtol=1e-4, atol=1e-6)
    assert op.cached


def test_criterion_mse_and_a_parameter_subset_match_the_dense_hessian(tiny):
    net, x, y, _ = tiny
    sub = [net[2].weight]                                              # only the last layer's weights
    for kwargs, loss in (({"criterion": nn.CrossEntropyLoss()}, F.cross_entropy),
                         ({"loss_name": "mse"}, softmax_mse)):
        dense = dense_hessian(net, sub, x, y, loss)
        for cache in (True, False):
            op = hvp_mod.make_hvp(net, x, y, batch_size=25, params=sub, cache=cache, **kwargs)
            V = random_rows(2, op.dim)
            assert op.dim == 21
            torch.testing.assert_close(op.matmat(V).double(), V.double() @ dense, rtol=1e-4, atol=1e-7)


def test_batched_products_fall_back_to_a_loop(cnn, monkeypatch):
    net, x, y, dense = cnn
    op = hvp_mod.make_hvp(net, x, y, batch_size=64, cache=True)
    grad = torch.autograd.grad

    def no_batching(*args, **kwargs):
        if kwargs.get("is_grads_batched"):
            raise RuntimeError("no batching rule")
        return grad(*args, **kwargs)
    monkeypatch.setattr(torch.autograd, "grad", no_batching)
    V = random_rows(4, op.dim)
    torch.testing.assert_close(op.matmat(V).double(), V.double() @ dense, rtol=1e-4, atol=1e-5)
    assert not op._batched and op.products == 4


# ----------------------------------------------------------------------------- Lanczos
def test_default_lanczos_finds_both_extremes_of_a_small_cnn_to_1e_4(cnn):
    net, x, y, dense = cnn
    ev = torch.linalg.eigvalsh(dense)
    assert abs(ev[0] / ev[-1]) < 0.05                   # a small |min| against max: the hard case
    hvp = hvp_mod.make_hvp(net, x, y)
    top, bottom, iters = hvp_mod.lanczos_extremes(hvp, hvp.dim, hvp.device)
    assert top == pytest.approx(ev[-1].item(), rel=1e-4)
    assert bottom == pytest.approx(ev[0].item(), rel=1e-4)
    r = hvp_mod.lanczos(hvp)
    assert r.converged and r.iterations == iters < 100 and r.max_eig == top and r.min_eig == bottom


def test_default_lanczos_finds_both_extremes_of_the_tiny_mlp_to_1e_4(tiny):
    net, x, y, dense = tiny
    ev = torch.linalg.eigvalsh(dense)
    top, bottom, iters = hvp_mod.min_max_hessian_eigs(net, x, y)
    assert top == pytest.approx(ev[-1].item(), rel=1e-4)
    assert bottom == pytest.approx(ev[0].item(), rel=1e-4)
    assert iters <= 56


def test_lanczos_top_k_eigenvectors_satisfy_the_eigen_equation(cnn):
    net, x, y, dense = cnn
    ev = torch.linalg.eigvalsh(dense)
    r = hvp_mod.lanczos(hvp_mod.make_hvp(net, x, y), top_k=4, want_min=False, want_vectors=True)
    assert np.isnan(r.min_eig) and r.eigenvectors.shape == (4, dense.shape[0])
    np.testing.assert_allclose(r.eigenvalues, ev[-4:].flip(0).numpy(), rtol=1e-4)
    V = r.eigenvectors.double()
    residual = (V @ dense - torch.as_tensor(r.eigenvalues)[:, None] * V).norm(dim=1)
    assert (residual <= 1e-3 * ev.abs().max()).all(), residual
    torch.testing.assert_close(V @ V.T, torch.eye(4, dtype=torch.float64), atol=1e-5, rtol=0)


def test_lanczos_gives_nan_at_a_diverged_point(tiny):
    net, x, y, _ = tiny
    net = copy.deepcopy(net)
    with torch.no_grad():
        net[2].weight.fill_(float("inf"))             # overflowed weights: the logits are +-inf
    op = hvp_mod.make_hvp(net, x, y)
    r = hvp_mod.lanczos(op, top_k=2, want_vectors=True)
    assert np.isnan(r.eigenvalues).all() and np.isnan(r.min_eig) and r.iterations == 1 and not r.converged
    assert torch.isnan(r.eigenvectors).all()
    top, bottom, iters = hvp_mod.lanczos_extremes(op, op.dim, op.device)
    assert np.isnan(top) and np.isnan(bottom) and iters == 1


def test_lanczos_stops_on_a_near_zero_eigenvalue_at_the_float32_floor():
    # eigenvalues 1e-12 .. 1: the smallest cannot be resolved to 1e-4 of itself in float32
    ev = torch.cat([torch.tensor([1e-12]), torch.linspace(0.01, 1, 199)]).double()
    Qm, _ = torch.linalg.qr(torch.randn(200, 200, generator=torch.Generator().manual_seed(0), dtype=torch.float64))
    op = DenseOperator(Qm @ torch.diag(ev) @ Qm.T)
    r = hvp_mod.lanczos(op, max_iter=200)
    assert r.converged and r.iterations < 200 and abs(r.min_eig) < 1e-5


def test_lanczos_restarts_when_the_krylov_space_is_invariant():
    op = DenseOperator(torch.diag(torch.tensor([0.0, 0, 0, 0, 2, 2])))   # invariant after 2 steps; 2 is double
    r = hvp_mod.lanczos(op, top_k=3, want_vectors=True)
    np.testing.assert_allclose(r.eigenvalues, [2, 2, 0], atol=1e-6)
    assert r.converged and abs(r.min_eig) < 1e-6 and r.iterations <= 6
    zero = hvp_mod.lanczos(DenseOperator(torch.zeros(5, 5)), top_k=2)         # beta = 0 at once: a restart
    assert zero.converged and (zero.eigenvalues == 0).all() and zero.min_eig == 0


# ----------------------------------------------------------------------------- trace
def test_trace_within_3_standard_errors_of_the_dense_trace(cnn):
    net, x, y, dense = cnn
    op = hvp_mod.make_hvp(net, x, y)
    exact = torch.trace(dense).item()
    trace, se, n = hvp_mod.trace_estimate(op, max_samples=150, block=7, seed=1)
    assert n == 150 and op.products == 150 and 0 < se and abs(trace - exact) < 3 * se
    # deflated by a Lanczos basis: the same trace with a smaller standard error
    basis = hvp_mod.lanczos(op, top_k=3, want_min=False, keep_basis=True)
    t2, se2, _ = hvp_mod.trace_estimate(op, max_samples=150, block=7, seed=2, deflate=basis)
    assert 0 < se2 < se and abs(t2 - exact) < 3 * se2


def test_trace_stops_at_the_requested_standard_error():
    easy = DenseOperator(torch.diag(torch.linspace(1, 2, 30)))      # z^T D z = tr(D) for every z
    trace, se, n = hvp_mod.trace_estimate(easy, max_samples=100, rel_se=1e-3, block=4)
    assert n == 10 and se < 1e-6 and trace == pytest.approx(45.0, rel=1e-6)  # min_samples: blocks of 4, 4, 2
    assert hvp_mod.trace_estimate(easy, max_samples=100, block=8)[2] == 100        # rel_se None: all of them
    hard = DenseOperator(torch.ones(30, 30))                         # z^T 1 1^T z = (sum z)^2: noisy
    _, se, n = hvp_mod.trace_estimate(hard, max_samples=400, rel_se=0.1, block=8)
    assert 10 < n < 400 and se <= 0.1 * 30 * 1.5


def test_hutchinson_trace_keeps_its_signature_for_a_bare_function(tiny):
    net, x, y, dense = tiny
    op = hvp_mod.make_hvp(net, x, y)
    trace, se = hvp_mod.hutchinson_trace(lambda v: op(v), op.dim, "cpu", samples=200, seed=4)
    assert se > 0 and abs(trace - torch.trace(dense).item()) < 3 * se


# ----------------------------------------------------------------------------- spectral density
def sphere_se(A, power, n):
    """Standard error of the mean of v^T A^p v over n unit vectors uniform on the sphere (P = dim A)."""
    P = A.shape[0]
    Ap = torch.linalg.matrix_power(A, power)
    m1, m2 = torch.trace(Ap).item() / P, torch.trace(Ap @ Ap).item() / P
    return (2 / (P + 2) * (m2 - m1 ** 2) / n) ** 0.5


def test_esd_moments_match_the_dense_spectrum(tiny):
    net, x, y, dense = tiny
    P, n = dense.shape[0], 60
    op = hvp_mod.make_hvp(net, x, y)
    grid, density, nodes, weights = hvp_mod.esd(op, n_probes=n, n_steps=12, seed=5)
    assert nodes.shape == weights.shape and len(nodes) <= n * 12 and weights.sum() == pytest.approx(1, abs=1e-9)
    ev = torch.linalg.eigvalsh(dense).numpy()
    # quadrature: sum w theta^p is the mean over probes of v^T H^p v, an unbiased estimate of tr(H^p)/P
    for p in (1, 2):
        assert abs((weights * nodes ** p).sum() - (ev ** p).mean()) < 4 * sphere_se(dense, p, n)
    # the gridded density: integral 1, mean of the nodes, second moment plus sigma^2
    dx = grid[1] - grid[0]
    sigma = 0.01 * (nodes.max() - nodes.min())
    assert (density * dx).sum() == pytest.approx(1, abs=1e-6)
    assert (grid * density * dx).sum() == pytest.approx((weights * nodes).sum(), abs=1e-6 * abs(ev).max())
    assert (grid ** 2 * density * dx).sum() == pytest.approx((weights * nodes ** 2).sum() + sigma ** 2, rel=1e-5)
    assert nodes.min() >= ev[0] - 1e-5 and nodes.max() <= ev[-1] + 1e-5
