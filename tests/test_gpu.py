"""The engine on a CUDA GPU against the same command on the CPU in float32 (pytest marker `gpu`).

    pytest -m gpu tests/test_gpu.py                       # on a machine with a CUDA GPU
    LL_GPU_TESTS_ON_CPU=1 pytest tests/test_gpu.py        # no GPU: the same tests, device flags removed

Without CUDA every test here is skipped with one reason, so CI is unchanged. LL_GPU_TESTS_ON_CPU=1
runs the suite itself end to end on the CPU: `--cuda` is dropped and `--device cuda` becomes
`--device cpu` (CPU against CPU), and the tests that need a number of GPUs are skipped, saying so.

Each GPU surface is compared with the CPU's `--precision fp32` surface of the same command. The
tolerances, on every point of every map (losses relative to the CPU value; accuracies as the change
in the number of correctly classified images, which rounding moves only where an image's two top
class scores are within the arithmetic's error of each other):

- fp32 (TF32 off): GPU and CPU differ only in summation order and kernels, about 1e-6 relative
  per layer; rtol 1e-4 on losses (atol 1e-6 for losses near 0); a change of at most 2 images.
- default and tf32: TF32 rounds the operands of convolutions (and, for tf32, matmuls) to an 11-bit
  significand (unit roundoff 2^-11 = 4.9e-4) and accumulates in fp32: about 1e-3 relative on each
  layer's output. A loss's relative error is about the absolute error of the score gaps, so it
  grows with the scores' size; bf16 (8x coarser) moves this model's loss by up to 1.5e-2 relative
  (BENCHMARKS.md), which puts TF32 near 2e-3. rtol 1e-2 on losses (5x that),
  atol 1e-4; a change of at most 1% of the images (at least 2). On the randomly initialised
  ResNet, whose class scores are nearly tied, accuracy is compared in fp32 only.
- bf16: autocast rounds activations and weights to an 8-bit significand (2^-8 = 3.9e-3 per rounding,
  several per layer); on the trained digits CNN the CPU's bf16 loss differs from fp32 by up to 1.5e-2
  relative (BENCHMARKS.md), so rtol 5e-2, atol 2e-2 (losses near the minimum), and a change of at
  most 5% of the images (at least 3).

Hessian eigenvalues (Lanczos, --tol 1e-4, the same CPU-drawn start vector on both devices) must agree
to 1e-3 of the largest |eigenvalue|: each run is within about tol * |lambda| of the truth, which leaves
a factor 5 for fp32 rounding in the Hessian-vector products.
"""
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import sysconfig
import time
from dataclasses import dataclass

import h5py
import numpy as np
import pytest
import torch

import dataloader
from landscape import evaluation
import landscape
import model_loader
import plot_hessian_eigen
import plot_surface
import plot_trajectory
from cifar10 import main as trainer
from helpers import REPO, mpi_env, mpiexec, run_script

ON_CPU = os.environ.get("LL_GPU_TESTS_ON_CPU", "") not in ("", "0")
HAVE_CUDA = torch.cuda.is_available()
pytestmark = [pytest.mark.gpu,
              pytest.mark.skipif(not (HAVE_CUDA or ON_CPU),
                                 reason="no CUDA GPU visible to torch (LL_GPU_TESTS_ON_CPU=1 runs these tests on "
                                        "the CPU with the device flags removed)")]

FILTER = ["--xnorm", "filter", "--xignore", "biasbn", "--ynorm", "filter", "--yignore", "biasbn"]
DIGITS_GRID = ["--x=-1:1:5", "--y=-1:1:3"]   # non-square, so a (ny, nx) layout slip cannot pass


@dataclass(frozen=True)
class Tol:
    rtol: float          # on losses, relative to the CPU fp32 value
    atol: float          # on losses, absolute (losses near 0)
    flip_share: float    # accuracy: the share of the images whose classification may change
    min_flips: int       # ... but at least this many images


