"""Benchmark: this tool's curvature against hessian-eigenthings 1.0 and curvlinops 3.0, side by side.

    python bench/bench_hessian.py            # digits_cnn (1,437 digits) and ResNet-18 (256 images): about 1.5 h
    python bench/bench_hessian.py --quick    # 1 epoch, 256 digits, ResNet-18 on 16 images: a few minutes
    python bench/bench_hessian.py --models digits --tasks h_top,h_trace     # a part

Peers: `pip install -r bench/requirements.txt` (hessian-eigenthings, curvlinops-for-pytorch, pyhessian);
the project itself is imported from this repository. Rows of a missing peer are left out, with a note.

Same problem for every tool: the model in eval mode, the loss the MEAN cross-entropy over ALL examples
in the same unequal batches, the parameters of dimension > 1 (the tool's default).
- hessian-eigenthings averages per-batch products over the batches, so its stock
  supervised_loss(CrossEntropyLoss()) is a mean of batch means, another matrix when batches are unequal;
  it gets loss = CE(sum) / N * n_batches, the global mean. Its empirical Fisher averages per-batch
  means of g_i g_i^T, global only for equal batches: it gets equal batches (3 x 479 digits).
- curvlinops' reduction='mean' weights each batch by B_b / N: the global mean as it is.
Models: digits_cnn trained here with the project's trainer (20 epochs, batch 64, lr 0.1), all 1,437
training digits in batches of 256 (5 x 256 + 157); the CIFAR ResNet-18 of the zoo (11.2M weights of
dimension > 1) at its seeded initialisation, BatchNorm running statistics drawn at random (so eval mode
is not the identity), on 256 random CIFAR-shaped images with random labels in batches of 64 (no
CIFAR-10 here: random images are acceptable for timing, and the matrices are as large as CIFAR's).

Tasks, each to the same accuracy for every tool:
- top eigenvalue to relative tolerance 1e-4: this tool's Lanczos (its own stopping rule);
  hessian-eigenthings' lanczos(k=1, which='LA'), which runs exactly max_iter steps, given the smallest
  max_iter whose Ritz residual meets 1e-4 (found beforehand from its own start vector, not timed:
  generous to it); curvlinops through SciPy's eigsh(k=1, which='LA', tol=1e-4) (it has no solver).
- top eigenvalue + trace at equal or smaller standard error: the peers run plain Hutchinson with
  --trace_probes probes (100 on digits, as PyHessian's trace(maxIter=100); 10 on the ResNet-18), and
  the target is the standard error that many plain probes give (from a pilot of 10 probes, not
  timed); this tool stops on its own once its (deflated) estimate reaches it. hessian-eigenthings
  also runs Hutch++ with as many products (its stderr covers the residual third only); curvlinops'
  probes go through its operator by hand to get a standard error (its hutchinson_trace returns the
  estimate only).
- GGN and empirical Fisher top eigenvalue, as for the Hessian.
- finite differences: the error of each finite-difference product against the autograd one.
- product costs, in forward passes of the same data: reverse over reverse (graph kept, or from
  scratch), forward over reverse (jvp of grad; linearize kept, with its set-up), several vectors per
  backward pass, the GGN, the Fisher, finite differences.
- --tasks lm_memory: peak memory of one Hessian product and one GGN product on the character-level
  language model of examples/ (fresh weights; 256 windows of 64 characters, batches of 64).

Every row runs in its own fresh process (spawned), after an untimed warm-up of the same task (digits)
or of the same code on 4 examples (ResNet-18), so one-time costs (imports, oneDNN kernels, torch.func's
first jvp) count for nobody. Wall time: median of --rounds timed runs (digits), one run (ResNet-18).
Peak memory: the process's peak resident memory above where it stood after the warm-up (Linux: VmHWM,
reset through /proc/self/clear_refs). Products: operator products (vectors multiplied). The script
prints markdown and asserts nothing about time.
"""
import argparse
import contextlib
import io
import math
import multiprocessing as mp
import os
import platform
import re
import sys
import tempfile
import time
import traceback
import warnings

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)

