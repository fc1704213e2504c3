"""The reference's module names, kept for users' scripts: each module here is what the root front door
of the same name (net_plotter.py, ...) becomes when imported. The engine never imports them."""
