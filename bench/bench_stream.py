"""A memory-mapped dataset larger than the memory budget, streamed through a surface (data_in_memory='no').

    python bench/bench_stream.py --dir /tmp/stream --rows 200000 --dim 4096 --make_only         # 3.28 GB, once
    /usr/bin/time -v python bench/bench_stream.py --dir /tmp/stream --rows 200000 --dim 4096
    python bench/bench_stream.py --dir /tmp/stream --rows 200000 --dim 4096 --check 20000     # equality
    bash bench/bench_stream_memory.sh [--quick]                                                # all three

The data: rows x dim float32 inputs in DIR/x.npy (written once, in 64 MB pieces, deterministic) and
int64 labels in DIR/y.npy, read through `MemmapRows`, a map-style Dataset over np.load(mmap_mode='r')
that fetches a batch of rows with one slice (__getitems__). The model: Linear(dim, 64), ReLU,
Linear(64, 10), seeded. The surface: 1D, --points points, filter-normalised.

Default run: the surface over the whole file, streamed; prints the time, the streaming rate and the
peak RSS (ru_maxrss; `/usr/bin/time -v` reports the same figure as "Maximum resident set size").
--check N: the surface over the first N rows in memory and streamed, and their largest relative
difference (the issue asks for equality on a subset that fits).
--cli_files: the same data through the command line, as a user gives it: DIR/user_data.py returns
(a plain map-style Dataset over the memmap, None) -- no test set -- and the MLP (bench_stream_memory.sh
runs plot_surface.py on it with --data_in_memory no under /usr/bin/time -v).
"""
import argparse
import os
import resource
import sys
import time

import numpy as np
import torch
import torch.nn as nn

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
import landscape  # noqa: E402

PIECE_BYTES = 64 << 20


def make_data(folder, rows, dim):
    """DIR/x.npy (rows, dim) float32 and DIR/y.npy (rows,) int64, unless they exist with this shape."""
    xp, yp = os.path.join(folder, "x.npy"), os.path.join(folder, "y.npy")
    if os.path.exists(xp) and os.path.exists(yp) and np.load(xp, mmap_mode="r").shape == (rows, dim):
        return xp, yp
    os.makedirs(folder, exist_ok=True)
    x = np.lib.format.open_memmap(xp, mode="w+", dtype=np.float32, shape=(rows, dim))
    step = max(1, PIECE_BYTES // (4 * dim))
    for s in range(0, rows, step):
        e = min(rows, s + step)
        x[s:e] = np.random.default_rng(s).standard_normal((e - s, dim), dtype=np.float32)
        x.flush()
    del x
    np.save(yp, np.random.default_rng(rows).integers(0, 10, rows))
    return xp, yp


class MemmapRows(torch.utils.data.Dataset):
    """(x[i], y[i]) from .npy files mapped read-only; a batch of consecutive rows is one slice."""

    def __init__(self, xp, yp, rows=None):
        self.x = np.load(xp, mmap_mode="r")
        self.y = torch.from_numpy(np.load(yp))
        self.n = rows or len(self.y)

    def __len__(self):
        return self.n

    def __getitem__(self, i):
        return torch.from_numpy(np.array(self.x[i])), self.y[i]

    def __getitems__(self, idx):
        lo, hi = idx[0], idx[-1] + 1
        if hi - lo != len(idx):
            return [self[i] for i in idx]
        xb = torch.from_numpy(np.array(self.x[lo:hi]))     # one copy out of the mapping
        return list(zip(xb, self.y[lo:hi]))


USER_CODE = '''"""The issue's user files: a map-style Dataset over np.load(mmap_mode="r") arrays, no test set, and
a matching MLP (written by bench/bench_stream.py --cli_files)."""
import os
import numpy as np
import torch
import torch.nn as nn

HERE = os.path.dirname(os.path.abspath(__file__))


class Rows(torch.utils.data.Dataset):
    def __init__(self):
        self.x = np.load(os.path.join(HERE, "x.npy"), mmap_mode="r")
        self.y = np.load(os.path.join(HERE, "y.npy"), mmap_mode="r")

    def __len__(self):
        return len(self.y)

    def __getitem__(self, i):
        return torch.from_numpy(np.array(self.x[i])), torch.tensor(int(self.y[i]))


def no_test():
    return Rows(), None


def mlp():
    return nn.Sequential(nn.Linear(DIM, 64), nn.ReLU(), nn.Linear(64, 10))
'''


def write_cli_files(folder, dim):
    """DIR/user_data.py (the dataset with no test set and the model) and DIR/mlp.t7; returns the flags of
    plot_surface.py that use them."""
    code = os.path.join(folder, "user_data.py")
    with open(code, "w") as f:
        f.write(USER_CODE.replace("DIM", str(dim)))
    ckpt = os.path.join(folder, "mlp.t7")
    torch.save(model(dim).state_dict(), ckpt)
    return f"--dataset {code}:no_test --model {code}:mlp --model_file {ckpt}"


def model(dim):
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(dim, 64), nn.ReLU(), nn.Linear(64, 10)).eval()


