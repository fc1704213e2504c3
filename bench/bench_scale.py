"""Data-parallel points (--ranks_per_point): equality with one rank, and the speed of --at_center on 2 ranks.

    python bench/bench_scale.py                       # equality and speed tables (about 3 min on 2 idle cores)
    python bench/bench_scale.py --quick               # smaller: checks the script works
    python bench/bench_scale.py --sections gpu        # the same on the GPU: 1 rank vs 2 ranks on one card

Every row runs the real commands (plot_surface.py, plot_hessian_eigen.py) in fresh processes, on a
digits_cnn the benchmark trains first (4 epochs; 38,378 parameters in the Hessian, 1,437 digits).

- equality: a 5x5 filter-normalised surface and the --at_center curvature (top eigenvalue, trace of
  20 deflated probes) on 1 rank, under `mpiexec -n 2 --ranks_per_point 2` and under
  `torchrun --nproc_per_node 2` (gloo on the CPU): the largest relative difference to 1 rank.
- speed: --at_center with 1 thread per rank, a fixed number of products (--tol 1e-12 --max_iter 40,
  --trace_samples 40 --trace_rel_se 0): 1 rank against mpiexec -n 2 and torchrun 2 (every rank in the
  point's group); the seconds the curvature took (the JSON's `seconds`) and the command's wall time,
  median of --repeats runs, alternating. The issue's target: 2 ranks >= 1.7x faster than 1.
- gpu: the same two tables with --cuda, the 2 ranks sharing the one card (their device sums go
  through gloo: NCCL refuses two ranks on one card).
"""
import argparse
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

import h5py
import numpy as np

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PY = sys.executable
BIN = os.path.dirname(PY)


def env():
    e = dict(os.environ, OMPI_ALLOW_RUN_AS_ROOT="1", OMPI_ALLOW_RUN_AS_ROOT_CONFIRM="1", PYTHONUNBUFFERED="1",
             OMPI_MCA_rmaps_base_oversubscribe="1", PRTE_MCA_rmaps_default_mapping_policy=":oversubscribe")
    for v in ("RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT"):
        e.pop(v, None)
    return e


def launch(how, script, args, cwd):
    """(wall seconds, stdout) of `script args` on 1 rank, under mpiexec -n 2 or torchrun 2."""
    cmd = [PY, os.path.join(REPO, script), *args]
    if how == "mpiexec":
        cmd = [shutil.which("mpiexec", path=BIN) or "mpiexec", "-n", "2", "--oversubscribe", *cmd[:2], "--mpi",
               *args]
    elif how == "torchrun":
        cmd = [os.path.join(BIN, "torchrun"), "--standalone", "--nproc_per_node", "2", *cmd[1:]]
    t0 = time.perf_counter()
    r = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, env=env(), timeout=1800)
    if r.returncode != 0:
        raise SystemExit(f"failed ({r.returncode}): {' '.join(cmd)}\n{r.stderr[-3000:]}")
    return time.perf_counter() - t0, r.stdout


def train(work):
    save = os.path.join(work, "nets")
    subprocess.run([PY, os.path.join(REPO, "cifar10", "main.py"), "--dataset", "digits", "--model", "digits_cnn",
                    "--epochs", "4", "--batch_size", "64", "--lr", "0.1", "--save_epoch", "4", "--save", save,
                    "--threads", "2"], check=True, capture_output=True, env=env())
    path = next(os.path.join(d, "model_4.t7") for d, _, files in os.walk(save) if "model_4.t7" in files)
    shutil.copy(path, os.path.join(work, "cnn.t7"))
    return "cnn.t7"


def common(ckpt, device):
    return ["--dataset", "digits", "--model", "digits_cnn", "--model_file", ckpt, "--threads", "1", *device]


