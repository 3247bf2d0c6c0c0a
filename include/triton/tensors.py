"""The served model's tensors, declared once.

The repository builder renders ``config.pbtxt`` from this table, ``model.py`` reads its
requests and writes its responses by it, and the client builds its requests and parses
its results by it. It lives here, next to ``model.py``, and is copied with it into every
version directory, because the model runs in the Triton image where llmops is not
installed: standard library only. Both sides load it by its path
(``llmops.serving.tensors`` on the llmops side).

Every tensor is one element per row (dims ``[1]``); with ``max_batch_size`` > 0 Triton
prepends the batch dimension, so a request of shape ``[n, 1]`` carries n questions.
"""

from __future__ import annotations

from dataclasses import dataclass

# Triton's wire datatype -> (config.pbtxt's DataType, numpy dtype). BYTES is TYPE_STRING in
# a model config and an object array of bytes in numpy.
_DATATYPES = {
    "BYTES": ("TYPE_STRING", "object"),
    "INT32": ("TYPE_INT32", "int32"),
    "INT64": ("TYPE_INT64", "int64"),
    "FP32": ("TYPE_FP32", "float32"),
}


@dataclass(frozen=True)
class Tensor:
    """One input or output of the model."""

    name: str
    datatype: str
    """Triton's wire datatype (what tritonclient's ``InferInput`` takes): BYTES, INT32, INT64, FP32."""
    doc: str
    optional: bool = False
    """An input a request may leave out (the model then takes its default)."""

    @property
    def config_type(self) -> str:
        """The ``data_type`` of ``config.pbtxt`` (a ``ModelConfig`` DataType name)."""
        return _DATATYPES[self.datatype][0]

    @property
    def numpy_dtype(self) -> str:
        return _DATATYPES[self.datatype][1]


TEXT_INPUT = Tensor("text_input", "BYTES", "the user's question (the model applies its chat template)")
MAX_TOKENS = Tensor("max_tokens", "INT32", "new tokens at most (default from the config parameters)", optional=True)
TEMPERATURE = Tensor("temperature", "FP32", "0 (default) is greedy decoding", optional=True)
TOP_P = Tensor("top_p", "FP32", "nucleus sampling mass in (0, 1], default 1", optional=True)
SEED = Tensor("seed", "INT64", "makes a sampled answer reproducible", optional=True)

TEXT_OUTPUT = Tensor("text_output", "BYTES", "the answer")
MODEL_VERSION = Tensor("model_version", "BYTES", "the registered version (model_info.json)")
PROMPT_TOKENS = Tensor("prompt_tokens", "INT32", "prompt length after the chat template")
COMPLETION_TOKENS = Tensor("completion_tokens", "INT32", "generated tokens, the stop token included")

INPUTS = (TEXT_INPUT, MAX_TOKENS, TEMPERATURE, TOP_P, SEED)
"""In ``config.pbtxt``'s order. The optional ones are named as ``GenerationRequest``'s fields."""
OUTPUTS = (TEXT_OUTPUT, MODEL_VERSION, PROMPT_TOKENS, COMPLETION_TOKENS)
