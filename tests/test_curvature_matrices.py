"""The three curvature matrices (Hessian, GGN, empirical Fisher), finite-difference products and
per-layer blocks, each against an independent dense computation with torch.func.

The dense references, in float64 on models small enough (a tanh MLP, 56 weights of dimension > 1):
- Hessian: torch.func.hessian of the mean loss w.r.t. the flat weights;
- GGN: J^T H_out J, J = torch.func.jacrev of all N outputs, H_out = torch.func.hessian of the mean
  loss w.r.t. those outputs (for the reference's `mse`, the Gauss-Newton at the probabilities:
  J_p^T (2 / (N C)) J_p with J_p the Jacobian of softmax(outputs));
- empirical Fisher: G^T G / N, G the (N, P) Jacobian of the vector of per-example losses.
"""
import copy
import os
import shutil
import signal
import warnings

import numpy as np
import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

import dataloader
import landscape
import model_loader
import plot_hessian_eigen
import plot_surface
from helpers import snapshot
from landscape.curvature import algorithms, operators
from landscape.curvature import model as curvature
from landscape.curvature.operators import output_hessians
from landscape.evaluation import SoftmaxMSE

MATRICES = ("hessian", "ggn", "ef")


pytestmark = pytest.mark.usefixtures("one_thread")    # conftest.py


# ----------------------------------------------------------------------------- dense references
def functional_loss(net, names, x):
    """(w (P,) -> outputs (N, C)) over the named parameters of a float64 copy of net, the rest fixed."""
    net64 = copy.deepcopy(net).double().eval()
    shapes = [dict(net64.named_parameters())[n].shape for n in names]
    sizes = [int(np.prod(s)) for s in shapes]
    w0 = torch.cat([dict(net64.named_parameters())[n].detach().reshape(-1) for n in names])

    def outputs(w, inputs=None):
        ws = {n: t.view(s) for n, t, s in zip(names, w.split(sizes), shapes)}
        return torch.func.functional_call(net64, ws, ((x if inputs is None else inputs).double(),))
    return outputs, w0


def dense_matrices(net, loss, x, y, names=None):
    """{'hessian', 'ggn', 'ef'}: the dense (P, P) float64 matrices of the mean loss(net(x), y)."""
    names = names or [n for n, p in net.named_parameters() if p.dim() > 1]
    f, w0 = functional_loss(net, names, x)
    yd = y.double() if y.is_floating_point() else y
    H = torch.func.hessian(lambda w: loss(f(w), yd))(w0)
    J = torch.func.jacrev(f)(w0).reshape(-1, w0.numel())                       # (N C, P)
    out = f(w0).detach()
    if isinstance(loss, SoftmaxMSE):                                           # Gauss-Newton at the probabilities
        Jp = torch.func.jacrev(lambda w: F.softmax(f(w), 1))(w0).reshape(-1, w0.numel())
        G = 2.0 / out.numel() * Jp.T @ Jp
    else:
        Ho = torch.func.hessian(lambda o: loss(o.view(out.shape), yd))(out.reshape(-1))
        G = J.T @ Ho.reshape(out.numel(), out.numel()) @ J

    def per_example(w):                                                        # (N,) each example's own loss
        o = f(w)
        return torch.stack([loss(o[i:i + 1], yd[i:i + 1]) for i in range(len(yd))])
    per = torch.func.jacrev(per_example)(w0)                                   # (N, P)
    return {"hessian": H.detach(), "ggn": G.detach(), "ef": (per.T @ per / len(y)).detach()}


def tanh_mlp(seed=0):
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(5, 7), nn.Tanh(), nn.Linear(7, 3)).eval()


