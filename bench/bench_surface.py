"""Benchmark: seconds per grid point through the real engine, side by side with yardsticks in the same run.

    python bench/bench_surface.py                        # full run (15 to 20 minutes on 2 CPU cores)
    python bench/bench_surface.py --quick                # a few points of every row, to catch breakage (CI)
    python bench/bench_surface.py --sections gpu --deadline 300          # the GPU rows alone, within 300 s
    python bench/bench_surface.py --quick --sections gpu --gpu_on_cpu    # the GPU rows' code, tiny, on the CPU

Every engine figure comes from plot_surface.run(): the same code path as the command line, with
the direction file, the surface file and its periodic atomic writes. Yardsticks are timed in the
same process, alternated with the engine runs, and medians are reported, so each ratio is measured
side by side. The script prints markdown tables and asserts nothing about time.

Every row starts from PyTorch's TF32 switches as they were when the script started (a snapshot of
torch.backends.cuda.matmul.allow_tf32 and torch.backends.cudnn.allow_tf32, restored before each
row), so no row measures with a switch that an earlier row set.

Sections (--sections): engine (ResNet-20 and digits_mlp against a plain eager loop), sgemm (the
engine's GFLOP/s against torch.matmul's), peer (against loss-landscapes' random_plane), batch (per
point against --batch_size), cpu_precision (fp32 against bf16 on the CPU), precision (largest
|loss - loss_fp32| per --precision), fastpaths, points_per_pass, overhead, end_to_end, and gpu
(ResNet-56 on 50,000 CIFAR-shaped images: every --precision with and without --compile, the plain
loop, 4 MPI ranks on one card, --batch_size auto against 2048, and the precision errors; skipped
without CUDA unless --gpu_on_cpu).
"""
import argparse
import contextlib
import functools
import json
import io
import os
import platform
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time

import numpy as np
import torch
import torch.nn.functional as F

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)

import dataloader  # noqa: E402
from landscape import evaluation  # noqa: E402
import h5_util  # noqa: E402
import model_loader  # noqa: E402
import mpi4pytorch  # noqa: E402
import plot_surface  # noqa: E402
from cifar10 import main as trainer  # noqa: E402

FILTER = ["--xnorm", "filter", "--xignore", "biasbn", "--ynorm", "filter", "--yignore", "biasbn"]
SECTIONS = ("engine", "sgemm", "peer", "batch", "cpu_precision", "precision", "fastpaths", "points_per_pass",
            "overhead", "end_to_end", "gpu")
GPU_TARGETS = {"default": 0.30, "bf16": 0.12, "fp32": 0.8}  # s/point, ResNet-56 on 50,000 images (the issue)
SGEMM_N = 2048                     # the matmul yardstick: SGEMM_N x SGEMM_N float32
SGEMM_TARGET = 0.8                 # the engine's GFLOP/s over torch.matmul's (the issue)
PEER_TARGET = 2.0                  # loss-landscapes' s/point over ours (the issue)


# ----------------------------------------------------------------------------- every row from PyTorch's defaults
TF32_AT_START = (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32)


def snapshot_tf32():
    """Remember PyTorch's TF32 switches as they are now (call once, before any row)."""
    global TF32_AT_START
    TF32_AT_START = (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32)
    return TF32_AT_START


def restore_tf32():
    """Put the TF32 switches back to the snapshot: every row begins here."""
    torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = TF32_AT_START


# ----------------------------------------------------------------------------- time limits
class RowTimeout(Exception):
    """A row ran past its time limit."""


class Budget:
    """The run's deadline (seconds from start, or None): rows are skipped or stopped to keep it."""

    def __init__(self, seconds):
        self.end = None if seconds is None else time.monotonic() + seconds

    def left(self):
        return float("inf") if self.end is None else self.end - time.monotonic()

    def allows(self, seconds):
        return self.left() >= seconds

    @contextlib.contextmanager
    def limit(self, seconds):
        """Raise RowTimeout in this (main) thread after min(seconds, time left)."""
        seconds = min(seconds, self.left())
        if seconds == float("inf"):
            yield
            return

        def stop(_signum, _frame):
            raise RowTimeout(f"stopped at its {seconds:.0f} s limit")
        old = signal.signal(signal.SIGALRM, stop)
        signal.setitimer(signal.ITIMER_REAL, max(seconds, 0.01))
        try:
            yield
        finally:
            signal.setitimer(signal.ITIMER_REAL, 0)
            signal.signal(signal.SIGALRM, old)


# ----------------------------------------------------------------------------- fixtures made on the fly
def fake_cifar(root, n_train, n_test=100):
    """A CIFAR-10-format folder (the real pickle layout), read later by the real loader; written once."""
    if not os.path.exists(os.path.join(root, "cifar-10-batches-py", "test_batch")):
        subprocess.run([sys.executable, os.path.join(REPO, "tests", "fake_cifar10.py"), root,
                        "--train", str(n_train), "--test", str(n_test)], check=True)
    return root


def random_checkpoint(model, path, seed=0):
    """A model with its default random initialisation (trained CIFAR nets are not available here)."""
    if not os.path.exists(path):
        torch.manual_seed(seed)
        torch.save({"state_dict": model_loader.build(model).state_dict(), "epoch": 0, "acc": 0.0}, path)
    return path


