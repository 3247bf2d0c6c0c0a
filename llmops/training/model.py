"""Llama-style model presets: a YAML of architecture numbers -> ``LlamaConfig``.

The architecture (RoPE, RMSNorm, SwiGLU, causal attention) is transformers'
``LlamaForCausalLM``, not a hand-written copy, so every checkpoint is a standard
Hugging Face directory that transformers, peft, vLLM and Triton load as they are.
The vocabulary and the special-token ids come from the tokenizer, never the preset.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from llmops.config import REPO_ROOT
from llmops.errors import PermanentError

PRESETS_DIR = REPO_ROOT / "include" / "models"
# Keys a preset may set: the LlamaConfig architecture fields. Anything else is a typo.
PRESET_KEYS = {
    "hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads", "num_key_value_heads",
    "max_position_embeddings", "rope_theta", "rms_norm_eps", "tie_word_embeddings", "initializer_range",
    "attention_dropout", "hidden_act", "head_dim",
}


class PresetError(PermanentError, ValueError):
    """A model preset is missing or malformed."""


def available_presets() -> list[str]:
    return sorted(p.stem for p in PRESETS_DIR.glob("*.yaml"))


def load_preset(name_or_path: str) -> dict[str, Any]:
    """The architecture numbers of a preset name (``tiny``) or a YAML path."""
    path = Path(name_or_path)
    if not path.suffix:
        path = PRESETS_DIR / f"{name_or_path}.yaml"
    if not path.exists():
        raise PresetError(f"model preset {name_or_path!r} not found (available: {', '.join(available_presets())}; "
                          f"or give a path to a YAML file)")
    preset = yaml.safe_load(path.read_text()) or {}
    unknown = set(preset) - PRESET_KEYS
    if unknown:
        raise PresetError(f"{path}: unknown keys {sorted(unknown)} (allowed: {sorted(PRESET_KEYS)})")
    for key in ("hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads"):
        if key not in preset:
            raise PresetError(f"{path}: {key} is required")
    heads, kv = preset["num_attention_heads"], preset.get("num_key_value_heads", preset["num_attention_heads"])
    if preset["hidden_size"] % heads or heads % kv:
        raise PresetError(f"{path}: hidden_size must divide by num_attention_heads, and that by num_key_value_heads")
    return preset


def llama_config(preset: dict[str, Any], *, vocab_size: int, eos_id: int, pad_id: int | None,
                 bos_id: int | None = None):
    """A ``LlamaConfig`` for ``preset`` with the tokenizer's vocabulary and special ids."""
    from transformers import LlamaConfig

    preset = dict(preset)
    rope_theta = preset.pop("rope_theta", 10000.0)
    return LlamaConfig(
        vocab_size=vocab_size,
        eos_token_id=eos_id,
        pad_token_id=pad_id,
        bos_token_id=bos_id,
        rope_parameters={"rope_type": "default", "rope_theta": rope_theta},
        use_cache=False,  # training; the exported config turns the cache back on for generation
        **preset,
    )


def count_parameters(model) -> dict[str, int]:
    total = sum(p.numel() for p in model.parameters())
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    return {"total": total, "trainable": trainable}


def estimate_parameters(preset: dict[str, Any], vocab_size: int) -> int:
    """Parameter count from the numbers alone (for --help and planning, no torch needed)."""
    h, i, n = preset["hidden_size"], preset["intermediate_size"], preset["num_hidden_layers"]
    heads = preset["num_attention_heads"]
    kv = preset.get("num_key_value_heads", heads)
    head_dim = preset.get("head_dim", h // heads)
    attn = h * heads * head_dim * 2 + h * kv * head_dim * 2
    per_layer = attn + 3 * h * i + 2 * h
    embed = vocab_size * h * (1 if preset.get("tie_word_embeddings", False) else 2)
    return n * per_layer + embed + h
