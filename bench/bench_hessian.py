"""Benchmark: the curvature summary (top eigenvalue, trace +- s.e., smallest eigenvalue) against PyHessian.

    python bench/bench_hessian.py            # full run: digits_cnn trained 20 epochs, 3 rounds (minutes)
    python bench/bench_hessian.py --quick    # 1 epoch, 256 images, short runs: a smoke test (< 30 s)

A digits_cnn is trained on the digits set with the project's trainer, in-process; the Hessian is that
of the mean cross-entropy over the 1,437 training images, in eval mode, w.r.t. all parameters (what
PyHessian takes: every parameter with requires_grad). Each round runs PyHessian (`pip install -r
bench/requirements.txt`), then our variants, each on a fresh copy of the model, with the same thread
count. The table gives medians over the rounds of wall time and of the process's CPU time (with one
thread, CPU time does not count waiting for the cores of a busy machine).

PyHessian: `hessian(model, nn.CrossEntropyLoss(), data=(x, y), cuda=False)` (one batch, its gradient
graph kept), `eigenvalues(top_n=1)` (power iteration, stopping at a relative change < 1e-3) and
`trace(maxIter=100)`, whose own rule (tol=1e-3 on the running mean) usually stops it after 10 to 30
samples; the full-length row passes tol=0. Ours: hess_vec_prod.make_hvp (batch 128, cached graph
unless marked), lanczos (top only, or top and smallest, default tolerance), trace_estimate (one probe
per pass on CPU unless marked), stopped once its standard error is at most the relative standard
error of that round's full-length PyHessian trace; "deflated" takes the Lanczos basis Q exactly
(tr(Q H Q^T)) and samples the rest. The script prints markdown and asserts nothing about time.
"""
import argparse
import contextlib
import gc
import io
import os
import platform
import sys
import tempfile
import time
import warnings

import numpy as np
import torch
import torch.nn as nn

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)

import dataloader  # noqa: E402
import hess_vec_prod  # noqa: E402
import model_loader  # noqa: E402
from cifar10 import main as trainer  # noqa: E402


# ----------------------------------------------------------------------------- inputs
def trained_digits_cnn(folder, epochs, threads):
    """Train digits_cnn with the project's trainer (batch 64, lr 0.1); returns its last checkpoint."""
    argv = ["--dataset", "digits", "--model", "digits_cnn", "--epochs", str(epochs), "--batch_size", "64",
            "--lr", "0.1", "--save_epoch", str(epochs), "--save", folder, "--threads", str(threads)]
    with contextlib.redirect_stdout(io.StringIO()):
        assert trainer.main(argv) == 0
    run = trainer.name_save_folder(trainer.build_parser().parse_args(argv))
    return os.path.join(folder, run, f"model_{epochs}.t7")


def load_inputs(folder, epochs, n_images, threads):
    """(checkpoint path, x (N, 1, 8, 8), y (N,)): the digits training split, or its first n_images."""
    path = trained_digits_cnn(folder, epochs, threads)
    data = dataloader.load_tensors("digits")
    return path, data.train_x[:n_images], data.train_y[:n_images]


# ----------------------------------------------------------------------------- the two sides
def pyhessian_summary(path, x, y, eig_iters, trace_iters, trace_tol, seed):
    """PyHessian's top eigenvalue and trace on a fresh model: a dict for the table."""
    import pyhessian  # noqa: F401  (the package exports the class `hessian`, hiding its module)
    pyh_module = sys.modules["pyhessian.hessian"]
    counted = {"n": 0}
    product = pyh_module.hessian_vector_product

    def counting(*args, **kwargs):
        counted["n"] += 1
        return product(*args, **kwargs)
    net = model_loader.load("digits", "digits_cnn", path)
    torch.manual_seed(seed)                                   # PyHessian draws from the global generator
    pyh_module.hessian_vector_product = counting
    try:
        t0, c0 = time.perf_counter(), time.process_time()
        h = pyh_module.hessian(net, nn.CrossEntropyLoss(), data=(x, y), cuda=False)
        top = h.eigenvalues(maxIter=eig_iters, top_n=1)[0][0]
        samples = np.array(h.trace(maxIter=trace_iters, tol=trace_tol))
        seconds, cpu = time.perf_counter() - t0, time.process_time() - c0
    finally:
        pyh_module.hessian_vector_product = product
        for p in net.parameters():      # backward(create_graph=True) left a cycle through .grad: break it
            p.grad = None
        gc.collect()
    se = samples.std(ddof=1) / np.sqrt(len(samples))
    return {"top": top, "min": float("nan"), "trace": samples.mean(), "se": se, "samples": len(samples),
            "products": counted["n"], "seconds": seconds, "cpu": cpu}


