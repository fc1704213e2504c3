"""Every API function checks its arguments before anything is written: one LandscapeError line, and
unknown keyword arguments are named; x as a list is coordinates, as a tuple a range; a run whose
first batch fails leaves nothing behind."""
import copy
import os

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

import landscape
from helpers import ConvBN, DigitsMLP, mlp_and_data


def _mlp():
    return mlp_and_data()[0]


def _data():
    return mlp_and_data()[1]


def _dirs(n=1, fill=None):
    g = torch.Generator().manual_seed(1)
    return [[torch.full_like(p, fill) if fill is not None else torch.randn(p.shape, generator=g)
             for p in _mlp().parameters()] for _ in range(n)]


S = dict(x="-1:1:3", out="s.h5")
BAD_CALLS = {
    "surface": [
        dict(x=None, out="s.h5"), dict(x=3, out="s.h5"), dict(S, y=5), dict(S, seed=2 ** 64), dict(S, seed=-1),
        dict(S, device="meta"), dict(S, directions=_dirs(2)), dict(S, y="-1:1:3", directions=_dirs(3)),
        dict(S, directions=_dirs(1, float("nan"))), dict(S, directions=_dirs(1, float("inf"))),
        dict(S, test_data=(torch.randn(10, 3), torch.zeros(10).long())), dict(S, model3=DigitsMLP()),
        dict(x="-1:1:3", out=""), dict(S, regenerate=True, save_directions="s.h5"), dict(S, dir_file="s.h5"),
        dict(S, foo=1), dict(S, bn_recalibrate=True), dict(S, model2=nn.Flatten()), dict(S, loss="nll2"),
        dict(S, metrics={"loss": lambda o, t: o.mean()}), dict(S, directions="filterz"), dict(S, params="^zz"),
    ],
    "interpolation": [dict(model2=None, x="0:1:3", out="s.h5"), dict(model2="m", x="0:1:3", out="s.h5"),
                      dict(model2=True, x="0:1:3", out="s.h5", foo=1), dict(model2=True, x=None, out="s.h5")],
    "path": [dict(x="0:1:3", out="s.h5", y="0:1:3"), dict(x="0:1:3", out="s.h5", seed=3), dict(x=None, out="s.h5"),
             dict(x="-1:1:3", out="s.h5"), dict(x="0:1:3", out="s.h5", device="meta"), dict(x="0:1:3", out="s")],
    "eigen_surface": [dict(S, tol=0), dict(S, precision="bf16"), dict(S, seed=2 ** 64), dict(x=None, out="s.h5"),
                      dict(S, foo=1), dict(S, device="meta"), dict(S, directions=_dirs(2))],
    "hessian": [dict(trace_rel_se=-1), dict(trace_rel_se="x"), dict(trace_rel_se=float("nan")), dict(seed=2 ** 64),
                dict(device="meta"), dict(top_k=0), dict(foo=1)],
    "pca": [dict(models=[DigitsMLP(), DigitsMLP(), ConvBN()]), dict(models=[DigitsMLP(), DigitsMLP()]),
            dict(models=[DigitsMLP()] * 3, foo=1), dict(models=[nn.Flatten()] * 3)],
}


def call_api(function, kwargs):
    kw = dict(kwargs)
    if function == "pca":
        return landscape.pca(kw.pop("models"), **kw)
    if function == "path":
        return landscape.path([_mlp(), DigitsMLP()], _data(), **kw)
    if function == "interpolation":
        model2 = kw.pop("model2")
        return landscape.interpolation(_mlp(), DigitsMLP() if model2 is True else model2, _data(), **kw)
    return getattr(landscape, function)(_mlp(), _data(), **kw)


@pytest.mark.parametrize("function,kwargs", [(f, kw) for f, calls in BAD_CALLS.items() for kw in calls],
                         ids=[f"{f}-{i}" for f, calls in BAD_CALLS.items() for i in range(len(calls))])
def test_every_api_function_refuses_bad_arguments_in_one_line_writing_nothing(in_tmp, function, kwargs):
    with pytest.raises(landscape.LandscapeError) as e:
        call_api(function, kwargs)
    assert "\n" not in str(e.value).strip()
    assert list(in_tmp.iterdir()) == []


def test_unknown_keyword_arguments_are_named():
    with pytest.raises(landscape.LandscapeError, match=r"path\(\): got an unexpected keyword argument 'seed'"):
        landscape.path([_mlp(), DigitsMLP()], _data(), seed=3)
    with pytest.raises(landscape.LandscapeError, match=r"interpolation\(\): got an unexpected keyword argument 'foo'"):
        landscape.interpolation(_mlp(), DigitsMLP(), _data(), foo=3)


