"""Benchmark: seconds per grid point through the real engine, side by side with a plain PyTorch loop.

    python bench/bench_surface.py            # full run (about 10 minutes on 2 CPU cores)
    python bench/bench_surface.py --quick    # a few points of every row, to catch breakage (CI)

Every engine figure comes from plot_surface.run(): the same code path as the command line, with
the direction file, the surface file and its periodic atomic writes. Every row also times a plain
eager loop in the same process (data already on the device, fp32, batch 2048: the yardstick the
speed issue names) and the same loop at its best batch size on this machine, so each figure is
a ratio measured side by side. The script prints markdown tables and asserts nothing about time.

Rows: digits_mlp on the digits set (CPU); ResNet-20 on 2,000 CIFAR-shaped images (CPU); ResNet-56
on 50,000 CIFAR-shaped images (GPU only; skipped without one). Then: the loss differences of each
--precision against fp32 on a 5x5 grid; the fast paths one by one; --points_per_pass; the
per-point overhead at 21x21 and 201x201 grids on 1 and 2 ranks; a 101x101 digits_mlp run end to end.
"""
import argparse
import contextlib
import io
import os
import platform
import re
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
import model_loader  # noqa: E402
import plot_surface  # noqa: E402
from cifar10 import main as trainer  # noqa: E402

FILTER = ["--xnorm", "filter", "--xignore", "biasbn", "--ynorm", "filter", "--yignore", "biasbn"]


# ----------------------------------------------------------------------------- fixtures made on the fly
def fake_cifar(root, n_train, n_test=100):
    """A CIFAR-10-format folder (the real pickle layout), read later by the real loader."""
    if not os.path.exists(os.path.join(root, "cifar-10-batches-py", "test_batch")):
        subprocess.run([sys.executable, os.path.join(REPO, "tests", "fake_cifar10.py"), root,
                        "--train", str(n_train), "--test", str(n_test)], check=True)
    return root


def random_checkpoint(model, path, seed=0):
    """A model with its default random initialisation (trained CIFAR nets are not available here)."""
    torch.manual_seed(seed)
    torch.save({"state_dict": model_loader.build(model).state_dict(), "epoch": 0, "acc": 0.0}, path)
    return path


def trained_digits(model, folder, epochs=8):
    """Train a digits model with the real trainer; returns its last checkpoint."""
    argv = ["--dataset", "digits", "--model", model, "--epochs", str(epochs), "--batch_size", "64",
            "--save_epoch", str(epochs), "--save", folder]
    with contextlib.redirect_stdout(io.StringIO()):
        trainer.main(argv)
    return os.path.join(folder, trainer.name_save_folder(trainer.build_parser().parse_args(argv)), f"model_{epochs}.t7")


# ----------------------------------------------------------------------------- measurements
def engine(args, workdir):
    """Run plot_surface in-process on a fresh surface file; returns (seconds per point, stats)."""
    surf = os.path.join(workdir, f"surf_{time.perf_counter_ns()}.h5")
    cfg = plot_surface.parse_config(args + ["--surf_file", surf])
    out = io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(io.StringIO()):
        plot_surface.run(cfg, None, 0, 1)
    m = re.search(r"torch.compile took ([\d.]+) s", out.getvalue())
    cfg.compile_seconds = float(m.group(1)) if m else None
    return cfg.stats["sec_per_point"], cfg


def plain_loop(model, model_file, dataset, datapath, device, batch_size, reps, n_train=None):
    """The yardstick: eager forward passes over data already on the device, fp32, no tricks."""
    net = model_loader.load(dataset, model, model_file).to(device)
    data = dataloader.load_tensors(dataset, datapath)
    x, y = data.train_x[:n_train].to(device), data.train_y[:n_train].to(device)
    torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = False

    def once():
        with torch.no_grad():
            total = torch.zeros((), device=device)
            for s in range(0, len(y), batch_size):
                total += F.cross_entropy(net(x[s:s + batch_size]), y[s:s + batch_size], reduction="sum")
            return total.item() / len(y)

    once()
    times = []
    for _ in range(reps):
        t0 = time.perf_counter()
        once()
        times.append(time.perf_counter() - t0)
    torch.backends.cudnn.allow_tf32 = True  # back to PyTorch's defaults
    return float(np.median(times))


