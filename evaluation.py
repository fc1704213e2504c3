"""Loss and accuracy of a model over a data set: the reference's `evaluation.py` (eval_loss), kept as a front door; the code is landscape/evaluation/."""
from landscape.cli.commands import front_door

front_door(__name__, "landscape.evaluation", __file__)
