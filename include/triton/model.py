"""Triton python-backend model: a Hugging Face causal LM that answers questions, batched.

This file is copied into every version directory of the model repository
(``<repo>/<name>/<version>/model.py``, its tensor table ``tensors.py`` and its inference
log ``inference_log.py`` next to it, the weights beside it in ``hf/``, the registry facts in
``model_info.json`` and the corpus vocabulary in ``drift_vocabulary.json``) and runs inside
the python backend's stub process, also in a plain ``nvcr.io/nvidia/tritonserver`` image
where llmops is not installed. So it is self-contained: stdlib, numpy, torch, transformers,
``triton_python_backend_utils`` and its siblings ``tensors.py`` and ``inference_log.py``
(which uses py3langid) only.

With ``inference_log_dir`` among the config parameters, every request leaves one record
(counts and measurements, never text) for the drift check: ``execute`` hands it to the
log's writer thread, and the question's likelihood comes from the logits of the prompt's
forward pass that generation computes anyway (``TextGenerator.measure_prompts``).

Two layers:

* ``TextGenerator`` holds everything that is not Triton: request validation, the chat
  template, and batched generation. It never touches ``pb_utils``, so tests and
  benchmarks import this file and call it in-process.
* ``TritonPythonModel`` is the thin python-backend adapter in the style of
  python_backend's ``examples/``: ``initialize`` loads once, ``execute`` returns exactly
  one response per request with errors set per response, ``finalize`` frees memory.

Tensors: declared once in ``tensors.py`` (``text_input`` and the optional ``max_tokens``,
``temperature``, ``top_p``, ``seed`` -> ``text_output``, ``model_version``,
``prompt_tokens``, ``completion_tokens``), the table ``config.pbtxt`` and the client are
built from too. ``max_batch_size`` > 0 adds a leading batch dimension to each; a request
of shape ``[n, 1]`` carries n questions and gets ``[n, 1]`` outputs.
"""

from __future__ import annotations

import importlib.util
import json
import math
import random
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np
import torch

# triton_python_backend_utils is not an installable package: the python backend's stub
# process provides it. Importing it guarded lets a plain interpreter import this file
# (tests, benchmarks, TextGenerator in-process); only TritonPythonModel needs it.
try:
    import triton_python_backend_utils as pb_utils
except ImportError:  # pragma: no cover - depends on where the file runs
    pb_utils = None



def _load_sibling(name: str) -> ModuleType:
    """``<name>.py`` beside this file, imported by its path: Triton imports this file as
    ``<version>.model`` and tests import it by path, so neither a plain nor a relative
    import finds the sibling in both places."""
    path = Path(__file__).resolve().with_name(f"{name}.py")
    spec = importlib.util.spec_from_file_location(f"llmops_triton_{name}", path)
    if spec is None or spec.loader is None:
        raise ImportError(f"cannot import {path}")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclass looks its module up while the file executes
    spec.loader.exec_module(module)
    return module


tensors = _load_sibling("tensors")
inference_log = _load_sibling("inference_log")

DRIFT_VOCABULARY_FILE = "drift_vocabulary.json"
"""In the version directory: ``{"token_ids": [...]}``, the champion corpus's token ids, most
frequent first (written by the repository builder); the log counts the first K of them."""

# Files an exported model directory must hold for this backend to serve it.
REQUIRED_HF_FILES = ("config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json",
                     "generation_config.json")


class RequestError(ValueError):
    """A request this model refuses (bad input): the message goes back to the client."""


MIN_SAMPLING_TEMPERATURE = 1e-5
"""Temperatures below this decode greedily (dividing logits by less overflows)."""
MAX_CHARS_PER_TOKEN = 32
"""A prompt longer than ``max_prompt_tokens`` x this many characters is refused before tokenizing
(no BPE token of a text model covers more characters)."""

@dataclass(frozen=True)
class GenerationRequest:
    """One question and its decoding parameters."""

    text: str
    """The user's question; the chat template turns it into the prompt."""
    max_tokens: int | None = None
    """New tokens at most; None takes the generator's default."""
    temperature: float = 0.0
    """0 is greedy decoding; above 0 samples from softmax(logits / temperature)."""
    top_p: float = 1.0
    """Sample only from the smallest set of tokens whose probability reaches top_p."""
    seed: int | None = None
    """Seed of this request's own random generator: same seed, same answer, whatever
    else shares the batch. None samples with a fresh random seed."""


