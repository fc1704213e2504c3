"""The reference's hess_vec_prod helpers under their own names and call forms, against a dense Hessian
(torch.func) of the mean loss over every example of a loader with unequal batches."""
import numpy as np
import pytest
import torch
import torch.nn as nn
from torch.func import functional_call

import hess_vec_prod


def tiny():
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(5, 4), nn.Tanh(), nn.Linear(4, 3))
    x, y = torch.randn(23, 5), torch.randint(0, 3, (23,))
    loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(x, y), batch_size=10)   # 10, 10, 3
    return net, x, y, loader


def dense(net, x, y):
    """The Hessian of the mean cross-entropy over (x, y) w.r.t. the weights (dimension > 1), float64."""
    names = [n for n, p in net.named_parameters() if p.dim() > 1]
    base = {n: p.detach() for n, p in net.named_parameters()}
    sizes = [base[n].numel() for n in names]

    def loss(flat):
        parts = dict(base)
        for n, t in zip(names, flat.split(sizes)):
            parts[n] = t.view_as(base[n])
        return nn.functional.cross_entropy(functional_call(net, parts, (x,)), y)
    theta = torch.cat([base[n].reshape(-1) for n in names])
    return torch.func.hessian(loss)(theta).double()


def test_eval_hess_vec_prod_puts_the_mean_losss_product_in_grad():
    net, x, y, loader = tiny()
    params = [p for p in net.parameters() if p.dim() > 1]
    v = np.random.default_rng(1).standard_normal(sum(p.numel() for p in params)).astype(np.float32)
    vec = hess_vec_prod.npvec_to_tensorlist(v, params)
    assert [t.shape for t in vec] == [p.shape for p in params]
    hess_vec_prod.eval_hess_vec_prod(vec, params, net, nn.CrossEntropyLoss(), loader)
    got = hess_vec_prod.gradtensor_to_npvec(net)
    want = (dense(net, x, y) @ torch.from_numpy(v).double()).numpy()
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-6 * np.abs(want).max())


def test_min_max_hessian_eigs_takes_the_references_call_form():
    net, x, y, loader = tiny()
    eig = np.linalg.eigvalsh(dense(net, x, y).numpy())
    top, bottom, iters = hess_vec_prod.min_max_hessian_eigs(net, loader, nn.CrossEntropyLoss(), 0, False, False)
    assert top == pytest.approx(eig[-1], rel=1e-4)
    assert bottom == pytest.approx(eig[0], rel=1e-3, abs=1e-4 * abs(eig[-1]))
    assert 0 < iters <= 100
    same = hess_vec_prod.min_max_hessian_eigs(net, x, y)        # this tool's form, on the same examples
    assert same[0] == pytest.approx(top, rel=1e-4)


def test_a_vector_of_the_wrong_length_is_refused():
    net, *_ = tiny()
    params = [p for p in net.parameters() if p.dim() > 1]
    with pytest.raises(ValueError, match="elements"):
        hess_vec_prod.npvec_to_tensorlist(np.zeros(3), params)