TOL = {"fp32": Tol(1e-4, 1e-6, 0.0, 2), "default": Tol(1e-2, 1e-4, 0.01, 2), "tf32": Tol(1e-2, 1e-4, 0.01, 2),
       "bf16": Tol(5e-2, 2e-2, 0.05, 3)}
EIG_RTOL = 1e-3  # of the largest |eigenvalue| (module docstring)


# ----------------------------------------------------------------------------- device flags
def on_device(args):
    """The GPU form of a command line: --cuda added (left out under LL_GPU_TESTS_ON_CPU)."""
    return list(args) if ON_CPU else [*args, "--cuda"]


def trainer_device():
    return "cpu" if ON_CPU else "cuda"


def need_gpus(n):
    """Skip (with the reason) unless n GPUs can be used."""
    if ON_CPU:
        pytest.skip(f"needs {n} GPUs: LL_GPU_TESTS_ON_CPU runs on the CPU, where a GPU count has no meaning")
    if torch.cuda.device_count() < n:
        pytest.skip(f"needs >= {n} GPUs; this machine has {torch.cuda.device_count()}")


def need_mpi():
    try:
        import mpi4py  # noqa: F401  (imports no MPI library yet)
    except ImportError:
        pytest.skip("mpi4py is not installed")
    if not mpiexec():
        pytest.skip("no mpiexec on this machine")


# ----------------------------------------------------------------------------- running and reading
def surface(args, surf, script=plot_surface):
    """Run a script's main() in this process (the code path of its command line); returns its maps."""
    assert script.main([*args, "--surf_file", str(surf)]) == 0
    return read_maps(surf)


def read_maps(path):
    """{name: array} of the surface file's value maps, plus 'sizes': {set: images}."""
    with h5py.File(path, "r") as f:
        maps = {k: f[k][()] for k in f if k.startswith(("train_", "test_")) or k in ("max_eig", "min_eig")}
        maps["sizes"] = {"train": int(f.attrs.get("train_size", 0)), "test": int(f.attrs.get("test_size", 0))}
    return maps


def assert_maps_close(got, ref, tol, what, accuracy=True):
    """Every map of `ref` within `tol` in `got`; every point computed."""
    names = [k for k in ref if k != "sizes" and not k.startswith(("max_eig", "min_eig"))]
    assert names, f"{what}: no maps to compare"
    for name in names:
        a, b = np.asarray(got[name], dtype=np.float64), np.asarray(ref[name], dtype=np.float64)
        assert a.shape == b.shape, f"{what} {name}: shape {a.shape} against {b.shape}"
        assert np.isfinite(a).all() and not (a == -1).any(), f"{what} {name}: missing or non-finite points"
        if name.endswith("_acc"):
            if accuracy:
                n = ref["sizes"][name.split("_")[0]]
                changed = np.abs(a - b).max() * n / 100.0  # correctly classified images, gained or lost
                allowed = max(tol.min_flips, tol.flip_share * n)
                assert changed <= allowed + 1e-6, (f"{what} {name}: {changed:.1f} of {n} images classified "
                                                   f"differently (allowed {allowed:.1f})")
        else:
            worst = np.max(np.abs(a - b) / (tol.atol + tol.rtol * np.abs(b)))
            assert worst <= 1.0, (f"{what} {name}: max |diff| {np.abs(a - b).max():.3g} is {worst:.2f}x the tolerance "
                                  f"(rtol {tol.rtol}, atol {tol.atol})")


# ----------------------------------------------------------------------------- digits_cnn, one process
def digits_args(ckpt, *extra):
    return ["--dataset", "digits", "--model", "digits_cnn", "--model_file", ckpt, *DIGITS_GRID, *FILTER, "--eval_test",
            *extra]


@pytest.fixture(scope="module")
def cpu_digits(tmp_path_factory, cnn_ckpt):
    """The CPU fp32 surface every digits_cnn GPU surface is compared with."""
    return surface(digits_args(cnn_ckpt, "--precision", "fp32"), tmp_path_factory.mktemp("cpu") / "s.h5")


