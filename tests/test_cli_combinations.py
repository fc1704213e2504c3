"""Every combination either computes what its files say, or is refused in one line.

A generated matrix of combinations, pairwise (every value of every dimension meets every value of
every other dimension in at least one run that computes), not the full product:

    direction kind   random, target2 (--model_file2), target3 (--model_file2 and 3: a plane),
                     hessian, path (--path_files), explicit (API directions=; the CLI's --dir_file
                     of a file it did not write)
    --params         none, or a subset (conv2 and bn2)
    --regenerate_directions, --orthogonalize, --bn_recalibrate    off, on
    --dir_type       weights, states
    run              fresh, or resumed (half the points marked missing, then the same command again)
    interface        command line (plot_surface.main, in this process), Python API
    ranks            one, or mpiexec -n 2

Every surface a combination writes goes through tests/oracle.py: the weights at a few grid points
rebuilt by plain tensor arithmetic from the direction file (or the checkpoints of a path, or the
recipe of regenerated directions) and evaluated by a plain float64 loop. A resumed run must also
reproduce the values of the uninterrupted one. Combinations the tool refuses are part of the matrix:
one `error:` line (one per rank under mpiexec), exit code 2 (LandscapeError in the API), nothing
written. The model is digits_cnn (BatchNorm, so --dir_type and --bn_recalibrate matter) on 256
training digits, with 3 to 6 points per surface.
"""
import itertools
import json
import os
import shutil
import signal
import subprocess
import sys

import h5py
import numpy as np
import pytest
import torch

import dataloader
import landscape
import model_loader
import plot_surface
from helpers import REPO, mpi_env, mpiexec, snapshot
from landscape import errors
from landscape.zoo.models.digits import DigitsCNN
from oracle import check_surface_file

DIMENSIONS = {
    "kind": ("random", "target2", "target3", "hessian", "path", "explicit"),
    "params": (False, True),
    "regen": (False, True),
    "dir_type": ("weights", "states"),
    "ortho": (False, True),
    "recal": (False, True),
    "run": ("fresh", "resume"),
    "iface": ("cli", "api"),
    "ranks": (1, 2),
}
SUBSET = r"^(conv2|bn2)\."
BATCH = 64            # evaluation, Hessian and BN recalibration batch
N_TRAIN, N_TEST = 256, 64
DATA_PY = f'''import dataloader


def dataset():
    d = dataloader.load_tensors("digits")
    return (d.train_x[:{N_TRAIN}], d.train_y[:{N_TRAIN}]), (d.test_x[:{N_TEST}], d.test_y[:{N_TEST}])
'''


# ----------------------------------------------------------------------------- the matrix
def expressible(c):
    """The API's path() has no directions to regenerate or orthogonalise: those are no combinations."""
    return not (c["iface"] == "api" and c["kind"] == "path" and (c["regen"] or c["ortho"]))


REFUSAL_RULES = {   # rule: (applies to a combination, a word its one-line message names)
    "regenerate needs random directions": (lambda c: c["regen"] and c["kind"] != "random", "regenerate"),
    "a path has no directions to orthogonalise": (lambda c: c["ortho"] and c["kind"] == "path", "--orthogonalize"),
    "recalibration replaces the statistics states moves": (lambda c: c["recal"] and c["dir_type"] == "states",
                                                           "bn_recalibrate"),
    "a direction file that records no subset takes no --params": (
        lambda c: c["kind"] == "explicit" and c["iface"] == "cli" and c["params"], "--params"),
    "a direction file that records no spec takes no --orthogonalize": (
        lambda c: c["kind"] == "explicit" and c["iface"] == "cli" and c["ortho"], "--orthogonalize"),
}


def refusal(c):
    """{rule: word} of the refusal rules that apply to `c` (its message names one of the words), or None."""
    found = {rule: word for rule, (applies, word) in REFUSAL_RULES.items() if applies(c)}
    return found or None


def cost(c):
    """Rough seconds: mpiexec and a second (resumed) run cost most."""
    return 1 + 6 * (c["ranks"] == 2) + 0.5 * (c["run"] == "resume") + (c["kind"] == "hessian")


