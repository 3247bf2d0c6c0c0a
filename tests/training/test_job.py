"""Preflight: every bad input fails before a process starts, with a message saying what to fix."""

from __future__ import annotations

import json
import shutil

import pytest

from llmops.records.common import CodeIdentity
from llmops.records.training import TrainingJobSpec
from llmops.training.deepspeed_config import DeepSpeedConfigError
from llmops.training.job import PreflightError, available_devices, prepare_finetune, prepare_pretrain
from tests.training.fixtures import paths, training_config


def test_a_good_job_builds_the_launcher_command(data_home):
    cfg = training_config(data_home)
    job = prepare_pretrain(cfg, tokens=paths(data_home)["tokens"], track=False)
    cmd = job.command
    assert cmd[1:4] == ["-u", "-m", "deepspeed.launcher.runner"]
    assert cmd[cmd.index("--num_gpus") + 1] == "2" and "--hostfile" not in cmd
    assert cmd[-4:] == ["--module", "llmops.training.worker", "--job", str(job.job_file)]
    spec = TrainingJobSpec.read(job.job_file)  # what the ranks read
    # A job an earlier test finished keeps its record (its port may differ): compare what keys it.
    assert (spec.key, spec.run_dir, spec.inputs, spec.model) == (job.spec.key, job.spec.run_dir, job.spec.inputs,
                                                               job.spec.model)
    assert spec.deepspeed["train_batch_size"] == 8 * 1 * 2
    assert spec.deepspeed["zero_optimization"]["stage"] == 2
    assert spec.launch.precision == "fp32" and spec.model.vocab_size == 1024
    assert spec.data.context_length == 64  # from the shards' meta.json window
    # same inputs and config -> the same run directory (a relaunch resumes there)
    assert prepare_pretrain(cfg, tokens=paths(data_home)["tokens"], track=False).run_dir == job.run_dir
    other = training_config(data_home, pretrain={"lr": 1e-3})
    assert prepare_pretrain(other, tokens=paths(data_home)["tokens"], track=False).run_dir != job.run_dir


def test_missing_shards_fail_before_launch(data_home, tmp_path):
    broken = tmp_path / "tokens"
    shutil.copytree(paths(data_home)["tokens"], broken)
    (broken / "train.bin").unlink()
    with pytest.raises(PreflightError, match=r"missing \['train.bin'\]"):
        prepare_pretrain(training_config(data_home), tokens=broken, track=False)
    with pytest.raises(PreflightError, match="not found"):
        prepare_pretrain(training_config(data_home), tokens=tmp_path / "nothing", track=False)
    with pytest.raises(PreflightError, match="no data card"):
        prepare_pretrain(training_config(tmp_path / "empty-home"), track=False)


