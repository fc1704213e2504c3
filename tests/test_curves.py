"""Curves between two minima (landscape/curves.py, find_curve.py, plot_surface.py --curve_file, the API).

Checked against independent computations: the losses stored along a curve equal a plain float64 loop
that rebuilds phi(t) from the files by hand; a curve trained for zero epochs is the straight line;
a trained curve's barrier is far below the straight line's; kill -9 and a rerun give the bends of an
uninterrupted run, bit for bit; bad input is one line, exit 2, nothing written.
"""
import contextlib
import io
import json
import os
import shutil
import signal
import subprocess
import sys
import time
import types

import h5py
import numpy as np
import pytest
import torch
import torch.nn.functional as F

import landscape
from helpers import REPO, load_net, mpi_env, run_script, snapshot, train
from landscape import curves, errors
from landscape.cli import find_curve, plot_surface
from landscape.plots import plot_1d, plot_2d
from landscape.zoo import data as zoo_data

pytestmark = pytest.mark.usefixtures("one_thread")
SCRIPTS = {"find_curve.py": find_curve, "plot_surface.py": plot_surface, "plot_1D.py": plot_1d,
           "plot_2D.py": plot_2d}
BASE = ["--dataset", "digits", "--model", "digits_mlp", "--threads", "1"]


@pytest.fixture(scope="module")
def minima(tmp_path_factory):
    """Two digits_mlp minima from different seeds."""
    root = tmp_path_factory.mktemp("minima")
    return [os.path.join(train(root / f"s{s}", "digits_mlp", epochs=10, batch_size=32, lr=0.05,
                               save_epoch=10, extra=("--rand_seed", str(s))), "model_10.t7") for s in (1, 2)]


@pytest.fixture(autouse=True)
def keep_signals(monkeypatch):
    """The commands run in this process: keep pytest's own signal handling."""
    monkeypatch.setattr(signal, "signal", lambda *a: None)


