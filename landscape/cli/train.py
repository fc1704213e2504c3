"""Train a model and save the checkpoints that plot_surface.py and plot_trajectory.py read.

Mirrors the reference trainer's flags, folder names and checkpoint format:
    trained_nets/<model>_<opt>_lr=<lr>_bs=<bs>_wd=<wd>_mom=<mom>_save_epoch=<k>[suffixes]/
        model_<e>.t7      {'acc': test accuracy %, 'epoch': e, 'state_dict': ...}
        opt_state_<e>.t7  {'optimizer': optimizer.state_dict()}
        log.out           one line per epoch
Checkpoints are written at epoch 0, epoch 1, every --save_epoch epochs, at epoch 150 and at the
last epoch; the
learning rate is multiplied by --lr_decay at epochs 150, 225 and 275 (the reference's schedule).

    python cifar10/main.py --dataset digits --model digits_cnn --epochs 10 --batch_size 16 --save_epoch 1
The data lives on the device as tensors; CIFAR-10 augmentation (random 4-pixel-padded crop and
horizontal flip) runs there too. Digits and custom data are not augmented.
"""
from __future__ import annotations

import argparse
import os
import random
import sys
import time
from typing import Optional, Sequence

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
import torch.nn.init as init

from landscape.errors import ArgParser, UserError, run_cli
from landscape.evaluation import LOSS_NAMES, batch_loss_sum, evaluate
from landscape.zoo import data as zoo_data
from landscape.zoo import loader as zoo_loader

DECAY_EPOCHS = (150, 225, 275)


def default_save() -> str:
    """cifar10/trained_nets: under the clone when run through its front door, else under the working directory."""
    return os.path.join(zoo_data.CLONE_ROOT or "", "cifar10", "trained_nets")


def build_parser() -> argparse.ArgumentParser:
    p = ArgParser.make("Train a model for loss-landscape plots (CIFAR-10, digits or custom data).")
    p.add_argument("--batch_size", default=128, type=int, help="minibatch size")
    p.add_argument("--lr", default=0.1, type=float, help="learning rate")
    p.add_argument("--lr_decay", default=0.1, type=float, help="learning rate decay factor at epochs 150/225/275")
    p.add_argument("--optimizer", default="sgd", choices=["sgd", "adam"], help="optimizer")
    p.add_argument("--weight_decay", default=0.0005, type=float, help="L2 weight decay")
    p.add_argument("--momentum", default=0.9, type=float, help="SGD (Nesterov) momentum")
    p.add_argument("--epochs", default=300, type=int, metavar="N", help="number of epochs to run")
    p.add_argument("--save", default=default_save(),
                   help="folder that holds the run folders (cifar10/trained_nets under the working directory, "
                        "or under the clone for cifar10/main.py)")
    p.add_argument("--save_epoch", default=10, type=int, help="save a checkpoint every save_epoch epochs")
    p.add_argument("--ngpu", type=int, default=1, help="number of GPUs (DataParallel when > 1)")
    p.add_argument("--rand_seed", default=0, type=int, help="seed for all random number generators")
    p.add_argument("--resume_model", default="", help="resume the model from this checkpoint")
    p.add_argument("--resume_opt", default="", help="resume the optimizer from this opt_state file")
    p.add_argument("--model", "-m", default="vgg9", help="model name, or path/to/file.py:factory")
    p.add_argument("--loss_name", "-l", default="crossentropy", choices=LOSS_NAMES, help="loss function")
    p.add_argument("--dataset", default="cifar10", help="cifar10 | digits | path/to/file.py:function")
    p.add_argument("--datapath", default="cifar10/data", metavar="DIR", help="folder holding cifar-10-batches-py")
    p.add_argument("--download", action="store_true", help="download CIFAR-10 if it is missing")
    p.add_argument("--raw_data", action="store_true", help="do not normalize the data")
    p.add_argument("--noaug", action="store_true", help="no data augmentation")
    p.add_argument("--label_corrupt_prob", type=float, default=0.0,
                   help="replace each training label by a random one with this probability")
    p.add_argument("--trainloader", default="", help="labels file (or, with --allow_pickle, pickled DataLoader)")
    p.add_argument("--testloader", default="", help="labels file (or, with --allow_pickle, pickled DataLoader)")
    p.add_argument("--allow_pickle", action="store_true", help="allow loading pickled DataLoaders (runs code)")
    p.add_argument("--idx", default=0, type=int, help="index of a repeated experiment")
    p.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"], help="auto: CUDA when available")
    p.add_argument("--threads", default=0, type=int, help="CPU threads for torch (0: torch's default)")
    p.add_argument("--dry_run", action="store_true",
                   help="check every input, name the files, time one step, and train nothing")
    return p


