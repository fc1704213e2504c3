"""The one run specification (landscape/spec.py) and the one builder (landscape/build.py).

- one rule, one message: the command line names the flag, the API the argument, from one table;
- the specs are frozen, and every name in the table is a real flag and a real argument;
- every grid front end (plot_surface.py, plot_hessian_eigen.py, surface, interpolation, eigen_surface,
  path) builds its job through build.build_grid_job;
- the curvature operator comes from one constructor, for every matrix and product method;
- the layering: no import circle, the engine never imports the compatibility modules or reads an
  argparse namespace, and no engine import uses a reference module name.
"""
import ast
import dataclasses
import inspect
import os
import shutil

import pytest
import torch
import torch.nn as nn

import landscape
from landscape import build, errors, spec
from landscape.cli import options, plot_hessian_eigen, plot_surface
from landscape.curvature import model as curvature_model
from landscape.curvature import operators

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PACKAGE = os.path.join(REPO, "landscape")
CLI = ["--dataset", "digits", "--model", "digits_mlp", "--threads", "1"]


def tiny():
    torch.manual_seed(0)
    net = nn.Sequential(nn.Flatten(), nn.Linear(64, 10))
    return net, (torch.randn(16, 1, 8, 8), torch.randint(0, 10, (16,)))


def cli_refusal(capsys, args, main=plot_surface.main):
    capsys.readouterr()
    rc = errors.run_cli(main, [str(a) for a in args])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and len(err.splitlines()) == 1 and err.startswith("error: "), (rc, err)
    return err


def api_refusal(fn, *args, **kwargs):
    with pytest.raises(landscape.LandscapeError) as e:
        fn(*args, **kwargs)
    return str(e.value)


# ----------------------------------------------------------------------------- one rule, one message
RULES = [  # (command-line flags, API arguments of surface(), words of the CLI message, words of the API's)
    (["--model_file3", "m.t7"], dict(model3="net"), ["--model_file3", "--y"], ["model3=", "y="]),
    (["--bn_recalibrate", "--dir_type", "states"], dict(bn_recalibrate=True, dir_type="states"),
     ["--bn_recalibrate", "--dir_type states", "--dir_type weights"],
     ["bn_recalibrate=True", "dir_type='states'", "dir_type='weights'"]),
    (["--bn_recalibrate", "--points_per_pass", "2"], dict(bn_recalibrate=True, points_per_pass=2),
     ["--bn_recalibrate", "--points_per_pass 1"], ["bn_recalibrate=True", "points_per_pass=1"]),
    (["--points_per_pass", "0"], dict(points_per_pass=0), ["--points_per_pass 0", "whole number >= 1"],
     ["points_per_pass=0", "whole number >= 1"]),
    (["--orthogonalize"], dict(orthogonalize=True), ["--orthogonalize", "--y"], ["orthogonalize", "(y)"]),
    (["--regenerate_directions", "--model_file2", "m.t7"], dict(regenerate=True, model2="net"),
     ["--regenerate_directions", "random directions only", "--model_file2/3"],
     ["regenerate", "random directions only", "model2/model3"]),
    (["--seed", "-1"], dict(seed=-1), ["--seed -1", "[0, 2**63)"], ["seed=-1", "[0, 2**63)"]),
    (["--curvature", "fisher"], dict(curvature="fisher"), ["--curvature 'fisher'", "hessian, ggn, ef"],
     ["curvature 'fisher'", "hessian, ggn, ef"]),
    (["--curvature", "ggn"], dict(curvature="ggn"), ["--curvature", "--xdir/--ydir hessian"],
     ["curvature", "directions='hessian'"]),
    (["--flush_seconds", "0"], dict(flush_seconds=0), ["--flush_seconds 0", "> 0"], ["flush_seconds=0", "> 0"]),
    (["--data_in_memory", "maybe"], dict(data_in_memory="maybe"), ["--data_in_memory 'maybe'", "auto, yes, no"],
     ["data_in_memory 'maybe'", "auto, yes, no"]),
    (["--ranks_per_point", "-1"], dict(ranks_per_point=-1), ["--ranks_per_point -1", "(or 0 for the default)"],
     ["ranks_per_point -1", ">= 1"]),
]