@dataclass
class GenerationResult:
    """The answer to one ``GenerationRequest``."""

    text: str
    """The decoded answer, special tokens removed, stripped."""
    prompt_tokens: int
    """Tokens of the prompt after the chat template."""
    completion_tokens: int
    """Generated tokens, the stop token included (as the evaluation counts them)."""
    stopped: bool
    """True if a stop token ended the answer; False if it ran into max_tokens."""
    token_ids: list[int] = field(default_factory=list)
    """The generated ids, the stop token included."""
    question_nll: float | None = None
    """Negative log-likelihood of the question's tokens (nats, summed), from the prompt's
    forward pass; None unless the generator measures prompts (``measure_prompts``)."""


@dataclass
class _Prepared:
    """A validated request: its prompt ids and resolved decoding parameters."""

    ids: list[int]
    max_tokens: int
    temperature: float
    top_p: float
    seed: int | None
    question: str = ""
    """The user's text (kept in memory for the inference log's language; never written)."""
    question_span: tuple[int, int] = (0, 0)
    """``ids[start:end]`` are the question's tokens inside the templated prompt."""

    @property
    def question_ids(self) -> list[int]:
        return self.ids[self.question_span[0]:self.question_span[1]]


def _question_span(prompt: str, question: str, offsets: Sequence[tuple[int, int]], at: int) -> tuple[int, int]:
    """The token range of ``question`` inside the templated ``prompt`` (by the tokenizer's
    character offsets): what the inference log measures, without the template's tokens,
    which are the same in every request. ``at`` is where the template puts the question
    (a question like "user" also occurs inside the template). ``(0, 0)`` if the template
    changed the text."""
    start = at if at >= 0 and prompt.startswith(question, at) else prompt.find(question)
    if start < 0:
        return (0, 0)
    end = start + len(question)
    inside = [i for i, (a, b) in enumerate(offsets) if b > a and a >= start and b <= end]
    return (inside[0], inside[-1] + 1) if inside else (0, 0)


def _question_nll(logits: torch.Tensor, input_ids: torch.Tensor, rows: Sequence[_Prepared]) -> list[float]:
    """Each row's question NLL (nats) from the logits of a left-padded prompt batch.

    Position ``p`` predicts token ``p + 1``; only the question's positions are turned into
    log-probabilities, so the cost is a few rows of the vocabulary, not the whole prompt.
    The first token of a prompt has no prediction and is skipped.
    """
    width = input_ids.shape[1]
    nll = []
    for i, row in enumerate(rows):
        offset = width - len(row.ids)
        start, end = max(row.question_span[0], 1), row.question_span[1]
        if end <= start:
            nll.append(0.0)
            continue
        predicted = logits[i, offset + start - 1:offset + end - 1].float().log_softmax(-1)
        targets = input_ids[i, offset + start:offset + end]
        nll.append(float(-predicted.gather(-1, targets[:, None]).sum()))
    return nll


def _stop_ids(model: Any, tokenizer: Any) -> list[int]:
    """The ids that end an answer: the generation config's eos ids, else the tokenizer's eos."""
    eos = getattr(getattr(model, "generation_config", None), "eos_token_id", None)
    if eos is None:
        eos = tokenizer.eos_token_id
    if eos is None:
        raise ValueError("neither the generation config nor the tokenizer names an end-of-text token")
    return [int(e) for e in (eos if isinstance(eos, (list, tuple)) else [eos])]


