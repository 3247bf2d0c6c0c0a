"""The DeepSpeed config of a job: generated from llmops settings, optionally merged
with a user's JSON file, and validated by DeepSpeed's own parser before any process
starts (a typo in ``zero_optimization`` fails here, not after the ranks are up).

The optimizer and the LR schedule are not in this config: the train loop passes its
own AdamW and warmup-cosine schedule (``torch.optim``) to ``deepspeed.initialize``, so
the same loop runs on CPU (where DeepSpeed's fused/CPU Adam would need a compiler)
and GPU, and the schedule is saved in every checkpoint by the engine.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from llmops.config import DeepSpeedLaunchConfig, LoopConfig, deep_merge
from llmops.errors import PermanentError

# Keys the train loop owns; a user file setting them would fight the loop's values.
RESERVED_KEYS = {"optimizer", "scheduler", "train_batch_size", "train_micro_batch_size_per_gpu",
                 "gradient_accumulation_steps"}


class DeepSpeedConfigError(PermanentError, ValueError):
    """The DeepSpeed configuration is invalid; the message says which key and why."""


def resolve_precision(precision: str, cuda: bool, bf16_supported: bool) -> str:
    """``auto`` -> bf16 on a GPU that supports it, fp16 on an older GPU, fp32 on CPU."""
    if precision != "auto":
        if precision in ("bf16", "fp16") and not cuda:
            raise DeepSpeedConfigError(f"deepspeed.precision={precision} needs a GPU; this machine has none "
                                       f"(use fp32 or auto)")
        return precision
    if not cuda:
        return "fp32"
    return "bf16" if bf16_supported else "fp16"


def build_deepspeed_config(launch: DeepSpeedLaunchConfig, loop: LoopConfig, *, world_size: int,
                           precision: str) -> dict[str, Any]:
    """The ``ds_config`` dict for ``deepspeed.initialize``."""
    cfg: dict[str, Any] = {
        "train_micro_batch_size_per_gpu": loop.micro_batch_size,
        "gradient_accumulation_steps": loop.grad_accum_steps,
        "train_batch_size": loop.micro_batch_size * loop.grad_accum_steps * world_size,
        "gradient_clipping": loop.grad_clip,
        "steps_per_print": 10**9,  # the loop prints its own progress lines
        "wall_clock_breakdown": False,
        "zero_optimization": {"stage": launch.zero_stage},
        "bf16": {"enabled": precision == "bf16"},
        "fp16": {"enabled": precision == "fp16"},
    }
    if launch.zero_stage == 3:
        # Export consolidates the ZeRO-3 shards from the checkpoint (zero_to_fp32).
        cfg["zero_optimization"]["stage3_gather_16bit_weights_on_model_save"] = False
    if launch.config_file:
        path = Path(launch.config_file)
        if not path.exists():
            raise DeepSpeedConfigError(f"deepspeed.config_file {path} does not exist")
        try:
            user = json.loads(path.read_text())
        except json.JSONDecodeError as exc:
            raise DeepSpeedConfigError(f"deepspeed.config_file {path}: not JSON ({exc})") from None
        if not isinstance(user, dict):
            raise DeepSpeedConfigError(f"deepspeed.config_file {path}: the top level must be an object")
        reserved = sorted(RESERVED_KEYS & set(user))
        if reserved:
            raise DeepSpeedConfigError(
                f"deepspeed.config_file {path} sets {reserved}; these come from the llmops config "
                f"(pretrain/finetune: micro_batch_size, grad_accum_steps, lr, warmup_steps, ...)")
        cfg = deep_merge(cfg, user)
    validate_deepspeed_config(cfg)
    return cfg


def validate_deepspeed_config(cfg: dict[str, Any]) -> None:
    """Parse ``cfg`` with DeepSpeed's own ``DeepSpeedConfig``; raise ``DeepSpeedConfigError``.

    The parse runs outside a process group (world size 1), so the batch-size identity,
    which depends on the world size, is checked by the caller's construction instead.
    """
    from deepspeed.runtime.config import DeepSpeedConfig

    probe = {k: v for k, v in cfg.items() if k != "train_batch_size"}
    try:
        DeepSpeedConfig(probe)
    except Exception as exc:  # DeepSpeed raises ValidationError, AssertionError, ValueError...
        message = " ".join(str(exc).split())
        raise DeepSpeedConfigError(f"invalid DeepSpeed config: {type(exc).__name__}: {message[:800]}") from None