@pytest.fixture(scope="module")
def problems():
    """{name: (net, loss, x, y, dense matrices)}: cross-entropy, MSE against float targets, the reference's mse."""
    g = torch.Generator().manual_seed(1)
    x, labels, targets = torch.randn(60, 5, generator=g), torch.randint(0, 3, (60,), generator=g), torch.randn(60, 3, generator=g)
    out = {}
    for name, loss, y in (("ce", nn.CrossEntropyLoss(), labels), ("mse", nn.MSELoss(), targets),
                          ("softmax_mse", SoftmaxMSE(), labels)):
        net = tanh_mlp()
        out[name] = (net, loss, x, y, dense_matrices(net, loss, x, y))
    return out


def spectral_norm(M):
    return float(torch.linalg.eigvalsh(M).abs().max())


# ----------------------------------------------------------------------------- the three matrices
@pytest.mark.parametrize("problem", ["ce", "mse"])
@pytest.mark.parametrize("matrix", MATRICES)
def test_top_k_eigenpairs_and_trace_match_the_dense_matrix(problems, problem, matrix):
    net, loss, x, y, dense = problems[problem]
    M = dense[matrix]
    ev = torch.linalg.eigvalsh(M)
    r = landscape.hessian(net, (x, y), loss=loss, curvature=matrix, top_k=3, vectors=True, trace_samples=300,
                          trace_rel_se=None, batch_size=16, device="cpu", tol=1e-6)
    assert r.curvature == matrix and r.converged and r.parameters == M.shape[0]
    np.testing.assert_allclose(r.eigenvalues, ev.flip(0)[:3].numpy(), rtol=1e-4)
    V = torch.as_tensor(r.eigenvectors, dtype=torch.float64)
    residual = (V @ M - torch.as_tensor(r.eigenvalues)[:, None] * V).norm(dim=1)
    assert (residual <= 1e-3 * spectral_norm(M)).all(), residual
    exact = float(torch.trace(M))
    if matrix == "ef":                       # exact: ||G||^2 / N from the materialised per-example gradients
        assert r.trace_stderr == 0 and r.trace == pytest.approx(exact, rel=1e-5)
    else:
        assert 0 < r.trace_stderr and abs(r.trace - exact) <= 3 * r.trace_stderr, (r.trace, exact, r.trace_stderr)
    assert r.min_eig == pytest.approx(float(ev[0]), rel=1e-4, abs=1e-4 * spectral_norm(M))


@pytest.mark.parametrize("problem", ["ce", "mse", "softmax_mse"])
def test_ggn_smallest_eigenvalue_is_not_negative(problems, problem):
    net, loss, x, y, dense = problems[problem]
    G = dense["ggn"]
    assert float(torch.linalg.eigvalsh(G)[0]) >= -1e-10 * spectral_norm(G)       # the reference is PSD
    r = landscape.hessian(net, (x, y), loss=loss, curvature="ggn", trace=False, device="cpu")
    assert r.min_eig >= -1e-6 * spectral_norm(G) and r.converged
    assert r.eigenvalues[0] == pytest.approx(float(torch.linalg.eigvalsh(G)[-1]), rel=1e-4)


def test_products_of_every_matrix_equal_the_dense_ones_with_uneven_batches(problems):
    net, loss, x, y, dense = problems["ce"]
    V = torch.randn(2, 56, generator=torch.Generator().manual_seed(3))
    for matrix in MATRICES:
        for cache in (True, False):
            n = copy.deepcopy(net)
            op = curvature.curvature_operator(n, x, y, loss, 25, curvature.hessian_params(n), matrix, cache=cache)
            torch.testing.assert_close(op.matmat(V).double(), V.double() @ dense[matrix], rtol=1e-4, atol=1e-6)
            assert op.products == 2


def test_ggn_of_the_reference_mse_is_the_gauss_newton_at_the_probabilities(problems):
    net, loss, x, y, dense = problems["softmax_mse"]
    n = copy.deepcopy(net)
    op = curvature.curvature_operator(n, x, y, loss, 16, curvature.hessian_params(n), "ggn")
    assert isinstance(op.out_hessian, output_hessians.SoftmaxMSEGaussNewton) and op.psd
    v = torch.randn(56, generator=torch.Generator().manual_seed(4))
    torch.testing.assert_close(op(v).double(), dense["ggn"] @ v.double(), rtol=1e-4, atol=1e-7)


