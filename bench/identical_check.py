"""Fingerprint every file a fixed list of runs writes, to prove a refactor leaves them bit-identical.

    python bench/identical_check.py --repo DIR --work WORKDIR --out hashes.json [--ckpts CKPTS]
    python bench/identical_check.py --compare a.json b.json

The first form runs 47 cases (the CLI flags and API arguments that tests/test_cli_combinations.py,
test_api.py, test_grid_surface.py and test_curvature_cli.py exercise: random, target, Hessian, path and
explicit directions, --params, --regenerate_directions, --orthogonalize, --bn_recalibrate, resume,
streaming, --points_per_pass, mpiexec -n 2, plot_hessian_eigen.py, landscape.surface / interpolation
/ path / eigen_surface / hessian) with the code of repository DIR, each in its own folder under
WORKDIR, on the digits models that the same run trains with DIR's cifar10/main.py (or takes from
CKPTS: the first run trains them there, later runs reuse the same bytes). It writes
{case: {file: {"/dataset": {sha256, dtype, shape, ...}, "/group@attr": [type, value], ...}}} where
a dataset's sha256 covers its dtype, shape and bytes, and attributes are kept unless their key names
something that differs between runs or code versions (time, seconds, date, host, command, version,
tool, argv, created, sec_per), with WORKDIR, DIR and the Python prefix replaced by <WORK>, <REPO> and
<PYTHON> in strings. JSON outputs (plot_hessian_eigen's <model_file>_hessian.json) are flattened the same way.
The second form prints every difference (case, file, key) and exits 1 if there is one, else prints
"identical: N cases, M files, K arrays". Everything runs on one thread (OMP_NUM_THREADS=1,
--threads 1, torch.set_num_threads(1)): about 3 minutes on 2 CPU cores.
"""
import argparse
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import textwrap
import time

import h5py
import numpy as np

# attribute / JSON keys that legitimately differ between runs or code versions (matched anywhere in the key)
EXCLUDED_KEYS = re.compile(r"time|seconds|sec_per|date|host|command|version|tool|argv|created", re.IGNORECASE)
STEP_TIMEOUT = 600          # s, one command of one case
FILTER = ["--xnorm", "filter", "--xignore", "biasbn"]
FILTER2 = FILTER + ["--ynorm", "filter", "--yignore", "biasbn"]
SUBSET = r"^(conv2|bn2)\."

# ----------------------------------------------------------------------------- inputs (trained once)
DATA_PY = '''import dataloader


def dataset():
    d = dataloader.load_tensors("digits")
    return (d.train_x[:256], d.train_y[:256]), (d.test_x[:64], d.test_y[:64])
'''
TINY_PY = '''import torch.nn as nn


def factory():
    return nn.Sequential(nn.Flatten(), nn.Linear(64, 4), nn.Tanh(), nn.Linear(4, 10))
'''
METRICS_PY = '''def metrics():
    return {"margin": lambda out, t: (out.gather(1, t[:, None]) - out.logsumexp(1, keepdim=True)).mean()}
'''
EXPLICIT_PY = '''import sys, h5py, torch
state = torch.load(sys.argv[1], map_location="cpu", weights_only=True)
state = state.get("state_dict", state)
g = torch.Generator().manual_seed(5)
with h5py.File(sys.argv[2], "w") as f:          # a direction file the tool did not write (no attributes)
    for axis in "xy":
        grp = f.create_group(axis + "direction")
        for i, t in enumerate(state.values()):
            grp.create_dataset(str(i), data=(0.3 * torch.randn(t.shape, generator=g)).numpy())
'''
TRAININGS = (   # (model, epochs, batch size, checkpoints kept as {epoch: name})
    ("digits_cnn", 3, 64, {1: "cnn1.t7", 2: "cnn2.t7", 3: "cnn3.t7"}),
    ("digits_mlp", 3, 32, {1: "mlp1.t7", 3: "mlp3.t7"}),
    ("tiny.py:factory", 3, 32, {3: "tiny.t7"}),
)
INPUTS = ["cnn1.t7", "cnn2.t7", "cnn3.t7", "mlp1.t7", "mlp3.t7", "tiny.t7", "tiny.py", "data.py", "metrics.py",
          "explicit.h5"]