def trained_digits(model, folder, epochs=8):
    """Train a digits model with the real trainer (on the CPU); returns its last checkpoint."""
    argv = ["--dataset", "digits", "--model", model, "--epochs", str(epochs), "--batch_size", "64",
            "--save_epoch", str(epochs), "--save", folder, "--device", "cpu"]
    with contextlib.redirect_stdout(io.StringIO()):
        trainer.main(argv)
    return os.path.join(folder, trainer.name_save_folder(trainer.build_parser().parse_args(argv)), f"model_{epochs}.t7")


class Inputs:
    """The models and data the sections share, each made on first use."""

    def __init__(self, quick, work):
        self.quick, self.work = quick, work

    @functools.cached_property
    def cnn(self):
        return trained_digits("digits_cnn", os.path.join(self.work, "nets"), 3 if self.quick else 8)

    @functools.cached_property
    def mlp(self):
        return trained_digits("digits_mlp", os.path.join(self.work, "nets"), 3 if self.quick else 8)

    @functools.cached_property
    def r20(self):
        """(ResNet-20 checkpoint, CIFAR-shaped folder, images): 2,000 images, 64 in --quick."""
        n = 64 if self.quick else 2000
        return (random_checkpoint("resnet20", os.path.join(self.work, "resnet20.t7")),
                fake_cifar(os.path.join(self.work, f"cifar{n}"), n), n)


# ----------------------------------------------------------------------------- measurements
AUTO_BATCHES = []  # what --batch_size auto chose, in order (recorded around evaluation.auto_batch_size)


def record_auto_batch_sizes():
    original = evaluation.auto_batch_size

    def recorded(*args, **kwargs):
        size = original(*args, **kwargs)
        AUTO_BATCHES.append(int(size))
        return size
    evaluation.auto_batch_size = recorded


def engine(args, workdir):
    """Run plot_surface in-process on a fresh surface file; returns (seconds per point, cfg).
    cfg.compile_seconds: what torch.compile took (None without --compile); cfg.auto_batch: the batch
    --batch_size auto chose (None when a size was given)."""
    restore_tf32()
    surf = os.path.join(workdir, f"surf_{time.perf_counter_ns()}.h5")
    cfg = plot_surface.parse_config(args + ["--surf_file", surf])
    out = io.StringIO()
    before = len(AUTO_BATCHES)
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(io.StringIO()):
        plot_surface.run(cfg, None, 0, 1)
    m = re.search(r"torch.compile took ([\d.]+) s", out.getvalue())
    cfg.compile_seconds = float(m.group(1)) if m else None
    cfg.auto_batch = AUTO_BATCHES[before] if len(AUTO_BATCHES) > before else None
    return cfg.stats["sec_per_point"], cfg


def seconds_per_point(args, workdir):
    return engine(args, workdir)[0]


def engine_maps(args, workdir):
    """The engine's train_loss map for `args` (for the precision comparisons)."""
    _, cfg = engine(args, workdir)
    return h5_util.read_surface(cfg.surf_file).values["train_loss"]


def plain_loop(model, model_file, dataset, datapath, device, batch_size, reps, n_train=None):
    """The yardstick: eager forward passes over data already on the device, fp32, no tricks."""
    restore_tf32()
    net = model_loader.load(dataset, model, model_file).to(device)
    data = dataloader.load_tensors(dataset, datapath)
    x, y = data.train_x[:n_train].to(device), data.train_y[:n_train].to(device)
    torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = False

    def once():
        with torch.no_grad():
            total = torch.zeros((), device=device)
            for s in range(0, len(y), batch_size):
                total += F.cross_entropy(net(x[s:s + batch_size]), y[s:s + batch_size], reduction="sum")
            return total.item() / len(y)  # .item() waits for the device

    try:
        once()
        times = []
        for _ in range(reps):
            t0 = time.perf_counter()
            once()
            times.append(time.perf_counter() - t0)
    finally:
        restore_tf32()
    return float(np.median(times))


def side_by_side(engine_args, plain_kwargs, workdir, rounds, plain_batches):
    """Alternate engine runs and plain loops; medians of each, so drifts in machine speed cancel."""
    eng, plain = [], {b: [] for b in plain_batches}
    for _ in range(rounds):
        for b in plain_batches:
            plain[b].append(plain_loop(batch_size=b, reps=1, **plain_kwargs))
        eng.append(engine(engine_args, workdir)[0])
    return float(np.median(eng)), {b: float(np.median(v)) for b, v in plain.items()}


def alternate(variants, rounds):
    """{name: median seconds} of `variants` ({name: fn() -> seconds}), run in turn `rounds` times."""
    times = {name: [] for name in variants}
    for _ in range(rounds):
        for name, fn in variants.items():
            times[name].append(fn())
    return {name: float(np.median(v)) for name, v in times.items()}


def sgemm_gflops(n=SGEMM_N, reps=5):
    """This machine's float32 matmul rate: median of `reps` n x n products (after one warm-up)."""
    a, b = torch.randn(n, n), torch.randn(n, n)
    torch.matmul(a, b)
    times = []
    for _ in range(reps):
        t0 = time.perf_counter()
        torch.matmul(a, b)
        times.append(time.perf_counter() - t0)
    return 2.0 * n ** 3 / float(np.median(times)) / 1e9


