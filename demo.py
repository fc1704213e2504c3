"""The paper's flat-versus-sharp experiment, end to end, on the 8x8 digits inside scikit-learn.

    ./demo.sh            (creates .venv, installs the requirements, then runs this)
    python demo.py [--out demo_out] [--ranks 2] [--quick]

1. Trains digits_cnn twice with cifar10/main.py, same epochs and learning rate, batch 16 and
   batch 1024, saving a checkpoint every epoch.
2. Under `mpirun -n <ranks>`: the 1D linear interpolation between the two minimisers
   (--dir_type states), a 1D filter-normalised random-direction curve and a 2D filter-normalised
   contour around each, and the PCA trajectory of the small-batch run with its contour.
3. A low-loss curve between the two minimisers (find_curve.py: a one-bend Bezier curve), the loss
   along it and along the straight line (their barrier heights), and the plane of the curve.
4. The Hessian's top eigenvalue, smallest eigenvalue and trace at each minimiser.
5. Every figure as PNG and PDF in one folder, an index.html showing them all with the
   interactive viewers, and a summary table.
Reruns resume: finished training, surfaces and Hessians are skipped.
"""
import argparse
import contextlib
import io
import json
import os
import shutil
import subprocess
import sys
import time

import numpy as np

REPO = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, REPO)

from landscape.plots import viewer  # noqa: E402

import h5_util  # noqa: E402
import plot_1D  # noqa: E402
import plot_2D  # noqa: E402
from cifar10 import main as trainer  # noqa: E402

FILTER = ["--xnorm", "filter", "--xignore", "biasbn"]
FILTER_2D = FILTER + ["--ynorm", "filter", "--yignore", "biasbn"]
RADIUS = 0.5   # the filter-normalised distance at which the loss rise is reported
LEVELS = (0.05, 6.0, 0.3)  # contour levels (vmin, vmax, vlevel), the same for both minimisers


def settings(quick):
    """Experiment sizes; --quick shrinks everything for a smoke test (the figures are then coarse)."""
    if quick:
        return dict(epochs=3, line=9, grid=5, pca_grid=5, trace_samples=3, tol="1e-3", curve_epochs=1, path=9,
                    plane=(6, 5))
    return dict(epochs=60, line=51, grid=31, pca_grid=25, trace_samples=100, tol="1e-4", curve_epochs=20, path=41,
                plane=(36, 29))


def run(cmd, ranks=0, log=None):
    """Run a project command (under mpiexec when ranks > 1); stop the demo if it fails."""
    full = [sys.executable] + cmd
    if ranks > 1:
        mpiexec = os.path.join(os.path.dirname(sys.executable), "mpiexec")
        full = [mpiexec if os.path.exists(mpiexec) else "mpiexec", "-n", str(ranks), "--oversubscribe"] + full
    env = dict(os.environ, OMPI_ALLOW_RUN_AS_ROOT="1", OMPI_ALLOW_RUN_AS_ROOT_CONFIRM="1")
    r = subprocess.run(full, capture_output=True, text=True, env=env, cwd=REPO)
    if log is not None:
        log.write(f"$ {' '.join(full)}\n{r.stdout}{r.stderr}\n")
    if r.returncode != 0:
        sys.exit(f"demo step failed: {' '.join(cmd[:2])}\n{r.stderr.strip()[-2000:]}")
    return r.stdout


def train(out, batch_size, s, log):
    """Train (or reuse) one digits_cnn run; returns its folder."""
    save = os.path.join(out, "trained_nets")
    args = ["--dataset", "digits", "--model", "digits_cnn", "--epochs", str(s["epochs"]), "--lr", "0.05",
            "--weight_decay", "0", "--batch_size", str(batch_size), "--save_epoch", "1", "--save", save]
    folder = os.path.join(save, trainer.name_save_folder(trainer.build_parser().parse_args(args)))
    if not os.path.exists(os.path.join(folder, f"model_{s['epochs']}.t7")):
        print(f"  training digits_cnn, batch {batch_size}, {s['epochs']} epochs")
        run([os.path.join("cifar10", "main.py")] + args, log=log)
    else:
        print(f"  reusing {folder}")
    return folder


