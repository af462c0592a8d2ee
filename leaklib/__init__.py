"""leaklib: the library of the Gradient Leakage book.

One module per idea, in the order data flows through an attack:
``data`` (real images) -> ``models`` (what the client trains) -> ``gradients`` (what the client shares).
"""

from .data import Dataset, dataset_info, load_dataset
from .gradients import fedavg_update, fedsgd_gradients, last_layer_gradients, logit_gradient
from .models import build_model, last_layer_inputs, last_linear
from .utils import get_device, quick_mode, set_seed

__version__ = "0.1.0"

__all__ = [
    "Dataset",
    "build_model",
    "dataset_info",
    "fedavg_update",
    "fedsgd_gradients",
    "get_device",
    "last_layer_gradients",
    "last_layer_inputs",
    "last_linear",
    "load_dataset",
    "logit_gradient",
    "quick_mode",
    "set_seed",
]