def count_macs(net, example):
    """Multiply-adds of one forward pass per sample, counted with forward hooks on conv and linear layers."""
    macs = [0]

    def conv(m, _args, out):
        macs[0] += out.numel() * (m.in_channels // m.groups) * int(np.prod(m.kernel_size))

    def linear(m, _args, out):
        macs[0] += out.numel() * m.in_features

    handles = [m.register_forward_hook(conv) for m in net.modules() if isinstance(m, torch.nn.Conv2d)]
    handles += [m.register_forward_hook(linear) for m in net.modules() if isinstance(m, torch.nn.Linear)]
    try:
        with torch.no_grad():
            net.eval()(example)
    finally:
        for h in handles:
            h.remove()
    return macs[0] / len(example)


def cli(args, workdir, ranks=1, timeout=600):
    """Run plot_surface.py as a process (under mpiexec when ranks > 1); returns (stdout, wall seconds)."""
    cmd = [sys.executable, os.path.join(REPO, "plot_surface.py"), *args]
    if ranks > 1:
        cmd = [mpiexec(), "-n", str(ranks), "--oversubscribe", *cmd[:2], "--mpi", *args]
    env = dict(os.environ, OMPI_ALLOW_RUN_AS_ROOT="1", OMPI_ALLOW_RUN_AS_ROOT_CONFIRM="1")
    t0 = time.perf_counter()
    r = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=workdir, timeout=timeout)
    wall = time.perf_counter() - t0
    if r.returncode != 0:
        raise RuntimeError(f"plot_surface.py exited {r.returncode}: {r.stderr.strip()[-300:]}")
    return r.stdout, wall


def computed(stdout):
    """(points, seconds, seconds per point) from the engine's 'computed N points in S s (R points/s' line
    (per point from the rate, which carries more digits than S)."""
    m = re.search(r"computed (\d+) points in ([\d.]+) s \(([\d.]+) points/s", stdout)
    if not m:
        raise RuntimeError(f"no 'computed N points' line in: {stdout.strip()[-200:]!r}")
    return int(m.group(1)), float(m.group(2)), 1.0 / float(m.group(3))


def mpiexec():
    local = os.path.join(os.path.dirname(sys.executable), "mpiexec")
    return local if os.path.exists(local) else shutil.which("mpiexec")


# ----------------------------------------------------------------------------- report helpers
def table(title, header, rows):
    print(f"\n### {title}\n")
    print("| " + " | ".join(header) + " |")
    print("|" + "---|" * len(header))
    for r in rows:
        print("| " + " | ".join(str(c) for c in r) + " |")
    sys.stdout.flush()


def ms(sec):
    if sec is None or not np.isfinite(sec):
        return "-"
    return f"{sec * 1e3:.3g} ms" if sec < 1 else f"{sec:.3g} s"


def first_line(e):
    return (str(e).strip().splitlines() or [type(e).__name__])[0][:160]


# ----------------------------------------------------------------------------- CPU sections
def engine_rows(q, inp):
    rows = []
    base = ["--threads", str(torch.get_num_threads())]
    # digits_mlp, CPU
    cheap = ["--x=-1:1:11", "--y=-1:1:11"] if q else ["--x=-1:1:41", "--y=-1:1:41"]  # enough points to amortise writes
    args = ["--dataset", "digits", "--model", "digits_mlp", "--model_file", inp.mlp, *cheap, *FILTER, *base,
            "--batch_size", "2048"]
    e, p = side_by_side(args, dict(model="digits_mlp", model_file=inp.mlp, dataset="digits", datapath="",
                                   device="cpu"), inp.work, 1 if q else 3, [2048])
    rows.append(["digits_mlp, 1,437 digits", "cpu", ms(e), ms(p[2048]), f"{e / p[2048]:.2f}", "-", "-"])
    # ResNet-20 on 2,000 CIFAR-shaped images, CPU, default flags (--batch_size auto)
    r20, cifar, n = inp.r20
    args = ["--model", "resnet20", "--model_file", r20, "--datapath", cifar, "--x=-1:1:2",
            "--y=-1:1:1" if q else "--y=-1:1:2", *FILTER, *base]
    batches = [2048, 64, 128, 500]
    e, p = side_by_side(args, dict(model="resnet20", model_file=r20, dataset="cifar10", datapath=cifar, device="cpu"),
                        inp.work, 1 if q else 3, batches)
    best = min(batches, key=lambda b: p[b])
    rows.append([f"ResNet-20, {n:,} CIFAR-shaped", "cpu", ms(e), ms(p[2048]), f"{e / p[2048]:.2f}",
                 f"{ms(p[best])} (batch {best})", f"{e / p[best]:.2f}"])
    rows.append(["ResNet-56, 50,000 CIFAR-shaped", "gpu",
                 "see the GPU section" if torch.cuda.is_available() else "skipped: no CUDA GPU here", "", "", "", ""])
    table("Seconds per grid point: the engine (default flags) vs a plain eager loop, same run",
          ["model, data", "device", "engine", "plain loop, batch 2048", "ratio", "plain loop, best batch", "ratio"],
          rows)


