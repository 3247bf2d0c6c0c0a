"""The served model's tensors, as llmops reads them: ``include/triton/tensors.py`` loaded by path.

The table is declared once, in ``include/triton/tensors.py``: that file is copied next to
``model.py`` into every version directory and must import without llmops (the model runs in
the Triton image), so it cannot live in this package; this module loads the same file.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

from llmops.config import REPO_ROOT

SOURCE = REPO_ROOT / "include" / "triton" / "tensors.py"


def load_file(module_name: str, path: Path) -> ModuleType:
    """Import the file ``path`` as ``module_name`` (registered in ``sys.modules``: dataclasses
    look their module up while the file executes)."""
    spec = importlib.util.spec_from_file_location(module_name, path)
    if spec is None or spec.loader is None:
        raise ImportError(f"cannot import {path}")
    module = importlib.util.module_from_spec(spec)
    sys.modules[module_name] = module
    spec.loader.exec_module(module)
    return module


_table = load_file("llmops.serving._tensor_table", SOURCE)

# Typed as Any: mypy does not see include/triton (a file loaded by path, not a package).
Tensor: Any = _table.Tensor
INPUTS: tuple[Any, ...] = _table.INPUTS
OUTPUTS: tuple[Any, ...] = _table.OUTPUTS
TEXT_INPUT, MAX_TOKENS, TEMPERATURE, TOP_P, SEED = INPUTS
TEXT_OUTPUT, MODEL_VERSION, PROMPT_TOKENS, COMPLETION_TOKENS = OUTPUTS