def make_inputs(repo, folder, env):
    """Train the checkpoints with `repo`'s trainer (seed 0, one thread) and write the small input files."""
    os.makedirs(folder, exist_ok=True)
    for name, text in (("data.py", DATA_PY), ("tiny.py", TINY_PY), ("metrics.py", METRICS_PY)):
        with open(os.path.join(folder, name), "w") as f:
            f.write(text)
    for model, epochs, batch, keep in TRAININGS:
        save = os.path.join(folder, "train_" + model.split(".")[0])
        cmd = [sys.executable, os.path.join(repo, "cifar10", "main.py"), "--dataset", "digits", "--model", model,
               "--epochs", str(epochs), "--batch_size", str(batch), "--lr", "0.1", "--save_epoch", "1", "--save",
               save, "--threads", "1", "--rand_seed", "0", "--device", "cpu"]
        subprocess.run(cmd, cwd=folder, env=env, check=True, capture_output=True, timeout=STEP_TIMEOUT)
        (run_folder,) = os.listdir(save)
        for epoch, name in keep.items():
            shutil.copy(os.path.join(save, run_folder, f"model_{epoch}.t7"), os.path.join(folder, name))
        shutil.rmtree(save)
    subprocess.run([sys.executable, "-c", EXPLICIT_PY, "mlp3.t7", "explicit.h5"], cwd=folder, env=env, check=True,
                   timeout=STEP_TIMEOUT)
    manifest = {name: file_sha256(os.path.join(folder, name)) for name in INPUTS}
    with open(os.path.join(folder, "MANIFEST.json"), "w") as f:
        json.dump(manifest, f, indent=1)


def ensure_inputs(repo, folder, env):
    """Reuse the inputs in `folder` when its manifest matches their bytes, else make them there."""
    manifest = os.path.join(folder, "MANIFEST.json")
    if os.path.exists(manifest):
        recorded = json.load(open(manifest))
        if all(os.path.exists(os.path.join(folder, n)) and file_sha256(os.path.join(folder, n)) == recorded.get(n)
               for n in INPUTS):
            print(f"inputs: reusing {folder}")
            return
        raise SystemExit(f"error: {folder} holds inputs that do not match its MANIFEST.json; remove the folder")
    print(f"inputs: training the checkpoints into {folder}")
    make_inputs(repo, folder, env)


# ----------------------------------------------------------------------------- the cases
def cli(script, *args, ranks=1):
    return {"kind": "cli", "script": script, "args": list(args), "ranks": ranks}


def surf(*args, ranks=1):
    """plot_surface.py on one thread, digits unless the args name another --dataset."""
    base = [] if "--dataset" in args else ["--dataset", "digits"]
    return cli("plot_surface.py", *base, "--threads", "1", *args, ranks=ranks)


def eig(*args):
    return cli("plot_hessian_eigen.py", "--dataset", "digits", "--threads", "1", *args)


def api(code, ranks=1):
    return {"kind": "api", "code": textwrap.dedent(code), "ranks": ranks}


def poke(code):
    """Plain Python (h5py, numpy) between two runs, e.g. to mark points missing before a resume."""
    return {"kind": "poke", "code": textwrap.dedent(code)}


MARK_HALF_MISSING = poke('''
    import h5py
    with h5py.File("s.h5", "r+") as f:
        for k in ("train_loss", "train_acc"):
            v = f[k][()]
            v.reshape(-1)[1::2] = -1
            f[k][...] = v
''')
CNN, MLP = ["--model", "digits_cnn"], ["--model", "digits_mlp"]
CUSTOM = ["--dataset", "data.py:dataset", "--batch_size", "64"]

