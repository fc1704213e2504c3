"""The fast paths compute what the plain model computes: BN folding, channels_last, points_per_pass,
and --compile; the benchmark and the demo run end to end in their quick modes."""
import os
import subprocess
import sys
import sysconfig

import pytest
import torch

from landscape.evaluation import fast_model
import models
import net_plotter
from conftest import REPO


def randomize_bn(net):
    g = torch.Generator().manual_seed(0)
    for m in net.modules():
        if isinstance(m, (torch.nn.BatchNorm1d, torch.nn.BatchNorm2d)):
            m.running_mean.copy_(torch.randn(m.running_mean.shape, generator=g))
            m.running_var.copy_(torch.rand(m.running_var.shape, generator=g) + 0.5)
            m.weight.data.copy_(torch.randn(m.weight.shape, generator=g))
            m.bias.data.copy_(torch.randn(m.bias.shape, generator=g))
    return net


@pytest.mark.parametrize("name,folds", [("vgg9", 8), ("resnet20", 21), ("resnet56_noshort", 55), ("densenet121", 58),
                                        ("resnet50", 53), ("digits_cnn", 2), ("digits_mlp", 0)])
def test_folded_model_equals_the_model_after_every_move(name, folds):
    net = randomize_bn(models.ZOO[name]().eval())
    shape = (1, 8, 8) if name.startswith("digits") else (3, 32, 32)
    x = torch.randn(4, *shape, generator=torch.Generator().manual_seed(1))
    fast = fast_model.FastModel(net, fold_bn=True, sample=((x[:2],), {}))  # the sample shows Linear -> BN1d is 2-D
    assert len(fast.pairs) == folds
    space = net_plotter.direction_space(net, "states")
    d = net_plotter.random_direction(space, "filter", "", torch.Generator().manual_seed(2))
    setter = net_plotter.PointSetter(net, [d], "states")
    with torch.no_grad():
        for step in (0.0, 0.3, -0.2):
            setter.set([step])
            fast.refresh()
            ref, got = net(x), fast(x)
            torch.testing.assert_close(got, ref, rtol=1e-4, atol=1e-5 * ref.abs().max().item())


def test_channels_last_keeps_values_and_the_setter_writes_the_live_tensors():
    net = randomize_bn(models.ZOO["resnet20"]().eval())
    x = torch.randn(3, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        ref = net(x)
    fast = fast_model.prepare(net, "cpu", fold_bn=True, memory_format="auto")
    assert net.conv1.weight.is_contiguous(memory_format=torch.channels_last)
    space = net_plotter.direction_space(net, "weights")
    d = net_plotter.random_direction(space, "filter", "biasbn", torch.Generator().manual_seed(1))
    setter = net_plotter.PointSetter(net, [d], "weights")
    with torch.no_grad():
        torch.testing.assert_close(fast(fast.prepare_input(x)), ref, rtol=1e-4, atol=1e-5)
        setter.set([0.5])
        fast.refresh()
        moved = fast(fast.prepare_input(x))
    assert not torch.allclose(moved, ref)  # the move reached the model the fast path runs
    with torch.no_grad():
        torch.testing.assert_close(moved, net(x), rtol=1e-4, atol=1e-5)


def test_untraceable_models_are_used_as_they_are():
    class Dynamic(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = torch.nn.Conv2d(1, 2, 3)
            self.bn = torch.nn.BatchNorm2d(2)

        def forward(self, x):
            return self.bn(self.conv(x)) if x.sum() > 0 else self.conv(x)  # data-dependent: not traceable
    fast = fast_model.FastModel(Dynamic().eval())
    assert fast.pairs == [] and isinstance(fast.module, Dynamic)


def missing_inductor_toolchain():
    """Why torch.compile's CPU backend (inductor) cannot build kernels here, or '' if it can."""
    try:
        from torch._inductor import cpp_builder, exc
    except ImportError as e:
        return f"torch._inductor is not importable ({e})"
    try:
        cpp_builder.get_cpp_compiler()  # inductor's own search: $CXX, then g++
    except exc.InvalidCxxCompiler:
        return "inductor finds no C++ compiler ($CXX or g++)"
    include = sysconfig.get_path("include")  # inductor builds its CPU kernels as Python extensions
    if not os.path.isfile(os.path.join(include, "Python.h")):
        return f"no Python.h in {include} (the Python development headers)"
    return ""


def test_compile_gives_the_same_values(in_tmp, cnn_ckpt):
    missing = missing_inductor_toolchain()
    if missing:
        pytest.skip(f"torch.compile cannot run here: {missing}")
    import h5py
    from torch._dynamo.utils import counters
    import plot_surface
    base = ["--dataset", "digits", "--model", "digits_cnn", "--model_file", cnn_ckpt, "--x=-1:1:3",
            "--xnorm", "filter", "--xignore", "biasbn"]
    assert plot_surface.main(base + ["--surf_file", "a.h5"]) == 0
    counters.clear()
    assert plot_surface.main(base + ["--surf_file", "b.h5", "--compile"]) == 0  # any exception fails the test
    assert counters["stats"]["unique_graphs"] >= 1  # the model really went through torch.compile
    with h5py.File("a.h5", "r") as a, h5py.File("b.h5", "r") as b:
        torch.testing.assert_close(torch.tensor(b["train_loss"][()]), torch.tensor(a["train_loss"][()]),
                                   rtol=1e-4, atol=1e-6)


def test_benchmark_quick_mode_runs():
    r = subprocess.run([sys.executable, os.path.join(REPO, "bench", "bench_surface.py"), "--quick"],
                       capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-2000:]
    for title in ("Seconds per grid point", "per --precision", "Fast paths", "--points_per_pass",
                  "Per-point overhead", "end to end"):
        assert title in r.stdout, title


def test_demo_quick_mode_runs_and_resumes(tmp_path):
    out = tmp_path / "demo"
    cmd = [sys.executable, os.path.join(REPO, "demo.py"), "--quick", "--out", str(out)]
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=600,
                       env=dict(os.environ, OMPI_ALLOW_RUN_AS_ROOT="1", OMPI_ALLOW_RUN_AS_ROOT_CONFIRM="1"))
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]
    assert "| small batch (16) |" in r.stdout and "demo wall time" in r.stdout
    index = (out / "index.html").read_text()
    pngs = [f for f in os.listdir(out) if f.endswith(".png")]
    assert len(pngs) >= 18 and all(f"{p}" in index for p in pngs)
    assert all(os.path.exists(out / (p[:-4] + ".pdf")) for p in pngs)
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=600,
                       env=dict(os.environ, OMPI_ALLOW_RUN_AS_ROOT="1", OMPI_ALLOW_RUN_AS_ROOT_CONFIRM="1"))
    assert r.returncode == 0 and "reusing the finished surface" in r.stdout
    assert "computed" not in r.stdout and "training digits_cnn" not in r.stdout  # nothing done twice
