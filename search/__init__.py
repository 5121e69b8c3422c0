"""Scoring stage: images -> embeddings -> FAISS catalog -> retrieval metrics.

Importing this package loads neither torch nor model weights; that happens in
``create_embedder``. Other modules add their exports below, one line each.

``search.evaluate`` is the evaluation module (``import search.evaluate as m``
gives the module); its runner is ``search.evaluate.evaluate``. The package does
not re-export that function under the module's name, which would shadow it.
"""
from . import evaluate
from .catalog import Catalog, Hit, Item
from .config import DEFAULT_EMBEDDER, EmbedConfig, IndexConfig
from .embedders import Embedder, create_embedder, parse_name
from .evaluate import EvalConfig, Evaluation
from .report import write_report

__all__ = [
    "Catalog", "Hit", "Item",
    "DEFAULT_EMBEDDER", "EmbedConfig", "IndexConfig",
    "Embedder", "create_embedder", "parse_name",
    "EvalConfig", "Evaluation", "evaluate", "write_report",  # evaluate: the module
]
