"""PCA directions of a training trajectory, and projections of checkpoints onto a plane.

The trajectory matrix D has one row per checkpoint: d_e = w_e - w_final (flattened, float
entries of the direction space; `ignore=biasbn` zeroes entries of dimension <= 1). Its first two
principal components (of the mean-centred rows, as scikit-learn's PCA computes them) become a
direction file with the reference's layout plus `explained_variance_ratio_`, `singular_values_`
and `explained_variance_`.

Streaming, so 300 checkpoints of an 11M-parameter model (13 GB as one matrix) never sit in memory:
1. each checkpoint's row is appended to a float32 scratch file on disk (one model in memory);
2. the centred Gram matrix G = C D D^T C (n x n, C = I - 11^T/n) is accumulated over column
   blocks of D;
3. G = U diag(s^2) U^T gives the singular values s and left singular vectors U of the centred D;
   the principal directions are v_k = D^T u_k / s_k (u_k is orthogonal to 1, so centring D again
   changes nothing), accumulated over the same column blocks.
This is the SVD that PCA computes, so the directions are exactly scikit-learn's (up to rounding;
signs follow its convention: the entry of largest magnitude is positive).
Peak memory: the n x n Gram matrix, one model, and one column block of BLOCK_BYTES.
"""
from __future__ import annotations

import hashlib
import os
import sys
import tempfile
from typing import TYPE_CHECKING, Callable, Iterable, Iterator, Optional, Sequence, Union

import numpy as np
import torch

from landscape import directions as dirs
from landscape.errors import UserError
from landscape.io import h5
from landscape.zoo import loader as zoo_loader

if TYPE_CHECKING:
    import numpy.typing as npt
    import torch.nn as nn

BLOCK_BYTES = 64 << 20


# ----------------------------------------------------------------------------- vectors
def flat_space(space: dirs.Space, ignore: str = "", mask: Optional[Sequence[bool]] = None) -> torch.Tensor:
    """The float entries of a direction space (those in `mask`, if given) as one float64 vector;
    biasbn zeroes entries of dim <= 1."""
    parts = []
    for k, (_, t) in enumerate(space):
        if not t.is_floating_point() or (mask is not None and not mask[k]):
            continue
        v = t.detach().double().reshape(-1)
        parts.append(torch.zeros_like(v) if (ignore == "biasbn" and t.dim() <= 1) else v)
    return torch.cat(parts)


def unflatten(vec: Union[np.ndarray, torch.Tensor], space: dirs.Space,
              mask: Optional[Sequence[bool]] = None) -> dirs.Direction:
    """A flat vector over the (masked) float entries -> a direction (one tensor per entry; zeros elsewhere)."""
    out, i = [], 0
    for k, (_, t) in enumerate(space):
        if t.is_floating_point() and (mask is None or mask[k]):
            out.append(torch.as_tensor(vec[i:i + t.numel()], dtype=torch.float32).reshape(t.shape).clone())
            i += t.numel()
        else:
            out.append(torch.zeros(t.shape))
    assert i == len(vec), "vector length does not match the direction space"
    return out


def direction_vector(direction: Sequence[Union[torch.Tensor, np.ndarray]], space: dirs.Space,
                     mask: Optional[Sequence[bool]] = None) -> torch.Tensor:
    """A direction (list of tensors) as a flat float64 vector over the (masked) float entries of `space`."""
    return torch.cat([torch.as_tensor(d).double().reshape(-1) for k, (d, (_, t)) in enumerate(zip(direction, space))
                      if t.is_floating_point() and (mask is None or mask[k])])


def cal_angle(vec1: npt.ArrayLike, vec2: npt.ArrayLike) -> float:
    """Cosine similarity of two vectors (tensors or arrays)."""
    a, b = np.asarray(vec1, dtype=np.float64), np.asarray(vec2, dtype=np.float64)
    return float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b)))


