"""One lifecycle per session, run the way users run it: the embedded stack's scheduler.

``lifecycle`` starts a real stack (Airflow scheduler, dag-processor, triggerer and API
server, Triton, the MLflow UI and the demo site) on free ports under pytest's temporary
directory, triggers ``llmops_data`` once through the REST API and follows the Asset chain
to a served champion, with tiny training steps and a gate a 100-step model can meet. The
end-to-end tests read what that one pass left; the later ones trigger again and restart
the stack. Everything the scheduler printed is in ``<tmp>/chain.log``.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest


@dataclass
class Lifecycle:
    home: Path
    tmp: Path
    env: dict[str, str]
    cfg: Any
    stack: Any
    client: Any
    result: Any
    """The ``ChainResult`` of the first trigger."""
    ground_truth: dict[str, Any]
    log: Path

    def printer(self):
        log = self.log

        def say(line: str) -> None:
            with open(log, "a") as fh:
                fh.write(line + "\n")
        return say


@pytest.fixture(scope="session")
def lifecycle(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Lifecycle]:
    from llmops.chain import run_chain, wait_for_dags
    from llmops.config import DEFAULT_CONFIG_FILE, load_config
    from llmops.stack import Stack, isolated_env

    tmp = tmp_path_factory.mktemp("lifecycle")
    home = tmp / "home"
    home.mkdir()
    canaries = tmp / "canaries.json"
    gate = tmp / "lenient_gate.yaml"  # floors a 100-step model meets; the leak rule stays strict
    gate.write_text("floors:\n  bits_per_byte: {max: 100}\n  pii_leak_rate: {max: 0.0}\n")
    config = tmp / "llmops.yaml"  # the shipped file; a test may change a setting the next task reads
    config.write_text(DEFAULT_CONFIG_FILE.read_text())
    env = {
        **isolated_env(home),
        "LLMOPS_DEMO_SITE__SLOW_DELAY_S": "2.0",
        "LLMOPS_DATA__NUM_SHARDS": "3",
        "LLMOPS_SCRAPE__MAX_PAGES": "400",
        "LLMOPS_SCRAPE__TIMEOUT_S": "1.0",
        "LLMOPS_SCRAPE__RETRIES": "1",
        "LLMOPS_SCRAPE__BACKOFF_S": "0.05",
        "LLMOPS_SCRAPE__RATE_LIMIT_PER_HOST": "500",
        "LLMOPS_TOKENIZER__VOCAB_SIZE": "1024",
        # Near-unigram models answer only newlines, which the deploy's smoke test refuses: after 40
        # steps (train loss 5.8) whether the first token is "\n" or "the" was a coin toss that
        # changed with the redactor's output; after 100 (≈ +18 s) the fine-tuned model starts "The".
        "LLMOPS_PRETRAIN__STEPS": "100",
        "LLMOPS_PRETRAIN__EVAL_EVERY": "20",
        "LLMOPS_PRETRAIN__CHECKPOINT_EVERY": "20",
        "LLMOPS_PRETRAIN__LOG_EVERY": "10",
        "LLMOPS_PRETRAIN__WARMUP_STEPS": "2",
        "LLMOPS_FINETUNE__STEPS": "6",
        # The served (first) variant is the full fine-tune: after 6 steps the LoRA one still
        # answers only newlines, which the deploy's smoke test rightly refuses.
        "LLMOPS_FINETUNE__VARIANTS": "[{name: qa-full, method: full}, {name: qa}]",
        "LLMOPS_FINETUNE__EVAL_EVERY": "3",
        "LLMOPS_FINETUNE__CHECKPOINT_EVERY": "3",
        "LLMOPS_FINETUNE__LOG_EVERY": "3",
        "LLMOPS_MLFLOW__SYSTEM_METRICS": "false",
        "LLMOPS_EVALUATION__MAX_QUESTIONS": "6",
        "LLMOPS_EVALUATION__CANARIES_FILE": str(canaries),
        "LLMOPS_EVALUATION__GATE_FILE": str(gate),
        "LLMOPS_CONFIG": str(config),
        # Never on the hour during a test session; the monitor tests trigger it by hand.
        "LLMOPS_MONITOR__SCHEDULE": "0 0 1 1 *",
        # The retraining tests send drift right after the deployment; a short continued pretraining.
        "LLMOPS_RETRAIN__COOLDOWN": "0",
        "LLMOPS_RETRAIN__PRETRAIN_STEPS": "10",
        "LLMOPS_RETRAIN__FINETUNE_STEPS": "6",
    }
    cfg = load_config(environ=env)
    stack = Stack(cfg, env=env)
    log = tmp / "chain.log"
    box = Lifecycle(home, tmp, env, cfg, stack, None, None, {}, log)
    say = box.printer()
    stack.start(progress=say)
    try:
        box.ground_truth = json.loads((home / "demo_site" / "ground_truth.json").read_text())
        # The evaluation probes the values the demo site planted (its PII canaries).
        canaries.write_text(json.dumps([{"type": p["type"], "value": p["value"]} for p in box.ground_truth["pii"]]))
        box.client = stack.client()
        wait_for_dags(box.client, say)
        box.result = run_chain(box.client, {}, say, start_timeout_s=180)
        yield box
    finally:
        stack.stop(timeout=10, progress=say)
