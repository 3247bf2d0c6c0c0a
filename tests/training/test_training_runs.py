"""Real DeepSpeed jobs: 2 CPU ranks, gloo, ZeRO 0/1/2; crash and resume; LoRA and full
fine-tuning; export fidelity; MLflow logging."""

from __future__ import annotations

import contextlib
import glob
import json
import math
import signal
import time

import numpy as np
import psutil
import pytest

from llmops.artifacts import read_manifest
from llmops.records.training import ModelInfo
from llmops.training.export import export_stage
from llmops.training.job import prepare_finetune, prepare_pretrain
from llmops.training.runner import run_training
from tests.training.fixtures import paths, training_config

pytestmark = pytest.mark.slow


def _val_loss_in_process(model_dir, tokens_dir, n_windows: int, context: int = 64) -> float:
    """Validation loss of an exported directory on the first ``n_windows``, with plain transformers."""
    import torch
    from transformers import AutoModelForCausalLM

    from llmops.training.data import TokenWindows

    model = AutoModelForCausalLM.from_pretrained(model_dir).eval()
    val = TokenWindows(tokens_dir, "validation", context)
    inputs, labels = val.batch(np.arange(min(n_windows, len(val))))
    with torch.no_grad():
        logits = model(input_ids=torch.from_numpy(inputs)).logits
        loss = torch.nn.functional.cross_entropy(logits.reshape(-1, logits.size(-1)),
                                                 torch.from_numpy(labels).reshape(-1))
    return loss.item()


def test_pretraining_learns_and_exports_a_standard_hf_directory(pretrained, data_home):
    result = pretrained["result"]
    assert result.world_size == 2 and result.steps == 30
    assert result.final_val_loss < result.first_val_loss - 0.5, result
    out = pretrained["model"]
    for name in ("config.json", "model.safetensors", "tokenizer.json", "chat_template.jinja", "generation_config.json"):
        assert (out / name).exists(), name
    config = json.loads((out / "config.json").read_text())
    assert config["architectures"] == ["LlamaForCausalLM"] and config["vocab_size"] == 1024
    # The consolidated ZeRO-2 weights are the trained ones: the exported model, evaluated with
    # plain transformers on the validation windows the ranks used, scores what they measured.
    loop = pretrained["cfg"].pretrain
    n_windows = loop.eval_batches * loop.micro_batch_size * 2
    assert _val_loss_in_process(out, paths(data_home)["tokens"], n_windows) == pytest.approx(
        result.final_val_loss, abs=1e-4)
    text = "\n".join(pretrained["lines"])
    assert "checkpoint step_00000030 saved" in text and "2 rank(s) on cpu" in text
    # Resumed in place, recorded like every keyed output: same directory, a manifest with the run's key.
    job = pretrained["job"]
    manifest = read_manifest(job.run_dir)
    assert job.run_dir.name == f"tiny-{job.spec.key}" and manifest.key == job.spec.key
    assert manifest.stage == "pretrain" and manifest.summary["steps"] == 30
    # The checkpoints (gigabytes on a real model) are not hashed; what the run wrote beside them is.
    assert {"job.json", "result.json", "metrics.jsonl"} <= set(manifest.outputs)
    assert not [name for name in manifest.outputs if name.startswith("checkpoints/")]
    # DeepSpeed never unlinks its shared-memory all-reduce buffers (66 MB a rank): the supervisor does.
    assert job.leftovers and not [path for pattern in job.leftovers for path in glob.glob(pattern)]


def test_zero3_with_accumulation_and_activation_checkpointing(data_home, tmp_path):
    """ZeRO-3 partitions the weights themselves; export gathers them back (zero_to_fp32)."""
    cfg = training_config(tmp_path / "home", deepspeed={"zero_stage": 3, "activation_checkpointing": True},
                          pretrain={"steps": 10, "grad_accum_steps": 2, "eval_every": 10, "checkpoint_every": 10})
    job = prepare_pretrain(cfg, tokens=paths(data_home)["tokens"], track=False)
    assert job.spec.deepspeed["train_batch_size"] == 8 * 2 * 2
    result = run_training(job)
    assert result.final_val_loss < result.first_val_loss
    out = export_stage(cfg, job.run_dir).path
    n_windows = cfg.pretrain.eval_batches * cfg.pretrain.micro_batch_size * 2
    assert _val_loss_in_process(out, paths(data_home)["tokens"], n_windows) == pytest.approx(
        result.final_val_loss, abs=1e-4)


def _kill_tree(proc: psutil.Process) -> list[psutil.Process]:
    """SIGKILL the launcher and every rank at once: a crash, not a shutdown."""
    victims = [proc] + proc.children(recursive=True)
    for p in victims:
        with contextlib.suppress(psutil.NoSuchProcess):
            p.send_signal(signal.SIGKILL)
    psutil.wait_procs(victims, timeout=20)
    return victims