# the reference's projection.py helpers, for users' scripts (same signatures and meaning)
def tensorlist_to_tensor(weights: Iterable[Union[torch.Tensor, np.ndarray]]) -> torch.Tensor:
    """A list of tensors as one flat float32 vector."""
    return torch.cat([torch.as_tensor(w).reshape(-1).float() for w in weights])


def nplist_to_tensor(nplist: Iterable[npt.ArrayLike]) -> torch.Tensor:
    """A list of arrays as one flat float64 vector; 0-dimensional entries are left out, as the reference."""
    return torch.cat([torch.as_tensor(np.asarray(d, dtype=np.float64)).reshape(-1) for d in nplist
                      if np.ndim(d) > 0])


def npvec_to_tensorlist(direction: npt.ArrayLike, params: dirs.Tensors) -> list[torch.Tensor]:
    """A flat vector -> a list of tensors shaped like `params`: a list of tensors (copies of their dtype) or a
    state_dict (float32 tensors, one per entry, integer entries included)."""
    if isinstance(params, dict):
        space = [(k, torch.zeros(v.shape)) for k, v in params.items()]
        return unflatten(np.asarray(direction, dtype=np.float64), space)
    space = [("", torch.as_tensor(p)) for p in params]
    out = unflatten(np.asarray(direction, dtype=np.float64), [(n, torch.zeros(t.shape)) for n, t in space])
    return [o.to(t.dtype) for o, (_, t) in zip(out, space)]


def project_1D(w: Union[torch.Tensor, np.ndarray], d: Union[torch.Tensor, np.ndarray]) -> float:
    """The length of w's projection onto d: w.d / |d|."""
    if len(w) != len(d):
        raise UserError(f"project_1D: vectors of {len(w)} and {len(d)} entries")
    return float(torch.dot(torch.as_tensor(w).double(), torch.as_tensor(d).double()) / torch.as_tensor(d).double().norm())


# ----------------------------------------------------------------------------- PCA
def trajectory_rows(model_files: Iterable[str], load: Callable[[str], nn.Module], final_vec: torch.Tensor,
                    dir_type: str, ignore: str,
                    mask: Optional[Sequence[bool]] = None) -> Iterator[np.ndarray]:
    """Yield d_e = w_e - w_final for each checkpoint, one at a time (float64 numpy vectors)."""
    for path in model_files:
        net = load(path)
        yield (flat_space(dirs.direction_space(net, dir_type), ignore, mask) - final_vec).numpy()


