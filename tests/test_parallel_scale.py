"""Data-parallel points, data larger than memory, and any launcher (--ranks_per_point, --data_in_memory,
torchrun): real `mpiexec -n 2`, real `torchrun --nproc_per_node 2`, each compared with one process.

Tolerances: groups of K ranks add their shards' float64 sums of float32 batch losses, so a surface
value differs from one rank's only by float32 rounding in batches of other sizes, about 1e-7 relative:
1e-6 is asked. Curvature adds the float32 Hessian-vector products of the shards (one all-reduce per
product): 1e-5 relative on the top eigenvalue and the trace.
"""
import contextlib
import io
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
import plot_hessian_eigen
import plot_surface
from helpers import REPO, Passes, load_net, mpi_env, mpiexec, run_script, snapshot
from landscape import errors
from landscape.evaluation import batches

TORCHRUN = os.path.join(os.path.dirname(sys.executable), "torchrun")
FILTER = ["--xnorm", "filter", "--ynorm", "filter"]

DATA_CODE = '''
import os
import torch
from landscape.zoo import data as d

def rank():
    return int(os.environ.get("OMPI_COMM_WORLD_RANK", os.environ.get("RANK", "0")))

class Batches:                      # a re-iterable of batches (no length)
    def __init__(self, x, y, size=100, shrink=0):
        self.x, self.y, self.size, self.shrink, self.passes = x, y, size, shrink, 0
    def __iter__(self):
        self.passes += 1
        n = len(self.y) - (self.shrink if self.passes > 1 else 0)
        for s in range(0, n, self.size):
            yield self.x[s:min(s + self.size, n)], self.y[s:min(s + self.size, n)]

def digits():
    e = d.load_digits()
    return e, (e.test_x, e.test_y)

def dataset():
    e, test = digits()
    return torch.utils.data.TensorDataset(e.train_x, e.train_y), test

def iterable():
    e, test = digits()
    return Batches(e.train_x, e.train_y), test

def empty():
    e, test = digits()
    return Batches(e.train_x[:0], e.train_y[:0]), test

def second_pass():
    e, test = digits()
    return Batches(e.train_x, e.train_y, shrink=7), test

def generator():
    e, test = digits()
    return ((e.train_x[s:s + 100], e.train_y[s:s + 100]) for s in range(0, 1437, 100)), test

class Flaky(torch.utils.data.Dataset):   # rank 1 fails on its second pass
    def __init__(self, x, y):
        self.x, self.y, self.calls = x, y, 0
    def __len__(self):
        return len(self.y)
    def __getitem__(self, i):
        self.calls += 1
        if rank() == 1 and self.calls > 1000:
            raise OSError("disk gone on rank 1")
        return self.x[i], self.y[i]

def flaky():
    e, test = digits()
    return Flaky(e.train_x, e.train_y), test

def per_rank():
    e, test = digits()
    n = len(e.train_y) - rank()
    return torch.utils.data.TensorDataset(e.train_x[:n], e.train_y[:n]), test
'''


@pytest.fixture
def work(tmp_path, mlp_ckpt, monkeypatch):
    shutil.copy(mlp_ckpt, tmp_path / "m.t7")
    (tmp_path / "user_data.py").write_text(DATA_CODE)
    monkeypatch.chdir(tmp_path)
    return tmp_path


def grid(*extra):
    return ["--model", "digits_mlp", "--model_file", "m.t7", "--x=-1:1:3", "--y=-1:1:3", *FILTER, "--threads", "1",
            "--batch_size", "128", *extra]


def one_rank(surf, *extra, script=plot_surface):
    """The same command in this process, one rank: its maps."""
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
        assert script.main([*extra, "--surf_file", str(surf)]) == 0
    return maps(surf)


def maps(path):
    with h5py.File(path, "r") as f:
        return {k: f[k][()] for k in f if k.startswith(("train_", "test_")) or k in ("max_eig", "min_eig")}, \
            dict(f.attrs)


def assert_close(a, b, rtol):
    assert a.keys() == b.keys()
    for k in a:
        np.testing.assert_allclose(b[k], a[k], rtol=rtol, atol=0, err_msg=k)


def need_torchrun():
    if not os.path.exists(TORCHRUN):
        pytest.skip("no torchrun next to this Python")


