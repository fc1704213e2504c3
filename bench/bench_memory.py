"""Peak memory per parameter of a surface run, beside the model: default mode (1D and 2D) and
directions regenerated from their seed (--regenerate_directions).

    python bench/bench_memory.py

Each case runs in a fresh process: a 32M-parameter MLP (3 Linear layers of 4000) on 64 samples, a
2x2 grid (2 points for 1D) through landscape.surface on the CPU. The figure is the growth of the
process's peak resident memory (ru_maxrss) during the call, divided by the parameter count: what the
run keeps beside the caller's own model and data. On a CPU the host copies of the directions and the
"device" copies are both in this memory.
"""
import os
import subprocess
import sys

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

CASE = r"""
import resource, sys, torch, torch.nn as nn
sys.path.insert(0, {repo!r})
import landscape
torch.manual_seed(0)
net = nn.Sequential(nn.Linear(4000, 4000), nn.ReLU(), nn.Linear(4000, 4000), nn.ReLU(), nn.Linear(4000, 10))
data = (torch.randn(64, 4000), torch.randint(0, 10, (64,)))
params = sum(p.numel() for p in net.parameters())
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
landscape.surface(net, data, x="-1:1:2", y={y!r}, device="cpu", regenerate={regen}, batch_size=64)
after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
print(params, (after - before) / params)
"""


def main():
    print("| run | parameters | peak memory beside the model, bytes per parameter |")
    print("|---|---|---|")
    for name, y, regen in (("1D, stored directions (default)", None, False), ("2D, stored directions (default)",
                           "-1:1:2", False), ("2D, --regenerate_directions", "-1:1:2", True)):
        out = subprocess.run([sys.executable, "-c", CASE.format(repo=REPO, y=y, regen=regen)], capture_output=True,
                             text=True, check=True).stdout.split()
        print(f"| {name} | {int(out[0]):,} | {float(out[1]):.1f} |")


if __name__ == "__main__":
    main()