def surface(out, name, args, ranks, log):
    """Compute (or resume) a surface into <out>/<name>.h5 with plot_surface.py."""
    surf = os.path.join(out, name + ".h5")
    if os.path.exists(surf):
        done = h5_util.read_surface(surf)
        keys = ["train_loss", "train_acc"] + (["test_loss", "test_acc"] if "--eval_test" in args else [])
        if all(k in done.values for k in keys) and not done.missing(keys).any():
            print(f"  {name}: reusing the finished surface")
            return surf
    args = ["plot_surface.py", "--dataset", "digits", "--model", "digits_cnn", "--batch_size", "2048",
            "--threads", "1", "--surf_file", surf] + args + (["--mpi"] if ranks > 1 else [])
    line = [l for l in run(args, ranks, log).splitlines() if l.startswith(("computed", "nothing"))]
    print(f"  {name}: {line[-1].split(';')[0] if line else 'done'}")
    return surf


def figures(surf, kind, proj=None, dir_file=None):
    """PNG and PDF of every plot of one surface, plus the interactive viewer for 2D ones.

    A stamp file lists what was drawn; while it is newer than the surface, a rerun reuses the figures.
    """
    stamp = surf + ".figures"
    if os.path.exists(stamp) and os.path.getmtime(stamp) >= os.path.getmtime(surf):
        made = open(stamp).read().split("\n")
        if all(os.path.exists(m) for m in made):
            return made
    with contextlib.redirect_stdout(io.StringIO()):  # each plot says "wrote ..."; the demo sums up instead
        made = _figures(surf, kind, proj, dir_file)
    with open(stamp, "w") as f:
        f.write("\n".join(made))
    return made


def _figures(surf, kind, proj, dir_file):
    made = []
    for fmt in ("png", "pdf"):
        if kind == "1d":
            made += plot_1D.plot_1d_loss_err(surf, loss_max=5, fmt=fmt)
        elif proj:
            made += plot_2D.plot_contour_trajectory(surf, dir_file, proj, "train_loss", *LEVELS, fmt=fmt)
            made += plot_2D.plot_trajectory(proj, dir_file, fmt=fmt)
        else:
            made += plot_2D.plot_2d_contour(surf, "train_loss", *LEVELS, fmt=fmt)
    if kind == "2d":
        made.append(viewer.write_html(surf, "train_loss", proj_file=proj or "", dir_file=dir_file or ""))
    return made


def loss_rise(surf_file, radius):
    """Mean of loss(-r) and loss(+r) minus loss(0) on a 1D curve (interpolated on the grid)."""
    surf = h5_util.read_surface(surf_file)
    loss = surf.values["train_loss"]
    at = lambda x: float(np.interp(x, surf.x, loss))
    return 0.5 * (at(-radius) + at(radius)) - at(0.0)


def center_values(surf_file):
    surf = h5_util.read_surface(surf_file)
    i = int(np.argmin(np.abs(surf.x)))
    return {k: float(surf.values[k][i]) for k in ("train_loss", "train_acc", "test_loss", "test_acc")}


CURVE_LEVELS = (0.001, 1.0, 0.05)   # log-scale contour levels of the curve's plane


def bend_height(files):
    """Where the bend sits above the straight line in the plane of the curve, in units of |end 2 - end 1|."""
    import torch
    from landscape.zoo import loader
    names = [n for n, _ in loader.build("digits_cnn").named_parameters()]
    w0, bend, w1 = (torch.cat([loader.load_state_dict(f)[n].flatten() for n in names]).double() for f in files)
    x, d = w1 - w0, bend - w0
    return float((d - (d @ x) / (x @ x) * x).norm() / x.norm())


def connect(out, small, large, s, ranks, log):
    """The curve between the minimisers, the loss along it and along the straight line, its plane."""
    folder = os.path.join(out, "curve_small_large")
    run(["find_curve.py", "--dataset", "digits", "--model", "digits_cnn", "--model_file", small,
         "--model_file2", large, "--epochs", str(s["curve_epochs"]), "--lr", "0.05", "--batch_size", "64",
         "--out", folder], log=log)
    line = surface(out, "path_straight_line", ["--path_files", small, large, f"--x=0:1:{s['path']}",
                   "--bn_recalibrate", "--eval_test"], ranks, log)
    curve = surface(out, "path_curve", ["--curve_file", folder, f"--x=0:1:{s['path']}", "--eval_test"], ranks, log)
    h = bend_height([small, os.path.join(folder, "bend_1.t7"), large])
    nx, ny = s["plane"]
    plane = surface(out, "curve_plane", ["--curve_file", folder, "--curve_plane", f"--x=-0.2:1.2:{nx}",
                    f"--y={-1.5 * h:.4f}:{2.5 * h:.4f}:{ny}"], ranks, log)
    made = []
    with contextlib.redirect_stdout(io.StringIO()):
        for fmt in ("png", "pdf"):
            made += plot_1D.plot_1d_overlay([line, curve], ["straight line", "Bezier curve (1 bend)"],
                                            loss_max=max(0.05, 1.2 * barriers(line)["train"]), fmt=fmt)
            made += plot_2D.plot_2d_contour(plane, "train_loss", *CURVE_LEVELS, log=True, fmt=fmt)
    return {"straight line": barriers(line), "Bezier curve (1 bend)": barriers(curve)}, made


