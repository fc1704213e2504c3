"""Running on clusters: node-local ranks, threads and GPUs per rank, and the batch scripts in script/.

GPUs are faked (a stand-in for the CUDA calls), MPI is real (mpiexec -n 2), and the Slurm template is
run for real by bash with stand-ins for srun and scontrol, interrupted with SIGTERM and requeued.
"""
import glob
import os
import signal
import subprocess
import sys
import time
from types import SimpleNamespace

import h5py
import numpy as np
import pytest
import torch

import model_loader
import mpi4pytorch as m
import plot_surface
from helpers import REPO, mpi_env, mpiexec
from landscape.errors import UserError

SCRIPT_DIR = os.path.join(REPO, "script")
REFERENCE_SCRIPTS = sorted(glob.glob(os.path.join(SCRIPT_DIR, "[12]d_*.sh")))
SLURM_TEMPLATES = [os.path.join(SCRIPT_DIR, f) for f in ("slurm_1node_4gpu.sbatch", "slurm_multinode.sbatch")]
LAUNCHER_VARS = [v for pair in m.LAUNCHER_VARIABLES for v in pair] + [
    "SLURM_LOCALID", "SLURM_STEP_ID", "SLURM_STEPID", "SLURM_NODEID", *m.SLURM_SIZE_VARIABLES]


@pytest.fixture
def no_launcher(monkeypatch):
    """An environment without any launcher's variables (as a plain `python` run sees it)."""
    for v in LAUNCHER_VARS:
        monkeypatch.delenv(v, raising=False)
    return monkeypatch


# ----------------------------------------------------------------------------- node-local ranks
@pytest.mark.parametrize("env, expected", [
    ({}, None),
    ({"OMPI_COMM_WORLD_LOCAL_RANK": "3", "OMPI_COMM_WORLD_LOCAL_SIZE": "4"}, (3, 4)),
    ({"MPI_LOCALRANKID": "1", "MPI_LOCALNRANKS": "2"}, (1, 2)),
    ({"MV2_COMM_WORLD_LOCAL_RANK": "0", "MV2_COMM_WORLD_LOCAL_SIZE": "8"}, (0, 8)),
    ({"PMI_LOCAL_RANK": "5", "PMI_LOCAL_SIZE": "6"}, (5, 6)),
    ({"SLURM_LOCALID": "2", "SLURM_STEP_ID": "0", "SLURM_NTASKS_PER_NODE": "4"}, (2, 4)),
    ({"SLURM_LOCALID": "0", "SLURM_STEPID": "1", "SLURM_NODEID": "3", "SLURM_STEP_TASKS_PER_NODE": "2(x3),1"}, (0, 1)),
    ({"SLURM_LOCALID": "1", "SLURM_STEP_ID": "0", "SLURM_NODEID": "0", "SLURM_TASKS_PER_NODE": "4(x2)"}, (1, 4)),
    # the batch script itself: SLURM_LOCALID=0 and the job's tasks per node, but no step
    ({"SLURM_LOCALID": "0", "SLURM_NTASKS_PER_NODE": "4", "SLURM_TASKS_PER_NODE": "4"}, None),
    # mpirun inside a Slurm allocation: the MPI launcher's own variables win
    ({"OMPI_COMM_WORLD_LOCAL_RANK": "1", "OMPI_COMM_WORLD_LOCAL_SIZE": "2", "SLURM_LOCALID": "0",
      "SLURM_STEP_ID": "0", "SLURM_STEP_TASKS_PER_NODE": "1"}, (1, 2)),
    ({"OMPI_COMM_WORLD_LOCAL_RANK": "2"}, (2, 3)),  # size missing: at least rank + 1
])
def test_launcher_local_reads_each_launchers_variables(env, expected):
    assert m.launcher_local(env) == expected


def test_tasks_on_node_expands_slurm_lists():
    assert [m.tasks_on_node("2(x3),1", i) for i in range(4)] == [2, 2, 2, 1]
    assert m.tasks_on_node("4(x16)", None) == 4
    assert m.tasks_on_node("3,2", None) is None and m.tasks_on_node("garbage", 0) is None


def test_local_rank_and_size_without_mpi_come_from_the_environment(no_launcher):
    assert (m.local_rank(None), m.local_size(None)) == (0, 1)
    no_launcher.setenv("SLURM_LOCALID", "3")
    no_launcher.setenv("SLURM_STEP_ID", "0")
    no_launcher.setenv("SLURM_STEP_TASKS_PER_NODE", "4")
    assert (m.local_rank(None), m.local_size(None)) == (3, 4)