CASES = {
    # plot_surface.py: random directions
    "cli_1d_filter_mlp": [surf(*MLP, "--model_file", "mlp3.t7", "--x=-1:1:5", *FILTER)],
    "cli_2d_filter_cnn": [surf(*CNN, "--model_file", "cnn3.t7", "--x=-1:1:3", "--y=-1:1:3", *FILTER2)],
    "cli_1d_states_cnn": [surf(*CNN, "--model_file", "cnn3.t7", "--x=-1:1:5", "--dir_type", "states", *FILTER)],
    "cli_2d_layer_weight_norms": [surf(*CNN, "--model_file", "cnn3.t7", "--x=-1:1:3", "--y=-1:1:3", "--xnorm",
                                       "layer", "--ynorm", "weight", "--seed", "7")],
    "cli_same_dir": [surf(*MLP, "--model_file", "mlp3.t7", "--x=-1:1:3", "--y=-1:1:3", *FILTER2, "--same_dir")],
    "cli_orthogonalize_random": [surf(*CNN, "--model_file", "cnn3.t7", "--x=-1:1:3", "--y=-1:1:3", *FILTER2,
                                      "--orthogonalize")],
    "cli_params_subset": [surf(*CNN, "--model_file", "cnn3.t7", "--x=-1:1:3", "--y=-1:1:3", *FILTER2,
                               "--params", SUBSET)],
    "cli_regenerate_save": [surf(*CNN, "--model_file", "cnn3.t7", "--x=-1:1:3", "--y=-1:1:3", *FILTER2,
                                 "--regenerate_directions", "--save_directions", "saved.h5")],
    "cli_regenerate_states_params": [surf(*CNN, "--model_file", "cnn3.t7", "--x=-0.5:0.5:5", "--dir_type", "states",
                                          *FILTER, "--regenerate_directions", "--params", SUBSET)],
    "cli_dir_file_explicit": [surf(*MLP, "--model_file", "mlp3.t7", "--x=-1:1:3", "--y=-1:1:3", "--dir_file",
                                   "explicit.h5", "--surf_file", "s.h5")],
    "cli_resume": [surf(*MLP, "--model_file", "mlp3.t7", "--x=-1:1:4", "--y=-1:1:3", *FILTER2, "--surf_file", "s.h5"),
                   MARK_HALF_MISSING,
                   surf(*MLP, "--model_file", "mlp3.t7", "--x=-1:1:4", "--y=-1:1:3", *FILTER2, "--surf_file", "s.h5")],
    # target directions (--model_file2/3)
    "cli_interpolation_states": [surf(*CNN, "--model_file", "cnn1.t7", "--model_file2", "cnn3.t7", "--dir_type",
                                      "states", "--x=-0.5:1.5:5")],
    "cli_target2_random_y": [surf(*CNN, "--model_file", "cnn1.t7", "--model_file2", "cnn3.t7", "--x=0:1:3",
                                  "--y=-1:1:3", "--ynorm", "filter", "--yignore", "biasbn")],
    "cli_target3_plane": [surf(*CNN, "--model_file", "cnn1.t7", "--model_file2", "cnn2.t7", "--model_file3",
                               "cnn3.t7", "--x=0:1:3", "--y=0:1:2")],
    "cli_target3_orthogonalize_params": [surf(*CNN, "--model_file", "cnn1.t7", "--model_file2", "cnn2.t7",
                                              "--model_file3", "cnn3.t7", "--x=0:1:3", "--y=0:1:2", "--orthogonalize",
                                              "--params", SUBSET)],
    # Hessian directions
    "cli_hessian_2d_mlp": [surf(*MLP, "--model_file", "mlp3.t7", "--x=-1:1:3", "--y=-1:1:3", "--xdir", "hessian",
                                "--ydir", "hessian")],
    "cli_hessian_filter_params_cnn": [surf(*CUSTOM, *CNN, "--model_file", "cnn3.t7", "--x=-0.5:0.5:3", "--xdir",
                                           "hessian", "--xnorm", "filter", "--params", SUBSET)],
    # paths through checkpoints
    "cli_path_polychain": [surf(*CNN, "--path_files", "cnn1.t7", "cnn2.t7", "cnn3.t7", "--x=0:1:5")],
    "cli_path_bezier_states": [surf(*CNN, "--path_files", "cnn1.t7", "cnn2.t7", "cnn3.t7", "--x=0:1:5",
                                    "--path_type", "bezier", "--dir_type", "states")],
    "cli_path_recalibrate_params": [surf(*CUSTOM, *CNN, "--path_files", "cnn1.t7", "cnn2.t7", "cnn3.t7", "--x=0:1:3",
                                         "--bn_recalibrate", "--params", SUBSET)],
    # evaluation options
    "cli_bn_recalibrate": [surf(*CNN, "--model_file", "cnn3.t7", "--x=-1:1:3", *FILTER, "--bn_recalibrate",
                                "--batch_size", "128")],
    "cli_points_per_pass3": [surf(*CNN, "--model_file", "cnn3.t7", "--x=-1:1:3", "--y=-1:1:3", *FILTER2,
                                  "--points_per_pass", "3", "--eval_test")],
    "cli_eval_test_mlp": [surf(*MLP, "--model_file", "mlp3.t7", "--x=-1:1:4", "--y=0:1:3", *FILTER2, "--eval_test")],
    "cli_precision_fp32": [surf(*CNN, "--model_file", "cnn3.t7", "--x=-1:1:3", *FILTER, "--precision", "fp32",
                                "--eval_test")],
    "cli_data_streamed": [surf(*CNN, "--model_file", "cnn3.t7", "--x=-1:1:3", *FILTER, "--data_in_memory", "no",
                               "--batch_size", "200", "--eval_test")],
    "cli_no_fold_bn_batch100": [surf(*CNN, "--model_file", "cnn3.t7", "--x=-1:1:3", *FILTER, "--no_fold_bn",
                                     "--memory_format", "contiguous", "--batch_size", "100")],
    "cli_mse_loss": [surf(*MLP, "--model_file", "mlp3.t7", "--x=-1:1:3", *FILTER, "--loss_name", "mse")],
    "cli_custom_data_model_metrics": [surf("--dataset", "data.py:dataset", "--model", "tiny.py:factory",
                                           "--model_file", "tiny.t7", "--x=-1:1:5", *FILTER, "--metrics",
                                           "metrics.py:metrics", "--eval_test")],
    # under mpiexec -n 2
    "mpi2_cli_2d": [surf("--mpi", *CNN, "--model_file", "cnn3.t7", "--x=-1:1:4", "--y=-1:1:3", *FILTER2,
                         "--eval_test", ranks=2)],
    "mpi2_cli_ranks_per_point2": [surf("--mpi", *CNN, "--model_file", "cnn3.t7", "--x=-1:1:3", *FILTER,
                                       "--ranks_per_point", "2", "--eval_test", ranks=2)],
    # plot_hessian_eigen.py
    "eig_grid_1d": [eig("--model", "tiny.py:factory", "--model_file", "tiny.t7", "--x=-1:1:3", *FILTER,
                        "--max_iter", "20", "--surf_file", "eig.h5")],
    "eig_grid_ggn": [eig(*MLP, "--model_file", "mlp3.t7", "--x=-1:1:3", *FILTER, "--max_iter", "20",
                         "--curvature", "ggn", "--surf_file", "eig.h5")],
    "eig_at_center": [eig("--model", "tiny.py:factory", "--model_file", "tiny.t7", "--at_center", "--top_k", "3",
                          "--max_iter", "40", "--trace_samples", "10", "--esd", "--esd_probes", "2", "--esd_steps",
                          "20", "--per_layer", "--out", "curv.h5", "--format", "png")],
    "eig_at_center_default": [eig(*MLP, "--model_file", "mlp3.t7", "--at_center", "--trace_samples", "4",
                                  "--max_iter", "40")],
    # the Python API
    "api_surface_2d_test": [api('''
        r = landscape.surface(net("digits_mlp", "mlp3.t7"), TRAIN, x="-1:1:3", y="-1:1:3", test_data=TEST,
                              out="s.h5", save_directions="saved.h5", device="cpu")
        keep(r)''')],
    "api_surface_regenerate_states": [api('''
        r = landscape.surface(net("digits_cnn", "cnn3.t7"), SUB, x="-1:1:3", y="-1:1:3", regenerate=True,
                              dir_type="states", out="s.h5", device="cpu")
        keep(r)''')],
    "api_surface_explicit_metrics": [api('''
        m = net("digits_mlp", "mlp3.t7")
        g = torch.Generator().manual_seed(1)
        dx = [torch.randn(p.shape, generator=g) * 0.1 for p in m.parameters()]
        dy = {"fc2.weight": torch.randn(m.fc2.weight.shape, generator=g) * 0.1}
        metrics = {"margin": lambda out, t: (out.gather(1, t[:, None]) - out.logsumexp(1, keepdim=True)).mean()}
        r = landscape.surface(m, TRAIN, x="-1:1:3", y="-1:1:3", directions=[dx, dy], metrics=metrics,
                              test_data=TEST, out="s.h5", device="cpu")
        keep(r)''')],
    "api_surface_target3_ortho_recal": [api('''
        r = landscape.surface(net("digits_cnn", "cnn1.t7"), SUB, x="0:1:3", y="0:1:2", model2=net("digits_cnn",
                              "cnn2.t7"), model3=net("digits_cnn", "cnn3.t7"), orthogonalize=True, bn_recalibrate=True,
                              batch_size=64, out="s.h5", device="cpu")
        keep(r)''')],
    "api_surface_hessian_params": [api('''
        r = landscape.surface(net("digits_cnn", "cnn3.t7"), SUB, x="-0.5:0.5:3", directions="hessian",
                              params=r"^(conv2|bn2)\\.", batch_size=64, out="s.h5", device="cpu")
        keep(r)''')],
    "api_surface_regression_mse": [api('''
        g = torch.Generator().manual_seed(0)
        x = torch.randn(96, 5, generator=g)
        y = x[:, :1] * 2 - x[:, 1:2] ** 2 + 0.1 * torch.randn(96, 1, generator=g)
        torch.manual_seed(0)
        m = torch.nn.Sequential(torch.nn.Linear(5, 16), torch.nn.Tanh(), torch.nn.Linear(16, 1))
        r = landscape.surface(m, (x, y), loss=torch.nn.MSELoss(), x="-1:1:5", y="-1:1:3", out="r.h5", device="cpu")
        keep(r)''')],
    "api_interpolation": [api('''
        r = landscape.interpolation(net("digits_cnn", "cnn1.t7"), net("digits_cnn", "cnn3.t7"), TRAIN,
                                    x="-0.5:1.5:5", out="s.h5", device="cpu")
        keep(r)''')],
    "api_path_bezier": [api('''
        r = landscape.path([net("digits_cnn", f"cnn{e}.t7") for e in (1, 2, 3)], TRAIN, path_type="bezier",
                           x="0:1:5", test_data=TEST, out="s.h5", device="cpu")
        keep(r)''')],
    "api_path_polychain_recal_params": [api('''
        r = landscape.path([net("digits_cnn", f"cnn{e}.t7") for e in (1, 2, 3)], SUB, x="0:1:3",
                           params=r"^(conv2|bn2)\\.", bn_recalibrate=True, batch_size=64, out="s.h5", device="cpu")
        keep(r)''')],
    "api_eigen_surface": [api('''
        torch.manual_seed(0)
        r = landscape.eigen_surface(net("digits_mlp", "mlp3.t7"), TRAIN, x="-1:1:3", max_iter=20, out="e.h5",
                                    device="cpu")
        keep(r)''')],
    "api_hessian": [api('''
        r = landscape.hessian(net("digits_mlp", "mlp3.t7"), TRAIN, top_k=3, vectors=True, trace_samples=10,
                              esd=True, esd_probes=2, esd_steps=20, per_layer=True, max_iter=40, device="cpu")
        keep(r)''')],
    "api_hessian_ggn_params": [api('''
        r = landscape.hessian(net("digits_cnn", "cnn3.t7"), SUB, curvature="ggn", top_k=2, params=r"^fc2\\.",
                              trace_samples=4, max_iter=30, device="cpu")
        keep(r)''')],
    "mpi2_api_surface": [api('''
        r = landscape.surface(net("digits_cnn", "cnn3.t7"), TRAIN, x="-1:1:4", y="-1:1:3", out="s.h5", device="cpu")
        keep(r)''', ranks=2)],
}

