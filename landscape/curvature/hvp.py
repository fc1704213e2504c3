"""Hessian-vector products on the device; the Hessian's extreme eigenvalues, trace and spectral density.

The Hessian is that of the mean loss over the whole evaluation set, in eval mode (BatchNorm uses its
running statistics), with respect to a list of parameters: by default those of dimension > 1, as in
the reference. H v is computed by double backward: H v = d/dw (g . v), where g = dL/dw. Vectors live
on the device as one flat float32 tensor (P,); nothing goes through numpy but the small tridiagonal
matrices of Lanczos.

- HessianOperator: H v and H V (several vectors per backward pass) for any loss that is a sum of
  per-batch terms. Where the set fits in memory it keeps the first-order graph of every batch and
  answers each product with one double backward through it; otherwise it recomputes the forward pass
  and the first backward batch by batch for every product (exact either way). make_hvp builds one
  from a model and (x, y) tensors.
- lanczos: the top_k largest eigenvalues (and vectors) and the smallest one, by Lanczos with full
  reorthogonalisation, each converged to a tolerance relative to itself.
- trace_estimate: Hutchinson's estimate of tr(H) with Rademacher probes, a block of them per pass,
  stopped at a requested standard error; optionally deflated by a Lanczos basis.
- esd: the eigenvalue spectral density by stochastic Lanczos quadrature (as PyHessian's density()).

The reference accumulated per-batch *mean* losses without dividing by the number of batches, so its
eigenvalues are the true ones times the number of batches (e.g. x391 for CIFAR-10 at batch 128).
Ratios such as |min/max| are unaffected.
"""
import math
from dataclasses import dataclass

import numpy as np
import scipy.linalg
import torch

from landscape.evaluation import batch_loss_sum

# Default Lanczos tolerance: each wanted Ritz pair stops when its residual |beta_k s_ki| <= tol |theta_i|.
# For a symmetric matrix the residual bounds the eigenvalue error (|theta - lambda| <= residual), so
# each reported eigenvalue is within 1e-4 of itself, the smallest one included (unless it is below
# 0.5% of ||H||, where the float32 floor below takes over); in practice the error is nearer
# residual^2 / gap, far smaller (1e-6 on a trained digits_cnn's smallest eigenvalue).
LANCZOS_TOL = 1e-4
# Products are float32. Measured on a trained digits_cnn against float64 products, a product's error
# is up to 6e-7 ||H v|| (along the top eigenvector; 1e-8 ||H|| for a random unit v), and the top
# eigenvalue comes out within 2.4e-7 of the float64 one: Ritz values cannot be trusted much below
# a few 1e-7 ||H||. So no residual is asked to go below 5e-7 ||H|| (||H|| estimated by the largest
# |Ritz value|): a near-zero eigenvalue stops there instead of running to max_iter.
FLOAT32_FLOOR = 5e-7


# ----------------------------------------------------------------------------- parameters, flat vectors
def hessian_params(net):
    """The parameters the Hessian is taken with respect to by default: those of dimension > 1."""
    return [p for p in net.parameters() if p.dim() > 1]


def flatten_rows(tensors, params, rows):
    """Per-parameter tensors of shape (rows, *p.shape), None for 0 -> one (rows, P) tensor."""
    return torch.cat([(torch.zeros((rows,) + p.shape, dtype=p.dtype, device=p.device) if t is None else t)
                      .reshape(rows, -1) for t, p in zip(tensors, params)], dim=1)


def default_memory_budget(device):
    """Bytes a cached graph may take: half the free memory of a CUDA device, a quarter of MemAvailable on CPU."""
    device = torch.device(device)
    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        return free // 2
    try:
        with open("/proc/meminfo") as f:
            kib = next(int(line.split()[1]) for line in f if line.startswith("MemAvailable:"))
        return kib * 1024 // 4
    except (OSError, StopIteration, ValueError):
        return 1 << 30                   # 1 GiB where the OS does not say


class SavedBytes:
    """saved_tensors_hooks that count the bytes autograd keeps for backward (tensors of `exclude` are free)."""

    def __init__(self, exclude=()):
        self.free = {t.untyped_storage().data_ptr() for t in exclude}
        self.seen = set()
        self.bytes = 0

    def pack(self, t):
        try:
            key = (t.untyped_storage().data_ptr(), t.storage_offset(), t.numel(), t.dtype)
        except (RuntimeError, NotImplementedError):      # tensors without storage (subclasses): count them
            key = (id(t), 0, t.numel(), t.dtype)
        if key[0] not in self.free and key not in self.seen:
            self.seen.add(key)
            self.bytes += t.numel() * t.element_size()
        return t.detach()       # a detached alias: autograd re-attaches the history on unpack, with no cycle

    @staticmethod
    def unpack(t):
        return t