def sgemm_rows(q, inp):
    """The engine's arithmetic rate on ResNet-20 against this machine's float32 matmul rate."""
    r20, cifar, n = inp.r20
    macs = count_macs(model_loader.build("resnet20"), torch.zeros(1, 3, 32, 32))
    args = ["--model", "resnet20", "--model_file", r20, "--datapath", cifar, "--x=-1:1:2",
            "--y=-1:1:1" if q else "--y=-1:1:2", *FILTER]
    rounds = 1 if q else 3
    threads = mpi4pytorch.default_threads(None)  # what the engine's default --threads 0 gives one process
    eng, gemm = [], []
    for _ in range(rounds):  # alternated, medians: both see the same machine
        torch.set_num_threads(threads)
        gemm.append(sgemm_gflops())
        eng.append(engine(args, inp.work)[0])
    sec, rate = float(np.median(eng)), float(np.median(gemm))
    engine_rate = 2 * macs * n / sec / 1e9
    table(f"CPU arithmetic rate: ResNet-20 on {n:,} images (default flags) against torch.matmul "
          f"{SGEMM_N}x{SGEMM_N} float32, same run (median of {rounds})",
          ["MACs per image (forward hooks)", "engine s/point", "engine GFLOP/s", "matmul GFLOP/s", "ratio",
           f"target >= {SGEMM_TARGET}"],
          [[f"{macs / 1e6:.1f} M", ms(sec), f"{engine_rate:.1f}", f"{rate:.1f}", f"{engine_rate / rate:.2f}",
            "met" if engine_rate / rate >= SGEMM_TARGET else "not met"]])
    print(f"\nGFLOP/s = 2 x MACs per image x images / seconds per point; {threads} torch threads for both.")
    if engine_rate > rate:
        print(f"The engine outruns the yardstick: torch.matmul runs MKL's SGEMM, the convolutions run oneDNN "
              f"(CPU capability {torch.backends.cpu.get_cpu_capability()}), and on this CPU MKL's rate is below "
              f"what oneDNN's convolution kernels reach, so the matmul rate is not the machine's peak.")


PEER_CODE = r"""
import json, sys, time, numpy as np, torch
sys.path.insert(0, {repo!r})
import dataloader, model_loader, loss_landscapes, loss_landscapes.metrics
torch.set_num_threads({threads})
data = dataloader.load_tensors("digits")
net = model_loader.load("digits", "digits_cnn", {model_file!r})  # eval mode, as ours evaluates
metric = loss_landscapes.metrics.Loss(torch.nn.CrossEntropyLoss(), data.train_x, data.train_y)
t0 = time.perf_counter()
with torch.no_grad():  # its Loss metric would otherwise record autograd graphs it never uses
    values = loss_landscapes.random_plane(net, metric, distance={distance}, steps={steps}, normalization="filter",
                                          deepcopy_model=True)
print(json.dumps({{"sec": (time.perf_counter() - t0) / {steps} ** 2, "lo": float(np.nanmin(values)),
                  "hi": float(np.nanmax(values)), "shape": list(np.shape(values))}}))
"""
MALLOC_ENV = {"MALLOC_MMAP_THRESHOLD_": str(32 << 20), "MALLOC_TRIM_THRESHOLD_": str(1 << 30)}


def peer_plane(model_file, steps, distance, env=None):
    """loss-landscapes' random_plane with filter normalisation, in a fresh process (as it comes, or with
    `env`): (seconds per point, summary of its values)."""
    code = PEER_CODE.format(repo=REPO, threads=mpi4pytorch.default_threads(None), model_file=model_file,
                            distance=distance, steps=steps)
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=900,
                       env=dict(os.environ, **(env or {})))
    if r.returncode != 0:
        raise RuntimeError(r.stderr[-500:])
    out = json.loads(r.stdout.strip().splitlines()[-1])
    return out["sec"], out


def peer_rows(q, inp):
    """Our 21x21 digits_cnn surface (default flags) against loss-landscapes' random_plane, same model and data."""
    title = "CPU, against the simplest peer: loss-landscapes' random_plane, digits_cnn (trained) on 1,437 digits"
    try:
        import loss_landscapes  # noqa: F401
    except ImportError:
        table(title, ["row"], [["skipped: loss-landscapes is not installed (pip install -r bench/requirements.txt)"]])
        return
    steps = 5 if q else 21
    ours_args = ["--dataset", "digits", "--model", "digits_cnn", "--model_file", inp.cnn, f"--x=-1:1:{steps}",
                 f"--y=-1:1:{steps}", *FILTER]
    ours, walls, theirs, tuned, plane = [], [], [], [], None
    for i in range(1 if q else 3):  # alternated rounds, medians
        out, wall = cli([*ours_args, "--surf_file", os.path.join(inp.work, f"peer_{i}.h5")], inp.work)
        ours.append(computed(out)[2])
        walls.append(wall)
        sec, plane = peer_plane(inp.cnn, steps, distance=0.5)
        theirs.append(sec)
        tuned.append(peer_plane(inp.cnn, steps, distance=0.5, env=MALLOC_ENV)[0])
    o, t, u = float(np.median(ours)), float(np.median(theirs)), float(np.median(tuned))
    rows = [[f"plot_surface.py {steps}x{steps}, default flags (loss + accuracy, writes the .h5)", ms(o),
             f"{np.median(walls):.1f} s", f"{t / o:.2f}x", "met" if t / o >= PEER_TARGET else "not met"],
            [f"loss_landscapes.random_plane, steps={steps}, distance=0.5, filter (loss only, in memory)", ms(t),
             f"{t * steps ** 2:.1f} s (no start-up)", "1.00x", ""],
            ["the same, with our malloc settings (MALLOC_MMAP_THRESHOLD_/MALLOC_TRIM_THRESHOLD_)", ms(u),
             f"{u * steps ** 2:.1f} s (no start-up)", f"{t / u:.2f}x", f"ours: {u / o:.2f}x"]]
    table(title + f" (median of {len(ours)}; each peer run in a fresh process)",
          ["run", "s/point", "end to end", "speed vs loss-landscapes", f"target >= {PEER_TARGET}x"], rows)
    print(f"\nTheir loss over the plane: {plane['lo']:.4g} .. {plane['hi']:.4g} ({plane['shape'][0]}x"
          f"{plane['shape'][1]} values). Their `distance` is not a distance: random_plane "
          "scales each filter-normalised direction to |theta| / (distance * steps) per step and centres the "
          "plane, so it spans +-1/(2 * distance) in our coordinates (units of a filter-normalised direction, "
          "whose norm is |theta|); distance=0.5 spans our -1..1. With 21 steps its points fall at (k - 10.5) * 2/21 "
          "for k = 0..20 or 1..21 (x: -1 .. 0.905; y alternates between the two from column to column), ours at "
          "-1, -0.9, .., 1: the same count, the same span to within a step. It normalises biases and BN entry by "
          "entry where ours zeroes them (--xignore biasbn), and it evaluates all 1,437 images as one batch. "
          "Part of our lead is glibc's malloc: our engine keeps freed activation buffers "
          "(fast_model.keep_freed_memory); the last row gives the peer the same setting.")