TOL = 1e-4
TASKS = ("h_top", "h_trace", "ggn_top", "ef_top", "fd", "costs", "lm_memory")
MODELS = ("digits", "resnet18")


# ============================================================================= inputs (every child builds its own)
def train_digits_cnn(folder, epochs, threads):
    """Train digits_cnn with the project's trainer (batch 64, lr 0.1); returns its last checkpoint."""
    from cifar10 import main as trainer
    argv = ["--dataset", "digits", "--model", "digits_cnn", "--epochs", str(epochs), "--batch_size", "64",
            "--lr", "0.1", "--save_epoch", str(epochs), "--save", folder, "--threads", str(threads)]
    with contextlib.redirect_stdout(io.StringIO()):
        assert trainer.main(argv) == 0
    run = trainer.name_save_folder(trainer.build_parser().parse_args(argv))
    return os.path.join(folder, run, f"model_{epochs}.t7")


def resnet18(seed=0):
    """The zoo's CIFAR ResNet-18 at a seeded initialisation, eval mode, random BatchNorm statistics."""
    import model_loader
    torch.manual_seed(seed)
    net = model_loader.build("resnet18")
    with torch.no_grad():
        for m in net.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.uniform_(-0.1, 0.1)
                m.running_var.uniform_(0.5, 1.5)
    return net.eval()


def inputs(spec, n=None):
    """(model, x, y, batch size) of spec['model']; n: only the first n examples (the warm-up)."""
    if spec["model"] == "digits":
        import dataloader
        import model_loader
        net = model_loader.load("digits", "digits_cnn", spec["checkpoint"])
        d = dataloader.load_tensors("digits")
        x, y = d.train_x[:spec["n"]], d.train_y[:spec["n"]]
        bs = 256
    else:
        net = resnet18()
        g = torch.Generator().manual_seed(0)
        x, y = torch.randn(spec["n"], 3, 32, 32, generator=g), torch.randint(0, 10, (spec["n"],), generator=g)
        bs = 64
    if n is not None:
        x, y = x[:n], y[:n]
    return net.eval(), x, y, min(bs, len(y))


def weights(net):
    return [p for p in net.parameters() if p.dim() > 1]


def batches(x, y, bs):
    return [(x[i:i + bs], y[i:i + bs]) for i in range(0, len(y), bs)]


# ============================================================================= memory and counting
def rss_kib(field="VmRSS"):
    with open("/proc/self/status") as f:
        return int(re.search(fr"{field}:\s+(\d+)", f.read()).group(1))