@pytest.fixture(scope="module")
def gpu_digits_fp32(tmp_path_factory, cnn_ckpt):
    """One process on the GPU, fp32, batch 512 (fixed, so the MPI runs must give exactly these values)."""
    return surface(on_device(digits_args(cnn_ckpt, "--precision", "fp32", "--batch_size", "512")),
                   tmp_path_factory.mktemp("gpu") / "s.h5")


def test_one_process_fp32_matches_cpu(gpu_digits_fp32, cpu_digits):
    assert_maps_close(gpu_digits_fp32, cpu_digits, TOL["fp32"], "fp32")


@pytest.mark.parametrize("precision", ["default", "tf32", "bf16"])
def test_one_process_precision_matches_cpu_within_its_tolerance(tmp_path, cnn_ckpt, cpu_digits, precision):
    got = surface(on_device(digits_args(cnn_ckpt, "--precision", precision)), tmp_path / "s.h5")  # --batch_size auto
    assert_maps_close(got, cpu_digits, TOL[precision], precision)


@pytest.mark.parametrize("ranks", [2, 4])
def test_mpi_ranks_sharing_one_card_give_the_one_process_values(tmp_path, cnn_ckpt, gpu_digits_fp32, cpu_digits,
                                                                ranks):
    need_mpi()
    env = dict(mpi_env(), CUDA_VISIBLE_DEVICES="0") if not ON_CPU else mpi_env()  # one card, whatever the machine
    surf = tmp_path / "s.h5"
    r = run_script("plot_surface.py", ["--mpi", *on_device(digits_args(cnn_ckpt, "--precision", "fp32",
                                                                       "--batch_size", "512", "--surf_file", surf))],
                   mpi_ranks=ranks, env=env, timeout=300)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]
    assert f"on {ranks} rank(s)" in r.stdout
    if not ON_CPU:
        assert f"{ranks} ranks share 1 GPU(s)" in r.stdout, r.stdout
    got = read_maps(surf)
    for k in ("train_loss", "train_acc", "test_loss", "test_acc"):
        np.testing.assert_array_equal(got[k], gpu_digits_fp32[k], err_msg=f"{k}: {ranks} ranks against 1")
    assert_maps_close(got, cpu_digits, TOL["fp32"], f"{ranks} ranks")


def test_ngpu_data_parallel_matches_cpu(tmp_path, cnn_ckpt, cpu_digits):
    need_gpus(2)
    got = surface(on_device(digits_args(cnn_ckpt, "--precision", "fp32", "--ngpu", "2")), tmp_path / "s.h5")
    assert_maps_close(got, cpu_digits, TOL["fp32"], "--ngpu 2")


def missing_compiler():
    """Why torch.compile cannot build kernels for this run, or ''. (On a GPU, Triton builds them.)"""
    if not ON_CPU:
        return ""
    if not (os.environ.get("CXX") and shutil.which(os.environ["CXX"])) and not shutil.which("g++"):
        return "torch.compile on the CPU needs a C++ compiler (g++ or $CXX)"
    if not os.path.isfile(os.path.join(sysconfig.get_path("include"), "Python.h")):
        return "torch.compile on the CPU needs the Python development headers (Python.h)"
    return ""


def test_compile_matches_cpu(tmp_path, cnn_ckpt, cpu_digits, capsys):
    if missing_compiler():
        pytest.skip(missing_compiler())
    got = surface(on_device(digits_args(cnn_ckpt, "--precision", "fp32", "--compile")), tmp_path / "s.h5")
    assert re.search(r"torch.compile took [\d.]+ s", capsys.readouterr().out)
    assert_maps_close(got, cpu_digits, TOL["fp32"], "--compile")


def test_points_per_pass_matches_cpu(tmp_path, cnn_ckpt, cpu_digits):
    got = surface(on_device(digits_args(cnn_ckpt, "--precision", "fp32", "--points_per_pass", "4")),
                  tmp_path / "s.h5")
    assert_maps_close(got, cpu_digits, TOL["fp32"], "--points_per_pass 4")