def batch_rows(q, inp):
    """Per point against --batch_size on the CPU (in eval mode the batch size changes only rounding)."""
    r20, cifar, n = inp.r20
    cases = [("digits_cnn (trained), 1,437 digits",
              ["--dataset", "digits", "--model", "digits_cnn", "--model_file", inp.cnn,
               *(["--x=-1:1:5", "--y=-1:1:5"] if q else ["--x=-1:1:11", "--y=-1:1:11"]), *FILTER],
              ["128", "2048", "auto"]),
             (f"ResNet-20, {n:,} CIFAR-shaped",
              ["--model", "resnet20", "--model_file", r20, "--datapath", cifar, "--x=-1:1:2",
               "--y=-1:1:1" if q else "--y=-1:1:2", *FILTER],
              ["64", "128", "2048", "auto"])]
    rows = []
    rounds = 1 if q else 3
    for name, args, sizes in cases:
        chosen = {}

        def run(size, args=args):
            sec, cfg = engine([*args, "--batch_size", size], inp.work)
            chosen[size] = cfg.auto_batch
            return sec
        med = alternate({size: functools.partial(run, size) for size in sizes}, rounds)
        for size in sizes:
            label = f"auto ({chosen[size]})" if size == "auto" else size
            rows.append([name, label, ms(med[size]), f"{med[size] / med['auto']:.2f}"])
    table(f"CPU: seconds per point against --batch_size (median of {rounds})",
          ["model, data", "batch", "s/point", "vs auto"], rows)


def cpu_flags():
    try:
        with open("/proc/cpuinfo") as f:
            flags = next((line.split(":", 1)[1].split() for line in f if line.startswith("flags")), [])
    except OSError:
        return "unknown"
    wanted = [f for f in ("avx512f", "avx512_bf16", "amx_bf16") if f in flags]
    return ", ".join(wanted) or "no avx512/bf16 flags"


def cpu_precision_rows(q, inp):
    """fp32 against bf16 per point on the CPU (their loss differences: the precision section)."""
    r20, cifar, n = inp.r20
    cases = [(f"ResNet-20, {n:,} CIFAR-shaped",
              ["--model", "resnet20", "--model_file", r20, "--datapath", cifar, "--x=-1:1:2",
               "--y=-1:1:1" if q else "--y=-1:1:2", *FILTER]),
             ("digits_cnn (trained), 1,437 digits",
              ["--dataset", "digits", "--model", "digits_cnn", "--model_file", inp.cnn,
               *(["--x=-1:1:5", "--y=-1:1:5"] if q else ["--x=-1:1:11", "--y=-1:1:11"]), *FILTER])]
    rounds = 1 if q else 3
    rows = []
    for name, args in cases:
        med = alternate({p: functools.partial(seconds_per_point, [*args, "--precision", p], inp.work)
                         for p in ("fp32", "bf16")}, rounds)
        rows.append([name, ms(med["fp32"]), ms(med["bf16"]), f"{med['fp32'] / med['bf16']:.2f}x"])
    table(f"CPU: --precision fp32 against bf16, seconds per point (median of {rounds}; CPU flags: {cpu_flags()})",
          ["model, data", "fp32", "bf16", "bf16 speed-up"], rows)
    print("\nThe loss errors of bf16 on these models are in the table 'Largest |loss - loss_fp32| over the grid'.")


