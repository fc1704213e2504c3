"""The reference's `net_plotter` module: everything of landscape.directions, plus its functions that take
a parsed command line (an argparse namespace, or any object with the same attributes). The root file
net_plotter.py is this module; the engine never imports it.
"""
from __future__ import annotations

import os
from typing import Any, Callable, Optional

import torch.nn as nn

from landscape.directions import *  # noqa: F401,F403  (the reference's names: get_weights, set_weights, ...)
from landscape.directions import (
    Direction,
    DirectionSpec,
    create_random_direction,
    create_target_direction,
    direction_file_name,
    make_directions,
)
from landscape.errors import LandscapeError
from landscape.io import h5


def directions_from_config(cfg: Any) -> DirectionSpec:
    """The DirectionSpec of a parsed command line (or any object with the same attributes)."""
    y = getattr(cfg, "y", None) is not None
    return DirectionSpec(
        dir_type=cfg.dir_type, ndim=2 if y else 1, seed=cfg.seed, xnorm=cfg.xnorm, xignore=cfg.xignore,
        ynorm=cfg.ynorm, yignore=cfg.yignore, same_dir=bool(cfg.same_dir),
        xdir="target" if cfg.model_file2 else (getattr(cfg, "xdir", "") or "random"),
        ydir="target" if cfg.model_file3 else (getattr(cfg, "ydir", "") or "random"),
        orthogonalize=bool(getattr(cfg, "orthogonalize", False)), params=getattr(cfg, "params", "") or "",
        regenerate=bool(getattr(cfg, "regenerate_directions", False)), curvature=getattr(cfg, "curvature", "hessian"))


def name_direction_file(cfg: Any) -> str:
    """The reference's direction-file name of a parsed command line (its --dir_file where given); see
    landscape.directions.direction_file_name."""
    if cfg.dir_file:
        return cfg.dir_file
    return direction_file_name(directions_from_config(cfg), cfg.model_file, cfg.model_file2, cfg.model_file3,
                               cfg.idx)


def create_directions(cfg: Any, net: nn.Module, load_model: Callable[[str], nn.Module],
                      build_model: Optional[Callable[[], nn.Module]] = None) -> list[Direction]:
    """The x (and y) directions a parsed command line asks for (the directions only)."""
    spec = directions_from_config(cfg)
    return make_directions(spec, net, model2=lambda: load_model(cfg.model_file2),
                           model3=lambda: load_model(cfg.model_file3), build_model=build_model)[0]


def setup_direction(args: Any, dir_file: str, net: nn.Module) -> None:
    """Write the directions a parsed command line asks for into `dir_file` (the reference's file
    layout), unless it already holds them. As the reference, random directions come from torch's
    global generator in its current state, and --model_file2/3 are loaded with model_loader.load."""
    if os.path.exists(dir_file):
        try:
            h5.read_direction_info(dir_file)           # it holds an x direction: done
            print(f"{dir_file} is already set up")
            return
        except LandscapeError:
            pass                                       # not a direction file: written anew, as the reference
    dir_type = getattr(args, "dir_type", "weights")

    def target(path):
        from landscape.zoo import loader
        return create_target_direction(net, loader.load(args.dataset, args.model, path), dir_type)
    xdir = target(args.model_file2) if getattr(args, "model_file2", "") else \
        create_random_direction(net, dir_type, getattr(args, "xignore", ""), getattr(args, "xnorm", ""))
    dirs = [xdir]
    if getattr(args, "y", None):
        if getattr(args, "same_dir", False):
            dirs.append(xdir)
        elif getattr(args, "model_file3", ""):
            dirs.append(target(args.model_file3))
        else:
            dirs.append(create_random_direction(net, dir_type, getattr(args, "yignore", ""),
                                                getattr(args, "ynorm", "")))
    h5.write_direction_file(dir_file, dirs, {"dir_type": dir_type, "model": getattr(args, "model", "")})