def pairs_of(c):
    items = sorted(c.items())
    return {(a, b) for a, b in itertools.combinations(items, 2)}


def covering(candidates):
    """A greedy pairwise cover of every pair of values that some candidate has (deterministic)."""
    needed = set().union(*(pairs_of(c) for c in candidates))
    chosen = []
    while needed:
        best = max(candidates, key=lambda c: (len(pairs_of(c) & needed), -cost(c)))
        chosen.append(best)
        needed -= pairs_of(best)
    return chosen


def build_matrix():
    names = list(DIMENSIONS)
    product = [dict(zip(names, values)) for values in itertools.product(*DIMENSIONS.values())]
    product = [c for c in product if expressible(c)]
    valid = covering([c for c in product if refusal(c) is None])
    refused, rules = [], set()
    for c in sorted((c for c in product if refusal(c)), key=cost):   # each rule alone, once per interface
        key = (tuple(refusal(c)), c["iface"])
        if len(refusal(c)) == 1 and key not in rules and c["ranks"] == 1 and c["run"] == "fresh":
            rules.add(key)
            refused.append(c)
    refused.append(next(c for c in product if refusal(c) and c["iface"] == "cli" and c["ranks"] == 2))
    return valid, refused


def name(c):
    parts = [c["kind"], "params" if c["params"] else "", "regen" if c["regen"] else "", c["dir_type"],
             "ortho" if c["ortho"] else "", "recal" if c["recal"] else "", c["run"], c["iface"], f"{c['ranks']}rank"]
    return "-".join(p for p in parts if p)


VALID, REFUSED = build_matrix()


# ----------------------------------------------------------------------------- inputs
@pytest.fixture(scope="module")
def inputs(tmp_path_factory, cnn_run):
    """Three digits_cnn checkpoints, the 256-digit training set as a dataset file, explicit directions."""
    folder = tmp_path_factory.mktemp("matrix")
    for e in (1, 2, 4):
        shutil.copy(os.path.join(cnn_run, f"model_{e}.t7"), folder / f"c{e}.t7")
    (folder / "data.py").write_text(DATA_PY)
    d = dataloader.load_tensors("digits")
    data = (d.train_x[:N_TRAIN], d.train_y[:N_TRAIN])
    nets = [model_loader.load("digits", "digits_cnn", str(folder / f"c{e}.t7")) for e in (1, 2, 4)]
    g = torch.Generator().manual_seed(5)
    explicit = {}
    for dir_type in ("weights", "states"):
        space = [(n, p.detach()) for n, p in nets[0].named_parameters()] if dir_type == "weights" else \
            list(nets[0].state_dict().items())
        explicit[dir_type] = [[layer_scaled(torch.randn(t.shape, generator=g), t) if t.is_floating_point()
                               else torch.zeros(t.shape) for _, t in space] for _ in "xy"]
        with h5py.File(folder / f"explicit_{dir_type}.h5", "w") as f:     # a direction file with no record
            for axis, d in zip("xy", explicit[dir_type]):
                grp = f.create_group(f"{axis}direction")
                for i, t in enumerate(d):
                    grp.create_dataset(str(i), data=t.numpy())
    return {"folder": folder, "data": data, "nets": nets, "explicit": explicit}


def layer_scaled(d, w):
    """A direction entry of 0.3 times the norm of the weights it moves (a user's own scaling)."""
    return d * (0.3 * float(w.float().norm()) / max(float(d.norm()), 1e-12))


def grid(c):
    """(x, y or None) of a combination: 3 points, or 3x2 for a plane or an orthogonalised pair."""
    two_d = (c["ortho"] or c["kind"] == "target3") and c["kind"] != "path"
    if c["kind"] in ("target2", "target3", "path"):
        return ("0:1:3", "0:1:2" if two_d else None)
    return ("-0.5:0.5:3", "-0.5:0.5:2" if two_d else None)