API_PRELUDE = '''
import os, re, sys, dataclasses
sys.path.insert(0, {repo!r})
import h5py, numpy as np, torch
torch.set_num_threads(1)
import landscape, model_loader, dataloader
D = dataloader.load_tensors("digits")
TRAIN, TEST = (D.train_x, D.train_y), (D.test_x, D.test_y)
SUB = (D.train_x[:256], D.train_y[:256])
EXCLUDED = re.compile({excluded!r}, re.IGNORECASE)
RANK = int(os.environ.get("OMPI_COMM_WORLD_RANK", os.environ.get("PMI_RANK", "0")))


def net(model, path):
    return model_loader.load("digits", model, path)


def put(group, key, value):
    """Write a returned value: numbers and arrays as datasets, text as attributes, containers as groups
    (fields whose names the run-dependent pattern matches, e.g. seconds, are left out)."""
    if EXCLUDED.search(key):
        return
    if dataclasses.is_dataclass(value):
        value = {{f.name: getattr(value, f.name) for f in dataclasses.fields(value)}}
    if isinstance(value, dict):
        sub = group.create_group(key)
        for k, v in value.items():
            put(sub, str(k), v)
    elif isinstance(value, (list, tuple)) and value and dataclasses.is_dataclass(value[0]):
        sub = group.create_group(key)
        for i, v in enumerate(value):
            put(sub, str(i), v)
    elif value is None or isinstance(value, str) or (isinstance(value, (list, tuple)) and value
                                                     and all(isinstance(v, str) for v in value)):
        group.attrs[key] = repr(value)
    else:
        group.create_dataset(key, data=value.detach().cpu().numpy() if torch.is_tensor(value) else np.asarray(value))


def keep(result):
    """The returned object, written to returned.h5 (returned_rank<r>.h5 under mpiexec)."""
    name = "returned.h5" if "OMPI_COMM_WORLD_SIZE" not in os.environ else f"returned_rank{{RANK}}.h5"
    with h5py.File(name, "w") as f:
        put(f, "result", result)
'''


