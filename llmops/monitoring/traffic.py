"""Synthetic user traffic for the drift demo, its tests and the benchmark.

Two kinds of questions, both built from text every machine has offline:

* :func:`reference_questions`: what the served model was trained and evaluated on. The
  demo site's pages are CPython's ``pydoc_data.topics``; their titles come from the demo
  site's own parser and the questions from the Q&A stage's own templates, so these are
  the held-out questions' distribution, not an imitation of it.
* :func:`shifted_questions`: a topic shift, from the language reference to the standard
  library: how-to questions about modules and their functions ("How do I read a CSV file
  with the csv module?", "What does itertools.groupby return?"). Module and function
  names, and phrasings the reference never uses, so the vocabulary moves, not one word.

:func:`send` puts questions through the served model with the standard Triton client,
as users would, and counts what came back; it never raises for a failed request.
"""

from __future__ import annotations

import functools
import importlib
import inspect
import random
import statistics
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pydoc_data.topics import topics as PYDOC_TOPICS
from typing import Any

from llmops.data.qa import questions_for
from llmops.demo_site.build import parse_topic
from llmops.records.serving import Protocol

MAX_ERRORS = 5
"""Distinct error messages a :class:`TrafficResult` keeps (the first ones)."""
MAX_QUESTION_CHARS = 160
"""Longer candidate questions (a long docstring line) are left out of the shifted pool."""

# ---- the reference: the demo site's pages, asked as the Q&A stage asks -------------------------


@functools.cache
def _reference_pool() -> tuple[str, ...]:
    titles = sorted({parse_topic(PYDOC_TOPICS[slug])[0] for slug in PYDOC_TOPICS})
    return tuple(question for title in titles for question in questions_for(title))


def reference_questions(n: int, seed: int = 0) -> list[str]:
    """``n`` questions about the demo site's pages, drawn with replacement (same seed, same list)."""
    return random.Random(seed).choices(_reference_pool(), k=_count(n))


# ---- the shift: the standard library, asked as users ask about it ------------------------------

# (module, tasks a user wants done with it): the hand-written half of the shift, phrased as
# people phrase them. The other half comes from the modules themselves (see _library_pool).
TASKS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("json", ("parse JSON", "pretty-print a dictionary as JSON", "write JSON to a file",
              "load JSON from a file")),
    ("csv", ("read a CSV file", "write rows to a CSV file", "read a CSV file into dictionaries",
             "change the delimiter of a CSV file")),
    ("pathlib", ("list every file in a folder", "join two paths", "get a file's extension",
                 "check whether a file exists")),
    ("itertools", ("group consecutive items", "chain several lists together",
                   "iterate over pairs of neighbours", "get every combination of three items")),
    ("collections", ("count how often each word appears", "build a double-ended queue",
                     "make a dictionary with default values", "create a lightweight record type")),
    ("datetime", ("parse a date string", "add days to a date", "convert a timestamp to UTC",
                  "format a date as ISO 8601")),
    ("re", ("find every email address in a text", "replace digits with a regular expression",
            "split a string on several separators")),
    ("sqlite3", ("create a table in SQLite", "run a parameterised query", "commit a transaction")),
    ("logging", ("log to a file", "change the log level", "add a timestamp to log messages")),
    ("argparse", ("add a command-line flag", "parse positional arguments", "show a help message")),
    ("subprocess", ("run a shell command and capture its output", "check a program's exit code")),
    ("random", ("shuffle a list", "pick a random element", "draw a sample without replacement")),
    ("hashlib", ("compute the SHA-256 of a file", "hash a password")),
    ("zipfile", ("extract a zip archive", "add files to a zip archive")),
    ("gzip", ("compress a file", "read a gzipped text file")),
    ("tempfile", ("create a temporary directory", "make a named temporary file")),
    ("shutil", ("copy a directory tree", "move a file", "find an executable on the PATH")),
    ("statistics", ("compute the median of a list", "get the standard deviation of some numbers")),
    ("functools", ("cache the results of a function", "fix some arguments of a function")),
    ("urllib.parse", ("split a URL into its parts", "encode query parameters")),
    ("time", ("measure how long a function takes", "sleep for half a second")),
    ("uuid", ("generate a random UUID",)),
    ("heapq", ("keep the ten largest numbers", "implement a priority queue")),
    ("base64", ("encode bytes as base64", "decode a base64 string")),
)
TASK_TEMPLATES = (
    "How do I {task} with the {module} module?",
    "How can I {task} in Python using {module}?",
    "What's the easiest way to {task} with {module}?",
    "Which {module} function should I call to {task}?",
)
FUNCTION_TEMPLATES = (
    "What does {module}.{name} return?",
    "How do I use {module}.{name} in my script?",
    "Can you show me an example of {module}.{name}()?",
    "Which arguments does {module}.{name} accept?",
)
SUMMARY_TEMPLATE = "Which {module} function {summary}?"
"""For a function whose docstring starts with an imperative sentence ("Return the median of
numeric data." becomes "Which statistics function returns the median of numeric data?")."""
MODULE_TEMPLATES = (
    "What is the {module} module for?",
    "When should I import {module}?",
)
FUNCTIONS_PER_MODULE = 8
"""Public functions and classes taken from each module (alphabetical), so no module floods the pool."""
_IMPERATIVE = frozenset("""Return Compute Convert Create Make Parse Split Encode Decode Remove Copy Find Get
    Generate Build Escape Compile Count Calculate Open Read Write Delete Insert Merge Transform Push Pop
    Serialize Deserialize Wrap Fill Collapse Compress Decompress Register Check Format Join Apply""".split())


