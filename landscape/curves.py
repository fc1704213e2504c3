"""Low-loss curves between two minima (mode connectivity; Garipov et al. 2018, Draxler et al. 2018).

A curve phi(t), t in [0, 1], runs from the end point w_0 (t = 0) to w_{N+1} (t = 1) through N
trainable bends: a quadratic Bezier curve (one bend, its control point) or, more generally, the
Bezier curve of the N + 2 points, or the polygonal chain through them (bend i at t = i / (N + 1)).
`phi(t) = sum_i c_i(t) w_i` with the coefficients of `directions.path_coefficients`, the same ones the
path evaluation uses, so a found curve is evaluated by `--path_files end1 bend_1 .. bend_N end2
--path_type <kind>` (or `--curve_file`) exactly as it was trained.

Training (`train_curve`): the bends start on the straight line between the ends (evenly spaced),
so zero steps give the straight line; each step draws t ~ U(0, 1), evaluates the model with the
weights phi(t) on a batch, and updates only the bends by SGD (momentum, weight decay) on the loss:
d loss / d w_i = c_i(t) d loss / d phi. The ends never move. Only the parameters lie on the
curve; BatchNorm layers use the batch's statistics while training (train mode) and get their
running statistics recomputed at each evaluated t (`--bn_recalibrate`).

A run is resumable: after every epoch the bends, the optimizer's state and the epoch are written
atomically to the state file, with the settings and the ends' hashes; a rerun with the same ones
continues from there and gives the same bends as an uninterrupted run (each epoch's batches and
t draw from a generator seeded by (seed, epoch)).
"""
from __future__ import annotations

import os
from dataclasses import asdict, dataclass
from typing import Callable, Optional, Sequence

import torch
import torch.nn as nn

from landscape.directions import path_coefficients
from landscape.errors import LandscapeError
from landscape.io import provenance
from landscape.spec import SEED_MAX

CURVE_KINDS = ("bezier", "polychain")
STATE_VERSION = 1


@dataclass(frozen=True)
class CurveSpec:
    """How a curve is trained: its kind and bends, and the SGD settings."""
    kind: str = "bezier"
    bends: int = 1
    epochs: int = 10
    lr: float = 0.05
    batch_size: int = 128
    seed: int = 0
    momentum: float = 0.9
    weight_decay: float = 0.0

    def check(self, front: str = "cli") -> "CurveSpec":
        flag = (lambda n: f"--{n}") if front == "cli" else (lambda n: n)
        names = {"kind": "curve", "bends": "num_bends"} if front == "cli" else {}
        name = lambda k: flag(names.get(k, k))
        if self.kind not in CURVE_KINDS:
            raise LandscapeError(f"{name('kind')} '{self.kind}' must be one of {', '.join(CURVE_KINDS)}")
        whole = lambda k, v, low: isinstance(v, int) and not isinstance(v, bool) and v >= low
        if not whole("bends", self.bends, 1):
            raise LandscapeError(f"{name('bends')} must be a whole number >= 1 (got {self.bends!r}): a curve "
                                 "with no bend is the straight line (--dir_type weights interpolation)")
        if not whole("epochs", self.epochs, 0):
            raise LandscapeError(f"{name('epochs')} must be a whole number >= 0 (got {self.epochs!r})")
        if not whole("batch_size", self.batch_size, 1):
            raise LandscapeError(f"{name('batch_size')} must be a whole number >= 1 (got {self.batch_size!r})")
        if not whole("seed", self.seed, 0) or self.seed >= SEED_MAX:
            raise LandscapeError(f"{name('seed')} must be a whole number in [0, 2**63) (got {self.seed!r})")
        for key in ("lr", "momentum", "weight_decay"):
            v = getattr(self, key)
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not v == v or v < 0 or v == float("inf") \
                    or (key == "lr" and v == 0):
                raise LandscapeError(f"{name(key)} must be a finite number {'> 0' if key == 'lr' else '>= 0'} "
                                     f"(got {v!r})")
        return self