def test_python_api_on_the_device_matches_cpu(cnn_ckpt):
    net = model_loader.load("digits", "digits_cnn", cnn_ckpt)
    data = dataloader.load_tensors("digits")
    kw = dict(x="-1:1:3", y="-1:1:3", directions="filter", ignore="biasbn", seed=5, precision="fp32", comm=None)
    ref = landscape.surface(net, (data.train_x, data.train_y), device="cpu", **kw)
    got = landscape.surface(net, (data.train_x, data.train_y), device=trainer_device(), **kw)
    maps = lambda r: {**r.values, "sizes": {"train": len(data.train_y)}}
    assert_maps_close(maps(got), maps(ref), TOL["fp32"], "landscape.surface")


# ----------------------------------------------------------------------------- ResNet-20 on fake CIFAR-10
@pytest.fixture(scope="module")
def resnet(tmp_path_factory):
    """A randomly initialised ResNet-20, 256 CIFAR-shaped images, and its CPU fp32 surface."""
    root = tmp_path_factory.mktemp("resnet")
    subprocess.run([sys.executable, os.path.join(REPO, "tests", "fake_cifar10.py"), str(root / "data"),
                    "--train", "256", "--test", "32", "--seed", "1"], check=True)
    torch.manual_seed(0)
    ckpt = str(root / "resnet20.t7")
    torch.save({"state_dict": model_loader.build("resnet20").state_dict(), "epoch": 0, "acc": 0.0}, ckpt)
    args = ["--model", "resnet20", "--model_file", ckpt, "--datapath", str(root / "data"), "--x=-1:1:3",
            "--y=-1:1:3", *FILTER]
    return args, surface([*args, "--precision", "fp32"], root / "cpu.h5")


@pytest.fixture(scope="module")
def gpu_resnet_fp32(tmp_path_factory, resnet):
    args, _ = resnet
    return surface(on_device([*args, "--precision", "fp32"]), tmp_path_factory.mktemp("gpu_resnet") / "s.h5")


def test_resnet_fp32_matches_cpu(gpu_resnet_fp32, resnet):
    assert_maps_close(gpu_resnet_fp32, resnet[1], TOL["fp32"], "ResNet-20 fp32")


def test_resnet_default_precision_matches_cpu(tmp_path, resnet):
    args, cpu = resnet
    got = surface(on_device([*args, "--precision", "default"]), tmp_path / "s.h5")
    assert_maps_close(got, cpu, TOL["default"], "ResNet-20 default", accuracy=False)  # scores nearly tied


def test_bn_folding_and_channels_last_change_nothing_on_the_device(tmp_path, resnet, gpu_resnet_fp32):
    """Default (BN folded, channels_last) against the plain model, both on the device in fp32."""
    args, cpu = resnet
    plain = surface(on_device([*args, "--precision", "fp32", "--no_fold_bn", "--memory_format", "contiguous"]),
                    tmp_path / "s.h5")
    assert_maps_close(gpu_resnet_fp32, plain, TOL["fp32"], "folded + channels_last against plain")
    assert_maps_close(plain, cpu, TOL["fp32"], "plain against CPU")


# ----------------------------------------------------------------------------- Hessian eigenvalues
def assert_eigs_close(got, ref, what):
    scale = max(np.abs(ref["max_eig"]).max(), 1e-12)
    for k in ("max_eig", "min_eig"):
        diff = np.abs(np.asarray(got[k], np.float64) - np.asarray(ref[k], np.float64)).max()
        assert diff <= EIG_RTOL * scale, f"{what} {k}: max |diff| {diff:.3g}, largest |eigenvalue| {scale:.3g}"


def test_hessian_eigenvalue_map_matches_cpu(tmp_path, cnn_ckpt):
    args = ["--dataset", "digits", "--model", "digits_cnn", "--model_file", cnn_ckpt, "--x=-1:1:3", *FILTER[:4],
            "--data_split", "8", "--tol", "1e-4"]  # 180 images: the CPU side is the slow one
    ref = surface(args, tmp_path / "cpu.h5", plot_hessian_eigen)
    got = surface(on_device(args), tmp_path / "gpu.h5", plot_hessian_eigen)
    assert (got["max_eig"] >= got["min_eig"]).all()
    assert_eigs_close(got, ref, "eigenvalue map")


