"""Trajectory PCA (streamed, equal to scikit-learn's), exact projections, and the Figure 9 workflow."""
import os
import tracemalloc

import h5py
import numpy as np
import pytest
import torch
from sklearn.decomposition import PCA

import h5_util
import model_loader
import projection
from helpers import run_script

FILTER = ["--xnorm", "filter", "--xignore", "biasbn", "--ynorm", "filter", "--yignore", "biasbn"]


def random_trajectory(n=9, dim=300, seed=0):
    rng = np.random.default_rng(seed)
    steps = rng.normal(size=(n, dim)) * np.linspace(3, 0.1, dim)  # anisotropic, like real training
    return np.cumsum(steps, axis=0) - np.cumsum(steps, axis=0)[-1]


def test_streamed_pca_equals_sklearn(tmp_path):
    D = random_trajectory()
    ours = projection.pca_from_rows(iter(D), len(D), D.shape[1], str(tmp_path))
    ref = PCA(n_components=2).fit(D)
    for k in range(2):
        cos = abs(ours["components_"][k] @ ref.components_[k])
        assert cos > 0.9999
    for key in ("explained_variance_ratio_", "singular_values_", "explained_variance_"):
        np.testing.assert_allclose(ours[key], getattr(ref, key), rtol=1e-8)


def test_streamed_equals_in_memory_and_leaves_no_scratch(tmp_path):
    D = random_trajectory(n=12, dim=1000, seed=1)
    small_blocks = projection.pca_from_rows(iter(D), 12, 1000, str(tmp_path), block_bytes=12 * 8 * 7)
    D = D.astype(np.float32).astype(np.float64)  # the rows are stored as float32, like the checkpoints
    Dc = D - D.mean(0)
    _, s, vt = np.linalg.svd(Dc, full_matrices=False)
    for k in range(2):
        assert abs(small_blocks["components_"][k] @ vt[k]) > 1 - 1e-10
    np.testing.assert_allclose(small_blocks["singular_values_"], s[:2], rtol=1e-10)
    assert os.listdir(tmp_path) == []


def test_streamed_pca_peak_memory_is_far_below_the_matrix(tmp_path):
    n, dim = 40, 200_000             # the whole matrix would be 64 MB in float64
    rng = np.random.default_rng(2)
    rows = (rng.normal(size=dim) * (i + 1) for i in range(n))
    tracemalloc.start()
    projection.pca_from_rows(rows, n, dim, str(tmp_path), block_bytes=1 << 20)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert peak < 16 << 20, peak      # a few rows, one block, the two components


@pytest.fixture(scope="module")
def plane_run(tmp_path_factory, mlp_ckpt):
    """Checkpoints w_e = w_final + a_e u + b_e v: a trajectory that lies exactly in a plane."""
    folder = tmp_path_factory.mktemp("plane")
    final = torch.load(mlp_ckpt, weights_only=True)["state_dict"]
    g = torch.Generator().manual_seed(0)
    u = {k: torch.randn(v.shape, generator=g) * 0.1 for k, v in final.items()}
    v = {k: torch.randn(t.shape, generator=g) * 0.1 for k, t in final.items()}
    t = np.linspace(0, 1, 8)
    coef = np.stack([(1 - t) * 2.0, np.sin(3 * t) * (1 - t)], 1)
    for e, (a, b) in enumerate(coef):
        state = {k: final[k] + a * u[k] + b * v[k] for k in final}
        torch.save({"state_dict": state, "epoch": e, "acc": 0.0}, folder / f"model_{e}.t7")
    return folder, coef, u, v


def flat(state, keys):
    return torch.cat([state[k].double().reshape(-1) for k in keys])


def test_projection_of_a_planar_trajectory_is_exact(plane_run):
    folder, coef, u, v = plane_run
    r = run_script("plot_trajectory.py", ["--dataset", "digits", "--model", "digits_mlp", "--model_folder", folder,
                                          "--max_epoch", "7", "--format", "png"])
    assert r.returncode == 0, r.stderr
    dir_file = os.path.join(folder, "PCA_weights_save_epoch=1", "directions.h5")
    proj_file = dir_file + "_proj_cos.h5"
    with h5py.File(dir_file, "r") as f:
        assert {"xdirection", "ydirection", "explained_variance_ratio_", "singular_values_",
                "explained_variance_"} <= set(f)
        assert f["explained_variance_ratio_"][()].sum() == pytest.approx(1.0, abs=1e-9)  # a plane: 2 PCs explain all
    xs, ys = h5_util.read_projection_file(proj_file)
    assert len(xs) == 8 and xs[-1] == 0 and ys[-1] == 0
    dx, dy = (torch.cat([torch.as_tensor(a).double().reshape(-1) for a in d]) for d in h5_util.read_direction_file(dir_file))
    keys = [n for n, _ in model_loader.build("digits_mlp").named_parameters()]
    for e, (a, b) in enumerate(coef):
        d = a * flat(u, keys) + b * flat(v, keys)
        recon = xs[e] * dx / dx.norm() + ys[e] * dy / dy.norm()
        assert (recon - d).norm() <= 1e-5 * max(d.norm(), 1e-3)
    assert os.path.exists(proj_file + ".png")


def test_lstsq_projection_on_non_orthogonal_directions(plane_run, tmp_path):
    folder, coef, u, v = plane_run
    keys = [n for n, _ in model_loader.build("digits_mlp").named_parameters()]
    dir_file = str(tmp_path / "skew.h5")
    h5_util.write_direction_file(dir_file, [[u[k] for k in keys], [u[k] + v[k] for k in keys]], {})
    r = run_script("plot_trajectory.py", ["--dataset", "digits", "--model", "digits_mlp", "--model_folder", folder,
                                          "--max_epoch", "7", "--dir_file", dir_file, "--format", "png"])
    assert r.returncode == 0, r.stderr
    xs, ys = h5_util.read_projection_file(dir_file + "_proj_lstsq.h5")
    # d = a u + b v = (a - b) u + b (u + v)
    np.testing.assert_allclose(xs, coef[:, 0] - coef[:, 1], atol=1e-5)
    np.testing.assert_allclose(ys, coef[:, 1], atol=1e-5)


def test_figure_9_workflow(cnn_run, tmp_path):
    r = run_script("plot_trajectory.py", ["--dataset", "digits", "--model", "digits_cnn", "--model_folder", cnn_run,
                                          "--max_epoch", "4", "--ignore", "biasbn", "--format", "png"])
    assert r.returncode == 0, r.stderr
    dir_file = os.path.join(cnn_run, "PCA_weights_ignore=biasbn_save_epoch=1", "directions.h5")
    proj = dir_file + "_proj_cos.h5"
    xs, ys = h5_util.read_projection_file(proj)
    span = max(abs(xs).max(), abs(ys).max()) * 1.2
    r = run_script("plot_surface.py", ["--dataset", "digits", "--model", "digits_cnn", "--model_file",
                                       os.path.join(cnn_run, "model_4.t7"), "--dir_file", dir_file,
                                       f"--x={-span}:{span}:9", f"--y={-span}:{span}:9", "--proj_file", proj,
                                       "--plot", "--format", "png", "--surf_file", str(tmp_path / "fig9.h5")])
    assert r.returncode == 0, r.stderr
    assert os.path.getsize(proj + "_train_loss_2dcontour_proj.png") > 5000


def test_missing_checkpoint_is_named(cnn_run):
    r = run_script("plot_trajectory.py", ["--dataset", "digits", "--model", "digits_cnn", "--model_folder", cnn_run,
                                          "--max_epoch", "9"])
    assert r.returncode == 2 and "model_5.t7" in r.stderr