def test_fisher_products_without_the_per_example_gradient_matrix(problems):
    net, loss, x, y, dense = problems["mse"]
    n = copy.deepcopy(net)
    op = curvature.curvature_operator(n, x, y, loss, 16, curvature.hessian_params(n), "ef")
    op.materialize = False                   # jvp / vjp products, as when G does not fit in memory
    v = torch.randn(56, generator=torch.Generator().manual_seed(5))
    torch.testing.assert_close(op(v).double(), dense["ef"] @ v.double(), rtol=1e-4, atol=1e-7)
    assert op._G is None and op.exact_trace() is None


# ----------------------------------------------------------------------------- closed-form output Hessians
def token_loss(outputs, targets):
    """Mean cross-entropy per token: outputs (B, T, V), targets (B, T)."""
    return F.cross_entropy(outputs.reshape(-1, outputs.shape[-1]), targets.reshape(-1))


def test_closed_form_cross_entropy_product_equals_autograd_on_a_language_models_output():
    g = torch.Generator().manual_seed(0)
    out, y = torch.randn(3, 5, 11, generator=g), torch.randint(0, 11, (3, 5), generator=g)   # (B, T, V)
    u = torch.randn(out.shape, generator=g)
    form = output_hessians.output_hessian(token_loss, out, y, y)
    assert isinstance(form, output_hessians.CrossEntropyHessian)             # recognised from the values
    exact = output_hessians.AutogradOutputHessian(token_loss)
    torch.testing.assert_close(form(form.prepare(out, y), u), exact(exact.prepare(out, y), u), rtol=1e-5,
                               atol=1e-8)
    # by hand: diag(p) u - p (p^T u) at every position, over the B T positions of the mean
    p = F.softmax(out, -1)
    torch.testing.assert_close(form(form.prepare(out, y), u), (p * u - p * (p * u).sum(-1, keepdim=True)) / 15)
    # nn.CrossEntropyLoss on (B, V, T) with ignored targets: the mean runs over the others
    y2 = y.clone()
    y2[0, :2] = -100
    ce = nn.CrossEntropyLoss()
    o2, u2 = out.transpose(1, 2).contiguous(), u.transpose(1, 2).contiguous()
    form = output_hessians.output_hessian(ce, o2, y2, y2)
    exact = output_hessians.AutogradOutputHessian(ce)
    assert isinstance(form, output_hessians.CrossEntropyHessian)
    torch.testing.assert_close(form(form.prepare(o2, y2), u2), exact(exact.prepare(o2, y2), u2), rtol=1e-5, atol=1e-8)


def test_other_losses_fall_back_to_autograd_on_the_outputs():
    g = torch.Generator().manual_seed(0)
    out, y = torch.randn(4, 6, generator=g), torch.randint(0, 6, (4,), generator=g)
    smoothed = lambda o, t: F.cross_entropy(o, t, label_smoothing=0.1) + 0.1 * o.pow(4).mean()   # noqa: E731
    assert isinstance(output_hessians.output_hessian(smoothed, out, y, y), output_hessians.AutogradOutputHessian)
    ignored = y.clone()
    ignored[0] = -100                        # a callable's mean with ignored targets is not known: autograd
    assert isinstance(output_hessians.output_hessian(token_loss, out[None], ignored[None], ignored[None]),
                      output_hessians.AutogradOutputHessian)
    mse = output_hessians.output_hessian(nn.MSELoss(), out, torch.randn(4, 6), None)
    assert isinstance(mse, output_hessians.MSEHessian)


