"""The reference's module names at the clone root (net_plotter, projection, scheduler, mpi4pytorch,
evaluation, the model zoo's factories): their helpers resolve and compute what the reference's did."""
import copy

import pytest
import torch
import torch.nn as nn



REFERENCE_NAMES = {   # module at the clone root: public helpers users' scripts call (hess_vec_prod's are the curvature's)
    "net_plotter": "get_weights set_weights set_states get_random_weights get_random_states get_diff_weights "
                   "get_diff_states normalize_direction normalize_directions_for_weights "
                   "normalize_directions_for_states ignore_biasbn create_target_direction create_random_direction "
                   "setup_direction name_direction_file load_directions",
    "h5_util": "write_list read_list",
    "projection": "tensorlist_to_tensor nplist_to_tensor npvec_to_tensorlist cal_angle project_1D project_2D "
                  "project_trajectory setup_PCA_directions",
    "model_loader": "load",
    "dataloader": "get_relative_path load_dataset",
    "evaluation": "eval_loss",
    "mpi4pytorch": "setup_MPI print_once reduce_max reduce_min barrier allreduce_max allreduce_min",
    "scheduler": "get_unplotted_indices split_inds get_job_indices",
}
REFERENCE_FACTORIES = {"resnet": "ResNet18 ResNet18_noshort ResNet34 ResNet34_noshort ResNet50 ResNet50_noshort "
                                 "ResNet101 ResNet101_noshort ResNet152 ResNet152_noshort ResNet20 ResNet20_noshort "
                                 "ResNet32_noshort ResNet44_noshort ResNet50_16_noshort ResNet56 ResNet56_noshort "
                                 "ResNet110 ResNet110_noshort WRN56_2 WRN56_2_noshort WRN56_4 WRN56_4_noshort "
                                 "WRN56_8 WRN56_8_noshort WRN110_2_noshort WRN110_4_noshort",
                       "vgg": "VGG9", "densenet": "DenseNet121"}


def test_import_evaluation_from_the_clone_root_is_the_package_module():
    import subprocess
    import sys
    from helpers import REPO
    code = "import evaluation, landscape.evaluation as e; assert evaluation is e; print(evaluation.eval_loss.__name__)"
    r = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "eval_loss"


@pytest.mark.parametrize("module", sorted(REFERENCE_NAMES))
def test_the_reference_helper_names_resolve_through_the_front_doors(module):
    import importlib
    m = importlib.import_module(module)
    assert [n for n in REFERENCE_NAMES[module].split() if not callable(getattr(m, n, None))] == []


@pytest.mark.parametrize("family", sorted(REFERENCE_FACTORIES))
def test_the_reference_model_factories_build_the_reference_state_dicts(family):
    """Each factory's state_dict has the names, shapes and dtypes the reference's checkpoints have."""
    import importlib
    import json
    import os
    from helpers import REPO
    manifest = json.load(open(os.path.join(REPO, "tests", "data", "model_state_dicts.json")))
    module = importlib.import_module(f"models.{family}")
    for name in REFERENCE_FACTORIES[family].split()[:4]:   # the deep ones cost seconds each; the table covers all
        got = [[k, list(v.shape), str(v.dtype).replace("torch.", "")] for k, v in getattr(module, name)().state_dict().items()]
        assert got == manifest[name.lower()]["state_dict"], name
    assert {n.lower() for n in REFERENCE_FACTORIES[family].split()} <= set(manifest)
    import models
    assert all(models.ZOO[n.lower()] is getattr(module, n) for n in REFERENCE_FACTORIES[family].split())


def small_cnn():
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(1, 4, 3), nn.BatchNorm2d(4), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 36, 10))
    for m in net:
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.uniform_(-1, 1)
            m.running_var.uniform_(0.5, 2)
    return net.eval()


def filter_normalised(d, w):
    """Li et al.'s filter normalisation of one random tensor, filter by filter, written out with loops."""
    out = d.clone()
    for i in range(d.shape[0]):
        out[i] = d[i] * (w[i].norm() / (d[i].norm() + 1e-10))
    return out