def side_by_side(engine_args, plain_kwargs, workdir, rounds, plain_batches):
    """Alternate engine runs and plain loops; medians of each, so drifts in machine speed cancel."""
    eng, plain = [], {b: [] for b in plain_batches}
    for _ in range(rounds):
        for b in plain_batches:
            plain[b].append(plain_loop(batch_size=b, reps=1, **plain_kwargs))
        eng.append(engine(engine_args, workdir)[0])
    return float(np.median(eng)), {b: float(np.median(v)) for b, v in plain.items()}


# ----------------------------------------------------------------------------- report helpers
def table(title, header, rows):
    print(f"\n### {title}\n")
    print("| " + " | ".join(header) + " |")
    print("|" + "---|" * len(header))
    for r in rows:
        print("| " + " | ".join(str(c) for c in r) + " |")
    sys.stdout.flush()


def ms(sec):
    return f"{sec * 1e3:.3g} ms" if sec < 1 else f"{sec:.3g} s"


# ----------------------------------------------------------------------------- sections
def engine_rows(q, work, cnn_ckpt, mlp_ckpt):
    rows = []
    base = ["--threads", str(torch.get_num_threads())]
    # digits_mlp, CPU
    cheap = ["--x=-1:1:11", "--y=-1:1:11"] if q else ["--x=-1:1:41", "--y=-1:1:41"]  # enough points to amortise writes
    args = ["--dataset", "digits", "--model", "digits_mlp", "--model_file", mlp_ckpt, *cheap, *FILTER, *base,
            "--batch_size", "2048"]
    e, p = side_by_side(args, dict(model="digits_mlp", model_file=mlp_ckpt, dataset="digits", datapath="",
                                   device="cpu"), work, 1 if q else 3, [2048])
    rows.append(["digits_mlp, 1,437 digits", "cpu", ms(e), ms(p[2048]), f"{e / p[2048]:.2f}", "-", "-"])
    # ResNet-20 on 2,000 CIFAR-shaped images, CPU
    n = 200 if q else 2000
    cifar = fake_cifar(os.path.join(work, f"cifar{n}"), n)
    r20 = random_checkpoint("resnet20", os.path.join(work, "resnet20.t7"))
    args = ["--model", "resnet20", "--model_file", r20, "--datapath", cifar, "--x=-1:1:2", "--y=-1:1:1" if q else
            "--y=-1:1:2", *FILTER, *base]
    batches = [2048, 64, 128, 500]
    e, p = side_by_side(args, dict(model="resnet20", model_file=r20, dataset="cifar10", datapath=cifar, device="cpu"),
                        work, 1 if q else 3, batches)
    best = min(batches, key=lambda b: p[b])
    rows.append([f"ResNet-20, {n:,} CIFAR-shaped", "cpu", ms(e), ms(p[2048]), f"{e / p[2048]:.2f}",
                 f"{ms(p[best])} (batch {best})", f"{e / p[best]:.2f}"])
    if torch.cuda.is_available():
        rows += gpu_engine_rows(q, work)
    else:
        rows.append(["ResNet-56, 50,000 CIFAR-shaped", "gpu", "skipped: no CUDA GPU here", "", "", "", ""])
    table("Seconds per grid point: the engine (default flags) vs a plain eager loop, same run",
          ["model, data", "device", "engine", "plain loop, batch 2048", "ratio", "plain loop, best batch", "ratio"],
          rows)