def torchrun(args, cwd, timeout=300):
    """`torchrun --standalone --nproc_per_node 2 <script> args` (a free port, no other rendezvous)."""
    env = {k: v for k, v in mpi_env().items() if k not in ("RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT")}
    return subprocess.run([TORCHRUN, "--standalone", "--nproc_per_node", "2", *[str(a) for a in args]], cwd=cwd,
                          capture_output=True, text=True, timeout=timeout, env=env)


# ----------------------------------------------------------------------------- mpiexec -n 2: groups of 1 and 2
@pytest.mark.parametrize("k, dataset, in_memory", [
    (1, "digits", "auto"),
    (2, "digits", "auto"),
    (2, "user_data.py:iterable", "no"),     # each rank streams every 2nd batch
    (2, "user_data.py:dataset", "no"),      # each rank reads its half only (a Subset)
])
def test_groups_under_mpiexec_give_the_one_rank_surface(work, k, dataset, in_memory):
    args = grid("--dataset", dataset, "--eval_test", "--data_in_memory", in_memory)
    ref, _ = one_rank(work / "one.h5", "--dataset", "digits", *grid("--eval_test"))
    r = run_script("plot_surface.py", ["--mpi", *args, "--ranks_per_point", k, "--surf_file", "two.h5"], cwd=work,
                   mpi_ranks=2)
    assert r.returncode == 0, r.stderr[-2000:]
    assert ("1 group(s) of 2" in r.stdout) == (k == 2)
    got, attrs = maps(work / "two.h5")
    assert_close(ref, got, 0 if k == 1 else 1e-6)
    assert attrs["ranks_per_point"] == k and attrs["data_in_memory"] == ("no" if in_memory == "no" else "yes")
    assert attrs["train_size"] == 1437


def test_at_center_on_two_ranks_gives_the_one_rank_curvature(work):
    args = ["--dataset", "digits", "--model", "digits_mlp", "--model_file", "m.t7", "--at_center", "--threads", "1",
            "--trace_samples", "20"]
    with contextlib.redirect_stdout(io.StringIO()):
        assert plot_hessian_eigen.main(args) == 0
    one = json.loads((work / "m.t7_hessian.json").read_text())
    r = run_script("plot_hessian_eigen.py", ["--mpi", *args], cwd=work, mpi_ranks=2)
    assert r.returncode == 0, r.stderr[-2000:]
    assert "on 2 rank(s), 2 per point" in r.stdout
    two = json.loads((work / "m.t7_hessian.json").read_text())
    assert two["ranks_per_point"] == 2 and two["train_size"] == 1437
    for key in ("max_eig", "trace", "min_eig"):
        assert two[key] == pytest.approx(one[key], rel=1e-5), key
    assert two["lanczos_products"] == one["lanczos_products"]


@pytest.mark.parametrize("extra", [
    ["--curvature", "ggn", "--per_layer"],
    ["--curvature", "ef"],                                   # its trace is exact: ||G||^2 / N summed over shards
    ["--curvature", "ggn", "--hvp", "finite_difference"],
    ["--hvp", "finite_difference", "--data_in_memory", "no"],
])
def test_every_curvature_on_two_ranks_gives_the_one_rank_values(work, extra):
    """GGN, empirical Fisher and finite-difference products summed over a group of 2 (each rank its half of
    the data): the one-rank numbers, per layer too."""
    args = ["--dataset", "digits", "--model", "digits_mlp", "--model_file", "m.t7", "--at_center", "--threads", "1",
            "--trace_samples", "20", "--out", "c.h5", *extra]
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
        assert plot_hessian_eigen.main(args) == 0
    name = "m.t7_" + (extra[1] if extra[0] == "--curvature" else "hessian") + ".json"
    one = json.loads((work / name).read_text())
    r = run_script("plot_hessian_eigen.py", ["--mpi", *args], cwd=work, mpi_ranks=2)
    assert r.returncode == 0, r.stderr[-2000:]
    assert "on 2 rank(s), 2 per point" in r.stdout
    two = json.loads((work / name).read_text())
    assert (two["curvature"], two["hvp"]) == (one["curvature"], one["hvp"])
    assert two["ranks_per_point"] == 2 and two["train_size"] == 1437
    rel = 1e-3 if "finite_difference" in extra else 1e-5
    for key in ("max_eig", "trace"):
        assert two[key] == pytest.approx(one[key], rel=rel), key
    assert abs(two["min_eig"] - one["min_eig"]) <= rel * abs(one["max_eig"])
    for a, b in zip(one.get("per_layer", []), two.get("per_layer", [])):
        assert a["layer"] == b["layer"]
        assert b["top_eig"] == pytest.approx(a["top_eig"], rel=1e-5)
        assert b["trace"] == pytest.approx(a["trace"], rel=1e-5)