# ----------------------------------------------------------------------------- the operator
class HessianOperator:
    """v (P,) -> H v, and V (K, P) -> (H V^T)^T, for the Hessian of sum(loss_terms()) w.r.t. `params`.

    loss_terms() returns an iterable of scalar tensors, one per batch, weighted so that they sum to the
    loss (batch mean * batch size / N for a mean over N points), computed with autograd through
    `params`; a generator keeps one batch's forward pass alive at a time.
    cache=True keeps the first-order graph of all batches (g = dL/dw with create_graph) and answers each
    product with one double backward through it; cache=False redoes the forward pass and first backward
    batch by batch for every product (exact too, constant memory); cache="auto" caches while the bytes
    autograd saves for backward, counted batch by batch as the graph is built, stay within
    `memory_budget` (default: default_memory_budget(device)), and falls back as soon as they pass it.
    The cached graph is rebuilt when a tensor in params or `watch` is modified in place (its _version
    moves, as with PointSetter or load_state_dict); changes made through `.data` are not seen: call
    reset() after those.
    Attributes: params, dim (P), device, dtype, products (vectors multiplied so far), cached (bool),
    saved_bytes (counted bytes of the cached graph, or of the part built before falling back).
    """

    def __init__(self, params, loss_terms, cache="auto", memory_budget=None, watch=()):
        if cache not in (True, False, "auto"):
            raise ValueError(f"cache must be True, False or 'auto', not {cache!r}")
        self.params = list(params)
        if not self.params:
            raise ValueError("the Hessian needs at least one parameter")
        self.loss_terms = loss_terms
        self.dim = sum(p.numel() for p in self.params)
        self.device = self.params[0].device
        self.dtype = self.params[0].dtype
        self.cache = cache
        self.memory_budget = default_memory_budget(self.device) if memory_budget is None else memory_budget
        self.products = 0
        self.cached = False
        self.saved_bytes = 0
        self._watch = self.params + [t for t in watch if all(t is not p for p in self.params)]
        self._grad = None            # (P,) flat gradient with its graph, when cached
        self._stamp = None           # versions of the watched tensors when the graph was built
        self._batched = True         # is_grads_batched works for this model (else a loop)
        self._over_budget = False    # 'auto' found the graph too big: products go batch by batch
        if cache is not False:
            self._build()

    # ---- building and checking the cached graph
    def _versions(self):
        return [(t._version, t.data_ptr()) for t in self._watch]

    def _flat_grad(self, term):
        """dterm/dw as one (P,) tensor that keeps its graph (create_graph=True)."""
        grads = torch.autograd.grad(term, self.params, create_graph=True, allow_unused=True)
        return flatten_rows([None if g is None else g.unsqueeze(0) for g in grads], self.params, 1)[0]

    def _build(self):
        """Build g over all batches with its graph; give up (cached=False) past the budget under 'auto'."""
        self._grad, self.cached = None, False
        budget = math.inf if self.cache is True else self.memory_budget
        counter = SavedBytes(self._watch)
        total = None
        with torch.enable_grad(), torch.autograd.graph.saved_tensors_hooks(counter.pack, counter.unpack):
            for term in self.loss_terms():
                g = self._flat_grad(term)
                total = g if total is None else total + g
                if counter.bytes > budget:
                    self.saved_bytes, self._over_budget = counter.bytes, True
                    return                 # batch-by-batch products from now on (until reset())
        self.saved_bytes = counter.bytes
        self._grad, self.cached, self._stamp = total, True, self._versions()

    def reset(self):
        """Drop the cached graph (freeing its memory); the next product builds it again if caching is on."""
        self._grad, self.cached, self._stamp, self._over_budget = None, False, None, False

    def _fresh_graph(self):
        """The cached gradient graph, rebuilt if the weights moved; None when products are not cached."""
        if self.cache is False or self._over_budget:
            return None
        if not (self.cached and self._stamp == self._versions()):
            self._build()
        return self._grad if self.cached else None

    # ---- products
    def _backward(self, g, V, retain):
        """(K, P): the rows d(g . v_k)/dw, with one batched backward when the ops allow it."""
        k = V.shape[0]
        if not g.requires_grad:                     # the loss is linear in w here: H = 0
            return torch.zeros(k, self.dim, dtype=self.dtype, device=self.device)
        if k == 1:
            out = torch.autograd.grad(g, self.params, grad_outputs=V[0], retain_graph=retain, allow_unused=True)
            return flatten_rows([None if h is None else h.unsqueeze(0) for h in out], self.params, 1)
        if self._batched:
            try:
                out = torch.autograd.grad(g, self.params, grad_outputs=V, retain_graph=True,
                                          is_grads_batched=True, allow_unused=True)
                return flatten_rows(out, self.params, k)
            except (RuntimeError, NotImplementedError):   # an op without a batching rule: loop instead
                self._batched = False
        return torch.cat([self._backward(g, V[i:i + 1], True) for i in range(k)])

    def matmat(self, V):
        """V (K, P) -> H V as (K, P): row k is H v_k."""
        assert V.dim() == 2 and V.shape[1] == self.dim, f"expected (K, {self.dim}), got {tuple(V.shape)}"
        V = V.to(self.device, self.dtype)
        g = self._fresh_graph()
        if g is not None:
            out = self._backward(g, V, retain=True)
        else:
            out = torch.zeros_like(V)
            with torch.enable_grad():
                for term in self.loss_terms():
                    out += self._backward(self._flat_grad(term), V, retain=False)
        self.products += V.shape[0]
        return out

    def __call__(self, v):
        """v (P,) -> H v (P,)."""
        return self.matmat(v.reshape(1, -1))[0]