def test_net_plotter_random_directions_are_the_reference_draws_filter_normalised():
    import net_plotter
    net = small_cnn()
    torch.manual_seed(7)
    got = net_plotter.create_random_direction(net, "weights", "biasbn", "filter")
    torch.manual_seed(7)
    raw = [torch.randn(p.shape) for p in net.parameters()]
    want = [filter_normalised(d, p.data) if p.dim() > 1 else torch.zeros_like(d) for d, p in zip(raw, net.parameters())]
    for g, w in zip(got, want):
        torch.testing.assert_close(g, w)
    torch.manual_seed(7)
    assert all(torch.equal(a, b) for a, b in zip(net_plotter.get_random_weights(net_plotter.get_weights(net)), raw))
    states = net.state_dict()
    torch.manual_seed(7)
    d = net_plotter.get_random_states(states)
    net_plotter.normalize_directions_for_states(d, states, "filter", "")   # entries of dim <= 1 become the states
    for (k, s), di in zip(states.items(), d):
        if s.is_floating_point() and s.dim() <= 1:
            assert torch.equal(di, s), k


def test_net_plotter_targets_and_set_weights_move_to_w_plus_x_dx_plus_y_dy():
    import net_plotter
    net, net2 = small_cnn(), small_cnn()
    with torch.no_grad():
        for p in net2.parameters():
            p.add_(1.0)
    w = [p.detach().clone() for p in net.parameters()]
    dx = net_plotter.create_target_direction(net, net2, "weights")
    assert all(torch.allclose(d, torch.ones_like(d)) for d in dx)
    assert all(torch.equal(a, b) for a, b in zip(dx, net_plotter.get_diff_weights(w, [p.data for p in net2.parameters()])))
    torch.manual_seed(1)
    dy = [torch.randn(p.shape) for p in net.parameters()]
    net_plotter.set_weights(net, w, [dx, dy], (0.5, -0.25))
    for p, w0, a, b in zip(net.parameters(), w, dx, dy):
        torch.testing.assert_close(p.data, w0 + 0.5 * a - 0.25 * b)
    net_plotter.set_weights(net, w, [dy], 2.0)
    for p, w0, b in zip(net.parameters(), w, dy):
        torch.testing.assert_close(p.data, w0 + 2.0 * b)
    net_plotter.set_weights(net, w)
    assert all(torch.equal(p.data, w0) for p, w0 in zip(net.parameters(), w))


def test_net_plotter_set_states_moves_float_entries_and_keeps_integers():
    import net_plotter
    net = small_cnn()
    states = copy.deepcopy(net.state_dict())
    torch.manual_seed(2)
    d = [torch.randn(v.shape) for v in states.values()]
    net_plotter.set_states(net, states, [d], 0.3)
    for (k, v), di, now in zip(states.items(), d, net.state_dict().values()):
        torch.testing.assert_close(now, v + 0.3 * di if v.is_floating_point() else v, msg=k)
    diff = net_plotter.get_diff_states(states, net.state_dict())
    for (k, v), di, dd in zip(states.items(), d, diff):
        torch.testing.assert_close(dd, 0.3 * di if v.is_floating_point() else torch.zeros(v.shape), msg=k)


def test_net_plotter_setup_direction_writes_the_reference_layout_once(tmp_path, capsys):
    import argparse
    import h5py
    import net_plotter
    net = small_cnn()
    args = argparse.Namespace(dir_type="weights", xignore="biasbn", xnorm="filter", y="-1:1:3", same_dir=True,
                              model_file2="", model_file3="", yignore="", ynorm="", dataset="digits", model="small")
    path = str(tmp_path / "d.h5")
    torch.manual_seed(3)
    net_plotter.setup_direction(args, path, net)
    torch.manual_seed(3)
    want = net_plotter.create_random_direction(net, "weights", "biasbn", "filter")
    with h5py.File(path, "r") as f:
        for g in ("xdirection", "ydirection"):
            assert len(f[g]) == len(want)
            for i, w in enumerate(want):
                assert torch.equal(torch.from_numpy(f[g][str(i)][()]), w)
    stamp = open(path, "rb").read()
    net_plotter.setup_direction(args, path, net)
    assert "already set up" in capsys.readouterr().out and open(path, "rb").read() == stamp


