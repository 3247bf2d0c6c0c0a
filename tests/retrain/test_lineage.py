"""What the serving champion was trained on, on a real MLflow SQLite registry: its data card
(tag ``data_card_hash``), the versions it continued from (tag ``llmops.base_version``) and the
documents and Q&A pairs of every card along that chain, by content.

The helpers here (a registered version, a data card holding a corpus and a Q&A set, a
redacted document) are shared by ``test_incremental`` and ``test_guards``.
"""

from __future__ import annotations

import json
import shutil
import uuid
from collections.abc import Sequence
from pathlib import Path

import pytest

from llmops.artifacts import build_stage
from llmops.config import LlmopsConfig, load_config
from llmops.data.qa import FINETUNE_FILE, HELDOUT_FILE, read_pairs, split_pairs, write_pairs, write_qa
from llmops.data.store import REDACTED_SCHEMA, RedactedDoc, short_hash, write_docs
from llmops.records.common import InputRef
from llmops.records.data import QaPair
from llmops.registry import model_registry as reg, tracking
from llmops.retrain import lineage
from llmops.retrain.lineage import LineageError

# ---- shared helpers ----------------------------------------------------------------


@pytest.fixture(name="cfg")
def cfg_fixture(tmp_path, tmp_path_factory, monkeypatch) -> LlmopsConfig:
    """A fresh LLMOPS_HOME whose MLflow SQLite store has its schema and nothing else."""
    monkeypatch.chdir(tmp_path)  # MLflow must not write ./mlruns into the checkout
    # Creating the schema takes a second: it is made once per session, each test gets a copy.
    schema = load_config(environ={}, overrides={"home": str(tmp_path_factory.getbasetemp() / "mlflow_schema")})
    if not schema.layout.mlflow_db.exists():
        tracking.connect(tracking.tracking_uri(schema))
    cfg = load_config(environ={}, overrides={"home": str(tmp_path / "home")})
    cfg.layout.mlflow_db.parent.mkdir(parents=True)
    shutil.copyfile(schema.layout.mlflow_db, cfg.layout.mlflow_db)
    return cfg


@pytest.fixture(name="model_dir", scope="session")
def model_dir_fixture(tmp_path_factory) -> Path:
    """One tiny Hugging Face directory every version registers: the registry hashes and
    copies it, nothing loads it, so its weights need not be a real model."""
    path = tmp_path_factory.mktemp("tiny_model")
    (path / "config.json").write_text(json.dumps({"architectures": ["LlamaForCausalLM"]}))
    (path / "model.safetensors").write_bytes(b"tiny weights" * 8)
    (path / "chat_template.jinja").write_text("{{ messages }}")
    return path


def register(cfg: LlmopsConfig, model: Path, card_key: str | None, *, base: str | None = None,
             champion: bool = False) -> str:
    """Register ``model`` the way ``register_candidate`` does, tagged with the data card it was
    trained on (and the version it continued from); returns the version."""
    tags = {reg.DATA_CARD_TAG: card_key} if card_key else {}
    if base:
        tags[reg.BASE_VERSION_TAG] = base
    run_id = tracking.job_run(cfg, f"evaluate-{uuid.uuid4().hex}", "evaluate", parent_run_id=None)
    version = reg.register_model(cfg, model, run_id, tags=tags)
    if champion:
        reg.promote_champion(cfg, version)
    return version


def doc(slug: str, title: str, sentences: list[str]) -> RedactedDoc:
    """A row of redact's ``corpus.parquet`` for page ``/<slug>`` (every column filled)."""
    url = f"http://docs.example/{slug}"
    text = " ".join(sentences)
    return RedactedDoc(
        id=short_hash(url), url=url, canonical_url=None, title=title, author=None, date_published=None, text=text,
        source="docs.example", fetched_at="2026-01-01T00:00:00Z", discovered_via="link", payload_sha256=None,
        n_chars=len(text), n_words=len(text.split()), n_sentences=len(sentences), sentences=sentences, lang="en",
        lang_score=0.99, text_sha256=short_hash(text, 64), dup_cluster=short_hash(url), dup_count=1, pii_counts="{}")


def topic_doc(topic: str, version: int = 1) -> RedactedDoc:
    """The page about ``topic``, as it reads at ``version``: two answer sentences (8-60 words,
    ending with '.'), so it gives both Q&A templates a pair."""
    return doc(topic, f"The {topic} statement", [
        f"The {topic} statement is one of the compound statements that a Python program can use (edition {version}).",
        f"A program written with the {topic} statement reads from the top of the block to its end every time.",
    ])


