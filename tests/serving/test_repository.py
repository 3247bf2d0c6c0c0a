"""The Triton model repository builder: config rendering (checked by Triton's own schema) and layout."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from google.protobuf import text_format
from tritonclient.grpc import model_config_pb2

from llmops.config import LlmopsConfig, load_config
from llmops.records.serving import RegistryFacts, ServedModelInfo
from llmops.serving import repository as repo


@pytest.fixture
def cfg(llmops_home: Path) -> LlmopsConfig:
    return load_config(environ={"LLMOPS_HOME": str(llmops_home)})


@pytest.fixture
def hf_dir(tmp_path: Path) -> Path:
    """A directory with every file an exported model has (contents do not matter to the builder)."""
    d = tmp_path / "hf"
    d.mkdir()
    for name in repo.REQUIRED_HF_FILES:
        (d / name).write_text("{}")
    (d / "chat_template.jinja").write_text("{{ messages }}")
    (d / "llmops_model.json").write_text('{"kind": "finetune"}')
    return d


def parse(text: str) -> model_config_pb2.ModelConfig:
    """Parse a config.pbtxt with Triton's ModelConfig schema: an unknown field or bad value raises."""
    return text_format.Parse(text, model_config_pb2.ModelConfig())


def test_repository_path_defaults_to_home_and_follows_config(cfg: LlmopsConfig, tmp_path: Path) -> None:
    assert repo.repository_path(cfg) == cfg.home / "triton" / "models"
    other = load_config(environ={"LLMOPS_HOME": str(cfg.home)}, overrides={"serving": {"repository": str(tmp_path)}})
    assert repo.repository_path(other) == tmp_path


def test_render_config_matches_serving_config(cfg: LlmopsConfig) -> None:
    s = cfg.serving
    mc = parse(repo.render_config(cfg, "llmops", kind="cpu"))
    assert (mc.name, mc.backend, mc.max_batch_size) == ("llmops", "python", s.max_batch_size)
    inputs = {i.name: i for i in mc.input}
    assert list(inputs) == ["text_input", "max_tokens", "temperature", "top_p", "seed"]
    assert inputs["text_input"].data_type == model_config_pb2.TYPE_STRING and not inputs["text_input"].optional
    assert inputs["max_tokens"].data_type == model_config_pb2.TYPE_INT32 and inputs["max_tokens"].optional
    assert inputs["temperature"].data_type == inputs["top_p"].data_type == model_config_pb2.TYPE_FP32
    assert inputs["seed"].data_type == model_config_pb2.TYPE_INT64
    assert all(list(i.dims) == [1] for i in mc.input)
    outputs = {o.name: o.data_type for o in mc.output}
    assert outputs == {"text_output": model_config_pb2.TYPE_STRING, "model_version": model_config_pb2.TYPE_STRING,
                       "prompt_tokens": model_config_pb2.TYPE_INT32, "completion_tokens": model_config_pb2.TYPE_INT32}
    db = mc.dynamic_batching
    assert list(db.preferred_batch_size) == s.preferred_batch_sizes
    assert db.max_queue_delay_microseconds == s.max_queue_delay_us
    assert db.default_queue_policy.max_queue_size == s.max_queue_size
    assert [(g.count, g.kind) for g in mc.instance_group] == [(s.instance_count,
                                                               model_config_pb2.ModelInstanceGroup.KIND_CPU)]
    params = {k: v.string_value for k, v in mc.parameters.items()}
    m = cfg.monitor
    assert params == {"threads": str(s.threads_per_instance), "default_max_tokens": str(s.default_max_tokens),
                      "max_tokens_limit": str(s.max_tokens_limit), "max_prompt_tokens": str(s.max_prompt_tokens),
                      # the inference log: where the model writes it and what it counts against
                      "inference_log_dir": str(cfg.layout.inference_log), "drift_top_k": str(m.top_k),
                      "inference_log_queue": str(m.queue_size),
                      "inference_log_retention_s": str(m.retention_hours * 3600)}