def equality(work, ckpt, device, launchers, grid):
    surf = [*common(ckpt, device), f"--x=-1:1:{grid}", f"--y=-1:1:{grid}", "--xnorm", "filter", "--ynorm", "filter",
            "--precision", "fp32"]
    center = [*common(ckpt, device), "--at_center", "--trace_samples", "20", "--trace_rel_se", "0"]
    rows, ref = [], {}
    for how in ["one", *launchers]:
        out = f"{how}.h5"
        launch(how, "plot_surface.py", [*surf, "--surf_file", out] + (["--ranks_per_point", "2"] if how != "one"
                                                                      else []), work)
        with h5py.File(os.path.join(work, out), "r") as f:
            loss = f["train_loss"][()]
        launch(how, "plot_hessian_eigen.py", center, work)
        curv = json.load(open(os.path.join(work, f"{ckpt}_hessian.json")))
        if how == "one":
            ref = {"loss": loss, **curv}
            continue
        rows.append((how, float(np.max(np.abs(loss - ref["loss"]) / np.abs(ref["loss"]))),
                     abs(curv["max_eig"] - ref["max_eig"]) / abs(ref["max_eig"]),
                     abs(curv["trace"] - ref["trace"]) / abs(ref["trace"])))
    print(f"\n### Equality with 1 rank ({'GPU' if device else 'CPU'}; {grid}x{grid} surface, --precision fp32; "
          f"--at_center: top eigenvalue {ref['max_eig']:.6g}, trace {ref['trace']:.6g})\n")
    print("| launcher | ranks, per point | surface: largest relative difference | top eigenvalue | trace | "
          "target |")
    print("|---|---|---|---|---|---|")
    for how, s, e, t in rows:
        ok = "met" if s <= 1e-6 and e <= 1e-5 and t <= 1e-5 else "NOT MET"
        print(f"| {how} | 2, 2 | {s:.1e} | {e:.1e} | {t:.1e} | 1e-6, 1e-5, 1e-5: {ok} |")


def speed(work, ckpt, device, launchers, repeats):
    args = [*common(ckpt, device), "--at_center", "--tol", "1e-12", "--max_iter", "40", "--trace_samples", "40",
            "--trace_rel_se", "0"]
    times = {how: [] for how in ["one", *launchers]}
    products = {}
    for _ in range(repeats):
        for how in times:                      # alternate, so a change in the machine's load hits all alike
            wall, _ = launch(how, "plot_hessian_eigen.py", args, work)
            curv = json.load(open(os.path.join(work, f"{ckpt}_hessian.json")))
            times[how].append((curv["seconds"], wall))
            products[how] = curv["lanczos_products"] + curv["trace_samples"]
    base = statistics.median(s for s, _ in times["one"])
    print(f"\n### --at_center, 1 thread per rank, a fixed number of products ({'GPU' if device else 'CPU'}; "
          f"median of {repeats})\n")
    print("| launcher | ranks, per point | products | curvature s | wall s (with start-up) | speed-up | target |")
    print("|---|---|---|---|---|---|---|")
    for how, rows in times.items():
        s, w = statistics.median(r[0] for r in rows), statistics.median(r[1] for r in rows)
        ranks = "1, 1" if how == "one" else "2, 2"
        target = "-" if how == "one" else (">= 1.7x: " + ("met" if base / s >= 1.7 else "NOT MET"))
        print(f"| {'python (1 rank)' if how == 'one' else how} | {ranks} | {products[how]} | {s:.2f} | {w:.1f} | "
              f"{base / s:.2f}x | {target} |")


def describe():
    flags = ""
    try:
        info = subprocess.run(["lscpu"], capture_output=True, text=True).stdout
        model = next((ln.split(":", 1)[1].strip() for ln in info.splitlines() if ln.startswith("Model name")), "?")
        have = next((ln.split(":", 1)[1].split() for ln in info.splitlines() if ln.startswith("Flags")), [])
        flags = f"{model}; " + " ".join(f for f in ("avx2", "avx512f", "avx512_bf16", "amx_tile") if f in have)
    except OSError:
        pass
    import torch
    load = open("/proc/loadavg").read().split()[:3]
    return (f"# bench_scale: {time.strftime('%Y-%m-%d %H:%M')}, {platform.machine()}, {os.cpu_count()} cores "
            f"({flags}), load {' '.join(load)}, torch {torch.__version__}, "
            f"GPU: {torch.cuda.get_device_name() if torch.cuda.is_available() else 'none'}")


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--sections", default="equality,speed", help="equality,speed | gpu (default: equality,speed)")
    p.add_argument("--quick", action="store_true", help="3x3 grid, 1 repeat")
    p.add_argument("--repeats", type=int, default=3, help="speed: runs of each command (default: 3)")
    p.add_argument("--launchers", default="mpiexec,torchrun", help="mpiexec,torchrun (default: both)")
    a = p.parse_args(argv)
    launchers = [x for x in a.launchers.split(",") if x]
    print(describe(), flush=True)
    sections = a.sections.split(",")
    gpu = "gpu" in sections
    if gpu:
        import torch
        if not torch.cuda.is_available():
            print("\n(gpu: skipped, no CUDA GPU here)")
            return 0
    device = ["--cuda"] if gpu else []
    with tempfile.TemporaryDirectory() as work:
        ckpt = train(work)
        if gpu or "equality" in sections:
            equality(work, ckpt, device, launchers, 3 if a.quick else 5)
        if gpu or "speed" in sections:
            speed(work, ckpt, device, launchers, 1 if a.quick else a.repeats)
    return 0


if __name__ == "__main__":
    sys.exit(main())
