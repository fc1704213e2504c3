"""The reference's own files with the reference's own command lines.

A direction file written by the reference's plot_surface.py has groups xdirection (and ydirection)
of datasets '0'..'n-1' and no attributes. The reference ignores its direction flags (--xnorm,
--xignore, ..., --model_file2) when --dir_file is given, so its users' scripts pass them anyway:
such a line must run on the file's own directions, say once that the flags were not applied, and
give the surface an independent loop computes from the file (tests/oracle.py).
"""
import glob
import os
import shlex
import shutil

import h5py
import numpy as np
import pytest
import torch

import dataloader
import model_loader
import plot_surface
from helpers import REPO, run_script
from landscape.errors import UserError
from oracle import check_surface_file

DIRECTION_FLAGS = ("--dir_type", "--xnorm", "--xignore", "--ynorm", "--yignore")
NOTE = "holds its own directions and records no"


def script_direction_lines():
    """The distinct direction flags of every plot_surface.py line in script/*.sh (the reference's
    scripts): [(flags without values that name files, uses_model_file2, is_2d)]."""
    found = []
    for path in sorted(glob.glob(os.path.join(REPO, "script", "*.sh"))):
        text = open(path).read().replace("\\\n", " ")
        if "The reference implementation's command lines" not in text:   # our own templates
            continue
        for line in text.splitlines():
            if "plot_surface.py" not in line or line.lstrip().startswith("#"):
                continue
            argv = shlex.split(line)
            argv = argv[argv.index(next(a for a in argv if a.endswith("plot_surface.py"))) + 1:]
            flags, i = [], 0
            while i < len(argv):
                if argv[i] in DIRECTION_FLAGS:
                    flags += argv[i:i + 2]
                    i += 1
                elif argv[i] == "--same_dir":
                    flags.append(argv[i])
                i += 1
            key = (tuple(flags), "--model_file2" in argv, any(a.startswith("--y") for a in argv))
            if key not in found:
                found.append(key)
    return found


LINES = script_direction_lines()


def test_the_scripts_give_the_three_kinds_of_reference_lines():
    kinds = {(two_d, target) for _, target, two_d in LINES}
    assert {(False, False), (True, False), (False, True)} <= kinds, LINES


def filter_normalised(d, w):
    """The reference's --xnorm filter --xignore biasbn for one entry: zero for biases and BN (dim <= 1),
    else each filter d_i scaled to the norm of w_i."""
    if w.dim() <= 1:
        return torch.zeros_like(d)
    return torch.stack([di * (wi.norm() / (di.norm() + 1e-10)) for di, wi in zip(d, w)])


def write_reference_direction_file(path, net, flags, two_d, target=None):
    """A direction file as the reference writes it: no attributes; random draws over the parameters
    (normalised as `flags` ask), or target - net over the state_dict for --dir_type states."""
    states = "--dir_type" in flags and flags[flags.index("--dir_type") + 1] == "states"
    space = list(net.state_dict().items()) if states else list(net.named_parameters())
    gen = torch.Generator().manual_seed(7)
    with h5py.File(path, "w") as f:
        for axis in ("x", "y") if two_d else ("x",):
            group = f.create_group(axis + "direction")
            for i, (name, w) in enumerate(space):
                if target is not None:   # (integer entries, BN's num_batches_tracked: no eval-mode forward reads them)
                    d = target.state_dict()[name] - w if w.is_floating_point() else torch.zeros_like(w)
                else:
                    d = torch.randn(w.shape, generator=gen)
                    if f"--{axis}norm" in flags:
                        d = filter_normalised(d, w.detach())
                if not w.is_floating_point():   # (no eval-mode forward reads an integer entry)
                    d = torch.zeros(w.shape)
                group.create_dataset(str(i), data=d.detach().numpy())
    assert not dict(h5py.File(path, "r").attrs)


@pytest.fixture
def ref_work(tmp_path, cnn_run, monkeypatch):
    """A folder with two digits_cnn checkpoints (BatchNorm: --dir_type states moves its statistics)."""
    shutil.copy(os.path.join(cnn_run, "model_4.t7"), tmp_path / "m.t7")
    shutil.copy(os.path.join(cnn_run, "model_2.t7"), tmp_path / "m2.t7")
    monkeypatch.chdir(tmp_path)
    return tmp_path