def test_tokenizer_vocab_mismatch_fails(data_home, tmp_path):
    from llmops.data.pipeline import tokenizer_stage

    cfg = training_config(data_home)
    other_tok = tokenizer_stage(training_config(data_home, tokenizer={"vocab_size": 600}),
                                data_home / "corpus.parquet", out_dir=tmp_path / "tok600")
    tokens = tmp_path / "tokens"
    shutil.copytree(paths(data_home)["tokens"], tokens)
    manifest = json.loads((tokens / "manifest.json").read_text())
    manifest["inputs"]["tokenizer"]["path"] = str(other_tok.path / "tokenizer.json")
    (tokens / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(PreflightError, match="vocabulary mismatch.*1024.*600"):
        prepare_pretrain(cfg, tokens=tokens, track=False)


def test_invalid_deepspeed_config_fails(data_home, tmp_path):
    user = tmp_path / "ds.json"
    user.write_text(json.dumps({"zero_optimization": {"stage": 2, "overlap_com": True}}))
    cfg = training_config(data_home, deepspeed={"config_file": str(user)})
    with pytest.raises(DeepSpeedConfigError, match="overlap_com"):
        prepare_pretrain(cfg, tokens=paths(data_home)["tokens"], track=False)
    user.write_text(json.dumps({"optimizer": {"type": "Adam"}}))
    with pytest.raises(DeepSpeedConfigError, match="optimizer.*llmops config"):
        prepare_pretrain(cfg, tokens=paths(data_home)["tokens"], track=False)
    user.write_text("{not json")
    with pytest.raises(DeepSpeedConfigError, match="not JSON"):
        prepare_pretrain(cfg, tokens=paths(data_home)["tokens"], track=False)


def test_more_ranks_than_devices_fails(data_home):
    kind, n = available_devices()
    cfg = training_config(data_home, deepspeed={"ranks": n + 1})
    what = "GPUs" if kind == "gpu" else "CPU cores"
    with pytest.raises(PreflightError, match=f"ranks={n + 1} but this machine has {n} {what}"):
        prepare_pretrain(cfg, tokens=paths(data_home)["tokens"], track=False)


def test_context_longer_than_the_model_fails(data_home):
    cfg = training_config(data_home, pretrain={"context_length": 4096})
    with pytest.raises(PreflightError, match="exceeds the preset's max_position_embeddings"):
        prepare_pretrain(cfg, tokens=paths(data_home)["tokens"], track=False)


def test_multi_node_command_and_hostfile(data_home):
    """Several nodes cannot run here: check what would be launched."""
    cfg = training_config(data_home, deepspeed={"hosts": ["worker-0:4", "worker-1:4"], "ranks": 4,
                                                 "master_port": 29600, "launcher": "openmpi"})
    job = prepare_pretrain(cfg, tokens=paths(data_home)["tokens"], track=False)
    assert job.hostfile.read_text() == "worker-0 slots=4\nworker-1 slots=4\n"
    cmd = job.command
    flag = {cmd[i]: cmd[i + 1] for i in range(len(cmd) - 1) if cmd[i].startswith("--")}
    assert flag["--hostfile"] == str(job.hostfile) and flag["--num_nodes"] == "2" and flag["--num_gpus"] == "4"
    assert flag["--master_addr"] == "worker-0" and flag["--master_port"] == "29600"
    assert flag["--launcher"] == "openmpi"
    assert job.spec.launch.world_size == 8
    assert job.spec.deepspeed["train_batch_size"] == 8 * 8


def test_bad_hosts_entry_fails(data_home):
    cfg = training_config(data_home, deepspeed={"hosts": ["worker-0:four"]})
    with pytest.raises(PreflightError, match="worker-0:four"):
        prepare_pretrain(cfg, tokens=paths(data_home)["tokens"], track=False)


def test_finetune_preflight(data_home, tmp_path):
    cfg = training_config(data_home)
    with pytest.raises(PreflightError, match="no pretrained model"):  # a home where nothing was trained
        prepare_finetune(training_config(tmp_path / "empty-home"), data=data_home / "qa.jsonl", track=False)
    with pytest.raises(PreflightError, match="not a Hugging Face model directory"):
        prepare_finetune(cfg, base=tmp_path, data=data_home / "qa.jsonl", track=False)


def test_a_code_change_that_is_not_a_version_bump_resumes_in_the_same_run_dir(data_home, monkeypatch):
    """A fix in the CLI between a failed try and its retry must not restart training at step 0."""
    from llmops import artifacts
    from llmops.training import job as job_module

    cfg = training_config(data_home)
    job = prepare_pretrain(cfg, tokens=paths(data_home)["tokens"], track=False)
    assert job.spec.code == artifacts.code_identity()  # recorded for lineage
    other_code = CodeIdentity(version="9.9.9", source_sha256="0123456789ab", commit="f" * 40, dirty=True)
    monkeypatch.setattr(job_module, "code_identity", lambda: other_code)
    monkeypatch.setattr(job_module, "code_version", lambda: "git:ffffffffffff+dirty")
    retry = prepare_pretrain(cfg, tokens=paths(data_home)["tokens"], track=False)
    assert retry.run_dir == job.run_dir and retry.spec.code == other_code
    bumped = artifacts.StageVersion(artifacts.stage_version("pretrain") + 1)
    monkeypatch.setitem(artifacts.STAGE_VERSIONS, "pretrain", bumped)
    assert prepare_pretrain(cfg, tokens=paths(data_home)["tokens"], track=False).run_dir != job.run_dir


def test_the_same_shards_elsewhere_are_the_same_job(data_home, tmp_path):
    """Training keys on the shards' and the tokenizer's content, not on where they are (nor
    on the data card: a data run that changed nothing writes a new card, same shards)."""
    cfg = training_config(data_home)
    job = prepare_pretrain(cfg, tokens=paths(data_home)["tokens"], track=False)
    copy = tmp_path / "tokens"
    shutil.copytree(paths(data_home)["tokens"], copy)
    assert prepare_pretrain(cfg, tokens=copy, track=False).run_dir == job.run_dir
    assert "data_card" not in job.spec.inputs  # lineage (job.spec.lineage.data_card), not keyed
    assert job.spec.inputs["tokens"].hash == json.loads((copy / "manifest.json").read_text())["content_hash"]