# ----------------------------------------------------------------------------- running
def run_env():
    env = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", OPENBLAS_NUM_THREADS="1", PYTHONHASHSEED="0",
               PYTHONDONTWRITEBYTECODE="1", PYTHONUNBUFFERED="1", MPLBACKEND="Agg", CUDA_VISIBLE_DEVICES="",
               OMPI_ALLOW_RUN_AS_ROOT="1", OMPI_ALLOW_RUN_AS_ROOT_CONFIRM="1", OMPI_MCA_rmaps_base_oversubscribe="1",
               PRTE_MCA_rmaps_default_mapping_policy=":oversubscribe")
    return env


def mpiexec():
    local = os.path.join(os.path.dirname(sys.executable), "mpiexec")
    return local if os.path.exists(local) else shutil.which("mpiexec") or "mpiexec"


def step_command(step, repo):
    if step["kind"] == "cli":
        cmd = [sys.executable, os.path.join(repo, step["script"]), *step["args"]]
    elif step["kind"] == "api":
        cmd = [sys.executable, "-c", API_PRELUDE.format(repo=repo, excluded=EXCLUDED_KEYS.pattern) + step["code"]]
    else:
        return [sys.executable, "-c", step["code"]]
    if step["ranks"] > 1:
        cmd = [mpiexec(), "--oversubscribe", "-n", str(step["ranks"]), *cmd]
    return cmd