def test_ggn_of_a_language_model_matches_autograd_ggn_and_is_psd():
    """A tiny GPT-2 (B, T, V) with the closed form against the same GGN with autograd's H_out."""
    transformers = pytest.importorskip("transformers")
    torch.manual_seed(0)
    config = transformers.GPT2Config(vocab_size=40, n_positions=24, n_embd=32, n_layer=2, n_head=2)
    model = transformers.GPT2LMHeadModel(config).eval()
    tokens = torch.randint(0, 40, (6, 13), generator=torch.Generator().manual_seed(1))
    x, y = tokens[:, :-1], tokens[:, 1:]
    named = curvature.hessian_params(model, r"h\.1\.mlp\.c_proj\.weight")
    op = curvature.curvature_operator(model, x, y, token_loss, 4, named, "ggn")
    assert isinstance(op.out_hessian, output_hessians.CrossEntropyHessian)
    slow = operators.GGNOperator(op.model, output_hessians.AutogradOutputHessian(token_loss))
    v = torch.randn(op.dim, generator=torch.Generator().manual_seed(2))
    torch.testing.assert_close(op(v), slow(v), rtol=1e-4, atol=1e-7)
    assert float(v @ op(v)) >= 0


# ----------------------------------------------------------------------------- finite differences
@pytest.fixture(scope="module")
def digits_cnn(cnn_ckpt):
    """The trained digits_cnn (ReLU, max-pooling) and 512 training digits."""
    d = dataloader.load_tensors("digits")
    return model_loader.load("digits", "digits_cnn", cnn_ckpt), d.train_x[:512], d.train_y[:512]


class SmoothDigitsCNN(nn.Module):
    """digits_cnn's layers and trained weights with softplus (beta 10) for ReLU and average for max-pooling."""

    def __init__(self, net):
        super().__init__()
        self.net = net

    def forward(self, x):
        n = self.net
        out = F.softplus(n.bn1(n.conv1(x)), beta=10)
        out = F.avg_pool2d(F.softplus(n.bn2(n.conv2(out)), beta=10), 2)
        return n.fc2(F.softplus(n.fc1(out.flatten(1)), beta=10))


def fd_and_autograd(net, x, y, params="", matrix="hessian"):
    a, b = copy.deepcopy(net), copy.deepcopy(net)
    exact = curvature.curvature_operator(a, x, y, nn.CrossEntropyLoss(), 512, curvature.covered_params(a, params), matrix)
    fd = curvature.curvature_operator(b, x, y, nn.CrossEntropyLoss(), 512, curvature.covered_params(b, params), matrix,
                                      "finite_difference")
    return exact, fd


def relative_errors(exact, fd, k=3):
    g = torch.Generator().manual_seed(0)
    V = torch.randn(k, exact.dim, generator=g)
    return [float((exact(v) - fd(v)).norm() / exact(v).norm()) for v in V]


def test_finite_differences_agree_with_autograd_where_the_digits_cnn_is_smooth(digits_cnn):
    """fp32, 1e-3: the Hessian block of the last layer's weights (no ReLU or max-pool switches when only
    they move), and the whole Hessian of the same network with smooth activations."""
    net, x, y = digits_cnn
    for model, params in ((net, r"^fc2\.weight$"), (SmoothDigitsCNN(net).eval(), "")):
        exact, fd = fd_and_autograd(model, x, y, params)
        assert max(relative_errors(exact, fd)) <= 1e-3
        assert fd.estimated_error <= curvature.FD_WARN
    with warnings.catch_warnings():
        warnings.simplefilter("error", curvature.CurvatureWarning)
        r = landscape.hessian(net, (x, y), hvp="finite_difference", params=r"^fc2\.weight$", trace=False, device="cpu")
    top = landscape.hessian(net, (x, y), params=r"^fc2\.weight$", trace=False, device="cpu").eigenvalues[0]
    assert r.eigenvalues[0] == pytest.approx(top, rel=1e-3) and r.hvp == "finite_difference"


