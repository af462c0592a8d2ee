"""leaklib: the library of the Gradient Leakage book.

One module per idea, in the order data flows through an attack:
``data`` (real images) -> ``models`` (what the client trains) -> ``gradients`` (what the client shares) ->
``labels`` (what the server reads off it) -> ``attacks`` (the batched reconstruction engine, on ``optim``'s
per-trial L-BFGS) -> ``metrics`` (how good the reconstruction is); ``defenses`` transforms what the client shares.
"""

from . import attacks, defenses, labels, metrics
from .attacks import AttackResult, dlg, idlg, reconstruct
from .data import Dataset, dataset_info, load_dataset
from .gradients import fedavg_update, fedsgd_gradients, last_layer_gradients, logit_gradient
from .models import build_model, last_layer_inputs, last_linear
from .utils import get_device, quick_mode, set_seed

__version__ = "0.1.0"

__all__ = [
    "AttackResult",
    "Dataset",
    "attacks",
    "build_model",
    "dlg",
    "dataset_info",
    "defenses",
    "fedavg_update",
    "fedsgd_gradients",
    "get_device",
    "idlg",
    "labels",
    "last_layer_gradients",
    "last_layer_inputs",
    "last_linear",
    "load_dataset",
    "logit_gradient",
    "metrics",
    "quick_mode",
    "reconstruct",
    "set_seed",
]