def reference_line(flags, target, two_d, dir_file):
    grid = ["--x=-1:1:3"] + (["--y=-1:1:3"] if two_d else [])
    return ["--dataset", "digits", "--model", "digits_cnn", "--model_file", "m.t7", *grid, *flags,
            *(["--model_file2", "m2.t7"] if target else []), "--dir_file", dir_file, "--threads", "1"]


def check_against_oracle(surf, dir_file):
    d = dataloader.load_tensors("digits")
    check_surface_file(surf, lambda: model_loader.build("digits_cnn"), checkpoints="m.t7",
                       data=(d.train_x, d.train_y), points=9, rtol=1e-4, dir_file=dir_file)


@pytest.mark.parametrize("flags,target,two_d", LINES, ids=[" ".join(f[0]) + (" target" if f[1] else "")
                                                           for f in LINES])
def test_a_reference_direction_file_runs_with_the_reference_direction_flags(ref_work, capsys, flags, target,
                                                                            two_d):
    net = model_loader.load("digits", "digits_cnn", "m.t7")
    other = model_loader.load("digits", "digits_cnn", "m2.t7") if target else None
    write_reference_direction_file("ref.h5", net, list(flags), two_d, other)
    assert plot_surface.main(reference_line(list(flags), target, two_d, "ref.h5")) == 0
    err = capsys.readouterr().err
    notes = [line for line in err.splitlines() if NOTE in line]
    named = [f for f in flags if f.startswith("--x") or f.startswith("--y")] + (["--model_file2"] if target else [])
    if named:
        assert len(notes) == 1 and all(f in notes[0] for f in named), err
    surf = "ref.h5_[-1.0,1.0,3]" + ("x[-1.0,1.0,3]" if two_d else "") + ".h5"
    check_against_oracle(surf, "ref.h5")
    # the flags change nothing: the same line without them gives the same maps
    with h5py.File(surf, "r") as f:
        first = {k: f[k][()] for k in ("train_loss", "train_acc")}
    bare = [a for a in reference_line([], False, two_d, "ref.h5")] + ["--surf_file", "bare.h5"]
    bare += ["--dir_type", flags[flags.index("--dir_type") + 1]] if "--dir_type" in flags else []
    assert plot_surface.main(bare) == 0
    with h5py.File("bare.h5", "r") as f:
        for k, v in first.items():
            np.testing.assert_array_equal(f[k][()], v)


@pytest.mark.parametrize("two_d", [False, True], ids=["1D", "2D"])
def test_a_reference_direction_file_with_its_flags_under_mpiexec(ref_work, two_d):
    flags = [f for f, _, d in LINES if d == two_d and "--xnorm" in f][0]
    net = model_loader.load("digits", "digits_cnn", "m.t7")
    write_reference_direction_file("ref.h5", net, list(flags), two_d)
    r = run_script("plot_surface.py", ["--mpi", *reference_line(list(flags), False, two_d, "ref.h5")],
                   cwd=ref_work, mpi_ranks=2)
    assert r.returncode == 0, r.stderr
    assert r.stderr.count(NOTE) == 1, r.stderr
    check_against_oracle("ref.h5_[-1.0,1.0,3]" + ("x[-1.0,1.0,3]" if two_d else "") + ".h5", "ref.h5")


def test_a_reference_named_direction_file_is_reused_by_the_reference_line(ref_work, capsys):
    """The reference's line run again without --dir_file finds the direction file the reference named."""
    flags = ["--dir_type", "weights", "--xnorm", "filter", "--xignore", "biasbn", "--ynorm", "filter",
             "--yignore", "biasbn"]
    name = "m.t7_weights_xignore=biasbn_xnorm=filter_yignore=biasbn_ynorm=filter.h5"
    write_reference_direction_file(name, model_loader.load("digits", "digits_cnn", "m.t7"), flags, True)
    argv = ["--dataset", "digits", "--model", "digits_cnn", "--model_file", "m.t7", "--x=-1:1:3", "--y=-1:1:3",
            *flags, "--threads", "1"]
    assert plot_surface.main(argv) == 0
    check_against_oracle(name + "_[-1.0,1.0,3]x[-1.0,1.0,3].h5", name)
    assert not h5py.File(name, "r").attrs.keys()     # the user's file is left as it was