def cli_args(c, surf="s.h5"):
    x, y = grid(c)
    args = ["--dataset", "data.py:dataset", "--model", "digits_cnn", "--threads", "1", "--batch_size", str(BATCH),
            f"--x={x}", "--surf_file", surf, "--dir_type", c["dir_type"]]
    args += [f"--y={y}"] if y else []
    kind = c["kind"]
    if kind == "path":
        args += ["--path_files", "c1.t7", "c2.t7", "c4.t7"]
    else:
        args += ["--model_file", "c1.t7"]
    if kind in ("target2", "target3"):
        args += ["--model_file2", "c2.t7"] + (["--model_file3", "c4.t7"] if kind == "target3" else [])
    if kind == "hessian":
        args += ["--xdir", "hessian"] + (["--ydir", "hessian"] if y else [])
    if kind == "random" or (kind == "target2" and y):
        norm = ["--xnorm", "filter", "--xignore", "biasbn"] if kind == "random" else []
        args += norm + (["--ynorm", "filter", "--yignore", "biasbn"] if y else [])
    if kind == "explicit":
        args += ["--dir_file", f"explicit_{c['dir_type']}.h5"]
    args += ["--params", SUBSET] if c["params"] else []
    args += ["--regenerate_directions"] if c["regen"] else []
    args += ["--orthogonalize"] if c["ortho"] else []
    args += ["--bn_recalibrate"] if c["recal"] else []
    return args


def api_call(c, folder, nets, data, explicit):
    """The combination through the Python API, writing s.h5 (and s_directions.h5) in `folder`."""
    x, y = grid(c)
    common = dict(device="cpu", batch_size=BATCH, dir_type=c["dir_type"], out=os.path.join(folder, "s.h5"),
                  params=SUBSET if c["params"] else None, bn_recalibrate=c["recal"])
    kind = c["kind"]
    if kind == "path":
        return landscape.path(nets, data, x=x, **common)
    common.update(y=y, regenerate=c["regen"], orthogonalize=c["ortho"])
    if kind == "target2":
        return landscape.surface(nets[0], data, x=x, model2=nets[1], **common)
    if kind == "target3":
        return landscape.surface(nets[0], data, x=x, model2=nets[1], model3=nets[2], **common)
    directions = {"random": "filter", "hessian": "hessian", "explicit": explicit[c["dir_type"]][:2 if y else 1]}[kind]
    return landscape.surface(nets[0], data, x=x, directions=directions, ignore="biasbn", **common)


def api_main(spec):
    """mpiexec entry point: run api_call for the combination `spec` (JSON) on every rank."""
    c, folder = json.loads(spec)
    sys.path.insert(0, folder)
    import data as user_data
    nets = [model_loader.load("digits", "digits_cnn", os.path.join(folder, f"c{e}.t7")) for e in (1, 2, 4)]
    import h5_util
    explicit = {t: h5_util.read_direction_file(os.path.join(folder, f"explicit_{t}.h5")) for t in ("weights", "states")}
    api_call(c, folder, nets, user_data.dataset()[0], explicit)


def run(c, folder, inputs, capsys, ranks, extra=()):
    """(exit code, stderr) of the combination run once in `folder`, by its interface, on `ranks` ranks;
    `extra`: more command-line flags."""
    if ranks == 2:
        if c["iface"] == "cli":
            cmd = [sys.executable, os.path.join(REPO, "plot_surface.py"), "--mpi", *cli_args(c), *extra]
        else:
            code = (f"import sys; sys.path[:0] = [{REPO!r}, {os.path.join(REPO, 'tests')!r}]; "
                    "import test_cli_combinations as t; t.api_main(sys.argv[1])")
            cmd = [sys.executable, "-c", code, json.dumps([c, str(folder)])]
        r = subprocess.run([mpiexec(), "-n", "2", "--oversubscribe", *cmd], cwd=folder, capture_output=True,
                           text=True, env=mpi_env(), timeout=300)
        return r.returncode, r.stderr
    capsys.readouterr()
    cwd = os.getcwd()
    os.chdir(folder)
    try:
        if c["iface"] == "cli":
            rc = errors.run_cli(plot_surface.main, cli_args(c) + list(extra))
        else:
            try:
                api_call(c, str(folder), inputs["nets"], inputs["data"], inputs["explicit"])
                rc = 0
            except landscape.LandscapeError as e:
                print(f"error: {e}", file=sys.stderr)
                rc = 2
    finally:
        os.chdir(cwd)
    return rc, capsys.readouterr().err


