"""Generation on a tiny random Llama saved as an exported model directory would be."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from llmops.evaluation.generation import (
    ModelLoadError,
    generate_answers,
    load_model,
    qa_generation_metrics,
)
from llmops.training.export import TOKENIZER_FILES
from tests.training.fixtures import paths, qa_pairs

QUESTIONS = ["What is a for loop?", "Why?", "What is the with statement used for in Python programs?",
             "What is assert?", "x", "What is a lambda expression and when would you use one?"]


@pytest.fixture(scope="module")
def model_dir(data_home: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Hidden 64, 2 layers, 4 heads, the fixture tokenizer beside it, stops at eos or <|end|>."""
    import torch
    from transformers import AutoTokenizer, GenerationConfig, LlamaForCausalLM

    from llmops.training.model import llama_config

    tok_dir = paths(data_home)["tokenizer"]
    tokenizer = AutoTokenizer.from_pretrained(tok_dir)
    end_id = tokenizer.convert_tokens_to_ids("<|end|>")
    assert end_id is not None and end_id != tokenizer.unk_token_id
    preset = {"hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 2, "num_attention_heads": 4,
              "max_position_embeddings": 256, "tie_word_embeddings": True,
              "initializer_range": 0.2}  # peaked logits: greedy choices are not near-ties
    config = llama_config(preset, vocab_size=len(tokenizer), eos_id=tokenizer.eos_token_id,
                          pad_id=tokenizer.pad_token_id)
    config.use_cache = True
    torch.manual_seed(0)
    out = tmp_path_factory.mktemp("tiny_model")
    LlamaForCausalLM(config).save_pretrained(out)
    for name in TOKENIZER_FILES:
        if (tok_dir / name).exists():
            shutil.copyfile(tok_dir / name, out / name)
    GenerationConfig(eos_token_id=[tokenizer.eos_token_id, end_id],
                     pad_token_id=tokenizer.pad_token_id).save_pretrained(out)
    return out


@pytest.fixture(scope="module")
def loaded(model_dir: Path):
    return load_model(model_dir)


def test_load_model_is_ready_for_batched_generation(loaded, model_dir: Path):
    model, tokenizer = loaded
    assert not model.training and model.device.type == "cpu"
    assert tokenizer.padding_side == "left" and tokenizer.pad_token_id is not None
    assert list(model.generation_config.eos_token_id) == json.loads(
        (model_dir / "generation_config.json").read_text())["eos_token_id"]


def test_load_model_rejects_a_directory_without_a_model(tmp_path: Path):
    with pytest.raises(ModelLoadError, match="no config.json"):
        load_model(tmp_path)


def test_one_record_per_question_in_order(loaded):
    model, tokenizer = loaded
    records = generate_answers(model, tokenizer, QUESTIONS, max_new_tokens=8, batch_size=4)
    assert [r["question"] for r in records] == QUESTIONS
    for r in records:
        assert set(r) == {"question", "completion", "new_tokens", "stopped", "seconds"}
        assert isinstance(r["completion"], str) and r["completion"] == r["completion"].strip()
        assert 1 <= r["new_tokens"] <= 8 and r["seconds"] > 0
        assert r["stopped"] or r["new_tokens"] == 8


def test_batched_greedy_equals_one_at_a_time(loaded):
    """Left padding + the attention mask make a padded row generate as if it were alone."""
    model, tokenizer = loaded
    batched = generate_answers(model, tokenizer, QUESTIONS, max_new_tokens=12, batch_size=len(QUESTIONS))
    single = generate_answers(model, tokenizer, QUESTIONS, max_new_tokens=12, batch_size=1)
    assert [r["completion"] for r in batched] == [r["completion"] for r in single]
    assert [r["new_tokens"] for r in batched] == [r["new_tokens"] for r in single]
    assert len({r["completion"] for r in single}) > 1  # the prompts matter; not a constant output


def test_max_new_tokens_is_respected(loaded):
    model, tokenizer = loaded
    for limit in (1, 3):
        records = generate_answers(model, tokenizer, QUESTIONS[:3], max_new_tokens=limit)
        assert all(r["new_tokens"] <= limit for r in records)
        assert all(r["stopped"] or r["new_tokens"] == limit for r in records)


def test_stops_at_a_generation_config_eos_id(loaded):
    """Whatever token the model emits first, declared a stop id, ends the answer right there."""
    model, tokenizer = loaded
    prompt = tokenizer.apply_chat_template([{"role": "user", "content": QUESTIONS[0]}], add_generation_prompt=True,
                                           tokenize=False)
    ids = tokenizer(prompt, return_tensors="pt", add_special_tokens=False)
    first = int(model.generate(**ids, max_new_tokens=1, do_sample=False,
                               pad_token_id=tokenizer.pad_token_id)[0, -1])
    saved = model.generation_config.eos_token_id
    model.generation_config.eos_token_id = [*saved, first]
    try:
        [record] = generate_answers(model, tokenizer, QUESTIONS[:1], max_new_tokens=10)
    finally:
        model.generation_config.eos_token_id = saved
    assert record["stopped"] and record["new_tokens"] == 1


def test_seeded_sampling_is_reproducible_and_seeds_differ(loaded):
    model, tokenizer = loaded
    kwargs = {"max_new_tokens": 12, "do_sample": True, "temperature": 1.0, "top_p": 0.95}
    a = [r["completion"] for r in generate_answers(model, tokenizer, QUESTIONS, seed=1, **kwargs)]
    b = [r["completion"] for r in generate_answers(model, tokenizer, QUESTIONS, seed=1, **kwargs)]
    c = [r["completion"] for r in generate_answers(model, tokenizer, QUESTIONS, seed=2, **kwargs)]
    assert a == b
    assert a != c


def test_bad_arguments_raise(loaded):
    model, tokenizer = loaded
    with pytest.raises(TypeError, match="list of strings"):
        generate_answers(model, tokenizer, "What is x?")
    with pytest.raises(ValueError, match="max_new_tokens"):
        generate_answers(model, tokenizer, QUESTIONS, max_new_tokens=0)
    with pytest.raises(ValueError, match="temperature"):
        generate_answers(model, tokenizer, QUESTIONS, do_sample=True, temperature=0)
    with pytest.raises(TypeError, match="'question' and 'answer'"):
        qa_generation_metrics(model, tokenizer, [{"question": "q"}])
    with pytest.raises(ValueError, match="empty"):
        qa_generation_metrics(model, tokenizer, [])
    with pytest.raises(ValueError, match="seeds"):
        qa_generation_metrics(model, tokenizer, [{"question": "q", "answer": "a"}], diversity_samples=3)


def test_qa_generation_metrics_reports_every_key_in_range(loaded):
    model, tokenizer = loaded
    pairs = qa_pairs()[:12]
    result = qa_generation_metrics(model, tokenizer, pairs, max_new_tokens=16)
    assert 0 <= result["bleu"] <= 100
    for key in ("rouge1", "rouge2", "rougeL", "exact_match", "distinct_1", "distinct_2", "stopped_share"):
        assert 0 <= result[key] <= 1, key
    assert result["distinct_1"] > 0 and result["distinct_2"] > 0
    assert 0 < result["latency_s_p50"] <= result["latency_s_p95"]
    assert result["tokens_per_s"] > 0 and result["pairs"] == 12
    assert len(result["samples"]) == 10
    assert result["samples"][0]["question"] == pairs[0]["question"]
    assert result["samples"][0]["reference"] == pairs[0]["answer"]
    assert set(result["samples"][0]) == {"question", "reference", "completion"}
    json.dumps(result)  # goes into the evaluation report as it is