def test_hessian_at_center_matches_cpu(tmp_path, cnn_ckpt):
    results = {}
    for name, device_args in (("cpu", list), ("gpu", on_device)):
        os.makedirs(tmp_path / name)
        ckpt = str(tmp_path / name / "model.t7")  # the result lands beside the checkpoint
        shutil.copy(cnn_ckpt, ckpt)
        args = ["--dataset", "digits", "--model", "digits_cnn", "--model_file", ckpt, "--at_center", "--top_k", "2",
                "--trace_samples", "10", "--tol", "1e-4", "--data_split", "4"]
        assert plot_hessian_eigen.main(device_args(args)) == 0
        with open(ckpt + "_hessian.json") as f:
            results[name] = json.load(f)
    cpu, gpu = results["cpu"], results["gpu"]
    scale = abs(cpu["eigenvalues"][0])
    np.testing.assert_allclose(gpu["eigenvalues"], cpu["eigenvalues"], rtol=0, atol=EIG_RTOL * scale)
    assert abs(gpu["min_eig"] - cpu["min_eig"]) <= EIG_RTOL * scale
    # The same Rademacher probes (drawn on the CPU) on both devices: only the products' rounding differs.
    spread = cpu["trace_stderr"] * np.sqrt(cpu["trace_samples"])  # the per-probe values' standard deviation
    assert gpu["trace_samples"] == cpu["trace_samples"]
    assert abs(gpu["trace"] - cpu["trace"]) <= EIG_RTOL * (abs(cpu["trace"]) + spread), (gpu["trace"], cpu["trace"])


# ----------------------------------------------------------------------------- trajectory, trainer, resume
def test_figure_9_contours_on_the_device_match_cpu(tmp_path, cnn_run):
    folder = str(tmp_path / "run")
    shutil.copytree(cnn_run, folder, ignore=shutil.ignore_patterns("PCA_*"))  # never write into the shared run
    assert plot_trajectory.main(["--dataset", "digits", "--model", "digits_cnn", "--model_folder", folder,
                                 "--max_epoch", "4", "--ignore", "biasbn", "--format", "png"]) == 0
    dir_file = os.path.join(folder, "PCA_weights_ignore=biasbn_save_epoch=1", "directions.h5")
    proj = dir_file + "_proj_cos.h5"
    with h5py.File(proj, "r") as f:
        span = 1.2 * max(np.abs(f["proj_xcoord"][()]).max(), np.abs(f["proj_ycoord"][()]).max())
    args = ["--dataset", "digits", "--model", "digits_cnn", "--model_file", os.path.join(folder, "model_4.t7"),
            "--dir_file", dir_file, f"--x={-span}:{span}:5", f"--y={-span}:{span}:4"]
    ref = surface([*args, "--precision", "fp32"], tmp_path / "cpu.h5")
    got = surface(on_device([*args, "--proj_file", proj, "--plot", "--format", "png"]), tmp_path / "gpu.h5")
    assert_maps_close(got, ref, TOL["default"], "Figure 9 contours")
    assert os.path.getsize(proj + "_train_loss_2dcontour_proj.png") > 5000


def read_log(folder):
    """{epoch: (loss, train_err, test_err, test_loss)} from a trainer's log.out."""
    rows = {}
    with open(os.path.join(folder, "log.out")) as f:
        for line in f:
            m = re.match(r"e: (\d+) loss: (\S+) train_err: (\S+) test_top1: (\S+) test_loss (\S+)", line)
            rows[int(m.group(1))] = tuple(float(v) for v in m.groups()[1:])
    return rows