def gpu_engine_rows(q, work):
    n = 5000 if q else 50000
    cifar = fake_cifar(os.path.join(work, f"cifar{n}"), n)
    r56 = random_checkpoint("resnet56", os.path.join(work, "resnet56.t7"))
    plain = {b: plain_loop("resnet56", r56, "cifar10", cifar, "cuda", b, 3) for b in (2048,)}
    rows = []
    for precision, extra in (("default", []), ("fp32", []), ("tf32", []), ("bf16", []), ("bf16", ["--compile"]),
                             ("default", ["--compile"])):
        args = ["--cuda", "--model", "resnet56", "--model_file", r56, "--datapath", cifar, "--x=-1:1:3",
                "--y=-1:1:2", *FILTER, "--batch_size", "2048", "--precision", precision, *extra]
        e, cfg = engine(args, work)
        rows.append([f"ResNet-56, {n:,} CIFAR-shaped, {precision} {' '.join(extra)}", torch.cuda.get_device_name(),
                     ms(e), ms(plain[2048]), f"{e / plain[2048]:.2f}", "-", "-"])
    return rows


def precision_rows(q, work, cnn_ckpt):
    rows = []
    grid = ["--x=-1:1:3", "--y=-1:1:3"] if q else ["--x=-1:1:5", "--y=-1:1:5"]
    cases = [("digits_cnn (trained), digits", ["--dataset", "digits", "--model", "digits_cnn", "--model_file", cnn_ckpt])]
    if torch.cuda.is_available():
        n = 5000 if q else 50000
        cifar = fake_cifar(os.path.join(work, f"cifar{n}"), n)
        r56 = random_checkpoint("resnet56", os.path.join(work, "resnet56.t7"))
        cases.append((f"ResNet-56 (random init), {n:,} CIFAR-shaped",
                      ["--cuda", "--model", "resnet56", "--model_file", r56, "--datapath", cifar, "--batch_size", "2048"]))
    for name, args in cases:
        maps = {}
        for precision in ("fp32", "default", "tf32", "bf16"):
            _, cfg = engine(args + grid + FILTER + ["--precision", precision], work)
            surf = plot_surface.h5_util.read_surface(cfg.surf_file)
            maps[precision] = surf.values["train_loss"]
        for precision in ("default", "tf32", "bf16"):
            diff = np.abs(maps[precision] - maps["fp32"])
            rows.append([name, precision, f"{diff.max():.2e}", f"{(diff / np.abs(maps['fp32'])).max():.2e}",
                         f"{maps['fp32'].min():.4g} .. {maps['fp32'].max():.4g}"])
        evaluation_reset()
    table("Largest |loss - loss_fp32| over the grid, per --precision",
          ["model, data", "precision", "max abs diff", "max rel diff", "fp32 loss range"], rows)


def evaluation_reset():
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = True


def fast_path_rows(q, work):
    n = 200 if q else 2000
    cifar = fake_cifar(os.path.join(work, f"cifar{n}"), n)
    r20 = random_checkpoint("resnet20", os.path.join(work, "resnet20.t7"))
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
            sec, cfg = engine(base + extra, work)
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


def points_per_pass_rows(q, work, mlp_ckpt):
    rows = []
    grid = ["--x=-1:1:11", "--y=-1:1:11"] if q else ["--x=-1:1:41", "--y=-1:1:41"]
    for batch in (128, 2048):
        for k in (1, 8, 32):
            sec, _ = engine(["--dataset", "digits", "--model", "digits_mlp", "--model_file", mlp_ckpt, *grid, *FILTER,
                             "--points_per_pass", str(k), "--batch_size", str(batch)], work)
            rows.append([batch, k, ms(sec)])
    table("--points_per_pass, digits_mlp on the digits set, CPU", ["batch", "K", "s/point"], rows)


