"""Offline evaluation on MovieLens-100k: iALS must beat popularity (issue "Foundation")."""

from pipelines.report import write_report


def test_ials_beats_popularity_on_recall_and_ndcg(ml_nightly):
    metrics = ml_nightly.evaluation.metrics
    for metric in ("recall@20", "ndcg@20"):
        assert metrics["als"][metric] > metrics["popularity"][metric], metric
    assert ml_nightly.evaluation.users["evaluated"] > 100


def test_nightly_publishes_metrics_in_the_manifest(ml_nightly):
    assert ml_nightly.published
    holdout = ml_nightly.manifest.metrics["holdout"]
    assert holdout["als"]["recall@20"] == ml_nightly.evaluation.metrics["als"]["recall@20"]
    assert ml_nightly.manifest.metrics["n_events"] == 100_000


def test_report_is_written_with_table_and_plot(ml_nightly, tmp_path):
    out = write_report(ml_nightly.evaluation, tmp_path, "ML-100k")
    text = (out / "report.md").read_text()
    assert "| als |" in text and "| popularity |" in text and "recall_at_k.png" in text
    assert (out / "recall_at_k.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
