"""Console entry points (`plot_surface`, `plot_1D`, ... on the PATH after `pip install`) and the front
doors at the root of a clone (`python plot_surface.py ...`, `import net_plotter`).

A front door is a file at the repository root with a reference name. Run as a script it runs the
command; imported, it *is* the package module (sys.modules points at it), so `net_plotter.x = ...`
in a user's script changes what the package sees, exactly as when the module lived at the root.
"""
import importlib
import os
import sys

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
}


def run_command(name):
    """Run command `name` with sys.argv and exit with its code (what every console script does)."""
    module = importlib.import_module(COMMANDS[name])
    sys.exit(run_cli(module.main))


def plot_surface():
    run_command("plot_surface")


def plot_hessian_eigen():
    run_command("plot_hessian_eigen")


def plot_trajectory():
    run_command("plot_trajectory")


def plot_1D():
    run_command("plot_1D")


def plot_2D():
    run_command("plot_2D")


def h52vtp():
    run_command("h52vtp")


def train():
    run_command("landscape-train")


def front_door(name, module, file):
    """The body of a root front door: note the clone (relative data paths are also looked up there),
    then run the command (as a script) or become the package module (imported)."""
    from landscape.zoo import data
    data.CLONE_ROOT = clone_root(file)
    target = importlib.import_module(module)
    if name == "__main__":
        sys.exit(run_cli(target.main))
    sys.modules[name] = target


def clone_root(file):
    """The repository root of a front door (cifar10/main.py sits one folder down)."""
    folder = os.path.dirname(os.path.abspath(file))
    return folder if os.path.isdir(os.path.join(folder, "landscape")) else os.path.dirname(folder)
