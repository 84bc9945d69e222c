"""Teacher artifact export (issue 3, point 4-5): export -> load -> align, resume, mismatch errors, item text."""
import logging

import pytest
import torch

from tests.test_llmrec import SLICE_NAME, build, make_ml_slice, slice_config

N_DROPPED_TITLES = 3
N_USERS = 10


@pytest.fixture(scope="module")
def data_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("export_data")
    make_ml_slice(root, n_users=N_USERS, drop_titles=N_DROPPED_TITLES)
    return root


@pytest.fixture(scope="module")
def teacher_run(data_root, tmp_path_factory):
    """A tiny LLMRec teacher trained through run_recbole_llmkd on the slice: its result dict."""
    from recbole_llmkd.quick_start import run_recbole_llmkd

    run_dir = tmp_path_factory.mktemp("teacher_run")
    config = slice_config(data_root, llm_train_examples="last_per_user", epochs=2, learning_rate=0.02)
    return run_recbole_llmkd("LLMRec", SLICE_NAME, config_dict=config, cmd_args={"run_dir": str(run_dir)})


@pytest.fixture(scope="module")
def exported(teacher_run):
    from recbole_llmkd.jobs.export import export_teacher

    path = export_teacher(teacher_run["run_dir"], topk=8, batch_size=512, show_progress=False)
    return path