def test_trainer_on_cuda_learns_and_its_checkpoints_load_on_the_cpu(tmp_path):
    common = ["--dataset", "digits", "--model", "digits_cnn", "--epochs", "6", "--batch_size", "64", "--lr", "0.1",
              "--save_epoch", "6", "--threads", "2"]
    logs = {}
    for device in ("cpu", trainer_device()):
        argv = [*common, "--save", str(tmp_path / device), "--device", device]
        assert trainer.main(argv) == 0
        run_name = trainer.name_save_folder(trainer.build_parser().parse_args(argv))
        logs[device] = os.path.join(str(tmp_path / device), run_name)
    cpu, gpu = read_log(logs["cpu"]), read_log(logs[trainer_device()])
    # Epoch 0 evaluates the same initial weights (drawn on the CPU) in PyTorch's default precision.
    np.testing.assert_allclose([gpu[0][0], gpu[0][3]], [cpu[0][0], cpu[0][3]], rtol=TOL["default"].rtol)
    assert gpu[6][2] <= 10.0 and cpu[6][2] <= 10.0, (gpu[6], cpu[6])  # both learn: >= 90% test accuracy
    # The device's checkpoint loads on the CPU and scores there what the device scored.
    ckpt = os.path.join(logs[trainer_device()], "model_6.t7")
    stored = torch.load(ckpt, map_location="cpu", weights_only=True)["acc"]
    net = model_loader.load("digits", "digits_cnn", ckpt)
    data = dataloader.load_tensors("digits")
    _, acc = evaluation.evaluate(net, data.test_x, data.test_y, "crossentropy", 1024)
    tol = TOL["default"]
    assert abs(acc - stored) * len(data.test_y) / 100 <= max(tol.min_flips, tol.flip_share * len(data.test_y))


def done_count(path):
    if not os.path.exists(path):
        return 0
    with h5py.File(path, "r") as f:  # must open, whatever moment the writer died at
        return int((f["train_loss"][()] != -1).sum()) if "train_loss" in f else 0


def resume_args(ckpt, n):
    return ["--dataset", "digits", "--model", "digits_mlp", "--model_file", ckpt, f"--x=-1:1:{n}", f"--y=-1:1:{n}",
            *FILTER, "--batch_size", "16", "--threads", "1", "--flush_seconds", "0.3"]


def grid_side_for(seconds, ckpt, tmp_path):
    """The square grid that takes about `seconds` here, from a timed 3x3 run in this process."""
    cfg = plot_surface.parse_config(on_device(resume_args(ckpt, 3)) + ["--surf_file", str(tmp_path / "time.h5")])
    plot_surface.run(cfg, None, 0, 1)
    return int(np.clip(np.sqrt(seconds / cfg.stats["sec_per_point"]), 7, 121))


def test_resume_after_kill_9_mid_grid_equals_a_clean_run(tmp_path, mlp_ckpt):
    n = grid_side_for(4.0, mlp_ckpt, tmp_path)
    cmd = lambda surf: [sys.executable, os.path.join(REPO, "plot_surface.py"),
                        *on_device(resume_args(mlp_ckpt, n)), "--surf_file", str(surf)]
    r = subprocess.run(cmd(tmp_path / "clean.h5"), capture_output=True, text=True, env=mpi_env(), timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    clean = read_maps(tmp_path / "clean.h5")
    surf = tmp_path / "killed.h5"
    proc = subprocess.Popen(cmd(surf), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=mpi_env(),
                            start_new_session=True)
    deadline = time.time() + 120
    while proc.poll() is None and time.time() < deadline and done_count(surf) == 0:
        time.sleep(0.02)  # strike right after the first points reach the file
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    done = done_count(surf)
    assert 0 < done < n * n, f"the kill did not land mid-grid ({done} of {n * n} points written)"
    r = subprocess.run(cmd(surf), capture_output=True, text=True, env=mpi_env(), timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    assert f"{done} of {n * n} points done" in r.stdout  # it resumed rather than starting over
    got = read_maps(surf)
    for k in ("train_loss", "train_acc"):
        np.testing.assert_array_equal(got[k], clean[k], err_msg=k)