def test_finite_differences_on_the_relu_digits_cnn_are_flagged_not_trusted(digits_cnn):
    """Moving every weight switches ReLU and max-pool units: the difference of gradients does not
    converge to autograd's Hessian at any step (r19: 0.3 to 2.7 relative error), and the tool says so."""
    net, x, y = digits_cnn
    exact, fd = fd_and_autograd(net, x, y)
    assert max(relative_errors(exact, fd, 1)) > 1e-2 and fd.estimated_error > curvature.FD_WARN
    with pytest.warns(curvature.CurvatureWarning, match="not smooth"):
        landscape.hessian(net, (x[:128], y[:128]), hvp="finite_difference", trace=False, max_iter=5, device="cpu")


def test_finite_difference_jacobian_products_of_the_ggn_converge_on_relu(digits_cnn):
    """The outputs are continuous in the weights (only their derivative jumps), so the GGN's J v by central
    differences converges on the ReLU network; float32 rounding limits it to about 0.5-1.3% here (the CPU's
    kernels decide: 0.5% with AVX-512, 1.3% on an AVX2-only EPYC), far below a product that does not converge."""
    net, x, y = digits_cnn
    exact, fd = fd_and_autograd(net, x, y, matrix="ggn")
    assert max(relative_errors(exact, fd)) <= 2e-2


# ----------------------------------------------------------------------------- per-layer blocks
@pytest.mark.parametrize("matrix", MATRICES)
def test_per_layer_blocks_equal_the_dense_diagonal_blocks(problems, matrix):
    net, loss, x, y, _ = problems["ce"]
    names = [n for n, _ in net.named_parameters()]                     # weights and biases of both layers
    dense = dense_matrices(net, loss, x, y, names)[matrix]
    sizes = [p.numel() for p in net.parameters()]
    offsets = np.cumsum([0] + sizes)
    index = {n: torch.arange(offsets[i], offsets[i + 1]) for i, n in enumerate(names)}
    for params, want in (("", {"0": ["0.weight", "0.bias"], "2": ["2.weight", "2.bias"]}),      # by module
                         (r"(weight|bias)", {"weight": ["0.weight", "2.weight"], "bias": ["0.bias", "2.bias"]})):
        r = landscape.hessian(net, (x, y), loss=loss, curvature=matrix, per_layer=True, params=params or ".",
                              trace_samples=400, trace_rel_se=None, tol=1e-6, device="cpu", batch_size=16)
        assert [layer.name for layer in r.per_layer] == list(want)                        # network order
        for layer in r.per_layer:
            idx = torch.cat([index[n] for n in want[layer.name]])
            block = dense[idx][:, idx]
            assert layer.parameters == len(idx) and layer.converged
            assert layer.top_eig == pytest.approx(float(torch.linalg.eigvalsh(block)[-1]), rel=1e-4)
            assert abs(layer.trace - float(torch.trace(block))) <= 3 * layer.trace_stderr + 1e-9, layer


def test_a_block_operator_multiplies_by_the_diagonal_block(problems):
    net, loss, x, y, dense = problems["mse"]
    n = copy.deepcopy(net)
    op = curvature.curvature_operator(n, x, y, loss, 60, curvature.hessian_params(n), "hessian")
    idx = torch.tensor([3, 40, 7, 55])                                   # any coordinates, in any order
    block = operators.BlockOperator(op, idx)
    v = torch.randn(4, generator=torch.Generator().manual_seed(6))
    torch.testing.assert_close(block(v).double(), dense["hessian"][idx][:, idx] @ v.double(), rtol=1e-4, atol=1e-7)
    r = algorithms.lanczos(block, top_k=1, want_min=True)
    ev = torch.linalg.eigvalsh(dense["hessian"][idx][:, idx])
    assert r.max_eig == pytest.approx(float(ev[-1]), rel=1e-4) and r.min_eig == pytest.approx(float(ev[0]), rel=1e-4)