MPI_PROBE = r"""
import sys
sys.path.insert(0, sys.argv[1])
import mpi4pytorch as m
from landscape.errors import UserError

class Cards:  # a node with 4 GPUs; with per_rank, each rank sees its own single one
    def __init__(self, rank, per_rank=False, broken=None):
        self.rank, self.per_rank, self.broken = rank, per_rank, broken
    def available(self): return True
    def count(self): return 1 if self.per_rank else 4
    def identity(self, i): return f"gpu-{self.rank if self.per_rank else i}"
    def probe(self, i):
        if self.broken == self.rank: raise RuntimeError("CUDA error: device busy")

comm, rank, n = m.setup_mpi(True)
out = [rank, m.local_rank(comm), m.local_size(comm), m.local_rank(None), m.local_size(None),
       m.default_threads(comm), sorted(m.own_cores()), m.pick_device(True, 1, comm, Cards(rank))[1],
       m.pick_device(True, 1, comm, Cards(rank, per_rank=True))[1]]
try:
    m.agree(comm, lambda: m.pick_device(True, 1, comm, Cards(rank, broken=1)))
    out.append("no error")
except UserError as e:
    out.append(type(e).__name__ + ": " + str(e))
print("RESULT", out, flush=True)
"""


def test_local_ranks_threads_and_gpus_under_mpiexec(tmp_path):
    probe = tmp_path / "probe.py"
    probe.write_text(MPI_PROBE)
    r = subprocess.run([mpiexec(), "-n", "2", "--oversubscribe", sys.executable, str(probe), REPO],
                       capture_output=True, text=True, env=mpi_env(), timeout=120)
    assert r.returncode == 0, r.stdout + r.stderr
    results = sorted(eval(line[len("RESULT "):]) for line in r.stdout.splitlines() if line.startswith("RESULT"))
    cores = [set(res[6]) for res in results]
    for rank, res in enumerate(results):
        assert res[:5] == [rank, rank, 2, rank, 2]  # MPI's view and the launcher's variables agree
        sharing = sum(1 for c in cores if c & cores[rank])  # ranks whose cores overlap this one's
        assert res[5] == max(1, len(cores[rank]) // sharing)
        assert res[7] == [rank]          # 2 ranks seeing the same 4 cards: one each
        assert res[8] == [0]             # ranks bound to their own card: each uses the one it sees
    # one rank's card fails: every rank stops, only rank 0 reports, naming rank 1 and its card
    assert ": rank 1 on " in results[0][9] and not results[0][9].startswith("QuietExit")
    assert "cannot use GPU 1" in results[0][9] and "device busy" in results[0][9]
    assert results[1][9].startswith("QuietExit")


# ----------------------------------------------------------------------------- threads
@pytest.mark.parametrize("n_mine, node_cores, ranks, expected", [
    (64, 64, 4, 16),   # not bound: the node's cores are shared out
    (64, 64, 1, 64),   # one process on the node: every core
    (16, 64, 4, 16),   # bound by the launcher to 16 cores: all of them
    (2, 2, 4, 1),      # more ranks than cores: at least one thread
])
def test_threads_from_count(n_mine, node_cores, ranks, expected):
    assert m.threads_from_count(n_mine, node_cores, ranks) == expected


def test_threads_from_peers_shares_only_overlapping_cores():
    node = set(range(64))
    assert m.threads_from_peers(node, [node] * 4) == 16                     # unbound ranks
    own = [set(range(16 * i, 16 * i + 16)) for i in range(4)]
    assert m.threads_from_peers(own[1], own) == 16                          # bound to their own cores
    sockets = [set(range(32))] * 2 + [set(range(32, 64))] * 2
    assert m.threads_from_peers(sockets[0], sockets) == 16                  # bound to a socket, 2 per socket
    assert m.threads_from_peers({0}, [{0}] * 8) == 1


def test_default_threads_without_mpi_uses_affinity_and_local_size(no_launcher):
    no_launcher.setattr(os, "sched_getaffinity", lambda pid: set(range(64)))
    no_launcher.setattr(os, "cpu_count", lambda: 64)
    assert m.default_threads(None) == 64
    no_launcher.setenv("OMPI_COMM_WORLD_LOCAL_RANK", "0")
    no_launcher.setenv("OMPI_COMM_WORLD_LOCAL_SIZE", "4")
    assert m.default_threads(None) == 16
    no_launcher.setattr(os, "sched_getaffinity", lambda pid: set(range(8, 24)))  # bound to 16 cores
    assert m.default_threads(None) == 16
    no_launcher.setattr(os, "sched_getaffinity", lambda pid: {5})
    assert m.default_threads(None) == 1


# ----------------------------------------------------------------------------- GPUs
class FakeCards:
    """A node's GPUs as pick_device sees them; `broken` cards fail their probe."""

    def __init__(self, count=4, available=True, broken=()):
        self.n, self.ok, self.broken, self.probed = count, available, set(broken), []

    def available(self):
        return self.ok

    def count(self):
        return self.n

    def identity(self, i):
        return f"GPU-uuid-{i}"

    def probe(self, i):
        self.probed.append(i)
        if i in self.broken:
            raise RuntimeError("CUDA error: all CUDA-capable devices are busy or unavailable\nmore detail")


def as_local_rank(monkeypatch, rank, size):
    monkeypatch.setenv("OMPI_COMM_WORLD_LOCAL_RANK", str(rank))
    monkeypatch.setenv("OMPI_COMM_WORLD_LOCAL_SIZE", str(size))


def test_pick_device_without_cuda_is_the_cpu():
    device, ids = m.pick_device(False, 1, None, FakeCards(available=False))
    assert device.type == "cpu" and ids == []


def test_pick_device_cuda_unavailable_is_a_user_error(no_launcher):
    with pytest.raises(UserError, match="no CUDA GPU is available"):
        m.pick_device(True, 1, None, FakeCards(available=False))
    with pytest.raises(UserError, match="no CUDA GPU is available"):
        m.pick_device(True, 1, None, FakeCards(count=0))


@pytest.mark.parametrize("rank, size, ngpu, expected", [
    (0, 4, 1, [0]), (3, 4, 1, [3]), (1, 2, 2, [2, 3]), (0, 1, 4, [0, 1, 2, 3]), (0, 1, 1, [0]),
])
def test_pick_device_gives_each_rank_its_own_cards(no_launcher, capsys, rank, size, ngpu, expected):
    as_local_rank(no_launcher, rank, size)
    cards = FakeCards(4)
    device, ids = m.pick_device(True, ngpu, None, cards)
    assert ids == expected and str(device) == f"cuda:{expected[0]}"
    assert sorted(cards.probed) == expected and cards.probed[-1] == expected[0]  # first card left current
    assert capsys.readouterr().out == ""


def test_pick_device_shares_cards_round_robin_with_one_gpu_per_rank(no_launcher, capsys):
    got = []
    for rank in range(8):
        as_local_rank(no_launcher, rank, 8)
        got += m.pick_device(True, 1, None, FakeCards(4))[1]
    assert got == [0, 1, 2, 3, 0, 1, 2, 3]
    as_local_rank(no_launcher, 0, 6)
    m.pick_device(True, 1, None, FakeCards(4))
    out = capsys.readouterr().out.splitlines()
    assert out[-1].startswith("6 ranks share 4 GPU(s) on") and "up to 2 ranks per GPU" in out[-1]


@pytest.mark.parametrize("size, ngpu, count, words", [
    (4, 2, 4, ["--ngpu 2", "4 rank(s)", "needs 8 GPUs", "4 are visible", "at most 2 rank(s) per node"]),
    (1, 4, 2, ["--ngpu 4", "needs 4 GPUs", "2 are visible", "--ngpu 2 or fewer"]),
])
def test_pick_device_never_shares_several_gpus_per_rank(no_launcher, size, ngpu, count, words):
    as_local_rank(no_launcher, 0, size)
    with pytest.raises(UserError) as e:
        m.pick_device(True, ngpu, None, FakeCards(count))
    for w in words:
        assert w in str(e.value)


def test_pick_device_unusable_card_names_rank_host_and_card(no_launcher, monkeypatch):
    as_local_rank(no_launcher, 2, 4)
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "0,1,2,3")
    with pytest.raises(UserError) as e:
        m.pick_device(True, 1, None, FakeCards(4, broken=[2]))
    msg = str(e.value)
    assert msg.startswith("rank 0 on ") and "cannot use GPU 2 (CUDA_VISIBLE_DEVICES=0,1,2,3)" in msg
    assert "busy or unavailable" in msg and "\n" not in msg
    assert m.socket.gethostname() in msg


