"""An outside check of any surface file the tool wrote: rebuild the weights, evaluate, compare.

    from oracle import check_surface_file
    report = check_surface_file("s.h5", model_builder=lambda: DigitsMLP(), checkpoints="m.t7",
                                data=(x, y), points=3)

Used by tests/test_cli_combinations.py over a generated matrix of flag and argument combinations.

Nothing of the tool's engine is used: the file is read with h5py, the directions are taken from the
direction file (or, for a regenerated one, drawn again from the recipe its attributes record, with
this module's own implementation of that recipe), the weights at a few grid points are rebuilt by
plain float64 tensor arithmetic, and the model is evaluated by a plain PyTorch loop in eval mode.

What it understands:
- 1D and 2D surfaces (maps (nx,) or (ny, nx), Z[j, i] at (x[i], y[j]));
- --dir_type weights (named_parameters order) and states (state_dict order, BN statistics move,
  integer entries never do, a tensor listed twice moves once, by its first entry);
- stored and regenerated direction files (regenerated: entry i of axis a drawn from
  torch.Generator(device).manual_seed(int.from_bytes(sha256(f"{seed}/{a}/{i}")[:7], "little")),
  normalised against the origin as the reference normalises; --orthogonalize applied afterwards);
- --params subsets: entries whose name does not match the recorded regex must not move (the
  stored direction must be zero there, and the rebuilt weights keep them at the origin);
- target directions (--model_file2/3, model2/model3): the stored direction must be the difference
  of the checkpoints (restricted to the subset), and the recorded sha256 of each checkpoint must be
  that of the file now on disk; marked checkpoints on the grid must hold their own loss;
- --orthogonalize: the two stored directions must be orthogonal and equally long;
- Hessian directions with no normalisation: each must be an eigenvector of the Hessian of the
  recorded loss on the given data (checked with one Hessian-vector product by double backward);
- paths (polychain / bezier through the checkpoints in the `path_files` attribute, or given):
  the subset recorded in `params` moves along the path, the rest stays at the origin (the
  recorded `model_file`, or the first checkpoint);
- BatchNorm: evaluated in eval mode with the running statistics the point has (those of the origin
  for dir_type weights); with the `bn_recalibrate` attribute set, they are recomputed from the
  training data first (BatchNorm layers in train mode, cumulative average, batches of the recorded
  `bn_recalibrate_batch`);
- marked checkpoints (the file's `marked_points`): each must hold that checkpoint's own loss (with
  recalibration: its weights with recalibrated statistics), where the point is the checkpoint
  (states, no BatchNorm statistics, or recalibration);
- the recorded data hash (`data_sha256`) must be the given data's.

It raises AssertionError (one message listing every problem) and otherwise returns a report dict.
"""
import copy
import hashlib
import json
import math
import os
import re

import h5py
import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

MISSING = -1.0


# ----------------------------------------------------------------------------- reading
def _attrs(obj):
    return {k: (v.decode() if isinstance(v, bytes) else v) for k, v in obj.attrs.items()}


def _truthy(v):
    if v is None:
        return False
    if isinstance(v, (bytes, str)):
        return str(v).strip().lower() in ("1", "true", "yes", "on")
    return bool(v)


def read_surface(surf_file, keys):
    with h5py.File(surf_file, "r") as f:
        x = np.asarray(f["xcoordinates"][()], dtype=np.float64).ravel()
        y = np.asarray(f["ycoordinates"][()], dtype=np.float64).ravel() if "ycoordinates" in f else None
        dir_file = f["dir_file"][()] if "dir_file" in f else b""
        dir_file = dir_file.decode() if isinstance(dir_file, bytes) else str(dir_file)
        values = {}
        for k in keys:
            if k in f:
                a = np.asarray(f[k][()], dtype=np.float64)
                values[k] = a.reshape(len(y), len(x)) if y is not None else a.reshape(len(x))
        return x, y, dir_file, values, _attrs(f)


def read_directions(dir_file):
    with h5py.File(dir_file, "r") as f:
        names = [n for n in ("xdirection", "ydirection") if n in f]
        dirs = [[torch.from_numpy(np.asarray(f[n][str(i)][()], dtype=np.float64)) for i in range(len(f[n]))]
                for n in names]
        return dirs, _attrs(f)


