"""Optional dependencies: the features only some users need install with an extra of mmenc
(``pip install 'mmenc[faiss]'``); without it, the feature raises an ``ImportError`` that names
the extra to install.

| extra | package | feature |
|---|---|---|
| ``faiss`` | faiss-cpu | FAISS indexes for large galleries |
| ``plot`` | matplotlib | the loss and R@K charts |
| ``webdataset`` | webdataset | training from webdataset shards |
| ``bm25`` | rank-bm25 | the BM25 lexical baseline |
| ``onnx`` | onnx, onnxruntime | ``mmenc export`` and the ONNX Runtime backend |
"""

from __future__ import annotations

import importlib
from types import ModuleType


def require(module: str, extra: str, feature: str) -> ModuleType:
    """Import ``module`` (a name written in mmenc's code, never one read from a file), or raise
    an ``ImportError`` saying which extra brings it.

    Args:
        module: the module to import (``"faiss"``).
        extra: the extra of mmenc that installs it (``"faiss"``).
        feature: what needs it, for the message (``"FAISS indexes"``).
    """
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        raise ImportError(f"{feature} need the optional dependency {module!r}, which is not "
                          f"installed: pip install 'mmenc[{extra}]'") from exc
