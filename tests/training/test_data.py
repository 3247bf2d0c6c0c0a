from __future__ import annotations

import json

import numpy as np
import pytest

from llmops.training.data import (
    IGNORE_INDEX,
    DataError,
    Schedule,
    TokenWindows,
    encode_chat_examples,
    read_pairs,
    split_pairs,
)
from tests.training.fixtures import paths


def test_schedule_gives_each_rank_its_own_samples_and_is_deterministic():
    sched = Schedule(n_samples=100, micro_batch_size=4, grad_accum_steps=2, world_size=2, seed=7)
    seen = [sched.indices(0, m, r) for m in range(2) for r in range(2)]
    flat = np.concatenate(seen)
    assert len(set(flat.tolist())) == len(flat) == sched.global_batch  # disjoint across ranks and micro-steps
    again = Schedule(100, 4, 2, 2, 7)
    assert np.array_equal(sched.indices(5, 1, 1), again.indices(5, 1, 1))  # resume reads the same data
    assert not np.array_equal(sched.indices(5, 1, 1), Schedule(100, 4, 2, 2, 8).indices(5, 1, 1))


def test_schedule_covers_every_sample_once_per_epoch():
    sched = Schedule(n_samples=48, micro_batch_size=4, grad_accum_steps=1, world_size=2, seed=1)
    epoch = np.concatenate([sched.indices(s, 0, r) for s in range(6) for r in range(2)])
    assert sorted(epoch.tolist()) == list(range(48))
    assert sched.epoch_at(6) == 1.0


def test_token_windows_are_context_plus_one_with_shifted_labels(data_home):
    tokens_dir = paths(data_home)["tokens"]
    windows = TokenWindows(tokens_dir, "train", 64)
    inputs, labels = windows.batch(np.array([0, 3]))
    assert inputs.shape == labels.shape == (2, 64)
    assert np.array_equal(inputs[:, 1:], labels[:, :-1])
    assert np.array_equal(inputs[0], np.asarray(windows.tokens[0:64]))
    # consecutive windows share one token, so every token is a label once per epoch
    assert windows.starts[1] - windows.starts[0] == 64
    assert windows.dropped_tokens < 65


def test_token_windows_refuse_a_split_shorter_than_one_window(data_home):
    with pytest.raises(DataError, match="fewer than one window"):
        TokenWindows(paths(data_home)["tokens"], "validation", 10**7)


def test_chat_examples_mask_the_prompt_and_end_with_eos(data_home):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(paths(data_home)["tokenizer"])
    pairs = [{"question": "What is a loop?", "answer": "A loop repeats a block of statements."}]
    ex = encode_chat_examples(pairs, tok, max_length=96)
    ids, lab = ex.input_ids[0], ex.labels[0]
    answer = tok.decode([t for t in lab if t != IGNORE_INDEX])
    assert answer.startswith("A loop repeats a block of statements.") and lab[-1] == tok.eos_token_id
    prompt = tok.decode(ids[lab == IGNORE_INDEX])
    assert "What is a loop?" in prompt and prompt.endswith("<|assistant|>")
    inputs, labels, mask = ex.batch(np.array([0]))
    assert np.array_equal(labels[0], lab[1:]) and mask.sum() == len(ids) - 1


def test_chat_examples_truncate_on_the_answer_side(data_home):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(paths(data_home)["tokenizer"])
    long = [{"question": "Why?", "answer": "because " * 200}]
    ex = encode_chat_examples(long, tok, max_length=40)
    assert ex.truncated == 1 and len(ex.input_ids[0]) == 40
    assert "Why?" in tok.decode(ex.input_ids[0])


def test_pairs_split_by_page_and_bad_files_fail(tmp_path):
    pairs = [{"question": f"q{i}", "answer": "a", "page_id": f"p{i // 3}"} for i in range(60)]
    train, val = split_pairs(pairs, 0.2, seed=1)
    assert val and train and len(train) + len(val) == 60
    assert not {p["page_id"] for p in train} & {p["page_id"] for p in val}
    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps({"question": "only a question"}) + "\n")
    with pytest.raises(DataError, match=r"bad.jsonl:1: needs non-empty"):
        read_pairs(bad)
    with pytest.raises(DataError, match="does not exist"):
        read_pairs(tmp_path / "missing.jsonl")