def test_pick_device_default_cards_go_through_torch_cuda(no_launcher, monkeypatch):
    """The real CUDA calls, monkeypatched: availability, count, and a card that set_device refuses."""
    import torch
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(UserError, match="no CUDA GPU"):
        m.pick_device(True, 1, None)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    monkeypatch.setattr(torch.cuda, "get_device_properties", lambda i: SimpleNamespace(uuid=f"u{i}"))

    def refuse(i):
        raise RuntimeError("CUDA error: invalid device ordinal")
    monkeypatch.setattr(torch.cuda, "set_device", refuse)
    with pytest.raises(UserError, match="rank 0 on .* cannot use GPU 0.*invalid device ordinal"):
        m.pick_device(True, 1, None)


@pytest.mark.parametrize("slot, sharers, count, ngpu, expected", [
    (0, 1, 1, 1, ([0], False)), (2, 3, 8, 2, ([4, 5], False)), (4, 5, 2, 1, ([0], True)),
    (1, 3, 2, 1, ([1], True)),
])
def test_assign_cards_table(slot, sharers, count, ngpu, expected):
    assert m.assign_cards(slot, sharers, count, ngpu) == expected


# ----------------------------------------------------------------------------- the scripts' command lines
def run_recorded(tmp_path, script, env=None):
    """Run `script` with bash, with stand-ins for mpirun/srun/scontrol that record their argv and
    succeed; returns the recorded argvs in the order they ran."""
    record, bin_dir = tmp_path / f"calls{len(os.listdir(tmp_path))}", tmp_path / "bin"
    record.mkdir()
    bin_dir.mkdir(exist_ok=True)
    for name in ("mpirun", "srun", "scontrol"):
        stub = bin_dir / name
        stub.write_text(f'#!/bin/bash\nn=$(ls {record} | wc -l)\n'
                        f'printf "%s\\0" {name} "$@" > {record}/$(printf %04d $n)\n')
        stub.chmod(0o755)
    env = dict(os.environ, PATH=f"{bin_dir}:{os.environ['PATH']}", LL_DIR=str(tmp_path), **(env or {}))
    r = subprocess.run(["bash", script], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stdout + r.stderr
    return [open(p).read().split("\0")[:-1] for p in sorted(glob.glob(str(record / "*")))]


def surface_args(argv):
    """The arguments after `python plot_surface.py` in a launcher's argv."""
    i = argv.index("plot_surface.py")
    assert argv[i - 1] == "python"
    return argv[i + 1:]


def is_range(text):
    """min:max:num with num a whole number >= 1."""
    lo, hi, num = (float(v) for v in text.split(":"))
    return num >= 1 and num == int(num)


def test_reference_scripts_are_all_there():
    names = sorted(os.path.basename(p) for p in REFERENCE_SCRIPTS)
    assert names == ["1d_linear_interpolation_resnet56.sh", "1d_linear_interpolation_vgg9.sh",
                     "1d_loss_curve_resnet56.sh", "1d_loss_curve_resnet56_noshort.sh", "1d_loss_curve_vgg9.sh",
                     "2d_contour_resnet56.sh", "2d_contour_resnet_noshort.sh", "2d_contour_vgg9.sh"]


@pytest.mark.parametrize("script", REFERENCE_SCRIPTS, ids=os.path.basename)
def test_reference_command_lines_parse(tmp_path, script):
    calls = run_recorded(tmp_path, script)
    assert len(calls) == open(script).read().count("python plot_surface.py") > 0  # every line ran
    for argv in calls:
        assert argv[:3] in (["mpirun", "-n", "4"], ["mpirun", "-n", "3"])
        args = plot_surface.build_parser().parse_args(surface_args(argv))
        assert args.mpi and args.cuda and args.model_file.endswith("/model_300.t7")
        assert args.model in ("resnet56", "vgg9", "resnet56_noshort", "resnet110_noshort")
        assert is_range(args.x) and (args.y is None or is_range(args.y))


@pytest.mark.parametrize("script", SLURM_TEMPLATES + [os.path.join(SCRIPT_DIR, "mpirun_hostfile.sh")],
                         ids=os.path.basename)
@pytest.mark.parametrize("env, dims", [
    ({}, 2),
    ({"YRANGE": "", "XRANGE": "-0.5:1.5:401", "DEVICE": "", "EXTRA": "--plot --eval_test --batch_size 512",
      "MODEL_FILE": "a dir/with spaces/model_300.t7", "SLURM_CPUS_PER_TASK": "8"}, 1),
], ids=["defaults", "overridden"])
def test_template_command_lines_parse(tmp_path, script, env, dims):
    calls = run_recorded(tmp_path, script, env)
    assert len(calls) == 1 and calls[0][0] in ("srun", "mpirun")  # one run, and no requeue of a finished grid
    args = plot_surface.build_parser().parse_args(surface_args(calls[0]))
    assert args.mpi and args.cuda == ("DEVICE" not in env) and (args.y is not None) == (dims == 2)
    assert args.model_file == env.get("MODEL_FILE", args.model_file)
    assert is_range(args.x) and (args.y is None or is_range(args.y))
    if "SLURM_CPUS_PER_TASK" in env and script.endswith(".sbatch"):
        assert args.threads == 8


@pytest.mark.parametrize("script", SLURM_TEMPLATES + [os.path.join(SCRIPT_DIR, "slurm_torchrun.sbatch")],
                         ids=os.path.basename)
def test_slurm_templates_ask_for_requeue_and_an_early_sigterm(script):
    lines = open(script).read().splitlines()
    directives = [i for i, line in enumerate(lines) if line.startswith("#SBATCH")]
    assert "#SBATCH --requeue" in lines and any(line.startswith("#SBATCH --signal=B:TERM@") for line in lines)
    for i in directives:  # every directive is explained by the comment line(s) above it
        assert lines[i - 1].startswith("# ") or lines[i - 1].startswith("#SBATCH"), lines[i]
        assert any(lines[j].startswith("# ") for j in range(i - 1, min(directives) - 2, -1))
    text = "\n".join(lines)
    assert "trap forward_term TERM" in text and 'scontrol requeue "$SLURM_JOB_ID"' in text


# One command of each kind in the reference scripts (interpolation with --dir_type states; a 1D
# filter-normalised curve along states; 2D contours), dry-run on random-weight checkpoints and a fake
# CIFAR-10, without --mpi --cuda (no GPU here, and MPI must not start inside the test process).
DRY_RUNS = [("1d_linear_interpolation_vgg9.sh", 0), ("1d_loss_curve_resnet56.sh", 0), ("2d_contour_vgg9.sh", 0)]


@pytest.fixture(scope="module")
def reference_tree(tmp_path_factory):
    """A folder laid out as the reference scripts expect: cifar10/data (fake) and cifar10/trained_nets."""
    root = tmp_path_factory.mktemp("reference_tree")
    subprocess.run([sys.executable, os.path.join(REPO, "tests", "fake_cifar10.py"),
                    str(root / "cifar10" / "data"), "--train", "16", "--test", "8", "--seed", "1"], check=True)
    return root


@pytest.mark.parametrize("script, which", DRY_RUNS)
def test_reference_command_lines_dry_run(tmp_path, reference_tree, monkeypatch, capsys, script, which):
    argv = run_recorded(tmp_path, os.path.join(SCRIPT_DIR, script))[which]
    args = [a for a in surface_args(argv) if a not in ("--mpi", "--cuda")]
    parsed = plot_surface.build_parser().parse_args(args)
    for seed, path in enumerate(p for p in (parsed.model_file, parsed.model_file2) if p):
        torch.manual_seed(seed)
        os.makedirs(reference_tree / os.path.dirname(path), exist_ok=True)
        torch.save({"state_dict": model_loader.build(parsed.model).state_dict(), "epoch": 300},
                   reference_tree / path)
    monkeypatch.chdir(reference_tree)
    before = signal.getsignal(signal.SIGTERM)
    try:
        assert plot_surface.main(args + ["--dry_run", "--threads", "2"]) == 0
    finally:
        signal.signal(signal.SIGTERM, before)  # main() installs its SIGTERM handler in this process
    assert "would be created" in capsys.readouterr().out
    assert not glob.glob(str(reference_tree / "**" / "*.h5"), recursive=True)  # a dry run writes nothing


# ----------------------------------------------------------------------------- a requeued Slurm job resumes
N = 61  # a 61 x 61 digits_mlp grid at batch 128: a few seconds on 2 ranks, flushed every 0.3 s
KEYS = ("train_loss", "train_acc")


def grid_flags(ckpt, surf):
    return {"DATASET": "digits", "MODEL": "digits_mlp", "MODEL_FILE": ckpt, "XRANGE": f"-1:1:{N}",
            "YRANGE": f"-1:1:{N}", "DEVICE": "", "THREADS": "1",
            "EXTRA": f"--flush_seconds 0.3 --batch_size 128 --surf_file {surf}"}


def read_values(path):
    with h5py.File(path, "r") as f:
        return {k: f[k][()] for k in KEYS}


def points_done(path):
    try:
        return int((read_values(path)["train_loss"] != -1).sum())
    except (OSError, KeyError):
        return 0


def slurm_stubs(bin_dir, requeue_log):
    """srun: start the command under mpiexec with 2 ranks; scontrol/sbatch: record the request."""
    os.makedirs(bin_dir, exist_ok=True)
    stubs = {
        "srun": f'#!/bin/bash\nwhile [ $# -gt 0 ] && [ "${{1#-}}" != "$1" ]; do shift; done\n'
                f'exec {mpiexec()} -n 2 --oversubscribe "$@"\n',
        "scontrol": f'#!/bin/bash\necho "scontrol $*" >> {requeue_log}\n',
        "sbatch": f'#!/bin/bash\necho "sbatch $*" >> {requeue_log}\n',
    }
    for name, text in stubs.items():
        path = os.path.join(bin_dir, name)
        with open(path, "w") as f:
            f.write(text)
        os.chmod(path, 0o755)


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory, mlp_ckpt):
    """The values of the same grid computed in one go, by one process (this one)."""
    path = str(tmp_path_factory.mktemp("uninterrupted") / "clean.h5")
    f = grid_flags(mlp_ckpt, path)
    argv = ["--dataset", "digits", "--model", "digits_mlp", "--model_file", mlp_ckpt, f"--x={f['XRANGE']}",
            f"--y={f['YRANGE']}", "--dir_type", "weights", "--xnorm", "filter", "--xignore", "biasbn",
            "--ynorm", "filter", "--yignore", "biasbn", "--threads", "1", "--batch_size", "128", "--surf_file", path]
    before, threads = signal.getsignal(signal.SIGTERM), torch.get_num_threads()
    try:
        assert plot_surface.main(argv) == 0
    finally:
        signal.signal(signal.SIGTERM, before)
        torch.set_num_threads(threads)
    return read_values(path)