def test_per_layer_from_the_command_line_writes_a_table_and_a_bar_chart(tmp_path, mlp_ckpt):
    shutil.copy(mlp_ckpt, tmp_path / "m.t7")
    out = str(tmp_path / "c.h5")
    args = ["--dataset", "digits", "--model", "digits_mlp", "--model_file", str(tmp_path / "m.t7"), "--threads", "1",
            "--at_center", "--per_layer", "--curvature", "ggn", "--trace_samples", "20", "--out", out,
            "--format", "png", "--batch_size", "2000"]
    assert plot_hessian_eigen.main(args) == 0
    import h5py
    with h5py.File(out, "r") as f:
        table = f["per_layer"][()]
        assert f.attrs["curvature"] == "ggn" and f.attrs["converged"] == "true"
    assert [v.decode() for v in table["layer"]] == ["fc1", "fc2"] and list(table["parameters"]) == [64 * 32, 32 * 10]
    assert (table["top_eig"] > 0).all() and (table["converged"] == 1).all()
    assert os.path.getsize(out + "_per_layer.png") > 5000


# ----------------------------------------------------------------------------- bad input
def accuracy(outputs, targets):
    return (outputs.argmax(1) == targets).float().mean()


def summed_ce(outputs, targets):
    return F.cross_entropy(outputs, targets, reduction="sum")


@pytest.mark.parametrize("kwargs,words", [
    (dict(curvature="newton"), ["curvature 'newton'", "hessian, ggn, ef"]),
    (dict(hvp="fd"), ["hvp 'fd'", "finite_difference"]),
    (dict(per_layer="yes"), ["per_layer='yes'"]),
    (dict(top_k=5, max_iter=3), ["top_k=5 exceeds max_iter=3"]),
    (dict(loss=accuracy), ["no derivative", "accuracy"]),
    (dict(loss=accuracy, curvature="ggn"), ["curvature 'ggn'", "no derivative"]),
    (dict(loss=summed_ce, curvature="ef"), ["mean over examples"]),
])
def test_the_api_refuses_bad_curvature_arguments(problems, kwargs, words):
    net, _, x, y, _ = problems["ce"]
    with pytest.raises(landscape.LandscapeError) as e:
        landscape.hessian(net, (x, y), device="cpu", **kwargs)
    assert len(str(e.value).splitlines()) == 1
    for w in words:
        assert w in str(e.value)


def test_the_api_refuses_curvature_on_random_directions(problems):
    net, loss, x, y, _ = problems["ce"]
    with pytest.raises(landscape.LandscapeError, match="directions='hessian'"):
        landscape.surface(net, (x, y), x="-1:1:3", curvature="ggn", device="cpu")
    with pytest.raises(landscape.LandscapeError, match="curvature 'fisher'"):
        landscape.eigen_surface(net, (x, y), x="-1:1:3", curvature="fisher", device="cpu")


USER_CODE = '''
import torch.nn.functional as F

def accuracy():
    return lambda outputs, targets: (outputs.argmax(1) == targets).float().mean()

def summed():
    return lambda outputs, targets: F.cross_entropy(outputs, targets, reduction="sum")
'''


@pytest.fixture
def work(tmp_path, mlp_ckpt, monkeypatch):
    shutil.copy(mlp_ckpt, tmp_path / "m.t7")
    (tmp_path / "user.py").write_text(USER_CODE)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(signal, "signal", lambda *a: None)
    return tmp_path


def refused(main, args, capsys, *words):
    before = snapshot(os.getcwd())
    capsys.readouterr()
    from landscape.errors import run_cli
    assert run_cli(main, args) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith("error: ") and "Traceback" not in err, err
    for w in words:
        assert w in err, (w, err)
    assert snapshot(os.getcwd()) == before


BASE = ["--dataset", "digits", "--model", "digits_mlp", "--model_file", "m.t7", "--threads", "1", "--x=-1:1:3"]


