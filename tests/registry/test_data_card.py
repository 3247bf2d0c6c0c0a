import json

from llmops.registry.data_card import build_data_card, log_data_card, render_markdown, write_data_card
from tests.data.test_report_plot import REPORT

CONTAMINATION = {"heldout_questions": {"items": 10, "contaminated": 1, "rate": 0.1, "mean_ngram_overlap": 0.12}}


def _card():
    return build_data_card(
        report=REPORT | {"dedup": REPORT["dedup"] | {"duplicate_rate": 0.125}},
        pii={"docs": 7, "pii_counts_by_type": {"PERSON": 3, "EMAIL_ADDRESS": 2}},
        qa={"finetune_pairs": 10, "heldout_pairs": 2},
        tokenizer={"vocab_size": 1024, "tokenizer_sha256": "abc"},
        tokens={"n_tokens": 1234, "dtype": "uint16", "eos_after_every_document": True},
        contamination=CONTAMINATION,
        outputs={"tokens": {"path": "/a/tokens/k", "hash": "k"}},
    )


def test_card_has_every_section_and_renders(tmp_path):
    card = _card()
    assert card["documents"]["dropped_by_filter"] == {"length": 1}
    assert card["sources"][0]["failed_by_reason"] == {"http_404": 2}
    paths = write_data_card(card, tmp_path)
    assert json.loads(paths["json"].read_text())["pii"]["pii_counts_by_type"]["PERSON"] == 3
    md = paths["markdown"].read_text()
    assert md == render_markdown(card)
    for heading in ("# Data card", "## Source: http://h/", "## Documents", "## PII", "## Contamination",
                    "## Outputs"):
        assert heading in md
    assert "| heldout_questions | 10 | 1 | 0.1 | 0.12 |" in md


def test_logged_to_mlflow_only_when_a_tracking_uri_is_set(tmp_path, monkeypatch):
    paths = write_data_card(_card(), tmp_path / "card")
    monkeypatch.chdir(tmp_path)  # MLflow's default artifact root is ./mlruns
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    assert log_data_card(paths, _card(), "run") is None
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")
    run_id = log_data_card(paths, _card(), "run")
    from mlflow.tracking import MlflowClient

    client = MlflowClient()
    run = client.get_run(run_id)
    assert run.data.metrics["documents"] == 7 and run.data.metrics["tokens_n_tokens"] == 1234
    assert "tokens_eos_after_every_document" not in run.data.metrics
    assert {a.path for a in client.list_artifacts(run_id, "data_card")} == {"data_card/data_card.json",
                                                                             "data_card/data_card.md"}
