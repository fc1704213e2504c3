"""Curve training (landscape/curves.py) against the plain training step of the same model.

    python bench/bench_curves.py [--rounds 3] [--batch_size 64] [--threads 2]

For digits_mlp and digits_cnn (BatchNorm) on the 1,437 digits, and resnet20 (BatchNorm) on --cifar_images
random CIFAR-shaped images: seconds per epoch of a one-bend
Bezier curve (train_curve, one epoch) and of plain SGD on one model (the same batches, the same
loss, forward + backward + step), alternated, median of --rounds; then the ratio (goal: <= 1.5x).
Prints a Markdown table.
"""
import argparse
import os
import platform
import statistics
import sys
import time

import torch
import torch.nn as nn

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from landscape import curves  # noqa: E402
from landscape.zoo import data as zoo_data  # noqa: E402
from landscape.zoo import loader as zoo_loader  # noqa: E402


def plain_epoch(net, x, y, batch_size, seed):
    opt = torch.optim.SGD(net.parameters(), lr=0.01, momentum=0.9)
    crit = nn.CrossEntropyLoss()
    order = torch.randperm(len(y), generator=torch.Generator().manual_seed(seed))
    net.train()
    t0 = time.perf_counter()
    for s in range(0, len(y), batch_size):
        idx = order[s:s + batch_size]
        loss = crit(net(x[idx]), y[idx])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    return time.perf_counter() - t0


def curve_epoch(net, s1, s2, x, y, batch_size, seed):
    spec = curves.CurveSpec("bezier", 1, 1, 0.01, batch_size, seed)
    t0 = time.perf_counter()
    curves.train_curve(net, s1, s2, x, y, spec)
    return time.perf_counter() - t0


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--batch_size", type=int, default=64)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--cifar_images", type=int, default=512, help="CIFAR-shaped random images for resnet20")
    a = p.parse_args(argv)
    torch.set_num_threads(a.threads)
    data = zoo_data.load_digits()
    print(f"# bench_curves: {time.strftime('%Y-%m-%d %H:%M')}, {platform.processor() or platform.machine()}, "
          f"{os.cpu_count()} cores, {a.threads} torch threads, torch {torch.__version__}; {len(data.train_y)} digits, "
          f"{a.cifar_images} CIFAR-shaped images, "
          f"batch {a.batch_size}, median of {a.rounds}\n")
    print("| model | plain SGD, s/epoch | one-bend Bezier curve, s/epoch | ratio (goal <= 1.5) |")
    print("|---|---|---|---|")
    cifar = (torch.randn(a.cifar_images, 3, 32, 32, generator=torch.Generator().manual_seed(0)),
             torch.randint(0, 10, (a.cifar_images,), generator=torch.Generator().manual_seed(1)))
    for model in ("digits_mlp", "digits_cnn", "resnet20"):
        x, y = cifar if model == "resnet20" else (data.train_x, data.train_y)
        torch.manual_seed(0)
        s1 = zoo_loader.build(model).state_dict()
        s2 = zoo_loader.build(model).state_dict()
        plain, curve = [], []
        for r in range(a.rounds + 1):                   # the first round warms up
            net = zoo_loader.build(model)
            net.load_state_dict(s1)
            p_t = plain_epoch(net, x, y, a.batch_size, r)
            c_t = curve_epoch(zoo_loader.build(model), s1, s2, x, y, a.batch_size, r)
            if r:
                plain.append(p_t)
                curve.append(c_t)
        pm, cm = statistics.median(plain), statistics.median(curve)
        print(f"| {model} | {pm:.4f} | {cm:.4f} | {cm / pm:.2f}x |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