def name_save_folder(a: argparse.Namespace) -> str:
    """The reference's run-folder name (plus _dataset=<name> for data other than CIFAR-10)."""
    model = os.path.basename(a.model).replace(":", "-").replace(".py", "")   # a file.py:fn model: its name only
    name = f"{model}_{a.optimizer}_lr={a.lr}"
    if a.lr_decay != 0.1:
        name += f"_lr_decay={a.lr_decay}"
    name += f"_bs={a.batch_size}_wd={a.weight_decay}_mom={a.momentum}_save_epoch={a.save_epoch}"
    if a.loss_name != "crossentropy":
        name += f"_loss={a.loss_name}"
    if a.noaug:
        name += "_noaug"
    if a.raw_data:
        name += "_rawdata"
    if a.label_corrupt_prob > 0:
        name += f"_randlabel={a.label_corrupt_prob}"
    if a.ngpu > 1:
        name += f"_ngpu={a.ngpu}"
    if a.idx:
        name += f"_idx={a.idx}"
    if a.dataset != "cifar10":
        name += "_dataset=" + os.path.basename(a.dataset).replace(":", "-").replace(".py", "")
    return name


def init_params(net: nn.Module) -> None:
    """The reference's initialisation: Kaiming-normal convs, unit BN, N(0, 1e-3) linear layers."""
    for m in net.modules():
        if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d)):
            init.kaiming_normal_(m.weight, mode="fan_in")
            if m.bias is not None:
                init.constant_(m.bias, 0)
        elif isinstance(m, nn.BatchNorm2d):
            init.constant_(m.weight, 1)
            init.constant_(m.bias, 0)
        elif isinstance(m, nn.Linear):
            init.normal_(m.weight, std=1e-3)
            if m.bias is not None:
                init.constant_(m.bias, 0)