@pytest.mark.parametrize("curvature", ["ggn", "ef"])
def test_streamed_ggn_and_fisher_equal_in_memory(mlp_ckpt, digits_data, curvature):
    net = load_net("digits_mlp", mlp_ckpt)
    kw = dict(device="cpu", batch_size=100, trace_samples=10, trace_rel_se=None, curvature=curvature)
    ref = landscape.hessian(net, digits_data, **kw)
    got = landscape.hessian(net, Passes(*digits_data, 100), data_in_memory="no", **kw)
    assert (ref.data_in_memory, got.data_in_memory, got.examples) == ("yes", "no", 600)
    assert got.eigenvalues[0] == pytest.approx(ref.eigenvalues[0], rel=1e-5)
    assert got.trace == pytest.approx(ref.trace, rel=1e-5)


def test_ggn_eigenvalue_map_with_groups_of_two(work):
    args = ["--dataset", "digits", "--model", "digits_mlp", "--model_file", "m.t7", "--x=-1:1:3", "--xnorm", "filter",
            "--threads", "1", "--curvature", "ggn"]
    ref, _ = one_rank(work / "one.h5", *args, script=plot_hessian_eigen)
    r = run_script("plot_hessian_eigen.py", ["--mpi", *args, "--ranks_per_point", "2", "--surf_file", "two.h5"],
                   cwd=work, mpi_ranks=2)
    assert r.returncode == 0, r.stderr[-2000:]
    got, attrs = maps(work / "two.h5")
    assert attrs["curvature"] == "ggn"
    np.testing.assert_allclose(got["max_eig"], ref["max_eig"], rtol=1e-5)
    assert (got["min_eig"] >= -1e-5 * abs(got["max_eig"])).all()     # the GGN is positive semi-definite


def test_eigenvalue_map_with_groups_of_two(work):
    args = ["--dataset", "digits", "--model", "digits_mlp", "--model_file", "m.t7", "--x=-1:1:3", "--xnorm", "filter",
            "--threads", "1"]
    ref, _ = one_rank(work / "one.h5", *args, script=plot_hessian_eigen)
    r = run_script("plot_hessian_eigen.py", ["--mpi", *args, "--ranks_per_point", "2", "--surf_file", "two.h5"],
                   cwd=work, mpi_ranks=2)
    assert r.returncode == 0, r.stderr[-2000:]
    got, _ = maps(work / "two.h5")
    np.testing.assert_allclose(got["max_eig"], ref["max_eig"], rtol=1e-5)
    np.testing.assert_allclose(got["min_eig"], ref["min_eig"], rtol=1e-4, atol=1e-6 * abs(ref["max_eig"]).max())


SCHEDULER_PROBE = r"""
import sys, time
sys.path.insert(0, sys.argv[1])
import numpy as np
from landscape.parallel import dist
from landscape.grid import scheduler
comm, rank, nproc = dist.setup_ranks(True, 30)
k = int(sys.argv[2])
group = dist.point_groups(comm, k)
computed, stored = [], {}

def compute(idx):
    if group.index == group.count - 1:
        time.sleep(0.02 * len(idx))          # the last group is slower: the others take more points
    computed.extend(int(i) for i in idx)
    return np.full((len(idx), 1), float(group.index))

def store(idx, vals):
    for i, v in zip(idx, vals[:, 0]):
        assert int(i) not in stored, i
        stored[int(i)] = v
pending = np.arange(40)[::-1].copy() if rank == 0 else None
scheduler.run(comm, group, pending, compute, store, lambda: None)
everyone = comm.allgather(sorted(computed))
if rank == 0:
    print("RESULT", (sorted(stored) == list(range(40)), [len(c) for c in everyone], sorted(set(stored.values()))),
          flush=True)
dist.leave(comm)
"""