def run_case(name, steps, repo, work, inputs, env):
    """Run one case's steps in work/name (a copy of the inputs); returns an error text, or '' when all exit 0."""
    folder = os.path.join(work, name)
    os.makedirs(folder)
    for f in INPUTS:
        shutil.copy(os.path.join(inputs, f), folder)
    for k, step in enumerate(steps):
        r = subprocess.run(step_command(step, repo), cwd=folder, env=env, capture_output=True, text=True,
                           timeout=STEP_TIMEOUT)
        if r.returncode != 0:
            return f"step {k} exited {r.returncode}: " + (r.stderr or r.stdout)[-1500:]
    return ""


# ----------------------------------------------------------------------------- fingerprints
def file_sha256(path):
    with open(path, "rb") as f:
        return hashlib.sha256(f.read()).hexdigest()


def normalise(text, roots):
    for path, label in roots:
        text = text.replace(path, label)
    return text


def plain(value, roots):
    """An attribute or JSON value as [type, JSON value], strings with the run's paths replaced."""
    if isinstance(value, bytes):
        return ["bytes", normalise(value.decode("utf-8", "replace"), roots)]
    if isinstance(value, str):
        return ["str", normalise(value, roots)]
    if isinstance(value, np.ndarray):
        if value.dtype.kind in "OSU":
            return [f"array{value.shape}", [plain(v, roots)[1] for v in value.ravel().tolist()]]
        return [f"{value.dtype.str}{value.shape}", value.tolist()]
    if isinstance(value, np.generic):
        return [value.dtype.str, value.item()]
    return [type(value).__name__, value]