def write_corpus(docs: list[RedactedDoc], path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    write_docs(docs, path, REDACTED_SCHEMA)
    return path


def data_card(cfg: LlmopsConfig, docs: list[RedactedDoc], *, extra_pairs: Sequence[QaPair] = ()) -> str:
    """A data card stage output whose ``corpus`` and ``qa`` inputs are directories holding
    ``docs`` and their Q&A set (split as the ``qa`` stage splits it); returns its key."""
    name = uuid.uuid4().hex[:12]
    root = cfg.home / "cards-inputs" / name
    write_corpus(docs, root / "corpus" / "corpus.parquet")
    finetune, heldout, skipped = split_pairs(docs, cfg.qa.seed, cfg.qa.heldout_fraction)
    (root / "qa").mkdir()
    write_qa(finetune + list(extra_pairs), heldout, root / "qa", skipped=skipped,
             heldout_fraction=cfg.qa.heldout_fraction, seed=cfg.qa.seed)
    inputs = {"corpus": InputRef(path=str(root / "corpus"), hash=f"corpus-{name}"),
              "qa": InputRef(path=str(root / "qa"), hash=f"qa-{name}")}

    def build(tmp: Path) -> dict[str, int]:
        (tmp / "data_card.json").write_text("{}\n")  # what an increment names the card by
        return {"documents": len(docs)}

    return build_stage(cfg.home, "data_card", inputs, {}, build).key


def card_dir(cfg: LlmopsConfig, key: str) -> Path:
    return cfg.layout.stage_output("data_card", key)


# ---- one version ---------------------------------------------------------------------


def test_a_version_without_a_data_card_tag_names_the_fix(cfg, model_dir):
    register(cfg, model_dir, None)
    with pytest.raises(LineageError, match=r"names no data card \(tag data_card_hash\).*trigger llmops_data"):
        lineage.registered_version(cfg, "1")
    register(cfg, model_dir, "None")  # what str(None) writes when a training knew no card
    with pytest.raises(LineageError, match="names no data card"):
        lineage.registered_version(cfg, "2")


def test_a_version_whose_card_directory_is_gone_raises(cfg, model_dir):
    register(cfg, model_dir, "0123456789abcdef")
    with pytest.raises(LineageError, match=r"trained on data card 0123456789abcdef, which is not in .*deleted"):
        lineage.registered_version(cfg, "1")


def test_serving_champion_is_none_until_the_champion_alias_is_set(cfg, model_dir):
    assert lineage.serving_champion(cfg) is None  # no registered model at all
    register(cfg, model_dir, data_card(cfg, [topic_doc("for")]))
    assert lineage.serving_champion(cfg) is None  # a challenger is not served


def test_serving_champion_names_its_version_card_and_base(cfg, model_dir):
    first = data_card(cfg, [topic_doc("for")])
    second = data_card(cfg, [topic_doc("while")])
    register(cfg, model_dir, first, champion=True)
    register(cfg, model_dir, second, base="1", champion=True)
    champion = lineage.serving_champion(cfg)
    assert champion == lineage.Champion(name="llmops", version="2", data_card=card_dir(cfg, second),
                                        base_version="1")
    assert champion.model_uri == "models:/llmops/2"
    assert lineage.registered_version(cfg, "1").base_version is None


# ---- the chain -----------------------------------------------------------------------


def test_chain_follows_base_versions_newest_first(cfg, model_dir):
    keys = [data_card(cfg, [topic_doc(t)]) for t in ("for", "while", "with")]
    register(cfg, model_dir, keys[0])
    register(cfg, model_dir, keys[1], base="1")
    register(cfg, model_dir, keys[2], base="2", champion=True)
    versions = lineage.chain(cfg, lineage.serving_champion(cfg))
    assert [(v.version, v.data_card) for v in versions] == [("3", card_dir(cfg, keys[2])),
                                                             ("2", card_dir(cfg, keys[1])),
                                                             ("1", card_dir(cfg, keys[0]))]


def test_a_loop_in_the_base_version_tags_raises(cfg, model_dir):
    key = data_card(cfg, [topic_doc("for")])
    register(cfg, model_dir, key, base="2")
    register(cfg, model_dir, key, base="1", champion=True)
    with pytest.raises(LineageError, match=r"loop: \['2', '1'\]"):
        lineage.chain(cfg, lineage.serving_champion(cfg))
    register(cfg, model_dir, key, base="3", champion=True)  # a version naming itself
    with pytest.raises(LineageError, match="loop"):
        lineage.chain(cfg, lineage.serving_champion(cfg))


def test_a_base_version_deleted_from_the_registry_raises_lineage_error(cfg, model_dir):
    key = data_card(cfg, [topic_doc("for")])
    register(cfg, model_dir, key)
    register(cfg, model_dir, key, base="1", champion=True)
    tracking.connect(tracking.tracking_uri(cfg)).delete_model_version("llmops", "1")
    with pytest.raises(LineageError):
        lineage.chain(cfg, lineage.serving_champion(cfg))


SUITE_PAIR = QaPair(id="x-0", question="What is a suite?", answer="A suite is a group of statements.", page_id="x",
                    url="http://docs.example/x", title="Suites")
"""A pair of no page of the corpus (as a hand-edited Q&A set would hold)."""


# ---- what the chain knows --------------------------------------------------------------


def test_known_unions_the_documents_and_pairs_of_every_card_along_the_chain(cfg, model_dir):
    old_for, same_while = topic_doc("for", 1), topic_doc("while")
    extra = SUITE_PAIR
    first = data_card(cfg, [old_for, same_while])
    second = data_card(cfg, [topic_doc("for", 2), same_while, topic_doc("with")], extra_pairs=[extra])
    register(cfg, model_dir, first)
    register(cfg, model_dir, second, base="1", champion=True)

    known = lineage.known(lineage.chain(cfg, lineage.serving_champion(cfg)))
    texts = [old_for, same_while, topic_doc("for", 2), topic_doc("with")]
    assert set(known.documents) == {lineage.text_hash(d["text"]) for d in texts}
    newest_corpus = lineage.card_input(card_dir(cfg, second), "corpus") / "corpus.parquet"
    assert known.documents[lineage.text_hash(same_while["text"])] == newest_corpus  # in both: the newest card's
    assert known.documents[lineage.text_hash(old_for["text"])] != newest_corpus
    pairs = [p for key in (first, second) for name in (FINETUNE_FILE, HELDOUT_FILE)
             for p in _pairs(cfg, key, name)]
    assert len(pairs) > len(known.pairs) and extra in pairs  # while's pairs are in both cards
    assert known.pairs == {lineage.pair_hash(p) for p in pairs}


def test_a_card_without_a_corpus_input_raises(cfg, model_dir):
    key = build_stage(cfg.home, "data_card", {}, {"empty": True}, lambda tmp: {}).key
    register(cfg, model_dir, key, champion=True)
    with pytest.raises(LineageError, match="names no corpus input"):
        lineage.known([lineage.serving_champion(cfg)])


def _pairs(cfg: LlmopsConfig, card_key: str, name: str) -> list[QaPair]:
    return read_pairs(lineage.card_input(card_dir(cfg, card_key), "qa") / name)


# ---- nothing new -------------------------------------------------------------------------


def _data_run(cfg: LlmopsConfig, tmp_path: Path, docs: list[RedactedDoc],
              extra: Sequence[QaPair] = ()) -> tuple[Path, Path]:
    """What a full data run hands to ``nothing_new``: the redacted corpus and its Q&A set."""
    corpus = write_corpus(docs, tmp_path / "run" / "corpus.parquet")
    finetune, heldout, skipped = split_pairs(docs, cfg.qa.seed, cfg.qa.heldout_fraction)
    qa = tmp_path / "run" / "qa"
    qa.mkdir(exist_ok=True)
    write_qa(finetune, heldout, qa, skipped=skipped, heldout_fraction=cfg.qa.heldout_fraction, seed=cfg.qa.seed)
    if extra:
        write_pairs(finetune + list(extra), qa / FINETUNE_FILE)
    return corpus, qa


@pytest.fixture
def two_versions(cfg, model_dir) -> str:
    """Champion v2 (for, edition 2; with) continued from v1 (for, edition 1; while); returns v2's card key."""
    register(cfg, model_dir, data_card(cfg, [topic_doc("for", 1), topic_doc("while")]))
    second = data_card(cfg, [topic_doc("for", 2), topic_doc("with")])
    register(cfg, model_dir, second, base="1", champion=True)
    return second


def test_nothing_new_is_none_without_a_champion(cfg, tmp_path):
    assert lineage.nothing_new(cfg, *_data_run(cfg, tmp_path, [topic_doc("for")])) is None


def test_nothing_new_says_why_when_the_chain_knows_every_document_and_pair(cfg, tmp_path, two_versions):
    # the site today: for at edition 2 (v2's), while unchanged since v1, with (v2's)
    run = _data_run(cfg, tmp_path, [topic_doc("for", 2), topic_doc("while"), topic_doc("with")])
    assert lineage.nothing_new(cfg, *run) == (f"no new data since data card {card_dir(cfg, two_versions)} "
                                              f"(champion v2)")


def test_one_changed_document_is_something_new(cfg, tmp_path, two_versions):
    # The text changes beyond its answer sentences: the Q&A pairs stay known, the document is new.
    changed = RedactedDoc(**{**topic_doc("while"), "text": topic_doc("while")["text"] + " See also: for."})
    run = _data_run(cfg, tmp_path, [topic_doc("for", 2), changed, topic_doc("with")])
    assert lineage.nothing_new(cfg, *run) is None


def test_one_new_pair_is_something_new(cfg, tmp_path, two_versions):
    run = _data_run(cfg, tmp_path, [topic_doc("for", 2), topic_doc("while"), topic_doc("with")],
                    extra=[SUITE_PAIR])
    assert lineage.nothing_new(cfg, *run) is None


def test_a_champion_without_lineage_is_judged_by_the_last_event_alone(cfg, tmp_path, model_dir, caplog):
    register(cfg, model_dir, None, champion=True)  # registered by hand
    assert lineage.nothing_new(cfg, *_data_run(cfg, tmp_path, [topic_doc("for")])) is None
    assert "names no data card" in caplog.text