def test_a_direction_file_that_records_its_spec_still_refuses_a_contradicting_flag(ref_work):
    base = ["--dataset", "digits", "--model", "digits_cnn", "--model_file", "m.t7", "--x=-1:1:3", "--threads", "1"]
    assert plot_surface.main(base + ["--xnorm", "filter", "--xignore", "biasbn"]) == 0
    made = "m.t7_weights_xignore=biasbn_xnorm=filter.h5"
    with pytest.raises(UserError, match="was made with --xnorm 'filter', not 'layer'"):
        plot_surface.main(base + ["--xnorm", "layer", "--dir_file", made, "--surf_file", "other.h5"])
    assert not os.path.exists("other.h5")
    # the flags it records, given again, run without a note
    assert plot_surface.main(base + ["--xnorm", "filter", "--xignore", "biasbn", "--dir_file", made,
                                     "--surf_file", "same.h5"]) == 0


# ----------------------------------------------------------------------------- other reference lines and files
def test_a_reference_direction_file_resumes_with_and_without_model_file2(ref_work):
    """--model_file2 is not applied with a reference --dir_file, so adding or dropping it later resumes."""
    net = model_loader.load("digits", "digits_cnn", "m.t7")
    write_reference_direction_file("t.h5", net, ["--dir_type", "states"], False,
                                   model_loader.load("digits", "digits_cnn", "m2.t7"))
    base = ["--dataset", "digits", "--model", "digits_cnn", "--model_file", "m.t7", "--dir_type", "states",
            "--dir_file", "t.h5", "--surf_file", "s.h5", "--threads", "1"]
    assert plot_surface.main(base + ["--x=-0.5:1.5:3", "--model_file2", "m2.t7"]) == 0
    with h5py.File("s.h5", "r+") as f:
        f["train_loss"][1] = -1.0                       # one point left to compute
    assert plot_surface.main(base + ["--x=-0.5:1.5:3"]) == 0
    check_against_oracle("s.h5", "t.h5")


def test_a_checkpoint_without_batch_counts_loads(ref_work):
    """PyTorch 0.4.0 checkpoints (the reference's published ones) have no BatchNorm num_batches_tracked."""
    ckpt = torch.load("m.t7", weights_only=True)
    old = {k: v for k, v in ckpt["state_dict"].items() if not k.endswith("num_batches_tracked")}
    assert len(old) < len(ckpt["state_dict"])
    torch.save({"acc": 90.0, "epoch": 4, "state_dict": old}, "old.t7")
    args = ["--dataset", "digits", "--model", "digits_cnn", "--x=-1:1:3", "--dir_type", "states", "--xnorm", "filter",
            "--xignore", "biasbn", "--threads", "1"]
    assert plot_surface.main(args + ["--model_file", "old.t7", "--surf_file", "old.h5"]) == 0
    assert plot_surface.main(args + ["--model_file", "m.t7", "--surf_file", "new.h5"]) == 0
    with h5py.File("old.h5", "r") as a, h5py.File("new.h5", "r") as b:
        np.testing.assert_array_equal(a["train_loss"][()], b["train_loss"][()])


def test_model_folder_with_a_model_file_that_already_names_it(ref_work):
    """The reference ignored --model_folder in plot_surface.py: a path that exists as given is taken as given."""
    os.makedirs("run")
    shutil.copy("m.t7", "run/model_4.t7")
    args = ["--dataset", "digits", "--model", "digits_cnn", "--x=0:0:1", "--threads", "1"]
    assert plot_surface.main(args + ["--model_folder", "run", "--model_file", "run/model_4.t7",
                                     "--surf_file", "a.h5"]) == 0
    assert plot_surface.main(args + ["--model_folder", "run", "--model_file", "model_4.t7", "--surf_file", "b.h5"]) == 0
    with h5py.File("a.h5", "r") as a, h5py.File("b.h5", "r") as b:
        assert a["train_loss"][0] == b["train_loss"][0]


def test_no_model_file_is_the_seeded_initialisation(ref_work, capsys):
    """The reference's plot_surface.py without --model_file: the model as built after manual_seed(123)."""
    assert plot_surface.main(["--dataset", "digits", "--model", "digits_cnn", "--x=-1:1:3", "--xnorm", "filter",
                              "--xignore", "biasbn", "--threads", "1"]) == 0
    assert "warning: no --model_file" in capsys.readouterr().err
    torch.manual_seed(123)
    net = model_loader.build("digits_cnn").eval()
    d = dataloader.load_tensors("digits")
    with torch.no_grad():
        want = float(torch.nn.functional.cross_entropy(net(d.train_x), d.train_y))
    with h5py.File("_weights_xignore=biasbn_xnorm=filter.h5_[-1.0,1.0,3].h5", "r") as f:
        assert f["train_loss"][1] == pytest.approx(want, rel=1e-5)