def barriers(surf_file):
    """The barrier heights plot_surface.py stored in a path's surface file."""
    surf = h5_util.read_surface(surf_file)
    return {m: float(surf.attrs[f"{m}_loss_barrier"]) for m in ("train", "test") if f"{m}_loss_barrier" in surf.attrs}


def hessian(out, ckpt, s, log):
    path = ckpt + "_hessian.json"
    if not os.path.exists(path):
        run(["plot_hessian_eigen.py", "--dataset", "digits", "--model", "digits_cnn", "--model_file", ckpt,
             "--at_center", "--batch_size", "2048", "--trace_samples", str(s["trace_samples"]), "--tol", s["tol"]],
            log=log)
    return json.load(open(path))


def write_index(out, made, table_md, elapsed):
    """index.html: every PNG (linking its PDF), then the interactive viewers."""
    rel = lambda p: os.path.relpath(p, out)
    pngs = [p for p in made if p.endswith(".png")]
    views = [p for p in made if p.endswith(".html")]
    cards = "\n".join(
        f'<figure><a href="{rel(p[:-4])}.pdf"><img src="{rel(p)}" alt="{os.path.basename(p)}"></a>'
        f"<figcaption>{os.path.basename(p)[:-4]}</figcaption></figure>" for p in pngs)
    frames = "\n".join(f'<h3>{os.path.basename(v)}</h3><iframe src="{rel(v)}" loading="lazy"></iframe>' for v in views)
    html_table = ""
    for table in table_md.split("\n\n"):    # Markdown tables, one after another
        rows = [r.strip("|").split("|") for r in table.splitlines()[2:]]
        head = table.splitlines()[0].strip("|").split("|")
        html_table += ("<table><tr>" + "".join(f"<th>{h.strip()}</th>" for h in head) + "</tr>" +
                       "".join("<tr>" + "".join(f"<td>{c.strip()}</td>" for c in r) + "</tr>" for r in rows) +
                       "</table><p></p>")
    page = f"""<!doctype html>
<html><head><meta charset="utf-8"><title>loss-landscape demo: flat vs sharp minima on digits</title>
<style>body{{font-family:sans-serif;margin:2em;max-width:1400px}} figure{{display:inline-block;width:31%;margin:0.5%;
vertical-align:top}} img{{width:100%;border:1px solid #ddd}} figcaption{{font-size:11px;word-break:break-all}}
table{{border-collapse:collapse}} td,th{{border:1px solid #ccc;padding:4px 8px;text-align:right}}
iframe{{width:100%;height:660px;border:1px solid #ddd}}</style></head><body>
<h1>Flat versus sharp minima: digits_cnn trained with batch 16 and batch 1024</h1>
<p>Same epochs and learning rate; the demo took {elapsed:.0f} s. Click a figure for its PDF.</p>
{html_table}
<h2>Figures</h2>
{cards}
<h2>Interactive viewers</h2>
{frames}
</body></html>
"""
    path = os.path.join(out, "index.html")
    with open(path, "w") as f:
        f.write(page)
    return path