def test_export_load_align_round_trip(teacher_run, exported, data_root):
    from recbole_llmkd.data.artifacts import load_artifacts
    from recbole_llmkd.data.artifacts import TEACHER_RUN_ARTIFACT
    from recbole_llmkd.run import load

    assert exported.name == TEACHER_RUN_ARTIFACT and str(exported.parent) == teacher_run["run_dir"]
    artifacts = load_artifacts(exported)
    config, train_data, valid_data, test_data = build(data_root)
    n_train = len(train_data._dataset.inter_feat)
    assert artifacts.metadata["splits"] == {
        "train": {"n_rows": n_train, "K": 8},  # every prefix, although the teacher trained on one per user
        "valid": {"n_rows": N_USERS, "K": 8},
        "test": {"n_rows": N_USERS, "K": 8},
    }
    assert artifacts.score_kind == "logit"
    teacher = artifacts.teacher
    assert teacher["name"] == "LLMRec" and teacher["backbone"]["spec"] == "tiny"
    assert teacher["config"]["llm_train_examples"] == "last_per_user" and len(teacher["checkpoint_sha256"]) == 64
    assert sorted(artifacts.metadata["has"]) == [
        "item_text_emb", "test.confidence", "test.target_score", "train.confidence", "train.target_score",
        "valid.confidence", "valid.target_score",
    ]

    model = load(teacher_run["checkpoint"], dataset=train_data._dataset).model
    for split, loader in (("train", train_data), ("valid", valid_data), ("test", test_data)):
        aligned = artifacts.align(loader._dataset, split=split)
        rows = loader._dataset.inter_feat
        assert aligned.topk.shape == (len(rows), 8) and bool(aligned.present.all())
        assert not (aligned.topk == 0).any()  # PAD never listed
        assert (aligned.scores[:, :-1] >= aligned.scores[:, 1:]).all()  # best first
        torch.testing.assert_close(aligned.confidence, torch.softmax(aligned.scores, dim=1))
        sample = rows[:6] if split == "train" else rows[-6:]
        with torch.no_grad():
            logits = model.full_sort_predict(sample)  # [6, n_items]
        expected_scores, expected_ids = torch.topk(logits, 8, dim=1)
        offset = 0 if split == "train" else len(rows) - 6
        assert torch.equal(aligned.topk[offset:offset + 6], expected_ids)
        torch.testing.assert_close(aligned.scores[offset:offset + 6], expected_scores, atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(
            aligned.target_score[offset:offset + 6], logits.gather(1, sample["item_id"][:, None]).squeeze(1),
            atol=1e-5, rtol=1e-5,
        )


def test_item_text_embeddings_come_from_the_base_llm(teacher_run, exported, data_root):
    from recbole_llmkd.data.artifacts import load_artifacts
    from recbole_llmkd.data.item_text import item_titles_for_dataset
    from recbole_llmkd.llm import encode_texts, load_backbone
    from recbole_llmkd.run import load

    config, train_data, _, _ = build(data_root)
    aligned = load_artifacts(exported).align(train_data._dataset)
    item_text_emb = aligned.item_text_emb  # [n_items, 32]
    titles = item_titles_for_dataset(train_data._dataset, config)
    base = load_backbone("tiny", tiny_config={"num_hidden_layers": 2})
    n_checked = 64
    expected = encode_texts(base.model, base.tokenizer, titles[1:n_checked + 1])
    teacher_model = load(teacher_run["checkpoint"], dataset=train_data._dataset).model
    with_lora = encode_texts(teacher_model.llm, teacher_model.tokenizer, titles[1:n_checked + 1])
    assert (with_lora - expected).abs().max() > 1e-4  # the trained adapters would change the vectors
    assert item_text_emb.shape == (train_data._dataset.item_num, 32)
    assert not item_text_emb[0].any()
    torch.testing.assert_close(item_text_emb[1:n_checked + 1], expected, atol=1e-5, rtol=1e-5)
    teacher = load_artifacts(exported).teacher
    assert teacher["item_text_fallbacks"] == N_DROPPED_TITLES
    assert "LoRA disabled" in teacher["item_text_emb_source"]


def test_item_text_fallback_is_counted_in_the_log(data_root, caplog):
    from recbole_llmkd.jobs.export import choose_item_text

    config, train_data, _, _ = build(data_root)
    with caplog.at_level(logging.WARNING, logger="recbole_llmkd"):
        source, titles, n_fallbacks = choose_item_text(config, train_data._dataset, "titles")
    assert n_fallbacks == N_DROPPED_TITLES and len(titles) == train_data._dataset.item_num
    assert sum(title.startswith("item ") for title in titles) == N_DROPPED_TITLES
    source, titles, _ = choose_item_text(config, train_data._dataset, "item_table")
    assert titles is None and source.startswith("input_proj")
    assert any(f"{N_DROPPED_TITLES} of " in r.getMessage() and "have no text" in r.getMessage() for r in caplog.records)


def test_interrupted_export_resumes_and_gives_the_same_file(teacher_run, exported, tmp_path, monkeypatch):
    from recbole_llmkd.jobs import export as export_module
    from recbole_llmkd.data.artifacts import ArtifactWriter, load_artifacts

    output = tmp_path / "resumed.safetensors"
    original_write_chunk = ArtifactWriter.write_chunk
    calls = []

    def write_chunk_then_ctrl_c(self, split, start, tensors):
        if len(calls) == 3:
            raise KeyboardInterrupt  # Ctrl-C after 3 chunks
        calls.append((split, start))
        return original_write_chunk(self, split, start, tensors)

    monkeypatch.setattr(ArtifactWriter, "write_chunk", write_chunk_then_ctrl_c)
    # one line that says how to go on (exit 130 on the command line), not a traceback
    with pytest.raises(export_module.ExportInterrupted,
                       match=r"export interrupted; the same command again resumes it .*resumed.safetensors.partial"):
        export_module.export_teacher(teacher_run["run_dir"], output=output, topk=8, chunk_rows=300, batch_size=512, show_progress=False)
    assert not output.exists() and len(list((tmp_path / "resumed.safetensors.partial").glob("train.*"))) == 3

    written_before = list(calls)
    resumed_calls = []
    monkeypatch.setattr(
        ArtifactWriter, "write_chunk",
        lambda self, split, start, tensors: resumed_calls.append((split, start)) or original_write_chunk(self, split, start, tensors),
    )
    export_module.export_teacher(teacher_run["run_dir"], output=output, topk=8, chunk_rows=300, batch_size=512, show_progress=False)
    assert not set(resumed_calls) & set(written_before)  # nothing recomputed
    assert resumed_calls[0] == ("train", 900)

    resumed, reference = load_artifacts(output), load_artifacts(exported)
    assert set(resumed.tensors) == set(reference.tensors)
    for name, tensor in reference.tensors.items():
        assert torch.equal(resumed.tensors[name], tensor), name
    for key in ("item_tokens", "splits", "teacher", "fingerprint", "has", "key_history"):
        assert resumed.metadata[key] == reference.metadata[key]

    # Ctrl-C after the artifact is written: the message says what is missing, not that the export resumes
    monkeypatch.setattr(export_module, "write_list_diagnostics", lambda *args, **kwargs: (_ for _ in ()).throw(
        KeyboardInterrupt))
    with pytest.raises(export_module.ExportInterrupted, match=r"after .*resumed.safetensors was written, before its "
                                                              r"list diagnostics .*--overwrite"):
        export_module.export_teacher(teacher_run["run_dir"], output=output, topk=8, overwrite=True, show_progress=False)


def test_artifact_for_another_config_is_a_clear_error(exported, data_root):
    from recbole_llmkd.data.artifacts import ArtifactMismatchError, load_artifacts

    artifacts = load_artifacts(exported)
    # the same dataset, filtered differently: other items, other examples
    _, train_data, _, _ = build(data_root, user_inter_num_interval="[60,inf)", item_inter_num_interval="[3,inf)")
    n_items = train_data._dataset.item_num - 1
    with pytest.raises(ArtifactMismatchError, match=f"with {artifacts.n_items - 1:,} items; this dataset 'ml-slice' has {n_items:,} items") as error:
        artifacts.align(train_data._dataset)
    assert "only in the artifact" in str(error.value)


def test_export_refuses_to_overwrite_and_accepts_a_checkpoint(teacher_run, exported):
    from recbole_llmkd.jobs.export import export_teacher, resolve_checkpoint

    assert str(resolve_checkpoint(teacher_run["run_dir"])) == teacher_run["checkpoint"]
    with pytest.raises(FileExistsError, match="already exists.*command line: --overwrite"):
        export_teacher(teacher_run["checkpoint"], topk=8, show_progress=False)
    with pytest.raises(FileNotFoundError, match="not found"):
        resolve_checkpoint(str(exported) + ".missing")


def test_cli_export_teacher(teacher_run, tmp_path, capsys):
    from recbole_llmkd.cli import main
    from recbole_llmkd.data.artifacts import load_artifacts

    output = tmp_path / "cli.safetensors"
    code = main([f"--export-teacher={teacher_run['run_dir']}", f"--export-output={output}", "--export-topk=4"])
    assert code == 0 and f"teacher artifacts: {output}" in capsys.readouterr().out
    assert load_artifacts(output).K == 4
    assert main([f"--export-teacher={tmp_path / 'nowhere'}"]) == 2
    assert "not found" in capsys.readouterr().err


def test_export_with_user_state(teacher_run, tmp_path, data_root):
    from recbole_llmkd.data.artifacts import load_artifacts
    from recbole_llmkd.jobs.export import export_teacher

    path = export_teacher(teacher_run["checkpoint"], output=tmp_path / "u.safetensors", topk=2, with_user_state=True,
                          item_text="none", show_progress=False)
    artifacts = load_artifacts(path)
    assert "train.user_state" in artifacts.metadata["has"] and "item_text_emb" not in artifacts.metadata["has"]
    _, train_data, _, _ = build(data_root)
    aligned = artifacts.align(train_data._dataset)
    assert aligned.user_state.shape == (len(train_data._dataset.inter_feat), 32)


# ----- any RecBole sequential model as the teacher ----------------------------------------------------------------
@pytest.fixture(scope="module")
def sasrec_run(data_root, tmp_path_factory):
    """A plain RecBole SASRec trained on the slice (the 'large SASRec' a small one is distilled from)."""
    from recbole_llmkd.quick_start import run_recbole_llmkd

    run_dir = tmp_path_factory.mktemp("sasrec_teacher")
    config = {key: value for key, value in slice_config(data_root).items() if not key.startswith("llm_")}
    config.update({"hidden_size": 24, "inner_size": 24, "n_layers": 1, "n_heads": 1, "epochs": 2})
    return run_recbole_llmkd("SASRec", SLICE_NAME, config_dict=config, cmd_args={"run_dir": str(run_dir)})


def test_export_from_a_plain_recbole_sasrec_checkpoint(sasrec_run, data_root, tmp_path, capsys):
    import json

    from recbole.data.interaction import Interaction

    from recbole_llmkd.cli import main
    from recbole_llmkd.data.artifacts import load_artifacts
    from recbole_llmkd.jobs.export import diagnostics_path, read_teacher_checkpoint
    from recbole_llmkd.run import load_model
    from recbole_llmkd.distill import teacher_list_diagnostics

    output = tmp_path / "sasrec_teacher.safetensors"
    # compared with itself: every listed item is in its own top-K (what a plain student would already rank)
    assert main([f"--export-teacher={sasrec_run['run_dir']}", f"--export-output={output}", "--export-topk=6",
                 f"--export-compare-with={sasrec_run['run_dir']}"]) == 0
    assert f"teacher artifacts: {output}" in capsys.readouterr().out
    artifacts = load_artifacts(output)  # validated like any artifact
    teacher = artifacts.teacher
    assert teacher["name"] == "SASRec" and teacher["backbone"] is None and teacher["config"]["hidden_size"] == 24
    assert teacher["item_text_emb_source"].startswith("item_embedding of the teacher SASRec")

    config, train_data, _, test_data = build(data_root)
    from pathlib import Path

    checkpoint = Path(sasrec_run["checkpoint"])
    model, _ = load_model(read_teacher_checkpoint(checkpoint), train_data._dataset)
    # item_text_emb is the teacher's item table (PAD row zero)
    expected_emb = model.item_embedding.weight.detach().clone()
    expected_emb[0] = 0.0
    torch.testing.assert_close(artifacts.item_text_emb, expected_emb, rtol=1e-5, atol=1e-6)
    # the lists are the teacher's own full ranking, PAD excluded, best first
    for split, dataset in (("train", train_data._dataset), ("test", test_data._dataset)):
        aligned = artifacts.align(dataset, split=split)
        rows = dataset.inter_feat[:16]
        with torch.no_grad():
            scores = model.full_sort_predict(Interaction(rows.interaction)).reshape(len(rows), -1)
        scores[:, 0] = -torch.inf
        expected_scores, expected_ids = scores.topk(6, dim=1)
        assert not (aligned.topk == 0).any()
        torch.testing.assert_close(aligned.scores[:16], expected_scores, rtol=1e-5, atol=1e-5)
        agree = (aligned.topk[:16] == expected_ids).float().mean()
        assert agree > 0.95  # ids equal except where two scores tie within float noise
    # the list diagnostics, written beside the artifact, are the pure function's on the training split
    diagnostics = json.loads(diagnostics_path(output).read_text())
    train = train_data._dataset.inter_feat
    direct = teacher_list_diagnostics(artifacts.align(train_data._dataset).topk, train["item_id"], train["item_id_list"])
    assert diagnostics["rows"] == len(train) and diagnostics["K"] == 6
    for name in ("target_in_list", "history_in_list", "history_items_share"):
        assert diagnostics[name] == pytest.approx(direct[name], abs=1e-6)
    assert diagnostics["student"] == "SASRec" and diagnostics["student_overlap"] > 0.99


def test_a_missing_compare_with_run_stops_the_export_before_it_starts(sasrec_run, tmp_path, capsys):
    from recbole_llmkd.cli import main

    output = tmp_path / "never_written.safetensors"
    status = main([f"--export-teacher={sasrec_run['run_dir']}", f"--export-output={output}",
                   f"--export-compare-with={tmp_path / 'no_such_run'}"])
    err = capsys.readouterr().err
    assert status == 2 and "error: " in err and "no_such_run" in err and "Traceback" not in err
    assert not output.exists() and not list(tmp_path.glob("*.partial*"))  # no row was computed


def test_a_small_kd_student_trains_from_a_sasrec_teacher(sasrec_run, data_root, tmp_path):
    from recbole_llmkd.jobs.export import export_teacher
    from recbole_llmkd.quick_start import run_recbole_llmkd

    artifact = export_teacher(sasrec_run["run_dir"], output=tmp_path / "t.safetensors", topk=6, show_progress=False)
    config = {key: value for key, value in slice_config(data_root).items() if not key.startswith("llm_")}
    config.update({"hidden_size": 8, "inner_size": 8, "n_layers": 1, "n_heads": 1, "epochs": 1,
                   "kd_method": "dllm2rec", "teacher": str(artifact), "rd_topk": 5})
    result = run_recbole_llmkd("KDSASRec", SLICE_NAME, config_dict=config, cmd_args={"run_dir": str(tmp_path / "kd")})
    assert set(result["test_result"]) >= {"ndcg@10", "hit@10"}


def test_export_from_a_recbole_model_rejects_what_it_cannot_give(sasrec_run, tmp_path, capsys):
    from recbole_llmkd.cli import main
    from recbole_llmkd.jobs.export import export_teacher
    from recbole_llmkd.errors import ConfigValueError
    from recbole_llmkd.model.llmrec import CheckpointMismatchError

    with pytest.raises(ConfigValueError, match="item_text=titles needs an LLM teacher"):
        export_teacher(sasrec_run["run_dir"], output=tmp_path / "a.safetensors", item_text="titles", show_progress=False)
    with pytest.raises(ConfigValueError, match="with_user_state: SASRec is not an LLM teacher"):
        export_teacher(sasrec_run["run_dir"], output=tmp_path / "b.safetensors", with_user_state=True,
                       show_progress=False)
    garbage = tmp_path / "garbage.pth"
    garbage.write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointMismatchError, match="not a readable RecBole checkpoint"):
        export_teacher(garbage, output=tmp_path / "c.safetensors", show_progress=False)
    assert main([f"--export-teacher={garbage}", f"--export-output={tmp_path / 'd.safetensors'}"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("run_recbole_llmkd.py: error: ") and "garbage.pth" in err[-1]


def test_head_tail_bench_on_a_trained_run_matches_its_recorded_test_ndcg(sasrec_run, tmp_path, capsys):
    """benchmarks/bench_head_tail.py end to end: its NDCG@10 over all test users is the run's own (RecBole's full
    ranking), a run compared with itself overlaps fully, and the tie split covers every user (--json)."""
    import json

    from tests.benches import load_bench

    out = tmp_path / "head_tail.json"
    run = sasrec_run["run_dir"]
    assert load_bench("bench_head_tail").main(["--runs", f"a={run}", f"b={run}", "--reference", "a", "--ties",
                                               "--head", "5", "--json", str(out)]) == 0
    assert "| b | test |" in capsys.readouterr().out
    report = json.loads(out.read_text())
    rows = {(row["run"], row["split"]): row for row in report["rows"]}
    assert set(rows) == {(run_name, split) for run_name in "ab" for split in ("valid", "test")}
    test = rows[("b", "test")]
    assert test["all"] == pytest.approx(sasrec_run["test_result"]["ndcg@10"], abs=1e-4)  # RecBole rounds to 4 places
    assert test["overlap"] == pytest.approx(1.0)
    assert test == pytest.approx({**rows[("a", "test")], "run": "b"}, abs=1e-9, nan_ok=True)  # the same model, twice
    assert test["n_tied"] + test["n_untied"] == test["n_head"] + test["n_tail"] == N_USERS