def test_a_list_of_x_is_coordinates_and_a_tuple_is_a_range():
    net, data = mlp_and_data()
    assert landscape.surface(net, data, x=[-1, 1, 3]).x.tolist() == [-1.0, 1.0, 3.0]
    assert landscape.surface(net, data, x=(-1, 1, 3)).x.tolist() == [-1.0, 0.0, 1.0]


API_BAD_ARGUMENTS = [
    ("surface", dict(batch_size=0)),
    ("surface", dict(points_per_pass=0)),
    ("surface", dict(seed="abc")),
    ("surface", dict(comm=5)),
    ("surface", dict(memory_format="bogus")),
    ("hessian", dict(cache="yes")),
    ("hessian", dict(batch_size=0)),
    ("eigen_surface", dict(batch_size=0)),
    ("path", dict(batch_size=0)),
    ("surface", dict(precision="fp64")),
    ("surface", dict(batch_size=-3)),
    ("surface", dict(batch_size="big")),
    ("surface", dict(seed=1.5)),
    ("surface", dict(flush_seconds=0)),
    ("surface", dict(flush_seconds=float("nan"))),
    ("surface", dict(fold_bn="no")),
    ("surface", dict(regenerate=1)),
    ("surface", dict(ignore="bias")),
    ("surface", dict(dir_type="state")),
    ("surface", dict(save_directions="d.txt")),
    ("surface", dict(bn_recalibrate="yes")),
    ("surface", dict(bn_recalibrate=True)),          # a model without BatchNorm
    ("eigen_surface", dict(tol=0)),
    ("eigen_surface", dict(max_iter=0)),
    ("eigen_surface", dict(precision="bf16")),
    ("path", dict(path_type="spline")),
    ("path", dict(params="^nothing$")),
    ("path", dict(comm="world")),
    ("interpolation", dict(directions="filter")),
    ("pca", dict(dir_type="state")),
    ("pca", dict(ignore="all")),
    ("pca", dict(scratch_dir="no/such/folder")),
]


def _call_api(fn, kwargs, folder):
    torch.manual_seed(0)
    net = nn.Sequential(nn.Flatten(), nn.Linear(64, 10))
    data = (torch.randn(32, 1, 8, 8), torch.randint(0, 10, (32,)))
    if fn == "hessian":
        return landscape.hessian(net, data, device="cpu", trace_samples=2, **kwargs)
    out = str(folder / "o.h5")
    if fn == "path":
        return landscape.path([net, copy.deepcopy(net)], data, x="0:1:3", device="cpu", out=out, **kwargs)
    if fn == "pca":
        return landscape.pca([net, copy.deepcopy(net), copy.deepcopy(net)], **kwargs)
    if fn == "interpolation":
        return landscape.interpolation(net, copy.deepcopy(net), data, x="0:1:3", device="cpu", out=out, **kwargs)
    return getattr(landscape, fn)(net, data, x="-1:1:3", device="cpu", out=out, **kwargs)


@pytest.mark.parametrize("fn,kwargs", API_BAD_ARGUMENTS,
                         ids=[f"{f}-{k}={d[k]!r}" for f, d in API_BAD_ARGUMENTS for k in d])
def test_api_refuses_bad_arguments_and_writes_nothing(tmp_path, fn, kwargs):
    with pytest.raises(landscape.LandscapeError) as e:
        _call_api(fn, kwargs, tmp_path)
    assert "\n" not in str(e.value) and next(iter(kwargs)) in str(e.value), str(e.value)
    assert os.listdir(tmp_path) == [], f"a refused run left {os.listdir(tmp_path)}"


def test_a_run_that_fails_before_its_first_point_leaves_nothing(tmp_path):
    torch.manual_seed(0)
    net = nn.Sequential(nn.Flatten(), nn.Linear(64, 10))
    calls = []

    def loss(out, t):       # passes the two-sample check, then fails on the grid's first batch
        calls.append(1)
        if len(calls) > 1:
            raise ValueError("boom")
        return F.cross_entropy(out, t)
    with pytest.raises(landscape.LandscapeError, match="boom"):
        landscape.surface(net, (torch.randn(32, 1, 8, 8), torch.randint(0, 10, (32,))), loss=loss, x="-1:1:3",
                          device="cpu", out=str(tmp_path / "o.h5"))
    assert os.listdir(tmp_path) == []