def reset_peak():
    """Reset the kernel's peak-RSS mark (VmHWM) to the current RSS; False where that is not possible."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


class Counter:
    """Counts vectors through a matvec-like function."""

    def __init__(self, fn):
        self.fn, self.n = fn, 0

    def __call__(self, v):
        self.n += 1 if v.ndim == 1 else v.shape[1]
        return self.fn(v)


def count_he(op):
    """hessian-eigenthings operator: count its matvecs (instance attribute over the method)."""
    counter = Counter(op.matvec)
    op.matvec = counter
    return counter


# ============================================================================= this tool
def ours(spec, net, x, y, bs):
    import landscape
    task, curvature = spec["task"], spec.get("curvature", "hessian")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        r = landscape.hessian(net, (x, y), nn.CrossEntropyLoss(), curvature=curvature, top_k=1, min_eig=False,
                              trace=task == "h_trace", trace_rel_se=spec.get("trace_rel_se"), trace_samples=400,
                              batch_size=bs, device="cpu", tol=TOL, max_iter=200)
    return {"top": float(r.eigenvalues[0]), "products": r.products, "trace": r.trace, "se": r.trace_stderr,
            "converged": r.converged}


# ============================================================================= hessian-eigenthings
def he_global_loss(nb, n):
    """Batch loss for he: CE(sum) / N * n_batches, so its average over batches is the global mean."""
    return lambda model, batch: F.cross_entropy(model(batch[0]), batch[1], reduction="sum") * (nb / n)


def he_operator(curvature, net, x, y, bs):
    import hessian_eigenthings as he
    keep = lambda name, p: p.dim() > 1                                          # noqa: E731
    data = batches(x, y, bs)
    nb, n = len(data), len(y)
    if curvature == "hessian":
        return he.HessianOperator(net, data, he_global_loss(nb, n), param_filter=keep)
    if curvature == "hessian_fd":
        return he.HessianOperator(net, data, he_global_loss(nb, n), param_filter=keep, method="finite_difference")
    if curvature == "ggn":
        return he.GGNOperator(net, data, he.supervised_forward,
                              lambda out, batch: F.cross_entropy(out, batch[1], reduction="sum") * (nb / n),
                              param_filter=keep)
    equal = next(b for b in range(bs, 0, -1) if n % b == 0)                     # equal batches: a global mean
    return he.EmpiricalFisherOperator(net, batches(x, y, equal), he.supervised_per_sample_loss(nn.CrossEntropyLoss()),
                                      param_filter=keep)


def he_row(spec, net, x, y, bs):
    import hessian_eigenthings as he
    op = he_operator(spec.get("curvature", "hessian"), net, x, y, bs)
    counter = count_he(op)
    r = he.lanczos(op, k=1, max_iter=spec["he_steps"], which="LA", tol=TOL, seed=0)
    out = {"top": float(r.eigenvalues[0]), "trace": float("nan"), "se": float("nan")}
    if spec["task"] == "h_trace":
        if spec["tool"] == "he++":
            t = he.hutch_plus_plus(op, num_matvecs=3 * math.ceil(spec["probes"] / 3), seed=0)
        else:
            t = he.hutchinson(op, num_samples=spec["probes"], seed=0)
        out.update(trace=float(t.estimate), se=float(t.stderr))
    out["products"] = counter.n
    return out


# ============================================================================= curvlinops
def cl_operator(curvature, net, x, y, bs):
    import curvlinops as cl
    cls = {"hessian": cl.HessianLinearOperator, "ggn": cl.GGNLinearOperator, "ef": cl.EFLinearOperator}[curvature]
    return cls(net, nn.CrossEntropyLoss(), weights(net), batches(x, y, bs), check_deterministic=False)


def cl_row(spec, net, x, y, bs):
    import scipy.sparse.linalg as sla
    op = cl_operator(spec.get("curvature", "hessian"), net, x, y, bs)
    A = op.to_scipy()
    counter = Counter(A.matvec)
    L = sla.LinearOperator(A.shape, matvec=counter, dtype=A.dtype)
    v0 = np.random.RandomState(0).randn(A.shape[0]).astype(A.dtype)
    top = float(sla.eigsh(L, k=1, which="LA", tol=TOL, v0=v0, return_eigenvectors=False)[0])
    out = {"top": top, "trace": float("nan"), "se": float("nan"), "products": counter.n}
    if spec["task"] == "h_trace":                # Hutchinson by hand, for the standard error
        gen = torch.Generator().manual_seed(0)
        vals, chunk = [], spec["chunk"]
        for start in range(0, spec["probes"], chunk):
            k = min(chunk, spec["probes"] - start)
            Z = (torch.randint(0, 2, (A.shape[0], k), generator=gen) * 2 - 1).float()          # (P, k)
            vals.append((Z * (op @ Z)).sum(0).double())
        vals = torch.cat(vals)
        out.update(trace=float(vals.mean()), se=float(vals.std() / math.sqrt(len(vals))),
                   products=counter.n + spec["probes"])
    return out


# ============================================================================= reference, pilot, finite differences, costs
def reference(spec, net, x, y, bs):
    """Untimed: the top eigenvalue of each matrix to ~1e-8, hessian-eigenthings' smallest converging
    max_iter from its own start vector, and a pilot of plain trace probes (their spread)."""
    from landscape.curvature import algorithms
    from landscape.curvature import model as cm
    out = {}
    for curvature in spec["curvatures"]:
        n = __import__("copy").deepcopy(net)
        op = cm.curvature_operator(n, x, y, nn.CrossEntropyLoss(), bs, cm.covered_params(n), curvature)
        he_start = torch.randn(op.dim, generator=torch.Generator().manual_seed(0)).double()   # he.lanczos(seed=0)
        run = algorithms.LanczosRun(op, he_start, spec["ref_steps"])
        he_steps = None
        while run.k < run.steps:
            run.step()
            theta, S = run.ritz()
            residual = run.beta * abs(S[-1, -1])
            if he_steps is None and run.k >= 2 and residual < TOL * abs(theta[-1]):
                he_steps = run.k                    # he's own criterion: |beta_m s_m| < tol |theta|
            if he_steps is not None and residual < 1e-8 * abs(theta[-1]):
                break
        out[curvature] = {"top": float(theta[-1]), "he_steps": he_steps or run.k, "ref_steps": run.k,
                          "ref_residual": float(residual / abs(theta[-1]))}
        if curvature == "hessian" and "h_trace" in spec["tasks"]:
            gen = torch.Generator().manual_seed(1)
            Z = algorithms.rademacher(spec["pilot"], op.dim, "cpu", gen)
            vals = (Z.double() * op.matmat(Z).double()).sum(1)
            out["pilot"] = {"trace": float(vals.mean()), "std": float(vals.std())}
    return out


def finite_differences(spec, net, x, y, bs):
    """Relative error of finite-difference products against autograd's, on 3 random unit vectors."""
    from landscape.curvature import model as cm
    copy = __import__("copy")

    def operator(curvature, hvp="autograd"):
        n = copy.deepcopy(net)                      # the operator takes the parameters of its own copy
        return cm.curvature_operator(n, x, y, nn.CrossEntropyLoss(), bs, cm.covered_params(n), curvature, hvp)
    exact = operator("hessian")
    rows = {}
    g = torch.Generator().manual_seed(2)
    V = [v / v.norm() for v in torch.randn(3, exact.dim, generator=g)]
    want = [exact(v) for v in V]
    for name, curvature in (("ours, Hessian", "hessian"), ("ours, GGN (J v by differences)", "ggn")):
        fd = operator(curvature, "finite_difference")
        ref = want if curvature == "hessian" else [operator("ggn")(v) for v in V]
        t = time.perf_counter()
        got = [fd(v) for v in V]
        seconds = (time.perf_counter() - t) / 3
        rows[name] = {"errors": [float((a - b).norm() / b.norm()) for a, b in zip(got, ref)], "seconds": seconds,
                      "estimate": getattr(fd, "estimated_error", None)}
    if spec.get("peers"):
        try:
            op = he_operator("hessian_fd", copy.deepcopy(net), x, y, bs)
            he_ref = he_operator("hessian", copy.deepcopy(net), x, y, bs)
            t = time.perf_counter()
            got = [op.matvec(v) for v in V]
            seconds = (time.perf_counter() - t) / 3
            rows["hessian-eigenthings, Hessian (method='finite_difference')"] = {
                "errors": [float((a - he_ref.matvec(v)).norm() / he_ref.matvec(v).norm()) for a, v in zip(got, V)],
                "seconds": seconds, "estimate": None}
        except ImportError:
            pass
    return rows


