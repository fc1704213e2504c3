"""Bad values of the flags this tool added: one `error:` line naming the problem, exit code 2, no
traceback, and every file left as it was (nothing written, nothing changed)."""
import os
import shutil
import signal

import pytest
import torch

from landscape import errors
import plot_hessian_eigen
import plot_surface
from helpers import snapshot


@pytest.fixture
def work(tmp_path, mlp_run, cnn_ckpt, monkeypatch):
    shutil.copy(os.path.join(mlp_run, "model_6.t7"), tmp_path / "m.t7")
    shutil.copy(os.path.join(mlp_run, "model_2.t7"), tmp_path / "m2.t7")
    shutil.copy(cnn_ckpt, tmp_path / "cnn.t7")
    (tmp_path / "user.py").write_text(USER_CODE)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(signal, "signal", lambda *a: None)
    return tmp_path


USER_CODE = '''
import torch
import torch.nn.functional as F

def raising_loss():
    def loss(outputs, targets):
        raise ValueError("this criterion is broken")
    return loss

def per_sample_loss():
    return lambda outputs, targets: F.cross_entropy(outputs, targets, reduction="none")

def not_a_loss():
    return 42

def metrics_not_a_dict():
    return [lambda o, t: o.mean()]

def metrics_wrong_shape():
    return {"logits_mean": lambda o, t: o.mean(0)}

def metrics_bad_name():
    return {"bad name!": lambda o, t: o.mean()}
'''


def refuse(main, args, *words):
    before = snapshot(os.getcwd())
    import io
    import contextlib
    err = io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
        rc = errors.run_cli(main, [str(a) for a in args])
    text = err.getvalue().strip()
    assert rc == 2 and "Traceback" not in text, (rc, text)
    assert len(text.splitlines()) == 1 and text.startswith("error: "), text
    for w in words:
        assert w in text, (w, text)
    assert snapshot(os.getcwd()) == before


def base(*extra):
    return ["--dataset", "digits", "--model", "digits_mlp", "--model_file", "m.t7", "--x=-1:1:3", "--threads", "1",
            *extra]


@pytest.mark.parametrize("extra,words", [
    (["--batch_size", "0"], ["--batch_size", ">= 1"]),
    (["--batch_size", "many"], ["--batch_size", "many"]),
    (["--loss_name", "hinge"], ["--loss_name", "hinge"]),
    (["--loss_name", "user.py:raising_loss"], ["raised ValueError", "this criterion is broken"]),
    (["--loss_name", "user.py:per_sample_loss"], ["must return the mean over the batch"]),
    (["--loss_name", "user.py:not_a_loss"], ["must return a criterion"]),
    (["--loss_name", "nofile.py:loss"], ["nofile.py", "does not exist"]),
    (["--metrics", "user.py:metrics_not_a_dict"], ["must give a dict"]),
    (["--metrics", "user.py:metrics_wrong_shape"], ["metric 'logits_mean'", "scalar"]),
    (["--metrics", "user.py:metrics_bad_name"], ["metric name 'bad name!'"]),
    (["--metrics", "user.py:nothing_here"], ["no callable named 'nothing_here'"]),
    (["--xdir", "sideways"], ["--xdir", "sideways"]),
    (["--y=-1:1:3", "--ydir", "eigen"], ["--ydir", "eigen"]),
    (["--orthogonalize"], ["--orthogonalize", "--y"]),
    (["--model_file2", "m2.t7", "--xdir", "hessian"], ["--xdir/--ydir hessian and --model_file2/3"]),
    (["--model_file2", "m2.t7", "--regenerate_directions"], ["--regenerate_directions", "random directions only"]),
    (["--model_file2", "cnn.t7"], ["cnn.t7", "does not fit model 'digits_mlp'"]),
    (["--params", "^conv"], ["--params", "matches none"]),
    (["--save_directions", "nofolder/d.h5", "--xnorm", "filter"], ["nofolder", "does not exist"]),
    (["--path_files", "m.t7", "m2.t7", "--y=-1:1:3"], ["--path_files makes a 1D path"]),
    (["--path_files", "m.t7", "m2.t7", "--x=0:1:3", "--path_type", "spline"], ["--path_type", "spline"]),
    (["--path_files", "m.t7", "missing.t7", "--x=0:1:3"], ["missing.t7", "does not exist"]),
    (["--path_files", "m.t7", "m2.t7", "--x=0:1:3", "--xdir", "hessian"], ["--path_files", "--xdir"]),
    (["--path_files", "m.t7", "m2.t7", "--x=0:1:3", "--save_directions", "d.h5"], ["--save_directions"]),
    (["--path_files", "m.t7", "m2.t7", "--x=0:1:3", "--params", "^conv"], ["--params", "matches none"]),
    (["--bn_recalibrate"], ["--bn_recalibrate", "no BatchNorm"]),
    (["--model", "digits_cnn", "--model_file", "cnn.t7", "--bn_recalibrate", "--dir_type", "states"],
     ["--bn_recalibrate", "--dir_type weights"]),
    (["--model", "digits_cnn", "--model_file", "cnn.t7", "--bn_recalibrate", "--points_per_pass", "4"],
     ["--bn_recalibrate", "--points_per_pass"]),
    (["--y=-1:1:3", "--same_dir", "--regenerate_directions", "--orthogonalize"], ["--orthogonalize", "parallel"]),
])
def test_plot_surface_refuses(work, extra, words):
    refuse(plot_surface.main, base(*extra), *words)


@pytest.mark.parametrize("extra,words", [
    (["--top_k", "0"], ["--top_k"]),
    (["--at_center", "--trace_rel_se", "-1"], ["--trace_rel_se"]),
    (["--at_center", "--hvp_cache", "sometimes"], ["--hvp_cache", "sometimes"]),
    (["--out", "c.h5"], ["--out", "--at_center"]),
    (["--esd"], ["--esd needs --at_center"]),
    (["--at_center", "--esd", "--esd_steps", "1"], ["--esd_steps"]),
    (["--precision", "bf16"], ["bf16", "too coarse"]),
    (["--at_center", "--top_k", "3000"], ["top_k"]),
    (["--bn_recalibrate"], ["--bn_recalibrate", "loss maps"]),
])
def test_plot_hessian_eigen_refuses(work, extra, words):
    refuse(plot_hessian_eigen.main, base(*extra), *words)


def test_the_api_refuses_curvature_arguments():
    import landscape
    net = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(64, 10))
    data = (torch.randn(8, 1, 8, 8), torch.randint(0, 10, (8,)))
    for kwargs, words in ((dict(top_k=0), "top_k"), (dict(tol=0), "tol"), (dict(precision="bf16"), "too coarse"),
                          (dict(loss=lambda o, t: o), "must return the mean"), (dict(params="^nope"), "matches none")):
        with pytest.raises(landscape.LandscapeError, match=words):
            landscape.hessian(net, data, device="cpu", **kwargs)