def batch_loss_terms(net, x, y, batch_size=128, loss_name="crossentropy", criterion=None):
    """A loss_terms callable: net's loss on (x, y) batch by batch, each weighted by its share of len(y)."""
    n = len(y)

    def terms():
        for start in range(0, n, batch_size):
            xb, yb = x[start:start + batch_size], y[start:start + batch_size]
            if criterion is None:
                yield batch_loss_sum(net(xb), yb, loss_name)[0] / n      # summed over the batch / N
            else:
                yield criterion(net(xb), yb) * (len(yb) / n)               # batch mean * B / N
    return terms


def make_hvp(net, x, y, loss_name="crossentropy", batch_size=128, params=None, criterion=None, cache="auto",
             memory_budget=None):
    """A HessianOperator for net's mean loss on (x, y) (already on the model's device), in eval mode.

    params defaults to hessian_params(net); criterion(outputs, targets) -> mean loss overrides loss_name
    ('crossentropy', or 'mse': the mean over batch and classes of (softmax(outputs) - onehot)^2).
    """
    net.eval()
    params = hessian_params(net) if params is None else list(params)
    watch = list(net.parameters()) + [b for b in net.buffers() if b.is_floating_point()]
    return HessianOperator(params, batch_loss_terms(net, x, y, batch_size, loss_name, criterion), cache,
                           memory_budget, watch)


def matmat(op, V):
    """(K, P) -> (K, P) through op.matmat, or a loop of op(v) for a plain callable."""
    if hasattr(op, "matmat"):
        return op.matmat(V)
    return torch.stack([op(v) for v in V])


class CallableOperator:
    """Wraps a bare v -> H v function with the dim and device the solvers need."""

    def __init__(self, fn, dim, device):
        self.fn, self.dim, self.device = fn, dim, torch.device(device)

    def __call__(self, v):
        return self.fn(v)


def as_operator(hvp, dim, device):
    """hvp itself when it carries dim and device, else a CallableOperator around it."""
    return hvp if hasattr(hvp, "dim") and hasattr(hvp, "device") else CallableOperator(hvp, dim, device)