@pytest.mark.parametrize("extra,words", [
    (["--curvature", "newton"], ["--curvature", "newton"]),
    (["--hvp", "fd"], ["--hvp", "fd"]),
    (["--per_layer"], ["--per_layer needs --at_center"]),
    (["--at_center", "--top_k", "5", "--max_iter", "3"], ["--top_k 5 exceeds --max_iter 3"]),
    (["--curvature", "ggn", "--loss_name", "user.py:accuracy"], ["no derivative", "output Hessian"]),
    (["--at_center", "--loss_name", "user.py:accuracy"], ["no derivative"]),
    (["--curvature", "ef", "--loss_name", "user.py:summed"], ["mean over examples"]),
    (["--at_center", "--curvature", "ef", "--loss_name", "user.py:summed"], ["mean over examples"]),
])
def test_plot_hessian_eigen_refuses_bad_curvature_flags(work, capsys, extra, words):
    refused(plot_hessian_eigen.main, BASE + extra, capsys, *words)


@pytest.mark.parametrize("extra,words", [
    (["--curvature", "ggn"], ["--curvature", "--xdir/--ydir hessian"]),
    (["--hvp", "finite_difference", "--xnorm", "filter"], ["--hvp", "--xdir/--ydir hessian"]),
    (["--xdir", "hessian", "--curvature", "ef", "--loss_name", "user.py:summed"], ["mean over examples"]),
])
def test_plot_surface_refuses_bad_curvature_flags(work, capsys, extra, words):
    refused(plot_surface.main, BASE + extra, capsys, *words)


# ----------------------------------------------------------------------------- frozen parameters, resume, names
@pytest.fixture
def frozen_first_layer(problems):
    """The cross-entropy MLP with its first layer frozen (requires_grad=False, as a LoRA base)."""
    net, loss, x, y, _ = problems["ce"]
    net = copy.deepcopy(net)
    for p in net[0].parameters():
        p.requires_grad_(False)
    return net, loss, x, y


def test_frozen_parameters_stay_out_of_the_curvature_unless_named(frozen_first_layer):
    net, loss, x, y = frozen_first_layer
    trained = dense_matrices(net, loss, x, y, ["2.weight"])["hessian"]
    both = dense_matrices(net, loss, x, y, ["0.weight", "2.weight"])["hessian"]
    r = landscape.hessian(net, (x, y), loss=loss, trace=False, device="cpu")
    assert r.param_names == ["2.weight"] and r.parameters == 21
    assert r.eigenvalues[0] == pytest.approx(float(torch.linalg.eigvalsh(trained)[-1]), rel=1e-4)
    named = landscape.hessian(net, (x, y), loss=loss, trace=False, params=r"\d\.weight", device="cpu")
    assert named.param_names == ["0.weight", "2.weight"]
    assert named.eigenvalues[0] == pytest.approx(float(torch.linalg.eigvalsh(both)[-1]), rel=1e-4)
    assert not any(p.requires_grad for p in net[0].parameters())              # the user's model is untouched
    res = landscape.eigen_surface(net, (x, y), loss=loss, x="-1:1:3", device="cpu")
    assert np.isfinite(res["max_eig"]).all() and (res["eig_converged"] == 1).all()
    res = landscape.surface(net, (x, y), loss=loss, x="-1:1:3", directions="hessian", curvature="ggn", device="cpu")
    assert np.isfinite(res["train_loss"]).all()


def test_a_model_with_nothing_trained_is_refused(problems):
    net, loss, x, y, _ = problems["ce"]
    net = copy.deepcopy(net).requires_grad_(False)
    with pytest.raises(landscape.LandscapeError, match="no trained"):
        landscape.hessian(net, (x, y), loss=loss, device="cpu")