def precision_rows(q, inp):
    grid = ["--x=-1:1:3", "--y=-1:1:3"] if q else ["--x=-1:1:5", "--y=-1:1:5"]
    r20, cifar, n = inp.r20
    cases = [("digits_cnn (trained), digits, cpu", ["--dataset", "digits", "--model", "digits_cnn", "--model_file",
                                                    inp.cnn], ("default", "tf32", "bf16")),
             # On a CPU default and tf32 are fp32 (the digits rows show it): only bf16 is worth the time here.
             (f"ResNet-20 (random init), {n:,} CIFAR-shaped, cpu",
              ["--model", "resnet20", "--model_file", r20, "--datapath", cifar], ("bf16",))]
    rows = []
    for name, args, precisions in cases:
        g = ["--x=-1:1:2", "--y=-1:1:1"] if q and "resnet20" in args else grid  # emulated bf16 is slow on most CPUs
        maps = {p: engine_maps(args + g + FILTER + ["--precision", p], inp.work) for p in ("fp32", *precisions)}
        rows += precision_table_rows(name, maps, precisions)
    table("Largest |loss - loss_fp32| over the grid, per --precision",
          ["model, data", "precision", "max abs diff", "max rel diff", "fp32 loss range"], rows)
    print("\n(On a CPU, `default` and `tf32` are fp32: TF32 exists only on NVIDIA GPUs. The ResNet-56 rows are "
          "in the GPU section.)")


def precision_table_rows(name, maps, precisions):
    ref = maps["fp32"]
    rows = []
    for p in precisions:
        diff = np.abs(maps[p] - ref)
        rows.append([name, p, f"{diff.max():.2e}", f"{(diff / np.abs(ref)).max():.2e}",
                     f"{ref.min():.4g} .. {ref.max():.4g}"])
    return rows


def fast_path_rows(q, inp):
    r20, cifar, n = inp.r20
    base = ["--model", "resnet20", "--model_file", r20, "--datapath", cifar, "--x=-1:1:2", "--y=-1:1:2", *FILTER,
            "--threads", str(torch.get_num_threads())]
    variants = [("none", ["--no_fold_bn", "--memory_format", "contiguous"]),
                ("BN folding", ["--memory_format", "contiguous"]),
                ("channels_last", ["--no_fold_bn", "--memory_format", "channels_last"]),
                ("BN folding + channels_last (default)", []),
                ("BN folding + channels_last, batch 64", ["--batch_size", "64"])]
    if not q:
        variants.append(("default + --compile", ["--compile"]))
    rounds = 1 if q else 3
    times = {name: [] for name, _ in variants}
    compile_costs = []
    for _ in range(rounds):
        for name, extra in variants:
            sec, cfg = engine(base + extra, inp.work)
            times[name].append(sec)
            if cfg.compile_seconds is not None:
                compile_costs.append(cfg.compile_seconds)
    ref = np.median(times["none"])
    rows = [[name, ms(np.median(v)), f"{np.median(v) / ref:.2f}"] for name, v in times.items()]
    table(f"Fast paths, ResNet-20 on {n:,} CIFAR-shaped images, CPU (median of {rounds})",
          ["variant", "s/point", "vs none"], rows)
    if compile_costs:
        print(f"\n--compile: the first forward pass (compilation) took {compile_costs[0]:.1f} s with an empty "
              f"inductor cache, then {', '.join(f'{c:.1f}' for c in compile_costs[1:])} s in later runs (cache warm).")


def points_per_pass_rows(q, inp):
    rows = []
    grid = ["--x=-1:1:11", "--y=-1:1:11"] if q else ["--x=-1:1:41", "--y=-1:1:41"]
    for batch in (128, 2048):
        for k in (1, 8, 32):
            sec, _ = engine(["--dataset", "digits", "--model", "digits_mlp", "--model_file", inp.mlp, *grid, *FILTER,
                             "--points_per_pass", str(k), "--batch_size", str(batch)], inp.work)
            rows.append([batch, k, ms(sec)])
    table("--points_per_pass, digits_mlp on the digits set, CPU", ["batch", "K", "s/point"], rows)


def overhead_rows(q, inp):
    """Time per point of a trivially cheap model (143 digits) at a small and a large grid."""
    small, large = (5, 21) if q else (21, 201)
    rows = []
    for ranks in (1,) if q else (1, 2):   # --quick: one rank (mpiexec costs seconds of start-up; the tests run it)
        per = {}
        for n in (small, large):
            args = ["--dataset", "digits", "--model", "digits_mlp", "--model_file", inp.mlp, f"--x=-1:1:{n}",
                    f"--y=-1:1:{n}", *FILTER, "--data_split", "10", "--batch_size", "2048", "--threads", "1",
                    "--surf_file", os.path.join(inp.work, f"ovh_{ranks}_{n}.h5")]
            per[n] = computed(cli(args, inp.work, ranks)[0])[2]
        rows.append([ranks, f"{small}x{small}", ms(per[small]), f"{large}x{large}", ms(per[large]),
                     f"{per[large] / per[small]:.2f}"])
    table("Per-point overhead: digits_mlp on 143 digits (trivially cheap), small vs large grid",
          ["ranks", "small grid", "s/point", "large grid", "s/point", "large / small"], rows)


def end_to_end_row(q, inp):
    n = 31 if q else 101
    args = ["--dataset", "digits", "--model", "digits_mlp", "--model_file", inp.mlp, f"--x=-1:1:{n}", f"--y=-1:1:{n}",
            *FILTER, "--batch_size", "2048", "--surf_file", os.path.join(inp.work, "e2e.h5")]
    out, wall = cli(args, inp.work)
    table(f"digits_mlp {n}x{n} surface, one process, end to end", ["wall time (incl. start-up)", "computing"],
          [[f"{wall:.1f} s", f"{computed(out)[1]:.1f} s"]])
    print(f"\ncommand: plot_surface.py {' '.join(args).replace(inp.work + '/', '')}")


