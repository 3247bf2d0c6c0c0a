"""What the DAGs hand each other: the ``extra`` of every llmops Asset event, and the XComs
their tasks return.

Producers return or announce ``Record.dump()`` (JSON, so the Airflow UI and REST API show
it as it is); consumers validate with ``Record.load``. An event published before events
were records (no ``schema_version``) is version 0 and reads the same. Asset URIs and the
publishing tasks: ``plugins/llmops_airflow/assets.py``; the README's "Assets" table.

No key contains "token": Airflow's secrets masker hides the value of any such key
(``tokenizer``, ``tokens``) in the UI and the REST API.

The records a library function returns or an operator reads are declared with it and only
named here: the training XComs (``TrainingJobArgs``, ``TrainedJob``, ``TrainedModel``:
``llmops.records.training``), the
evaluation's (``CandidateEvaluation``, ``RegisteredVersion``: ``llmops.records.evaluation``)
and the deployment's (``DeployResult``: ``llmops.records.serving``).
"""

from __future__ import annotations

from llmops.records.base import Record
from llmops.records.common import Ref
from llmops.records.data import CorpusEvent, QaEvent, TokensEvent

# ---- Asset event extras ------------------------------------------------------------------
# llmops://corpus, llmops://qa and llmops://tokens: CorpusEvent, QaEvent, TokensEvent, declared
# with the data records they point to (``llmops.records.data``).


class ModelVariant(Ref):
    path: str
    """The exported Hugging Face directory."""
    hash: str
    """Its export key."""


class ModelEvent(Record):
    """``llmops://model``: the fine-tuned models of one training run; ``path``/``hash`` is the
    served variant, the one ``llmops_evaluate`` evaluates."""

    path: str
    hash: str
    variant: str
    mlflow_run_id: str | None = None
    data_card: str
    base_model: str
    """The pretrained model the variants were fine-tuned from (a directory or ``models:/`` URI)."""
    variants: dict[str, ModelVariant]


class ChallengerEvent(Record):
    """``llmops://challenger``: a registered version that passed the gate."""

    path: str
    """The evaluated model directory."""
    hash: str
    """The registered version, as MLflow spells it (``"3"``)."""
    model_uri: str
    """``models:/<name>/<version>``."""
    version: str
    name: str
    """The registered model name (``llmops``, or ``llmops-<variant>``)."""
    report: str
    """The evaluation report's directory."""


class ChampionEvent(Record):
    """``llmops://champion``: the version Triton serves, after a verified swap."""

    path: str
    """The deploy report."""
    hash: str
    """The served version, as a string."""
    model_uri: str
    version: int
    previous: int | None = None
    """The version served before (None on a first deployment)."""


# ---- XComs ------------------------------------------------------------------------------


class StageOutput(Record):
    """A data stage's output as the next task finds it (XCom of ``scrape``, ``extract``, ...)."""

    path: str
    hash: str
    """The stage key (the directory's name)."""


class ShardSpec(Record):
    """One mapped ``extract`` task: which shard of which crawl (XCom of ``plan_shards``)."""

    crawl_path: str
    shard: int
    num_shards: int


__all__ = ["ChallengerEvent", "ChampionEvent", "CorpusEvent", "ModelEvent", "ModelVariant", "QaEvent", "ShardSpec",
           "StageOutput", "TokensEvent"]