def test_render_config_kinds_and_batching_switches(cfg: LlmopsConfig) -> None:
    kind = model_config_pb2.ModelInstanceGroup
    assert parse(repo.render_config(cfg, "m", kind="gpu")).instance_group[0].kind == kind.KIND_GPU
    assert parse(repo.render_config(cfg, "m", kind="auto")).instance_group[0].kind == kind.KIND_AUTO
    # kind=None follows serving.device (default auto)
    assert parse(repo.render_config(cfg, "m")).instance_group[0].kind == kind.KIND_AUTO

    plain = parse(repo.render_config(cfg, "m", dynamic_batching=False))
    assert plain.max_batch_size == cfg.serving.max_batch_size and not plain.HasField("dynamic_batching")
    unbatched = parse(repo.render_config(cfg, "m", max_batch_size=0))
    assert unbatched.max_batch_size == 0 and not unbatched.HasField("dynamic_batching")
    # Preferred sizes above max_batch_size would make Triton refuse the model.
    small = parse(repo.render_config(cfg, "m", max_batch_size=4))
    assert list(small.dynamic_batching.preferred_batch_size) == [4]

    with pytest.raises(ValueError, match="kind"):
        repo.render_config(cfg, "m", kind="tpu")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="model name"):
        repo.render_config(cfg, "../escape")
    # A default above the limit would make the model refuse to load: the config refuses it first.
    with pytest.raises(ValueError, match="default_max_tokens"):
        load_config(environ={"LLMOPS_HOME": str(cfg.home)},
                    overrides={"serving": {"default_max_tokens": 300, "max_tokens_limit": 256}})


def test_build_version_layout(cfg: LlmopsConfig, hf_dir: Path) -> None:
    info = RegistryFacts(model_uri="models:/llmops/3", version="3", data_card_hash="abc", gate_result="passed")
    target = repo.build_version(cfg, hf_dir=hf_dir, name="llmops", version=1, info=info, kind="cpu")
    root = repo.repository_path(cfg)
    assert target == root / "llmops" / "1"
    # The model and the tensor table it imports, side by side.
    for source in (repo.BACKEND_SOURCE, repo.tensors.SOURCE):
        assert (target / source.name).read_bytes() == source.read_bytes()
    assert sorted(p.name for p in (target / "hf").iterdir()) == sorted(p.name for p in hf_dir.iterdir())
    written = json.loads((target / "model_info.json").read_text())
    assert written == {**info.model_dump(), "name": "llmops", "triton_version": 1, "schema_version": 1}
    assert repo.read_model_info(cfg, "llmops", 1) == ServedModelInfo.load(written)
    assert parse((root / "llmops" / "config.pbtxt").read_text()).name == "llmops"
    # Nothing half-built is left behind.
    assert sorted(p.name for p in (root / "llmops").iterdir()) == ["1", "config.pbtxt"]

    # The registered version defaults to the Triton version.
    second = repo.build_version(cfg, hf_dir=hf_dir, name="llmops", version=2, info=RegistryFacts(model_uri="x"))
    assert repo.read_model_info(cfg, "llmops", 2).version == "2"
    assert repo.served_versions(cfg, "llmops") == [1, 2]
    assert (second / "model_info.json").is_file()


def test_build_version_is_idempotent_and_refuses_conflicts(cfg: LlmopsConfig, hf_dir: Path) -> None:
    info = RegistryFacts(model_uri="models:/llmops/1", version="1")
    first = repo.build_version(cfg, hf_dir=hf_dir, name="llmops", version=1, info=info)
    stamp = (first / "model_info.json").stat().st_mtime_ns
    assert repo.build_version(cfg, hf_dir=hf_dir, name="llmops", version=1, info=info.model_copy()) == first
    assert (first / "model_info.json").stat().st_mtime_ns == stamp  # a retry rewrites nothing
    with pytest.raises(FileExistsError, match="remove_version"):
        repo.build_version(cfg, hf_dir=hf_dir, name="llmops", version=1, info=info.model_copy(update={"version": "2"}))