class TextGenerator:
    """Validates question requests and answers the valid ones together, in one batch.

    Why a hand-written decoding loop instead of ``model.generate``: ``generate`` takes
    one ``max_new_tokens``, one ``temperature``/``top_p`` and one global random stream
    for the whole batch, while Triton's dynamic batcher groups requests that each carry
    their own. Here every row has its own stop length, its own temperature and top-p
    (greedy and sampled rows share a batch), and its own ``torch.Generator``, so a seeded
    answer does not depend on its batch companions. The loop is the same as
    ``generate``'s: one forward pass over the left-padded prompts, then one token per
    step over the KV cache (``past_key_values``). Rows that finish (stop token or their
    ``max_tokens``) leave the batch at once: they stop counting tokens and stop costing
    compute.
    """

    def __init__(self, model: Any, tokenizer: Any, *, default_max_tokens: int = 48, max_tokens_limit: int = 256,
                 max_prompt_tokens: int = 256) -> None:
        if not 1 <= default_max_tokens <= max_tokens_limit:
            raise ValueError(f"need 1 <= default_max_tokens ({default_max_tokens}) <= max_tokens_limit "
                             f"({max_tokens_limit})")
        if max_prompt_tokens < 1:
            raise ValueError(f"max_prompt_tokens must be at least 1, got {max_prompt_tokens}")
        if getattr(tokenizer, "chat_template", None) is None:
            raise ValueError("the tokenizer has no chat template; the model answers in the template it was "
                             "fine-tuned on")
        self.model = model
        self.tokenizer = tokenizer
        self.default_max_tokens = default_max_tokens
        self.max_tokens_limit = max_tokens_limit
        self.max_prompt_tokens = max_prompt_tokens
        self.stop_ids = frozenset(_stop_ids(model, tokenizer))
        pad = tokenizer.pad_token_id
        self.pad_id = int(pad) if pad is not None else min(self.stop_ids)
        # RoPE models run past their trained length, but the answers are garbage: refuse instead.
        self.max_positions = getattr(getattr(model, "config", None), "max_position_embeddings", None)
        self.device = next(model.parameters()).device
        self.measure_prompts = False
        """Also measure each question's likelihood from the prompt's logits (the inference log)."""
        probe = tokenizer.apply_chat_template([{"role": "user", "content": "\x00"}], add_generation_prompt=True,
                                              tokenize=False)
        self._question_at = probe.find("\x00")
        """Where the chat template puts the user's text (-1: it does not keep it verbatim)."""

    @classmethod
    def from_pretrained(cls, hf_dir: str | Path, *, device: str = "cpu", dtype: torch.dtype | None = None,
                        **limits: int) -> TextGenerator:
        """Load an exported Hugging Face directory onto ``device`` in eval mode.

        ``dtype`` defaults to bfloat16 on a GPU that supports it and float32 otherwise
        (CPU bf16 matmuls are slow on most CPUs, and fp16 can overflow a model trained in
        fp32/bf16).
        """
        from transformers import AutoModelForCausalLM, AutoTokenizer

        hf_dir = Path(hf_dir)
        missing = [f for f in REQUIRED_HF_FILES if not (hf_dir / f).is_file()]
        if missing:
            raise FileNotFoundError(f"{hf_dir} is not a complete exported model: missing {', '.join(missing)}")
        if dtype is None:
            on_gpu = str(device).startswith("cuda")
            dtype = torch.bfloat16 if on_gpu and torch.cuda.is_bf16_supported() else torch.float32
        model = AutoModelForCausalLM.from_pretrained(hf_dir, dtype=dtype).to(device).eval()
        tokenizer = AutoTokenizer.from_pretrained(hf_dir)
        # Left padding: a decoder-only model continues from the last position of each
        # row, so padding must sit before the prompt, never between prompt and answer.
        tokenizer.padding_side = "left"
        return cls(model, tokenizer, **limits)

    # -- validation -----------------------------------------------------------------

    def prepare(self, request: GenerationRequest) -> _Prepared:
        """Validate ``request`` and tokenize its prompt; raises ``RequestError`` saying what is wrong."""
        text = request.text
        if not isinstance(text, str):
            raise RequestError(f"text_input must be a string, got {type(text).__name__}")
        if not text.strip():
            raise RequestError("text_input is empty")
        if len(text) > self.max_prompt_tokens * MAX_CHARS_PER_TOKEN:
            # Refuse megabytes before the tokenizer spends an instance's time on them.
            raise RequestError(f"text_input is {len(text)} characters; prompts are limited to "
                               f"{self.max_prompt_tokens} tokens")
        max_tokens = self.default_max_tokens if request.max_tokens is None else request.max_tokens
        if isinstance(max_tokens, bool) or not isinstance(max_tokens, (int, np.integer)):
            raise RequestError(f"max_tokens must be an integer, got {max_tokens!r}")
        if not 1 <= max_tokens <= self.max_tokens_limit:
            raise RequestError(f"max_tokens must be between 1 and {self.max_tokens_limit}, got {max_tokens}")
        temperature, top_p = float(request.temperature), float(request.top_p)
        if not math.isfinite(temperature) or temperature < 0:
            raise RequestError(f"temperature must be a finite number >= 0, got {request.temperature}")
        if temperature < MIN_SAMPLING_TEMPERATURE:
            # logits / 1e-40 overflows to inf and softmax gives NaN (on CUDA a NaN draw is a
            # device-side assert that poisons the instance): this close to 0 is greedy anyway.
            temperature = 0.0
        if not (math.isfinite(top_p) and 0 < top_p <= 1):
            raise RequestError(f"top_p must be in (0, 1], got {request.top_p}")
        seed = request.seed
        if seed is not None and (isinstance(seed, bool) or not isinstance(seed, (int, np.integer))):
            raise RequestError(f"seed must be an integer, got {seed!r}")
        # The same template and tokenization as the evaluation (llmops.evaluation.generation):
        # the served model must see prompts exactly as it was evaluated on them.
        prompt = self.tokenizer.apply_chat_template([{"role": "user", "content": text}],
                                                    add_generation_prompt=True, tokenize=False)
        # The template already holds every special token; adding a BOS would shift the prompt.
        encoded = self.tokenizer(prompt, add_special_tokens=False, return_offsets_mapping=True)
        ids = encoded["input_ids"]
        if len(ids) > self.max_prompt_tokens:
            raise RequestError(f"the prompt is {len(ids)} tokens after the chat template; the limit is "
                               f"{self.max_prompt_tokens}")
        if self.max_positions and len(ids) + int(max_tokens) > self.max_positions:
            raise RequestError(f"prompt ({len(ids)} tokens) + max_tokens ({max_tokens}) exceeds the model's "
                               f"context of {self.max_positions} tokens")
        return _Prepared(ids=list(ids), max_tokens=int(max_tokens), temperature=temperature, top_p=top_p,
                         seed=None if seed is None else int(seed), question=text,
                         question_span=_question_span(prompt, text, encoded["offset_mapping"], self._question_at))

    # -- generation -----------------------------------------------------------------

    def generate(self, requests: Sequence[GenerationRequest]) -> list[GenerationResult | Exception]:
        """One result per request, in order: a ``GenerationResult``, or the exception that request got.

        Every request is validated first (a bad one gets its ``RequestError`` and is
        left out); the valid ones are generated together.
        """
        prepared: list[_Prepared | Exception] = []
        for request in requests:
            try:
                prepared.append(self.prepare(request))
            except RequestError as exc:
                prepared.append(exc)
        valid = [i for i, p in enumerate(prepared) if isinstance(p, _Prepared)]
        results: list[GenerationResult | Exception] = list(prepared)  # type: ignore[arg-type]
        for i, result in zip(valid, self.generate_prepared([prepared[i] for i in valid]), strict=True):  # type: ignore[misc]
            results[i] = result
        return results

    def generate_prepared(self, rows: Sequence[_Prepared]) -> list[GenerationResult | Exception]:
        """Generate validated rows in one batch; if the batch fails, each row alone.

        The fallback isolates failures: an out-of-memory batch usually fits row by row,
        and a row that breaks the model fails by itself instead of taking its companions
        down. A row that fails alone too gets its exception as its result.
        """
        if not rows:
            return []
        try:
            return list(self._generate_batch(rows))
        except Exception as exc:  # noqa: BLE001 - any model failure becomes per-request errors
            if len(rows) == 1:
                return [exc]
            if torch.cuda.is_available():
                torch.cuda.empty_cache()
        results: list[GenerationResult | Exception] = []
        for row in rows:
            try:
                results.extend(self._generate_batch([row]))
            except Exception as exc:  # noqa: BLE001
                results.append(exc)
        return results

    @torch.inference_mode()
    def _generate_batch(self, rows: Sequence[_Prepared]) -> list[GenerationResult]:
        n, device = len(rows), self.device
        input_ids, mask, positions = self._left_padded(rows)
        # Per-row generators: a row's random stream depends on its seed alone, never on
        # how many sampled rows sit before it in the batch.
        generators: list[torch.Generator | None] = []
        for row in rows:
            if row.temperature > 0:
                seed = row.seed if row.seed is not None else random.SystemRandom().getrandbits(63)
                generators.append(torch.Generator(device=device).manual_seed(seed & 0xFFFF_FFFF_FFFF_FFFF))
            else:
                generators.append(None)

        out = self.model(input_ids=input_ids, attention_mask=mask, position_ids=positions, use_cache=True)
        nll = _question_nll(out.logits, input_ids, rows) if self.measure_prompts else [None] * n
        past, logits = out.past_key_values, out.logits[:, -1, :]
        next_position = positions[:, -1] + 1
        generated: list[list[int]] = [[] for _ in rows]
        live = list(range(n))  # row index of each line of the running batch
        while True:
            tokens = self._next_tokens(logits, [rows[i] for i in live], [generators[i] for i in live])
            keep = []
            for line, i in enumerate(live):
                generated[i].append(tokens[line])
                if tokens[line] not in self.stop_ids and len(generated[i]) < rows[i].max_tokens:
                    keep.append(line)
            if not keep:
                break
            step = torch.tensor([tokens[line] for line in keep], dtype=torch.long, device=device)
            if len(keep) < len(live):  # finished rows leave the batch (and its KV cache)
                index = torch.tensor(keep, dtype=torch.long, device=device)
                past.batch_select_indices(index)
                mask, next_position = mask[index], next_position[index]
                live = [live[line] for line in keep]
            mask = torch.cat([mask, mask.new_ones((len(live), 1))], dim=1)
            out = self.model(input_ids=step[:, None], attention_mask=mask, position_ids=next_position[:, None],
                             past_key_values=past, use_cache=True)
            past, logits = out.past_key_values, out.logits[:, -1, :]
            next_position = next_position + 1

        results = []
        for row, ids, row_nll in zip(rows, generated, nll, strict=True):
            stopped = ids[-1] in self.stop_ids
            answer = ids[:-1] if stopped else ids
            results.append(GenerationResult(
                text=self.tokenizer.decode(answer, skip_special_tokens=True).strip(),
                prompt_tokens=len(row.ids), completion_tokens=len(ids), stopped=stopped, token_ids=ids,
                question_nll=row_nll))
        return results

    @torch.inference_mode()
    def score_questions(self, requests: Sequence[GenerationRequest], batch_size: int = 16
                        ) -> list[tuple[_Prepared, float] | RequestError]:
        """Each request's prepared prompt and question NLL (nats), from one forward pass
        over the prompt and no generation: the same measurement the inference log takes of
        served requests, for questions that are not traffic (the drift reference)."""
        out: list[tuple[_Prepared, float] | RequestError] = []
        for first in range(0, len(requests), batch_size):
            prepared: list[_Prepared | RequestError] = []
            for request in requests[first:first + batch_size]:
                try:
                    prepared.append(self.prepare(request))
                except RequestError as exc:
                    prepared.append(exc)
            rows = [p for p in prepared if isinstance(p, _Prepared)]
            scores = iter(self._score(rows) if rows else [])
            out.extend(p if isinstance(p, RequestError) else (p, next(scores)) for p in prepared)
        return out

    def _left_padded(self, rows: Sequence[_Prepared]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``(input_ids, attention_mask, position_ids)`` of the rows' prompts, padded on the left."""
        width = max(len(r.ids) for r in rows)
        input_ids = torch.full((len(rows), width), self.pad_id, dtype=torch.long)
        mask = torch.zeros((len(rows), width), dtype=torch.long)
        for i, row in enumerate(rows):
            input_ids[i, width - len(row.ids):] = torch.tensor(row.ids, dtype=torch.long)
            mask[i, width - len(row.ids):] = 1
        input_ids, mask = input_ids.to(self.device), mask.to(self.device)
        # Positions count real tokens only, as generate() does: a left-padded row starts at
        # position 0 like the same prompt alone, so padding changes no rotary angle.
        return input_ids, mask, (mask.cumsum(-1) - 1).clamp(min=0)

    def _score(self, rows: Sequence[_Prepared]) -> list[float]:
        input_ids, mask, positions = self._left_padded(rows)
        logits = self.model(input_ids=input_ids, attention_mask=mask, position_ids=positions).logits
        return _question_nll(logits, input_ids, rows)

    @staticmethod
    def _next_tokens(logits: torch.Tensor, rows: Sequence[_Prepared],
                     generators: Sequence[torch.Generator | None]) -> list[int]:
        """The next token of every line: argmax for greedy rows, a draw from each row's own generator otherwise."""
        logits = logits.float()  # sample in fp32 even when the model runs in bf16
        tokens = logits.argmax(dim=-1).tolist()
        for line, (row, generator) in enumerate(zip(rows, generators, strict=True)):
            if generator is None:
                continue
            probs = torch.softmax(logits[line] / row.temperature, dim=-1)
            if not bool(torch.isfinite(probs).all()):  # never hand multinomial a NaN (see prepare)
                raise RequestError("sampling produced non-finite probabilities; lower the temperature's "
                                   "precision or use 0 (greedy)")
            if row.top_p < 1.0:
                # Nucleus: keep the most likely tokens until their mass reaches top_p (the
                # token that crosses it included, so at least one survives).
                sorted_probs, order = probs.sort(descending=True)
                outside = sorted_probs.cumsum(-1) - sorted_probs >= row.top_p
                sorted_probs = sorted_probs.masked_fill(outside, 0.0)
                probs = torch.zeros_like(probs).scatter_(0, order, sorted_probs)
            tokens[line] = int(torch.multinomial(probs, 1, generator=generator))
        return tokens


# -- Triton adapter ------------------------------------------------------------------

_OPTIONAL_INPUTS = [t for t in tensors.INPUTS if t.optional]
"""Each named as the ``GenerationRequest`` field it sets."""


def parse_inputs(arrays: dict[str, np.ndarray | None]) -> list[GenerationRequest]:
    """The rows of one Triton request, from its input arrays (absent optional inputs are None).

    ``text_input`` has one element per row (shape ``[n, 1]`` with a batch dimension,
    ``[1]`` without); each optional input must have as many elements. Raises
    ``RequestError`` on a wrong dtype or shape, or text that is not UTF-8.
    """
    text = arrays.get(tensors.TEXT_INPUT.name)
    if text is None:
        raise RequestError("text_input is required")
    if text.dtype != np.object_ and text.dtype.kind not in "SU":
        raise RequestError(f"text_input must be BYTES, got {text.dtype}")
    texts = []
    for value in text.reshape(-1):
        if isinstance(value, bytes):
            try:
                value = value.decode("utf-8")
            except UnicodeDecodeError as exc:
                raise RequestError(f"text_input is not UTF-8: {exc}") from None
        if not isinstance(value, str):
            raise RequestError(f"text_input must be BYTES, got an element of type {type(value).__name__}")
        texts.append(value)
    if not texts:
        raise RequestError("text_input holds no element")
    fields: dict[str, list] = {}
    for tensor in _OPTIONAL_INPUTS:
        array = arrays.get(tensor.name)
        if array is None:
            continue
        # Any integer width for an integer input, any float width for a float one.
        kinds = "f" if np.dtype(tensor.numpy_dtype).kind == "f" else "iu"
        if array.dtype.kind not in kinds:
            expected = "an integer" if "i" in kinds else "a float"
            raise RequestError(f"{tensor.name} has dtype {array.dtype}, expected {expected}")
        if array.size != len(texts):
            raise RequestError(f"{tensor.name} has {array.size} elements for {len(texts)} text_input elements "
                               f"(shape {list(array.shape)} vs {list(text.shape)})")
        fields[tensor.name] = [v.item() for v in array.reshape(-1)]
    return [GenerationRequest(text=t, **{k: v[i] for k, v in fields.items()}) for i, t in enumerate(texts)]


class TritonPythonModel:
    """The python-backend entry point: one instance per Triton model instance."""

    def initialize(self, args: dict[str, str]) -> None:
        """Load the model and tokenizer once, on the device of this instance."""
        self.model_config = json.loads(args["model_config"])
        params = {k: v.get("string_value", "") for k, v in self.model_config.get("parameters", {}).items()}
        # model.py sits in the version directory, next to hf/ and model_info.json.
        version_dir = Path(args.get("model_repository", "")) / str(args.get("model_version", ""))
        if not (version_dir / "hf").is_dir():
            version_dir = Path(__file__).resolve().parent
        info_file = version_dir / "model_info.json"
        self.info = json.loads(info_file.read_text()) if info_file.exists() else {}
        self.model_version = str(self.info.get("version", args.get("model_version", "")))

        device = "cpu"
        if args.get("model_instance_kind") == "GPU":
            if torch.cuda.is_available():
                device = f"cuda:{int(args.get('model_instance_device_id', 0))}"
                torch.cuda.set_device(device)
            else:
                self._log("warn", "instance kind is GPU but torch sees no CUDA device; running on CPU")
        if device == "cpu":
            # Every instance is its own stub process: its thread count is its share of the cores.
            torch.set_num_threads(max(1, int(params.get("threads", "1") or 1)))
        limits = {k: int(params[k]) for k in ("default_max_tokens", "max_tokens_limit", "max_prompt_tokens")
                  if params.get(k)}
        self.generator = TextGenerator.from_pretrained(version_dir / "hf", device=device, **limits)
        self.model_name = str(args.get("model_name", ""))
        self.log_writer = self._open_inference_log(params, version_dir, args)
        self.generator.measure_prompts = self.log_writer is not None
        self._log("info", f"loaded {self.model_name} version {args.get('model_version')} "
                          f"(registered {self.model_version}) on {device}")

    def _open_inference_log(self, params: dict[str, str], version_dir: Path, args: dict[str, str]) -> Any:
        """The inference log's writer, or None when ``inference_log_dir`` is not set."""
        directory = params.get("inference_log_dir", "")
        if not directory:
            return None
        vocabulary_file = version_dir / DRIFT_VOCABULARY_FILE
        top_k = int(params.get("drift_top_k", "256") or 256)
        top_ids = json.loads(vocabulary_file.read_text())["token_ids"][:top_k] if vocabulary_file.exists() else []
        if not top_ids:
            self._log("warn", f"no {DRIFT_VOCABULARY_FILE} in {version_dir}: the inference log counts every "
                              f"question token as 'other'")
        instance = inference_log.instance_name(self.model_name, str(args.get("model_instance_name", "")))
        return inference_log.InferenceLogWriter(
            directory, model=self.model_name, instance=instance, top_token_ids=top_ids,
            queue_size=int(params.get("inference_log_queue", "10000") or 10000),
            retention_s=float(params.get("inference_log_retention_s", str(7 * 86400)) or 7 * 86400))

    def execute(self, requests: list[Any]) -> list[Any]:
        """One response per request, in order; a bad request gets its own error, the others are answered."""
        responses: list[Any] = [None] * len(requests)
        shapes: dict[int, tuple[int, ...]] = {}
        prepared: list[tuple[int, Any]] = []  # (request index, _Prepared) of every row still valid
        for k, request in enumerate(requests):
            try:
                arrays = {t.name: self._input(request, t.name) for t in tensors.INPUTS}
                rows = [self.generator.prepare(r) for r in parse_inputs(arrays)]
            except RequestError as exc:
                responses[k] = self._error(str(exc), invalid=True)
                continue
            except Exception as exc:  # noqa: BLE001 - never let one request crash the instance
                responses[k] = self._error(f"could not read the request: {exc}")
                continue
            shapes[k] = tuple(arrays["text_input"].shape)
            prepared += [(k, row) for row in rows]

        # Every valid row of every request in this execute() call: one batch.
        started = time.perf_counter()
        results = self.generator.generate_prepared([row for _, row in prepared]) if prepared else []
        if self.log_writer is not None:
            self._log_requests(len(requests), responses, prepared, results, time.perf_counter() - started)
        by_request: dict[int, list] = {}
        for (k, _), result in zip(prepared, results, strict=True):
            by_request.setdefault(k, []).append(result)
        for k, rows in by_request.items():
            failed = next((r for r in rows if isinstance(r, Exception)), None)
            if failed is not None:
                responses[k] = self._error(f"generation failed: {failed.__class__.__name__}: {failed}")
                continue
            columns = {
                tensors.TEXT_OUTPUT: [r.text.encode("utf-8") for r in rows],
                tensors.MODEL_VERSION: [self.model_version.encode("utf-8")] * len(rows),
                tensors.PROMPT_TOKENS: [r.prompt_tokens for r in rows],
                tensors.COMPLETION_TOKENS: [r.completion_tokens for r in rows],
            }
            responses[k] = pb_utils.InferenceResponse(output_tensors=[
                pb_utils.Tensor(t.name, np.array(columns[t], dtype=t.numpy_dtype).reshape(shapes[k]))
                for t in tensors.OUTPUTS])
        return responses

    def _log_requests(self, count: int, responses: list[Any], prepared: list[tuple[int, Any]],
                      results: list[Any], seconds: float) -> None:
        """Hand one inference-log record per row (and per refused request) to the writer thread."""
        log, now = inference_log, time.time()
        base = {"time": now, "model": self.model_name, "version": self.model_version,
                "instance": self.log_writer.instance, "compute_ms": seconds * 1000.0, "batch_size": len(prepared)}
        for k in range(count):
            if responses[k] is not None:  # refused before generation: nothing to measure
                self.log_writer.submit(log.PendingRecord(log.InferenceRecord(finish_reason="refused", **base)))
        for (_, row), result in zip(prepared, results, strict=True):
            if isinstance(result, Exception):
                self.log_writer.submit(log.PendingRecord(log.InferenceRecord(
                    finish_reason="error", prompt_tokens=len(row.ids), **base)))
                continue
            record = log.measure_question(log.InferenceRecord(
                finish_reason="stop" if result.stopped else "length", prompt_tokens=result.prompt_tokens,
                completion_tokens=result.completion_tokens, empty_answer=not result.text, **base),
                row.question, len(row.question_ids), result.question_nll or 0.0)
            self.log_writer.submit(log.PendingRecord(record, question=row.question, question_ids=row.question_ids))

    def finalize(self) -> None:
        """Write the queued inference-log records, then free the model (and the GPU memory it
        held) when Triton unloads this instance."""
        if getattr(self, "log_writer", None) is not None:
            self.log_writer.close()
        self.generator = None
        if torch.cuda.is_available():
            torch.cuda.empty_cache()

    # -- helpers ---------------------------------------------------------------------

    @staticmethod
    def _input(request: Any, name: str) -> np.ndarray | None:
        tensor = pb_utils.get_input_tensor_by_name(request, name)
        return None if tensor is None else tensor.as_numpy()

    def _error(self, message: str, *, invalid: bool = False) -> Any:
        # Every refused request is recorded in the server log with its reason (never the
        # prompt: it may hold personal data), besides going back to the client.
        self._log("warn" if invalid else "error", f"request refused: {message}")
        # Error codes arrived in later python backends: INVALID_ARG maps to HTTP 400, the
        # default (INTERNAL) to 500; an older stub gets the message alone.
        code = getattr(pb_utils.TritonError, "INVALID_ARG", None) if invalid else None
        error = pb_utils.TritonError(message, code) if code is not None else pb_utils.TritonError(message)
        return pb_utils.InferenceResponse(output_tensors=[], error=error)

    @staticmethod
    def _log(level: str, message: str) -> None:
        logger = getattr(pb_utils, "Logger", None)
        if logger is not None:
            getattr(logger, f"log_{level}", logger.log_info)(message)
        else:
            print(message, flush=True)
