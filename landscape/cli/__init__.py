"""The commands: plot_surface, plot_hessian_eigen, plot_trajectory, the trainer (train.py), their
flags (options.py), and the console entry points and the clone's front doors (commands.py).
The plotting commands' code lives with the plots (landscape/plots)."""