def test_a_version_built_by_earlier_code_is_found_again(cfg: LlmopsConfig, hf_dir: Path) -> None:
    """A version directory from before records (model_info.json without schema_version, no
    tensors.py) is still complete: a retried deployment of it returns it unchanged."""
    target = repo.repository_path(cfg) / "llmops" / "3"
    (target / "hf").mkdir(parents=True)
    shutil.copy2(repo.BACKEND_SOURCE, target / "model.py")
    shutil.copy2(Path(__file__).parent / "data" / "model_info_v0.json", target / "model_info.json")
    facts = RegistryFacts(model_uri="models:/llmops/3", registered_name="llmops", version="3", run_id="0f1e2d3c4b5a",
                          data_card_hash="a1b2c3d4e5f60718", gate_result="passed", code_version="0.1.0+070b37c")
    assert repo.build_version(cfg, hf_dir=hf_dir, name="llmops", version=3, info=facts) == target
    assert repo.served_versions(cfg, "llmops") == [3]


@pytest.mark.parametrize("missing", ["model.safetensors", "tokenizer.json", "generation_config.json",
                                     "chat_template.jinja"])
def test_build_version_refuses_incomplete_model(cfg: LlmopsConfig, hf_dir: Path, missing: str) -> None:
    (hf_dir / missing).unlink()
    with pytest.raises(FileNotFoundError, match=missing.split(".")[0]):
        repo.build_version(cfg, hf_dir=hf_dir, name="llmops", version=1)
    assert repo.served_versions(cfg, "llmops") == []
    with pytest.raises(FileNotFoundError, match="not a directory"):
        repo.build_version(cfg, hf_dir=hf_dir / "nope", name="llmops", version=1)


def test_chat_template_inside_tokenizer_config_is_enough(cfg: LlmopsConfig, hf_dir: Path) -> None:
    (hf_dir / "chat_template.jinja").unlink()
    (hf_dir / "tokenizer_config.json").write_text(json.dumps({"chat_template": "{{ messages }}"}))
    assert repo.build_version(cfg, hf_dir=hf_dir, name="llmops", version=1).is_dir()


def test_failed_build_leaves_nothing(cfg: LlmopsConfig, hf_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def broken_copy(src, dst, *args, **kwargs):
        Path(dst).mkdir()
        (Path(dst) / "config.json").write_text("{}")
        raise OSError("disk full")

    monkeypatch.setattr(shutil, "copytree", broken_copy)
    with pytest.raises(OSError, match="disk full"):
        repo.build_version(cfg, hf_dir=hf_dir, name="llmops", version=1)
    model_dir = repo.repository_path(cfg) / "llmops"
    assert [p.name for p in model_dir.iterdir()] == ["config.pbtxt"]
    assert repo.served_versions(cfg, "llmops") == []


def test_bad_versions_and_names(cfg: LlmopsConfig, hf_dir: Path) -> None:
    for version in (0, -1, True, "1"):
        with pytest.raises(ValueError, match="positive integer"):
            repo.build_version(cfg, hf_dir=hf_dir, name="llmops", version=version)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="model name"):
        repo.build_version(cfg, hf_dir=hf_dir, name="a/b", version=1)


def test_remove_version_and_model(cfg: LlmopsConfig, hf_dir: Path) -> None:
    for v in (1, 2):
        repo.build_version(cfg, hf_dir=hf_dir, name="llmops", version=v)
    # A directory Triton would not serve (not a number, or incomplete) is not a served version.
    (repo.repository_path(cfg) / "llmops" / "3").mkdir()
    (repo.repository_path(cfg) / "llmops" / "notes").mkdir()
    assert repo.served_versions(cfg, "llmops") == [1, 2]
    assert repo.remove_version(cfg, "llmops", 1) is True
    assert repo.remove_version(cfg, "llmops", 1) is False
    assert repo.served_versions(cfg, "llmops") == [2]
    assert repo.remove_model(cfg, "llmops") is True
    assert repo.remove_model(cfg, "llmops") is False
    assert repo.served_versions(cfg, "llmops") == []
    assert list(repo.repository_path(cfg).iterdir()) == []


def test_write_config_switches_batching_in_place(cfg: LlmopsConfig, hf_dir: Path) -> None:
    repo.build_version(cfg, hf_dir=hf_dir, name="llmops", version=1)
    path = repo.write_config(cfg, "llmops", kind="cpu", dynamic_batching=False)
    assert not parse(path.read_text()).HasField("dynamic_batching")
    assert [p.name for p in path.parent.iterdir() if p.name.startswith(".")] == []
