"""Serving benchmark: the embedded Triton server against itself and against no server at all.

One Triton server (free ports, a temporary home) serves the same model under two names:

- ``llmops``: the production config (``serving.*``: dynamic batcher, ``max_batch_size`` 8,
  preferred batches 4 and 8, 2 ms queue delay);
- ``llmops_nobatch``: the same config without the ``dynamic_batching`` block. Triton's
  default scheduler then hands each request to ``execute`` alone. ``max_batch_size`` stays
  8 so both models take exactly the same request tensors (``[1, 1]``); ``max_batch_size``
  0 would change the input shapes, and so the client code, and measure that too.

Both have ``serving.instance_count`` (1) instance(s) with ``serving.threads_per_instance``
(1) torch threads; the pair is served again with 2 instances (rows ending in ``_2inst``).
Every request is one of eight fixed questions, greedy, ``max_tokens`` 32; warm-up
requests are not counted. Measured (each ratio from the same run, the number to compare
across machines):

- req/s with 8 concurrent clients (threads, one tritonclient HTTP client each), batched
  vs not, the p50/p95 latency of each, the mean batch Triton executed and the mean time a
  request waited in Triton's queue; the modes alternate A-B-B-A so a neighbour's load on
  this shared machine falls on both alike;
- single requests one after another: gRPC p50 vs HTTP p50, and Triton (HTTP) p50 vs
  the same ``TextGenerator`` called in this process with the same torch thread count
  (what serving costs on top of the model). The three take turns request by request.

Known effect (Triton 2.51, one instance): now and then the dynamic batcher leaves a full
queue waiting for its 500 ms idle timeout although the instance is free (a lost wake-up;
the model's ``execute`` is idle meanwhile and Triton books the time as queue time). It
shows as a p95 near 600 ms and a lower req/s for ``llmops``; with 2 instances it did not
occur in our runs.

The model is the newest fine-tuned model of ``$LLMOPS_HOME`` (``make demo`` makes one);
on a fresh machine a randomly initialised model of the ``tiny`` preset with a tokenizer
trained on ``pydoc_data.topics`` stands in (same shape and cost per token; its answers
rarely stop before ``max_tokens``, the demo model's after about 16 tokens).
"""

from __future__ import annotations

import contextlib
import statistics
import threading
import time
from pathlib import Path
from typing import Any, TypedDict

QUESTIONS = (
    "What is the for statement?",
    "How do I define a function?",
    "What does the with statement do?",
    "Explain list comprehensions.",
    "What is a generator?",
    "How are exceptions raised?",
    "What is the import system?",
    "What does the yield expression do?",
)
MAX_TOKENS = 32
CONCURRENCY = 8
PER_THREAD = 20      # measured requests per client thread and mode, split over two rounds
WARMUP = 2           # per client thread, before every measured round
SINGLE = 24          # sequential requests per path (in-process, HTTP, gRPC)
BATCHED, NOBATCH = "llmops", "llmops_nobatch"
TWO_INSTANCES = True  # also serve both with instance_count 2 (the rows ending in _2inst)
def _demo_model(home: Path) -> Path | None:
    """The newest fine-tuned model under ``home/artifacts/model`` that is complete enough to serve."""
    from llmops.layout import Layout
    from llmops.records.training import ModelInfo
    from llmops.serving.repository import check_hf_dir

    found = []
    for meta in Layout(home).stage_dir("model").glob(f"*/{ModelInfo.NAME}"):
        try:
            if ModelInfo.read(meta).kind == "finetune":
                found.append((meta.stat().st_mtime, check_hf_dir(meta.parent)))
        except (OSError, ValueError):  # unreadable record (RecordError) or incomplete export (FileNotFoundError)
            continue
    return max(found)[1] if found else None