def curve_entries(net: nn.Module) -> list[str]:
    """The names of the entries that lie on the curve: the model's floating-point parameters."""
    return [n for n, p in net.named_parameters() if p.is_floating_point()]


def end_points(net: nn.Module, state1: dict, state2: dict) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
    """The two ends' parameters (in `curve_entries` order), checked to fit `net`'s architecture."""
    names = curve_entries(net)
    shapes = {n: tuple(p.shape) for n, p in net.named_parameters()}
    ends = []
    for which, state in (("first", state1), ("second", state2)):
        missing = [n for n in names if n not in state]
        wrong = [n for n in names if n in state and tuple(state[n].shape) != shapes[n]]
        if missing or wrong:
            bad = (missing or wrong)[0]
            raise LandscapeError(f"the {which} end point does not fit the model: entry '{bad}' is "
                                 f"{'missing' if missing else 'of another shape'} (checkpoints of different "
                                 "architectures?)")
        ends.append([state[n].detach().float().clone() for n in names])
    return ends[0], ends[1]


def initial_bends(w0: Sequence[torch.Tensor], w1: Sequence[torch.Tensor], bends: int) -> list[list[torch.Tensor]]:
    """Bends evenly spaced on the straight line: bend i at w0 + i / (bends + 1) (w1 - w0)."""
    return [[a + (i / (bends + 1)) * (b - a) for a, b in zip(w0, w1)] for i in range(1, bends + 1)]


@torch.no_grad()
def set_curve_point(params: Sequence[torch.Tensor], kind: str, points: Sequence[Sequence[torch.Tensor]],
                    t: float) -> list[float]:
    """Write phi(t) into `params` in place (foreach kernels, no autograd graph); returns the coefficients."""
    c = path_coefficients(kind, len(points), t)
    first = True
    for ci, p in zip(c, points):
        if ci == 0:
            continue
        if first:
            torch._foreach_copy_(params, p)
            torch._foreach_mul_(params, ci)
            first = False
        else:
            torch._foreach_add_(params, p, alpha=ci)
    return c


def ends_sha256(state1: dict, state2: dict) -> str:
    return provenance.tensors_sha256(state1, state2)


@dataclass
class CurveResult:
    """bends: one state_dict per bend (the first end's, with the curve's parameters); epochs_done;
    losses: the mean training loss of each epoch run in this call."""
    bends: list
    epochs_done: int
    losses: list


