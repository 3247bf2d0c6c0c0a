"""Monitoring benchmark: what the inference log costs a request.

One embedded Triton server (free ports, a temporary home) serves the same exported model
under two names, with the production serving config (``serving.*``) and one difference:

- ``log_on``: ``monitor.inference_log`` true (its ``config.pbtxt`` names the log directory,
  so ``model.py`` measures every question and queues a record for its writer thread);
- ``log_off``: ``monitor.inference_log`` false (no writer, no prompt measurement).

Single requests one after another over gRPC (one client per model for the whole run),
reference questions (``llmops.monitoring.traffic``, the same in the four blocks of a round),
``max_tokens`` 8 (short answers make the per-request cost of logging as large a share as
it gets). The modes run in blocks A-B-B-A (on, off, off, on; ``rounds`` repeats the
sequence) so a neighbour's load on this shared machine falls on both alike. Reported: p50
per mode over all its requests, the overhead p50_on / p50_off - 1 (goal: at most 5%), the
spread of each mode (max / min - 1 of the p50s of its first and second half of blocks:
with one round, its two blocks; an overhead smaller than the spreads is noise), the mean
time Triton booked for the model's ``execute`` per request in each mode (no client, no
network in it), and the records read back from the log: exactly one per measured
``log_on`` request, none from ``log_off``.

On a shared 2-core machine a neighbour's burst moves a 250-request block by 5-30%, more
than the effect measured; ``requests_per_block=2, rounds=125`` (nearly request by request)
is the steadier estimate there.

What logging adds to a request, measured in-process on the tiny model: the question's
likelihood from the prompt's logits (about 0.1 ms of 11 ms) and the record handed to the
queue (microseconds); the writer thread's work (language, token counts, JSON, about
0.15-0.35 ms a record) runs off the request path but shares the instance's GIL and cores.

The model is the newest fine-tuned model of ``$LLMOPS_HOME`` when there is one, else a
randomly initialised ``tiny`` preset (``bench/serving.py``'s helpers).
"""

from __future__ import annotations

import statistics
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))  # bench/serving.py, when run as a script

from serving import _demo_model, _model_stats, _random_model  # noqa: E402 - bench/ is not a package

ON, OFF = "log_on", "log_off"
MAX_TOKENS = 8
WARMUP = 30
"""Requests per model before the first block (lazy imports, allocator growth); not counted."""
GOAL_OVERHEAD_PCT = 5.0
FLUSH_WAIT_S = 10.0
"""How long to wait for the writer thread to put the last records on disk."""


def _p50(values: list[float]) -> float:
    return statistics.median(values) if values else float("nan")


def _spread_pct(values: list[float]) -> float:
    return (max(values) / min(values) - 1) * 100


def _compute_infer(server: Any, model: str) -> tuple[int, int]:
    """Triton's cumulative (count, ns) of ``model``'s ``execute`` time."""
    stats = _model_stats(server, model)
    return stats["compute_infer_count"], stats["compute_infer_ns"]


