"""Nothing a file holds is ever executed: checkpoints, label files, CIFAR pickles, HDF5 strings."""
import ast
import glob
import os

import h5py
import numpy as np
import torch

from conftest import REPO, run_script


def torch_load_calls():
    """(file, line, weights_only keyword) for every torch.load call in the project's code."""
    calls = []
    for path in glob.glob(os.path.join(REPO, "*.py")) + glob.glob(os.path.join(REPO, "cifar10", "*.py")):
        tree = ast.parse(open(path).read())
        for node in ast.walk(tree):
            if isinstance(node, ast.Call) and ast.unparse(node.func) == "torch.load":
                kw = {k.arg: ast.unparse(k.value) for k in node.keywords}
                calls.append((os.path.relpath(path, REPO), node.lineno, kw.get("weights_only")))
    return calls


def test_every_torch_load_is_weights_only_except_the_opt_in():
    calls = torch_load_calls()
    assert len(calls) >= 3
    unsafe = [c for c in calls if c[2] != "True"]
    # the single exception: pickled DataLoaders, loaded only under --allow_pickle
    assert [(f, w) for f, _, w in unsafe] == [("dataloader.py", "False")], unsafe
    src = open(os.path.join(REPO, "dataloader.py")).read()
    assert "if not allow_pickle:" in src.split("weights_only=False")[0].rsplit("def ", 1)[1]


def test_pickled_dataloader_needs_the_opt_in_flag(tmp_path, mlp_ckpt):
    class Exploit:
        def __reduce__(self):
            return (os.system, (f"touch {tmp_path / 'pwned'}",))
    torch.save(Exploit(), tmp_path / "trainloader.dat")
    r = run_script("plot_surface.py", ["--dataset", "digits", "--model", "digits_mlp", "--model_file", mlp_ckpt,
                                       "--x=0:0:1", "--trainloader", "trainloader.dat"], cwd=tmp_path)
    assert r.returncode == 2 and "--allow_pickle" in r.stderr
    assert not (tmp_path / "pwned").exists()


def test_strings_in_hdf5_files_are_data(tmp_path):
    """dir_file and attributes holding code are read as text, never evaluated."""
    marker = tmp_path / "pwned"
    code = f"__import__('os').system('touch {marker}')"
    path = tmp_path / "s.h5"
    with h5py.File(path, "w") as f:
        f["dir_file"] = code
        f["xcoordinates"] = np.linspace(-1, 1, 5)
        f["train_loss"] = np.linspace(1, 2, 5)
        f["train_acc"] = np.linspace(90, 80, 5)
        f.attrs["command"] = code
        f.attrs["model"] = code
    r = run_script("plot_1D.py", ["--surf_file", str(path), "--format", "png"], cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    import h5_util
    surf = h5_util.read_surface(str(path))
    assert surf.dir_file == code and surf.attrs["command"] == code
    assert not marker.exists()