def train_curve(net: nn.Module, state1: dict, state2: dict, x: torch.Tensor, y: torch.Tensor, spec: CurveSpec,
                criterion: Optional[Callable[[torch.Tensor, torch.Tensor], torch.Tensor]] = None,
                device: torch.device | str = "cpu", state_file: Optional[str] = None,
                log: Optional[Callable[[str], None]] = None, record: Optional[dict] = None) -> CurveResult:
    """Train the bends of the curve from state1 to state2 on (x, y); see the module docstring.
    `net` is used as the architecture (its own weights are not read); state_file: resume from / save to
    it after every epoch (atomically); record: extra settings the state file must match on resume."""
    spec.check("api")
    state1 = {k: v.detach().clone().cpu() for k, v in state1.items()}   # the bends' other entries, as given
    criterion = criterion or nn.CrossEntropyLoss()
    device = torch.device(device)
    net = net.to(device)
    names = curve_entries(net)
    w0, w1 = end_points(net, state1, state2)
    w0, w1 = [t.to(device) for t in w0], [t.to(device) for t in w1]
    bends = [[t.clone() for t in b] for b in initial_bends(w0, w1, spec.bends)]
    flat = [t for b in bends for t in b]
    opt = torch.optim.SGD(flat, lr=spec.lr, momentum=spec.momentum, weight_decay=spec.weight_decay)
    key = {"spec": settings_key(spec), "ends_sha256": ends_sha256(state1, state2), "entries": names,
           "record": record or {}, "version": STATE_VERSION}
    start = 0
    if state_file and os.path.exists(state_file):
        try:
            saved = torch.load(state_file, map_location=device, weights_only=True)
        except Exception as e:  # a half-written file is never left (atomic writes): this is another file
            raise LandscapeError(f"curve state file '{state_file}' cannot be read ({type(e).__name__}); "
                                 "remove it to start again") from None
        saved_key = saved.get("key")
        if isinstance(saved_key, dict) and isinstance(saved_key.get("spec"), dict):
            saved_key["spec"].pop("epochs", None)     # (state files of 0.x recorded it: more epochs extend a curve)
        if saved_key != key:
            raise LandscapeError(f"curve state file '{state_file}' was written for {key_difference(saved_key, key)}; "
                                 "use another output folder (or remove it to start again)")
        if int(saved["epoch"]) > spec.epochs:
            raise LandscapeError(f"curve state file '{state_file}' holds {int(saved['epoch'])} epochs already: "
                                 f"ask for at least as many (--epochs), or use another output folder")
        with torch.no_grad():
            for t, s in zip(flat, saved["bends"]):
                t.copy_(s)
        opt.load_state_dict(saved["optimizer"])
        start = int(saved["epoch"])
    elif state_file:   # recorded before the first epoch, so that even a curve of 0 epochs keeps its folder's settings
        save_state(state_file, key, 0, flat, opt)
    if start and log:
        log(f"resuming from {state_file}: {start} of {spec.epochs} epochs done")
    params = dict(net.named_parameters())
    params = [params[name] for name in names]
    for p in params:
        p.requires_grad_(True)
    n = len(y)
    losses = []
    net.train()
    for epoch in range(start, spec.epochs):
        gen = torch.Generator().manual_seed((spec.seed * 1_000_003 + epoch) % SEED_MAX)
        order = torch.randperm(n, generator=gen)
        ts = torch.rand(-(-n // spec.batch_size), generator=gen, dtype=torch.float64)
        total, count = 0.0, 0
        for k, start_i in enumerate(range(0, n, spec.batch_size)):
            idx = order[start_i:start_i + spec.batch_size]
            xb, yb = x[idx].to(device), y[idx].to(device)
            c = set_curve_point(params, spec.kind, [w0, *bends, w1], float(ts[k]))
            for p in params:
                p.grad = None
            loss = criterion(net(xb), yb)
            if not torch.isfinite(loss):
                raise LandscapeError(f"the curve's training loss is {float(loss)} at epoch {epoch + 1} "
                                     f"(t = {float(ts[k]):.3f}): lower --lr")
            loss.backward()
            grads = [p.grad if p.grad is not None else torch.zeros_like(p) for p in params]
            for ci, bend in zip(c[1:-1], bends):      # d loss / d bend_i = c_i(t) d loss / d phi
                for b, g in zip(bend, torch._foreach_mul(grads, ci)):
                    b.grad = g
            opt.step()
            total += float(loss.detach()) * len(idx)
            count += len(idx)
        losses.append(total / max(count, 1))
        if log:
            log(f"curve epoch {epoch + 1}/{spec.epochs}: mean training loss along the curve {losses[-1]:.5g}")
        if state_file:
            save_state(state_file, key, epoch + 1, flat, opt)
    net.eval()
    out = []
    for b in bends:
        state = {k: v.clone() for k, v in state1.items()}
        for name, t in zip(names, b):
            state[name] = t.detach().cpu().to(state1[name].dtype).clone()
        out.append(state)
    return CurveResult(out, max(start, spec.epochs), losses)


def settings_key(spec: CurveSpec) -> dict:
    """The settings a state file must match to be resumed: all but the number of epochs (each epoch's
    order and t are seeded by the epoch and the learning rate is constant, so training on extends a curve
    exactly as one longer run would have trained it)."""
    return {k: v for k, v in asdict(spec).items() if k != "epochs"}


def save_state(state_file: str, key: dict, epoch: int, flat: Sequence[torch.Tensor], opt: torch.optim.Optimizer) -> None:
    """The bends, the optimizer and the settings' key after `epoch` epochs, written atomically."""
    tmp = f"{state_file}.tmp{os.getpid()}"
    torch.save({"key": key, "epoch": epoch, "bends": [t.detach().cpu() for t in flat],
                "optimizer": opt.state_dict()}, tmp)
    os.replace(tmp, state_file)


def key_difference(saved: Optional[dict], key: dict) -> str:
    """What differs between a state file's key and this run's, in words (for the refusal)."""
    if not isinstance(saved, dict) or saved.get("version") != key["version"]:
        return "another version of find_curve"
    words = []
    rec_old, rec_new = saved.get("record") or {}, key["record"]
    if saved.get("ends_sha256") != key["ends_sha256"] or rec_old.get("end_sha256") != rec_new.get("end_sha256"):
        words.append("other end points")
    if saved.get("entries") != key["entries"]:
        words.append("another model")
    old, new = saved.get("spec") or {}, key["spec"]
    words += [f"{k} {old.get(k)!r} (now {new[k]!r})" for k in new if old.get(k) != new[k]]
    words += [f"{k} {rec_old.get(k)!r} (now {rec_new.get(k)!r})" for k in sorted(set(rec_old) | set(rec_new))
              if k != "end_sha256" and rec_old.get(k) != rec_new.get(k)]
    return ", ".join(words) or "other settings"


BARRIER_MAPS = ("train_loss", "test_loss")


def barrier(losses: Sequence[float]) -> float:
    """The barrier height of a path's losses (t from 0 to 1): max along it minus the mean of the ends."""
    v = [float(a) for a in losses]
    return max(v) - 0.5 * (v[0] + v[-1])


def path_barrier_attrs(x: Sequence[float], values: dict) -> dict[str, float]:
    """{'<map>_barrier': height} for the loss maps of a path's 1D surface computed at t = 0 and t = 1
    (none for a t range that misses an end, where the height would not be measured from the minima)."""
    x = [float(v) for v in x]
    if len(x) < 2 or min(x) != 0.0 or max(x) != 1.0 or x != sorted(x):
        return {}
    out = {}
    for key in BARRIER_MAPS:
        if key in values:
            v = [float(a) for a in list(values[key])]
            if len(v) == len(x) and all(a == a for a in v):
                out[f"{key}_barrier"] = barrier(v)
    return out


def path_barriers(surf_file: str) -> list[str]:
    """One line per loss map of a path's 1D surface file (one recording path_type) computed at t = 0 and
    t = 1: its barrier height, computed from the map (the value plot_surface.py stores once it is complete)."""
    import h5py
    import numpy as np
    lines = []
    with h5py.File(surf_file, "r") as f:
        if "path_type" not in f.attrs or "xcoordinates" not in f or "ycoordinates" in f:
            return lines
        values = {k: np.asarray(f[k][:], dtype=np.float64).ravel() for k in BARRIER_MAPS if k in f}
        stored = path_barrier_attrs(f["xcoordinates"][:], values)
        for key, v in values.items():
            if f"{key}_barrier" in stored:
                at_end = int(np.argmax(v)) in (0, len(v) - 1)
                lines.append(f"{key} barrier along the path: {stored[f'{key}_barrier']:.5g} (max {v.max():.5g}; "
                             f"ends {v[0]:.5g}, {v[-1]:.5g})"
                             + ("; the maximum is an end point: the loss has no hump between the ends, the height "
                                "is half the ends' difference" if at_end else ""))
    return lines


# ----------------------------------------------------------------------------- the plane of a curve
def has_batchnorm(checkpoint: str) -> bool:
    """Does the checkpoint hold BatchNorm running statistics?"""
    from landscape.zoo import loader
    try:
        return any(k.endswith("running_mean") for k in loader.load_state_dict(checkpoint))
    except Exception:       # an unreadable checkpoint is named where it is loaded
        return False


def plane_overlay(net: nn.Module, files: Sequence[str], kind: str, dir_file: str, bend: int) -> dict[str, str]:
    """Where the curve's control points (end 1, bends, end 2) sit in the plane of the direction file
    (x = end 2 - end 1, y orthogonal to it; both over the model's parameters, in net.parameters() order):
    the surface attribute 'curve_plane', JSON {"kind", "bend", "points": [[x, y], ...], "out_of_plane":
    [distance from the plane / |x|, ...]}. A bend other than the plane's lies off it; its projection is kept."""
    import json
    from landscape.io import h5
    from landscape.zoo import loader
    names = [n for n, _ in net.named_parameters()]
    dirs = h5.read_direction_file(dir_file)
    if len(dirs) != 2 or len(dirs[0]) != len(names):
        raise LandscapeError(f"direction file '{dir_file}' does not hold the plane of the curve's parameters")
    X, Y = (torch.cat([d.flatten() for d in group]).double() for group in dirs)
    states = [loader.load_state_dict(f) for f in files]
    flat = lambda st: torch.cat([st[n].flatten() for n in names]).double()
    w0, xx, yy = flat(states[0]), float(X @ X), float(Y @ Y)
    points, off = [], []
    for st in states:
        d = flat(st) - w0
        cx, cy = float(d @ X) / xx, float(d @ Y) / yy
        points.append([cx, cy])
        off.append(float((d - cx * X - cy * Y).norm()) / xx ** 0.5)
    return {"curve_plane": json.dumps({"kind": kind, "bend": bend, "points": points, "out_of_plane": off})}


def plane_curve(overlay: dict, num: int = 201) -> tuple[list[float], list[float]]:
    """The curve's (projected) coordinates at `num` values of t, from its control points' coordinates:
    phi(t) - w_0 = sum_i c_i(t) (w_i - w_0), so the projection is the same sum of the points' projections."""
    pts = overlay["points"]
    xs, ys = [], []
    for k in range(num):
        c = path_coefficients(overlay["kind"], len(pts), k / (num - 1))
        xs.append(sum(ci * p[0] for ci, p in zip(c, pts)))
        ys.append(sum(ci * p[1] for ci, p in zip(c, pts)))
    return xs, ys


# ----------------------------------------------------------------------------- the curve file
CURVE_FILE = "curve.json"


def write_curve_file(folder: str, record: dict) -> str:
    """Write <folder>/curve.json atomically; returns its path."""
    import json
    path = os.path.join(folder, CURVE_FILE)
    tmp = f"{path}.tmp{os.getpid()}"
    with open(tmp, "w") as f:
        json.dump(record, f, indent=1)
    os.replace(tmp, path)
    return path


def read_curve_file(path: str) -> tuple[list[str], str, dict]:
    """(checkpoints end1, bend_1 .. bend_N, end2; the curve kind; the record) of a curve file, each
    file checked against the hash the curve file recorded (an end point that changed is refused)."""
    import json
    if os.path.isdir(path):
        path = os.path.join(path, CURVE_FILE)
    try:
        with open(path) as f:
            rec = json.load(f)
        ends, bends, kind = rec["end_files"], rec["bend_files"], rec["kind"]
        hashes = rec["end_sha256"] + rec["bend_sha256"]
    except FileNotFoundError:
        raise LandscapeError(f"curve file '{path}' does not exist") from None
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise LandscapeError(f"'{path}' is not a curve file written by find_curve.py ({type(e).__name__}: {e})") \
            from None
    if kind not in CURVE_KINDS or len(ends) != 2 or not bends:
        raise LandscapeError(f"'{path}' is not a curve file written by find_curve.py (kind {kind!r}, "
                             f"{len(ends)} end points, {len(bends)} bends)")
    base = os.path.dirname(os.path.abspath(path))
    files = [ends[0], *[os.path.join(base, b) for b in bends], ends[1]]
    for f, want, what in zip([ends[0], ends[1], *files[1:-1]], hashes,
                             ["first end point", "second end point"] + [f"bend {i + 1}" for i in range(len(bends))]):
        if not os.path.exists(f):
            raise LandscapeError(f"curve file '{path}': its {what} '{f}' does not exist")
        if provenance.file_sha256(f) != want:
            raise LandscapeError(f"curve file '{path}': its {what} '{f}' changed since the curve was trained "
                                 "(its sha256 differs); train the curve again")
    return files, kind, rec
