"""Console entry points (`plot_surface`, `plot_1D`, ... on the PATH after `pip install`) and the front
doors at the root of a clone (`python plot_surface.py ...`, `import net_plotter`).

A front door is a file at the repository root with a reference name. Run as a script it runs the
command; imported, it *is* the module behind it (sys.modules points at it): the package module of the
same name, or for net_plotter its compatibility module (landscape/compat/net_plotter.py: the directions
module plus the reference's functions of a parsed command line), which the engine never imports.
"""
from __future__ import annotations

import importlib
import os
import sys
from typing import NoReturn

from landscape.errors import run_cli

# command name -> the module whose main(argv) it runs
COMMANDS = {
    "plot_surface": "landscape.cli.plot_surface",
    "plot_hessian_eigen": "landscape.cli.plot_hessian_eigen",
    "plot_trajectory": "landscape.cli.plot_trajectory",
    "plot_1D": "landscape.plots.plot_1d",
    "plot_2D": "landscape.plots.plot_2d",
    "h52vtp": "landscape.plots.vtp",
    "landscape-train": "landscape.cli.train",
    "find_curve": "landscape.cli.find_curve",
}


def run_command(name: str) -> NoReturn:
    """Run command `name` with sys.argv and exit with its code (what every console script does)."""
    module = importlib.import_module(COMMANDS[name])
    sys.exit(run_cli(module.main))


def plot_surface() -> NoReturn:
    run_command("plot_surface")


def plot_hessian_eigen() -> NoReturn:
    run_command("plot_hessian_eigen")


def plot_trajectory() -> NoReturn:
    run_command("plot_trajectory")


def plot_1D() -> NoReturn:
    run_command("plot_1D")


def plot_2D() -> NoReturn:
    run_command("plot_2D")


def h52vtp() -> NoReturn:
    run_command("h52vtp")


def train() -> NoReturn:
    run_command("landscape-train")


def find_curve() -> NoReturn:
    run_command("find_curve")


def front_door(name: str, module: str, file: str) -> None:
    """The body of a root front door: note the clone (relative data paths are also looked up there),
    then run the command (as a script) or become the package module (imported)."""
    from landscape.zoo import data
    data.CLONE_ROOT = clone_root(file)
    target = importlib.import_module(module)
    if name == "__main__":
        sys.exit(run_cli(target.main))
    sys.modules[name] = target


def clone_root(file: str) -> str:
    """The repository root of a front door (cifar10/main.py sits one folder down)."""
    folder = os.path.dirname(os.path.abspath(file))
    return folder if os.path.isdir(os.path.join(folder, "landscape")) else os.path.dirname(folder)