# ----------------------------------------------------------------------------- Lanczos
class LanczosRun:
    """Lanczos tridiagonalisation with full reorthogonalisation: Q (k, P) orthonormal, Q H Q^T = T.

    T is tridiagonal with diagonal alphas (alpha_j = q_j^T H q_j) and off-diagonal betas; after k steps
    H Q^T = Q^T T + beta_k q_{k+1} e_k^T, so a Ritz pair (theta_i, Q^T s_i) of T has residual
    |beta_k s_ki| (s_ki: last component of the i-th eigenvector of T). The basis is float64 on the
    device and reorthogonalised twice per step (float32 products lose orthogonality fast otherwise).
    """

    def __init__(self, op, start, steps):
        self.op, self.steps = op, steps
        self.Q = torch.empty(steps, op.dim, dtype=torch.float64, device=start.device)   # (steps, P)
        self.q = start / start.norm()                   # next basis vector (P,), float64
        self.alphas, self.betas = [], []
        self.beta = 0.0                                 # norm of the residual after the last step
        self.w = None
        self.k = 0

    def step(self):
        """One product and one column of T; False when the product is not finite."""
        k = self.k
        if k > 0:
            self.betas.append(self.beta)
            self.q = self.w / self.beta if self.beta > 0 else self.restart()
        self.Q[k] = self.q
        w = self.op(self.q.float()).double()
        if not torch.isfinite(w).all():
            return False
        alpha = w @ self.q
        w -= alpha * self.q
        if k > 0:
            w -= self.betas[-1] * self.Q[k - 1]
        basis = self.Q[:k + 1]
        for _ in range(2):
            w -= basis.T @ (basis @ w)
        self.alphas.append(float(alpha))
        self.beta, self.w, self.k = float(w.norm()), w, k + 1
        return True

    def restart(self):
        """A unit vector orthogonal to the basis, after an exactly invariant Krylov space (beta = 0)."""
        w = torch.randn(self.Q.shape[1], generator=torch.Generator().manual_seed(self.k), dtype=torch.float64)
        w = w.to(self.Q.device)
        basis = self.Q[:self.k]
        for _ in range(2):
            w -= basis.T @ (basis @ w)
        return w / w.norm()

    def ritz(self):
        """Ritz values theta (k,) ascending and the eigenvectors S (k, k) of T (columns)."""
        # LAPACK's tridiagonal solver: numpy's dense eigh took 16-70 ms for k = 60 on a busy machine
        return scipy.linalg.eigh_tridiagonal(np.array(self.alphas), np.array(self.betas))


@dataclass
class LanczosResult:
    """What lanczos() found. eigenvalues: (top_k,) largest first; eigenvectors: (top_k, P) unit float32."""
    eigenvalues: np.ndarray
    min_eig: float                 # NaN unless want_min
    eigenvectors: torch.Tensor     # or None unless want_vectors
    iterations: int                # Hessian-vector products used
    converged: bool
    basis: torch.Tensor = None     # (k, P) float64 orthonormal Krylov basis, with keep_basis
    alphas: np.ndarray = None      # (k,) q_j^T H q_j for the basis rows: sum = tr(Q H Q^T)

    @property
    def max_eig(self):
        return float(self.eigenvalues[0])


def wanted_indices(k, top_k, want_min):
    """Indices into k ascending Ritz values: the top_k largest (largest first), then the smallest."""
    top = list(range(k - 1, max(k - 1 - top_k, -1), -1))
    return top + ([0] if want_min and 0 not in top else [])


def ritz_converged(theta, last_row, beta, wanted, tol):
    """Every wanted pair i has residual |beta s_ki| <= max(tol |theta_i|, FLOAT32_FLOOR max|theta|)."""
    floor = FLOAT32_FLOOR * np.abs(theta).max()
    residual = beta * np.abs(last_row[wanted])
    return bool(np.all(residual <= np.maximum(tol * np.abs(theta[wanted]), floor)))


def gaussian_start(dim, device, gen):
    """A float64 Gaussian vector (dim,) drawn on the CPU (the same on every device), moved to device."""
    return torch.randn(dim, generator=gen, dtype=torch.float64).to(device)