def setup_folder(tmp_path, inputs):
    for f in ("c1.t7", "c2.t7", "c4.t7", "data.py", "explicit_weights.h5", "explicit_states.h5"):
        shutil.copy(inputs["folder"] / f, tmp_path / f)
    return tmp_path


def oracle(c, folder, inputs):
    nets = inputs["nets"]
    ckpts = None
    if c["iface"] == "api":
        ckpts = nets if c["kind"] == "path" else {"target2": nets[:2], "target3": nets}.get(c["kind"], nets[0])
    return check_surface_file(str(folder / "s.h5"), DigitsCNN, ckpts, inputs["data"], points=3, rtol=1e-4,
                              atol=1e-6)


@pytest.fixture
def quiet_signals(monkeypatch):
    monkeypatch.setattr(signal, "signal", lambda *a: None)   # keep pytest's own SIGTERM handling


# ----------------------------------------------------------------------------- the tests
@pytest.mark.parametrize("c", VALID, ids=[name(c) for c in VALID])
def test_combination_computes_what_its_files_say(c, tmp_path, inputs, capsys, quiet_signals):
    if c["ranks"] == 2 and not mpiexec():
        pytest.skip("no mpiexec")
    folder = setup_folder(tmp_path, inputs)
    first_ranks = 1 if c["run"] == "resume" else c["ranks"]
    rc, err = run(c, folder, inputs, capsys, first_ranks)
    assert rc == 0, err[-3000:]
    assert "Traceback" not in err
    report = oracle(c, folder, inputs)
    assert report["checked"], "the oracle checked no point"
    if c["run"] == "resume":
        with h5py.File(folder / "s.h5", "r+") as f:
            first = {k: f[k][()] for k in ("train_loss", "train_acc")}
            for k in first:
                v = first[k].copy()
                v.reshape(-1)[1::2] = -1            # an interrupted run: every other point missing
                f[k][...] = v
        rc, err = run(c, folder, inputs, capsys, c["ranks"])
        assert rc == 0, err[-3000:]
        with h5py.File(folder / "s.h5", "r") as f:
            for k, v in first.items():
                np.testing.assert_allclose(f[k][()], v, rtol=1e-6, atol=1e-9, err_msg=f"resumed {k} differs")
        oracle(c, folder, inputs)
    assert not os.path.exists(folder / "s.h5.lock")


@pytest.mark.parametrize("c", REFUSED, ids=[name(c) for c in REFUSED])
def test_combination_is_refused_in_one_line_and_writes_nothing(c, tmp_path, inputs, capsys, quiet_signals):
    if c["ranks"] == 2 and not mpiexec():
        pytest.skip("no mpiexec")
    folder = setup_folder(tmp_path, inputs)
    before = snapshot(folder)
    rc, err = run(c, folder, inputs, capsys, c["ranks"])
    assert rc == 2, err[-3000:]
    assert "Traceback" not in err
    if c["ranks"] > 1:      # mpiexec adds its own box about the non-zero exit, between dashed lines
        err = "".join(part for k, part in enumerate(err.split("-" * 74)) if k % 2 == 0)
    lines = [ln for ln in err.splitlines() if ln.strip() and not ln.startswith("warning: ")]
    assert lines and len(set(lines)) == 1 and len(lines) <= c["ranks"], err   # one line (per rank)
    assert lines[0].startswith("error: ") and any(w in lines[0] for w in refusal(c).values()), (refusal(c), lines[0])
    assert snapshot(folder) == before, "a refused combination wrote or changed files"