def _random_model(work: Path, seed: int = 0) -> Path:
    """A randomly initialised ``tiny``-preset Llama with a tokenizer trained on pydoc's topics."""
    from pydoc_data.topics import topics

    import pyarrow as pa
    import pyarrow.parquet as pq
    import torch
    from transformers import AutoTokenizer, GenerationConfig, LlamaForCausalLM

    from llmops.config import TokenizerConfig
    from llmops.data.qa import chat_template
    from llmops.tokenizer.train import run_tokenizer
    from llmops.training.model import llama_config, load_preset

    names = sorted(topics)
    corpus = work / "serving_corpus.parquet"
    pq.write_table(pa.table({"id": names, "url": [""] * len(names), "text": [topics[n] for n in names]}), corpus)
    tcfg = TokenizerConfig()
    tok_dir = work / "serving_tokenizer"
    run_tokenizer(corpus, tok_dir, tcfg, chat_template=chat_template(tcfg))
    tokenizer = AutoTokenizer.from_pretrained(tok_dir)
    stop = [tokenizer.eos_token_id, tokenizer.convert_tokens_to_ids(tcfg.template_tokens[2])]
    config = llama_config(load_preset("tiny"), vocab_size=len(tokenizer), eos_id=stop[0],
                          pad_id=tokenizer.pad_token_id)
    config.use_cache = True
    torch.manual_seed(seed)
    model = LlamaForCausalLM(config)
    model.generation_config = GenerationConfig(eos_token_id=stop, pad_token_id=tokenizer.pad_token_id)
    dest = work / "serving_model"
    model.save_pretrained(dest)
    tokenizer.save_pretrained(dest)
    return dest


def _pct(values: list[float], q: float) -> float:
    """The q-th percentile (0-100) in ms, by linear interpolation between ranks."""
    ordered = sorted(values)
    pos = (len(ordered) - 1) * q / 100
    lo = int(pos)
    hi = min(lo + 1, len(ordered) - 1)
    return 1000 * (ordered[lo] + (ordered[hi] - ordered[lo]) * (pos - lo))


def _closed_loop(address: str, model: str, n: int) -> tuple[float, list[float], dict[str, tuple[str, int]]]:
    """``CONCURRENCY`` threads, each with its own HTTP client, send ``n`` requests each back to back.

    Returns (wall seconds of the measured part, per-request latencies, question -> (answer,
    completion tokens)). Every thread warms up first; the clock starts when all are warm.
    """
    from llmops.serving.client import generate, make_client

    latencies: list[list[float]] = [[] for _ in range(CONCURRENCY)]
    answers: dict[str, tuple[str, int]] = {}
    errors: list[BaseException] = []
    warm = threading.Barrier(CONCURRENCY + 1)
    done = threading.Barrier(CONCURRENCY + 1)

    def client_thread(k: int) -> None:
        client = make_client(address, "http", timeout_s=300)
        try:
            for i in range(WARMUP):
                generate(QUESTIONS[(k + i) % len(QUESTIONS)], client=client, model=model, max_tokens=MAX_TOKENS)
            warm.wait()
            for i in range(n):
                question = QUESTIONS[(k + i) % len(QUESTIONS)]  # neighbours ask different questions
                started = time.perf_counter()
                answer = generate(question, client=client, model=model, max_tokens=MAX_TOKENS)
                latencies[k].append(time.perf_counter() - started)
                answers[question] = (answer.text, answer.completion_tokens)
        except BaseException as exc:  # noqa: BLE001 - reported by the caller
            errors.append(exc)
            warm.abort()
        finally:
            client.close()  # Triton's stop waits for open HTTP connections
            with contextlib.suppress(threading.BrokenBarrierError):
                done.wait()

    threads = [threading.Thread(target=client_thread, args=(k,), daemon=True) for k in range(CONCURRENCY)]
    for t in threads:
        t.start()
    try:
        warm.wait()
        started = time.perf_counter()
        done.wait()
        elapsed = time.perf_counter() - started
    except threading.BrokenBarrierError:  # a client failed while warming up
        done.abort()
        elapsed = 0.0
    for t in threads:
        t.join()
    if errors:
        raise RuntimeError(f"a client of {model} failed: {errors[0]!r}") from errors[0]
    return elapsed, [x for per in latencies for x in per], answers


def _model_stats(server: Any, model: str) -> dict[str, int]:
    """Triton's cumulative counters of ``model`` (statistics need the admin key)."""
    client = server.http_client()
    try:
        stats = client.get_inference_statistics(model, headers=server.admin_headers())["model_stats"][0]
    finally:
        client.close()
    queue = stats["inference_stats"]["queue"]
    infer = stats["inference_stats"]["compute_infer"]
    return {"inferences": int(stats["inference_count"]), "executions": int(stats["execution_count"]),
            "queue_ns": int(queue["ns"]), "queue_count": int(queue["count"]),
            "compute_infer_ns": int(infer["ns"]), "compute_infer_count": int(infer["count"])}