def lanczos(op, top_k=1, tol=LANCZOS_TOL, max_iter=100, seed=0, want_min=True, want_vectors=False,
            keep_basis=False):
    """The top_k largest eigenvalues of op (and with want_min the smallest), by Lanczos.

    Stops when every wanted Ritz pair has converged to `tol` relative to its own eigenvalue (see
    ritz_converged), after max_iter products, or when the Krylov space is the whole space. A product
    that is not finite (a diverged point) gives NaN eigenvalues instead of an error.
    """
    steps = min(max_iter, op.dim)
    if not 1 <= top_k <= steps:
        raise ValueError(f"top_k must be between 1 and min(max_iter, dimension) = {steps}, not {top_k}")
    run = LanczosRun(op, gaussian_start(op.dim, op.device, torch.Generator().manual_seed(seed)), steps)
    need = top_k + int(want_min)
    converged = False
    while run.k < steps:
        if not run.step():
            return nan_result(top_k, op.dim, op.device, run.k + 1, want_vectors)   # products, the bad one too
        theta, S = run.ritz()
        wanted = wanted_indices(run.k, top_k, want_min)
        exhausted = run.k == op.dim
        if exhausted or (run.k >= need and ritz_converged(theta, S[-1], run.beta, wanted, tol)):
            converged = True
            break
    theta, S = run.ritz()
    top = wanted_indices(run.k, top_k, False)
    vectors = ritz_vectors(run.Q[:run.k], S[:, top]) if want_vectors else None
    return LanczosResult(eigenvalues=theta[top].copy(), min_eig=float(theta[0]) if want_min else float("nan"),
                         eigenvectors=vectors, iterations=run.k, converged=converged,
                         basis=run.Q[:run.k] if keep_basis else None,
                         alphas=np.array(run.alphas) if keep_basis else None)


def ritz_vectors(Q, S):
    """Q (k, P) basis, S (k, m) eigenvectors of T -> (m, P) unit float32 Ritz vectors Q^T s_i."""
    V = torch.as_tensor(S.T.copy(), dtype=torch.float64, device=Q.device) @ Q
    return (V / V.norm(dim=1, keepdim=True)).float()


def nan_result(top_k, dim, device, iterations, want_vectors):
    """A LanczosResult of NaNs, for a point where the products are not finite."""
    vectors = torch.full((top_k, dim), float("nan"), device=device) if want_vectors else None
    return LanczosResult(np.full(top_k, np.nan), float("nan"), vectors, iterations, False)


def lanczos_extremes(hvp, dim, device, tol=LANCZOS_TOL, max_iter=100, seed=0):
    """(largest eigenvalue, smallest eigenvalue, number of products) of the operator `hvp`."""
    r = lanczos(as_operator(hvp, dim, device), top_k=1, tol=tol, max_iter=max_iter, seed=seed, want_min=True)
    return r.max_eig, r.min_eig, r.iterations


def min_max_hessian_eigs(net, x, y, loss_name="crossentropy", batch_size=128, tol=LANCZOS_TOL, max_iter=100,
                         seed=0):
    """(max eigenvalue, min eigenvalue, Hessian-vector products used): the reference's helper name."""
    hvp = make_hvp(net, x, y, loss_name, batch_size)
    return lanczos_extremes(hvp, hvp.dim, hvp.device, tol, max_iter, seed)


# ----------------------------------------------------------------------------- trace
def rademacher(k, dim, device, gen):
    """(k, dim) float32 entries +-1, drawn on the CPU (the same on every device) as int8, then moved."""
    return torch.randint(0, 2, (k, dim), generator=gen, dtype=torch.int8).to(device).float().mul_(2).sub_(1)


def mean_and_se(values):
    """Mean and standard error (sample std with ddof=1 / sqrt(n)) of a 1-D float64 tensor."""
    n = values.numel()
    se = float(values.std() / math.sqrt(n)) if n > 1 else float("nan")
    return float(values.mean()), se


def default_block(device):
    """Probe vectors per pass: 8 on CUDA, to fill the device (not measured here); 1 on CPU.

    On CPU one batched backward (is_grads_batched, i.e. vmap) of 8 vectors took 30-40% longer than
    8 single products on a busy machine, and as long on a quiet one (digits_cnn, 1 and 2 threads).
    """
    return 8 if torch.device(device).type == "cuda" else 1


