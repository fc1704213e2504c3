"""Convert a 2D surface file to VTK XML PolyData (.vtp) for ParaView or VTK.

    python h52vtp.py --surf_file S.h5 --surf_name train_loss --zmax 10 --log [--interp 1000]

The output <surf>_<name>[_zmax=Z][_log].vtp holds one point per grid node, (x, y, value) as its
coordinates and the value as point data `zvalue`, and two triangles per grid cell (cells touching a
point not computed are left out). `--interp N` first resamples the grid to N x N points with a
cubic spline (scipy's RectBivariateSpline; the reference's interp2d is gone from SciPy).
`--log` maps values to log(value + 0.1) and `--zmax` clips them, as in the reference.
"""
from __future__ import annotations

import sys
from typing import TYPE_CHECKING, Iterable, Optional, Sequence

import numpy as np

from landscape.errors import ArgParser, UserError, run_cli
from landscape.plots.util import computed, load_surface

if TYPE_CHECKING:
    import argparse

    import numpy.typing as npt


def interpolate_grid(x: np.ndarray, y: np.ndarray, Z: np.ndarray,
                     n: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Cubic-spline resample of Z (ny, nx) onto n x n points spanning the same box."""
    from scipy.interpolate import RectBivariateSpline
    if np.isnan(Z).any():
        raise UserError("--interp needs a fully computed surface (some points are missing or not finite)")
    kx, ky = min(3, len(x) - 1), min(3, len(y) - 1)
    spline = RectBivariateSpline(y, x, Z, kx=ky, ky=kx)   # first axis: y (rows), second: x (columns)
    xi, yi = np.linspace(x[0], x[-1], n), np.linspace(y[0], y[-1], n)
    return xi, yi, spline(yi, xi)


def grid_triangles(nx: int, ny: int, valid: np.ndarray) -> np.ndarray:
    """Two triangles per cell (j, i) of an (ny, nx) grid whose four corners are all valid."""
    idx = np.arange(nx * ny).reshape(ny, nx)
    a, b = idx[:-1, :-1].ravel(), idx[:-1, 1:].ravel()      # (j, i), (j, i+1)
    c, d = idx[1:, 1:].ravel(), idx[1:, :-1].ravel()        # (j+1, i+1), (j+1, i)
    keep = valid.ravel()[a] & valid.ravel()[b] & valid.ravel()[c] & valid.ravel()[d]
    a, b, c, d = a[keep], b[keep], c[keep], d[keep]
    return np.concatenate([np.stack([a, b, c], 1), np.stack([a, c, d], 1)])


def write_vtp(path: str, points: np.ndarray, zvalue: np.ndarray, triangles: np.ndarray) -> None:
    """Write points (N, 3), point data zvalue (N,) and triangles (M, 3) as ASCII VTK XML PolyData."""
    n, m = len(points), len(triangles)
    with open(path, "w") as f:
        f.write('<?xml version="1.0"?>\n<VTKFile type="PolyData" version="1.0" byte_order="LittleEndian" '
                'header_type="UInt64">\n  <PolyData>\n')
        f.write(f'    <Piece NumberOfPoints="{n}" NumberOfVerts="0" NumberOfLines="0" NumberOfStrips="0" '
                f'NumberOfPolys="{m}">\n')
        f.write('      <PointData Scalars="zvalue">\n')
        f.write(_scalar_array("zvalue", zvalue))
        f.write('      </PointData>\n      <Points>\n')
        f.write(_vector_array("Points", points))
        f.write('      </Points>\n      <Polys>\n')
        f.write(_int_array("connectivity", triangles.ravel()))
        f.write(_int_array("offsets", 3 * np.arange(1, m + 1)))
        f.write('      </Polys>\n    </Piece>\n  </PolyData>\n</VTKFile>\n')


def _rows(values: Iterable[float], per_row: int, fmt: str) -> str:
    values = list(values)
    return "\n".join("          " + " ".join(fmt % v for v in values[i:i + per_row])
                     for i in range(0, len(values), per_row))


def _scalar_array(name: str, values: Iterable[float]) -> str:
    return (f'        <DataArray type="Float32" Name="{name}" NumberOfComponents="1" format="ascii">\n'
            f'{_rows(values, 6, "%.7g")}\n        </DataArray>\n')


def _vector_array(name: str, points: npt.ArrayLike) -> str:
    return (f'        <DataArray type="Float32" Name="{name}" NumberOfComponents="3" format="ascii">\n'
            f'{_rows(np.asarray(points).ravel(), 6, "%.7g")}\n        </DataArray>\n')


def _int_array(name: str, values: Iterable[int]) -> str:
    return (f'        <DataArray type="Int64" Name="{name}" format="ascii">\n'
            f'{_rows(values, 12, "%d")}\n        </DataArray>\n')


def h5_to_vtp(surf_file: str, surf_name: str = "train_loss", log: bool = False, zmax: float = -1,
              interp: int = -1) -> str:
    """Write <surf>_<name>[_zmax=Z][_log].vtp and return its path."""
    surf = load_surface(surf_file)
    if surf.y is None:
        raise UserError(f"'{surf_file}' is a 1D surface; h52vtp needs a 2D one")
    x, y, Z = surf.x, surf.y, computed(surf, surf_name)
    if interp > 0:
        x, y, Z = interpolate_grid(x, y, Z, interp)
    path = f"{surf_file}_{surf_name}"
    if zmax > 0:
        Z = np.minimum(Z, zmax)
        path += "_zmax=" + str(zmax)  # as the reference names it, e.g. _zmax=10.0
    if log:
        Z = np.log(Z + 0.1)
        path += "_log"
    path += ".vtp"
    valid = np.isfinite(Z)
    X, Y = np.meshgrid(x, y)
    points = np.stack([X.ravel(), Y.ravel(), np.where(valid, Z, 0.0).ravel()], axis=1)
    triangles = grid_triangles(len(x), len(y), valid)
    write_vtp(path, points, np.where(valid, Z, np.nan).ravel(), triangles)
    print(f"wrote {path}: {len(points)} points, {len(triangles)} triangles")
    return path


def build_parser() -> argparse.ArgumentParser:
    p = ArgParser.make("Convert a 2D surface file to a .vtp file for ParaView.")
    p.add_argument("--surf_file", "--file", "-f", default="", help="the .h5 surface file")
    p.add_argument("--surf_name", default="train_loss",
                   help="train_loss | test_loss | train_acc | test_acc | train_err | test_err")
    p.add_argument("--zmax", default=-1, type=float, help="clip values above this (-1: no clipping)")
    p.add_argument("--interp", default=-1, type=int, help="resample to N x N points by cubic spline (-1: no)")
    p.add_argument("--log", action="store_true", help="log(value + 0.1)")
    return p


def main(argv: Optional[Sequence[str]] = None) -> int:
    a = build_parser().parse_args(argv)
    if not a.surf_file:
        raise UserError("give --surf_file")
    if a.interp == 0 or a.interp == 1:
        raise UserError("--interp needs at least 2 points per axis")
    h5_to_vtp(a.surf_file, a.surf_name, a.log, a.zmax, a.interp)
    return 0


if __name__ == "__main__":
    sys.exit(run_cli(main))