def our_summary(path, x, y, want_min, deflate, rel_se, max_samples, batch_size, max_iter, cache=True, block=None):
    """Our top eigenvalue (and smallest), and the trace to rel_se, on a fresh model: a dict for the table."""
    net = model_loader.load("digits", "digits_cnn", path)
    t0, c0 = time.perf_counter(), time.process_time()
    op = hess_vec_prod.make_hvp(net, x, y, batch_size=batch_size, params=list(net.parameters()),
                                criterion=nn.CrossEntropyLoss(), cache=cache)
    r = hess_vec_prod.lanczos(op, top_k=1, max_iter=max_iter, want_min=want_min, keep_basis=deflate)
    trace, se, n = hess_vec_prod.trace_estimate(op, max_samples=max_samples, rel_se=rel_se, block=block,
                                                deflate=r if deflate else None)
    seconds, cpu = time.perf_counter() - t0, time.process_time() - c0
    return {"top": r.max_eig, "min": r.min_eig, "trace": trace, "se": se, "samples": n,
            "products": op.products, "seconds": seconds, "cpu": cpu, "cached": op.cached}


# ----------------------------------------------------------------------------- rounds and table
def variants(quick):
    """(label, keyword arguments of our_summary) for each of our rows."""
    rows = [("ours: top + trace, deflated", dict(want_min=False, deflate=True)),
            ("ours: top + smallest + trace, deflated", dict(want_min=True, deflate=True)),
            ("ours: top + trace, plain Hutchinson", dict(want_min=False, deflate=False)),
            ("ours: top + trace, plain Hutchinson, blocks of 8", dict(want_min=False, deflate=False, block=8)),
            ("ours: top + smallest + trace, deflated, cache=False", dict(want_min=True, deflate=True, cache=False))]
    return [rows[0], rows[1], rows[3], rows[4]] if quick else rows


def warm_up(path, x, y, batch_size):
    """One product at each batch shape either side uses, so neither pays oneDNN's first-call set-up."""
    net = model_loader.load("digits", "digits_cnn", path)
    for bs in (len(y), batch_size):
        op = hess_vec_prod.make_hvp(net, x, y, batch_size=bs, params=list(net.parameters()), cache=True)
        op(torch.ones(op.dim))


def run_rounds(cfg, path, x, y):
    """{label: [dict per round]}; the sides alternate within each round."""
    warm_up(path, x, y, cfg.batch_size)
    results = {}
    have_pyhessian = pyhessian_available()
    for rnd in range(cfg.rounds):
        rel_se = None
        if have_pyhessian:
            for label, tol in (("PyHessian, trace(maxIter=%d) (default tol=1e-3)" % cfg.trace_iters, 1e-3),
                               ("PyHessian, trace(maxIter=%d, tol=0)" % cfg.trace_iters, 0.0)):
                res = pyhessian_summary(path, x, y, cfg.eig_iters, cfg.trace_iters, tol, seed=rnd)
                results.setdefault(label, []).append(res)
            rel_se = res["se"] / abs(res["trace"])            # the full-length PyHessian trace's accuracy
        for label, kwargs in variants(cfg.quick):
            res = our_summary(path, x, y, rel_se=rel_se, max_samples=cfg.trace_iters, batch_size=cfg.batch_size,
                              max_iter=cfg.max_iter, **kwargs)
            results.setdefault(label, []).append(res)
        print(f"round {rnd + 1}/{cfg.rounds} done (load average {os.getloadavg()[0]:.1f})", file=sys.stderr)
    return results


def pyhessian_available():
    try:
        import pyhessian  # noqa: F401
        return True
    except ImportError:
        print("pyhessian is not installed (pip install -r bench/requirements.txt): our rows only", file=sys.stderr)
        return False


