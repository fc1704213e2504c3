"""The reference's `projection` module: everything of landscape.trajectory, plus its function that takes a
parsed command line. The root file projection.py is this module; the engine never imports it."""
from __future__ import annotations

from typing import Any

import torch.nn as nn

from landscape.trajectory import *  # noqa: F401,F403  (the reference's names: project_trajectory, ...)
from landscape.trajectory import pca_direction_file


def setup_PCA_directions(args: Any, model_files: list[str], net_final: nn.Module, model_name: str) -> str:
    """Create (or reuse) the PCA direction file of a trajectory for a parsed command line; returns its path."""
    return pca_direction_file(model_files, net_final, model_name, args.dataset, args.model_folder, args.dir_type,
                              args.ignore, args.save_epoch, getattr(args, "params", "") or "")