def overhead_rows(q, work, mlp_ckpt):
    """Time per point of a trivially cheap model (143 digits) at a small and a large grid."""
    small, large = (11, 41) if q else (21, 201)
    rows = []
    for ranks in (1, 2):
        per = {}
        for n in (small, large):
            args = ["--dataset", "digits", "--model", "digits_mlp", "--model_file", mlp_ckpt, f"--x=-1:1:{n}",
                    f"--y=-1:1:{n}", *FILTER, "--data_split", "10", "--batch_size", "2048", "--threads", "1",
                    "--surf_file", os.path.join(work, f"ovh_{ranks}_{n}.h5")]
            cmd = [sys.executable, os.path.join(REPO, "plot_surface.py")] + args
            if ranks > 1:
                mpiexec = os.path.join(os.path.dirname(sys.executable), "mpiexec")
                cmd = [mpiexec, "-n", str(ranks), "--oversubscribe"] + cmd[:2] + ["--mpi"] + args
            env = dict(os.environ, OMPI_ALLOW_RUN_AS_ROOT="1", OMPI_ALLOW_RUN_AS_ROOT_CONFIRM="1")
            out = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=work).stdout
            m = re.search(r"computed (\d+) points in ([\d.]+) s \(([\d.]+) points/s", out)
            per[n] = 1.0 / float(m.group(3))
        rows.append([ranks, f"{small}x{small}", ms(per[small]), f"{large}x{large}", ms(per[large]),
                     f"{per[large] / per[small]:.2f}"])
    table("Per-point overhead: digits_mlp on 143 digits (trivially cheap), small vs large grid",
          ["ranks", "small grid", "s/point", "large grid", "s/point", "large / small"], rows)


def end_to_end_row(q, work, mlp_ckpt):
    n = 31 if q else 101
    cmd = [sys.executable, os.path.join(REPO, "plot_surface.py"), "--dataset", "digits", "--model", "digits_mlp",
           "--model_file", mlp_ckpt, f"--x=-1:1:{n}", f"--y=-1:1:{n}", *FILTER, "--batch_size", "2048",
           "--surf_file", os.path.join(work, "e2e.h5")]
    t0 = time.perf_counter()
    out = subprocess.run(cmd, capture_output=True, text=True, cwd=work).stdout
    wall = time.perf_counter() - t0
    m = re.search(r"computed \d+ points in ([\d.]+) s", out)
    table(f"digits_mlp {n}x{n} surface, one process, end to end", ["wall time (incl. start-up)", "computing"],
          [[f"{wall:.1f} s", f"{float(m.group(1)):.1f} s"]])
    print(f"\ncommand: {' '.join(cmd[1:]).replace(work + '/', '')}")


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="a few points per row: checks that every path runs")
    p.add_argument("--sections", default="engine,precision,fastpaths,points_per_pass,overhead,end_to_end",
                   help="comma-separated sections to run")
    a = p.parse_args(argv)
    torch.set_num_threads(min(2, os.cpu_count() or 1))
    os.environ["TORCHINDUCTOR_CACHE_DIR"] = tempfile.mkdtemp(prefix="inductor_")  # report a cold compile
    gpu = torch.cuda.get_device_name() if torch.cuda.is_available() else "none"
    print(f"# bench_surface{' --quick' if a.quick else ''}: {time.strftime('%Y-%m-%d %H:%M')}, "
          f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, GPU: {gpu}, torch {torch.__version__}")
    sections = a.sections.split(",")
    with tempfile.TemporaryDirectory() as work:
        nets = os.path.join(work, "nets")
        cnn = trained_digits("digits_cnn", nets, 3 if a.quick else 8)
        mlp = trained_digits("digits_mlp", nets, 3 if a.quick else 8)
        if "engine" in sections:
            engine_rows(a.quick, work, cnn, mlp)
        if "precision" in sections:
            precision_rows(a.quick, work, cnn)
        if "fastpaths" in sections:
            fast_path_rows(a.quick, work)
        if "points_per_pass" in sections:
            points_per_pass_rows(a.quick, work, mlp)
        if "overhead" in sections:
            overhead_rows(a.quick, work, mlp)
        if "end_to_end" in sections:
            end_to_end_row(a.quick, work, mlp)
    return 0


if __name__ == "__main__":
    sys.exit(main())