def _third_person(verb: str) -> str:
    """``Return`` -> ``returns``, ``Push`` -> ``pushes``, ``Copy`` -> ``copies``."""
    verb = verb.lower()
    if verb.endswith(("s", "sh", "ch", "x", "z")):
        return verb + "es"
    if verb.endswith("y") and verb[-2:-1] not in "aeiou":
        return verb[:-1] + "ies"
    return verb + "s"


def _summary(obj: Any) -> str | None:
    """The first docstring line of ``obj`` as a clause after "Which <module> function …", or
    None when it is not one plain imperative sentence (signatures, reST markup, fragments)."""
    lines = (inspect.getdoc(obj) or "").strip().splitlines()
    line = lines[0].strip() if lines else ""
    words = line.rstrip(".").split()
    if (not line.endswith(".") or ". " in line or len(words) < 3 or words[0] not in _IMPERATIVE
            or any(mark in line for mark in ("``", "`", "->", "(*", "[", "<", "'", '"'))):
        return None
    return " ".join([_third_person(words[0]), *words[1:]])


def _functions(module_name: str) -> list[tuple[str, Any]]:
    """Public functions and classes (exceptions left out) defined by ``module_name`` or its
    C accelerator, alphabetical: ``itertools.groupby`` and ``csv.DictReader`` are classes."""
    try:
        module = importlib.import_module(module_name)
    except ImportError:  # a Python built without it (sqlite3 on a minimal build): the rest will do
        return []
    found = []
    for name in sorted(getattr(module, "__all__", None) or dir(module), key=str.lower):
        obj = getattr(module, name, None)
        callable_ = inspect.isfunction(obj) or inspect.isbuiltin(obj) or (
            inspect.isclass(obj) and not issubclass(obj, BaseException))
        if name.startswith("_") or not callable_:
            continue
        home = (getattr(obj, "__module__", None) or module_name).lstrip("_")
        if home.split(".")[0] == module_name.split(".")[0]:  # not one the module merely imported
            found.append((name, obj))
    return found[:FUNCTIONS_PER_MODULE]


@functools.cache
def _library_pool() -> tuple[str, ...]:
    """Every shifted question: the hand-written tasks, plus each module's own functions by
    name and by their docstrings' first lines. Built from the running interpreter's standard
    library, so it is the same on every run of one Python version."""
    pool: list[str] = []
    for module, tasks in TASKS:
        pool += [template.format(task=task, module=module) for task in tasks for template in TASK_TEMPLATES]
        pool += [template.format(module=module) for template in MODULE_TEMPLATES]
        for name, obj in _functions(module):
            pool += [template.format(module=module, name=name) for template in FUNCTION_TEMPLATES]
            if summary := _summary(obj):
                pool.append(SUMMARY_TEMPLATE.format(module=module, summary=summary))
    return tuple(q for q in dict.fromkeys(pool) if len(q) <= MAX_QUESTION_CHARS)