def bench_monitoring(work: Path, requests_per_block: int = 250, rounds: int = 1) -> dict:
    """The monitoring rows of ``make bench`` (see the module docstring); ``monitoring_skipped`` says why not.

    ``rounds`` repeats the A-B-B-A sequence: smaller blocks in more rounds follow a
    neighbour's changing load more closely (``requests_per_block=2, rounds=125``
    alternates nearly request by request; block p50s, and so the spreads, then mean little).
    """
    import torch

    from llmops.config import load_config, with_overrides
    from llmops.monitoring.log import read_log
    from llmops.monitoring.traffic import reference_questions
    from llmops.records.serving import RegistryFacts
    from llmops.serving import repository
    from llmops.serving.client import generate, make_client
    from llmops.serving.server import ServerError, TritonServer, locate_tritonserver
    from llmops.stack import free_ports

    if requests_per_block < 1 or rounds < 1:
        raise ValueError(f"need requests_per_block >= 1 and rounds >= 1, got {requests_per_block}, {rounds}")
    section_started = time.perf_counter()
    try:
        locate_tritonserver()
    except ServerError as exc:
        return {"monitoring_skipped": str(exc)}

    hf_dir = _demo_model(load_config().home)
    model_label = f"demo finetune {hf_dir.name}" if hf_dir else "random tiny preset (no demo model; make demo)"
    if hf_dir is None:
        model_work = work / "monitoring_model"  # its own files: bench_serving may have built its own in work
        model_work.mkdir(parents=True, exist_ok=True)
        hf_dir = _random_model(model_work)
    log_dir = work / "monitoring_log"
    http, grpc, metrics = free_ports(3)
    cfg = load_config(environ={}, overrides={"home": str(work / "monitoring_home"), "serving": {
        "http_port": http, "grpc_port": grpc, "metrics_port": metrics, "startup_timeout_s": 300.0}})
    kind = "gpu" if torch.cuda.is_available() else "cpu"
    for name, logging in ((ON, True), (OFF, False)):
        mcfg = with_overrides(cfg, {"monitor": {"inference_log": logging, "log_dir": str(log_dir)}})
        repository.build_version(mcfg, hf_dir=hf_dir, name=name, version=1,
                                 info=RegistryFacts(model_uri=hf_dir.resolve().as_uri()), kind=kind)

    # Each round's four blocks ask the same questions; the next round asks the next ones.
    questions = reference_questions(requests_per_block * rounds, seed=0)
    latencies: dict[str, list[float]] = {ON: [], OFF: []}
    blocks: list[tuple[str, list[float]]] = []
    """(model, latencies in ms) of every block, in the order they ran."""
    errors: list[str] = []
    server = TritonServer(cfg)
    server.start()  # loads both models
    # One gRPC client per model for the whole run: a block starts on a warm connection.
    clients = {name: make_client(server.grpc_address, "grpc") for name in (ON, OFF)}

    def ask(name: str, question: str) -> float | None:
        started = time.perf_counter()
        try:
            generate(question, client=clients[name], protocol="grpc", model=name, max_tokens=MAX_TOKENS)
        except Exception as exc:  # noqa: BLE001 - counted and shown, the run goes on
            errors.append(f"{exc.__class__.__name__}: {exc}")
            return None
        return (time.perf_counter() - started) * 1000.0

    try:
        for name in (ON, OFF):
            for question in questions[:WARMUP]:
                ask(name, question)
        errors.clear()
        measured_from = time.time()
        compute0 = {name: _compute_infer(server, name) for name in (ON, OFF)}
        for r in range(rounds):
            asked = questions[r * requests_per_block:(r + 1) * requests_per_block]
            for name in (ON, OFF, OFF, ON):
                block = [ms for ms in (ask(name, q) for q in asked) if ms is not None]
                latencies[name] += block
                blocks.append((name, block))
        compute1 = {name: _compute_infer(server, name) for name in (ON, OFF)}
        deadline = time.monotonic() + FLUSH_WAIT_S
        while True:  # records reach the disk off the request path, well within a second
            written = read_log(log_dir, ON, since=measured_from)
            if written.stats.records >= len(latencies[ON]) or time.monotonic() > deadline:
                break
            time.sleep(0.2)
    finally:
        for client in clients.values():
            client.close()
        server.stop(timeout=30)
    failed = len(errors)
    off_records = read_log(log_dir, OFF).stats.records

    p50 = {name: statistics.median(values) for name, values in latencies.items() if values}
    # Spread: the p50 of a mode's first half of blocks against its second half's (with one
    # round, its two blocks), so it means the same whatever the block size.
    halves = {name: [b for n, b in blocks if n == name] for name in (ON, OFF)}
    half_p50 = {name: [_p50([ms for b in half for ms in b]) for half in (v[:rounds], v[rounds:])]
                for name, v in halves.items()}
    rows: dict = {
        "monitoring_model": model_label,
        "monitoring_device": kind,
        "log_max_tokens": MAX_TOKENS,
        "log_requests_per_mode": 2 * rounds * requests_per_block,
        "log_blocks_per_mode": 2 * rounds,
        "log_failed_requests": failed,
    }
    if errors:
        rows["log_first_error"] = errors[0]
    if len(p50) == 2:
        rows |= {
            "log_p50_ms_on": round(p50[ON], 2),
            "log_p50_ms_off": round(p50[OFF], 2),
            "log_overhead_p50_pct": round((p50[ON] / p50[OFF] - 1) * 100, 2),
            "log_overhead_goal_pct": GOAL_OVERHEAD_PCT,
            "log_spread_on_pct": round(_spread_pct(half_p50[ON]), 2),
            "log_spread_off_pct": round(_spread_pct(half_p50[OFF]), 2),
        }
    compute_ms = {name: (compute1[name][1] - compute0[name][1]) / 1e6 / max(1, compute1[name][0] - compute0[name][0])
                  for name in (ON, OFF)}
    rows |= {  # the model's own time per request, as Triton books it: no client, no network
        "log_compute_ms_mean_on": round(compute_ms[ON], 2),
        "log_compute_ms_mean_off": round(compute_ms[OFF], 2),
        "log_overhead_compute_mean_pct": round((compute_ms[ON] / compute_ms[OFF] - 1) * 100, 2),
    }
    if rounds <= 2:  # every block, in the order they ran (more would flood the table)
        for k, (name, block) in enumerate(blocks, 1):
            rows[f"log_p50_ms_block{k}_{name.removeprefix('log_')}"] = round(_p50(block), 2)
    rows |= {
        "log_records_written": written.stats.records,
        "log_records_expected": len(latencies[ON]),
        "log_records_dropped": written.stats.dropped,
        "log_records_log_off": off_records,
        "monitoring_section_s": round(time.perf_counter() - section_started, 1),
    }
    return rows