def median_row(runs):
    """Medians of the numeric fields over rounds (the eigenvalues and trace of the median-time run)."""
    by_time = sorted(runs, key=lambda r: r["seconds"])
    mid = by_time[len(by_time) // 2]
    med = {k: float(np.median([r[k] for r in runs])) for k in ("seconds", "cpu", "samples", "products")}
    return dict(mid, **med)


def print_table(results):
    """The markdown table; speed-ups are PyHessian's medians (full-length trace) over this row's."""
    rows = {label: median_row(runs) for label, runs in results.items()}
    ref = next((r for label, r in rows.items() if "tol=0" in label), None)
    print("| method | top eigenvalue | smallest eigenvalue | trace +- s.e. | trace samples | products "
          "| wall s | CPU s | speed-up, wall | speed-up, CPU |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for label, r in rows.items():
        smallest = "-" if np.isnan(r["min"]) else f"{r['min']:.4g}"
        samples, products = round(r["samples"]), round(r["products"])
        wall = f"{ref['seconds'] / r['seconds']:.2f}x" if ref else "-"
        cpu = f"{ref['cpu'] / r['cpu']:.2f}x" if ref else "-"
        print(f"| {label} | {r['top']:.5f} | {smallest} | {r['trace']:.4g} +- {r['se']:.2g} | {samples} "
              f"| {products} | {r['seconds']:.2f} | {r['cpu']:.2f} | {wall} | {cpu} |")


def reference_eigenvalues(path, x, y, batch_size):
    """(top, smallest) eigenvalue by Lanczos at tol 1e-8, to judge each row's top eigenvalue."""
    net = model_loader.load("digits", "digits_cnn", path)
    op = hess_vec_prod.make_hvp(net, x, y, batch_size=batch_size, params=list(net.parameters()),
                                criterion=nn.CrossEntropyLoss())
    r = hess_vec_prod.lanczos(op, tol=1e-8, max_iter=200)
    return r.max_eig, r.min_eig


def cpu_name():
    """The CPU model from /proc/cpuinfo, else what platform knows."""
    try:
        with open("/proc/cpuinfo") as f:
            return next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    except (OSError, StopIteration):
        return platform.processor() or platform.machine()


def build_parser():
    p = argparse.ArgumentParser(description="Hessian curvature summary: hess_vec_prod vs PyHessian.")
    p.add_argument("--quick", action="store_true", help="1 epoch, 256 images, short runs, 1 round")
    p.add_argument("--rounds", type=int, default=None, help="rounds, medians reported (default: 3; quick: 1)")
    p.add_argument("--threads", type=int, default=2, help="torch threads for both sides (default: 2)")
    p.add_argument("--batch_size", type=int, default=128, help="our batch size (as the CLI's default) (default: 128)")
    p.add_argument("--workdir", default=None, help="where to train the model (default: a temp folder)")
    return p


def main(argv=None):
    cfg = build_parser().parse_args(argv)
    cfg.rounds = cfg.rounds or (1 if cfg.quick else 3)
    epochs, n_images = (1, 256) if cfg.quick else (20, None)
    cfg.eig_iters, cfg.trace_iters, cfg.max_iter = (10, 12, 20) if cfg.quick else (100, 100, 100)
    torch.set_num_threads(cfg.threads)
    warnings.filterwarnings("ignore", message="Using backward\\(\\) with create_graph=True")   # PyHessian's own
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        path, x, y = load_inputs(cfg.workdir or tmp, epochs, n_images, cfg.threads)
        print(f"trained digits_cnn for {epochs} epochs in {time.perf_counter() - t0:.0f} s", file=sys.stderr)
        results = run_rounds(cfg, path, x, y)
        top, smallest = reference_eigenvalues(path, x, y, cfg.batch_size)
    print(f"\ndigits_cnn ({sum(p.numel() for p in model_loader.build('digits_cnn').parameters())} parameters), "
          f"{len(y)} digits, {cpu_name()} ({os.cpu_count()} cores), torch {torch.__version__}, {cfg.threads} "
          f"threads, median of {cfg.rounds} round(s), load average {os.getloadavg()[0]:.1f}\n")
    print_table(results)
    print(f"\nReference (Lanczos, tol 1e-8): top eigenvalue {top:.7g}, smallest eigenvalue {smallest:.5g}.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