class _Mode(TypedDict):
    """One mode's closed-loop measurement."""

    rps: float
    p50: float
    p95: float
    mean_batch: float
    """Requests per ``execute`` call (Triton's statistics)."""
    queue_ms: float


class _Pair(TypedDict):
    batched: _Mode
    nobatch: _Mode
    answers_equal: bool
    mean_completion_tokens: float


def _ab(server: Any, batched: str, nobatch: str) -> _Pair:
    """Closed-loop runs of ``batched`` and ``nobatch`` in A-B-B-A rounds: per mode req/s,
    p50/p95 latency (ms), mean executed batch size and queue time (Triton's statistics)."""
    wall = {batched: 0.0, nobatch: 0.0}
    lat: dict[str, list[float]] = {batched: [], nobatch: []}
    answers: dict[str, dict[str, tuple[str, int]]] = {batched: {}, nobatch: {}}
    stats0 = {m: _model_stats(server, m) for m in wall}
    for model in (batched, nobatch, nobatch, batched):
        elapsed, latencies, seen = _closed_loop(server.http_address, model, PER_THREAD // 2)
        wall[model] += elapsed
        lat[model] += latencies
        answers[model] |= seen
    stats1 = {m: _model_stats(server, m) for m in wall}

    def mode(model: str) -> _Mode:
        d = {k: stats1[model][k] - stats0[model][k] for k in stats0[model]}
        return _Mode(rps=len(lat[model]) / wall[model], p50=_pct(lat[model], 50), p95=_pct(lat[model], 95),
                     mean_batch=d["inferences"] / max(1, d["executions"]),
                     queue_ms=d["queue_ns"] / 1e6 / max(1, d["queue_count"]))

    return _Pair(batched=mode(batched), nobatch=mode(nobatch), answers_equal=answers[batched] == answers[nobatch],
                 mean_completion_tokens=round(statistics.mean(t for _, t in answers[batched].values()), 1))


def _single(server: Any, cfg: Any, hf_dir: Path, device: str) -> dict[str, float]:
    """p50 (ms) of single requests one after another: in this process, over HTTP, over gRPC.

    The three paths take turns request by request (who goes first rotates), so a
    neighbour's load falls on all three alike. In-process runs with the torch thread
    count of a Triton CPU instance (``serving.threads_per_instance``).
    """
    import torch

    from llmops.serving import repository
    from llmops.serving.client import generate, make_client

    backend = repository.load_backend()
    s = cfg.serving
    gen = backend.TextGenerator.from_pretrained(hf_dir, device=device, default_max_tokens=s.default_max_tokens,
                                                max_tokens_limit=s.max_tokens_limit,
                                                max_prompt_tokens=s.max_prompt_tokens)
    threads_before = torch.get_num_threads()
    torch.set_num_threads(s.threads_per_instance)
    clients = {"http": make_client(server.http_address, "http"), "grpc": make_client(server.grpc_address, "grpc")}
    times: dict[str, list[float]] = {"inprocess": [], "http": [], "grpc": []}

    def once(path: str, question: str) -> float:
        t0 = time.perf_counter()
        if path == "inprocess":
            result = gen.generate([backend.GenerationRequest(question, max_tokens=MAX_TOKENS)])[0]
            if isinstance(result, Exception):
                raise result
        else:
            generate(question, client=clients[path], protocol=path, model=BATCHED, max_tokens=MAX_TOKENS)
        return time.perf_counter() - t0

    try:
        paths = list(times)
        for i in range(4):  # warm-up: first calls pay for lazy imports and allocator growth
            for path in paths:
                once(path, QUESTIONS[i])
        for i in range(SINGLE):
            for path in paths[i % 3:] + paths[:i % 3]:
                times[path].append(once(path, QUESTIONS[i % len(QUESTIONS)]))
    finally:
        torch.set_num_threads(threads_before)
        for client in clients.values():
            client.close()
    return {path: _pct(v, 50) for path, v in times.items()}


def bench_serving(work: Path) -> dict:
    """The serving rows of ``make bench`` (see the module docstring); ``serving_skipped`` says why not."""
    import torch

    from llmops.config import load_config, with_overrides
    from llmops.records.serving import RegistryFacts
    from llmops.serving import repository
    from llmops.serving.server import ServerError, TritonServer, locate_tritonserver
    from llmops.stack import free_ports

    section_started = time.perf_counter()
    try:
        locate_tritonserver()
    except ServerError as exc:
        return {"serving_skipped": str(exc)}

    home = work / "serving_home"
    hf_dir = _demo_model(load_config().home)
    model_label = f"demo finetune {hf_dir.name}" if hf_dir else "random tiny preset (no demo model; make demo)"
    if hf_dir is None:
        hf_dir = _random_model(work)
    http, grpc, metrics = free_ports(3)
    cfg = load_config(environ={}, overrides={"home": str(home), "serving": {
        "http_port": http, "grpc_port": grpc, "metrics_port": metrics, "startup_timeout_s": 300.0}})
    gpu = torch.cuda.is_available()
    kind, device = ("gpu", "cuda:0") if gpu else ("cpu", "cpu")
    variants = {"": cfg}
    if TWO_INSTANCES:
        variants["_2inst"] = with_overrides(cfg, {"serving": {"instance_count": 2}})
    for suffix, vcfg in variants.items():
        for name in (BATCHED + suffix, NOBATCH + suffix):
            repository.build_version(vcfg, hf_dir=hf_dir, name=name, version=1,
                                     info=RegistryFacts(model_uri=hf_dir.resolve().as_uri()), kind=kind)
        repository.write_config(vcfg, NOBATCH + suffix, kind=kind, dynamic_batching=False)

    server = TritonServer(cfg)
    started = time.perf_counter()
    server.start()  # loads every model in the repository
    startup_s = time.perf_counter() - started
    try:
        pairs = {"": _ab(server, BATCHED, NOBATCH)}
        if TWO_INSTANCES:
            pairs["_2inst"] = _ab(server, BATCHED + "_2inst", NOBATCH + "_2inst")
        single = _single(server, cfg, hf_dir, device)
    finally:
        server.stop(timeout=30)

    rows = {
        "serving_model": model_label,
        "serving_device": kind,
        "serving_max_tokens": MAX_TOKENS,
        "serving_mean_completion_tokens": pairs[""]["mean_completion_tokens"],
        "serving_startup_s": round(startup_s, 1),
        "serving_requests_per_mode_c8": CONCURRENCY * PER_THREAD,
    }
    for suffix, r in pairs.items():
        for mode in ("batched", "nobatch"):
            rows[f"serving_req_per_s_c8_{mode}{suffix}"] = round(r[mode]["rps"], 2)
        rows[f"serving_throughput_ratio_batched_vs_nobatch{suffix}"] = round(
            r["batched"]["rps"] / r["nobatch"]["rps"], 2)
        for mode in ("batched", "nobatch"):
            rows[f"serving_p50_ms_c8_{mode}{suffix}"] = round(r[mode]["p50"], 1)
            rows[f"serving_p95_ms_c8_{mode}{suffix}"] = round(r[mode]["p95"], 1)
        for mode in ("batched", "nobatch"):
            rows[f"serving_mean_batch_size_c8_{mode}{suffix}"] = round(r[mode]["mean_batch"], 2)
        rows[f"serving_queue_ms_mean_c8_batched{suffix}"] = round(r["batched"]["queue_ms"], 1)
        # Greedy decoding: a row's answer must not depend on its batch companions.
        rows[f"serving_batched_answers_equal_nobatch{suffix}"] = r["answers_equal"]
    if TWO_INSTANCES:
        rows["serving_batched_2inst_vs_1inst_req_per_s_ratio"] = round(
            pairs["_2inst"]["batched"]["rps"] / pairs[""]["batched"]["rps"], 2)
    rows |= {
        "serving_single_p50_ms_http": round(single["http"], 1),
        "serving_single_p50_ms_grpc": round(single["grpc"], 1),
        "serving_single_p50_ms_inprocess": round(single["inprocess"], 1),
        "serving_grpc_vs_http_p50_ratio": round(single["grpc"] / single["http"], 2),
        "serving_triton_http_vs_inprocess_p50_ratio": round(single["http"] / single["inprocess"], 2),
        "serving_section_s": round(time.perf_counter() - section_started, 1),
    }
    return rows


if __name__ == "__main__":  # this section alone: .venv/bin/python bench/serving.py
    import sys
    import tempfile

    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    with tempfile.TemporaryDirectory() as tmp:
        rows = bench_serving(Path(tmp))
    print("\n| metric | value |\n|---|---|")
    for key, value in rows.items():
        print(f"| {key} | {value} |")