def trace_estimate(op, max_samples=100, rel_se=None, block=None, seed=0, min_samples=10, deflate=None):
    """Hutchinson's tr(H) = E[z^T H z] with Rademacher z: (trace, standard error, samples used).

    Probes go `block` at a time (default: default_block(op.device)) through op.matmat. With rel_se,
    stops once the standard error is <= rel_se * |trace| (checked from min_samples on, after each
    block); otherwise uses max_samples. deflate: a LanczosResult made with keep_basis=True; then
    tr(H) = tr(Q H Q^T) + tr(P H P) with P = I - Q^T Q, the first term exact (the sum of the alphas)
    and the second estimated from the projected probes P z. That removes the variance of the
    directions Q holds (the top of the spectrum), as in Hutch++ (Meyer et al. 2021), at no extra
    product. The standard error is that of the estimated part.
    """
    gen = torch.Generator().manual_seed(seed)
    block = block or default_block(op.device)
    exact, Q = 0.0, None
    if deflate is not None:
        assert deflate.basis is not None, "deflate needs a LanczosResult made with keep_basis=True"
        exact, Q = float(np.sum(deflate.alphas)), deflate.basis
    values = torch.empty(0, dtype=torch.float64, device=op.device)
    while values.numel() < max_samples:
        n = values.numel()
        k = min(block, max_samples - n, min_samples - n if n < min_samples else block)   # first check at min_samples
        Z = rademacher(k, op.dim, op.device, gen)                                         # (k, P)
        if Q is not None:
            Z = (Z.double() - (Z.double() @ Q.T) @ Q).float()                                 # P z
        quad = (Z.double() * matmat(op, Z).double()).sum(1)                                # z^T H z, (k,)
        values = torch.cat([values, quad + exact])
        if not torch.isfinite(quad).all():
            return float("nan"), float("nan"), values.numel()
        mean, se = mean_and_se(values)
        if rel_se is not None and values.numel() >= min_samples and se <= rel_se * abs(mean):
            break
    return (*mean_and_se(values), values.numel())


def hutchinson_trace(hvp, dim, device, samples=100, seed=0):
    """Hutchinson's estimate of tr(H) with Rademacher vectors z: mean of z^T H z, and its standard error."""
    trace, se, _ = trace_estimate(as_operator(hvp, dim, device), max_samples=samples, seed=seed)
    return trace, se


# ----------------------------------------------------------------------------- spectral density
def slq_nodes(op, start, steps):
    """Gauss quadrature of one unit probe q: Ritz values theta_j and weights tau_j = (S_0j)^2.

    sum_j tau_j f(theta_j) approximates q^T f(H) q; it is exact for polynomials of degree < 2 * steps.
    Stops early when the Krylov space is invariant (residual at float32 rounding); NaNs if not finite.
    """
    run = LanczosRun(op, start, steps)
    while run.k < steps:
        if not run.step():
            return np.full(1, np.nan), np.full(1, np.nan)
        if run.beta <= FLOAT32_FLOOR * max(abs(t) for t in run.alphas + run.betas + [run.beta]):
            break                                           # invariant: T holds the probe's whole measure
    theta, S = run.ritz()
    return theta, S[0] ** 2


def gaussian_density(nodes, weights, grid_points=1000, sigma=None):
    """sum_j w_j N(x; theta_j, sigma^2) on a grid over [min - 5 sigma, max + 5 sigma]: (grid, density).

    sigma defaults to 1% of the span of the nodes (or of their magnitude when they coincide).
    """
    lo, hi = float(nodes.min()), float(nodes.max())
    if sigma is None:
        sigma = 0.01 * (hi - lo) if hi > lo else 0.01 * max(abs(hi), 1e-12)
    grid = np.linspace(lo - 5 * sigma, hi + 5 * sigma, grid_points)
    z = (grid[:, None] - nodes[None, :]) / sigma                             # (grid_points, nodes)
    density = (weights[None, :] * np.exp(-0.5 * z ** 2)).sum(1) / (sigma * math.sqrt(2 * math.pi))
    return grid, density


def esd(op, n_probes=1, n_steps=100, seed=0, grid_points=1000, sigma=None):
    """Eigenvalue spectral density by stochastic Lanczos quadrature: (grid, density, nodes, weights).

    Each probe is a Gaussian vector normalised to 1 run through n_steps Lanczos steps; its Ritz values
    are quadrature nodes with weights tau_j (summing to 1), averaged over the probes (weights / n_probes),
    so sum(weights * nodes**p) estimates tr(H^p) / P. The density smooths the nodes with Gaussians of
    width sigma (gaussian_density) and integrates to about 1. NaNs everywhere if a product is not finite.
    """
    gen = torch.Generator().manual_seed(seed)
    steps = min(n_steps, op.dim)
    parts = [slq_nodes(op, gaussian_start(op.dim, op.device, gen), steps) for _ in range(n_probes)]
    nodes = np.concatenate([t for t, _ in parts])
    weights = np.concatenate([w for _, w in parts]) / n_probes
    if not np.isfinite(nodes).all():
        return np.full(grid_points, np.nan), np.full(grid_points, np.nan), nodes, weights
    grid, density = gaussian_density(nodes, weights, grid_points, sigma)
    return grid, density, nodes, weights