def test_a_killed_job_resumes_from_its_last_complete_checkpoint(data_home, tmp_path):
    from llmops.training.process import ProcessGroupJob

    steps = {"steps": 40, "checkpoint_every": 10}
    cfg = training_config(tmp_path / "home", pretrain=steps)
    job = prepare_pretrain(cfg, tokens=paths(data_home)["tokens"], track=False)
    runner = ProcessGroupJob(job.run_dir)
    runner.start(job.command, env=job.env, cwd=job.run_dir, log_path=job.log_path)
    for line in runner.lines():
        if "checkpoint step_00000020 saved" in line:
            break
    victims = _kill_tree(psutil.Process(runner.pid))
    assert len(victims) >= 4  # runner, launch.py, 2 ranks
    assert not any(v.is_running() and v.status() != psutil.STATUS_ZOMBIE for v in victims)
    runner.wait()
    assert not job.finished

    relaunched: list[str] = []
    result = run_training(job, relaunched.append)  # same inputs -> same run dir -> resume
    text = "\n".join(relaunched)
    assert "resuming from checkpoint step_00000020" in text or "resuming from checkpoint step_00000030" in text
    assert "step 0/40 val_loss" not in text and "step 10/40" not in text  # it did not start over
    assert result.steps == 40

    # Resuming restores weights, optimizer, LR schedule, data position and RNG: the
    # interrupted run ends exactly where an uninterrupted one does.
    reference_cfg = training_config(tmp_path / "reference", pretrain=steps)
    reference = run_training(prepare_pretrain(reference_cfg, tokens=paths(data_home)["tokens"], track=False))
    assert result.final_val_loss == pytest.approx(reference.final_val_loss, abs=1e-5)
    assert result.first_val_loss == pytest.approx(reference.first_val_loss, abs=1e-6)


@pytest.mark.parametrize("method,zero_stage", [("lora", 0), ("full", 1)])
def test_finetuning_from_the_pretrained_base(pretrained, data_home, tmp_path, method, zero_stage):
    import torch
    from safetensors.torch import load_file

    cfg = training_config(tmp_path / "home", deepspeed={"zero_stage": zero_stage},
                          finetune={"method": method, "lr": 3e-3 if method == "lora" else 1e-3})
    job = prepare_finetune(cfg, base=pretrained["model"], data=data_home / "qa.jsonl", track=False)
    lines: list[str] = []
    result = run_training(job, lines.append)
    assert result.final_val_loss < result.first_val_loss, result
    trainable = result.parameters.trainable
    total = result.parameters.total
    assert (trainable < total / 5) if method == "lora" else trainable == total
    out = export_stage(cfg, job.run_dir).path
    base = load_file(pretrained["model"] / "model.safetensors")
    tuned = load_file(out / "model.safetensors")
    assert set(tuned) == set(base)  # adapters merged: a plain Llama, no lora_ tensors
    changed = [k for k in base if not torch.equal(base[k], tuned[k])]
    assert changed and all("proj" in k for k in changed) if method == "lora" else len(changed) > len(base) / 2
    info = ModelInfo.read(out)
    assert info.kind == "finetune" and info.model.method == method and info.zero_stage == zero_stage

    from transformers import AutoModelForCausalLM, AutoTokenizer

    model, tok = AutoModelForCausalLM.from_pretrained(out), AutoTokenizer.from_pretrained(out)
    prompt = tok.apply_chat_template([{"role": "user", "content": "What is assert?"}], add_generation_prompt=True,
                                     return_tensors="pt", return_dict=True)
    generated = model.generate(**prompt, max_new_tokens=8, do_sample=False)
    assert generated.shape[1] > prompt["input_ids"].shape[1]


def test_training_is_tracked_in_mlflow(data_home, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    cfg = training_config(tmp_path / "home", pretrain={"steps": 10, "eval_every": 5, "checkpoint_every": 10},
                          mlflow={"system_metrics": True, "system_metrics_interval_s": 1.0})
    from llmops.registry import tracking

    parent = tracking.dag_run_parent(cfg, "llmops_train", "manual__test")
    job = prepare_pretrain(cfg, tokens=paths(data_home)["tokens"], mlflow_parent=parent)
    result = run_training(job)
    client = tracking.connect(tracking.tracking_uri(cfg))
    run = client.get_run(result.mlflow_run_id)
    assert run.data.tags["mlflow.parentRunId"] == parent
    assert run.data.params["world_size"] == "2" and run.data.params["zero_stage"] == "2"
    for metric in ("train_loss", "val_loss", "val_perplexity", "lr", "tokens_per_s"):
        assert metric in run.data.metrics, metric
    history = client.get_metric_history(run.info.run_id, "val_loss")
    assert [m.step for m in history] == [0, 5, 10]
    assert math.isclose(history[-1].value, result.final_val_loss, rel_tol=1e-6)
    artifacts = {a.path for a in client.list_artifacts(run.info.run_id)}
    assert {"loss_curve.png", "metrics.jsonl", "train.log", "config"} <= artifacts
    inputs = {d.dataset.name for d in run.inputs.dataset_inputs}
    assert {"tokens", "tokenizer"} <= inputs
    deadline = time.time() + 5
    def logged_system_metrics() -> bool:
        return any(k.startswith("system/") for k in client.get_run(run.info.run_id).data.metrics)

    while time.time() < deadline and not logged_system_metrics():
        time.sleep(0.5)
    assert logged_system_metrics()