def shifted_questions(n: int, seed: int = 0) -> list[str]:
    """``n`` questions about the standard library, drawn with replacement (same seed, same list)."""
    return random.Random(seed).choices(_library_pool(), k=_count(n))


def _count(n: int) -> int:
    if isinstance(n, bool) or not isinstance(n, int) or n < 0:
        raise ValueError(f"the number of questions must be an integer >= 0, got {n!r}")
    return n


# ---- sending -----------------------------------------------------------------------------------


@dataclass
class TrafficResult:
    """What happened to a batch of questions sent to the served model."""

    sent: int
    """Requests attempted (every question once)."""
    answered: int = 0
    failed: int = 0
    errors: list[str] = field(default_factory=list)
    """The first distinct failure messages (at most ``MAX_ERRORS``)."""
    latencies_ms: list[float] = field(default_factory=list)
    """Client-side latency of every answered request, in the order the questions were given."""
    seconds: float = 0.0
    """Wall time of the whole batch."""

    @property
    def p50_ms(self) -> float | None:
        return statistics.median(self.latencies_ms) if self.latencies_ms else None


def send(questions: Sequence[str], *, url: str, protocol: Protocol = "grpc", model: str = "llmops",
         max_tokens: int = 8, concurrency: int = 1, timeout_s: float = 120.0) -> TrafficResult:
    """Ask the model at ``url`` (``host:port``) every question, ``concurrency`` at a time.

    Each of the ``concurrency`` threads has its own Triton client (one connection, reused
    for all its requests) and takes the next question when its previous one is answered.
    A refusal, a timeout or a server that is down counts as a failure; only a bad argument
    raises (``ValueError``).
    """
    from llmops.serving.client import generate, make_client

    if protocol not in ("http", "grpc"):
        raise ValueError(f"protocol must be 'http' or 'grpc', got {protocol!r}")
    if isinstance(concurrency, bool) or not isinstance(concurrency, int) or concurrency < 1:
        raise ValueError(f"concurrency must be an integer >= 1, got {concurrency!r}")
    if isinstance(max_tokens, bool) or not isinstance(max_tokens, int) or max_tokens < 1:
        raise ValueError(f"max_tokens must be an integer >= 1, got {max_tokens!r}")
    if not url:
        raise ValueError("url is empty; give the server's host:port (HTTP 8000 or gRPC 8001 by default)")
    questions = list(questions)
    latencies: list[float | None] = [None] * len(questions)
    failures: list[str] = []
    lock = threading.Lock()
    next_index = iter(range(len(questions)))

    def take() -> int | None:
        with lock:
            return next(next_index, None)

    def fail(exc: BaseException) -> None:
        message = " ".join(f"{exc.__class__.__name__}: {exc}".split())[:300]
        with lock:
            failures.append(message)

    def worker() -> None:
        try:
            client = make_client(url, protocol, timeout_s=timeout_s)
        except Exception as exc:  # noqa: BLE001 - a bad address fails this thread's requests, not the caller
            while take() is not None:
                fail(exc)
            return
        try:
            while (i := take()) is not None:
                started = time.perf_counter()
                try:
                    generate(questions[i], client=client, protocol=protocol, model=model, max_tokens=max_tokens,
                             timeout_s=timeout_s)
                except Exception as exc:  # noqa: BLE001 - counted, never raised
                    fail(exc)
                    continue
                latencies[i] = (time.perf_counter() - started) * 1000.0
        finally:
            client.close()

    started = time.perf_counter()
    threads = [threading.Thread(target=worker, name=f"traffic-{k}", daemon=True)
               for k in range(min(concurrency, max(1, len(questions))))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    answered = [ms for ms in latencies if ms is not None]
    return TrafficResult(sent=len(questions), answered=len(answered), failed=len(failures),
                         errors=list(dict.fromkeys(failures))[:MAX_ERRORS], latencies_ms=answered,
                         seconds=time.perf_counter() - started)
