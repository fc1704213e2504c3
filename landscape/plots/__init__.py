"""Plots of surface files: 1D curves (plot_1d.py), 2D contours, heat maps and 3D surfaces
(plot_2d.py), the offline HTML viewer (viewer.py), ParaView export (vtp.py), shared helpers (util.py)."""