@pytest.mark.parametrize("launcher, k", [("mpiexec", 2), ("torchrun", 1), ("torchrun", 2)])
def test_points_are_split_dynamically_over_groups_each_once(tmp_path, launcher, k):
    """Every point is stored exactly once; in a group every rank computes the leader's chunks; a
    faster group takes more of them (MPI: the leaders' scheduler; torchrun: the store's counter)."""
    probe = tmp_path / "probe.py"
    probe.write_text(SCHEDULER_PROBE)
    if launcher == "mpiexec":
        r = subprocess.run([mpiexec(), "-n", "4", "--oversubscribe", sys.executable, str(probe), REPO, str(k)],
                           capture_output=True, text=True, env=mpi_env(), timeout=180)
        nproc = 4
    else:
        need_torchrun()
        r = torchrun([probe, REPO, k], tmp_path)
        nproc = 2
    assert r.returncode == 0, r.stdout + r.stderr[-3000:]
    line = next(ln for ln in r.stdout.splitlines() if ln.startswith("RESULT"))
    every_point_once, counts, groups_used = eval(line[len("RESULT "):])
    assert every_point_once
    for g in range(nproc // k):          # the ranks of a group computed the same points
        assert len(set(counts[g * k:(g + 1) * k])) == 1, counts
    assert sum(counts) == 40 * k
    if nproc // k > 1:
        assert groups_used == [float(g) for g in range(nproc // k)]
        assert counts[0] > counts[-1], counts   # the slow last group took fewer


# ----------------------------------------------------------------------------- torchrun --nproc_per_node 2
def test_torchrun_two_processes_give_the_one_rank_surface_and_curvature(work):
    need_torchrun()
    args = grid("--dataset", "digits")
    ref, _ = one_rank(work / "one.h5", *args)
    r = torchrun([os.path.join(REPO, "plot_surface.py"), *args, "--ranks_per_point", "2", "--surf_file", "two.h5"],
                 work)
    assert r.returncode == 0, r.stderr[-3000:]
    assert "1 group(s) of 2" in r.stdout
    got, attrs = maps(work / "two.h5")
    assert_close(ref, got, 1e-6)
    assert attrs["ranks_per_point"] == 2
    center = ["--dataset", "digits", "--model", "digits_mlp", "--model_file", "m.t7", "--at_center", "--threads", "1",
              "--trace_samples", "20"]
    with contextlib.redirect_stdout(io.StringIO()):
        assert plot_hessian_eigen.main(center) == 0
    one = json.loads((work / "m.t7_hessian.json").read_text())
    r = torchrun([os.path.join(REPO, "plot_hessian_eigen.py"), *center], work)
    assert r.returncode == 0, r.stderr[-3000:]
    two = json.loads((work / "m.t7_hessian.json").read_text())
    assert two["ranks"] == 2 and two["ranks_per_point"] == 2
    for key in ("max_eig", "trace"):
        assert two[key] == pytest.approx(one[key], rel=1e-5), key


def test_slurm_torchrun_template_runs_torchrun_per_node(work):
    """script/slurm_torchrun.sbatch run by bash, with an srun that starts its command here (one node):
    a real torchrun of 2 ranks in groups of 2, whose surface equals one rank's."""
    need_torchrun()
    import socket
    bin_dir = work / "bin"
    bin_dir.mkdir()
    (bin_dir / "srun").write_text('#!/bin/bash\nwhile [ "${1#-}" != "$1" ]; do shift; done\nexec "$@"\n')
    (bin_dir / "scontrol").write_text("#!/bin/bash\necho \"scontrol $*\" >> requeue.log\n")
    for f in ("srun", "scontrol"):
        (bin_dir / f).chmod(0o755)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = dict(mpi_env(), PATH=f"{bin_dir}:{os.path.dirname(sys.executable)}:{os.environ['PATH']}", LL_DIR=REPO,
               NNODES="1", NPROC="2", HEAD="127.0.0.1", RDZV_PORT=str(port), DEVICE="", DATASET="digits",
               MODEL="digits_mlp", MODEL_FILE=str(work / "m.t7"), XRANGE="-1:1:3", YRANGE="-1:1:3",
               DIRECTIONS="--xnorm filter --ynorm filter", RANKS_PER_POINT="2", THREADS="1",
               EXTRA=f"--batch_size 128 --surf_file {work / 'two.h5'}", SLURM_JOB_ID="77")
    r = subprocess.run(["bash", os.path.join(REPO, "script", "slurm_torchrun.sbatch")], cwd=work, env=env,
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stdout + r.stderr[-3000:]
    assert "1 group(s) of 2" in r.stdout and "plot_surface.py exited with 0" in r.stdout
    assert not (work / "requeue.log").exists()
    ref, _ = one_rank(work / "one.h5", *grid("--dataset", "digits"))
    got, _ = maps(work / "two.h5")
    assert_close(ref, got, 1e-6)


# ----------------------------------------------------------------------------- streamed data (one process)
@pytest.fixture(scope="module")
def digits_data():
    import dataloader
    d = dataloader.load_tensors("digits")
    return d.train_x[:600], d.train_y[:600]


class Samples(torch.utils.data.IterableDataset):
    def __init__(self, x, y):
        self.x, self.y = x, y

    def __iter__(self):
        return iter(zip(self.x, self.y))


def sources(x, y):
    ds = torch.utils.data.TensorDataset(x, y)
    return {"dataset": ds, "shuffled loader": torch.utils.data.DataLoader(ds, batch_size=50, shuffle=True),
            "iterable": Passes(x, y, 70), "iterable dataset": Samples(x, y), "tensors": (x, y)}


@pytest.mark.parametrize("kind", ["dataset", "shuffled loader", "iterable", "iterable dataset", "tensors"])
def test_streamed_data_gives_the_in_memory_surface(mlp_ckpt, digits_data, kind):
    net = load_net("digits_mlp", mlp_ckpt)
    ref = landscape.surface(net, digits_data, x="-1:1:3", y="-1:1:3", device="cpu", batch_size=64)
    assert ref.attrs["data_in_memory"] == "yes"
    r = landscape.surface(net, sources(*digits_data)[kind], x="-1:1:3", y="-1:1:3", device="cpu", batch_size=64,
                          data_in_memory="no")
    assert r.attrs["data_in_memory"] == "no" and r.attrs["train_size"] == 600
    for key in ("train_loss", "train_acc"):
        np.testing.assert_allclose(r[key], ref[key], rtol=1e-6, atol=0)


def test_auto_streams_what_does_not_fit_the_memory_budget(mlp_ckpt, digits_data, monkeypatch):
    net = load_net("digits_mlp", mlp_ckpt)
    data = torch.utils.data.TensorDataset(*digits_data)
    fits = landscape.surface(net, data, x="-1:1:3", device="cpu", batch_size=64)
    monkeypatch.setattr(batches, "HOST_MEMORY_SHARE", 1e-9)    # a budget of a few bytes
    streamed = landscape.surface(net, data, x="-1:1:3", device="cpu", batch_size=64)
    iterable = landscape.surface(net, Passes(*digits_data, 64), x="-1:1:3", device="cpu", batch_size=64)
    assert (fits.attrs["data_in_memory"], streamed.attrs["data_in_memory"], iterable.attrs["data_in_memory"]) == \
        ("yes", "no", "no")
    np.testing.assert_allclose(streamed["train_loss"], fits["train_loss"], rtol=1e-6)
    np.testing.assert_allclose(iterable["train_loss"], fits["train_loss"], rtol=1e-6)


def test_streamed_curvature_equals_in_memory(mlp_ckpt, digits_data):
    net = load_net("digits_mlp", mlp_ckpt)
    kw = dict(device="cpu", batch_size=100, trace_samples=10, trace_rel_se=None)
    ref = landscape.hessian(net, digits_data, **kw)
    got = landscape.hessian(net, Passes(*digits_data, 100), data_in_memory="no", **kw)
    assert (ref.data_in_memory, got.data_in_memory, got.examples) == ("yes", "no", 600)
    assert got.eigenvalues[0] == pytest.approx(ref.eigenvalues[0], rel=1e-5)
    assert got.trace == pytest.approx(ref.trace, rel=1e-5)


def test_shards_cover_every_example_once():
    x, y = torch.arange(10.0).view(10, 1), torch.arange(10)
    ds = torch.utils.data.TensorDataset(x, y)
    for src in (batches.classify(ds), batches.classify((x, y)), batches.classify(Passes(x, y, 3))):
        seen = []
        for g in range(3):
            shard, _ = batches.shard(src, g, 3, 4)
            seen += [int(v) for _, yb in shard for v in yb]
        assert sorted(seen) == list(range(10))


def test_release_file_pages_drops_a_memmaps_resident_pages(tmp_path):
    """Touched pages of a read-only memory map count in RSS; releasing them keeps a pass over a file
    larger than memory from growing the process."""
    np.lib.format.open_memmap(tmp_path / "x.npy", mode="w+", dtype=np.float32, shape=(96 << 18,))[:] = 1.0
    code = ("import sys, numpy as np; sys.path.insert(0, %r)\n"
            "from landscape.evaluation.batches import release_file_pages\n"
            "rss = lambda: int(next(l for l in open('/proc/self/status') if l.startswith('VmRSS')).split()[1]) >> 10\n"
            "x = np.load(%r, mmap_mode='r'); s = float(x.sum()); a = rss(); n = release_file_pages(); b = rss()\n"
            "print(s, a, b, n >> 20)" % (REPO, str(tmp_path / "x.npy")))
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    total, before, after, released = out.stdout.split()
    assert float(total) == 96 << 18 and int(released) >= 96
    assert int(before) - int(after) > 64, out.stdout       # MB


# ----------------------------------------------------------------------------- bad input: one line, exit 2, no file
def refuse(main, args, *words):
    before = snapshot(os.getcwd())
    err = io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
        rc = errors.run_cli(main, [str(a) for a in args])
    text = err.getvalue().strip()
    assert rc == 2 and len(text.splitlines()) == 1 and text.startswith("error: "), (rc, text)
    for w in words:
        assert w in text, (w, text)
    assert snapshot(os.getcwd()) == before


@pytest.mark.parametrize("extra, words", [
    (["--dataset", "digits", "--ranks_per_point", "2"], ["--ranks_per_point 2 must divide the number of ranks (1)"]),
    (["--dataset", "digits", "--ranks_per_point", "-1"], ["--ranks_per_point -1"]),
    (["--dataset", "digits", "--data_in_memory", "maybe"], ["--data_in_memory", "maybe"]),
    (["--dataset", "digits", "--rendezvous_timeout", "0"], ["--rendezvous_timeout"]),
    (["--dataset", "user_data.py:empty", "--data_in_memory", "no"], ["the train data yielded no examples"]),
    (["--dataset", "user_data.py:empty"], ["the train data yielded no examples"]),
    (["--dataset", "user_data.py:second_pass", "--data_in_memory", "no"],
     ["1430 examples on its second pass but 1437 on the first"]),
    (["--dataset", "user_data.py:generator"], ["iterator", "read only once"]),
    (["--dataset", "user_data.py:iterable", "--data_split", "2"], ["--data_split", "tensors"]),
    (["--dataset", "user_data.py:iterable", "--xdir", "hessian"], ["hessian", "tensors"]),
])
def test_bad_scale_inputs_are_refused(work, extra, words):
    refuse(plot_surface.main, grid(*extra), *words)


def test_at_center_refuses_groups_that_do_not_divide_the_ranks(work):
    refuse(plot_hessian_eigen.main, ["--dataset", "digits", "--model", "digits_mlp", "--model_file", "m.t7",
                                     "--at_center", "--ranks_per_point", "2"], "must divide the number of ranks (1)")


def mpi_refusal(work, args, *words):
    before = snapshot(work)
    r = run_script("plot_surface.py", ["--mpi", *args, "--surf_file", "s.h5"], cwd=work, mpi_ranks=2)
    ours = [ln for ln in r.stderr.splitlines() if ln.startswith("error")]
    assert r.returncode == 2 and len(ours) == 1, r.stderr
    assert "Traceback" not in r.stderr and all(w in ours[0] for w in words), ours
    assert snapshot(work) == before


def test_mpiexec_refuses_groups_that_do_not_divide_the_ranks(work):
    mpi_refusal(work, grid("--dataset", "digits", "--ranks_per_point", "3"), "--ranks_per_point 3 must divide", "(2)")


def test_mpiexec_refuses_data_whose_length_differs_between_ranks(work):
    mpi_refusal(work, grid("--dataset", "user_data.py:per_rank", "--ranks_per_point", "2"),
                "1437 examples on rank 0 but 1436 on rank 1")


@pytest.mark.parametrize("rank", [0, 1])
def test_torchrun_job_with_a_missing_rendezvous_is_one_line(work, rank):
    """A torchrun environment whose peer never comes (rank 1: nobody serves the store; rank 0: nobody
    joins it): one line within the rendezvous timeout, exit 2, nothing written."""
    import socket
    with socket.socket() as s:              # a port nobody listens on (for rank 1) or a free one (rank 0)
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = dict(mpi_env(), RANK=str(rank), WORLD_SIZE="2", MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port),
               TORCHELASTIC_RUN_ID="test", LOCAL_RANK=str(rank))
    before = snapshot(work)
    r = run_script("plot_surface.py", grid("--dataset", "digits", "--rendezvous_timeout", "2", "--surf_file",
                                           "s.h5"), cwd=work, env=env, timeout=120)
    assert r.returncode == 2 and len(r.stderr.strip().splitlines()) == 1, r.stderr
    assert r.stderr.startswith("error: ") and "rendezvous" in r.stderr and "within 2 s" in r.stderr
    assert snapshot(work) == before


@pytest.mark.parametrize("launcher", ["mpiexec", "torchrun"])
def test_a_rank_failing_mid_run_ends_the_job_in_one_line(work, launcher):
    """Rank 1's data fails at its second point while rank 0 waits in the point's all-reduce: one
    line (rank 1's), every rank ends, no hang; the surface file stays."""
    args = [*grid("--dataset", "user_data.py:flaky", "--data_in_memory", "no", "--ranks_per_point", "2"),
            "--surf_file", "s.h5"]
    if launcher == "mpiexec":
        r = run_script("plot_surface.py", ["--mpi", *args], cwd=work, mpi_ranks=2, timeout=120)
    else:
        need_torchrun()
        r = torchrun([os.path.join(REPO, "plot_surface.py"), *args], work, timeout=120)
    ours = [ln for ln in r.stderr.replace("\r", "\n").splitlines() if "error" in ln and "rank" in ln
            and not ln.startswith(("MPI_ABORT", "E1", "torch"))]
    assert r.returncode != 0 and len(ours) == 1 and "error on rank 1: disk gone on rank 1" in ours[0], r.stderr
    assert os.path.exists(work / "s.h5")     # (a lock left by the killed rank 0 frees itself: its pid is dead)


def test_the_api_refuses_bad_scale_arguments(digits_data):
    net = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(64, 10))
    for kwargs, words in ((dict(ranks_per_point=0), "ranks_per_point 0"),
                          (dict(ranks_per_point=2), "ranks_per_point 2 must divide the number of ranks"),
                          (dict(data_in_memory="maybe"), "data_in_memory 'maybe'")):
        with pytest.raises(landscape.LandscapeError, match=words):
            landscape.surface(net, digits_data, x="-1:1:3", device="cpu", **kwargs)
    for data, words in ((Passes(digits_data[0][:0], digits_data[1][:0], 10), "yielded no examples"),
                        (iter([digits_data]), "read only once"), ([1, 2, 3], "batch must be an .inputs, targets")):
        with pytest.raises(landscape.LandscapeError, match=words):
            landscape.surface(net, data, x="-1:1:3", device="cpu")
    with pytest.raises(landscape.LandscapeError, match="ranks_per_point 3"):
        landscape.hessian(net, digits_data, device="cpu", ranks_per_point=3)


# ----------------------------------------------------------------------------- BN recalibration needs the whole set
@pytest.fixture
def cnn_work(tmp_path, cnn_ckpt, monkeypatch):
    shutil.copy(cnn_ckpt, tmp_path / "c.t7")
    monkeypatch.chdir(tmp_path)
    return tmp_path


def cnn_line(*extra):
    return ["--dataset", "digits", "--model", "digits_cnn", "--model_file", "c.t7", "--x=-1:1:3", "--threads", "1",
            "--batch_size", "128", "--xnorm", "filter", "--bn_recalibrate", *extra]


def test_bn_recalibrate_refuses_streamed_data(cnn_work):
    refuse(plot_surface.main, cnn_line("--data_in_memory", "no"), "--bn_recalibrate", "streamed")


def test_bn_recalibrate_refuses_groups_of_ranks_under_mpiexec(cnn_work):
    mpi_refusal(cnn_work, cnn_line("--ranks_per_point", "2"), "--bn_recalibrate", "--ranks_per_point")


def test_api_bn_recalibrate_refuses_streamed_data(tmp_path, cnn_ckpt, digits_data):
    before = snapshot(tmp_path)
    with pytest.raises(landscape.LandscapeError, match="streamed"):
        landscape.surface(load_net("digits_cnn", cnn_ckpt), Passes(*digits_data, 100), x="-1:1:3",
                          bn_recalibrate=True, data_in_memory="no", out=str(tmp_path / "o.h5"))
    assert snapshot(tmp_path) == before
