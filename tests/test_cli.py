"""Every subcommand explains itself; failures are one line and a non-zero exit code."""

import argparse
import subprocess
import sys
from pathlib import Path

import pytest

from llmops.cli import build_parser, main

SUBCOMMANDS = [["config"], ["demo-site", "serve"], ["demo-site", "ground-truth"], ["demo-site", "publish"],
               ["scrape"], ["extract"], ["clean"], ["dedup"], ["redact"], ["qa"], ["tokenizer"], ["encode"],
               ["data", "run"], ["demo"],
               ["train", "pretrain"], ["train", "finetune"], ["train", "export"], ["evaluate"],
               ["serve", "start"], ["serve", "stop"], ["serve", "status"], ["deploy"], ["rollback"],
               ["generate"], ["stack", "start"], ["stack", "stop"], ["stack", "status"], ["drift", "check"],
               ["drift", "traffic"]]


@pytest.mark.parametrize("argv", SUBCOMMANDS, ids=" ".join)
def test_help_on_every_subcommand(argv, capsys):
    with pytest.raises(SystemExit) as exc:
        main([*argv, "--help"])
    assert exc.value.code == 0
    assert len(capsys.readouterr().out) > 100


def test_parser_lists_every_subcommand():
    choices = build_parser()._subparsers._group_actions[0].choices
    assert {argv[0] for argv in SUBCOMMANDS} == set(choices)


def test_failure_is_one_line_and_nonzero(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "llmops.cli", "clean", "--in", str(tmp_path / "missing.parquet")],
                          capture_output=True, text=True, env={"LLMOPS_HOME": str(tmp_path), "PATH": "/usr/bin"})
    assert proc.returncode == 1
    assert proc.stderr.strip().count("\n") == 0
    assert proc.stderr.startswith("llmops: error: FileNotFoundError")


def test_config_error_exits_2_naming_the_key(tmp_path, capsys):
    bad = tmp_path / "bad.yaml"
    bad.write_text("scrape:\n  timeout_s: -1\n")
    assert main(["--config", str(bad), "config"]) == 2
    assert "scrape.timeout_s" in capsys.readouterr().err


def test_stage_cli_writes_to_out_and_reuses(tmp_path, capsys):
    from llmops.data import store
    from tests.data.test_clean import ENGLISH, _row

    src = tmp_path / "docs.parquet"
    store.write_docs([_row(ENGLISH)], src, store.EXTRACT_SCHEMA)
    out = tmp_path / "cleaned"
    assert main(["clean", "--in", str(src), "--out", str(out)]) == 0
    assert (out / "docs.parquet").exists() and (out / "manifest.json").exists()
    assert main(["clean", "--in", str(src), "--out", str(out)]) == 0
    assert "reused" in capsys.readouterr().out


def test_bad_flag_values_are_config_errors(tmp_path, capsys):
    assert main(["scrape", "--seed", "http://127.0.0.1:1/", "--max-pages", "0", "--out", str(tmp_path / "o")]) == 2
    assert "scrape.max_pages" in capsys.readouterr().err
    assert main(["--config", str(tmp_path / "typo.yaml"), "config"]) == 2
    assert "does not exist" in capsys.readouterr().err


def test_training_preflight_error_is_one_line_before_any_process(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "llmops.cli", "train", "pretrain", "--no-mlflow",
                           "--tokens", str(tmp_path / "missing")],
                          capture_output=True, text=True, env={"LLMOPS_HOME": str(tmp_path), "PATH": "/usr/bin"})
    assert proc.returncode == 1
    assert proc.stderr.strip().splitlines()[-1].startswith("llmops: error: PreflightError: token shards")
    assert not (tmp_path / "runs").exists()  # nothing was prepared, nothing launched


def test_serve_status_shows_what_the_registry_says_a_ready_version_is(tmp_path, capsys):
    """``model_info.json`` as today's deployments write it (no ``schema_version``) is read as a record."""
    import shutil
    from types import SimpleNamespace

    from llmops.cli import _print_serve_status

    version_dir = tmp_path / "llmops" / "3"
    version_dir.mkdir(parents=True)
    shutil.copy(Path(__file__).parent / "serving" / "data" / "model_info_v0.json", version_dir / "model_info.json")
    model = SimpleNamespace(name="llmops", version="3", state="READY", reason="")
    st = SimpleNamespace(running=True, pid=1, ready=True, http_url="h", grpc_url="g", metrics_url="m",
                         repository=str(tmp_path), log_path="l", error=None, models=[model])
    _print_serve_status(st, "generated")
    assert "models:/llmops/3 (gate passed, run 0f1e2d3c4b5a, data card a1b2c3d4e5f60718)" in capsys.readouterr().out


def _subparser(*path: str):
    parser = build_parser()
    for name in path:
        parser = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction)).choices[name]
    return parser


@pytest.mark.parametrize(("command", "flag", "key"), [
    (("scrape",), "--max-pages", "scrape.max_pages"),
    (("train", "pretrain"), "--steps", "pretrain.steps"),
    (("train", "finetune"), "--lr", "finetune.lr"),
    (("train", "pretrain"), "--precision", "deepspeed.precision"),
    (("train", "finetune"), "--method", "finetune.method"),
    (("evaluate",), "--max-questions", "evaluation.max_questions"),
])
def test_a_config_flag_is_declared_by_its_field(command, flag, key):
    from llmops.config import field_description, field_schema

    action = next(a for a in _subparser(*command)._actions if flag in a.option_strings)
    schema = field_schema(key)
    branch = next(b for b in schema.get("anyOf", [schema]) if b.get("type") != "null")
    assert action.type is {"integer": int, "number": float, "string": str}[branch["type"]]
    assert action.choices == branch.get("enum")
    assert action.help.startswith(field_description(key)) and key in action.help