def array_bytes(a, roots):
    """The bytes a dataset's hash covers: numbers as stored, text as JSON with the run's paths replaced,
    compound rows field by field (an object field's raw bytes are pointers, not data)."""
    if isinstance(a, (bytes, str)) or a.dtype.kind in "OSU":
        return json.dumps(plain(np.asarray(a, dtype=object) if isinstance(a, np.ndarray) else a, roots)[1]).encode()
    if a.dtype.names:
        return b"".join(name.encode() + array_bytes(a[name], roots) for name in a.dtype.names)
    return np.ascontiguousarray(a).tobytes()


def array_entry(obj, roots):
    """{sha256 (over dtype, shape, bytes), dtype, shape, storage} of one HDF5 dataset (and the text of a
    string dataset, e.g. dir_file)."""
    a = obj[()]
    data = array_bytes(a, roots)
    h = hashlib.sha256(f"{obj.dtype.str}{obj.shape}".encode())
    h.update(data)
    entry = {"sha256": h.hexdigest(), "dtype": obj.dtype.str, "shape": list(obj.shape),
             "storage": f"chunks={obj.chunks} compression={obj.compression} maxshape={obj.maxshape}"}
    if isinstance(a, (bytes, str)) or a.dtype.kind in "OSU":
        entry["value"] = data.decode()[:200]
    return entry


def h5_fingerprint(path, roots):
    """{"/dataset": array entry, "/group@attr": [type, value]} of every dataset and kept attribute."""
    out = {}

    def attrs(prefix, obj):
        for k, v in obj.attrs.items():
            if not EXCLUDED_KEYS.search(k):
                out[f"{prefix}@{k}"] = plain(v, roots)

    with h5py.File(path, "r") as f:
        attrs("/", f)

        def visit(name, obj):
            if isinstance(obj, h5py.Dataset):
                out["/" + name] = array_entry(obj, roots)
            attrs("/" + name, obj)
        f.visititems(visit)
    return out


def json_fingerprint(path, roots):
    """Every leaf of a JSON file as {"json:a.b[0]": [type, value]}, excluded keys left out."""
    out = {}

    def walk(prefix, v):
        if isinstance(v, dict):
            for k, x in v.items():
                if not EXCLUDED_KEYS.search(k):
                    walk(f"{prefix}.{k}" if prefix else k, x)
        elif isinstance(v, list) and any(isinstance(x, (dict, list)) for x in v):
            for i, x in enumerate(v):
                walk(f"{prefix}[{i}]", x)
        else:
            out["json:" + prefix] = plain(v, roots)
    walk("", json.load(open(path)))
    return out


def fingerprint_case(folder, roots):
    """{file: fingerprint} of every file the case wrote (the copied inputs left out)."""
    out = {}
    for root, dirs, files in os.walk(folder):
        dirs[:] = sorted(d for d in dirs if d != "__pycache__")
        for name in sorted(files):
            rel = os.path.relpath(os.path.join(root, name), folder)
            if rel in INPUTS:
                continue
            path = os.path.join(root, name)
            if name.endswith(".h5"):
                out[rel] = h5_fingerprint(path, roots)
            elif name.endswith(".json"):
                out[rel] = json_fingerprint(path, roots)
            else:                                   # figures and logs: their presence only
                out[rel] = {"present": True}
    return out