def main(argv=None):
    p = argparse.ArgumentParser(description="The flat-vs-sharp minima experiment on the digits set.")
    p.add_argument("--out", default=os.path.join(REPO, "demo_out"), help="output folder")
    p.add_argument("--ranks", default=2, type=int, help="MPI ranks for the surfaces (1: no MPI)")
    p.add_argument("--quick", action="store_true", help="tiny sizes, for a smoke test")
    a = p.parse_args(argv)
    s = settings(a.quick)
    t0 = time.time()
    out = os.path.abspath(a.out)
    os.makedirs(out, exist_ok=True)
    log = open(os.path.join(out, "demo.log"), "a")
    print(f"1/5 training (checkpoints in {out}/trained_nets)")
    runs = {"small batch (16)": train(out, 16, s, log), "large batch (1024)": train(out, 1024, s, log)}
    ckpts = {k: os.path.join(v, f"model_{s['epochs']}.t7") for k, v in runs.items()}
    small, large = ckpts["small batch (16)"], ckpts["large batch (1024)"]

    print(f"2/5 surfaces (mpirun -n {a.ranks})")
    made = []
    interp = surface(out, "interpolation_small_to_large", ["--model_file", small, "--model_file2", large,
                     "--dir_type", "states", f"--x=-0.5:1.5:{s['line']}", "--eval_test"], a.ranks, log)
    made += figures(interp, "1d")
    curves, contours = {}, {}
    for (label, ckpt), tag in zip(ckpts.items(), ("small", "large")):
        curves[label] = surface(out, f"random_1d_{tag}", ["--model_file", ckpt, f"--x=-1:1:{s['line']}",
                                *FILTER, "--eval_test"], a.ranks, log)
        made += figures(curves[label], "1d")
        contours[label] = surface(out, f"random_2d_{tag}", ["--model_file", ckpt, f"--x=-1:1:{s['grid']}",
                                  f"--y=-1:1:{s['grid']}", *FILTER_2D], a.ranks, log)
        made += figures(contours[label], "2d")

    print("3/5 PCA trajectory of the small-batch run")
    run(["plot_trajectory.py", "--dataset", "digits", "--model", "digits_cnn", "--model_folder",
         runs["small batch (16)"], "--max_epoch", str(s["epochs"]), "--ignore", "biasbn", "--format", "png"], log=log)
    dir_file = os.path.join(runs["small batch (16)"], "PCA_weights_ignore=biasbn_save_epoch=1", "directions.h5")
    proj = dir_file + "_proj_cos.h5"
    xs, ys = h5_util.read_projection_file(proj)
    lo_x, hi_x = float(xs.min()), float(xs.max())
    lo_y, hi_y = float(ys.min()), float(ys.max())
    pad_x, pad_y = 0.15 * (hi_x - lo_x) + 1e-3, 0.15 * (hi_y - lo_y) + 1e-3
    n = s["pca_grid"]
    pca_surf = surface(out, "pca_trajectory_small", ["--model_file", small, "--dir_file", dir_file,
                       f"--x={lo_x - pad_x:.4f}:{hi_x + pad_x:.4f}:{n}", f"--y={lo_y - pad_y:.4f}:{hi_y + pad_y:.4f}:{n}"],
                       a.ranks, log)
    local_proj = os.path.join(out, "pca_trajectory_small.proj.h5")
    shutil.copy(proj, local_proj)
    made += figures(pca_surf, "2d", proj=local_proj, dir_file=dir_file)

    print("4/5 a low-loss curve between the two minimisers")
    barrier, curve_figures = connect(out, small, large, s, a.ranks, log)
    made += curve_figures

    print("5/5 Hessian at each minimiser")
    hess = {label: hessian(out, ckpt, s, log) for label, ckpt in ckpts.items()}

    header = ["minimiser", "train loss", "train acc %", "test loss", "test acc %",
              f"loss rise at r={RADIUS}", "top Hessian eigenvalue", "Hessian trace (+- s.e.)", "smallest eigenvalue"]
    rows = []
    for label in ckpts:
        c = center_values(curves[label])
        h = hess[label]
        rows.append([label, f"{c['train_loss']:.5f}", f"{c['train_acc']:.2f}", f"{c['test_loss']:.4f}",
                     f"{c['test_acc']:.2f}", f"{loss_rise(curves[label], RADIUS):.4f}", f"{h['max_eig']:.4g}",
                     f"{h['trace']:.4g} +- {h['trace_stderr']:.2g}", f"{h['min_eig']:.3g}"])
    table_md = "| " + " | ".join(header) + " |\n|" + "---|" * len(header) + "\n" + \
        "\n".join("| " + " | ".join(r) + " |" for r in rows)
    table_md += "\n\n| path between the minimisers | train loss barrier | test loss barrier |\n|---|---|---|\n" + \
        "\n".join(f"| {k} | {v['train']:.4f} | {v['test']:.4f} |" for k, v in barrier.items())
    elapsed = time.time() - t0
    index = write_index(out, made, table_md, elapsed)
    with open(os.path.join(out, "summary.md"), "w") as f:
        f.write(table_md + "\n")
    print("\n" + table_md + "\n")
    print(f"{len([m for m in made if m.endswith('.png')])} figures (PNG + PDF) and {len([m for m in made if m.endswith('.html')])} "
          f"viewers in {out}; open {index}")
    print(f"demo wall time: {elapsed:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
