"""Export a finished training run as a plain Hugging Face model directory.

The weights are consolidated from the newest complete DeepSpeed checkpoint on disk,
not from a live engine, so export is its own step (an Airflow task after training,
retried on its own) and works for every ZeRO stage: stage 0 keeps full weights in
``mp_rank_00_model_states.pt``; stages 1-3 keep fp32 master weights partitioned over
the ranks' optimizer shards, which DeepSpeed's ``zero_to_fp32`` reassembles. LoRA
adapters are merged into the base weights, so what comes out is always a plain
``LlamaForCausalLM`` with its tokenizer and chat template.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import TYPE_CHECKING

from llmops.artifacts import StageResult, build_stage, file_digest, stable_hash
from llmops.config import LlmopsConfig
from llmops.errors import PermanentError
from llmops.records.base import RecordError
from llmops.records.common import InputRef
from llmops.records.stages import StageInput
from llmops.records.training import (
    ExportedModelSpec,
    ExportSummary,
    ModelInfo,
    PretrainModelSpec,
    TrainingJobSpec,
    TrainingResult,
)
from llmops.training import checkpoint as ckpt

if TYPE_CHECKING:
    import torch

MODEL_INFO = ModelInfo.NAME
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "chat_template.jinja")


MODEL_FILES = ("config.json", "generation_config.json", "model.safetensors.index.json", *TOKENIZER_FILES)
"""What a model is, beside its weights; not ``llmops_model.json`` (run lineage), a model
card, or whatever a registry adds to a download."""


def model_digest(model_dir: Path) -> str:
    """Content digest of a Hugging Face model directory: weights, config, generation config,
    tokenizer files and chat template. JSON files count by their content, without the
    transformers version that wrote them, so the same model found anywhere has one digest."""
    model_dir = Path(model_dir)
    weights = sorted(model_dir.glob("*.safetensors")) or sorted(model_dir.glob("*.bin"))
    files = [p.name for p in weights] + [name for name in MODEL_FILES if (model_dir / name).exists()]
    return stable_hash({name: file_digest(model_dir / name) for name in files}, length=64)


def tokenizer_digest(tokenizer_dir: Path) -> str:
    """Content digest of the tokenizer files in ``tokenizer_dir`` (a tokenizer stage output or
    an exported model): what training and export read of a tokenizer."""
    tokenizer_dir = Path(tokenizer_dir)
    return stable_hash({name: file_digest(tokenizer_dir / name) for name in TOKENIZER_FILES
                        if (tokenizer_dir / name).exists()}, length=64)


class ExportError(PermanentError, RuntimeError):
    """The run cannot be exported (not finished, checkpoint missing or inconsistent)."""


def consolidated_state_dict(tag_dir: Path, zero_stage: int) -> dict[str, torch.Tensor]:
    """Full fp32 weights of the checkpoint ``tag_dir`` (keys as in the trained module)."""
    import torch

    if zero_stage == 0:
        states = torch.load(tag_dir / "mp_rank_00_model_states.pt", map_location="cpu", weights_only=False)
        return {k: v.float() for k, v in states["module"].items()}
    from deepspeed.utils.zero_to_fp32 import get_fp32_state_dict_from_zero_checkpoint

    return get_fp32_state_dict_from_zero_checkpoint(str(tag_dir.parent), tag=tag_dir.name)


def finished_run(run_dir: Path) -> tuple[TrainingJobSpec, TrainingResult]:
    """The job spec and result of the finished training run ``run_dir``."""
    run_dir = Path(run_dir)
    if not (run_dir / TrainingResult.NAME).exists():
        raise ExportError(f"{run_dir} has not finished training (no {TrainingResult.NAME}); run or resume it first")
    try:
        return TrainingJobSpec.read(run_dir), TrainingResult.read(run_dir)
    except RecordError as exc:
        raise ExportError(str(exc)) from None


def write_model(run_dir: Path, out: Path) -> ModelInfo:
    """Write the HF directory of the finished run ``run_dir`` into ``out``; return its info."""
    import torch

    from llmops.training.model import build_model

    run_dir = Path(run_dir)
    job, result = finished_run(run_dir)
    newest = ckpt.newest_complete(run_dir / ckpt.CHECKPOINTS)
    if newest is None or newest[0] != result.steps:
        raise ExportError(f"{run_dir}: no complete checkpoint at the final step {result.steps}")
    step, tag_dir = newest
    state = consolidated_state_dict(tag_dir, job.launch.zero_stage)
    model = build_model(job, training=False)
    expected = set(model.state_dict())
    # Tied embeddings appear once in a ZeRO checkpoint; restore the alias the model expects.
    missing, unexpected = model.load_state_dict(state, strict=False)
    tied = {k for k in missing if "lm_head" in k and model.config.tie_word_embeddings}
    if set(missing) - tied or unexpected:
        raise ExportError(f"checkpoint {tag_dir} does not match the model: missing {sorted(set(missing) - tied)[:5]}, "
                          f"unexpected {sorted(unexpected)[:5]} (of {len(expected)} tensors)")
    if hasattr(model, "merge_and_unload"):
        model = model.merge_and_unload()
    model.config.use_cache = True  # generation wants the KV cache; training turned it off
    with torch.no_grad():
        finite = all(torch.isfinite(p).all() for p in model.parameters())
    if not finite:
        raise ExportError(f"checkpoint {tag_dir} holds NaN or infinite weights; refusing to export it")

    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out, safe_serialization=True)
    tok_dir = Path(job.tokenizer)
    for name in TOKENIZER_FILES:
        if (tok_dir / name).exists():
            shutil.copyfile(tok_dir / name, out / name)
    _write_generation_config(model, out)
    info = ModelInfo(
        kind=job.kind, name=job.name, key=job.key, run_dir=str(run_dir), step=step, inputs=job.inputs,
        model=ExportedModelSpec.model_validate(job.model.model_dump(exclude={"preset"})),
        preset=job.model.preset if isinstance(job.model, PretrainModelSpec) else None, world_size=job.launch.world_size,
        zero_stage=job.launch.zero_stage, precision=job.launch.precision,
        first_val_loss=result.first_val_loss, final_val_loss=result.final_val_loss,
        parameters=sum(p.numel() for p in model.parameters()), mlflow_run_id=result.mlflow_run_id,
        data_card=job.lineage.data_card, code_version=job.code_version, code=job.code)
    info.write(out / MODEL_INFO)
    return info


def _write_generation_config(model, out: Path) -> None:
    """Stop at end-of-text or at the chat template's end-of-turn token, whichever comes first."""
    from transformers import GenerationConfig

    stop = [model.config.eos_token_id]
    tok_config = out / "tokenizer_config.json"
    if tok_config.exists():
        from tokenizers import Tokenizer

        tok = Tokenizer.from_file(str(out / "tokenizer.json"))
        extra = json.loads(tok_config.read_text()).get("additional_special_tokens") or []
        end = tok.token_to_id(extra[-1]) if extra else None  # the template's end-of-turn token
        if end is not None and end not in stop:
            stop.append(end)
    GenerationConfig(eos_token_id=stop, pad_token_id=model.config.pad_token_id,
                     bos_token_id=model.config.bos_token_id).save_pretrained(out)


def export_stage(cfg: LlmopsConfig, run_dir: Path, *, out_dir: Path | None = None) -> StageResult:
    """``artifacts/model/<key>/``: the run's Hugging Face directory, keyed by the run (whose
    key is the content of its inputs) and its final step; its content digest is
    :func:`model_digest`."""
    run_dir = Path(run_dir)
    job, result = finished_run(run_dir)
    inputs: dict[str, StageInput] = {"run": InputRef(path=str(run_dir), hash=job.key), "step": result.steps}

    def build(tmp: Path) -> ExportSummary:
        return ExportSummary.of(write_model(run_dir, tmp))

    return build_stage(cfg.home, "model", inputs, {}, build, out_dir=out_dir, digest=model_digest)
