"""kprune_lib: retraining-free structured pruning of fine-tuned encoders (K-prune, ICLR 2024)."""
__version__ = "0.1.0"

from .config import PruneConfig  # noqa: E402
from .hf import register as _register_pruned_models  # noqa: E402
from .api import evaluate, export_onnx, finetune, prune  # noqa: E402
from .io import load_pruned, save_pruned  # noqa: E402
from .prune import PruneResult, kprune  # noqa: E402
from .physical import prune_physically  # noqa: E402

__all__ = ["PruneConfig", "evaluate", "finetune", "prune", "export_onnx", "load_pruned", "save_pruned", "kprune",
           "PruneResult", "prune_physically", "__version__"]

_register_pruned_models()  # the auto classes load pruned folders without remote code