def test_slurm_job_terminated_mid_grid_requeues_and_resumes(tmp_path, mlp_ckpt, uninterrupted):
    ckpt = str(tmp_path / "model.t7")  # a private copy: the direction file is written beside it
    with open(mlp_ckpt, "rb") as src, open(ckpt, "wb") as dst:
        dst.write(src.read())
    surf, log = str(tmp_path / "surface.h5"), str(tmp_path / "requeue.log")
    slurm_stubs(str(tmp_path / "bin"), log)
    env = dict(mpi_env(), PATH=f"{tmp_path / 'bin'}:{os.path.dirname(sys.executable)}:{os.environ['PATH']}",
               SLURM_JOB_ID="4242", SLURM_SUBMIT_DIR=REPO, SLURM_JOB_NODELIST="node01", SLURM_NTASKS="2",
               **grid_flags(ckpt, surf))
    script = SLURM_TEMPLATES[0]

    job = subprocess.Popen(["bash", script], cwd=tmp_path, env=env, stdout=subprocess.PIPE,
                           stderr=subprocess.STDOUT, text=True, start_new_session=True)
    try:
        deadline = time.time() + 90
        while points_done(surf) == 0 and job.poll() is None and time.time() < deadline:
            time.sleep(0.05)
        job.send_signal(signal.SIGTERM)  # what --signal=B:TERM@180 does before the time limit
        out = job.communicate(timeout=60)[0]
    finally:
        if job.poll() is None:
            os.killpg(job.pid, signal.SIGKILL)
    assert "SIGTERM: asking the ranks to save their points" in out, out
    assert open(log).read() == "scontrol requeue 4242\n", out
    assert 0 < points_done(surf) < N * N, out

    # the requeued job: same script, same environment, now with Slurm's restart count
    r = subprocess.run(["bash", script], cwd=tmp_path, env=dict(env, SLURM_RESTART_COUNT="1"),
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "job 4242 run 2" in r.stdout and "exited with 0" in r.stdout
    assert open(log).read() == "scontrol requeue 4242\n"  # finished: no second requeue
    got = read_values(surf)
    for k in KEYS:
        np.testing.assert_array_equal(got[k], uninterrupted[k])
    assert not os.path.exists(surf + ".lock")
