"""The trainer (`main.py`), its default data folder `data/` and checkpoint folder `trained_nets/`."""