def command(script, args):
    """(returncode, stdout, stderr) of `script args`, run in this process as its front door runs it."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        rc = errors.run_cli(SCRIPTS[script].main, [str(a) for a in args])
    return types.SimpleNamespace(returncode=rc, stdout=out.getvalue(), stderr=err.getvalue())


def find(a, b, out, *extra):
    return command("find_curve.py", [*BASE, "--model_file", a, "--model_file2", b, "--out", out, *extra])


def surface(out, *args):
    r = command("plot_surface.py", [*BASE, *args, "--surf_file", out])
    assert r.returncode == 0, r.stderr[-3000:]
    with h5py.File(out, "r") as f:
        return np.asarray(f["xcoordinates"][:]), np.asarray(f["train_loss"][:]), r.stdout


def assert_refused(r, folder, before, *words):
    """Exit code 2, one `error:` line, no traceback, nothing written or changed."""
    err = r.stderr.strip()
    assert r.returncode == 2, f"exit code {r.returncode}:\n{err[-3000:]}"
    assert "Traceback" not in err, err[-3000:]
    errors = [ln for ln in err.splitlines() if ln.startswith("error: ")]
    assert len(errors) == 1, err
    for w in words:
        assert w in errors[0], (w, errors[0])
    assert snapshot(folder) == before, "a refused run wrote or changed files"


def plain_losses(files, kind, ts):
    """float64, by hand: phi(t) from the checkpoints' own tensors, the MLP's forward written out."""
    states = [torch.load(f, map_location="cpu", weights_only=True)["state_dict"] for f in files]
    data = zoo_data.load_digits()
    x, y = data.train_x.double().flatten(1), data.train_y
    n = len(states) - 1
    out = []
    for t in ts:
        if kind == "bezier":
            c = [float(np.prod(range(n - i + 1, n + 1)) / np.prod(range(1, i + 1))) * t ** i * (1 - t) ** (n - i)
                 for i in range(n + 1)]
        else:
            seg = min(int(np.floor(t * n)), n - 1)
            c = [0.0] * (n + 1)
            c[seg], c[seg + 1] = 1 - (t * n - seg), t * n - seg
        w = {k: sum(ci * s[k].double() for ci, s in zip(c, states)) for k in states[0]}
        h = x
        layers = sorted({k.rsplit(".", 1)[0] for k in w if k.endswith(".weight")})
        for i, name in enumerate(layers):
            h = h @ w[name + ".weight"].T + w[name + ".bias"]
            if i < len(layers) - 1:
                h = torch.relu(h)
        out.append(float(F.cross_entropy(h, y)))
    return np.array(out)


def test_mlp_layers_are_what_the_plain_loop_assumes():
    net = load_net("digits_mlp", None)
    kinds = [type(m).__name__ for m in net.modules() if not list(m.children())]
    assert set(kinds) <= {"Linear", "ReLU", "Flatten"} and kinds.count("Linear") >= 2, kinds


def test_a_curve_with_zero_epochs_is_the_straight_line(minima, tmp_path):
    a, b = minima
    _, line, _ = surface(str(tmp_path / "line.h5"), "--path_files", a, b, "--x=0:1:11")
    for kind, bends in (("bezier", 1), ("polychain", 1), ("polychain", 3), ("bezier", 2)):
        out = str(tmp_path / f"c_{kind}_{bends}")
        r = find(a, b, out, "--curve", kind, "--num_bends", str(bends), "--epochs", "0")
        assert r.returncode == 0, r.stderr
        _, v, _ = surface(str(tmp_path / f"{kind}{bends}.h5"), "--curve_file", out, "--x=0:1:11")
        np.testing.assert_allclose(v, line, rtol=1e-5, atol=1e-6)


def test_stored_losses_equal_a_plain_loop_over_phi_rebuilt_from_the_files(minima, tmp_path):
    a, b = minima
    for kind, bends in (("bezier", 1), ("polychain", 2)):
        out = str(tmp_path / kind)
        r = find(a, b, out, "--curve", kind, "--num_bends", str(bends), "--epochs", "3", "--batch_size", "64")
        assert r.returncode == 0, r.stderr
        rec = json.load(open(os.path.join(out, "curve.json")))
        files = [rec["end_files"][0], *[os.path.join(out, f) for f in rec["bend_files"]], rec["end_files"][1]]
        assert rec["kind"] == kind and rec["epochs_done"] == 3 and len(rec["bend_files"]) == bends
        ts, v, _ = surface(str(tmp_path / f"{kind}.h5"), "--curve_file", out, "--x=0:1:9")
        np.testing.assert_allclose(v, plain_losses(files, kind, ts), rtol=1e-5, atol=1e-6)


def test_the_trained_curve_has_a_far_lower_barrier_than_the_straight_line(minima, tmp_path):
    a, b = minima
    out = str(tmp_path / "curve")
    r = find(a, b, out, "--epochs", "10", "--batch_size", "64")
    assert r.returncode == 0, r.stderr
    _, line, line_out = surface(str(tmp_path / "line.h5"), "--path_files", a, b, "--x=0:1:21")
    _, curve, curve_out = surface(str(tmp_path / "curve.h5"), "--curve_file", out, "--x=0:1:21")
    assert curve[0] == pytest.approx(line[0], rel=1e-6) and curve[-1] == pytest.approx(line[-1], rel=1e-6)
    assert curves.barrier(curve) < 0.4 * curves.barrier(line), (curves.barrier(curve), curves.barrier(line))
    assert f"train_loss barrier along the path: {curves.barrier(line):.5g}" in line_out
    assert f"train_loss barrier along the path: {curves.barrier(curve):.5g}" in curve_out
    line_file, curve_file = str(tmp_path / "line.h5"), str(tmp_path / "curve.h5")
    r = command("plot_1D.py", ["--surf_file", line_file, curve_file, "--labels", "line", "curve", "--format", "png"])
    assert r.returncode == 0, r.stderr
    assert f"{line_file}: train_loss barrier along the path: {curves.barrier(line):.5g}" in r.stdout
    assert f"{curve_file}: train_loss barrier along the path: {curves.barrier(curve):.5g}" in r.stdout
    assert os.path.exists(line_file + "_1d_overlay_train_loss.png")


def test_kill_9_and_rerun_give_the_bends_of_an_uninterrupted_run(minima, tmp_path):
    a, b = minima
    args = ["--epochs", "40", "--batch_size", "16", "--num_bends", "2", "--curve", "polychain"]
    whole = str(tmp_path / "whole")
    assert find(a, b, whole, *args).returncode == 0
    cut = str(tmp_path / "cut")
    cmd = [sys.executable, os.path.join(REPO, "find_curve.py"), *BASE, "--model_file", a, "--model_file2", b,
           "--out", cut, *args]
    proc = subprocess.Popen(cmd, env=mpi_env(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    state = os.path.join(cut, "curve_state.pt")
    deadline = time.time() + 120
    while time.time() < deadline and proc.poll() is None:
        if os.path.exists(state) and torch.load(state, weights_only=True)["epoch"] >= 3:
            break
        time.sleep(0.05)
    assert proc.poll() is None, "the run ended before it could be killed: raise --epochs"
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    done = torch.load(state, weights_only=True)["epoch"]
    assert 3 <= done < 40 and not os.path.exists(os.path.join(cut, "curve.json"))
    r = find(a, b, cut, *args)
    assert r.returncode == 0, r.stderr
    assert f"curve epoch {done}/40" not in r.stdout and f"curve epoch {done + 1}/40" in r.stdout  # resumed
    for i in (1, 2):
        w = torch.load(os.path.join(whole, f"bend_{i}.t7"), weights_only=True)["state_dict"]
        c = torch.load(os.path.join(cut, f"bend_{i}.t7"), weights_only=True)["state_dict"]
        assert all(torch.equal(w[k], c[k]) for k in w)


def test_the_api_curve_equals_the_command_lines(minima, tmp_path):
    a, b = minima
    out = str(tmp_path / "cli")
    assert find(a, b, out, "--epochs", "2", "--batch_size", "64", "--seed", "5").returncode == 0
    data = zoo_data.load_digits()
    m1, m2 = load_net("digits_mlp", a), load_net("digits_mlp", b)
    bends = landscape.find_curve(m1, m2, (data.train_x, data.train_y), epochs=2, batch_size=64, seed=5,
                                 device="cpu")
    cli = torch.load(os.path.join(out, "bend_1.t7"), weights_only=True)["state_dict"]
    assert len(bends) == 1 and all(torch.allclose(bends[0].state_dict()[k], cli[k], atol=1e-6) for k in cli)
    r = landscape.path([m1, *bends, m2], (data.train_x, data.train_y), path_type="bezier", x="0:1:5", device="cpu")
    ts, v, _ = surface(str(tmp_path / "c.h5"), "--curve_file", out, "--x=0:1:5")
    np.testing.assert_allclose(r.values["train_loss"], v, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("bad", [
    dict(kind="helix"), dict(bends=0), dict(epochs=-1), dict(lr=0.0), dict(batch_size=0), dict(seed=-1),
    dict(momentum=float("nan"))])
def test_the_api_refuses_bad_settings_in_one_line(minima, bad):
    m1, m2 = load_net("digits_mlp", minima[0]), load_net("digits_mlp", minima[1])
    x, y = torch.zeros(4, 64), torch.zeros(4, dtype=torch.long)
    with pytest.raises(landscape.LandscapeError) as e:
        landscape.find_curve(m1, m2, (x, y), **bad)
    assert "\n" not in str(e.value) and list(bad)[0] in str(e.value)


def test_the_api_refuses_models_of_different_architectures(minima):
    m1 = load_net("digits_mlp", minima[0])
    with pytest.raises(landscape.LandscapeError, match="architecture"):
        landscape.find_curve(m1, load_net("digits_cnn", None), (torch.zeros(4, 1, 8, 8), torch.zeros(4).long()))


def test_bad_input_is_one_line_exit_2_and_nothing_written(minima, tmp_path, cnn_ckpt):
    a, b = minima
    work = tmp_path / "work"
    work.mkdir()
    shutil.copy(a, work / "a.t7")
    shutil.copy(b, work / "b.t7")
    a, b = str(work / "a.t7"), str(work / "b.t7")
    out = str(work / "curve")
    before = snapshot(work)
    cases = [(["--num_bends", "0"], "--num_bends"), (["--curve", "spiral"], "--curve"),
             (["--epochs", "-2"], "--epochs"), (["--lr", "0"], "--lr")]
    for extra, word in cases:
        assert_refused(find(a, b, out, *extra), work, before, word)
    r = command("find_curve.py", [*BASE, "--model_file", a, "--model_file2", cnn_ckpt, "--out", out])
    assert_refused(r, work, before)
    r = command("find_curve.py", [*BASE, "--model_file", a, "--out", out])
    assert_refused(r, work, before, "--model_file2")

    assert find(a, b, out, "--epochs", "1").returncode == 0
    before = snapshot(work)
    surf = str(work / "s.h5")
    for args, word in ((["--curve_file", out, "--x=-0.5:1:5"], "[0, 1]"),
                       (["--curve_file", out, "--x=0:1:5", "--path_type", "bezier"], "--path_type"),
                       (["--curve_file", out, "--x=0:1:5", "--path_files", a, b], "--path_files"),
                       (["--curve_file", str(work / "nothing"), "--x=0:1:5"], "does not exist"),
                       (["--curve_file", a, "--x=0:1:5"], "not a curve file")):
        assert_refused(command("plot_surface.py", [*BASE, *args, "--surf_file", surf]), work, before, word)
    torch.save(torch.load(b, weights_only=True) | {"epoch": 99}, b)     # an end point changed since
    before = snapshot(work)
    r = command("plot_surface.py", [*BASE, "--curve_file", out, "--x=0:1:5", "--surf_file", surf])
    assert_refused(r, work, before, "second end point", "changed")
    r = find(str(work / "a.t7"), b, out, "--epochs", "2")          # the same folder, other ends: refused
    assert_refused(r, work, before, "other end points")


def test_a_curve_under_mpiexec_with_resume_equals_one_rank(minima, tmp_path):
    a, b = minima
    out = str(tmp_path / "curve")
    assert find(a, b, out, "--epochs", "2").returncode == 0
    _, one, _ = surface(str(tmp_path / "one.h5"), "--curve_file", out, "--x=0:1:9", "--eval_test")
    two = str(tmp_path / "two.h5")
    r = run_script("plot_surface.py", ["--mpi", *BASE, "--curve_file", out, "--x=0:1:9", "--eval_test",
                                       "--surf_file", two], mpi_ranks=2)
    assert r.returncode == 0, r.stderr[-3000:]
    with h5py.File(two, "r") as f:
        np.testing.assert_allclose(f["train_loss"][:], one, rtol=1e-6)
        assert f["test_loss"].shape == (9,) and f.attrs["path_type"] == "bezier"
    r = run_script("plot_surface.py", ["--mpi", *BASE, "--curve_file", out, "--x=0:1:9", "--eval_test",
                                       "--surf_file", two], mpi_ranks=2)
    assert r.returncode == 0 and "nothing to compute: every point is done" in r.stdout, r.stdout  # resumed


# ----------------------------------------------------------------------------- barriers, BatchNorm, the plane
def test_a_path_file_stores_its_barrier_heights_once_complete(minima, tmp_path):
    a, b = minima
    out = str(tmp_path / "curve")
    assert find(a, b, out, "--epochs", "2").returncode == 0
    surf = str(tmp_path / "c.h5")
    assert command("plot_surface.py", [*BASE, "--curve_file", out, "--x=0:1:9", "--eval_test",
                                       "--surf_file", surf]).returncode == 0
    with h5py.File(surf, "r") as f:
        for key in ("train_loss", "test_loss"):
            v = np.asarray(f[key][:], dtype=np.float64)
            assert f.attrs[f"{key}_barrier"] == pytest.approx(v.max() - 0.5 * (v[0] + v[-1]), rel=1e-12)
        stored = float(f.attrs["train_loss_barrier"])
    surf_h5 = plot_1d.load_surface(surf)
    assert plot_1d.barrier_label("curve", surf_h5, "train_loss") == f"curve (barrier {stored:.3g})"
    assert plot_1d.barrier_label("curve", surf_h5, "train_acc") == "curve"
    half = str(tmp_path / "half.h5")                    # a t range without the second end: no barrier
    assert command("plot_surface.py", [*BASE, "--curve_file", out, "--x=0:0.5:5", "--surf_file", half]).returncode == 0
    with h5py.File(half, "r") as f:
        assert "train_loss_barrier" not in f.attrs
    plain = str(tmp_path / "plain.h5")                  # not a path: no barrier
    assert command("plot_surface.py", [*BASE, "--model_file", a, "--x=-1:1:3", "--surf_file", plain]).returncode == 0
    with h5py.File(plain, "r") as f:
        assert "train_loss_barrier" not in f.attrs


def test_a_batchnorm_curve_is_evaluated_with_recomputed_statistics(cnn_run, tmp_path):
    a, b = os.path.join(cnn_run, "model_3.t7"), os.path.join(cnn_run, "model_4.t7")
    cnn = ["--dataset", "digits", "--model", "digits_cnn", "--threads", "1"]
    out = str(tmp_path / "curve")
    r = command("find_curve.py", [*cnn, "--model_file", a, "--model_file2", b, "--epochs", "1", "--out", out])
    assert r.returncode == 0, r.stderr
    auto, given = str(tmp_path / "auto.h5"), str(tmp_path / "given.h5")
    r = command("plot_surface.py", [*cnn, "--curve_file", out, "--x=0:1:3", "--surf_file", auto])
    assert r.returncode == 0, r.stderr
    assert "running statistics are recomputed at every point (--bn_recalibrate)" in r.stdout
    r = command("plot_surface.py", [*cnn, "--curve_file", out, "--x=0:1:3", "--bn_recalibrate", "--surf_file", given])
    assert r.returncode == 0 and "recomputed at every point" not in r.stdout, r.stderr
    with h5py.File(auto, "r") as f, h5py.File(given, "r") as g:
        assert np.array_equal(f["train_loss"][:], g["train_loss"][:])
    r = command("plot_surface.py", [*cnn, "--path_files", a, b, "--x=0:1:2", "--surf_file", str(tmp_path / "p.h5")])
    assert r.returncode == 0 and "warning: the model has BatchNorm" in r.stderr, r.stderr
    r = command("plot_surface.py", [*cnn, "--path_files", a, b, "--x=0:1:2", "--bn_recalibrate",
                                    "--surf_file", str(tmp_path / "q.h5")])
    assert r.returncode == 0 and "BatchNorm" not in r.stderr, r.stderr


def flat_params(path, names):
    state = torch.load(path, map_location="cpu", weights_only=True)["state_dict"]
    return torch.cat([state[n].flatten() for n in names]).double()


def test_the_plane_of_a_curve_equals_a_plain_loop_and_places_the_curve(minima, tmp_path):
    a, b = minima
    out = str(tmp_path / "curve")
    assert find(a, b, out, "--epochs", "3", "--batch_size", "64").returncode == 0
    surf = str(tmp_path / "plane.h5")
    r = command("plot_surface.py", [*BASE, "--curve_file", out, "--curve_plane", "--x=-0.25:1.25:4",
                                    "--y=-0.5:1.5:3", "--surf_file", surf, "--plot", "--format", "png"])
    assert r.returncode == 0, r.stderr
    assert os.path.exists(os.path.join(out, "plane_bend=1.h5"))            # the directions, in the curve's folder
    names = [n for n, _ in load_net("digits_mlp", None).named_parameters()]
    w0, bend, w1 = (flat_params(f, names) for f in (a, os.path.join(out, "bend_1.t7"), b))
    dx = w1 - w0                                                             # by hand: x, and y orthogonal to it
    perp = (bend - w0) - ((bend - w0) @ dx) / (dx @ dx) * dx
    dy = perp * dx.norm() / perp.norm()
    bx, by = float((bend - w0) @ dx / (dx @ dx)), float(perp.norm() / dx.norm())
    with h5py.File(surf, "r") as f:
        overlay = json.loads(f.attrs["curve_plane"])
        xs, ys, loss = f["xcoordinates"][:], f["ycoordinates"][:], f["train_loss"][:]
    pts = np.array(overlay["points"])
    np.testing.assert_allclose(pts, [[0, 0], [bx, by], [1, 0]], atol=1e-5)
    assert max(overlay["out_of_plane"]) < 1e-5 and overlay["kind"] == "bezier"
    assert f"bend 1 at ({bx:.4g}, {by:.4g})" in r.stdout
    data = zoo_data.load_digits()
    x, y = data.train_x.double().flatten(1), data.train_y
    shapes = [p.shape for _, p in load_net("digits_mlp", None).named_parameters()]
    for j, i in ((0, 0), (1, 2), (2, 3)):
        w, k, h = w0 + xs[i] * dx + ys[j] * dy, 0, x
        parts = []
        for s in shapes:
            parts.append(w[k:k + int(np.prod(s))].reshape(s))
            k += int(np.prod(s))
        for n in range(0, len(parts), 2):
            h = h @ parts[n].T + parts[n + 1]
            if n < len(parts) - 2:
                h = torch.relu(h)
        assert loss[j, i] == pytest.approx(float(F.cross_entropy(h, y)), rel=1e-4, abs=1e-5), (i, j)
    cx, cy = curves.plane_curve(overlay, num=5)                # phi(1/2) = w0 / 4 + bend / 2 + w1 / 4
    assert (cx[2], cy[2]) == pytest.approx((0.5 * bx + 0.25, 0.5 * by), abs=1e-6)
    assert os.path.exists(surf + "_train_loss_2dcontourf.png")
    r = command("plot_surface.py", [*BASE, "--curve_file", out, "--curve_plane", "--x=-0.25:1.25:4",
                                    "--y=-0.5:1.5:3", "--surf_file", surf])
    assert r.returncode == 0 and "nothing to compute" in r.stdout, r.stderr   # resumed, the overlay kept
    with h5py.File(surf, "r") as f:
        assert json.loads(f.attrs["curve_plane"]) == overlay


def test_a_polychain_plane_goes_through_the_chosen_bend(minima, tmp_path):
    a, b = minima
    out = str(tmp_path / "chain")
    assert find(a, b, out, "--curve", "polychain", "--num_bends", "3", "--epochs", "2").returncode == 0
    surf = str(tmp_path / "p.h5")
    r = command("plot_surface.py", [*BASE, "--curve_file", out, "--curve_plane", "--curve_bend", "3",
                                    "--x=0:1:2", "--y=0:1:2", "--surf_file", surf])
    assert r.returncode == 0, r.stderr
    assert os.path.exists(os.path.join(out, "plane_bend=3.h5"))
    with h5py.File(surf, "r") as f:
        overlay = json.loads(f.attrs["curve_plane"])
    assert overlay["bend"] == 3 and len(overlay["points"]) == 5 and overlay["out_of_plane"][3] < 1e-5
    assert max(overlay["out_of_plane"][1:3]) > 1e-4        # the other bends lie off the plane: projected


def test_bad_plane_input_is_one_line_exit_2_and_nothing_written(minima, tmp_path):
    a, b = minima
    work = tmp_path / "work"
    work.mkdir()
    out = str(work / "curve")
    assert find(a, b, out, "--epochs", "1").returncode == 0
    before = snapshot(work)
    surf = str(work / "s.h5")
    plane = ["--curve_file", out, "--curve_plane", "--x=0:1:3"]
    for args, word in (([*plane], "--y"),
                       ([*plane, "--y=0:1:3", "--model_file2", b], "--model_file2"),
                       ([*plane, "--y=0:1:3", "--xnorm", "filter"], "--xnorm"),
                       ([*plane, "--y=0:1:3", "--dir_file", str(work / "d.h5")], "--dir_file"),
                       ([*plane, "--y=0:1:3", "--model_file", b], "--model_file"),
                       ([*plane, "--y=0:1:3", "--curve_bend", "2"], "--curve_bend 2"),
                       (["--curve_file", out, "--curve_bend", "1", "--x=0:1:3"], "--curve_plane"),
                       (["--model_file", a, "--curve_plane", "--x=0:1:3", "--y=0:1:3"], "--curve_file")):
        assert_refused(command("plot_surface.py", [*BASE, *args, "--surf_file", surf]), work, before, word)
    good = str(work / "good.h5")
    assert command("plot_surface.py", [*BASE, *plane, "--y=0:1:2", "--surf_file", good]).returncode == 0
    with h5py.File(good, "a") as f:
        f.attrs["curve_plane"] = "{not json"
    before = snapshot(work)
    assert_refused(command("plot_2D.py", ["--surf_file", good, "--format", "png"]), work, before, "curve_plane")


def test_the_plane_under_mpiexec_equals_one_rank(minima, tmp_path):
    a, b = minima
    out = str(tmp_path / "curve")
    assert find(a, b, out, "--epochs", "1").returncode == 0
    plane = ["--curve_file", out, "--curve_plane", "--x=-0.2:1.2:4", "--y=-0.5:1:3"]
    one, two = str(tmp_path / "one.h5"), str(tmp_path / "two.h5")
    assert command("plot_surface.py", [*BASE, *plane, "--surf_file", one]).returncode == 0
    r = run_script("plot_surface.py", ["--mpi", *BASE, *plane, "--surf_file", two], mpi_ranks=2)
    assert r.returncode == 0, r.stderr[-3000:]
    assert r.stdout.count("the plane of the curve:") == 1, r.stdout      # rank 0 alone says it
    with h5py.File(one, "r") as f, h5py.File(two, "r") as g:
        np.testing.assert_allclose(g["train_loss"][:], f["train_loss"][:], rtol=1e-6)
        np.testing.assert_allclose(json.loads(g.attrs["curve_plane"])["points"],
                                   json.loads(f.attrs["curve_plane"])["points"], atol=1e-9)


# ----------------------------------------------------------------------------- the output folder's settings
def bend_tensors(out):
    rec = json.load(open(os.path.join(out, "curve.json")))
    return [torch.load(os.path.join(out, f), weights_only=True)["state_dict"] for f in rec["bend_files"]]


def test_a_curve_of_zero_epochs_keeps_its_folder_from_other_ends_and_settings(minima, tmp_path):
    """A folder holding a 0-epoch curve was overwritten by a run with other ends or settings (no state
    file was written before the first epoch): now refused, one line, nothing changed."""
    a, b = minima
    work = tmp_path / "w"
    work.mkdir()
    out = str(work / "curve")
    assert find(a, b, out, "--epochs", "0").returncode == 0
    assert os.path.exists(os.path.join(out, "curve_state.pt"))
    before = snapshot(work)
    assert_refused(find(b, a, out, "--epochs", "0"), work, before, "other end points")
    assert_refused(find(a, b, out, "--epochs", "1", "--lr", "0.2"), work, before, "lr 0.05 (now 0.2)")
    assert_refused(find(a, b, out, "--epochs", "0", "--num_bends", "2"), work, before, "bends 1 (now 2)")


def test_more_epochs_extend_a_curve_exactly_as_one_longer_run(minima, tmp_path):
    a, b = minima
    short, long = str(tmp_path / "short"), str(tmp_path / "long")
    assert find(a, b, short, "--epochs", "1", "--batch_size", "64").returncode == 0
    r = find(a, b, short, "--epochs", "3", "--batch_size", "64")
    assert r.returncode == 0 and "resuming from" in r.stdout and "1 of 3 epochs done" in r.stdout, r.stdout
    assert find(a, b, long, "--epochs", "3", "--batch_size", "64").returncode == 0
    for s, t in zip(bend_tensors(short), bend_tensors(long)):
        for k in t:
            assert torch.equal(s[k], t[k]), k
    assert json.load(open(os.path.join(short, "curve.json")))["epochs_done"] == 3
    before = snapshot(tmp_path)
    assert_refused(find(a, b, short, "--epochs", "2", "--batch_size", "64"), tmp_path, before, "holds 3 epochs")


def test_a_curve_file_refuses_path_type_even_when_it_names_the_default(minima, tmp_path):
    a, b = minima
    out = str(tmp_path / "curve")
    assert find(a, b, out, "--epochs", "0").returncode == 0          # a Bezier curve (the default kind)
    before = snapshot(tmp_path)
    for kind in ("polychain", "bezier"):
        r = command("plot_surface.py", [*BASE, "--curve_file", out, "--x=0:1:3", "--path_type", kind,
                                        "--surf_file", str(tmp_path / "s.h5")])
        assert_refused(r, tmp_path, before, "--path_type")
    # --path_files without --path_type is still a polygonal chain
    _, v, _ = surface(str(tmp_path / "p.h5"), "--path_files", a, b, "--x=0:1:3")
    with h5py.File(str(tmp_path / "p.h5"), "r") as f:
        assert f.attrs["path_type"] == "polychain"


def test_a_barrier_whose_maximum_is_an_end_point_says_so(tmp_path):
    for losses, note in (([0.1, 0.5, 0.2], False), ([0.1, 0.5, 2.3], True)):
        path = str(tmp_path / f"p{int(note)}.h5")
        with h5py.File(path, "w") as f:
            f.attrs["path_type"] = "polychain"
            f["xcoordinates"] = np.array([0.0, 0.5, 1.0])
            f["train_loss"] = np.array(losses)
        (line,) = curves.path_barriers(path)
        assert line.startswith(f"train_loss barrier along the path: {curves.barrier(losses):.5g}")
        assert ("the maximum is an end point" in line) == note, line
