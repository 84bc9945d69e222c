"""The main job end to end on the tiny profile: table, CSV and PNG with the expected rows, no NaN, reuse on rerun."""
import csv
import math
import os

import pytest

from recbole_llmkd.pipeline import Pipeline, PipelineError, resolve_profile

pytestmark = pytest.mark.slow

EXPECTED_MODELS = [
    "LLMRec (teacher)", "SASRec", "KDSASRec", "GRU4Rec", "KDGRU4Rec", "BERT4Rec", "KDBERT4Rec",
    "LLMRec-2L (no KD)", "SLMRec",
]


def test_tiny_pipeline_report_and_reuse(tmp_path):
    pipeline = Pipeline(resolve_profile("tiny"), run_dir=str(tmp_path / "pipe"))
    report = pipeline.run()
    with open(report["report_csv"], newline="") as f:
        rows = list(csv.DictReader(f))
    assert [row["model"] for row in rows] == EXPECTED_MODELS
    for row in rows:
        for key in ("ndcg@10", "hit@10", "throughput_users_per_s", "params_total"):
            value = float(row[key])
            assert not math.isnan(value) and value > 0, (row["model"], key, row[key])
    assert os.path.getsize(report["plot"]) > 10_000 and os.path.getsize(report["curves"]) > 10_000
    markdown = open(report["report_md"]).read()
    assert "| KDSASRec |" in markdown and "device:" in markdown and "commit:" in markdown
    assert pipeline.steps_reused == []
    # The KD students are compared with their plain twins.
    kd = next(r for r in rows if r["model"] == "KDSASRec")
    assert kd["ndcg@10_gain_vs_twin_%"] != ""

    # A rerun reuses every finished step and rebuilds the same table.
    again = Pipeline(resolve_profile("tiny"), run_dir=str(tmp_path / "pipe"))
    report_again = again.run()
    assert again.steps_run == []
    assert set(again.steps_reused) == {"teacher", "export", "SASRec", "KDSASRec", "GRU4Rec", "KDGRU4Rec",
                                       "BERT4Rec", "KDBERT4Rec", "slm_twin", "SLMRec"}
    assert [e["ndcg@10"] for e in report_again["table"]] == [e["ndcg@10"] for e in report["table"]]


def test_unknown_profile_is_a_clear_error():
    with pytest.raises(PipelineError, match="unknown pipeline profile 'nope'"):
        resolve_profile("nope")


def test_profile_with_unknown_key_is_rejected(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("teacher: {}\nstudents: {SASRec: {}}\nslmrec: {llm_n_layers: 1}\nstudentz: 1\n")
    with pytest.raises(PipelineError, match="studentz"):
        Pipeline(str(bad), run_dir=str(tmp_path / "p"))