def test_a_reversed_range_runs_the_axis_backwards(ref_work):
    args = ["--dataset", "digits", "--model", "digits_cnn", "--model_file", "m.t7", "--xnorm", "filter", "--xignore",
            "biasbn", "--threads", "1"]
    assert plot_surface.main(args + ["--x=-1:1:5", "--surf_file", "up.h5"]) == 0
    dir_file = "m.t7_weights_xignore=biasbn_xnorm=filter.h5"
    assert plot_surface.main(args + ["--x=1:-1:5", "--dir_file", dir_file, "--plot", "--format", "png"]) == 0
    with h5py.File("up.h5", "r") as a, h5py.File(dir_file + "_[1.0,-1.0,5].h5", "r") as b:
        np.testing.assert_array_equal(b["xcoordinates"][()], np.linspace(1, -1, 5))
        np.testing.assert_allclose(b["train_loss"][()], a["train_loss"][()][::-1], rtol=1e-6)
    assert os.path.exists(dir_file + "_[1.0,-1.0,5].h5_1d_loss_acc.png")


def test_a_trajectory_of_two_checkpoints(ref_work, cnn_run):
    """sklearn's PCA, which the reference calls, takes two checkpoints: the second direction has no variance."""
    folder = ref_work / "run"
    os.makedirs(folder)
    for e in (0, 1):
        shutil.copy(os.path.join(cnn_run, f"model_{e}.t7"), folder / f"model_{e}.t7")
    r = run_script("plot_trajectory.py", ["--dataset", "digits", "--model", "digits_cnn", "--model_folder", folder,
                                          "--start_epoch", "0", "--max_epoch", "1", "--save_epoch", "1",
                                          "--ignore", "biasbn"], cwd=ref_work)
    assert r.returncode == 0, r.stderr
    assert "spans one dimension" in r.stderr and "Traceback" not in r.stderr
    pca = folder / "PCA_weights_ignore=biasbn_save_epoch=1" / "directions.h5"
    with h5py.File(pca, "r") as f:
        dx = np.concatenate([f["xdirection"][str(i)][()].ravel() for i in range(len(f["xdirection"]))])
        dy = np.concatenate([f["ydirection"][str(i)][()].ravel() for i in range(len(f["ydirection"]))])
        with h5py.File(str(pca) + "_proj_cos.h5", "r") as g:
            assert np.isfinite(g["proj_xcoord"][()]).all() and np.isfinite(g["proj_ycoord"][()]).all()
    w = [torch.cat([p.detach().flatten() * (p.dim() > 1) for p in
                    model_loader.load("digits", "digits_cnn", folder / f"model_{e}.t7").parameters()]).double().numpy()
         for e in (0, 1)]                                # --ignore biasbn: biases and BN parameters do not count
    step = (w[0] - w[1]) / np.linalg.norm(w[0] - w[1])
    assert abs(abs(dx @ step) / np.linalg.norm(dx) - 1) < 1e-5          # the one direction the run moved
    assert abs(dx @ dy) < 1e-6 * np.linalg.norm(dx) * np.linalg.norm(dy) and np.linalg.norm(dy) > 0
    assert not dy[w[0] == 0].any()                      # the second direction stays off the ignored entries