# ---- the drift check: time per 10 000 logged requests, and its calibration ----------------------

CHECK_RECORDS = 10_000
VOCABULARY = 256


def _synthetic_records(n: int, version: str, start: float, seed: int = 0) -> list[Any]:
    """Requests shaped like the demo's (Zipf-like token counts over the top-K ids)."""
    import numpy as np

    from llmops.monitoring.log import InferenceRecord

    rng = np.random.default_rng(seed)
    out = []
    for k in range(n):
        tokens = int(rng.integers(3, 12))
        ids = np.minimum(rng.zipf(1.3, tokens) - 1, 2 * VOCABULARY)
        counts: dict[str, int] = {}
        for t in ids[ids < VOCABULARY]:
            counts[str(t)] = counts.get(str(t), 0) + 1
        question_bytes = int(tokens * rng.uniform(2.5, 4.0))
        bits = float(rng.normal(3.0, 0.3))
        out.append(InferenceRecord(
            time=start + k * 0.01, model="llmops", version=version, instance="bench", finish_reason="stop",
            compute_ms=float(rng.gamma(4.0, 5.0)), batch_size=1, prompt_tokens=tokens + 6, completion_tokens=8,
            question_bytes=question_bytes, question_tokens=tokens, bytes_per_token=question_bytes / tokens,
            language="en", top_token_counts=counts, other_tokens=int((ids >= VOCABULARY).sum()),
            nll=bits * question_bytes * 0.6931, bits_per_byte=bits))
    return out


def bench_drift_check(work: Path) -> dict:
    """Seconds ``llmops drift check`` takes over 10 000 logged requests (windows of 1 000, the
    log read, every signal, the calibration, the report and its plots; no MLflow), against
    reading the same log alone (the baseline measured in the same run)."""
    from llmops.config import load_config
    from llmops.monitoring import log as inference_log
    from llmops.monitoring.check import run_check
    from llmops.records.serving import RegistryFacts
    from llmops.serving import repository

    home = work / "drift_check_home"
    cfg = load_config(environ={}, overrides={"home": str(home), "serving": {"metrics_port": 1}})  # Triton down
    model_dir = work / "drift_check_model"
    model_dir.mkdir(parents=True, exist_ok=True)
    version_dir = repository.build_version(cfg, hf_dir=_random_model(model_dir), name="llmops", version=1,
                                           info=RegistryFacts(version="1"), kind="cpu")
    inference_log.write_vocabulary(version_dir, range(VOCABULARY))
    start = time.time() - CHECK_RECORDS * 0.01 - 60
    writer = inference_log.InferenceLogWriter(inference_log.log_dir(cfg), model="llmops", instance="bench")
    for record in _synthetic_records(CHECK_RECORDS, "1", start):
        while not writer.submit(inference_log.PendingRecord(record)):
            time.sleep(0.01)
    writer.close()

    started = time.perf_counter()
    read = inference_log.read_log(inference_log.log_dir(cfg), "llmops")
    read_s = time.perf_counter() - started
    started = time.perf_counter()
    report = run_check(cfg, window="1000", to_mlflow=False, progress=lambda line: None)
    check_s = time.perf_counter() - started
    scale = 10_000 / max(1, read.stats.records)
    return {
        "drift_check_records": read.stats.records,
        "drift_check_s_per_10k": round(check_s * scale, 2),
        "drift_read_log_s_per_10k": round(read_s * scale, 2),
        "drift_check_vs_read_log": round(check_s / read_s, 1),
        "drift_check_verdict": report.verdict,
    }