# ----------------------------------------------------------------------------- modes
def run_all(repo, work, out, ckpts, only):
    repo, work = os.path.abspath(repo), os.path.abspath(work)
    if os.path.exists(work) and os.listdir(work):
        raise SystemExit(f"error: --work {work} is not empty; give a new folder")
    os.makedirs(work, exist_ok=True)
    env = run_env()
    inputs = os.path.abspath(ckpts) if ckpts else os.path.join(work, "_inputs")
    ensure_inputs(repo, inputs, env)
    roots = sorted({(os.path.realpath(work), "<WORK>"), (work, "<WORK>"), (os.path.realpath(repo), "<REPO>"),
                    (repo, "<REPO>"), (sys.prefix, "<PYTHON>"), (inputs, "<INPUTS>")}, key=lambda p: -len(p[0]))
    names = [n for n in CASES if not only or re.search(only, n)]
    result, seconds, failed = {}, {}, []
    t_all = time.perf_counter()
    for name in names:
        t0 = time.perf_counter()
        error = run_case(name, CASES[name], repo, work, inputs, env)
        seconds[name] = round(time.perf_counter() - t0, 1)
        result[name] = fingerprint_case(os.path.join(work, name), roots)
        if error:
            result[name]["_error"] = {"text": ["str", normalise(error, roots)]}
            failed.append(name)
        print(f"{name}: {seconds[name]:.1f} s, {len(result[name])} files{'  FAILED: ' + error[-300:] if error else ''}",
              flush=True)
    total = time.perf_counter() - t_all
    commit = subprocess.run(["git", "-C", repo, "rev-parse", "HEAD"], capture_output=True, text=True).stdout.strip()
    result["_meta"] = {"repo": repo, "commit": commit, "work": work, "inputs": inputs, "python": sys.executable,
                       "seconds": round(total, 1), "case_seconds": seconds, "excluded_keys": EXCLUDED_KEYS.pattern}
    with open(out, "w") as f:
        json.dump(result, f, indent=1, sort_keys=True)
    print(f"wrote {out}: {summary(result)} in {total:.0f} s" + (f"; {len(failed)} FAILED: {failed}" if failed else ""))
    return 1 if failed else 0


def summary(result):
    cases = [c for c in result if not c.startswith("_")]
    files = [result[c][f] for c in cases for f in result[c] if not f.startswith("_")]
    arrays = sum(isinstance(v, dict) and "sha256" in v for f in files for v in f.values())
    return f"{len(cases)} cases, {len(files)} files, {arrays} arrays"


def compare(a_path, b_path):
    a, b = json.load(open(a_path)), json.load(open(b_path))
    diffs = []
    for case in sorted(set(a) | set(b)):
        if case.startswith("_"):
            continue
        if case not in a or case not in b:
            diffs.append(f"{case}: only in {a_path if case in a else b_path}")
            continue
        for fname in sorted(set(a[case]) | set(b[case])):
            fa, fb = a[case].get(fname), b[case].get(fname)
            if fa is None or fb is None:
                diffs.append(f"{case} / {fname}: only in {a_path if fb is None else b_path}")
                continue
            for key in sorted(set(fa) | set(fb)):
                va, vb = fa.get(key), fb.get(key)
                if va != vb:
                    if isinstance(va, dict) and isinstance(vb, dict):     # an array: only the parts that differ
                        va, vb = ({k: v[k] for k in sorted(set(va) | set(vb)) if va.get(k) != vb.get(k) and k in v}
                                  for v in (va, vb))
                    diffs.append(f"{case} / {fname} / {key}: {json.dumps(va)[:300]} != {json.dumps(vb)[:300]}")
    for line in diffs:
        print(line)
    if diffs:
        print(f"{len(diffs)} differences")
        return 1
    print(f"identical: {summary(a)}")
    return 0


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--repo", help="repository whose code runs the cases (default: none)")
    p.add_argument("--work", help="new folder the cases run in, one subfolder each (default: none)")
    p.add_argument("--out", help="JSON file of fingerprints to write (default: none)")
    p.add_argument("--ckpts", default="", help="folder of the trained inputs: made there on the first run, reused "
                                               "after (default: WORK/_inputs, made anew)")
    p.add_argument("--only", default="", help="regular expression: run only the cases it matches (default: all)")
    p.add_argument("--compare", nargs=2, metavar=("A", "B"), help="print the differences of two JSON files")
    args = p.parse_args(argv)
    if args.compare:
        return compare(*args.compare)
    if not (args.repo and args.work and args.out):
        p.error("give --repo, --work and --out (or --compare A B)")
    return run_all(args.repo, args.work, args.out, args.ckpts, args.only)


if __name__ == "__main__":
    sys.exit(main())