def test_a_reference_surface_file_of_a_renamed_direction_file(ref_work, capsys):
    """A reference surface file names its direction file; a copy under another name resumes, other
    directions under that name are refused."""
    flags = ["--xnorm", "filter", "--xignore", "biasbn"]
    net = model_loader.load("digits", "digits_cnn", "m.t7")
    write_reference_direction_file("orig.h5", net, flags, False)
    args = ["--dataset", "digits", "--model", "digits_cnn", "--model_file", "m.t7", "--x=-1:1:3", *flags,
            "--threads", "1", "--surf_file", "s.h5"]
    assert plot_surface.main(args + ["--dir_file", "orig.h5"]) == 0
    with h5py.File("s.h5", "r") as f:
        keep = {k: f[k][()] for k in ("xcoordinates", "train_loss", "train_acc")}

    def write_reference_surface():                  # the same points as the reference writes them, one left
        with h5py.File("s.h5", "w") as f:
            f["dir_file"] = "orig.h5"
            for k, v in keep.items():
                f[k] = v
            f["train_loss"][1] = -1.0
    write_reference_surface()
    shutil.copy("orig.h5", "renamed.h5")
    assert plot_surface.main(args + ["--dir_file", "renamed.h5"]) == 0
    check_against_oracle("s.h5", "renamed.h5")
    write_reference_surface()
    write_reference_direction_file("other.h5", net, [], False)
    with pytest.raises(UserError, match="holds other directions"):
        plot_surface.main(args + ["--dir_file", "other.h5"])
    os.remove("orig.h5")                               # gone: resumed along the named file, with a warning
    capsys.readouterr()
    assert plot_surface.main(args + ["--dir_file", "renamed.h5"]) == 0
    assert "which is gone" in capsys.readouterr().err


def test_a_pytorch_040_states_direction_file_without_batch_counts(ref_work):
    """The reference's --dir_type states file written under PyTorch 0.4.0 has no num_batches_tracked
    entries: it gives the surface of the same directions with zeros there."""
    net = model_loader.load("digits", "digits_cnn", "m.t7")
    write_reference_direction_file("full.h5", net, ["--dir_type", "states", "--xnorm", "filter"], True)
    names = list(net.state_dict())
    with h5py.File("full.h5", "r") as f, h5py.File("old.h5", "w") as g:
        for axis in ("xdirection", "ydirection"):
            group = g.create_group(axis)
            kept = [f[axis][str(i)][()] for i, n in enumerate(names) if not n.endswith("num_batches_tracked")]
            for i, d in enumerate(kept):
                group.create_dataset(str(i), data=d)
    assert len(h5py.File("old.h5", "r")["xdirection"]) < len(names)
    args = ["--dataset", "digits", "--model", "digits_cnn", "--model_file", "m.t7", "--x=-1:1:3", "--y=-1:1:3",
            "--dir_type", "states", "--threads", "1"]
    assert plot_surface.main(args + ["--dir_file", "full.h5"]) == 0
    assert plot_surface.main(args + ["--dir_file", "old.h5"]) == 0
    with h5py.File("full.h5_[-1.0,1.0,3]x[-1.0,1.0,3].h5", "r") as a, \
            h5py.File("old.h5_[-1.0,1.0,3]x[-1.0,1.0,3].h5", "r") as b:
        np.testing.assert_array_equal(a["train_loss"][()], b["train_loss"][()])
    check_against_oracle("full.h5_[-1.0,1.0,3]x[-1.0,1.0,3].h5", "full.h5")


def test_this_tools_own_flags_with_a_reference_direction_file_are_refused(ref_work):
    write_reference_direction_file("ref.h5", model_loader.load("digits", "digits_cnn", "m.t7"), [], True)
    base = ["--dataset", "digits", "--model", "digits_cnn", "--model_file", "m.t7", "--x=-1:1:3", "--y=-1:1:3",
            "--dir_file", "ref.h5", "--threads", "1"]
    with pytest.raises(UserError, match="does not record --xdir hessian: it holds its own directions"):
        plot_surface.main(base + ["--xdir", "hessian"])
    with pytest.raises(UserError, match="does not record --params"):
        plot_surface.main(base + ["--params", "fc"])
    assert sorted(os.listdir(".")) == ["m.t7", "m2.t7", "ref.h5"]


def test_curvature_without_a_model_file_under_mpiexec(ref_work):
    """plot_hessian_eigen.py --at_center of the seeded initialisation: named after it, each line once,
    and the reference's --ngpu noted once."""
    r = run_script("plot_hessian_eigen.py", ["--mpi", "--dataset", "digits", "--model", "digits_cnn", "--at_center",
                                             "--max_iter", "5", "--trace_samples", "3", "--ngpu", "2",
                                             "--threads", "1"], cwd=ref_work, mpi_ranks=2)
    assert r.returncode == 0, r.stderr
    assert r.stderr.count("warning: no --model_file") == 1 and r.stderr.count("--ngpu is not applied") == 1, r.stderr
    assert r.stdout.startswith("digits_cnn_init_seed=123: top eigenvalue")
    assert os.path.exists(ref_work / "digits_cnn_init_seed=123_hessian.json")