def test_projection_helpers_against_numpy():
    import numpy as np
    import projection
    g = torch.Generator().manual_seed(0)
    ts = [torch.randn(3, 2, generator=g), torch.randn(4, generator=g), torch.tensor(1.5)]
    flat = np.concatenate([t.numpy().ravel() for t in ts])
    assert np.array_equal(projection.tensorlist_to_tensor(ts).numpy(), flat)
    v = projection.nplist_to_tensor([t.numpy() for t in ts])
    assert v.dtype == torch.float64 and np.array_equal(v.numpy(), flat[:-1])   # the 0-d entry is left out
    back = projection.npvec_to_tensorlist(flat, [t.clone() for t in ts])
    assert all(torch.equal(a, b) for a, b in zip(back, ts))
    net = small_cnn()
    sd = net.state_dict()
    vec = np.arange(sum(t.numel() for t in sd.values()), dtype=np.float64)
    back = projection.npvec_to_tensorlist(vec, sd)
    assert [tuple(b.shape) for b in back] == [tuple(t.shape) for t in sd.values()]
    assert np.array_equal(np.concatenate([b.numpy().ravel() for b in back]), vec.astype(np.float32))
    w, d = np.random.RandomState(0).randn(2, 50)
    assert projection.project_1D(torch.from_numpy(w), torch.from_numpy(d)) == pytest.approx(w @ d / np.linalg.norm(d))
    assert projection.cal_angle(w, d) == pytest.approx(w @ d / np.linalg.norm(w) / np.linalg.norm(d))


def test_scheduler_get_job_indices_splits_the_missing_points_over_the_ranks():
    import numpy as np
    import scheduler

    class Comm:
        def __init__(self, rank, size):
            self.rank, self.size = rank, size

        def Get_rank(self):
            return self.rank

        def Get_size(self):
            return self.size
    vals = np.array([[-1.0, 0.5, -1.0], [-1.0, -1.0, 2.0]])            # (ny, nx): missing at flat 0, 2, 3, 4
    x, y = np.array([-1.0, 0.0, 1.0]), np.array([0.0, 1.0])
    inds, coords, counts = scheduler.get_job_indices(vals, x, y, None)
    assert inds.tolist() == [0, 2, 3, 4] and counts == [4]
    assert coords.tolist() == [[-1.0, 0.0], [1.0, 0.0], [-1.0, 1.0], [0.0, 1.0]]
    got = [scheduler.get_job_indices(vals, x, y, Comm(r, 3)) for r in range(3)]
    assert [g[0].tolist() for g in got] == [[0, 2], [3], [4]] and got[0][2] == [2, 1, 1]


def test_mpi4pytorch_helpers_without_mpi(capsys):
    import numpy as np
    import mpi4pytorch
    a = np.array([1.0, -2.0])
    assert mpi4pytorch.reduce_max(None, a) is a and mpi4pytorch.allreduce_min(None, a) is a
    mpi4pytorch.print_once(None, "a", 1, "b")
    assert capsys.readouterr().out == "a1b\n"


def test_mpi4pytorch_helpers_reduce_over_two_ranks(tmp_path):
    from helpers import REPO, run_script
    script = tmp_path / "reduce.py"
    script.write_text(
        "import sys; sys.path.insert(0, %r)\n"
        "import numpy as np, mpi4pytorch\n"
        "comm = mpi4pytorch.setup_MPI(); r = comm.Get_rank()\n"
        "a = np.array([r, -r, 10 * r], dtype=float)\n"
        "mx, mn = mpi4pytorch.reduce_max(comm, a), mpi4pytorch.reduce_min(comm, a)\n"
        "amx, amn = mpi4pytorch.allreduce_max(comm, a), mpi4pytorch.allreduce_min(comm, a)\n"
        "mpi4pytorch.print_once(comm, 'size=', comm.Get_size())\n"
        "if r == 0: print('root', mx.tolist(), mn.tolist())\n"
        "print('all', r, amx.tolist(), amn.tolist())\n" % REPO)
    r = run_script(str(script), [], cwd=str(tmp_path), mpi_ranks=2, timeout=120)
    assert r.returncode == 0, r.stderr
    lines = r.stdout.splitlines()
    assert lines.count("size=2") == 1
    assert "root [1.0, 0.0, 10.0] [0.0, -1.0, 0.0]" in lines
    assert sorted(line for line in lines if line.startswith("all")) == [
        "all 0 [1.0, 0.0, 10.0] [0.0, -1.0, 0.0]", "all 1 [1.0, 0.0, 10.0] [0.0, -1.0, 0.0]"]
