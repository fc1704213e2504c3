"""Find a low-loss curve between two checkpoints (mode connectivity), and write it as checkpoints.

    python find_curve.py --dataset digits --model digits_cnn --model_file A/model_60.t7 \\
        --model_file2 B/model_60.t7 --curve bezier --num_bends 1 --epochs 20 --lr 0.05 --out curve_AB
    python plot_surface.py --dataset digits --model digits_cnn --curve_file curve_AB --x=0:1:41 --eval_test

It writes, in --out (default: <model_file>_<model_file2 name>_<curve>_bends=<N>):
    bend_<i>.t7     an ordinary checkpoint per bend {'epoch': epochs trained, 'state_dict': ...}
                    (the first end's state_dict with the curve's parameters)
    curve.json      the curve's spec: the end files and their sha256, the kind, the bends and their
                    sha256, the training settings, the epochs done
    curve_state.pt  the training state after the last finished epoch: a rerun (after kill -9, say)
                    continues from it
The curve is evaluated as the path end1, bend_1 .. bend_N, end2 (`--curve_file`, or `--path_files`
with `--path_type <curve>`). See landscape/curves.py for the training itself.
"""
from __future__ import annotations

import argparse
import os
import time
from typing import Optional, Sequence

import torch

from landscape import curves
from landscape.errors import ArgParser, UserError
from landscape.evaluation import LOSS_NAMES, resolve_loss
from landscape.io import provenance
from landscape.version import __version__
from landscape.zoo import data as zoo_data
from landscape.zoo import loader as zoo_loader


def build_parser() -> argparse.ArgumentParser:
    p = ArgParser.make("Train a low-loss curve (Bezier or polygonal chain) between two checkpoints.")
    a = p.add_argument
    a("--model", "-m", default="resnet56", help="model name, or path/to/file.py:factory")
    a("--model_file", default="", help="the first end point (t = 0)")
    a("--model_file2", default="", help="the second end point (t = 1)")
    a("--dataset", default="cifar10", help="cifar10 | digits | path/to/file.py:function")
    a("--datapath", default="cifar10/data", metavar="DIR", help="folder holding cifar-10-batches-py")
    a("--raw_data", action="store_true", help="do not normalize the data")
    a("--loss_name", "-l", default="crossentropy", choices=LOSS_NAMES, help="the training loss")
    a("--curve", default="bezier", help="bezier (the Bezier curve of the ends and bends) | polychain")
    a("--num_bends", default=1, type=int, help="trainable bends (1: a quadratic Bezier curve)")
    a("--epochs", default=10, type=int, help="epochs of curve training (0: the bends stay on the straight line)")
    a("--lr", default=0.05, type=float, help="SGD learning rate of the bends")
    a("--momentum", default=0.9, type=float, help="SGD momentum")
    a("--weight_decay", default=0.0, type=float, help="L2 weight decay of the bends")
    a("--batch_size", default=128, type=int, help="minibatch size")
    a("--seed", default=0, type=int, help="seed of the batches' order and of the t drawn for each batch")
    a("--out", default="", help="output folder (default: named after the two end points and the curve)")
    a("--cuda", action="store_true", help="train on the GPU")
    a("--threads", default=0, type=int, help="CPU threads for torch (0: torch's default)")
    return p


def default_out(a: argparse.Namespace) -> str:
    return f"{a.model_file}_{os.path.basename(a.model_file2)}_{a.curve}_bends={a.num_bends}"


def load_end(a: argparse.Namespace, flag: str) -> dict:
    path = getattr(a, flag)
    if not path:
        raise UserError(f"--{flag} is required: a curve runs between two checkpoints")
    if not os.path.isfile(path):
        raise UserError(f"--{flag} '{path}' does not exist")
    return zoo_loader.load(a.dataset, a.model, path).state_dict()


def main(argv: Optional[Sequence[str]] = None) -> int:
    a = build_parser().parse_args(argv)
    spec = curves.CurveSpec(a.curve, a.num_bends, a.epochs, a.lr, a.batch_size, a.seed, a.momentum,
                            a.weight_decay).check("cli")
    if a.threads < 0:
        raise UserError(f"--threads {a.threads} must be >= 0")
    if a.threads:
        torch.set_num_threads(a.threads)
    if a.cuda and not torch.cuda.is_available():
        raise UserError("--cuda: no CUDA GPU is visible to torch")
    device = torch.device("cuda" if a.cuda else "cpu")
    state1, state2 = load_end(a, "model_file"), load_end(a, "model_file2")
    net = zoo_loader.build(a.model)
    curves.end_points(net, state1, state2)       # different architectures: one line, nothing written
    data = zoo_data.load_tensors(a.dataset, a.datapath, a.raw_data)
    if data.train_x is None:
        raise UserError(f"dataset '{a.dataset}' gives its training set as a Dataset or iterable: find_curve.py "
                        "trains on data held as tensors")
    criterion = resolve_loss(a.loss_name)[0]
    out = a.out or default_out(a)
    ends = [os.path.abspath(a.model_file), os.path.abspath(a.model_file2)]
    end_sha = [provenance.file_sha256(f) for f in ends]
    record = {"model": a.model, "dataset": a.dataset, "raw_data": a.raw_data, "loss_name": a.loss_name,
              "end_sha256": end_sha}
    if os.path.exists(out) and not os.path.isdir(out):
        raise UserError(f"--out '{out}' exists and is not a folder")
    os.makedirs(out, exist_ok=True)
    if not os.access(out, os.W_OK):
        raise UserError(f"cannot write to '{out}'")
    t0 = time.perf_counter()
    print(f"training a {spec.kind} curve with {spec.bends} bend(s) between {a.model_file} and {a.model_file2} "
          f"on {len(data.train_y)} {data.name} examples, {spec.epochs} epochs; output in {out}", flush=True)
    r = curves.train_curve(net, state1, state2, data.train_x, data.train_y, spec, criterion, device,
                           state_file=os.path.join(out, "curve_state.pt"), log=lambda s: print(s, flush=True),
                           record=record)
    bend_files = []
    for i, state in enumerate(r.bends, 1):
        name = f"bend_{i}.t7"
        tmp = os.path.join(out, name + ".tmp")
        torch.save({"epoch": r.epochs_done, "state_dict": state}, tmp)
        os.replace(tmp, os.path.join(out, name))
        bend_files.append(name)
    curve_file = curves.write_curve_file(out, {
        "kind": spec.kind, "bends": spec.bends, "end_files": ends, "end_sha256": end_sha,
        "bend_files": bend_files, "bend_sha256": [provenance.file_sha256(os.path.join(out, b)) for b in bend_files],
        "training": {"epochs": spec.epochs, "lr": spec.lr, "momentum": spec.momentum,
                     "weight_decay": spec.weight_decay, "batch_size": spec.batch_size, "seed": spec.seed},
        "epochs_done": r.epochs_done, "model": a.model, "dataset": a.dataset, "raw_data": a.raw_data,
        "loss_name": a.loss_name, "landscape_version": __version__})
    print(f"curve written to {curve_file} ({len(bend_files)} bend checkpoint(s)) in "
          f"{time.perf_counter() - t0:.1f} s; evaluate it with plot_surface.py --curve_file {out} --x=0:1:21")
    return 0