def pca_from_rows(rows: Iterable[np.ndarray], n: int, dim: int, scratch_dir: Optional[str],
                  block_bytes: int = BLOCK_BYTES) -> dict[str, np.ndarray]:
    """Streamed PCA (2 components) of the n rows yielded by `rows`. Returns a dict like sklearn's fit.
    Rows spanning one dimension (2 checkpoints, as the reference allows) get a second component of zero
    variance: a fixed unit vector orthogonal to the first, with a warning."""
    if n < 2:
        raise UserError(f"PCA of a trajectory needs at least 2 checkpoints, got {n}")
    fd, scratch = tempfile.mkstemp(prefix="trajectory_", suffix=".f32", dir=scratch_dir)
    os.close(fd)
    try:
        D = np.memmap(scratch, dtype=np.float32, mode="w+", shape=(n, dim))
        for i, row in enumerate(rows):
            D[i] = row
        D.flush()
        cols = max(1, block_bytes // (8 * n))
        G = np.zeros((n, n))
        for a in range(0, dim, cols):
            B = np.asarray(D[:, a:a + cols], dtype=np.float64)
            G += B @ B.T
        C = np.eye(n) - 1.0 / n
        G = C @ G @ C
        lam, U = np.linalg.eigh((G + G.T) / 2)
        order = np.argsort(lam)[::-1]
        lam, U = np.clip(lam[order], 0, None), U[:, order]
        lam = np.concatenate([lam, np.zeros(max(0, 2 - len(lam)))])
        s = np.sqrt(lam[:2])
        if not s[0] > 1e-12 * max(1.0, float(np.sqrt(G.trace().clip(0)))):
            raise UserError("the trajectory spans no dimension: the checkpoints are identical")
        flat = not s[1] > 1e-6 * s[0]
        comps = np.zeros((2, dim))
        for a in range(0, dim, cols):
            comps[:, a:a + cols] = U[:, :2].T @ np.asarray(D[:, a:a + cols], dtype=np.float64)
        comps[0] /= s[0]
        if flat:
            comps[1], lam[1], s[1] = orthogonal_unit(comps[0]), 0.0, 0.0
            print(f"warning: the trajectory spans one dimension ({n} checkpoints): the second PCA direction is a "
                  "unit vector orthogonal to the first, with no explained variance", file=sys.stderr, flush=True)
        else:
            comps[1] /= s[1]
        del D
    finally:
        os.remove(scratch)
    for k in range(2):  # sklearn's sign convention (svd_flip on the components)
        if comps[k, np.argmax(np.abs(comps[k]))] < 0:
            comps[k] = -comps[k]
    total = lam.sum()
    return {"components_": comps, "singular_values_": s, "explained_variance_": lam[:2] / (n - 1),
            "explained_variance_ratio_": lam[:2] / total}


def orthogonal_unit(v: np.ndarray) -> np.ndarray:
    """A fixed unit vector orthogonal to the unit vector v, on v's own entries (those the trajectory moves:
    an --ignore'd entry stays zero): alternating signs over v's support, Gram-Schmidt'ed against v."""
    support = np.flatnonzero(v)
    r = np.zeros_like(v)
    r[support] = np.where(np.arange(len(support)) % 2 == 0, 1.0, -1.0)
    u = r - (r @ v) * v
    if np.linalg.norm(u) < 1e-6 * max(1.0, np.linalg.norm(r)):     # v is (close to) that pattern itself
        r[support[::2]] = 0.0
        u = r - (r @ v) * v
    if np.linalg.norm(u) == 0:
        raise UserError("the trajectory moves a single weight: there is no second direction to plot it in")
    return u / np.linalg.norm(u)


def name_pca_dir(model_folder: str, dir_type: str, ignore: str, save_epoch: int,
                 params: str = "") -> tuple[str, str]:
    """The reference's PCA folder: <model_folder>/PCA_<dir_type>[_ignore=<ignore>]_save_epoch=<k>/directions.h5
    (with `_params=<hash of the regex>` appended for a --params subset)."""
    folder = os.path.join(model_folder, f"PCA_{dir_type}" + (f"_ignore={ignore}" if ignore else "")
                          + f"_save_epoch={save_epoch}"
                          + (f"_params={hashlib.sha256(params.encode()).hexdigest()[:8]}" if params else ""))
    return folder, os.path.join(folder, "directions.h5")


def pca_direction_file(model_files: Sequence[str], net_final: nn.Module, model_name: str, dataset: str,
                       model_folder: str, dir_type: str = "weights", ignore: str = "", save_epoch: int = 1,
                       params: str = "") -> str:
    """Create (or reuse) the PCA direction file of a trajectory (the checkpoints `model_files` of
    `model_name` on `dataset`, the last one final; the file in <model_folder>/PCA_...); returns its path."""
    folder, dir_file = name_pca_dir(model_folder, dir_type, ignore, save_epoch, params)
    if os.path.exists(dir_file):
        info = h5.read_direction_info(dir_file)
        with h5.open_h5(dir_file, "direction file") as f:
            if "explained_variance_" in f and info["has_y"]:
                print(f"using the existing PCA directions in {dir_file}")
                return dir_file
    os.makedirs(folder, exist_ok=True)
    space = dirs.direction_space(net_final, dir_type)
    mask = dirs.entry_mask(space, params)
    final_vec = flat_space(space, ignore, mask)
    load = lambda path: zoo_loader.load(dataset, model_name, path)
    rows = trajectory_rows(model_files, load, final_vec, dir_type, ignore, mask)
    pca = pca_from_rows(rows, len(model_files), len(final_vec), folder)
    print(f"PCA of {len(model_files)} checkpoints: explained variance ratio {pca['explained_variance_ratio_']}, "
          f"angle between the PCs: cos = {cal_angle(*pca['components_']):.2e}")
    xdir, ydir = (unflatten(c, space, mask) for c in pca["components_"])
    if ignore == "biasbn":
        dirs.ignore_biasbn(xdir)
        dirs.ignore_biasbn(ydir)
    entries, numbers = dirs.params_summary(space, mask)

    def write(f):
        h5.write_list(f, "xdirection", xdir)
        h5.write_list(f, "ydirection", ydir)
        for key in ("explained_variance_ratio_", "singular_values_", "explained_variance_"):
            f[key] = pca[key]
        h5.set_attrs(f, {"dir_type": dir_type, "model": model_name, "ignore": ignore,
                         "model_file_sha256": zoo_loader.file_sha256(model_files[-1]),
                         "checkpoints": len(model_files), "params": params, "params_entries": entries,
                         "params_numbers": numbers, "tool": h5.tool_version()})
    h5.atomic_write(dir_file, write)
    return dir_file


# ----------------------------------------------------------------------------- projection
def project_2D(d: torch.Tensor, dx: torch.Tensor, dy: torch.Tensor, proj_method: str) -> tuple[float, float]:
    """Coordinates of vector d in the plane of dx, dy: 'cos' (orthogonal directions) or 'lstsq'."""
    if proj_method == "cos":
        return project_1D(d, dx), project_1D(d, dy)
    A = torch.stack([dx, dy], 1)                      # (P, 2)
    coef = torch.linalg.solve(A.T @ A, A.T @ d)       # the 2x2 normal equations
    return float(coef[0]), float(coef[1])


def choose_method(dx: torch.Tensor, dy: torch.Tensor, proj_method: str) -> str:
    """'auto' means cos for (near-)orthogonal directions, else the exact least-squares projection."""
    if proj_method != "auto":
        return proj_method
    return "cos" if abs(cal_angle(dx.numpy(), dy.numpy())) < 1e-6 else "lstsq"


def project_trajectory(dir_file: str, net_final: nn.Module, dataset: str, model_name: str,
                       model_files: Sequence[str], dir_type: str = "weights", proj_method: str = "auto",
                       params: str = "") -> str:
    """Project every checkpoint (minus the final model) onto the direction file's plane.

    Writes <dir_file>_proj_<method>.h5 with proj_xcoord, proj_ycoord, and returns its path.
    """
    space = dirs.direction_space(net_final, dir_type)
    mask = dirs.entry_mask(space, params)
    directions = dirs.load_directions(dir_file, space=space)
    if len(directions) < 2:
        raise UserError(f"direction file '{dir_file}' has no y direction to project onto")
    dx, dy = (direction_vector(d, space, mask) for d in directions)
    method = choose_method(dx, dy, proj_method)
    proj_file = f"{dir_file}_proj_{method}.h5"
    if os.path.exists(proj_file):
        print(f"the projection file {proj_file} exists; delete it to project again")
        return proj_file
    final_vec = flat_space(space, mask=mask)
    xs, ys = [], []
    for path in model_files:
        net = zoo_loader.load(dataset, model_name, path)
        d = flat_space(dirs.direction_space(net, dir_type), mask=mask) - final_vec
        x, y = project_2D(d, dx, dy, method)
        print(f"{path}  ({x:.4f}, {y:.4f})")
        xs.append(x)
        ys.append(y)
    h5.write_projection_file(proj_file, xs, ys, {"dir_file": dir_file, "method": method,
                                                 "checkpoints": len(model_files)})
    return proj_file