# ----------------------------------------------------------------------------- the GPU section
class GpuRun:
    """What the GPU rows share: the device flags, ResNet-56 (ResNet-20 in --quick) and its data."""

    def __init__(self, q, work, on_cpu):
        self.q, self.work, self.on_cpu = q, work, on_cpu
        self.device = "cpu" if on_cpu else "cuda"
        self.flags = [] if on_cpu else ["--cuda"]
        self.model = "resnet20" if q else "resnet56"
        self.n = 256 if q else 50000
        self.where = "CPU, standing in for the GPU (--gpu_on_cpu)" if on_cpu else torch.cuda.get_device_name()
        self.name = f"{'ResNet-20' if q else 'ResNet-56'}, {self.n:,} CIFAR-shaped"
        self.cifar = fake_cifar(os.path.join(work, f"cifar{self.n}"), self.n)
        self.ckpt = random_checkpoint(self.model, os.path.join(work, f"{self.model}.t7"))
        self.args = [*self.flags, "--model", self.model, "--model_file", self.ckpt, "--datapath", self.cifar, *FILTER]
        self.speed_grid = ["--x=-1:1:2", "--y=-1:1:2"]                  # 4 points: enough at 50,000 images
        self.mpi_grid = ["--x=-1:1:2", "--y=-1:1:2"] if q else ["--x=-1:1:3", "--y=-1:1:4"]
        self.error_grid = ["--x=-1:1:3", "--y=-1:1:3"] if q else ["--x=-1:1:5", "--y=-1:1:5"]
        self.targets = not (q or on_cpu)  # the targets are for ResNet-56 at 50,000 images on the GPU


def gpu_rows(q, inp, budget, on_cpu):
    if not (torch.cuda.is_available() or on_cpu):
        table("GPU: ResNet-56 on 50,000 CIFAR-shaped images", ["row"], [["skipped: no CUDA GPU here"]])
        return
    g = GpuRun(q, inp.work, on_cpu)
    print(f"\n## GPU rows: {g.name}, on {g.where}; every row starts from PyTorch's TF32 defaults "
          f"(matmul {TF32_AT_START[0]}, cudnn {TF32_AT_START[1]}); {budget.left():.0f} s left")
    yard = gpu_yardstick(g, budget)
    speeds = gpu_precision_speed(g, budget, yard, compile=False)
    gpu_batch_rows(g, budget, speeds.get("default"))
    gpu_mpi_rows(g, budget)
    gpu_precision_errors(g, budget)
    gpu_precision_speed(g, budget, yard, compile=True)


def gpu_yardstick(g, budget):
    try:
        with budget.limit(90):
            sec = plain_loop(g.model, g.ckpt, "cifar10", g.cifar, g.device, 2048, reps=2)
    except Exception as e:  # a failed row must not cost the others: a GPU run is one shot
        print(f"\nplain loop: {first_line(e)}")
        return None
    print(f"\nplain eager loop (fp32, batch 2048, data on the device, median of 2 passes): {ms(sec)} per pass")
    return sec


def target_text(g, precision, sec):
    goal = GPU_TARGETS.get(precision)
    if goal is None or sec is None:
        return "-"
    if not g.targets:
        return f"<= {goal} s (not a GPU run)"
    stretch = " (stretch 0.08: " + ("met" if sec <= 0.08 else "not met") + ")" if precision == "bf16" else ""
    return f"<= {goal} s: {'met' if sec <= goal else 'not met'}{stretch}"


def gpu_precision_speed(g, budget, yard, compile):
    """s/point per --precision (default flags otherwise), with or without --compile; {precision: s/point}."""
    precisions = ("default", "fp32", "tf32", "bf16")
    if compile and g.q:
        precisions = ("default",)  # --quick proves the path; compiling four times takes minutes on a CPU
    need, limit = (20, 240) if compile else (10, 90)
    rows, speeds = [], {}
    for p in precisions:
        if not budget.allows(need):
            rows.append([p, "-", "-", "-", "-", f"skipped: {budget.left():.0f} s left of the run's budget"])
            continue
        try:
            with budget.limit(limit):
                if not compile:  # one warm-up point: the first point of each arithmetic pays one-off costs
                    # (library handles, kernel selection) that 4 timed points would not amortise
                    engine([*g.args, "--x=0:0:1", "--y=0:0:1", "--precision", p], g.work)
                sec, cfg = engine([*g.args, *g.speed_grid, "--precision", p, *(["--compile"] if compile else [])],
                                  g.work)
        except Exception as e:  # a failed row must not cost the others: a GPU run is one shot
            rows.append([p, "-", "-", "-", "-", first_line(e)])
            continue
        speeds[p] = sec
        compile_time = f"{cfg.compile_seconds:.1f} s" if cfg.compile_seconds is not None else "-"
        rows.append([p, ms(sec), f"{sec / yard:.2f}" if yard else "-", cfg.auto_batch or "-", compile_time,
                     target_text(g, p, sec)])
    how = "4 points, compiled first (compile time apart)" if compile else "4 points, after a 1-point warm-up run"
    table(f"GPU: {g.name}, seconds per grid point per --precision{', with --compile' if compile else ''} "
          f"({g.where}; {how})",
          ["precision", "s/point", "vs plain loop", "auto batch", "compile time", "target"], rows)
    return speeds