def _resolve(path, surf_file):
    """A path recorded in a file: as given, else relative to the surface file's folder."""
    if not path:
        return path
    if os.path.exists(path):
        return path
    alt = os.path.join(os.path.dirname(os.path.abspath(surf_file)), path)
    return alt if os.path.exists(alt) else path


def data_sha256(*tensors):
    """sha256 over each tensor's dtype, shape and bytes, in order (how the files fingerprint their data)."""
    h = hashlib.sha256()
    for t in tensors:
        t = t.detach().cpu().contiguous()
        h.update(f"{t.dtype}{tuple(t.shape)}".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


def file_sha256(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def load_model(model_builder, ckpt):
    """A float64 eval-mode model from a checkpoint path, a state_dict or an nn.Module."""
    if isinstance(ckpt, nn.Module):
        net = copy.deepcopy(ckpt)
    else:
        state = ckpt
        if isinstance(ckpt, (str, os.PathLike)):
            state = torch.load(ckpt, map_location="cpu", weights_only=True)
        if isinstance(state, dict) and isinstance(state.get("state_dict"), dict):
            state = state["state_dict"]
        state = {re.sub(r"^(module\.|_orig_mod\.)+", "", k): v for k, v in state.items()}
        net = model_builder()
        net.load_state_dict(state)
    return net.double().eval()


# ----------------------------------------------------------------------------- spaces
def space(net, dir_type):
    """[(name, tensor)] in the order direction files use; tensors share storage with the model."""
    if dir_type == "weights":
        return [(n, p.data) for n, p in net.named_parameters()]
    return list(net.state_dict(keep_vars=False).items())


def first_occurrence(sp):
    seen, out = set(), []
    for name, t in sp:
        key = (t.data_ptr(), tuple(t.shape), t.dtype) if t.numel() else (name,)
        out.append(key not in seen)
        seen.add(key)
    return out


def moving_mask(sp, params):
    """Entries allowed to move: float, first occurrence of their storage, name matching `params`."""
    pattern = re.compile(params) if params else None
    return [t.is_floating_point() and first and (pattern is None or bool(pattern.search(n)))
            for (n, t), first in zip(sp, first_occurrence(sp))]


def flat(direction):
    return torch.cat([d.reshape(-1).double() for d in direction])


# ----------------------------------------------------------------------------- the regenerated recipe
def _normalize(d, w, norm, ignore):
    if not w.is_floating_point():
        return torch.zeros_like(d)
    if d.dim() <= 1:
        return torch.zeros_like(d) if ignore == "biasbn" else w.clone().to(d.dtype)
    w = w.to(d.dtype)
    if norm == "filter":
        s = w.flatten(1).norm(dim=1) / (d.flatten(1).norm(dim=1) + 1e-10)
        return d * s.view(-1, *([1] * (d.dim() - 1)))
    if norm == "layer":
        return d * (w.norm() / d.norm())
    if norm == "weight":
        return d * w
    if norm == "dfilter":
        return d / (d.flatten(1).norm(dim=1).view(-1, *([1] * (d.dim() - 1))) + 1e-10)
    if norm == "dlayer":
        return d / d.norm()
    if norm == "":
        return d
    raise AssertionError(f"unknown normalisation {norm!r}")


def gram_schmidt(dx, dy):
    x, y = flat(dx), flat(dy)
    a = float(y @ x) / float(x @ x)
    rest = y - a * x
    rest = rest * (x.norm() / rest.norm())
    out, i = [], 0
    for d in dy:
        out.append(rest[i:i + d.numel()].reshape(d.shape))
        i += d.numel()
    return out


def regenerate(attrs, origin32, ndim):
    """The directions a regenerated direction file stands for, drawn again from its recipe."""
    seed = int(attrs.get("spec_seed", attrs.get("seed", 123)))
    device = str(attrs.get("regenerated_device_type", "cpu"))
    same = _truthy(attrs.get("spec_same_dir"))
    mask = moving_mask(origin32, str(attrs.get("spec_params", "") or ""))
    out = []
    for axis in range(ndim):
        a = 0 if same else axis
        norm = str(attrs.get("spec_xnorm" if a == 0 else "spec_ynorm", "") or "")
        ignore = str(attrs.get("spec_xignore" if a == 0 else "spec_yignore", "") or "")
        d_axis = []
        for i, ((name, w), m) in enumerate(zip(origin32, mask)):
            if not m:
                d_axis.append(torch.zeros(w.shape, dtype=torch.float64))
                continue
            s = int.from_bytes(hashlib.sha256(f"{seed}/{a}/{i}".encode()).digest()[:7], "little")
            gen = torch.Generator(device=device).manual_seed(s)
            d = torch.randn(w.shape, generator=gen, device=device, dtype=torch.float32).cpu()
            d_axis.append(_normalize(d, w.float(), norm, ignore).double())
        out.append(d_axis)
    if ndim == 2 and _truthy(attrs.get("spec_orthogonalize")):
        out[1] = gram_schmidt(out[0], out[1])
    return out


# ----------------------------------------------------------------------------- evaluation
def default_loss(name):
    if name in (None, "", "crossentropy"):
        return F.cross_entropy
    if name == "mse":
        return lambda o, t: (F.softmax(o, 1) - F.one_hot(t, o.shape[1]).to(o.dtype)).pow(2).mean()
    raise AssertionError(f"the surface's loss is {name!r}: pass loss_fn")


def _as_input(x):
    return x.double() if torch.is_tensor(x) and x.is_floating_point() else x


def recalibrate_bn(net, x, batch):
    bns = [m for m in net.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.track_running_stats]
    saved = [m.momentum for m in bns]
    for m in bns:
        m.reset_running_stats()
        m.momentum = None
        m.train()                     # only BatchNorm: dropout and the rest stay in eval mode
    with torch.no_grad():
        for s in range(0, len(x), batch):
            net(_as_input(x[s:s + batch]))
    for m, mom in zip(bns, saved):
        m.momentum = mom
    net.eval()


def evaluate(net, data, loss_fn, batch=512):
    """(mean loss, accuracy % or None) of `net` over data, batch means weighted by batch size."""
    x, y = data
    n = len(y)
    total, correct, acc_ok = 0.0, 0, True
    net.eval()
    with torch.no_grad():
        for s in range(0, n, batch):
            out = net(_as_input(x[s:s + batch]))
            out = out.logits if hasattr(out, "logits") else out
            yb = y[s:s + batch]
            total += float(loss_fn(out, yb)) * len(yb)
            if out.dim() == 2 and not yb.is_floating_point():
                correct += int((out.argmax(1) == yb).sum())
            else:
                acc_ok = False
    return total / n, (100.0 * correct / n if acc_ok else None)


def hvp(net, names, vecs, data, loss_fn):
    """H v for the Hessian of the mean loss w.r.t. the named parameters (double backward, float64)."""
    params = dict(net.named_parameters())
    ps = [params[n] for n in names]
    for p in ps:
        p.requires_grad_(True)
    x, y = data
    with torch.enable_grad():
        out = net(_as_input(x))
        out = out.logits if hasattr(out, "logits") else out
        loss = loss_fn(out, y)
        g = torch.autograd.grad(loss, ps, create_graph=True)
        dot = sum((gi * vi).sum() for gi, vi in zip(g, vecs))
        hv = torch.autograd.grad(dot, ps)
    return [h.detach() for h in hv]


# ----------------------------------------------------------------------------- the check
def _grid_indices(x, y, values, points, extra=()):
    """Flat indices of up to `points` computed grid points: the centre, the extreme corners, then spread."""
    nx = len(x)
    coords = [(i, None) for i in range(nx)] if y is None else [(i, j) for j in range(len(y)) for i in range(nx)]
    def pos(c):
        return (x[c[0]],) if c[1] is None else (x[c[0]], y[c[1]])
    order = [int(np.argmin([sum(abs(v) for v in pos(c)) for c in coords])), len(coords) - 1, 0]
    rng = np.random.default_rng(0)
    order += list(rng.permutation(len(coords)))
    out = []
    for k in list(extra) + order:
        if k not in out and len(out) < points + len(extra):
            out.append(k)
    return [(k, coords[k]) for k in out]


def check_surface_file(surf_file, model_builder, checkpoints=None, data=None, loss_fn=None, points=3, rtol=1e-4,
                       atol=1e-6, keys=("train_loss", "train_acc"), dir_file=None, recal_batch=None,
                       check_hessian=True):
    """Check `surf_file` from outside; see the module docstring.

    model_builder: () -> a fresh model of the architecture (a zoo class, a factory).
    checkpoints: the origin (a path, a state_dict or an nn.Module), or a list: [origin, model2, model3]
        for target directions, or the path's checkpoints in order. None: the paths the files record.
    data: (inputs, targets) the surface was computed on (train set). loss_fn: criterion(outputs, targets)
        -> mean loss; None: the recorded loss name (crossentropy or mse).
    points: how many computed grid points to check (besides the marked checkpoints).
    Returns {"checked": [(coords, key, stored, expected)], "problems": [], "mode": ...}.
    """
    assert data is not None, "pass data=(inputs, targets)"
    x, y, recorded_dir, values, sattrs = read_surface(surf_file, keys)
    assert "train_loss" in values, f"{surf_file} has no train_loss map"
    ndim = 1 if y is None else 2
    loss_fn = loss_fn or default_loss(sattrs.get("loss_name"))
    recal = _truthy(sattrs.get("bn_recalibrate"))
    recal_batch = recal_batch or int(sattrs.get("bn_recalibrate_batch", 0) or 0) or len(data[1])
    problems, checked = [], []
    cks = checkpoints if isinstance(checkpoints, (list, tuple)) else ([checkpoints] if checkpoints is not None else [])
    if sattrs.get("data_sha256") and data_sha256(*data) != str(sattrs["data_sha256"]):
        problems.append("the file's data_sha256 is not the given data's: it was computed on other data")

    # ---- what moves the model: a path, or directions
    if sattrs.get("path_type"):
        mode = "path"
        files = list(cks) or [_resolve(p, surf_file) for p in str(sattrs.get("path_files", "")).split()]
        assert len(files) >= 2, "a path surface: pass checkpoints=[...] (the file records no path_files)"
        if sattrs.get("path_sha256") and all(isinstance(f, (str, os.PathLike)) for f in files):
            now = " ".join(file_sha256(f) for f in files)
            if len(str(sattrs["path_sha256"]).split()) == len(files) and now != sattrs["path_sha256"]:
                problems.append("a path checkpoint changed since the surface was made (path_sha256)")
        nets = [load_model(model_builder, f) for f in files]
        dir_type = str(sattrs.get("dir_type", "weights"))
        params = str(sattrs.get("params", "") or "")
        origin = _resolve(str(sattrs.get("model_file", "") or ""), surf_file)
        base = load_model(model_builder, origin) if origin and not isinstance(checkpoints, (list, tuple)) else nets[0]
        sp0 = space(base, dir_type)
        mask = moving_mask(sp0, params)
        spaces = [space(n, dir_type) for n in nets]
        path_type = str(sattrs["path_type"])

        def weights_at(coord):
            t = float(coord[0])
            n = len(nets) - 1
            if path_type == "bezier":
                c = [math.comb(n, i) * t ** i * (1 - t) ** (n - i) for i in range(n + 1)]
            else:
                seg = min(int(math.floor(t * n)), n - 1)
                u = t * n - seg
                c = [0.0] * (n + 1)
                c[seg], c[seg + 1] = 1.0 - u, u
            return [sum(ci * s[k][1].double() for ci, s in zip(c, spaces)) if m else None
                    for k, m in enumerate(mask)]
        by_label = {f"checkpoint {i + 1}": nt for i, nt in enumerate(nets)}
        marked = [(p["label"], p["x"], p.get("y"), by_label[p["label"]])
                  for p in json.loads(sattrs.get("marked_points") or "[]") if p["label"] in by_label]
        if params and any(label != "checkpoint 1" for label, *_ in marked):
            problems.append("a path moving only a --params subset marks a checkpoint other than the first")
    else:
        mode = "directions"
        dfile = _resolve(dir_file or recorded_dir, surf_file)
        assert dfile and os.path.exists(dfile), f"direction file {dfile!r} of {surf_file} not found"
        stored, dattrs = read_directions(dfile)
        dir_type = str(dattrs.get("spec_dir_type", dattrs.get("dir_type", sattrs.get("dir_type", "weights"))))
        params = str(dattrs.get("spec_params", "") or "")
        if sattrs.get("params") and params != str(sattrs["params"]):
            problems.append(f"the surface records params={sattrs['params']!r}, its direction file {params!r}")
        origin = cks[0] if cks else _resolve(str(sattrs.get("model_file", "")), surf_file)
        assert origin is not None and origin != "", "pass checkpoints=origin (the file records no model_file)"
        base = load_model(model_builder, origin)
        sp0 = space(base, dir_type)
        mask = moving_mask(sp0, params)
        if _truthy(dattrs.get("regenerated")):
            origin32 = space(load_model(model_builder, origin).float(), dir_type)
            dirs = regenerate(dattrs, origin32, ndim)
        else:
            dirs = stored[:ndim]
            if len(dirs) < ndim:
                problems.append(f"the direction file holds {len(dirs)} direction(s), the surface is {ndim}D")
        for a, d in enumerate(dirs):
            if len(d) != len(sp0):
                problems.append(f"direction {a} has {len(d)} entries, the {dir_type} space {len(sp0)}")
                continue
            for (name, w), di, m in zip(sp0, d, mask):
                if tuple(di.shape) != tuple(w.shape) and not (w.dim() == 0 and di.numel() == 1):
                    problems.append(f"direction {a}, entry {name}: shape {tuple(di.shape)} vs {tuple(w.shape)}")
                elif not m and float(di.abs().sum()) != 0:
                    problems.append(f"direction {a} moves entry {name!r}, outside the subset params={params!r}"
                                    if params else f"direction {a} moves entry {name!r}, which never moves")
        kinds = [str(dattrs.get("spec_xdir", "random")), str(dattrs.get("spec_ydir", "random"))][:ndim]
        others = {}
        for a, (flag, kind) in enumerate(zip(("model_file2", "model_file3"), kinds)):
            if kind != "target":
                continue
            ck = cks[a + 1] if len(cks) > a + 1 else _resolve(str(dattrs.get(flag, "")), surf_file)
            if not ck:
                continue
            if isinstance(ck, (str, os.PathLike)) and sattrs.get(flag + "_sha256"):
                if file_sha256(ck) != sattrs[flag + "_sha256"]:
                    problems.append(f"--{flag} '{ck}' is not the checkpoint the surface was made with "
                                    f"({flag}_sha256 differs)")
            other = load_model(model_builder, ck)
            others[flag] = other
            want = [(w2.double() - w1.double()) if m else torch.zeros(w1.shape, dtype=torch.float64)
                    for (_, w1), (_, w2), m in zip(sp0, space(other, dir_type), mask)]
            ortho_y = a == 1 and _truthy(dattrs.get("spec_orthogonalize"))
            if not ortho_y and len(dirs) > a and len(dirs[a]) == len(want):
                err = float((flat(dirs[a]) - flat(want)).norm()) / max(float(flat(want).norm()), 1e-30)
                if err > 1e-5:
                    problems.append(f"the {'xy'[a]} direction is not {flag} - model_file (relative error {err:.3g})")
        if ndim == 2 and _truthy(dattrs.get("spec_orthogonalize")) and len(dirs) == 2:
            fx, fy = flat(dirs[0]), flat(dirs[1])
            cos = float(fx @ fy) / max(float(fx.norm() * fy.norm()), 1e-30)
            if abs(cos) > 1e-5 or abs(float(fy.norm()) / float(fx.norm()) - 1) > 1e-5:
                problems.append(f"--orthogonalize is recorded, but the directions have cosine {cos:.3g} and "
                                f"|y|/|x| = {float(fy.norm()) / float(fx.norm()):.6g}")
        if check_hessian:
            param_names = {n for n, _ in base.named_parameters()}
            for a, kind in enumerate(kinds):
                norm = str(dattrs.get("spec_xnorm" if a == 0 else "spec_ynorm", "") or "")
                if kind != "hessian" or norm or len(dirs) <= a:
                    continue
                moving = [(n, di) for (n, _), di in zip(sp0, dirs[a]) if float(di.abs().sum()) != 0]
                if any(n not in param_names for n, _ in moving):
                    problems.append(f"the {'xy'[a]} Hessian direction moves entries that are not parameters")
                    continue
                names, vecs = [n for n, _ in moving], [di for _, di in moving]
                net = load_model(model_builder, origin)
                hv = hvp(net, names, vecs, data, loss_fn)
                v, h = flat(vecs), flat(hv)
                lam = float(v @ h) / float(v @ v)
                res = float((h - lam * v).norm()) / max(abs(lam) * float(v.norm()), 1e-30)
                if res > 1e-2:
                    problems.append(f"the {'xy'[a]} direction is not an eigenvector of the Hessian of this loss on "
                                    f"this data (relative residual {res:.3g}, Rayleigh quotient {lam:.4g})")

        def weights_at(coord):
            out = []
            for k, ((_, w), m) in enumerate(zip(sp0, mask)):
                if not m:
                    out.append(None)
                    continue
                v = w.double().clone()
                for step, d in zip(coord, dirs):
                    v = v + float(step) * d[k].reshape(w.shape).double()
                out.append(v)
            return out
        marked = []
        for p in json.loads(sattrs.get("marked_points") or dattrs.get("marked_points") or "[]"):
            if p["label"] == "model_file":
                marked.append((p["label"], p["x"], p.get("y"), base))
            elif p["label"] in others:
                marked.append((p["label"], p["x"], p.get("y"), others[p["label"]]))

    # ---- the points to check: a few grid points, and every marked checkpoint that is on the grid
    on_grid = []
    own = {}
    for label, mx, my, net in marked:
        i = np.flatnonzero(np.isclose(x, mx, rtol=0, atol=1e-9))
        j = [None] if y is None else np.flatnonzero(np.isclose(y, my if my is not None else 0.0, rtol=0, atol=1e-9))
        if len(i) and len(j):
            k = int(i[0]) if y is None else int(j[0]) * len(x) + int(i[0])
            on_grid.append(k)
            own[k] = (label, net)
    has_stats = any(b.is_floating_point() for b in base.buffers())
    picks = _grid_indices(x, y, values, points, extra=on_grid)

    def stored_at(key, c):
        return float(values[key][c[0]] if c[1] is None else values[key][c[1], c[0]])

    for k, c in picks:
        coord = (x[c[0]],) if c[1] is None else (x[c[0]], y[c[1]])
        if stored_at("train_loss", c) == MISSING:
            continue
        net = copy.deepcopy(base)
        sp = space(net, dir_type)
        firsts = first_occurrence(sp)
        with torch.no_grad():
            for (name, t), v, first in zip(sp, weights_at(coord), firsts):
                if v is not None and first:
                    t.copy_(v.reshape(t.shape).to(t.dtype))
        if recal:
            recalibrate_bn(net, data[0], recal_batch)
        loss, acc = evaluate(net, data, loss_fn)
        for key, want in (("train_loss", loss), ("train_acc", acc)):
            if key not in values or want is None:
                continue
            got = stored_at(key, c)
            tol = (rtol * abs(want) + atol) if key == "train_loss" else 100.0 * 2 / len(data[1]) + 1e-9
            ok = (np.isnan(got) and np.isnan(want)) or abs(got - want) <= tol
            checked.append((tuple(float(v) for v in coord), key, got, want))
            if not ok:
                problems.append(f"{key} at {tuple(round(float(v), 6) for v in coord)}: the file holds {got:.8g}, "
                                f"rebuilding the weights gives {want:.8g}")
        if k in own and (dir_type == "states" or not has_stats or recal):
            label, ck_net = own[k]
            ck_net = copy.deepcopy(ck_net)
            if recal:   # the checkpoint as the run defines it: its weights, statistics recomputed
                recalibrate_bn(ck_net, data[0], recal_batch)
            want = evaluate(ck_net, data, loss_fn)[0]
            got = stored_at("train_loss", c)
            tol_own = rtol * abs(want) + atol
            if not abs(got - want) <= tol_own:
                problems.append(f"{label} is marked at {tuple(round(float(v), 6) for v in coord)}, but the file holds "
                                f"{got:.8g} there and {label}'s own loss is {want:.8g}")
    if problems:
        raise AssertionError(f"{surf_file} ({mode}): " + "; ".join(problems))
    return {"mode": mode, "checked": checked, "problems": problems}
