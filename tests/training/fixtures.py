"""Training fixtures (imported by tests/conftest.py, so each is built once per session): token
shards and a tokenizer from the Python reference topics (real text every interpreter ships),
question/answer pairs, and one tiny pretrained model that the fine-tuning (and later
evaluation) tests start from.

Everything runs for real: the ``deepspeed`` launcher, 2 CPU ranks, gloo, ZeRO.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from pydoc_data.topics import topics

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from llmops.config import LlmopsConfig, load_config, with_overrides

# Small and fast: 64-token windows, a 1,024-token vocabulary, short runs.
TRAIN_OVERRIDES = {
    "tokenizer": {"vocab_size": 1024, "window": 64, "stride": 64, "validation_fraction": 0.1},
    "deepspeed": {"ranks": 2, "zero_stage": 2},
    "pretrain": {"steps": 30, "micro_batch_size": 8, "eval_every": 10, "checkpoint_every": 10, "log_every": 5,
                 "warmup_steps": 5, "lr": 3e-3},
    "finetune": {"steps": 16, "micro_batch_size": 8, "eval_every": 8, "checkpoint_every": 8, "log_every": 4,
                 "warmup_steps": 2, "max_length": 96, "validation_fraction": 0.15},
    "mlflow": {"system_metrics": False},
}


def training_config(home: Path, **sections: dict) -> LlmopsConfig:
    cfg = load_config(environ={}, overrides={"home": str(home)})
    cfg = with_overrides(cfg, TRAIN_OVERRIDES)
    return with_overrides(cfg, sections) if sections else cfg


def qa_pairs() -> list[dict[str, str]]:
    """One pair per topic: its first sentence answers 'What is <topic>?'."""
    pairs = []
    for name, text in sorted(topics.items()):
        first = re.split(r"(?<=[.!?])\s", " ".join(text.split()), maxsplit=1)[0]
        if 20 <= len(first) <= 200:
            pairs.append({"question": f"What is {name}?", "answer": first, "page_id": name})
    return pairs


@pytest.fixture(scope="session")
def data_home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An LLMOPS_HOME holding a tokenizer, token shards and a Q&A file, via the real stages."""
    from llmops.data.pipeline import encode_stage, tokenizer_stage

    home = tmp_path_factory.mktemp("train_home")
    rows = [{"id": f"topic-{n}", "url": f"https://docs.python.org/3/reference/{n}.html", "title": n, "text": t}
            for n, t in sorted(topics.items())]
    corpus = home / "corpus.parquet"
    pq.write_table(pa.table({c: [r[c] for r in rows] for c in ("id", "url", "title", "text")}), corpus)
    cfg = training_config(home)
    tok = tokenizer_stage(cfg, corpus)
    tokens = encode_stage(cfg, corpus, tok.path)
    with open(home / "qa.jsonl", "w") as fh:
        for pair in qa_pairs():
            fh.write(json.dumps(pair) + "\n")
    (home / "paths.json").write_text(json.dumps({"tokens": str(tokens.path), "tokenizer": str(tok.path)}))
    return home


def paths(home: Path) -> dict[str, Path]:
    return {k: Path(v) for k, v in json.loads((home / "paths.json").read_text()).items()}


@pytest.fixture(scope="session")
def pretrained(data_home: Path) -> dict:
    """A tiny model pretrained for 30 steps by 2 DeepSpeed ranks (ZeRO-2), exported."""
    from llmops.training.export import export_stage
    from llmops.training.job import prepare_pretrain
    from llmops.training.runner import run_training

    cfg = training_config(data_home)
    job = prepare_pretrain(cfg, tokens=paths(data_home)["tokens"], track=False)
    lines: list[str] = []
    result = run_training(job, lines.append)
    model = export_stage(cfg, job.run_dir)
    return {"job": job, "result": result, "model": model.path, "lines": lines, "cfg": cfg}
