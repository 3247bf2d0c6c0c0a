"""Every stage's version against what it produces on a tiny fixture.

Keys hold a stage's explicit version, not a hash of the code, so a change in what a
stage writes must come with a version bump, or outputs built by the old code keep being
reused. Each stage runs here on fixed input (``tests/stage_fixture.py``: a hand-written
crawl, then the chain of stages) and its output's content digest is compared with the
value recorded next to its version in ``llmops.artifacts.STAGE_VERSIONS``. The recorded
key tells apart "this stage's output changed" (same key: bump it) from "its input or
settings changed upstream" (another key: record the new values, no bump needed).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from llmops.artifacts import STAGE_VERSIONS, key_view, stable_hash, stage_key
from tests.stage_fixture import crawl_stage, fixture_config

DATA_STAGES = ["extract", "clean", "dedup", "redact", "qa", "tokenizer", "tokens"]
CHECKED = DATA_STAGES + ["model", "pretrain", "finetune"]


@pytest.fixture(scope="module")
def outputs(tmp_path_factory) -> dict[str, dict[str, Any]]:
    """Per stage: its key, its content digest, and the key it would have one version on."""
    from llmops.data import pipeline as P

    home = tmp_path_factory.mktemp("stage_versions")
    cfg = fixture_config(home, deepspeed={"ranks": 1})
    crawl = crawl_stage(cfg, "fixture")
    extract = P.extract_stage(cfg, crawl.path)
    clean = P.clean_stage(cfg, extract.path)
    dedup = P.dedup_stage(cfg, [clean.path])
    redact = P.redact_stage(cfg, dedup.path)
    results = {"extract": extract, "clean": clean, "dedup": dedup, "redact": redact,
               "qa": P.qa_stage(cfg, redact.path), "tokenizer": P.tokenizer_stage(cfg, redact.path)}
    results["tokens"] = P.encode_stage(cfg, redact.path, results["tokenizer"].path)
    results["model"] = _export_fixed_checkpoint(cfg, results["tokenizer"].path, results["tokens"].path)

    out = {}
    for stage, r in results.items():
        m = r.manifest
        out[stage] = {"key": r.key, "digest": r.content_hash[:16],
                      "bumped_key": stage_key(stage, m.inputs, m.config, m.version + 1)}
    out["pretrain"], out["finetune"] = _training_plans(cfg, results)
    return out


@pytest.mark.parametrize("stage", CHECKED)
def test_stage_output_matches_its_recorded_version(outputs, stage):
    got, recorded = outputs[stage], STAGE_VERSIONS[stage]
    v = recorded.version
    bump = (f"StageVersion({v + 1}, fixture_key={got['bumped_key']!r}, fixture_digest={got['digest']!r})")
    if got["key"] != recorded.fixture_key:
        pytest.fail(f"{stage}: its fixture input, settings or version changed (key {got['key']}, recorded "
                    f"{recorded.fixture_key}). If {stage}'s own output changed, bump the version and record the "
                    f"new digest: STAGE_VERSIONS[{stage!r}] = {bump} in llmops/artifacts.py. If only its input "
                    f"changed upstream, record StageVersion({v}, fixture_key={got['key']!r}, "
                    f"fixture_digest={got['digest']!r}).")
    if got["digest"] != recorded.fixture_digest:
        pytest.fail(f"{stage} writes another output for the same input and settings (content digest "
                    f"{got['digest']}, recorded {recorded.fixture_digest} at version {v}): bump the version and "
                    f"record the new digest: STAGE_VERSIONS[{stage!r}] = {bump} in llmops/artifacts.py. Without "
                    f"a bump, outputs built by the old code keep being reused.")


def test_every_stage_has_a_version():
    unchecked = {"scrape", "data_card", "increment", "qa_increment", "evaluation", "deploy"}
    assert set(CHECKED) | unchecked == set(STAGE_VERSIONS)


# ---- export: a fixed checkpoint, made without randomness ---------------------------


def _export_fixed_checkpoint(cfg, tokenizer_dir: Path, tokens_dir: Path):
    """A finished one-step pretraining run whose ZeRO-0 checkpoint holds weights computed
    from integers (no RNG, no transcendental function), exported by the real stage."""
    import torch
    from transformers import LlamaForCausalLM

    from llmops.artifacts import code_identity
    from llmops.records.training import (
        CheckpointMarker,
        LaunchSpec,
        ParameterCount,
        PretrainDataSpec,
        PretrainModelSpec,
        TrainingJobSpec,
        TrainingResult,
    )
    from llmops.training.checkpoint import tag_for
    from llmops.training.export import export_stage
    from llmops.training.model import llama_config, load_preset

    meta = json.loads((tokens_dir / "meta.json").read_text())
    spec = {"preset_name": "tiny", "preset": load_preset("tiny"), "vocab_size": meta["vocab_size"],
            "eos_id": meta["eos_id"], "pad_id": meta["pad_id"]}
    model = LlamaForCausalLM(llama_config(spec["preset"], vocab_size=spec["vocab_size"], eos_id=spec["eos_id"],
                                          pad_id=spec["pad_id"]))
    with torch.no_grad():
        for p in model.parameters():
            ramp = (torch.arange(p.numel()) * 7919 % 2001 - 1000).float() / 50_000
            p.copy_(ramp.reshape(p.shape))
    run = Path(cfg.home) / "runs" / "pretrain" / "tiny-fixture"
    tag = run / "checkpoints" / tag_for(1)
    tag.mkdir(parents=True)
    torch.save({"module": model.state_dict()}, tag / "mp_rank_00_model_states.pt")
    CheckpointMarker(step=1, world_size=1, zero_stage=0, saved_at="2026-01-01T00:00:00+00:00").write(tag)
    launch = LaunchSpec(world_size=1, ranks_per_node=1, nodes=1, device="cpu", precision="fp32", threads_per_rank=1,
                        activation_checkpointing=False, zero_stage=0, timeout_s=600, command=[])
    TrainingJobSpec(kind="pretrain", name="tiny", key="fixture", run_dir=str(run), inputs={},
                    model=PretrainModelSpec(**spec), data=PretrainDataSpec(tokens=str(tokens_dir), context_length=64),
                    tokenizer=str(tokenizer_dir), loop=cfg.pretrain, deepspeed={}, launch=launch, version=1,
                    code_version="fixture", code=code_identity()).write(run)
    TrainingResult(kind="pretrain", name="tiny", key="fixture", steps=1, first_val_loss=6.0, final_val_loss=5.0,
                   checkpoint=str(tag), parameters=ParameterCount(total=0, trainable=0), world_size=1,
                   mlflow_run_id=None, train_samples=1, val_samples=1).write(run)
    return export_stage(cfg, run)


# ---- training: its deterministic part ------------------------------------------------


def _batches(schedule, data, world: int, steps: int, accum: int) -> list:
    return [[a.tolist() for a in data.batch(schedule.indices(step, micro, rank))]
            for step in range(steps) for micro in range(accum) for rank in range(world)]


def _plan(spec, data_fingerprint: list, n_samples: int) -> dict[str, Any]:
    from llmops.training.worker import lr_factor

    loop = spec.loop
    return {"data": data_fingerprint, "samples": n_samples,
            "lr": [round(lr_factor(s, steps=loop.steps, warmup=loop.warmup_steps,
                                   min_ratio=loop.min_lr_ratio), 9) for s in range(loop.steps)]}


def _training_plans(cfg, results) -> tuple[dict[str, Any], dict[str, Any]]:
    """What the pretraining and fine-tuning jobs on the fixture would read, step by step,
    and the model they would build: everything of training that is deterministic."""
    from transformers import AutoTokenizer

    from llmops.training.data import Schedule, TokenWindows, encode_chat_examples, read_pairs, split_pairs
    from llmops.training.job import prepare_finetune, prepare_pretrain
    from llmops.training.model import llama_config

    plans = []
    pre = prepare_pretrain(cfg, tokens=results["tokens"].path, track=False).spec
    loop, world = pre.loop, pre.launch.world_size
    train = TokenWindows(Path(pre.data.tokens), "train", pre.data.context_length)
    schedule = Schedule(len(train), loop.micro_batch_size, loop.grad_accum_steps, world, loop.seed)
    config = llama_config(pre.model.preset, vocab_size=pre.model.vocab_size,
                          eos_id=pre.model.eos_id, pad_id=pre.model.pad_id).to_dict()
    config.pop("transformers_version", None)
    plans.append((pre, _plan(pre, _batches(schedule, train, world, 3, loop.grad_accum_steps), len(train))
                  | {"model": config}))

    ft = prepare_finetune(cfg, base=results["model"].path, data=results["qa"].path / "finetune.jsonl",
                          track=False).spec
    loop = ft.loop
    train_pairs, _ = split_pairs(read_pairs(Path(ft.data.pairs)), ft.data.validation_fraction, loop.seed)
    examples = encode_chat_examples(train_pairs, AutoTokenizer.from_pretrained(ft.tokenizer), ft.data.max_length)
    schedule = Schedule(len(examples), loop.micro_batch_size, loop.grad_accum_steps, world, loop.seed)
    lora = ft.finetune.model_dump(include={"method", "lora_r", "lora_alpha", "lora_dropout", "lora_target_modules"})
    plans.append((ft, _plan(ft, _batches(schedule, examples, world, 3, loop.grad_accum_steps), len(examples))
                  | {"finetune": lora}))

    out = []
    for spec, plan in plans:
        # Not the job's key, which holds the DeepSpeed config (another precision on a GPU).
        stored = spec.dump()
        keyed = {"inputs": key_view(spec.inputs), "loop": stored["loop"], "finetune": stored["finetune"]}
        out.append({"key": stable_hash(keyed | {"version": spec.version}), "digest": stable_hash(plan),
                    "bumped_key": stable_hash(keyed | {"version": spec.version + 1})})
    return out[0], out[1]
