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
from conftest import REPO, run_script
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