def bench_drift_calibration(work: Path, *, references: int = 10) -> dict:
    """The thresholds' false alarms and detection delay on the demo's model, with questions
    drawn from seeds the thresholds were not tuned on (README, "Monitoring").

    For each window size: ``references`` references (the model's held-out questions plus one
    window of reference-like traffic), each with ``monitor.calibration_windows`` resampled
    windows (false alarms), then every further reference-like window (flagged windows), then
    shifted windows after a normal one (windows until the verdict is drift). Questions are
    scored by the model in this process, as the check scores its reference.
    """
    import numpy as np

    from llmops.config import load_config
    from llmops.monitoring import drift, log as inference_log, traffic
    from llmops.monitoring.check import _questions, scored_records
    from llmops.registry.model_card import model_info
    from llmops.serving.repository import load_backend

    cfg = load_config()
    hf_dir = _demo_model(cfg.home)
    heldout = _heldout(hf_dir) if hf_dir else None
    if hf_dir is None or heldout is None:
        return {"drift_calibration_skipped": "needs the demo's trained model and its held-out questions (make demo)"}
    assert model_info(hf_dir) is not None
    vocabulary = (inference_log.corpus_token_ids(hf_dir) or [])[:cfg.monitor.top_k]
    backend = load_backend()
    generator = backend.TextGenerator.from_pretrained(hf_dir, max_prompt_tokens=cfg.serving.max_prompt_tokens)

    def scored(questions: list[str]) -> list[Any]:
        return scored_records(backend, generator, questions, vocabulary, model="llmops", version="bench")

    held = scored(_questions(heldout))
    normal = scored(traffic.reference_questions(600, seed=21))
    shifted = scored(traffic.shifted_questions(300, seed=22))
    monitor = cfg.monitor
    rng = np.random.default_rng(2)
    rows: dict = {"drift_calibration_model": hf_dir.name, "drift_calibration_heldout": len(held)}
    for n in (20, 50, 100):
        false_alarms = flagged = windows = 0
        delays = []
        for trial in range(references):
            order = rng.permutation(len(normal))
            reference = drift.Sample.of(held + [normal[i] for i in order[:n]], vocabulary)
            c = drift.calibrate(reference, n, monitor, seed=trial)
            false_alarms += c.false_alarms
            rest = [normal[i] for i in order[n:]]
            for first in range(0, len(rest) - n + 1, n):
                windows += 1
                flagged += drift.judge(reference, drift.Sample.of(rest[first:first + n], vocabulary), monitor,
                                       start=0, end=0).drifted
            picked = [shifted[i] for i in rng.permutation(len(shifted))[:3 * n]]
            delays.append(drift.detection_delay(reference, drift.Sample.of(rest[:n], vocabulary),
                                                drift.Sample.of(picked, vocabulary), n, monitor))
        rows |= {
            f"drift_false_alarm_rate_w{n}": round(false_alarms / (references * monitor.calibration_windows), 3),
            f"drift_flagged_normal_windows_w{n}": f"{flagged}/{windows}",
            f"drift_detection_windows_max_w{n}": max((d for d in delays if d is not None), default=None),
            f"drift_shift_missed_w{n}": sum(d is None for d in delays),
        }
    return rows


def _heldout(hf_dir: Path) -> Path | None:
    from llmops.records.data import DataCard
    from llmops.registry.model_card import model_info

    info = model_info(hf_dir)
    if info is None or info.data_card is None or not (Path(info.data_card.path) / DataCard.NAME).is_file():
        return None
    path = Path(DataCard.read(Path(info.data_card.path) / DataCard.NAME).outputs["qa"].path) / "heldout.jsonl"
    return path if path.is_file() else None


if __name__ == "__main__":  # this section alone: .venv/bin/python bench/monitoring.py [requests_per_block [rounds]]
    import json
    import tempfile

    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    with tempfile.TemporaryDirectory() as tmp:
        rows = bench_drift_check(Path(tmp)) | bench_drift_calibration(Path(tmp))
        rows |= bench_monitoring(Path(tmp), *(int(a) for a in sys.argv[1:3]))
    print(json.dumps(rows, indent=2))
