"""Data-parallel points and streamed data on a CUDA GPU (pytest marker `gpu`; skipped without CUDA).

    pytest -m gpu tests/test_parallel_scale_gpu.py          # on a machine with a CUDA GPU (bench/device_check.sh runs it)

What only a GPU exercises: streamed batches pinned in the prefetch thread and copied with
non_blocking=True; device tensors summed over a point's group with torch.distributed (two ranks on
one card: gloo through the host, as NCCL refuses two ranks on one card; a card per rank: NCCL);
torch.distributed joined from an MPI world (`join_from_mpi`). Each run is compared with the same
command on one rank on the GPU, both in --precision fp32 (the same kernels; only the shards' batch
boundaries and the order of the sums differ): rtol 1e-5 on losses, top eigenvalue and trace.
"""
import json
import os
import shutil
import subprocess
import sys

import h5py
import numpy as np
import pytest
import torch

import landscape
from helpers import REPO, Passes, load_net, mpi_env, mpiexec, run_script

pytestmark = [pytest.mark.gpu, pytest.mark.skipif(not torch.cuda.is_available(),
                                                  reason="no CUDA GPU visible to torch")]
TORCHRUN = os.path.join(os.path.dirname(sys.executable), "torchrun")
RTOL = 1e-5


@pytest.fixture
def work(tmp_path, mlp_ckpt, monkeypatch):
    shutil.copy(mlp_ckpt, tmp_path / "m.t7")
    monkeypatch.chdir(tmp_path)
    return tmp_path


def surface_args(surf, *extra):
    return ["--dataset", "digits", "--model", "digits_mlp", "--model_file", "m.t7", "--x=-1:1:3", "--y=-1:1:3",
            "--xnorm", "filter", "--ynorm", "filter", "--threads", "1", "--batch_size", "128", "--precision", "fp32",
            "--cuda", "--eval_test", "--surf_file", surf, *extra]


CENTER = ["--dataset", "digits", "--model", "digits_mlp", "--model_file", "m.t7", "--at_center", "--threads", "1",
          "--trace_samples", "20", "--trace_rel_se", "0", "--cuda"]


def losses(path):
    with h5py.File(path, "r") as f:
        return {k: f[k][()] for k in ("train_loss", "test_loss")}


def one_card_reference(work):
    r = run_script("plot_surface.py", surface_args("one.h5"), cwd=work)
    assert r.returncode == 0, r.stderr[-2000:]
    r = run_script("plot_hessian_eigen.py", CENTER, cwd=work)
    assert r.returncode == 0, r.stderr[-2000:]
    return losses(work / "one.h5"), json.loads((work / "m.t7_hessian.json").read_text())


def compare(work, ref, curv):
    got = losses(work / "two.h5")
    for k in ref:
        np.testing.assert_allclose(got[k], ref[k], rtol=RTOL, err_msg=k)
    two = json.loads((work / "m.t7_hessian.json").read_text())
    assert two["ranks_per_point"] == 2
    for key in ("max_eig", "trace"):
        assert two[key] == pytest.approx(curv[key], rel=RTOL), key




def test_streamed_batches_on_the_gpu_equal_the_device_resident_set(mlp_ckpt):
    import dataloader
    d = dataloader.load_tensors("digits")
    net = load_net("digits_mlp", mlp_ckpt)
    kw = dict(x="-1:1:3", y="-1:1:3", device="cuda", batch_size=128, precision="fp32")
    ref = landscape.surface(net, (d.train_x, d.train_y), **kw)
    got = landscape.surface(net, Passes(d.train_x, d.train_y, 128), data_in_memory="no", **kw)
    assert (ref.attrs["data_in_memory"], got.attrs["data_in_memory"]) == ("yes", "no")
    np.testing.assert_allclose(got["train_loss"], ref["train_loss"], rtol=RTOL)
    h_ref = landscape.hessian(net, (d.train_x, d.train_y), device="cuda", batch_size=128, trace_samples=10)
    h_got = landscape.hessian(net, Passes(d.train_x, d.train_y, 128), device="cuda", batch_size=128,
                              trace_samples=10, data_in_memory="no")
    assert h_got.eigenvalues[0] == pytest.approx(h_ref.eigenvalues[0], rel=RTOL)


def two_mpi_ranks_against_one(work):
    """The surface and --at_center under mpiexec -n 2 (one group of 2) against one rank on the card."""
    ref, curv = one_card_reference(work)
    r = run_script("plot_surface.py", ["--mpi", *surface_args("two.h5", "--ranks_per_point", "2")], cwd=work,
                   mpi_ranks=2)
    assert r.returncode == 0, r.stderr[-3000:]
    r = run_script("plot_hessian_eigen.py", ["--mpi", *CENTER], cwd=work, mpi_ranks=2)
    assert r.returncode == 0, r.stderr[-3000:]
    compare(work, ref, curv)


def test_two_mpi_ranks_on_one_card_share_each_point(work):
    if not mpiexec():
        pytest.skip("no mpiexec")
    two_mpi_ranks_against_one(work)


def test_two_torchrun_ranks_on_the_gpu_share_each_point(work):
    if not os.path.exists(TORCHRUN):
        pytest.skip("no torchrun")
    ref, curv = one_card_reference(work)
    env = {k: v for k, v in mpi_env().items() if k not in ("RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT")}
    for script, args in (("plot_surface.py", surface_args("two.h5", "--ranks_per_point", "2")),
                         ("plot_hessian_eigen.py", CENTER)):
        r = subprocess.run([TORCHRUN, "--standalone", "--nproc_per_node", "2", os.path.join(REPO, script), *args],
                           cwd=work, capture_output=True, text=True, timeout=600, env=env)
        assert r.returncode == 0, r.stderr[-3000:]
    compare(work, ref, curv)


def test_a_card_per_rank_sums_with_nccl(work):
    if torch.cuda.device_count() < 2:
        pytest.skip(f"needs 2 GPUs for NCCL (one per rank); this machine has {torch.cuda.device_count()}")
    if not mpiexec():
        pytest.skip("no mpiexec")
    two_mpi_ranks_against_one(work)