@pytest.mark.parametrize("flags,kwargs,cli_words,api_words", RULES, ids=[" ".join(r[0]) for r in RULES])
def test_one_rule_names_the_flag_on_the_command_line_and_the_argument_in_the_api(work, capsys, flags, kwargs,
                                                                                  cli_words, api_words):
    err = cli_refusal(capsys, CLI + ["--model_file", "m.t7", "--x=-1:1:3"] + flags)
    for w in cli_words:
        assert w in err, (w, err)
    net, data = tiny()
    kwargs = {k: (net if v == "net" else v) for k, v in kwargs.items()}
    msg = api_refusal(landscape.surface, net, data, x="-1:1:3", device="cpu", **kwargs)
    for w in api_words:
        assert w in msg, (w, msg)
    assert "--" not in msg, msg                    # the API never names a flag
    assert not os.path.exists("s.h5") and sorted(os.listdir(work)) == ["m.t7"]   # nothing written


def test_the_eigenvalue_maps_refuse_bf16_in_both_front_ends(work, capsys):
    err = cli_refusal(capsys, CLI + ["--model_file", "m.t7", "--x=-1:1:3", "--precision", "bf16"],
                      plot_hessian_eigen.main)
    assert "--precision bf16" in err and "too coarse" in err
    net, data = tiny()
    msg = api_refusal(landscape.eigen_surface, net, data, x="-1:1:3", precision="bf16", device="cpu")
    assert "precision='bf16'" in msg and "too coarse" in msg
    msg = api_refusal(landscape.hessian, net, data, precision="bf16", device="cpu")
    assert "precision='bf16'" in msg and "too coarse" in msg


def test_a_rank_group_that_does_not_divide_the_ranks_is_named_as_the_caller_wrote_it(work, capsys):
    err = cli_refusal(capsys, CLI + ["--model_file", "m.t7", "--x=-1:1:3", "--ranks_per_point", "2"])
    assert "--ranks_per_point 2 must divide the number of ranks (1)" in err
    net, data = tiny()
    msg = api_refusal(landscape.surface, net, data, x="-1:1:3", ranks_per_point=2, device="cpu")
    assert msg.startswith("ranks_per_point 2 must divide the number of ranks (1)"), msg


# ----------------------------------------------------------------------------- the specs
def test_the_specs_are_frozen_and_annotated():
    run = options.parse(CLI + ["--model_file", "m.t7", "--x=-1:1:3", "--y=-1:1:3"] +
                        ["--xnorm", "filter", "--ynorm", "filter"], options.surface_parser()).run
    assert run.front == "cli" and run.axes.ndim == 2 and run.directions.xnorm == "filter"
    assert run.files.out == "m.t7_weights_xnorm=filter_ynorm=filter.h5_[-1.0,1.0,3]x[-1.0,1.0,3].h5"
    for part in (run, run.axes, run.directions, run.evaluation, run.curvature, run.parallel, run.files):
        assert dataclasses.is_dataclass(part)
        with pytest.raises(dataclasses.FrozenInstanceError):
            setattr(part, dataclasses.fields(part)[0].name, None)
        assert all(f.type for f in dataclasses.fields(part))


def test_every_name_in_the_table_is_a_flag_and_an_argument():
    flags = {s for p in (options.surface_parser(), plot_hessian_eigen.build_parser()) for a in p._actions
             for s in a.option_strings}
    arguments = set()
    for fn in (landscape.surface, landscape.eigen_surface, landscape.path, landscape.hessian):
        arguments |= set(inspect.signature(fn).parameters)
    arguments |= set(landscape.api.EIGEN_SURFACE_EXTRA)
    for key, (flag, argument) in spec.NAMES.items():
        assert flag in flags, (key, flag)
        assert argument in arguments, (key, argument)


def test_a_spec_checks_itself_once_and_refuses_in_one_line():
    good = spec.RunSpec(spec.Axes((0.0, 1.0)), spec.DirectionSpec(), front="api")
    assert good.check() is good
    bad = dataclasses.replace(good, evaluation=spec.EvaluationSpec(points_per_pass=0))
    with pytest.raises(landscape.LandscapeError, match=r"^points_per_pass=0 must be a whole number >= 1$"):
        bad.check()
    with pytest.raises(landscape.LandscapeError, match=r"^--points_per_pass 0 must be a whole number >= 1$"):
        dataclasses.replace(bad, front="cli").check()


