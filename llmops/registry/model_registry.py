"""The MLflow model registry as llmops uses it: which model is which.

A model version's artifacts are the plain Hugging Face directory the export wrote
(config.json, safetensors, tokenizer files with the chat template), logged under the
run's ``model/`` artifact path, so ``mlflow.artifacts.download_artifacts("models:/llmops/3")``
returns exactly what the deployment serves. No MLflow flavour wrapper: every tool that
reads HF directories reads it as it is.

Aliases, not the deprecated stages: ``challenger`` (passed the gate) and ``champion``
(served, set after a verified deployment). Promoting records the previous champion on
the new one (tag ``llmops.previous_champion``), so a rollback is reassigning
``champion`` to that version (``rollback_champion``; a rollback to a chosen version is
recorded like a promotion, so the next rollback returns from it).

One model, one version: every version carries a ``content_sha256`` tag, a digest of what
makes the model behave as it does (weights, configs, tokenizer, chat template) but not of
the files that record how it was made. ``find_by_content`` answers "is this model
registered already?", so the same weights coming back (an Asset event replayed, a
re-run that trained the same bits) are not evaluated and registered again.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from pathlib import Path

from llmops.artifacts import file_sha256
from llmops.config import LlmopsConfig
from llmops.errors import PermanentError
from llmops.records.evaluation import ModelLineage
from llmops.registry import tracking

SERVED_MODEL = "llmops"
CHALLENGER = "challenger"
CHAMPION = "champion"
PREVIOUS_CHAMPION_TAG = "llmops.previous_champion"
DATA_CARD_TAG = "data_card_hash"
"""The stage key of the data card a version was trained on (``artifacts/data_card/<key>/``)."""
BASE_VERSION_TAG = ModelLineage.TAG_NAMES["base_version"]
"""On a retrained version: the champion it continued from."""
DRIFT_REPORT_TAG = ModelLineage.TAG_NAMES["drift_report"]
"""On a retrained version: the ``drift.json`` that triggered the retraining."""
MODEL_ARTIFACT_PATH = "model"
CONTENT_TAG = "content_sha256"
# The files of an HF directory that decide what the model answers (besides *.safetensors).
# Not llmops_model.json or MODEL_CARD.md: they carry the run's lineage (run directory, MLflow
# run, dates), which differs between two trainings of the same bits.
CONTENT_FILES = ("config.json", "generation_config.json", "tokenizer.json", "tokenizer_config.json",
                 "special_tokens_map.json", "added_tokens.json", "vocab.json", "merges.txt", "tokenizer.model",
                 "chat_template.jinja", "chat_template.json")


class RegistryError(PermanentError, RuntimeError):
    """A registry operation cannot be done (no such version or alias, nothing to roll back to)."""


def registered_name(variant: str | None, served_variant: str | None = None) -> str:
    """``llmops`` for the served variant, ``llmops-<variant>`` for the others."""
    if variant is None or variant == served_variant:
        return SERVED_MODEL
    return f"{SERVED_MODEL}-{variant}"


def _client(cfg: LlmopsConfig):
    return tracking.connect(tracking.tracking_uri(cfg))


def content_sha256(model_dir: Path) -> str:
    """SHA-256 over the model's weights (``*.safetensors``) and ``CONTENT_FILES``, in name order.

    Each file contributes its name and its own SHA-256, so renaming a shard changes the
    digest too. Files not present are skipped (a model without ``generation_config.json``
    hashes what it has); a directory without ``config.json`` or weights is not a model.
    """
    model_dir = Path(model_dir)
    weights = sorted(model_dir.glob("*.safetensors"))
    if not (model_dir / "config.json").is_file() or not weights:
        raise RegistryError(f"{model_dir} is not a Hugging Face model directory (needs config.json and "
                            f"*.safetensors weights)")
    files = sorted(weights + [model_dir / n for n in CONTENT_FILES if (model_dir / n).is_file()],
                   key=lambda p: p.name)
    digest = hashlib.sha256()
    for path in files:
        digest.update(f"{path.name}\0{file_sha256(path)}\n".encode())
    return digest.hexdigest()


def find_by_content(cfg: LlmopsConfig, digest: str, *, name: str | None = None) -> str | None:
    """``models:/<name>/<N>`` of the earliest version tagged ``content_sha256 = digest`` (of
    registered model ``name``, or of any), else None.

    Versions registered before the tag existed carry none and are ignored: they are not
    hashed after the fact (that would mean downloading every version).
    """
    if not all(c in "0123456789abcdef" for c in digest):  # it goes into a filter string
        raise ValueError(f"not a hex digest: {digest!r}")
    found = [mv for mv in _client(cfg).search_model_versions(f"tags.{CONTENT_TAG} = '{digest}'")
             if name is None or mv.name == name]
    if not found:
        return None
    first = min(found, key=lambda mv: (mv.name, int(mv.version)))
    return f"models:/{first.name}/{first.version}"


def register_model(cfg: LlmopsConfig, model_dir: Path, run_id: str, *, name: str = SERVED_MODEL,
                   tags: Mapping[str, str] | None = None, alias: str | None = CHALLENGER,
                   description: str | None = None) -> str:
    """Log ``model_dir`` as run ``run_id``'s ``model/`` artifacts and register it; returns the version.

    The version is tagged ``content_sha256``. This function registers what it is given, even
    content registered before (a deployment test does so on purpose); "one model, one
    version" is the caller's check (``find_by_content``), which ``evaluate_candidate`` makes
    before anything is evaluated.
    """
    from mlflow.exceptions import MlflowException

    model_dir = Path(model_dir)
    if not (model_dir / "config.json").exists():
        raise RegistryError(f"{model_dir} is not a Hugging Face model directory (no config.json)")
    tags = {**(tags or {}), CONTENT_TAG: content_sha256(model_dir)}
    client = _client(cfg)
    client.log_artifacts(run_id, str(model_dir), MODEL_ARTIFACT_PATH)
    source = f"{client.get_run(run_id).info.artifact_uri}/{MODEL_ARTIFACT_PATH}"
    try:
        client.create_registered_model(name, description="llmops language model (plain Hugging Face directory)")
    except MlflowException as exc:
        if "already exists" not in str(exc).lower() and "RESOURCE_ALREADY_EXISTS" not in str(exc):
            raise
    version = client.create_model_version(name, source=source, run_id=run_id,
                                          tags=tags,
                                          description=description)
    if alias:
        client.set_registered_model_alias(name, alias, version.version)
    return str(version.version)


def version_for(cfg: LlmopsConfig, name: str, alias: str) -> str | None:
    """The version an alias points to, or None if the alias is not set."""
    from mlflow.exceptions import MlflowException

    try:
        return str(_client(cfg).get_model_version_by_alias(name, alias).version)
    except MlflowException as exc:
        # Only "no such model or alias" means None; an unreachable registry must not read as
        # "no champion" (a promotion would then forget the previous one).
        if exc.error_code in ("RESOURCE_DOES_NOT_EXIST", "INVALID_PARAMETER_VALUE", "NOT_FOUND"):
            return None
        raise


def promote_champion(cfg: LlmopsConfig, version: str, *, name: str = SERVED_MODEL) -> str | None:
    """Point ``champion`` at ``version``; returns the previous champion (recorded on the new one)."""
    client = _client(cfg)
    previous = version_for(cfg, name, CHAMPION)
    if previous == str(version):
        return previous
    if previous is not None:
        client.set_model_version_tag(name, str(version), PREVIOUS_CHAMPION_TAG, previous)
    client.set_registered_model_alias(name, CHAMPION, str(version))
    return previous


def rollback_champion(cfg: LlmopsConfig, *, name: str = SERVED_MODEL, to_version: str | None = None
                      ) -> tuple[str, str]:
    """Reassign ``champion`` to an earlier version; returns ``(from_version, to_version)``.

    By default (or when ``to_version`` is the version the champion replaced) the alias moves
    to the champion's ``llmops.previous_champion`` and no tag changes, so rolling back again
    goes one further step back along the deployments (v3 -> v2 -> v1). Any other
    ``to_version`` is a jump, recorded like a promotion: the target's
    ``llmops.previous_champion`` becomes the champion it replaces, so the next rollback
    returns there (its earlier tag, if any, is overwritten: the registry keeps one
    predecessor per version, and the deploy reports keep the whole history). Whether the
    target may serve (its gate) is the deployment's check, not the registry's.
    """
    from mlflow.exceptions import MlflowException

    client = _client(cfg)
    current = version_for(cfg, name, CHAMPION)
    if current is None:
        raise RegistryError(f"{name} has no champion to roll back")
    recorded = client.get_model_version(name, current).tags.get(PREVIOUS_CHAMPION_TAG)
    target = str(to_version) if to_version is not None else recorded
    if not target:
        raise RegistryError(f"{name} version {current} is the first champion: there is no earlier one")
    if target == current:
        raise RegistryError(f"{name} version {current} is already the champion")
    if target != recorded:
        try:
            client.get_model_version(name, target)
        except MlflowException as exc:
            if exc.error_code not in ("RESOURCE_DOES_NOT_EXIST", "INVALID_PARAMETER_VALUE", "NOT_FOUND"):
                raise  # an unreachable registry is not a missing version
            raise RegistryError(f"{name} has no version {target} ({str(exc).splitlines()[0]})") from None
        promote_champion(cfg, target, name=name)
    else:
        client.set_registered_model_alias(name, CHAMPION, target)
    return current, target


def version_tags(cfg: LlmopsConfig, version: str, *, name: str = SERVED_MODEL) -> dict[str, str]:
    """The tags of registered version ``version`` of ``name``."""
    return dict(_client(cfg).get_model_version(name, str(version)).tags)


def download(cfg: LlmopsConfig, model_uri: str, dst: Path | None = None) -> Path:
    """The model directory of ``models:/name/version`` or ``models:/name@alias``."""
    path = tracking.download_model(cfg, model_uri, dst)
    if not (path / "config.json").exists():
        raise RegistryError(f"{model_uri} is not a Hugging Face model directory (no config.json in {path})")
    return path
