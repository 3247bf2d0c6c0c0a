import json

from llmops.records.data import (
    CardOutput,
    ContaminationRow,
    QaSummary,
    RedactSummary,
    TokenizerStats,
    TokenShardMeta,
    TokenSplit,
)
from llmops.registry.data_card import build_data_card, log_data_card, render_markdown, write_data_card
from tests.data.test_report_plot import REPORT

CONTAMINATION = {"heldout_questions": ContaminationRow(items=10, contaminated=1, rate=0.1, mean_ngram_overlap=0.12)}


def _card():
    split = TokenSplit(n_docs=7, n_tokens=617, n_bytes=2000)
    return build_data_card(
        report=REPORT.model_copy(update={"dedup": REPORT.dedup.model_copy(update={"duplicate_rate": 0.125})}),
        pii=RedactSummary(docs=7, docs_with_pii=3, pii_counts_by_type={"PERSON": 3, "EMAIL_ADDRESS": 2},
                          docs_per_s=10.0, seconds=0.7, operator="replace", entities=["PERSON", "EMAIL_ADDRESS"],
                          processes=1),
        qa=QaSummary(finetune_pairs=10, heldout_pairs=2, finetune_pages=5, heldout_pages=1, pages_without_pairs=1,
                     heldout_fraction=0.2, seed=1234),
        tokenizer=TokenizerStats(vocab_size=1024, num_merges=763, special_tokens={"<|endoftext|>": 0, "<|pad|>": 1},
                                 eos_token="<|endoftext|>", eos_id=0, pad_token="<|pad|>", pad_id=1,
                                 has_chat_template=True, tokenizer_sha256="abc"),
        tokens=TokenShardMeta(format_version=1, dtype="uint16", vocab_size=1024, eos_token="<|endoftext|>", eos_id=0,
                              pad_token="<|pad|>", pad_id=1, tokenizer_sha256="abc", validation_fraction=0.5,
                              window=64, stride=64, splits={"train": split, "validation": split}, n_tokens=1234,
                              n_docs=14, n_bytes=4000, bytes_per_token=3.3, eos_after_every_document=True,
                              special_token_strings_in_text="encoded as ordinary text", num_workers=1,
                              encode_seconds=0.1, encode_mb_per_s=0.04),
        contamination=CONTAMINATION,
        outputs={"tokens": CardOutput(path="/a/tokens/k", hash="k", content_hash="kc", stage_key="k",
                                      files={"meta.json": "m"})},
    )


def test_card_has_every_section_and_renders(tmp_path):
    card = _card()
    assert card.documents.dropped_by_filter == {"length": 1}
    assert card.sources[0].failed_by_reason == {"http_404": 2}
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