def test_ggn_eigenvector_directions_are_the_dense_ggns(problems, tmp_path):
    import h5py
    import h5_util
    net, loss, x, y, dense = problems["ce"]
    landscape.surface(net, (x, y), loss=loss, x="-1:1:3", directions="hessian", curvature="ggn", ignore="",
                      device="cpu", out=str(tmp_path / "s.h5"))
    (d,) = h5_util.read_direction_file(str(tmp_path / "s_directions.h5"))
    with h5py.File(tmp_path / "s_directions.h5", "r") as f:
        assert f.attrs["spec_curvature"] == "ggn" and f.attrs["spec_xdir"] == "hessian"
    _, V = torch.linalg.eigh(dense["ggn"])
    flat = torch.cat([d[0].reshape(-1), d[2].reshape(-1)]).double()          # the weights; biases are not covered
    assert float(d[1].abs().sum()) == 0 and abs(float(flat @ V[:, -1])) == pytest.approx(1.0, abs=1e-4)


@pytest.mark.parametrize("first,second", [(["--curvature", "ggn"], ["--curvature", "hessian"]),
                                          (["--hvp", "finite_difference"], ["--hvp", "autograd"])],
                         ids=["curvature", "hvp"])
def test_eigen_map_resume_refuses_another_curvature_or_product(work, capsys, first, second):
    import h5py
    args = BASE[:-1] + ["--x=-1:1:2", "--xnorm", "filter", "--xignore", "biasbn", "--batch_size", "2000",
                        "--surf_file", "e.h5", "--max_iter", "20"]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        assert plot_hessian_eigen.main(args + first) == 0
    with h5py.File("e.h5", "r+") as f:
        mx, mn = f["max_eig"][()], f["min_eig"][()]
        mx[1], mn[1] = -1, 1
        f["max_eig"][...], f["min_eig"][...] = mx, mn
        assert f.attrs[first[0][2:]] == first[1]
    refused(plot_hessian_eigen.main, args + second, capsys, second[0], first[1])


def test_the_reference_module_keeps_every_name():
    import hess_vec_prod
    for name in ("min_max_hessian_eigs", "make_hvp", "HessianOperator", "lanczos", "trace_estimate",
                 "hutchinson_trace", "esd", "lanczos_extremes", "batch_loss_terms", "hessian_params", "flatten_rows",
                 "default_memory_budget", "SavedBytes", "matmat", "CallableOperator", "as_operator", "LanczosRun",
                 "LanczosResult", "wanted_indices", "ritz_converged", "gaussian_start", "ritz_vectors", "nan_result",
                 "rademacher", "mean_and_se", "default_block", "slq_nodes", "gaussian_density", "LANCZOS_TOL",
                 "FLOAT32_FLOOR", "GGNOperator", "EmpiricalFisherOperator", "FiniteDifferenceHessian",
                 "BlockOperator"):
        assert hasattr(hess_vec_prod, name), name
    assert hess_vec_prod.lanczos is algorithms.lanczos and hess_vec_prod.HessianOperator is operators.HessianOperator


def test_an_eigenvalue_map_that_stops_at_max_iter_says_so(work, capsys):
    import h5py
    from landscape.errors import run_cli
    args = BASE[:-1] + ["--x=-1:1:2", "--xnorm", "filter", "--xignore", "biasbn", "--batch_size", "2000",
                        "--surf_file", "e.h5", "--max_iter", "2"]
    capsys.readouterr()
    assert run_cli(plot_hessian_eigen.main, args) == 0
    err = capsys.readouterr().err
    assert "warning: Lanczos did not converge at 2 of 2 points within --max_iter 2" in err, err
    with h5py.File("e.h5", "r") as f:
        assert (f["eig_converged"][()] == 0).all() and (f["eig_iters"][()] == 2).all()
    with pytest.warns(curvature.CurvatureWarning, match="did not converge at 2 of 2 points"):
        import model_loader
        import dataloader
        d = dataloader.load_tensors("digits")
        landscape.eigen_surface(model_loader.load("digits", "digits_mlp", "m.t7"), (d.train_x[:300], d.train_y[:300]),
                                x="-1:1:2", max_iter=2, device="cpu")