# ----------------------------------------------------------------------------- one builder
def test_every_grid_front_end_builds_through_the_one_builder(work, monkeypatch, capsys):
    calls = []
    real = build.build_grid_job

    def counting(run, src, *args, **kwargs):
        calls.append((run.front, run.maps, bool(run.path_type)))
        return real(run, src, *args, **kwargs)
    monkeypatch.setattr(build, "build_grid_job", counting)
    grid = CLI + ["--model_file", "m.t7", "--x=-1:1:2", "--xnorm", "filter", "--xignore", "biasbn"]
    assert plot_surface.main(grid + ["--surf_file", "a.h5"]) == 0
    assert plot_hessian_eigen.main(grid + ["--surf_file", "b.h5", "--max_iter", "5"]) == 0
    shutil.copy("m.t7", "m2.t7")
    assert plot_surface.main(CLI + ["--path_files", "m.t7", "m2.t7", "--x=0:1:2", "--surf_file", "c.h5"]) == 0
    net, data = tiny()
    landscape.surface(net, data, x="-1:1:2", device="cpu")
    landscape.interpolation(net, nn.Sequential(nn.Flatten(), nn.Linear(64, 10)), data, x="0:1:2", device="cpu")
    landscape.eigen_surface(net, data, x="-1:1:2", max_iter=5, device="cpu")
    landscape.path([net, net], data, x="0:1:2", device="cpu")
    assert calls == [("cli", "loss", False), ("cli", "eig", False), ("cli", "loss", True), ("api", "loss", False),
                     ("api", "loss", False), ("api", "eig", False), ("api", "loss", True)]


@pytest.mark.parametrize("matrix", spec.CURVATURES)
@pytest.mark.parametrize("hvp", spec.HVP_METHODS)
def test_one_constructor_makes_every_curvature_operator(matrix, hvp):
    net, (x, y) = tiny()
    want = {("hessian", "autograd"): operators.HessianOperator,
            ("hessian", "finite_difference"): operators.FiniteDifferenceHessian,
            ("ggn", "autograd"): operators.GGNOperator, ("ggn", "finite_difference"): operators.GGNOperator,
            ("ef", "autograd"): operators.EmpiricalFisherOperator,
            ("ef", "finite_difference"): operators.EmpiricalFisherOperator}[matrix, hvp]
    c = spec.CurvatureSpec(matrix, hvp).check()
    op = curvature_model.operator(c, net, landscape.evaluation.DeviceSet(x, y, 8), nn.CrossEntropyLoss())
    assert type(op) is want
    v = torch.randn(op.dim)
    exact = curvature_model.operator(spec.CurvatureSpec(matrix), net, landscape.evaluation.DeviceSet(x, y, 16),
                                     nn.CrossEntropyLoss())
    assert torch.allclose(op(v), exact(v), rtol=1e-2, atol=1e-4 * float(exact(v).abs().max()))


# ----------------------------------------------------------------------------- layering
def modules():
    """{module name: ast} of every module of the package."""
    out = {}
    for folder, _, files in os.walk(PACKAGE):
        for f in files:
            if f.endswith(".py"):
                path = os.path.join(folder, f)
                rel = os.path.relpath(path, REPO)[:-3].replace(os.sep, ".")
                out[rel[:-len(".__init__")] if rel.endswith(".__init__") else rel] = ast.parse(open(path).read())
    return out


def module_imports(name, tree, known):
    """The package modules `name` imports at module level (a from-import of a submodule counts as it)."""
    out = set()
    for node in tree.body:
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("landscape"):
            for alias in node.names:
                sub = f"{node.module}.{alias.name}"
                out.add(sub if sub in known else node.module)
        elif isinstance(node, ast.Import):
            out |= {a.name for a in node.names if a.name.startswith("landscape")}
    return out - {name}


def engine(name):
    return not name.startswith(("landscape.cli", "landscape.compat")) and name != "landscape.curvature.hvp"


def test_no_import_circle_and_the_engine_never_imports_the_compatibility_modules():
    trees = modules()
    graph = {n: module_imports(n, t, trees) for n, t in trees.items()}
    state = {}

    def visit(n, chain):
        state[n] = "open"
        for m in sorted(graph.get(n, ())):
            assert state.get(m) != "open", "import circle: " + " -> ".join(chain + [m])
            if m not in state:
                visit(m, chain + [m])
        state[n] = "done"
    for n in sorted(graph):
        if n not in state:
            visit(n, [n])
    for n, deps in graph.items():
        if engine(n):
            assert not {d for d in deps if not engine(d)}, (n, deps)


REFERENCE_NAMES = {"net_plotter", "h5_util", "hess_vec_prod", "mpi4pytorch", "projection", "model_loader",
                   "dataloader", "plot_util", "plot_1D", "plot_2D"}


def test_no_engine_module_reads_a_namespace_or_imports_under_a_reference_name():
    for name, tree in modules().items():
        if not engine(name):
            continue
        for node in ast.walk(tree):
            if isinstance(node, (ast.Import, ast.ImportFrom)):
                assert not {a.asname or a.name for a in node.names} & REFERENCE_NAMES, (name, ast.dump(node))
            if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name):
                assert node.value.id not in ("cfg", "args"), f"{name}:{node.lineno} reads {node.value.id}.{node.attr}"
