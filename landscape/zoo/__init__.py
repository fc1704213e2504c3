"""The model zoo (models/: the reference's architectures and the digits models), building models and
loading checkpoints (loader.py), and the data: CIFAR-10, the embedded digits, custom sets (data.py)."""
