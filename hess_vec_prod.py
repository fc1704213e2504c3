"""Hessian-vector products on the device, and the extreme eigenvalues and trace of the Hessian.

The Hessian is that of the mean loss over the whole evaluation set, with respect to the
parameters of dimension > 1 (as in the reference), in eval mode (BatchNorm uses its running
statistics). H v is computed by double backward, batch by batch: H v = sum_b d/dw (g_b . v),
where g_b is the gradient of batch b's share of the mean loss. Vectors live on the device as one
flat tensor; no product goes through numpy.

Eigenvalues: Lanczos with full reorthogonalisation. Both ends of the spectrum converge in the same
Krylov space, so one run gives the largest and the smallest eigenvalue. (A spectral shift,
H - sigma I, changes nothing here: Krylov spaces are shift-invariant. It helps only methods that
find eigenvalues of largest magnitude, like the reference's ARPACK call.) The run stops when the
residual |beta_k s_ki| of both extreme Ritz pairs is below tol * (largest |Ritz value|), or after
max_iter products.

The reference accumulated per-batch *mean* losses without dividing by the number of batches, so
its eigenvalues are the true ones times the number of batches (e.g. x391 for CIFAR-10 at batch
128). Ratios such as |min/max| are unaffected.
"""
import numpy as np
import torch

from evaluation import batch_loss_sum


def hessian_params(net):
    """The parameters the Hessian is taken with respect to: those of dimension > 1."""
    return [p for p in net.parameters() if p.dim() > 1]


def make_hvp(net, x, y, loss_name="crossentropy", batch_size=128):
    """v (flat tensor over hessian_params) -> H v (flat tensor), on the model's device."""
    params = hessian_params(net)
    shapes = [p.shape for p in params]
    sizes = [p.numel() for p in params]
    n = len(y)
    net.eval()

    def hvp(v):
        vs = [c.view(s) for c, s in zip(torch.split(v, sizes), shapes)]
        out = [torch.zeros_like(p) for p in params]
        for start in range(0, n, batch_size):
            with torch.enable_grad():
                loss, _ = batch_loss_sum(net(x[start:start + batch_size]), y[start:start + batch_size], loss_name)
                grads = torch.autograd.grad(loss / n, params, create_graph=True)
                dot = sum((g * u).sum() for g, u in zip(grads, vs))
                hv = torch.autograd.grad(dot, params)
            for o, h in zip(out, hv):
                o.add_(h)
        return torch.cat([o.reshape(-1) for o in out])

    hvp.dim = sum(sizes)
    hvp.device = params[0].device
    return hvp


def lanczos_extremes(hvp, dim, device, tol=1e-3, max_iter=100, seed=0):
    """(largest eigenvalue, smallest eigenvalue, number of products) of the operator `hvp`."""
    gen = torch.Generator(device="cpu").manual_seed(seed)
    q = torch.randn(dim, generator=gen, dtype=torch.float64).to(device)
    q /= q.norm()
    Q = [q]
    alphas, betas = [], []
    theta_max = theta_min = 0.0
    for k in range(1, min(max_iter, dim) + 1):
        w = hvp(Q[-1].float()).double()
        alpha = float(w @ Q[-1])
        w -= alpha * Q[-1]
        if betas:
            w -= betas[-1] * Q[-2]
        basis = torch.stack(Q)                          # (k, dim): full reorthogonalisation, twice
        for _ in range(2):
            w -= basis.T @ (basis @ w)
        beta = float(w.norm())
        alphas.append(alpha)
        T = np.diag(alphas) + np.diag(betas, 1) + np.diag(betas, -1)
        theta, S = np.linalg.eigh(T)
        theta_max, theta_min = float(theta[-1]), float(theta[0])
        scale = max(abs(theta_max), abs(theta_min), 1e-30)
        residual = beta * max(abs(S[-1, -1]), abs(S[-1, 0]))
        if beta <= 1e-12 * scale or (k >= 2 and residual <= tol * scale):
            return theta_max, theta_min, k
        betas.append(beta)
        Q.append(w / beta)
    return theta_max, theta_min, min(max_iter, dim)


def min_max_hessian_eigs(net, x, y, loss_name="crossentropy", batch_size=128, tol=1e-3, max_iter=100, seed=0):
    """(max eigenvalue, min eigenvalue, Hessian-vector products used): the reference's helper name."""
    hvp = make_hvp(net, x, y, loss_name, batch_size)
    return lanczos_extremes(hvp, hvp.dim, hvp.device, tol, max_iter, seed)


def hutchinson_trace(hvp, dim, device, samples=100, seed=0):
    """Hutchinson's estimate of tr(H) with Rademacher vectors z: mean of z^T H z, and its standard error."""
    gen = torch.Generator(device="cpu").manual_seed(seed)
    values = []
    for _ in range(samples):
        z = (torch.randint(0, 2, (dim,), generator=gen) * 2 - 1).float().to(device)
        values.append(float(z.double() @ hvp(z).double()))
    v = np.array(values)
    return float(v.mean()), float(v.std(ddof=1) / np.sqrt(len(v))) if len(v) > 1 else float("nan")