def best_time(fn, reps):
    fn()
    times = []
    for _ in range(reps):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return min(times)


def product_costs(spec, net, x, y, bs):
    """Seconds of one forward pass of the set, and of each way of making a product, in those units."""
    from torch.func import functional_call, grad, jvp, linearize
    from landscape.curvature import model as cm
    copy = __import__("copy")
    reps = spec["reps"]
    crit = nn.CrossEntropyLoss()
    data = batches(x, y, bs)

    def forward():
        with torch.no_grad():
            for xb, _ in data:
                net(xb)
    f = best_time(forward, reps)
    out = {"forward s": f}
    v = torch.randn(sum(p.numel() for p in weights(net)), generator=torch.Generator().manual_seed(3))

    def timed_op(curvature, hvp="autograd", cache="auto"):
        n = copy.deepcopy(net)
        t = time.perf_counter()
        op = cm.curvature_operator(n, x, y, crit, bs, cm.covered_params(n), curvature, hvp, cache=cache)
        op(v)
        first = time.perf_counter() - t
        return first, best_time(lambda: op(v), reps), op

    first, per, op = timed_op("hessian")
    out["Hessian, reverse over reverse, graph kept (the tool's)"] = (per, first - per)
    scratch = timed_op("hessian", cache=False)
    out["gradient (one pass of first backwards)"] = (best_time(scratch[2].gradient, reps), 0.0)
    out["Hessian, reverse over reverse, from scratch"] = (scratch[1], 0.0)
    V4 = torch.randn(4, op.dim, generator=torch.Generator().manual_seed(4))
    out["Hessian, reverse over reverse, graph kept, 4 vectors per pass (per vector)"] = (
        best_time(lambda: op.matmat(V4), reps) / 4, 0.0)
    # forward over reverse: jvp of the gradient (torch.func), per batch
    fnet = copy.deepcopy(net).requires_grad_(False)   # torch.func takes the weights as inputs
    names = [n for n, p in fnet.named_parameters() if p.dim() > 1]
    params = {n: p.detach() for n, p in fnet.named_parameters() if n in names}
    tangent = dict(zip(names, [t.view_as(params[n]) for n, t in zip(names, v.split([params[n].numel() for n in names]))]))

    def batch_loss(p, xb, yb):
        return crit(functional_call(fnet, p, (xb,)), yb) * len(yb) / len(y)

    def for_scratch():
        for xb, yb in data:
            jvp(lambda p: grad(batch_loss)(p, xb, yb), (params,), (tangent,))
    out["Hessian, forward over reverse (jvp of grad), from scratch"] = (best_time(for_scratch, reps), 0.0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        t = time.perf_counter()
        lins = [linearize(lambda p, xb=xb, yb=yb: grad(batch_loss)(p, xb, yb), params)[1] for xb, yb in data]
        setup = time.perf_counter() - t
        out["Hessian, forward over reverse, linearize kept"] = (best_time(lambda: [j(tangent) for j in lins], reps),
                                                                setup)
        lins.clear()
    first, per, _ = timed_op("ggn")
    out["GGN, forward graph kept, jvp + closed-form H_out + vjp (the tool's)"] = (per, first - per)
    first, per, _ = timed_op("ef")
    out["empirical Fisher (the tool's: per-example gradients kept when they fit)"] = (per, first - per)
    first, per, _ = timed_op("hessian", "finite_difference")
    out["Hessian, finite differences of the gradient"] = (per, first - per)
    return out


def lm_memory(spec):
    """Peak memory above the start of one product (graph built + 1 product), Hessian or GGN, on charlm."""
    sys.path.insert(0, os.path.join(REPO, "examples"))
    import charlm
    from landscape.curvature import model as cm
    torch.manual_seed(0)
    net = charlm.model().eval()
    (x, y), _ = charlm.dataset()
    crit = charlm.loss()
    with torch.no_grad():
        net(x[:64])
    named = cm.covered_params(net)
    base = rss_kib()
    reset_peak()
    t = time.perf_counter()
    op = cm.curvature_operator(net, x, y, crit, 64, named, spec["curvature"], cache=spec["cache"])
    v = torch.randn(op.dim, generator=torch.Generator().manual_seed(0))
    op(v)
    seconds = time.perf_counter() - t
    return {"peak MB": (rss_kib("VmHWM") - base) / 1024, "seconds": seconds, "parameters": op.dim,
            "saved MB": getattr(op, "saved_bytes", 0) / 2 ** 20,
            "h_out": getattr(getattr(op, "out_hessian", None), "name", "")}


# ============================================================================= one row in a fresh process
RUNNERS = {"ours": ours, "he": he_row, "he++": he_row, "cl": cl_row}


def child(spec, queue):
    """Run one row: warm up, reset the peak-memory mark, time the task; put the result (or the error)."""
    try:
        torch.set_num_threads(spec["threads"])
        warnings.filterwarnings("ignore")
        from landscape.evaluation import fast_model
        fast_model.keep_freed_memory()                   # as the tool does for CPU curvature
        if spec["task"] == "lm_memory":
            queue.put(lm_memory(spec))
            return
        if spec["task"] in ("reference", "fd", "costs"):
            fn = {"reference": reference, "fd": finite_differences, "costs": product_costs}[spec["task"]]
            queue.put(fn(spec, *inputs(spec)))
            return
        fn = RUNNERS[spec["tool"]]
        warm = dict(spec, he_steps=min(spec["he_steps"], 3), probes=min(spec.get("probes", 3), 3),
                    trace_rel_se=None)
        warm_n = None if spec["model"] == "digits" else 4
        fn(warm, *inputs(spec, warm_n))                  # warm-up: imports, kernels, first jvp
        runs = []
        for _ in range(spec["rounds"]):
            net, x, y, bs = inputs(spec)
            base = rss_kib()
            exact_peak = reset_peak()
            t0, c0 = time.perf_counter(), time.process_time()
            res = fn(spec, net, x, y, bs)
            res.update(seconds=time.perf_counter() - t0, cpu=time.process_time() - c0,
                       peak_mb=(rss_kib("VmHWM") - base) / 1024 if exact_peak else float("nan"))
            runs.append(res)
            del net
        runs.sort(key=lambda r: r["seconds"])
        queue.put(runs[len(runs) // 2])
    except Exception as e:                               # noqa: BLE001  (reported in the table)
        queue.put({"error": f"{type(e).__name__}: {str(e).splitlines()[0][:160] if str(e) else ''}",
                   "trace": traceback.format_exc()[-1500:]})


def run_row(spec, timeout=6 * 3600):
    ctx = mp.get_context("spawn")
    queue = ctx.Queue()
    p = ctx.Process(target=child, args=(spec, queue))
    p.start()
    try:
        out = queue.get(timeout=timeout)
    except Exception:                                    # noqa: BLE001  the child died (memory?) or hung
        out = {"error": f"no result (exit code {p.exitcode})"}
    p.join(60)
    if "error" in out:
        print(f"  {spec.get('task')} {spec.get('tool', '')}: {out['error']}", file=sys.stderr)
    return out


# ============================================================================= tables
def peers_available():
    have = {}
    for tool, module in (("he", "hessian_eigenthings"), ("cl", "curvlinops")):
        try:
            __import__(module)
            have[tool] = True
        except ImportError:
            have[tool] = False
    return have


TOOL_NAMES = {"ours": "this tool", "he": "hessian-eigenthings 1.0", "he++": "hessian-eigenthings 1.0 (Hutch++)",
              "cl": "curvlinops 3.0 (+ SciPy eigsh)"}
TASK_NAMES = {"h_top": "Hessian: top eigenvalue", "h_trace": "Hessian: top eigenvalue + trace",
              "ggn_top": "GGN: top eigenvalue", "ef_top": "empirical Fisher: top eigenvalue"}
TASK_MATRIX = {"h_top": "hessian", "h_trace": "hessian", "ggn_top": "ggn", "ef_top": "ef"}


def fmt(v, spec=".4g"):
    return "-" if v is None or (isinstance(v, float) and not math.isfinite(v)) else format(v, spec)


def print_main_table(model, rows, ref):
    print("\n| task | tool | top eigenvalue | rel. error | trace +- s.e. | products | wall s | CPU s | "
          "peak MB | speed-up (faster peer / this row) |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for task, by_tool in rows.items():
        lam = ref[TASK_MATRIX[task]]["top"]
        peers = [r["seconds"] for tool, r in by_tool.items() if tool != "ours" and "error" not in r]
        fastest = min(peers) if peers else None
        for tool, r in by_tool.items():
            if "error" in r:
                print(f"| {TASK_NAMES[task]} | {TOOL_NAMES[tool]} | failed: {r['error']} | | | | | | | |")
                continue
            trace = f"{r['trace']:.5g} +- {r['se']:.2g}" if math.isfinite(r.get("trace", float("nan"))) else "-"
            speed = f"{fastest / r['seconds']:.2f}x" if fastest else "-"
            print(f"| {TASK_NAMES[task]} | {TOOL_NAMES[tool]} | {r['top']:.7g} | {abs(r['top'] / lam - 1):.1e} | {trace} "
                  f"| {r['products']} | {r['seconds']:.2f} | {r['cpu']:.2f} | {fmt(r['peak_mb'], '.0f')} | {speed} |")


def describe(model, spec_n, ref):
    name = ("digits_cnn (trained), " if model == "digits" else "ResNet-18 (seeded init), ") + \
        f"{spec_n} {'digits' if model == 'digits' else 'random CIFAR-shaped images'}"
    lines = [f"reference top eigenvalue of the {k}: {v['top']:.8g} ({v['ref_steps']} Lanczos steps, residual "
             f"{v['ref_residual']:.1e}); hessian-eigenthings given max_iter={v['he_steps']}"
             for k, v in ref.items() if k != "pilot"]
    if "pilot" in ref:
        lines.append(f"pilot: {ref['pilot']['std']:.3g} per-probe spread of plain Hutchinson, trace about "
                     f"{ref['pilot']['trace']:.4g}")
    return name, lines


def cpu_name():
    try:
        with open("/proc/cpuinfo") as f:
            return next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    except (OSError, StopIteration):
        return platform.processor() or platform.machine()


def bench_model(cfg, model, checkpoint, have):
    n = {"digits": 256 if cfg.quick else 1437, "resnet18": 16 if cfg.quick else 256}[model]
    base = {"model": model, "n": n, "checkpoint": checkpoint, "threads": cfg.threads,
            "rounds": cfg.rounds if model == "digits" else 1}
    curvatures = [TASK_MATRIX[t] for t in cfg.tasks if t in TASK_MATRIX]
    curvatures = list(dict.fromkeys(curvatures))
    probes = cfg.trace_probes if model == "digits" else cfg.trace_probes_resnet
    t0 = time.perf_counter()
    ref = {}
    if curvatures:
        ref = run_row(dict(base, task="reference", curvatures=curvatures, tasks=cfg.tasks,
                           ref_steps=60 if model == "digits" else (25 if cfg.quick else 40), pilot=10))
        if "error" in ref:
            print(f"reference failed: {ref['error']}\n{ref.get('trace', '')}", file=sys.stderr)
            return
    name, lines = describe(model, n, ref)
    print(f"\n### {name}\n", flush=True)
    rows = {}
    for task in [t for t in cfg.tasks if t in TASK_MATRIX]:
        matrix = TASK_MATRIX[task]
        spec = dict(base, task=task, curvature=matrix, he_steps=ref[matrix]["he_steps"])
        if task == "h_trace":
            target = ref["pilot"]["std"] / math.sqrt(probes)
            rel_se = target / abs(ref["pilot"]["trace"])
            spec.update(trace_rel_se=rel_se, probes=probes, chunk=probes if model == "digits" else 2)
            share = f"{rel_se:.2%} of the trace" if rel_se < 1 else "more than the trace itself: the trace is lost in its noise"
            lines.append(f"trace target: the s.e. of {probes} plain probes, about {target:.3g} ({share}); the peers "
                         "take those probes, this tool stops when its s.e. reaches the target")
        tools = ["ours"] + [t for t in ("he", "he++", "cl") if have.get(t.rstrip("+")) and
                            (t != "he++" or task == "h_trace")]
        if task == "ef_top" and model != "digits":
            tools = [t for t in tools if t != "he"]      # per-sample gradients of 11M weights x 64: out of memory
        rows[task] = {tool: run_row(dict(spec, tool=tool)) for tool in tools}
        print(f"  {task} done ({time.perf_counter() - t0:.0f} s, load {os.getloadavg()[0]:.1f})", file=sys.stderr,
              flush=True)
    if rows:
        print_main_table(model, rows, ref)
    for line in lines:
        print(f"\n{line}")
    if "fd" in cfg.tasks:
        fd = run_row(dict(base, task="fd", peers=have.get("he")))
        if "error" not in fd:
            print("\n| finite-difference product | rel. error vs autograd (3 unit vectors) | estimated error "
                  "(first product) | s per product |\n|---|---|---|---|")
            for label, r in fd.items():
                print(f"| {label} | {', '.join(f'{e:.1e}' for e in r['errors'])} | {fmt(r['estimate'], '.1e')} "
                      f"| {r['seconds']:.3f} |")
    if "costs" in cfg.tasks:
        c = run_row(dict(base, task="costs", reps=3 if model == "digits" else 1))
        if "error" not in c:
            f = c.pop("forward s")
            print(f"\n| product (one vector, the whole set) | forward passes per product | set-up, forward passes |\n"
                  f"|---|---|---|\n| forward pass of the set ({f:.3f} s) | 1 | - |")
            for label, (per, setup) in c.items():
                print(f"| {label} | {per / f:.1f} | {setup / f:.0f} |")
    print(f"\n({model}: {time.perf_counter() - t0:.0f} s)", flush=True)


def bench_lm_memory(cfg):
    print("\n### Peak memory of one product, character-level LM (examples/charlm.py, 113,664 parameters, "
          "256 x 64 characters, batches of 64, V = 74)\n")
    print("| product | peak MB above the start | autograd's saved tensors, MB | s (graph + 1 product) | H_out |")
    print("|---|---|---|---|---|")
    for curvature in ("hessian", "ggn"):
        for cache in (True, False):
            r = run_row({"task": "lm_memory", "curvature": curvature, "cache": cache, "threads": cfg.threads})
            if "error" not in r:
                print(f"| {curvature}, {'graph kept' if cache else 'batch by batch'} | {r['peak MB']:.0f} | "
                      f"{r['saved MB']:.0f} | {r['seconds']:.2f} | {r['h_out'] or '-'} |")


def build_parser():
    p = argparse.ArgumentParser(description="Curvature: this tool vs hessian-eigenthings 1.0 and curvlinops 3.0.")
    p.add_argument("--quick", action="store_true", help="1 epoch, 256 digits, ResNet-18 on 16 images")
    p.add_argument("--models", default="digits,resnet18", help="digits,resnet18 (default: both)")
    p.add_argument("--tasks", default="h_top,h_trace,ggn_top,ef_top,fd,costs,lm_memory",
                   help=f"comma-separated from {','.join(TASKS)} (default: all)")
    p.add_argument("--threads", type=int, default=2, help="torch threads in every row (default: 2)")
    p.add_argument("--rounds", type=int, default=3, help="timed runs per digits row, median reported (default: 3)")
    p.add_argument("--trace_probes", type=int, default=100,
                   help="digits: the peers' Hutchinson probes, whose standard error is the target (default: 100)")
    p.add_argument("--trace_probes_resnet", type=int, default=10,
                   help="ResNet-18: the same (default: 10; one probe is a full product on 256 images)")
    p.add_argument("--workdir", default=None, help="where to train digits_cnn (default: a temp folder)")
    return p


def main(argv=None):
    cfg = build_parser().parse_args(argv)
    cfg.tasks = [t for t in cfg.tasks.split(",") if t]
    bad = [t for t in cfg.tasks if t not in TASKS] + [m for m in cfg.models.split(",") if m not in MODELS]
    if bad:
        raise SystemExit(f"unknown task or model: {', '.join(bad)}")
    if cfg.quick:
        cfg.rounds = 1
    have = peers_available()
    print(f"# bench/bench_hessian.py{' --quick' if cfg.quick else ''}: {cpu_name()} ({os.cpu_count()} cores), torch "
          f"{torch.__version__}, {cfg.threads} threads per row, load average at start {os.getloadavg()[0]:.1f}; "
          f"peers: {', '.join(k for k, v in have.items() if v) or 'none installed'}")
    t0 = time.perf_counter()
    models = cfg.models.split(",") if set(cfg.tasks) - {"lm_memory"} else []
    with tempfile.TemporaryDirectory() as tmp:
        checkpoint = None
        if "digits" in models:
            checkpoint = train_digits_cnn(cfg.workdir or tmp, 1 if cfg.quick else 20, cfg.threads)
        for model in models:
            bench_model(cfg, model, checkpoint, have)
    if "lm_memory" in cfg.tasks:
        bench_lm_memory(cfg)
    print(f"\nTotal {time.perf_counter() - t0:.0f} s; load average at the end {os.getloadavg()[0]:.1f}.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
