"""The ``llmops`` command line: one subcommand per stage, plus the demo.

Every subcommand has ``--help``; long work shows a progress bar; a failure exits
non-zero with a one-line reason (``-v`` adds the traceback).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from llmops.config import ConfigError, LlmopsConfig, field_description, field_schema, load_config

if TYPE_CHECKING:
    from llmops.records.serving import Protocol, ServerStatus

Handler = Callable[[argparse.Namespace, LlmopsConfig], int]


def _print_result(result: Any) -> None:
    print(f"{result.stage}: {'reused' if result.reused else 'wrote'} {result.path}")
    print(json.dumps(result.summary, indent=2, default=str))


# ---- handlers -------------------------------------------------------------------------


def cmd_config(args: argparse.Namespace, cfg: LlmopsConfig) -> int:
    data = cfg.model_dump(mode="json")
    if args.json:
        print(json.dumps(data, indent=2))
    else:
        import yaml

        print(yaml.safe_dump(data, sort_keys=False).rstrip())
    return 0


def cmd_demo_site_serve(args: argparse.Namespace, cfg: LlmopsConfig) -> int:
    from llmops.demo_site import serve_forever

    serve_forever(cfg.demo_site, port=args.port, access_log=args.access_log, ground_truth_out=args.ground_truth,
                  published=args.published or cfg.layout.demo_site_published)
    return 0


def cmd_demo_site_publish(args: argparse.Namespace, cfg: LlmopsConfig) -> int:
    from llmops.demo_site import publish_section, section_paths

    path = args.published or cfg.layout.demo_site_published
    entry, newly = publish_section(path, args.section)
    pages = len(section_paths(args.section))
    if not newly:
        print(f"{args.section}: already published on {entry.published_at.isoformat(timespec='seconds')} "
              f"({pages} pages, {path})")
        return 0
    print(f"published {args.section}: {pages} pages under /{args.section}/, recorded in {path}; "
          f"a demo site serving from that file serves them from its next request")
    return 0


def cmd_demo_site_ground_truth(args: argparse.Namespace, cfg: LlmopsConfig) -> int:
    from llmops.demo_site import build_site, write_ground_truth

    site = build_site(cfg.demo_site)
    write_ground_truth(site, args.out)
    gt = site.ground_truth
    print(f"wrote {args.out}: {len(gt.pages)} pages, {len(gt.pii)} planted PII values, "
          f"{len(gt.duplicates)} duplicates, {len(gt.faults)} faults")
    return 0


def cmd_scrape(args: argparse.Namespace, cfg: LlmopsConfig) -> int:
    from llmops.data.pipeline import default_crawl_id, scrape_stage

    if args.max_pages is not None:  # validated like the YAML value (max_pages >= 1)
        cfg = load_config(args.config, overrides={"scrape": {"max_pages": args.max_pages}})
    result = scrape_stage(cfg, args.seed, args.crawl_id or default_crawl_id(), sitemap_url=args.sitemap,
                          previous=args.previous, progress=True, out_dir=args.out)
    _print_result(result)
    return 0


def cmd_extract(args: argparse.Namespace, cfg: LlmopsConfig) -> int:
    from llmops.data.pipeline import extract_stage

    _print_result(extract_stage(cfg, args.crawl, args.shard, args.num_shards, progress=True, out_dir=args.out))
    return 0


def cmd_clean(args: argparse.Namespace, cfg: LlmopsConfig) -> int:
    from llmops.data.pipeline import clean_stage

    _print_result(clean_stage(cfg, args.input, progress=True, out_dir=args.out))
    return 0


def cmd_dedup(args: argparse.Namespace, cfg: LlmopsConfig) -> int:
    from llmops.data.pipeline import dedup_stage

    _print_result(dedup_stage(cfg, args.input, out_dir=args.out))
    return 0


def cmd_redact(args: argparse.Namespace, cfg: LlmopsConfig) -> int:
    from llmops.data.pii import redact_jsonl

    if args.operator or args.entities:
        entities = [e.strip() for e in args.entities.split(",")] if args.entities else None
        pii = {"operator": args.operator, "entities": entities}
        cfg = load_config(args.config, overrides={"pii": {k: v for k, v in pii.items() if v}})
    summary = redact_jsonl(args.input, args.out, cfg.pii, progress=True)
    print(json.dumps(summary, indent=2, default=str))
    return 0


def cmd_qa(args: argparse.Namespace, cfg: LlmopsConfig) -> int:
    from llmops.data.pipeline import qa_stage

    _print_result(qa_stage(cfg, args.input, out_dir=args.out))
    return 0


def cmd_tokenizer(args: argparse.Namespace, cfg: LlmopsConfig) -> int:
    from llmops.data.pipeline import tokenizer_stage

    overrides = {k: v for k, v in {"vocab_size": args.vocab_size, "reuse": args.reuse}.items() if v is not None}
    if overrides:
        cfg = load_config(args.config, overrides={"tokenizer": overrides})
    _print_result(tokenizer_stage(cfg, args.input, out_dir=args.out))
    return 0


def cmd_encode(args: argparse.Namespace, cfg: LlmopsConfig) -> int:
    from llmops.data.pipeline import encode_stage

    _print_result(encode_stage(cfg, args.input, args.tokenizer, progress=True, out_dir=args.out))
    return 0


def cmd_data_run(args: argparse.Namespace, cfg: LlmopsConfig) -> int:
    from llmops.data.pipeline import format_report, run_data_pipeline, write_report

    report = run_data_pipeline(cfg, seed_url=args.seed, progress=True, full=not args.corpus_only)
    out = write_report(cfg.home, f"cli-{report.corpus.hash}", report)
    print(format_report(report))
    print(f"report: {out}")
    return 0


def _training_overrides(args: argparse.Namespace, section: str) -> dict[str, Any]:
    loop = {"steps": args.steps, "lr": args.lr, "micro_batch_size": args.micro_batch_size,
            "grad_accum_steps": args.grad_accum_steps, "seed": args.seed}
    if section == "pretrain":
        loop["preset"] = args.preset
    else:
        loop["method"] = args.method
    return {section: loop, "deepspeed": {"ranks": args.ranks, "zero_stage": args.zero_stage,
                                         "precision": args.precision, "config_file": args.deepspeed_config,
                                         "activation_checkpointing": args.activation_checkpointing or None}}


def _run_training(job: Any, args: argparse.Namespace, cfg: LlmopsConfig) -> int:
    from llmops.training.export import export_stage
    from llmops.training.runner import console_printer, run_training

    for note in job.notes:
        print(f"note: {note}")
    print(f"{job.kind} {job.name}: run directory {job.run_dir}")
    if args.dry_run:
        print(" ".join(job.command))
        return 0
    result = run_training(job, console_printer(args.verbose))
    first, final = result.first_val_loss, result.final_val_loss
    print(f"validation loss: {first:.4f} at step 0 -> {final:.4f} at step {result.steps}"
          if first is not None and final is not None else f"result: {result.model_dump_json()}")
    if not args.no_export:
        exported = export_stage(cfg, job.run_dir)
        print(f"model: {'reused' if exported.reused else 'exported'} {exported.path}")
    return 0


def cmd_train_pretrain(args: argparse.Namespace, cfg: LlmopsConfig) -> int:
    from llmops.config import with_overrides
    from llmops.training.job import prepare_pretrain

    cfg = with_overrides(cfg, _training_overrides(args, "pretrain"))
    job = prepare_pretrain(cfg, data_card=args.data_card, tokens=args.tokens,
                           track=not (args.no_mlflow or args.dry_run))
    return _run_training(job, args, cfg)


def cmd_train_finetune(args: argparse.Namespace, cfg: LlmopsConfig) -> int:
    from llmops.config import with_overrides
    from llmops.training.job import prepare_finetune

    cfg = with_overrides(cfg, _training_overrides(args, "finetune"))
    job = prepare_finetune(cfg, variant=args.variant, base=args.base, data=args.data, data_card=args.data_card,
                           track=not (args.no_mlflow or args.dry_run))
    return _run_training(job, args, cfg)


def cmd_train_export(args: argparse.Namespace, cfg: LlmopsConfig) -> int:
    from llmops.training.export import export_stage

    _print_result(export_stage(cfg, args.run, out_dir=args.out))
    return 0


def cmd_evaluate(args: argparse.Namespace, cfg: LlmopsConfig) -> int:
    from llmops.evaluation.evaluate import registered_as, run_evaluation

    if not str(args.model).startswith(("models:/", "runs:/")):  # a registered version is evaluated as asked
        registered = registered_as(cfg, Path(args.model))
        if registered:
            print(f"{args.model}: already registered as {registered}: nothing to evaluate "
                  f"(`--model {registered}` measures it again)")
            return 0
    out = run_evaluation(cfg, args.model, out_dir=args.out, champion=args.champion, tokens=args.tokens,
                         heldout=args.heldout, canaries=args.canaries, cases=args.cases, gate_file=args.gate,
                         max_questions=args.max_questions)
    metrics = out.metrics.model_dump(exclude_none=True)
    champion = out.champion.model_dump(exclude_none=True) if out.champion else {}
    width = max(len(k) for k in metrics)
    for key, value in metrics.items():
        base = champion.get(key)
        shown = f"{value:.4f}" if isinstance(value, float) else str(value)
        print(f"  {key:<{width}}  {shown}" + (f"   (champion {base:.4f})" if isinstance(base, float) else ""))
    print(out.gate.failure_message())
    print(f"report: {out.report_md}")
    return 0 if out.gate.passed else 3


def _print_serve_status(st: ServerStatus, key_source: str) -> None:
    """The served endpoints and models, for people."""
    from llmops.records.serving import ServedModelInfo

    if not st.running:
        print("Triton is not running")
        print(f"  would serve: {st.http_url} (HTTP), {st.grpc_url} (gRPC), {st.metrics_url}")
        print(f"  repository:  {st.repository}")
        print(f"  last log:    {st.log_path}")
        return
    print(f"Triton is running (pid {st.pid}), {'ready' if st.ready else 'NOT ready'}")
    print(f"  HTTP:        {st.http_url}")
    print(f"  gRPC:        {st.grpc_url}")
    print(f"  metrics:     {st.metrics_url}")
    print(f"  repository:  {st.repository}")
    print(f"  log:         {st.log_path}")
    print(f"  admin key:   {key_source}")
    if st.error:
        print(f"  models:      unknown ({st.error})")
    elif not st.models:
        print("  models:      none in the repository")
    else:
        print("  models:")
        for m in st.models:
            reason = f"  ({m.reason.splitlines()[0]})" if m.reason and m.state != "READY" else ""
            print(f"    {m.name:<24} version {m.version or '-':<4} {m.state or 'not loaded'}{reason}")
            version_dir = Path(st.repository or ".") / m.name / str(m.version)
            if m.state == "READY" and (version_dir / ServedModelInfo.NAME).exists():  # what the registry says it is
                facts = ServedModelInfo.read(version_dir)
                print(f"      {facts.model_uri or '?'} (gate {facts.gate_result or '?'}, run {facts.run_id or '?'}, "
                      f"data card {facts.data_card_hash or '?'})")


def cmd_deploy(args: argparse.Namespace, cfg: LlmopsConfig) -> int:
    from llmops.serving.deploy import deploy
    from llmops.serving.server import TritonServer

    server = TritonServer(cfg)
    if args.start_server and not server.is_running():
        print(f"starting Triton: {server.http_url}", file=sys.stderr, flush=True)
        server.start(progress=lambda line: print(line, file=sys.stderr, flush=True))
    uri = args.model_opt or args.model or f"models:/{cfg.serving.model_name}@challenger"
    result = deploy(cfg, uri, server=server, progress=lambda line: print(line, file=sys.stderr, flush=True))
    if args.json:
        print(json.dumps(result.dump(), indent=2))
    else:
        was = f" (was version {result.previous})" if result.previous else ""
        print(f"{result.status}: {result.model_uri}{was}; champion = version {result.version}")
    return 0


def cmd_rollback(args: argparse.Namespace, cfg: LlmopsConfig) -> int:
    from llmops.serving.deploy import rollback

    result = rollback(cfg, to_version=args.to_version, progress=lambda line: print(line, file=sys.stderr, flush=True))
    if args.json:
        print(json.dumps(result.dump(), indent=2))
    else:
        print(f"rolled back: serving {result.model_uri} (was version {result.previous}); champion = version "
              f"{result.version}")
    return 0


def _server_address(args: argparse.Namespace, cfg: LlmopsConfig) -> tuple[Protocol, str]:
    """The protocol and ``host:port`` the ``--grpc`` / ``--url`` flags (``_server_flags``) ask for."""
    protocol: Protocol = "grpc" if args.grpc else "http"
    return protocol, args.url or f"{cfg.serving.host}:{cfg.serving.grpc_port if args.grpc else cfg.serving.http_port}"


def _server_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--grpc", action="store_true", help="use gRPC instead of HTTP")
    parser.add_argument("--url", help="host:port of the server (default serving.host with serving.http_port/grpc_port)")


def cmd_generate(args: argparse.Namespace, cfg: LlmopsConfig) -> int:
    from llmops.serving.client import generate

    protocol, url = _server_address(args, cfg)
    answer = generate(args.question, url=url, protocol=protocol, model=args.model or cfg.serving.model_name,
                      max_tokens=args.max_tokens, temperature=args.temperature, top_p=args.top_p, seed=args.seed)
    if args.json:
        print(json.dumps(answer.model_dump(mode="json"), indent=2))
    else:
        print(answer.text)
        print(f"[{protocol} {url} · model version {answer.model_version} · {answer.prompt_tokens} prompt + "
              f"{answer.completion_tokens} completion tokens]", file=sys.stderr)
    return 0


def cmd_drift_check(args: argparse.Namespace, cfg: LlmopsConfig) -> int:
    from llmops.monitoring.check import run_check

    report = run_check(cfg, window=args.window, reference=args.reference, to_mlflow=not args.no_mlflow,
                       progress=(lambda line: print(line, file=sys.stderr)))
    if args.json:
        print(json.dumps(report.dump(), indent=2))
    else:
        print(f"{report.model} version {report.version}: {report.message}")
        for alert in report.service_alerts:
            print(f"  service alert (not a reason to retrain): {alert}")
        if report.calibration:
            c = report.calibration
            print(f"  calibration: {c.false_alarms} false alarms in {c.windows} windows of {c.window_requests} "
                  f"requests resampled from the reference ({c.false_alarm_rate:.0%})")
        print(f"  report: {report.report_dir}")
    return 3 if report.verdict == "drift" else 0


def cmd_drift_traffic(args: argparse.Namespace, cfg: LlmopsConfig) -> int:
    from llmops.monitoring import traffic

    make = traffic.reference_questions if args.topic == "reference" else traffic.shifted_questions
    protocol, url = _server_address(args, cfg)
    result = traffic.send(make(args.requests, seed=args.seed), url=url, protocol=protocol,
                          model=cfg.serving.model_name, max_tokens=args.max_tokens, concurrency=args.concurrency)
    print(f"{args.topic}: {result.answered} of {result.sent} questions answered by {url}"
          + (f"; {result.failed} failed: {result.errors[0]}" if result.failed else ""))
    return 0 if result.answered else 1


def cmd_serve_start(args: argparse.Namespace, cfg: LlmopsConfig) -> int:
    from llmops.serving.deploy import ensure_champion_in_repository
    from llmops.serving.server import TritonServer

    server = TritonServer(cfg)
    if not args.no_champion and not server.is_running():
        # Serve what MLflow says is champion (downloaded into the repository if missing).
        version = ensure_champion_in_repository(cfg, progress=lambda line: print(line, file=sys.stderr))
        if version is None and not args.json:
            print("no champion in the registry yet: starting with an empty llmops slot "
                  "(deploy one with `llmops deploy`)", file=sys.stderr)
    progress = (lambda line: print(line, file=sys.stderr, flush=True)) if not args.json else None
    if not args.json:
        print(f"starting Triton: {server.http_url} (log {server.log_path})", file=sys.stderr, flush=True)
    st = server.start(wait=not args.no_wait, progress=progress)
    if args.json:
        print(json.dumps(st.dump(), indent=2))
    else:
        _print_serve_status(st, server.admin_key_source)
    return 0


def cmd_serve_stop(args: argparse.Namespace, cfg: LlmopsConfig) -> int:
    from llmops.serving.server import TritonServer

    server = TritonServer(cfg)
    pid = server.pid
    if pid:  # Triton waits (up to 30 s) for open client connections to close: say why it may take a while
        print(f"stopping Triton (pid {pid}); it drains in-flight requests and open connections first",
              file=sys.stderr, flush=True)
    stopped = server.stop(timeout=args.timeout)
    print(f"stopped Triton (pid {pid})" if stopped else "Triton was not running")
    return 0


def cmd_serve_status(args: argparse.Namespace, cfg: LlmopsConfig) -> int:
    from llmops.serving.server import TritonServer

    server = TritonServer(cfg)
    st = server.status()
    if args.json:
        print(json.dumps(st.dump(), indent=2))
    else:
        _print_serve_status(st, server.admin_key_source)
    return 0 if st.running else 3


def _stack(args: argparse.Namespace, cfg: LlmopsConfig) -> Any:
    from llmops.stack import Stack

    # Tasks load the configuration themselves: a --config file must reach them too.
    return Stack(cfg, env={"LLMOPS_CONFIG": str(args.config.resolve())} if args.config else None)


def _stack_progress(args: argparse.Namespace) -> Callable[[str], None]:
    out = sys.stderr if args.json else sys.stdout  # --json keeps stdout for the document
    return lambda line: print(line, file=out, flush=True)


def cmd_stack_start(args: argparse.Namespace, cfg: LlmopsConfig) -> int:
    from llmops.stack import format_status

    st = _stack(args, cfg).start(progress=_stack_progress(args))
    if args.json:
        print(st.to_json())
    else:
        print(format_status(st))
        print("stop it with `llmops stack stop` (make stop); `llmops stack status` shows it again")
    return 0


def cmd_stack_stop(args: argparse.Namespace, cfg: LlmopsConfig) -> int:
    interrupted = _stack(args, cfg).stop(timeout=args.timeout, progress=_stack_progress(args))
    if args.json:
        print(json.dumps({"interrupted": interrupted}, indent=2))
    elif interrupted:
        print("interrupted (they run again when the stack starts):\n  " + "\n  ".join(interrupted))
    return 0


def cmd_stack_status(args: argparse.Namespace, cfg: LlmopsConfig) -> int:
    from llmops.stack import format_status

    st = _stack(args, cfg).status()
    print(st.to_json() if args.json else format_status(st))
    return 0 if st.healthy else 3


def cmd_demo(args: argparse.Namespace, cfg: LlmopsConfig) -> int:
    from llmops.demo import DEMO_ENV, run_demo

    if args.no_airflow:
        return run_demo(cfg, use_airflow=False)
    stack = _stack(args, cfg)
    # The demo retrains right after its first deployment: no cooldown, unless set.
    stack.extra_env.update({k: v for k, v in DEMO_ENV.items() if k not in os.environ})
    return run_demo(cfg, stack=stack)


# ---- parser ---------------------------------------------------------------------------


_FLAG_TYPES = {"integer": int, "number": float, "string": str}


def config_flag(parser: argparse.ArgumentParser, flag: str, dotted: str) -> None:
    """A flag overriding configuration field ``dotted``, declared by the field: its type,
    choices and help text are the field's, so a knob is declared once (``llmops/config.py``).
    Bounds are checked where the value is applied, like the YAML's, naming the key."""
    schema = field_schema(dotted)
    branch = next(b for b in schema.get("anyOf", [schema]) if b.get("type") != "null")
    help_text = f"{field_description(dotted)} (configuration key {dotted})"
    parser.add_argument(flag, type=_FLAG_TYPES[branch["type"]], choices=branch.get("enum"),
                        help=help_text.replace("%", "%%"))


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="llmops",
        description="Run the stages of the llmops language-model lifecycle. Settings come from "
        "include/llmops.yaml (or --config / $LLMOPS_CONFIG) and LLMOPS_<SECTION>__<KEY> variables; "
        "outputs go to $LLMOPS_HOME/artifacts/<stage>/<hash>/ unless --out is given.",
    )
    parser.add_argument("--config", type=Path, help="YAML configuration file (default: include/llmops.yaml)")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging and full tracebacks")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    def add(name: str, handler: Handler, help_: str, parent=sub) -> argparse.ArgumentParser:
        p = parent.add_parser(name, help=help_, description=help_)
        p.set_defaults(handler=handler)
        return p

    p = add("config", cmd_config, "Print the effective configuration (file + environment), validated.")
    p.add_argument("--json", action="store_true", help="JSON instead of YAML")

    demo_site = sub.add_parser("demo-site", help="The local demo website the demo crawls.",
                               description="A realistic local website generated from CPython's "
                               "pydoc_data.topics, with planted PII, duplicates and faults; sections "
                               "published on demand (library) add pages while it runs.")
    demo_sub = demo_site.add_subparsers(dest="demo_site_command", metavar="ACTION", required=True)
    p = add("serve", cmd_demo_site_serve, "Serve the demo site on 127.0.0.1 until Ctrl-C.", demo_sub)
    config_flag(p, "--port", "demo_site.port")
    p.add_argument("--access-log", type=Path, help="append one JSON line per request to this file")
    p.add_argument("--ground-truth", type=Path, help="also write the ground-truth JSON here (again whenever "
                   "the published sections change)")
    p.add_argument("--published", type=Path, help="serve the sections this published.json lists, following it "
                   "while serving (default: $LLMOPS_HOME/demo_site/published.json; no file: none)")
    p = add("publish", cmd_demo_site_publish, "Publish a section of the demo site (library).", demo_sub)
    p.description = (
        "Publish a section of the demo site on top of its /docs/ articles: record it in "
        "$LLMOPS_HOME/demo_site/published.json, which a running `llmops demo-site serve` follows, so the "
        "section's pages are served, linked from / and listed in sitemap.xml from its next request on, and "
        "by a restarted site too. Sections: library, one article per standard-library module the drift "
        "demo's shifted users ask about (/library/json.html ...). Publishing a section twice changes nothing.")
    p.add_argument("section", metavar="SECTION", help="the section to publish: library")
    p.add_argument("--published", type=Path, help="the published.json to update "
                   "(default: $LLMOPS_HOME/demo_site/published.json)")
    p = add("ground-truth", cmd_demo_site_ground_truth,
            "Write the ground truth (planted PII, duplicates, faults, boilerplate) as JSON.", demo_sub)
    p.add_argument("--out", type=Path, required=True, help="output JSON file")

    p = add("scrape", cmd_scrape, "Crawl a site into WARC files and a JSONL index (robots.txt, rate "
            "limits, retries, conditional re-fetch).")
    p.add_argument("--seed", required=True, help="start URL; the crawl stays on its host")
    p.add_argument("--sitemap", help="sitemap URL (default: <seed origin>/sitemap.xml and robots.txt)")
    p.add_argument("--out", type=Path, help="output directory (default: the artifact layout)")
    config_flag(p, "--max-pages", "scrape.max_pages")
    p.add_argument("--previous", type=Path, help="previous crawl directory for conditional re-fetch "
                   "(default: the newest crawl of the same seed)")
    p.add_argument("--crawl-id", help="identifies this crawl; the same id reuses a finished crawl")

    p = add("extract", cmd_extract, "Extract main text and metadata from a crawl's HTML (trafilatura).")
    p.add_argument("--crawl", type=Path, required=True, help="crawl directory (output of scrape)")
    p.add_argument("--shard", type=int, default=0, help="shard to process (default 0)")
    p.add_argument("--num-shards", type=int, default=1, help="number of shards (default 1)")
    p.add_argument("--out", type=Path, help="output directory (default: the artifact layout)")

    p = add("clean", cmd_clean, "Normalise text, split sentences and apply quality filters.")
    p.add_argument("--in", dest="input", type=Path, required=True, help="extract output (dir or docs.parquet)")
    p.add_argument("--out", type=Path, help="output directory (default: the artifact layout)")

    p = add("dedup", cmd_dedup, "Remove exact and near duplicates (MinHash LSH) across cleaned shards.")
    p.add_argument("--in", dest="input", type=Path, nargs="+", required=True,
                   help="clean outputs (dirs or docs.parquet files)")
    p.add_argument("--out", type=Path, help="output directory (default: the artifact layout)")

    p = add("redact", cmd_redact, "Redact PII (Presidio) from JSONL records: the `text` field is redacted, "
            "every other field kept, per-type counts added as `pii_counts`.")
    p.add_argument("--in", dest="input", type=Path, required=True, help="input JSONL (one record with `text` per line)")
    p.add_argument("--out", type=Path, required=True, help="output JSONL")
    config_flag(p, "--operator", "pii.operator")
    p.add_argument("--entities", help="comma-separated entity types (default: pii.entities)")

    p = add("qa", cmd_qa, "Build the question/answer set (fine-tuning and held-out, split by page) "
            "from a redacted corpus.")
    p.add_argument("--in", dest="input", type=Path, required=True, help="redact output (dir or corpus.parquet)")
    p.add_argument("--out", type=Path, help="output directory (default: the artifact layout)")

    p = add("tokenizer", cmd_tokenizer, "Train a byte-level BPE tokenizer on a redacted corpus, or reuse one.")
    p.add_argument("--in", dest="input", type=Path, required=True, help="redact output (dir or corpus.parquet)")
    config_flag(p, "--vocab-size", "tokenizer.vocab_size")
    p.add_argument("--reuse", help="tokenizer.json or its directory to reuse instead of training")
    p.add_argument("--out", type=Path, help="output directory (default: the artifact layout)")

    p = add("encode", cmd_encode, "Encode a redacted corpus into token-ID shards (train/validation).")
    p.add_argument("--in", dest="input", type=Path, required=True, help="redact output (dir or corpus.parquet)")
    p.add_argument("--tokenizer", type=Path, required=True, help="tokenizer output directory")
    p.add_argument("--out", type=Path, help="output directory (default: the artifact layout)")

    data = sub.add_parser("data", help="The whole data pipeline in one process (no Airflow).",
                          description="The whole data pipeline in one process (no Airflow).")
    data_sub = data.add_subparsers(dest="data_command", metavar="ACTION", required=True)
    p = add("run", cmd_data_run, "scrape -> extract -> clean -> dedup -> redact -> qa, tokenizer -> encode "
            "-> data card, in this process.", data_sub)
    p.add_argument("--seed", help="start URL (default: data.seed_url)")
    p.add_argument("--corpus-only", action="store_true", help="stop after dedup (no redaction, tokens, card)")

    train = sub.add_parser("train", help="DeepSpeed pretraining and fine-tuning (launches the ranks).",
                           description="DeepSpeed pretraining and fine-tuning. Each job runs `deepspeed` with "
                           "N ranks in its own process group, checkpoints every K steps, resumes from the newest "
                           "complete checkpoint when relaunched, logs to MLflow and exports a Hugging Face "
                           "directory under $LLMOPS_HOME/artifacts/model/.")
    train_sub = train.add_subparsers(dest="train_command", metavar="ACTION", required=True)

    def training_flags(p: argparse.ArgumentParser, section: str) -> None:
        for flag, key in (("--steps", "steps"), ("--lr", "lr"), ("--micro-batch-size", "micro_batch_size"),
                          ("--grad-accum-steps", "grad_accum_steps"), ("--seed", "seed")):
            config_flag(p, flag, f"{section}.{key}")
        for flag, key in (("--ranks", "ranks"), ("--zero-stage", "zero_stage"), ("--precision", "precision"),
                          ("--deepspeed-config", "config_file")):
            config_flag(p, flag, f"deepspeed.{key}")
        p.add_argument("--activation-checkpointing", action="store_true", help="recompute activations")
        p.add_argument("--data-card", type=Path, help="data-card directory naming shards, tokenizer and Q&A set "
                       "(default: the newest)")
        p.add_argument("--no-mlflow", action="store_true", help="do not log to MLflow")
        p.add_argument("--no-export", action="store_true", help="skip exporting the Hugging Face directory")
        p.add_argument("--dry-run", action="store_true", help="check everything, print the launcher command, "
                       "start nothing")

    p = add("pretrain", cmd_train_pretrain, "Pretrain a Llama-style model from scratch on the token shards.",
            train_sub)
    training_flags(p, "pretrain")
    config_flag(p, "--preset", "pretrain.preset")
    p.add_argument("--tokens", type=Path, help="token-shard directory (instead of --data-card)")

    p = add("finetune", cmd_train_finetune, "Supervised fine-tuning (full or LoRA) on question/answer pairs, "
            "prompts in the tokenizer's chat template, loss on answer tokens only.", train_sub)
    training_flags(p, "finetune")
    p.add_argument("--base", help="base model: an HF directory or models:/name/version (default: the newest "
                   "pretrained export)")
    p.add_argument("--data", type=Path, help="JSONL of {question, answer} (default: the variant's data, the "
                   "pipeline's Q&A set)")
    p.add_argument("--variant", help="fine-tuning variant name (default: the first in finetune.variants)")
    config_flag(p, "--method", "finetune.method")

    p = add("export", cmd_train_export, "Export a finished run directory as a Hugging Face model directory.",
            train_sub)
    p.add_argument("run", type=Path, help="the run directory ($LLMOPS_HOME/runs/<kind>/<name>-<key>)")
    p.add_argument("--out", type=Path, help="output directory (default: the artifact layout)")

    p = add("evaluate", cmd_evaluate, "Evaluate a model (perplexity, bits per byte, BLEU, ROUGE, exact match, "
            "diversity, PII canary leakage, behavioural cases, latency), run the gate and write the report. "
            "Exit code 3 when the gate fails.")
    p.add_argument("--model", required=True, help="model directory or models:/name/version, models:/name@alias")
    p.add_argument("--champion", help="the model to compare with, re-evaluated on the same data")
    p.add_argument("--out", type=Path, help="report directory (default: $LLMOPS_HOME/reports/evaluation/<hash>)")
    p.add_argument("--tokens", type=Path, help="token shards for perplexity (default: the model's data card)")
    p.add_argument("--heldout", type=Path, help="held-out Q&A JSONL (default: the model's data card)")
    p.add_argument("--canaries", type=Path, help="JSON list of {type, value} PII canaries (default: the demo "
                   "site's planted values)")
    p.add_argument("--cases", type=Path, help="behavioural cases YAML (default: include/eval/behaviour.yaml)")
    p.add_argument("--gate", type=Path, help="gate thresholds YAML (default: include/eval/gate.yaml)")
    config_flag(p, "--max-questions", "evaluation.max_questions")

    stack = sub.add_parser(
        "stack", help="The embedded platform: Airflow, Triton, the MLflow UI and the demo site (start, stop, status).",
        description="The embedded platform of $LLMOPS_HOME, each component a background process with a pid and "
        "log file under $LLMOPS_HOME/stack/: Airflow's api-server (UI and REST API on airflow.host:airflow.api_port, "
        "default http://127.0.0.1:8080), scheduler (LocalExecutor, airflow.parallelism tasks at once, default the "
        "core count), dag-processor and triggerer on SQLite ($LLMOPS_HOME/airflow/airflow.db); Triton "
        "(serving.http_port/grpc_port/metrics_port) serving the MLflow champion; the MLflow UI (mlflow.ui_port) on "
        "the embedded store; and the demo site (demo_site.port) when data.seed_url points at it. Three users, "
        "admin, op and viewer (the SimpleAuthManager roles of the same names), log in with their passwords in "
        "$LLMOPS_HOME/airflow/simple_auth_manager_passwords.json.generated.")
    stack_sub = stack.add_subparsers(dest="stack_command", metavar="ACTION", required=True)
    p = add("start", cmd_stack_start, "Start every component that is not running and return once all are "
            "healthy (the API's /api/v2/monitor/health, Triton ready, the MLflow UI and demo site answering), "
            "within airflow.startup_timeout_s. A running stack is reported, not started twice; a stale pid file "
            "from a crash is recognised. A port in use is refused before anything starts, naming the port, the "
            "process holding it and the setting to change (e.g. LLMOPS_AIRFLOW__API_PORT). Runs `airflow db "
            "migrate` first; generates the passwords of admin, op and viewer and the secret the Airflow components "
            "share once.",
            stack_sub)
    p.add_argument("--json", action="store_true", help="print the status as JSON (progress goes to stderr)")
    p = add("stop", cmd_stack_stop, "Stop the stack: the scheduler, triggerer and dag-processor first (no new "
            "task starts), then wait up to --timeout seconds for running tasks to finish; tasks still running "
            "then are cleared (Airflow stops them, their retries are not used up) and run again at the next "
            "`stack start`, a training job from its newest checkpoint. Prints what it interrupted. Returns once no "
            "process of the stack is left (workers, task processes, DeepSpeed ranks, Triton's stubs).", stack_sub)
    p.add_argument("--timeout", type=float, default=60.0,
                   help="seconds running tasks get to finish before they are interrupted (default 60)")
    p.add_argument("--json", action="store_true", help="print what was interrupted as JSON")
    p = add("status", cmd_stack_status, "Show each component's process and health, the URLs, the users and "
            "password file, DAGs (paused ones, import errors) and the stack's resident memory. Exit code 3 unless "
            "every component is healthy.", stack_sub)
    p.add_argument("--json", action="store_true", help="JSON instead of text")

    serve = sub.add_parser("serve", help="The embedded Triton Inference Server (start, stop, status).",
                           description="The embedded Triton Inference Server: the tritonserver of the "
                           "nvidia-pytriton wheel with its python backend, serving the model repository "
                           "($LLMOPS_HOME/triton/models or serving.repository) over HTTP, gRPC and Prometheus "
                           "metrics on serving.http_port/grpc_port/metrics_port. Models are loaded and unloaded "
                           "explicitly; the model-repository, model-config, statistics, trace, logging and "
                           "shared-memory APIs (serving.restricted_apis) need the admin key in the "
                           "serving.admin_header header (serving.admin_key, $LLMOPS_SERVING__ADMIN_KEY, or "
                           "generated into $LLMOPS_HOME/triton/admin.key). Inference, metadata and health are open.")
    serve_sub = serve.add_subparsers(dest="serve_command", metavar="ACTION", required=True)
    p = add("start", cmd_serve_start, "Start Triton in the background (it keeps serving after this command "
            "returns), load every model already in the repository except the staging one, and wait until "
            "/v2/health/ready (serving.startup_timeout_s). Refused while one runs or when a port is taken.",
            serve_sub)
    p.add_argument("--no-wait", action="store_true", help="return right after spawning, without waiting for ready")
    p.add_argument("--no-champion", action="store_true",
                   help="do not put the MLflow champion into the repository first (serve what is there)")
    p.add_argument("--json", action="store_true", help="print the status as JSON")
    p = add("stop", cmd_serve_stop, "Stop Triton: SIGTERM, let it drain in-flight requests, SIGKILL after "
            "--timeout. Stopping a stopped server is not an error.", serve_sub)
    p.add_argument("--timeout", type=float, default=60.0, help="seconds to wait before SIGKILL (default 60)")
    p = add("status", cmd_serve_status, "Show whether Triton runs, its pid, URLs, readiness and the models "
            "of the repository with their state. Exit code 3 when it is not running.", serve_sub)
    p.add_argument("--json", action="store_true", help="JSON instead of text")

    p = add("deploy", cmd_deploy, "Deploy a registered version to the running Triton server: load it as "
            "serving.staging_model_name, smoke-test it over HTTP and gRPC, swap it into the served model with no "
            "failed request, check live answers, then set the MLflow alias champion. On failure the old version "
            "keeps serving and champion is unchanged. Only versions with gate_result=passed are deployed.")
    p.add_argument("model", nargs="?", default=None, metavar="MODEL_URI",
                   help="models:/llmops/<version> or models:/llmops@<alias> (default models:/llmops@challenger)")
    p.add_argument("--model", dest="model_opt", metavar="MODEL_URI", help="same as the positional argument")
    p.add_argument("--start-server", action="store_true", help="start the embedded server first if it is down")
    p.add_argument("--json", action="store_true", help="print the result as JSON")
    p = add("rollback", cmd_rollback, "Serve the version the current champion replaced, or --to-version, "
            "verified like a deployment, and point the MLflow alias champion at it. Refused (nothing changes) "
            "without a champion, or for the champion itself, a version not registered or one that did not pass "
            "the gate. Rolling back again goes one more step back; after --to-version, back to the champion it "
            "replaced. The DAG llmops_rollback does the same as an audited run.")
    p.add_argument("--to-version", metavar="N", help="the registered version to serve (default: the version the "
                   "champion replaced)")
    p.add_argument("--json", action="store_true", help="print the result as JSON")
    p = add("generate", cmd_generate, "Ask the served model a question with tritonclient (HTTP by default).")
    p.add_argument("question", help="the question (the model applies its chat template)")
    _server_flags(p)
    p.add_argument("--model", default=None, help="Triton model name (default serving.model_name)")
    p.add_argument("--max-tokens", type=int, help="new tokens to generate (server default serving.default_max_tokens)")
    p.add_argument("--temperature", type=float, help="0 = greedy (default); > 0 samples")
    p.add_argument("--top-p", type=float, help="nucleus sampling mass in (0, 1]")
    p.add_argument("--seed", type=int, help="seed for reproducible sampling")
    p.add_argument("--json", action="store_true", help="print the answer, version and token counts as JSON")

    drift = sub.add_parser(
        "drift", help="Monitoring: is the served model's traffic drifting from what it was trained for?",
        description="Monitoring of the served model from its inference log (one record per request: counts and "
        "measurements, never text; $LLMOPS_HOME/monitoring/inference or monitor.log_dir) and Triton's metrics.")
    drift_sub = drift.add_subparsers(dest="drift_command", metavar="ACTION", required=True)
    p = add("check", cmd_drift_check, "Compare the latest window of traffic (and the monitor.persistence - 1 "
            "before it) with the reference: the served model's held-out questions plus the first window of "
            "traffic after its deployment. Data signals (prompt length, token distribution over the corpus's "
            "top-K ids, bytes per token, languages) and quality signals (bits per byte, empty and cut-off answers) "
            "vote; drift needs monitor.vote signals in monitor.persistence windows in a row. Service (p95 latency, "
            "failure rate) is reported, never a reason to retrain. Writes reports/llmops_monitor/<time>/ "
            "(drift.json, drift.md/.html, plots) and an MLflow run with drift_* metrics and the drift_verdict tag. "
            "Exit code 3 on drift, 0 on no drift or not enough data.", drift_sub)
    config_flag(p, "--window", "monitor.window")
    p.add_argument("--reference", type=Path, metavar="JSONL",
                   help="questions (JSON lines with a 'question') to use as the held-out half of the reference "
                        "(default: the served model's held-out Q&A pairs, from its data card)")
    p.add_argument("--no-mlflow", action="store_true", help="write the report but log no MLflow run")
    p.add_argument("--json", action="store_true", help="print the DriftReport as JSON")
    p = add("traffic", cmd_drift_traffic, "Send synthetic questions to the served model (the demo's users): "
            "'reference' asks about the demo site's topics as the model was trained to answer; 'shifted' asks "
            "about the Python standard library's modules, a topic shift the drift check should catch.", drift_sub)
    p.add_argument("topic", choices=["reference", "shifted"])
    p.add_argument("--requests", type=int, default=50, help="questions to send (default 50)")
    p.add_argument("--concurrency", type=int, default=1, help="requests in flight at once (default 1)")
    p.add_argument("--max-tokens", type=int, default=8, help="new tokens per answer (default 8)")
    p.add_argument("--seed", type=int, default=0, help="which questions (default 0)")
    _server_flags(p)

    p = add("demo", cmd_demo, "Start the embedded stack (Airflow, Triton, the MLflow UI, the demo site), trigger "
            "llmops_data and follow the Asset chain through the scheduler: llmops_data -> llmops_train -> "
            "llmops_evaluate -> llmops_deploy; ends with the summaries and one answer of the served champion. "
            "The stack keeps running (`llmops stack stop`).")
    p.add_argument("--no-airflow", action="store_true",
                   help="run the data and training stages in this process instead (no stack: nothing is evaluated "
                        "or deployed)")
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.WARNING,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        cfg = load_config(args.config)
        return args.handler(args, cfg)
    except BrokenPipeError:  # `llmops config | head` is not an error
        return 0
    except KeyboardInterrupt:
        print("llmops: interrupted", file=sys.stderr)
        return 130
    except ConfigError as exc:
        print(f"llmops: error: {exc}", file=sys.stderr)
        return 2
    except Exception as exc:  # one line for people, the traceback with -v
        if args.verbose:
            raise
        print(f"llmops: error: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