def test_the_matrix_covers_every_pair_that_can_compute():
    product = [dict(zip(DIMENSIONS, v)) for v in itertools.product(*DIMENSIONS.values())]
    possible = set().union(*(pairs_of(c) for c in product if expressible(c) and refusal(c) is None))
    assert set().union(*(pairs_of(c) for c in VALID)) == possible
    assert len(VALID) < len(product) / 20        # pairwise, not the product
    assert set().union(*(refusal(c) for c in REFUSED)) == set(REFUSAL_RULES)   # every rule is exercised


def test_every_attribute_a_run_writes_is_in_the_provenance_table(tmp_path, inputs, capsys, quiet_signals):
    """What a file records comes from io/provenance.py's tables, so the resume and reuse checks (which
    iterate the same tables) see every recorded input."""
    from landscape.io import provenance
    h5_keys = {"landscape_version"}      # written by every atomic write
    seen = {"surface": set(), "direction": set()}
    runs = [dict(kind=k, params=True, regen=r, dir_type="weights", ortho=o, recal=rc, run="fresh", iface=i, ranks=1)
            for k, r, o, rc, i in (("random", True, True, True, "cli"), ("target3", False, True, False, "cli"),
                                   ("hessian", False, False, False, "api"), ("path", False, False, True, "api"),
                                   ("target2", False, False, True, "api"), ("random", False, True, False, "api"))]
    for k, c in enumerate(runs):
        (tmp_path / str(k)).mkdir()
        folder = setup_folder(tmp_path / str(k), inputs)
        extra = ["--save_directions", "saved.h5"] if c["iface"] == "cli" else []
        rc, err = run(c, folder, inputs, capsys, 1, extra)
        assert rc == 0, err
        for path in folder.glob("*.h5"):
            if path.name.startswith("explicit_"):
                continue
            with h5py.File(path, "r") as f:
                kind = "direction" if "xdirection" in f else "surface"
                seen[kind] |= set(f.attrs)
    torch.manual_seed(0)     # and the eigenvalue maps' own keys
    landscape.eigen_surface(inputs["nets"][0], inputs["data"], x="0:0:1", device="cpu", batch_size=BATCH, max_iter=5,
                            out=str(tmp_path / "e.h5"))
    with h5py.File(tmp_path / "e.h5", "r") as f:
        seen["surface"] |= set(f.attrs)
    for kind, keys in seen.items():
        unknown = keys - provenance.keys(kind) - h5_keys
        assert not unknown, f"{kind} files record {sorted(unknown)}, which io/provenance.py does not list"
    assert {"bn_recalibrate", "bn_recalibrate_batch", "data_sha256", "params", "eig_tol", "eig_max_iter",
            "eig_precision"} <= seen["surface"]
    assert {"data_sha256", "loss_name", "model2_sha256", "model_file2_sha256", "regenerated_ortho"} <= seen["direction"]


def test_the_oracle_catches_a_wrong_value_and_a_moved_entry(tmp_path, inputs, capsys, quiet_signals):
    """The oracle is only worth its passes if it fails on a wrong file."""
    c = dict(kind="random", params=True, regen=False, dir_type="weights", ortho=False, recal=False, run="fresh",
             iface="cli", ranks=1)
    folder = setup_folder(tmp_path, inputs)
    assert run(c, folder, inputs, capsys, 1)[0] == 0
    oracle(c, folder, inputs)
    with h5py.File(folder / "s.h5", "r+") as f:
        dir_file = f["dir_file"][()].decode()
        f["train_loss"][0] *= 1.001
    with pytest.raises(AssertionError, match="train_loss at"):
        oracle(c, folder, inputs)
    with h5py.File(folder / "s.h5", "r+") as f:
        f["train_loss"][0] /= 1.001
    with h5py.File(folder / dir_file, "r+") as f:     # a direction that moves an entry outside --params
        f["xdirection"]["0"][...] = 0.01
    with pytest.raises(AssertionError, match="outside the subset"):
        oracle(c, folder, inputs)


def test_an_unknown_provenance_key_is_refused_at_once():
    from landscape.io import provenance
    with pytest.raises(AssertionError, match="not in the surface table"):
        provenance.record("surface", learning_rate=0.1)
