from __future__ import annotations

import pytest
import yaml

from llmops.training.model import (
    PRESETS_DIR,
    PresetError,
    available_presets,
    count_parameters,
    estimate_parameters,
    llama_config,
    load_preset,
)


def test_shipped_presets_have_the_documented_sizes():
    assert {"tiny", "125m", "1b"} <= set(available_presets())
    assert 1_000_000 < estimate_parameters(load_preset("tiny"), 4096) < 5_000_000
    assert 100e6 < estimate_parameters(load_preset("125m"), 50_257) < 135e6
    assert 0.95e9 < estimate_parameters(load_preset("1b"), 32_000) < 1.2e9


def test_estimate_matches_the_real_model():
    from transformers import LlamaForCausalLM

    preset = load_preset("tiny")
    model = LlamaForCausalLM(llama_config(preset, vocab_size=1024, eos_id=0, pad_id=1))
    assert count_parameters(model).total == estimate_parameters(preset, 1024)
    assert model.config.vocab_size == 1024 and model.config.eos_token_id == 0
    assert model.config.rope_parameters["rope_theta"] == preset.rope_theta


def test_bad_presets_fail_clearly(tmp_path):
    with pytest.raises(PresetError, match="not found.*available: .*tiny"):
        load_preset("huge")
    bad = tmp_path / "bad.yaml"
    bad.write_text("hidden_size: 64\nintermediate_size: 128\nnum_hidden_layers: 2\nnum_attention_heads: 4\n"
                   "hiden_dropout: 0.1\n")
    with pytest.raises(PresetError, match=r"bad\.yaml: hiden_dropout: Extra inputs"):
        load_preset(str(bad))
    bad.write_text("hidden_size: 66\nintermediate_size: 128\nnum_hidden_layers: 2\nnum_attention_heads: 4\n")
    with pytest.raises(PresetError, match="divide"):
        load_preset(str(bad))
    bad.write_text("hidden_size: 64\nintermediate_size: 128\nnum_hidden_layers: 2\n")
    with pytest.raises(PresetError, match=r"bad\.yaml: num_attention_heads: Field required"):
        load_preset(str(bad))


@pytest.mark.parametrize("name", ["tiny", "125m", "1b"])
def test_a_preset_dumps_as_its_yaml(name):
    """The preset enters the training job's key: loaded, it must dump exactly the YAML's
    mapping (no unset field, ``10000.0`` still a float), so the key stays what it was."""
    stored = yaml.safe_load((PRESETS_DIR / f"{name}.yaml").read_text())
    dumped = load_preset(name).model_dump(mode="json")
    assert dumped == stored and [type(v) for v in dumped.values()] == [type(v) for v in stored.values()]


def test_a_preset_keeps_its_numbers_as_written(tmp_path):
    preset = tmp_path / "p.yaml"
    preset.write_text("hidden_size: 64\nintermediate_size: 128\nnum_hidden_layers: 2\nnum_attention_heads: 4\n"
                      "rope_theta: 500000\n")
    assert load_preset(str(preset)).model_dump(mode="json")["rope_theta"] == 500000
