"""Llama-style model presets: a YAML of architecture numbers -> ``LlamaConfig``.

The architecture (RoPE, RMSNorm, SwiGLU, causal attention) is transformers'
``LlamaForCausalLM``, not a hand-written copy, so every checkpoint is a standard
Hugging Face directory that transformers, peft, vLLM and Triton load as they are.
The vocabulary and the special-token ids come from the tokenizer, never the preset.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from llmops.config import REPO_ROOT
from llmops.errors import PermanentError
from llmops.records.training import (
    FinetuneModelSpec,
    ModelPreset,
    ParameterCount,
    PretrainModelSpec,
    TrainingJobSpec,
)

PRESETS_DIR = REPO_ROOT / "include" / "models"
INIT_INPUT = "init"
"""The input of a pretraining job that continues from saved weights (``prepare_pretrain(init=…)``)."""


class PresetError(PermanentError, ValueError):
    """A model preset is missing or malformed."""


def available_presets() -> list[str]:
    return sorted(p.stem for p in PRESETS_DIR.glob("*.yaml"))


def load_preset(name_or_path: str) -> ModelPreset:
    """The preset of a name (``tiny``) or a YAML path; a misspelt or missing field fails
    here, naming the file and the field."""
    path = Path(name_or_path)
    if not path.suffix:
        path = PRESETS_DIR / f"{name_or_path}.yaml"
    if not path.exists():
        raise PresetError(f"model preset {name_or_path!r} not found (available: {', '.join(available_presets())}; "
                          f"or give a path to a YAML file)")
    try:
        return ModelPreset.model_validate(yaml.safe_load(path.read_text()) or {})
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(map(str, e['loc'])) or '(preset)'}: {e['msg']}" for e in exc.errors())
        raise PresetError(f"{path}: {problems} (a preset sets {', '.join(ModelPreset.model_fields)})") from None


def llama_config(preset: ModelPreset | Mapping[str, Any], *, vocab_size: int, eos_id: int, pad_id: int | None,
                 bos_id: int | None = None):
    """A ``LlamaConfig`` for ``preset`` (a mapping is validated as one) with the tokenizer's
    vocabulary and special ids."""
    from transformers import LlamaConfig

    settings = ModelPreset.model_validate(preset).model_dump()
    rope_theta = settings.pop("rope_theta", 10000.0)
    return LlamaConfig(
        vocab_size=vocab_size,
        eos_token_id=eos_id,
        pad_token_id=pad_id,
        bos_token_id=bos_id,
        rope_parameters={"rope_type": "default", "rope_theta": rope_theta},
        use_cache=False,  # training; the exported config turns the cache back on for generation
        **settings,
    )


def build_model(job: TrainingJobSpec, *, training: bool):
    """The job's ``LlamaForCausalLM``: from its preset (pretraining), its ``init`` input
    (continued pretraining) or its base model (fine-tuning), wrapped with LoRA adapters
    when the job fine-tunes with LoRA.

    The rank trains this module and export loads the consolidated checkpoint into it, so
    both must build the same tree (the adapters' names are in the checkpoint).
    ``training`` turns on activation checkpointing when the job asks for it.
    """
    import torch
    from transformers import LlamaForCausalLM

    spec = job.model
    init = job.inputs.get(INIT_INPUT)
    if isinstance(spec, PretrainModelSpec) and init is None:
        model = LlamaForCausalLM(llama_config(spec.preset, vocab_size=spec.vocab_size, eos_id=spec.eos_id,
                                              pad_id=spec.pad_id))
    else:
        # Fine-tuning, or continued pretraining from a champion's weights (a retraining): the
        # architecture is the saved model's.
        source = init.path if init is not None else spec.base if isinstance(spec, FinetuneModelSpec) else None
        model = LlamaForCausalLM.from_pretrained(source, dtype=torch.float32)
        model.config.use_cache = False
    checkpointing = training and job.launch.activation_checkpointing
    if checkpointing:
        model.gradient_checkpointing_enable()
    if isinstance(spec, FinetuneModelSpec) and spec.method == "lora":
        from peft import LoraConfig, get_peft_model

        ft = job.finetune
        assert ft is not None, "TrainingJobSpec requires finetune settings of a fine-tuning job"
        if checkpointing:
            model.enable_input_require_grads()
        model = get_peft_model(model, LoraConfig(task_type="CAUSAL_LM", r=ft.lora_r, lora_alpha=ft.lora_alpha,
                                                 lora_dropout=ft.lora_dropout,
                                                 target_modules=ft.lora_target_modules))
    return model


def count_parameters(model) -> ParameterCount:
    return ParameterCount(total=sum(p.numel() for p in model.parameters()),
                          trainable=sum(p.numel() for p in model.parameters() if p.requires_grad))


def estimate_parameters(preset: ModelPreset, vocab_size: int) -> int:
    """Parameter count from the numbers alone (for --help and planning, no torch needed)."""
    h, i, n, heads = preset.hidden_size, preset.intermediate_size, preset.num_hidden_layers, preset.num_attention_heads
    head_dim = preset.head_dim or h // heads
    attn = h * heads * head_dim * 2 + h * preset.kv_heads * head_dim * 2
    per_layer = attn + 3 * h * i + 2 * h
    embed = vocab_size * h * (1 if preset.tie_word_embeddings else 2)
    return n * per_layer + embed + h