def gpu_batch_rows(g, budget, auto_sec):
    if auto_sec is None or not budget.allows(10):
        table(f"GPU: --batch_size auto against 2048 ({g.name})", ["row"], [["skipped: no auto figure or no time left"]])
        return
    try:
        with budget.limit(90):
            sec, _ = engine([*g.args, *g.speed_grid, "--precision", "default", "--batch_size", "2048"], g.work)
        row = [ms(auto_sec), ms(sec), f"{auto_sec / sec:.2f}"]
    except Exception as e:  # a failed row must not cost the others: a GPU run is one shot
        row = [ms(auto_sec), first_line(e), "-"]
    table(f"GPU: --batch_size auto against 2048, --precision default ({g.name}, {g.where})",
          ["auto s/point", "2048 s/point", "auto / 2048"], [row])


def gpu_mpi_rows(g, budget):
    """Aggregate seconds per point of 4 ranks on the one card against 1 rank, same grid, as processes."""
    title = f"GPU: mpiexec -n 4 --mpi{' --cuda' if g.flags else ''} on one card against 1 rank ({g.name})"
    if not mpiexec():
        table(title, ["row"], [["skipped: no mpiexec on this machine"]])
        return
    rows, per = [], {}
    for ranks in (1, 4):
        if not budget.allows(30):
            rows.append([ranks, "-", "-", f"skipped: {budget.left():.0f} s left"])
            continue
        args = [*g.args, *g.mpi_grid, "--surf_file", os.path.join(g.work, f"mpi{ranks}_{time.perf_counter_ns()}.h5")]
        try:
            out, wall = cli(args, g.work, ranks, timeout=min(180, max(budget.left(), 1)))
            points, seconds, per[ranks] = computed(out)
            rows.append([ranks, f"{points} in {seconds:.1f} s", ms(per[ranks]), f"{wall:.1f} s"])
        except Exception as e:  # a timeout, or a rank that failed
            rows.append([ranks, "-", "-", first_line(e)])
    table(title + f", {g.where}", ["ranks", "points", "aggregate s/point", "wall (incl. start-up)"], rows)
    if len(per) == 2:
        ratio = per[4] / per[1]
        print(f"\n4 ranks / 1 rank, aggregate s/point: {ratio:.2f} (target <= 1, 4 ranks no slower: "
              f"{'met' if ratio <= 1 else 'not met'}{'' if g.targets else '; not a GPU run'})")


def gpu_precision_errors(g, budget):
    rows, maps = [], {}
    for p in ("fp32", "default", "tf32", "bf16"):
        if not budget.allows(15):
            rows.append([g.name, p, f"skipped: {budget.left():.0f} s left", "", ""])
            continue
        try:
            with budget.limit(120):
                maps[p] = engine_maps([*g.args, *g.error_grid, "--precision", p], g.work)
        except Exception as e:  # a failed row must not cost the others: a GPU run is one shot
            rows.append([g.name, p, first_line(e), "", ""])
    if "fp32" in maps:
        rows = precision_table_rows(f"{g.name} (random init), {g.where}", maps, [p for p in maps if p != "fp32"]) + rows
    table("GPU: largest |loss - loss_fp32| over the grid, per --precision",
          ["model, data", "precision", "max abs diff", "max rel diff", "fp32 loss range"], rows)


# ----------------------------------------------------------------------------- main
CPU_SECTIONS = {"engine": engine_rows, "sgemm": sgemm_rows, "peer": peer_rows, "batch": batch_rows,
                "cpu_precision": cpu_precision_rows, "precision": precision_rows, "fastpaths": fast_path_rows,
                "points_per_pass": points_per_pass_rows, "overhead": overhead_rows, "end_to_end": end_to_end_row}


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="a few points per row: checks that every path runs")
    p.add_argument("--sections", default=",".join(SECTIONS), help="comma-separated sections to run (default: all)")
    p.add_argument("--gpu_on_cpu", action="store_true",
                   help="run the gpu section on the CPU (no --cuda), to check its code without a GPU")
    p.add_argument("--deadline", type=float, default=None,
                   help="seconds: rows that would start later are skipped, rows running then are stopped "
                        "(the gpu section; default: none)")
    a = p.parse_args(argv)
    sections = a.sections.split(",")
    unknown = set(sections) - set(SECTIONS)
    if unknown:
        p.error(f"unknown section(s) {', '.join(sorted(unknown))}; choose from {', '.join(SECTIONS)}")
    budget = Budget(a.deadline)
    torch.set_num_threads(min(2, os.cpu_count() or 1))
    os.environ["TORCHINDUCTOR_CACHE_DIR"] = tempfile.mkdtemp(prefix="inductor_")  # report a cold compile
    snapshot_tf32()
    record_auto_batch_sizes()
    gpu = torch.cuda.get_device_name() if torch.cuda.is_available() else "none"
    print(f"# bench_surface{' --quick' if a.quick else ''}: {time.strftime('%Y-%m-%d %H:%M')}, "
          f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, {torch.get_num_threads()} torch "
          f"threads, GPU: {gpu}, torch {torch.__version__}; TF32 at start: matmul {TF32_AT_START[0]}, "
          f"cudnn {TF32_AT_START[1]} (restored before every row)")
    with tempfile.TemporaryDirectory() as work:
        inp = Inputs(a.quick, work)
        for name in sections:
            if name == "gpu":
                gpu_rows(a.quick, inp, budget, a.gpu_on_cpu)
            else:
                CPU_SECTIONS[name](a.quick, inp)
    return 0


if __name__ == "__main__":
    sys.exit(main())