def peak_rss_mb():
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--dir", required=True, help="folder for x.npy and y.npy (written once)")
    p.add_argument("--rows", type=int, default=200000, help="examples (default: 200000)")
    p.add_argument("--dim", type=int, default=4096, help="float32 features per example (default: 4096)")
    p.add_argument("--points", type=int, default=3, help="surface points (default: 3)")
    p.add_argument("--batch_size", type=int, default=1024, help="rows per batch (default: 1024)")
    p.add_argument("--threads", type=int, default=2, help="torch threads (default: 2)")
    p.add_argument("--check", type=int, default=0, help="rows of the subset compared in memory vs streamed")
    p.add_argument("--make_only", action="store_true", help="write the data files and stop (their pages would "
                                                            "count in this process's RSS)")
    p.add_argument("--cli_files", action="store_true", help="also write DIR/user_data.py (a Dataset over the "
                                                            "memmap, no test set; the MLP) and DIR/mlp.t7, and "
                                                            "print the plot_surface.py flags that use them")
    a = p.parse_args(argv)
    torch.set_num_threads(a.threads)
    t0 = time.perf_counter()
    xp, yp = make_data(a.dir, a.rows, a.dim)
    gb = os.path.getsize(xp) / 1e9
    print(f"data: {xp}, {a.rows} x {a.dim} float32 = {gb:.2f} GB (ready in {time.perf_counter() - t0:.1f} s)",
          flush=True)
    if a.cli_files:
        print("cli flags: " + write_cli_files(a.dir, a.dim), flush=True)
    if a.make_only:
        return 0
    net = model(a.dim)
    grid = f"-1:1:{a.points}"
    if a.check:
        data = MemmapRows(xp, yp, a.check)
        kept = landscape.surface(net, data, x=grid, device="cpu", batch_size=a.batch_size, data_in_memory="yes")
        streamed = landscape.surface(net, data, x=grid, device="cpu", batch_size=a.batch_size, data_in_memory="no")
        rel = np.max(np.abs(streamed["train_loss"] - kept["train_loss"]) / np.abs(kept["train_loss"]))
        print(f"subset of {a.check} rows: in memory {kept['train_loss'].tolist()}, streamed "
              f"{streamed['train_loss'].tolist()}; largest relative difference {rel:.2e}; paths "
              f"{kept.attrs['data_in_memory']}/{streamed.attrs['data_in_memory']}")
        return 0
    t0 = time.perf_counter()
    res = landscape.surface(net, MemmapRows(xp, yp), x=grid, device="cpu", batch_size=a.batch_size,
                            data_in_memory="no", progress=True)
    sec = time.perf_counter() - t0
    print(f"streamed {a.points} points x {a.rows} rows ({gb:.2f} GB per point) in {sec:.1f} s: "
          f"{a.points * a.rows / sec:,.0f} examples/s, {a.points * gb / sec:.2f} GB/s; path "
          f"{res.attrs['data_in_memory']}; loss {np.round(res['train_loss'], 6).tolist()}; peak RSS "
          f"{peak_rss_mb():.0f} MB", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