def augment(x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """Random 32x32 crop of the 4-pixel zero-padded image, and a random horizontal flip, per image."""
    n, _, h, w = x.shape
    padded = F.pad(x, (4, 4, 4, 4))
    dx = torch.randint(0, 9, (n,), device=x.device, generator=gen)
    dy = torch.randint(0, 9, (n,), device=x.device, generator=gen)
    rows = (dy[:, None] + torch.arange(h, device=x.device)[None, :])            # (n, h)
    cols = (dx[:, None] + torch.arange(w, device=x.device)[None, :])            # (n, w)
    flip = torch.rand(n, device=x.device, generator=gen) < 0.5
    cols = torch.where(flip[:, None], cols.flip(1), cols)
    idx_n = torch.arange(n, device=x.device)[:, None, None]
    out = padded[idx_n, :, rows[:, :, None], cols[:, None, :]]                  # (n, h, w, c)
    return out.permute(0, 3, 1, 2).contiguous()


def corrupt_labels(y: torch.Tensor, prob: float, num_classes: int, seed: int) -> torch.Tensor:
    """Replace each label with a uniformly random class with probability `prob` (Zhang et al.)."""
    g = torch.Generator().manual_seed(seed)
    flip = torch.rand(len(y), generator=g) < prob
    random_labels = torch.randint(0, num_classes, (len(y),), generator=g)
    return torch.where(flip, random_labels, y)


def train_epoch(net: nn.Module, x: torch.Tensor, y: torch.Tensor, optimizer: torch.optim.Optimizer,
                a: argparse.Namespace, gen: torch.Generator, augment_on: bool) -> tuple[float, float]:
    """One pass in random order over (x, y) on the device; returns (mean loss, error %)."""
    net.train()
    n = len(y)
    order = torch.randperm(n, device=x.device, generator=gen)
    total_loss = torch.zeros((), dtype=torch.float64, device=x.device)
    correct = torch.zeros((), dtype=torch.int64, device=x.device)
    for start in range(0, n, a.batch_size):
        idx = order[start:start + a.batch_size]
        inputs = augment(x[idx], gen) if augment_on else x[idx]
        optimizer.zero_grad(set_to_none=True)
        loss_sum, c = batch_loss_sum(net(inputs), y[idx], a.loss_name)
        (loss_sum / len(idx)).backward()
        optimizer.step()
        total_loss += loss_sum.detach()
        correct += c
    return total_loss.item() / n, 100.0 - 100.0 * correct.item() / n


def make_optimizer(net: nn.Module, a: argparse.Namespace) -> torch.optim.Optimizer:
    if a.optimizer == "sgd":
        return torch.optim.SGD(net.parameters(), lr=a.lr, momentum=a.momentum,
                               weight_decay=a.weight_decay, nesterov=a.momentum > 0)
    return torch.optim.Adam(net.parameters(), lr=a.lr, weight_decay=a.weight_decay)


def checkpoint_epochs(epochs: int, save_epoch: int) -> list[int]:
    """The reference's epochs (0, 1, every save_epoch, 150), plus the last epoch, so a run always ends saved."""
    return [0] + [e for e in range(1, epochs + 1) if e in (1, 150, epochs) or e % save_epoch == 0]


def validate(a: argparse.Namespace) -> None:
    if a.batch_size < 1 or a.epochs < 0 or a.save_epoch < 1:
        raise UserError("--batch_size and --save_epoch must be >= 1 and --epochs >= 0")
    if not 0 <= a.label_corrupt_prob <= 1:
        raise UserError(f"--label_corrupt_prob {a.label_corrupt_prob} must be in [0, 1]")
    if a.lr <= 0:
        raise UserError(f"--lr {a.lr} must be > 0")
    if a.device == "cuda" and not torch.cuda.is_available():
        raise UserError("--device cuda was given, but no CUDA GPU is available")
    for flag in ("resume_model", "resume_opt"):
        if getattr(a, flag) and not os.path.isfile(getattr(a, flag)):
            raise UserError(f"--{flag} file '{getattr(a, flag)}' does not exist")


def save_checkpoint(folder: str, epoch: int, net: nn.Module, optimizer: torch.optim.Optimizer, acc: float) -> None:
    """Write model_<e>.t7 and opt_state_<e>.t7 atomically (temp file, then rename)."""
    plain = net.module if isinstance(net, nn.DataParallel) else net
    for name, obj in ((f"model_{epoch}.t7", {"acc": acc, "epoch": epoch, "state_dict": plain.state_dict()}),
                      (f"opt_state_{epoch}.t7", {"optimizer": optimizer.state_dict()})):
        path = os.path.join(folder, name)
        torch.save(obj, path + ".tmp")
        os.replace(path + ".tmp", path)


def resume(net: nn.Module, optimizer: torch.optim.Optimizer, a: argparse.Namespace) -> int:
    """Load --resume_model / --resume_opt (tensor-only files); returns the first epoch to run."""
    start = 1
    if a.resume_model:
        ckpt = zoo_loader.read_checkpoint(a.resume_model)
        state = zoo_loader.add_batch_counts(net, zoo_loader.extract_state_dict(ckpt, a.resume_model))
        zoo_loader.check_fits(net, state, a.model, a.resume_model)
        net.load_state_dict(state)
        start = int(ckpt.get("epoch", 0)) + 1 if isinstance(ckpt, dict) else 1
    if a.resume_opt:
        opt = zoo_loader.read_checkpoint(a.resume_opt)
        if not (isinstance(opt, dict) and "optimizer" in opt):
            raise UserError(f"--resume_opt '{a.resume_opt}' has no 'optimizer' entry")
        optimizer.load_state_dict(opt["optimizer"])
    return start


def log_line(epoch: int, loss: float, train_err: float, test_err: float, test_loss: float) -> str:
    return f"e: {epoch} loss: {loss:.5f} train_err: {train_err:.3f} test_top1: {test_err:.3f} test_loss {test_loss:.5f}"


def dry_run(a: argparse.Namespace, folder: str, net: nn.Module, optimizer: torch.optim.Optimizer, x: torch.Tensor,
            y: torch.Tensor, augment_on: bool, gen: torch.Generator) -> None:
    """Time one training step and one evaluation pass, then report the plan without training."""
    epochs = checkpoint_epochs(a.epochs, a.save_epoch)
    print(f"would write {2 * len(epochs)} checkpoints (model_<e>.t7, opt_state_<e>.t7 for e in "
          f"{epochs[:4]}{'...' if len(epochs) > 4 else ''}) and log.out into {folder}")
    idx = torch.arange(min(a.batch_size, len(y)), device=x.device)
    t0 = time.perf_counter()
    for _ in range(2):  # the first step warms up; time the second
        t0 = time.perf_counter()
        net.train()
        optimizer.zero_grad()
        loss_sum, _ = batch_loss_sum(net(augment(x[idx], gen) if augment_on else x[idx]), y[idx], a.loss_name)
        (loss_sum / len(idx)).backward()
        if x.is_cuda:
            torch.cuda.synchronize()
    step = time.perf_counter() - t0
    steps = -(-len(y) // a.batch_size) * max(a.epochs, 0)
    print(f"one step of batch {a.batch_size}: {step * 1e3:.1f} ms; {steps} steps -> about "
          f"{steps * step / 60:.1f} min of training (plus evaluation). Nothing was trained or written.")


def main(argv: Optional[Sequence[str]] = None) -> int:
    a = build_parser().parse_args(argv)
    validate(a)
    if a.threads > 0:
        torch.set_num_threads(a.threads)
    random.seed(a.rand_seed)
    np.random.seed(a.rand_seed)
    torch.manual_seed(a.rand_seed)
    device = "cuda" if (a.device == "cuda" or (a.device == "auto" and torch.cuda.is_available())) else "cpu"

    data = zoo_data.load_tensors(a.dataset, a.datapath, a.raw_data, trainloader=a.trainloader,
                                 testloader=a.testloader, allow_pickle=a.allow_pickle, download=a.download)
    folder = os.path.join(a.save, name_save_folder(a))
    net = zoo_loader.build(a.model)
    if not a.resume_model:
        init_params(net)
    net.to(device)
    optimizer = make_optimizer(net, a)
    start_epoch = resume(net, optimizer, a)
    if a.ngpu > 1:
        net = nn.DataParallel(net, device_ids=list(range(a.ngpu)))

    x, y = data.train_x.to(device), data.train_y.to(device)
    has_test = data.has("test")   # a custom dataset may give none: test columns are then nan
    tx, ty = (data.test_x.to(device), data.test_y.to(device)) if has_test else (None, None)
    test_eval = lambda: evaluate(net, tx, ty, a.loss_name, 1024) if has_test else (float("nan"), float("nan"))
    if a.label_corrupt_prob > 0:
        y = corrupt_labels(y.cpu(), a.label_corrupt_prob, data.num_classes, a.rand_seed).to(device)
    augment_on = a.dataset == "cifar10" and not (a.raw_data or a.noaug)
    gen = torch.Generator(device=device).manual_seed(a.rand_seed)

    if a.dry_run:
        dry_run(a, folder, net, optimizer, x, y, augment_on, gen)
        return 0
    os.makedirs(folder, exist_ok=True)
    if not os.access(folder, os.W_OK):
        raise UserError(f"cannot write to '{folder}'")
    if a.label_corrupt_prob > 0 and not a.resume_model:
        # Tensor-only label files (never pickled DataLoaders): plot_surface.py --trainloader reads them.
        torch.save({"targets": y.cpu()}, os.path.join(folder, "trainloader.dat"))
        if has_test:
            torch.save({"targets": ty.cpu()}, os.path.join(folder, "testloader.dat"))
    tests = f"{len(ty)} test" if has_test else "no test"
    print(f"training {a.model} on {data.name} ({len(y)} train / {tests} images) on {device}; "
          f"checkpoints in {folder}", flush=True)

    saves = set(checkpoint_epochs(a.epochs, a.save_epoch))
    with open(os.path.join(folder, "log.out"), "a") as log:
        if not a.resume_model:
            train_loss, train_acc = evaluate(net, x, y, a.loss_name, 1024)
            test_loss, test_acc = test_eval()
            status = log_line(0, train_loss, 100 - train_acc, 100 - test_acc, test_loss)
            print(status, flush=True)
            log.write(status + "\n")
            save_checkpoint(folder, 0, net, optimizer, test_acc)
        for epoch in range(start_epoch, a.epochs + 1):
            t0 = time.perf_counter()
            loss, train_err = train_epoch(net, x, y, optimizer, a, gen, augment_on)
            test_loss, test_acc = test_eval()
            status = log_line(epoch, loss, train_err, 100 - test_acc, test_loss)
            print(f"{status}  ({time.perf_counter() - t0:.1f} s)", flush=True)
            log.write(status + "\n")
            log.flush()
            if epoch in saves:
                save_checkpoint(folder, epoch, net, optimizer, test_acc)
            if epoch in DECAY_EPOCHS:
                for group in optimizer.param_groups:
                    group["lr"] *= a.lr_decay
    return 0


if __name__ == "__main__":
    sys.exit(run_cli(main))
