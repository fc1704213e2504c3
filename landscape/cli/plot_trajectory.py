"""Project a training trajectory onto its two principal directions and plot it.

    python plot_trajectory.py --dataset digits --model digits_cnn --model_folder F --start_epoch 0 \
        --max_epoch 20 --save_epoch 1 [--dir_type weights] [--ignore biasbn]

Reads <model_folder>/<prefix><epoch><suffix> for start_epoch, start_epoch + save_epoch, ... up to
max_epoch, writes the PCA direction file <model_folder>/PCA_<dir_type>[_ignore=..]_save_epoch=<k>/
directions.h5 (or uses --dir_file), the projection file <dir_file>_proj_<method>.h5, and its plot.
Then plot the loss contours with the path on top (the paper's Figure 9):
    python plot_surface.py --model_file <final> --dir_file <dir_file> --x=... --y=... --proj_file <proj> --plot
"""
from __future__ import annotations

import argparse
import os
import sys
from typing import Optional, Sequence

from landscape import directions as dirs
from landscape import trajectory as traj
from landscape.errors import ArgParser, UserError, run_cli
from landscape.plots import plot_2d
from landscape.zoo import loader as zoo_loader


def build_parser() -> argparse.ArgumentParser:
    p = ArgParser.make("Plot the optimisation trajectory in the plane of its principal directions.")
    p.add_argument("--dataset", default="cifar10", help="dataset the models were trained on (names input shapes)")
    p.add_argument("--model", default="resnet56", help="model name, or path/to/file.py:factory")
    p.add_argument("--model_folder", default="", help="folder holding the checkpoints")
    p.add_argument("--dir_type", default="weights", choices=["weights", "states"], help="direction space")
    p.add_argument("--ignore", default="", choices=["", "biasbn"], help="biasbn: leave out biases and BN parameters")
    p.add_argument("--prefix", default="model_", help="checkpoint file prefix")
    p.add_argument("--suffix", default=".t7", help="checkpoint file suffix")
    p.add_argument("--start_epoch", default=0, type=int, help="first epoch")
    p.add_argument("--max_epoch", default=300, type=int, help="last epoch (the final model)")
    p.add_argument("--save_epoch", default=1, type=int, help="epochs between the checkpoints used")
    p.add_argument("--dir_file", default="", help="project onto this direction file instead of the PCA one")
    p.add_argument("--proj_method", default="auto", choices=["auto", "cos", "lstsq"],
                   help="cos for orthogonal directions, lstsq otherwise; auto picks")
    p.add_argument("--params", default="", help="regular expression: the trajectory of only the parameters whose "
                                                 "names match it")
    p.add_argument("--format", default="pdf", choices=["pdf", "png", "svg"], help="figure format")
    return p


def checkpoint_files(a: argparse.Namespace) -> list[str]:
    if a.save_epoch < 1 or a.start_epoch > a.max_epoch:
        raise UserError("--save_epoch must be >= 1 and --start_epoch <= --max_epoch")
    files = [os.path.join(a.model_folder, f"{a.prefix}{e}{a.suffix}")
             for e in range(a.start_epoch, a.max_epoch + a.save_epoch, a.save_epoch) if e <= a.max_epoch]
    final = os.path.join(a.model_folder, f"{a.prefix}{a.max_epoch}{a.suffix}")
    if files[-1] != final:
        files.append(final)
    missing = [f for f in files if not os.path.isfile(f)]
    if missing:
        raise UserError(f"checkpoint '{missing[0]}' does not exist ({len(missing)} of {len(files)} missing)")
    return files


def main(argv: Optional[Sequence[str]] = None) -> int:
    a = build_parser().parse_args(argv)
    if not a.model_folder or not os.path.isdir(a.model_folder):
        raise UserError(f"--model_folder '{a.model_folder}' is not a folder")
    files = checkpoint_files(a)
    net = zoo_loader.load(a.dataset, a.model, files[-1])
    dirs.entry_mask(dirs.direction_space(net, a.dir_type), a.params)  # a regex that matches nothing
    dir_file = a.dir_file or traj.pca_direction_file(files, net, a.model, a.dataset, a.model_folder, a.dir_type,
                                                     a.ignore, a.save_epoch, a.params or "")
    if a.dir_file and not os.path.exists(a.dir_file):
        raise UserError(f"--dir_file '{a.dir_file}' does not exist")
    proj_file = traj.project_trajectory(dir_file, net, a.dataset, a.model, files, a.dir_type, a.proj_method,
                                        a.params)
    plot_2d.plot_trajectory(proj_file, dir_file, fmt=a.format)
    print(f"direction file: {dir_file}\nprojection file: {proj_file}")
    return 0


if __name__ == "__main__":
    sys.exit(run_cli(main))
