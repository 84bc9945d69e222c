"""Cross-fitted teachers (data/folds.py, export_teacher(cross_fit=...)): user folds, fold teachers trained without
their fold, and the export that takes each training row from the teacher that never trained on its user."""
import hashlib

import numpy as np
import pytest
import torch

from recbole_llmkd.data.keys import user_fold
from recbole_llmkd.errors import ConfigValueError
from tests.test_cli_errors import assert_one_error_line, run_cli
from tests.test_llmrec import SLICE_NAME, build, make_ml_slice, slice_config

N_USERS = 12


def test_user_fold_is_the_documented_hash():
    for token, folds in (("1", 2), ("196", 3), ("user-x", 5)):
        digest = hashlib.blake2b(("fold\x1e" + token).encode("utf-8"), digest_size=8).digest()
        assert user_fold(token, folds) == int.from_bytes(digest, "little") % folds
    shares = np.bincount([user_fold(str(u), 2) for u in range(1, 1001)], minlength=2) / 1000
    assert 0.45 < shares[0] < 0.55  # about half of the users per fold
    for bad in (1, 0, 2.0, True):
        with pytest.raises(ValueError, match="folds must be an integer >= 2"):
            user_fold("1", bad)


def test_cross_fit_setting_needs_both_keys_and_a_fold_below_the_count():
    from recbole_llmkd.data.folds import cross_fit_setting

    assert cross_fit_setting({}) is None
    assert cross_fit_setting({"cross_fit_folds": None, "cross_fit_fold": None}) is None
    assert cross_fit_setting({"cross_fit_folds": 3, "cross_fit_fold": 2}) == (2, 3)
    with pytest.raises(ConfigValueError, match="set both"):
        cross_fit_setting({"cross_fit_folds": 2})
    with pytest.raises(ConfigValueError, match=r"cross_fit_fold=2 must be below cross_fit_folds=2"):
        cross_fit_setting({"cross_fit_folds": 2, "cross_fit_fold": 2})
    with pytest.raises(ConfigValueError, match=r"cross_fit_folds=1 is not supported; expected an int >= 2"):
        cross_fit_setting({"cross_fit_folds": 1, "cross_fit_fold": 0})


@pytest.fixture(scope="module")
def data_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("cross_fit_data")
    make_ml_slice(root, n_users=N_USERS)
    return root


def sasrec_config(data_root, **overrides) -> dict:
    config = {key: value for key, value in slice_config(data_root).items() if not key.startswith("llm_")}
    return {**config, "hidden_size": 16, "inner_size": 16, "n_layers": 1, "n_heads": 1, "epochs": 2, **overrides}


def test_hold_out_fold_removes_exactly_the_rows_of_the_folds_users(data_root):
    from recbole_llmkd.data.folds import hold_out_fold, row_folds

    config, train_data, _, _ = build(data_root, model="SASRec", cross_fit_folds=2, cross_fit_fold=1)
    dataset = train_data._dataset
    folds = row_folds(dataset, 2)  # [N]
    tokens = dataset.field2id_token[dataset.uid_field]
    assert folds.tolist() == [user_fold(str(tokens[u]), 2) for u in dataset.inter_feat["user_id"].tolist()]
    assert 0 < (folds == 1).sum() < len(folds)  # both folds hold users of this slice
    held_out = hold_out_fold(config, train_data)
    assert type(held_out) is type(train_data) and held_out is not train_data
    kept = held_out._dataset.inter_feat
    assert len(kept) == int((folds == 0).sum())
    assert set(kept["user_id"].tolist()) == set(dataset.inter_feat["user_id"][torch.from_numpy(folds == 0)].tolist())
    assert sum(len(batch) for batch in held_out) == len(kept)  # the loader iterates the kept rows only
    config_all, train_all, _, _ = build(data_root, model="SASRec")
    assert hold_out_fold(config_all, train_all) is train_all  # no fold configured: the loader itself


def train_with_folds(data_root, tmp_path_factory, prefix: str, **config) -> dict:
    """The tiny SASRec recipe trained on every user and once per fold of two: {"all"|"fold0"|"fold1": run dir}."""
    from recbole_llmkd.quick_start import run_recbole_llmkd

    runs = {}
    for name, extra in (("all", {}), ("fold0", {"cross_fit_folds": 2, "cross_fit_fold": 0}),
                        ("fold1", {"cross_fit_folds": 2, "cross_fit_fold": 1})):
        run_dir = tmp_path_factory.mktemp(f"{prefix}_{name}")
        runs[name] = run_recbole_llmkd("SASRec", SLICE_NAME, config_dict=sasrec_config(data_root, **config, **extra),
                                       cmd_args={"run_dir": str(run_dir)})["run_dir"]
    return runs


@pytest.fixture(scope="module")
def teachers(data_root, tmp_path_factory):
    """A SASRec teacher on every user and its two fold teachers: {name: run dir}."""
    return train_with_folds(data_root, tmp_path_factory, "teacher")


def test_cross_fitted_export_takes_train_rows_from_the_fold_teacher(teachers, data_root, tmp_path):
    from recbole_llmkd.data.artifacts import load_artifacts
    from recbole_llmkd.jobs.export import export_teacher
    from recbole_llmkd.data.folds import row_folds

    export = lambda run, name, **kw: load_artifacts(export_teacher(  # noqa: E731
        teachers[run], output=tmp_path / f"{name}.safetensors", topk=5, show_progress=False, **kw))
    crossed = export("all", "crossed", cross_fit=[teachers["fold1"], teachers["fold0"]])  # any order
    plain, fold0, fold1 = export("all", "plain"), export("fold0", "fold0"), export("fold1", "fold1")

    _, train_data, valid_data, test_data = build(data_root, model="SASRec")
    folds = torch.from_numpy(row_folds(train_data._dataset, 2))  # [N]
    train = {name: artifacts.align(train_data._dataset) for name, artifacts in
             (("crossed", crossed), ("fold0", fold0), ("fold1", fold1), ("plain", plain))}
    for fold, name in ((0, "fold0"), (1, "fold1")):
        rows = folds == fold
        assert torch.equal(train["crossed"].topk[rows], train[name].topk[rows])
        torch.testing.assert_close(train["crossed"].scores[rows], train[name].scores[rows])
    assert not torch.equal(train["crossed"].topk, train["plain"].topk)
    for split, dataset in (("valid", valid_data._dataset), ("test", test_data._dataset)):  # the full teacher's
        assert torch.equal(crossed.align(dataset, split=split).topk, plain.align(dataset, split=split).topk)
    torch.testing.assert_close(crossed.item_text_emb, plain.item_text_emb)
    cross_fit = crossed.teacher["cross_fit"]
    assert cross_fit["folds"] == 2 and len(cross_fit["checkpoints_sha256"]) == 2
    assert cross_fit["item_table_leaks"] == [None, None]  # SASRec fold teachers learn their own item tables
    assert cross_fit["checkpoints"][0].startswith(str(teachers["fold0"]))  # ordered by fold
    assert plain.teacher["cross_fit"] is None
    # the fold teachers trained without their fold (quick_start applies hold_out_fold), the full teacher on every user
    from pathlib import Path

    logs = {name: "".join(p.read_text() for p in Path(run).glob("*.log")) for name, run in teachers.items()}
    assert "the users of fold 0 of 2 are held out of training" in logs["fold0"]
    assert "the users of fold 1 of 2 are held out of training" in logs["fold1"]
    assert "held out of training" not in logs["all"]


def test_a_fold_teachers_frozen_item_table_must_be_cross_fitted_too(teachers):
    """item_table_leak (the export's warning): an E4SRec-style fold teacher whose pretrained table saw its fold."""
    from recbole_llmkd.data.folds import item_table_leak
    from recbole_llmkd.run import resolve_checkpoint

    table = {name: str(resolve_checkpoint(run)) for name, run in teachers.items()}
    fold0 = {"cross_fit_folds": 2, "cross_fit_fold": 0}
    assert item_table_leak({**fold0, "item_table": table["fold0"]}) is None  # the table held out the same fold
    shared = item_table_leak({**fold0, "item_table": table["all"]})
    assert shared.startswith(f"fold teacher 0 of 2 reads the frozen item table {table['all']}, which was trained on "
                             "every user")
    assert "cross_fit_folds: 2, cross_fit_fold: 0" in shared
    assert "trained with fold 1 of 2 held out" in item_table_leak({**fold0, "item_table": table["fold1"]})
    assert item_table_leak({**fold0, "item_table": "trainable"}) is None  # learned by the fold teacher itself
    assert item_table_leak({"item_table": table["all"]}) is None  # not a fold teacher


def test_cross_fitted_export_warns_of_a_leaking_item_table(teachers, tmp_path, monkeypatch, caplog):
    """The export asks item_table_leak of every fold teacher's config and logs what it says as a warning."""
    import logging

    from recbole_llmkd.data.artifacts import load_artifacts
    from recbole_llmkd.jobs import export as export_module

    asked = []

    def leak(config):
        asked.append(config["cross_fit_fold"])
        return f"table of fold {config['cross_fit_fold']} saw its users"

    monkeypatch.setattr(export_module, "item_table_leak", leak)
    with caplog.at_level(logging.WARNING, logger="recbole_llmkd"):
        artifact = export_module.export_teacher(teachers["all"], output=tmp_path / "x.safetensors", topk=5,
                                                show_progress=False, cross_fit=[teachers["fold0"], teachers["fold1"]])
    assert sorted(asked) == [0, 1]
    recorded = load_artifacts(artifact).teacher["cross_fit"]["item_table_leaks"]  # and in the artifact, by fold
    assert recorded == ["table of fold 0 saw its users", "table of fold 1 saw its users"]
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert any("table of fold 0 saw its users" in w for w in warnings)
    assert any("table of fold 1 saw its users" in w for w in warnings)


def test_cross_fit_rejects_teachers_that_are_not_one_per_fold(teachers, tmp_path):
    from recbole_llmkd.jobs.export import export_teacher

    def export(*fold_runs):
        return export_teacher(teachers["all"], output=tmp_path / "x.safetensors", topk=5, show_progress=False,
                              cross_fit=[teachers[name] for name in fold_runs])

    with pytest.raises(ConfigValueError, match="was trained on every user"):
        export("fold0", "all")
    with pytest.raises(ConfigValueError, match="is fold 0 of 2, but 1 fold teachers were given"):
        export("fold0")
    with pytest.raises(ConfigValueError, match="fold 0 is given twice"):
        export("fold0", "fold0")
    with pytest.raises(ConfigValueError, match="not on Ray workers"):
        export_teacher(teachers["all"], output=tmp_path / "y.safetensors", cross_fit=[teachers["fold0"]],
                       num_workers=1, show_progress=False)
    assert not (tmp_path / "x.safetensors").exists()


def test_cli_export_cross_fit(teachers, tmp_path, capsys):
    from recbole_llmkd.cli import main
    from recbole_llmkd.data.artifacts import load_artifacts

    output = tmp_path / "cli.safetensors"
    assert main(["export", str(teachers["all"]), "--output", str(output), "--topk", "5",
                 "--cross-fit", str(teachers["fold0"]), str(teachers["fold1"])]) == 0
    assert load_artifacts(output).teacher["cross_fit"]["folds"] == 2
    capsys.readouterr()
    # a teacher trained on every user given as a fold teacher: one error line, exit 2, nothing written
    bad = tmp_path / "bad.safetensors"
    status, err = run_cli(capsys, "export", str(teachers["all"]), "--output", str(bad),
                          "--cross-fit", str(teachers["all"]))
    assert status == 2 and len(err) == 1
    assert_one_error_line(err, r"error: cross_fit: .*was trained on every user")
    assert not bad.exists()


def test_ensemble_log_probs_is_the_log_of_the_mean_probability():
    from recbole_llmkd.jobs.export import ensemble_log_probs

    inf = float("inf")
    a = torch.tensor([[-inf, 0.0, 0.0, -inf]])  # probabilities 0, 1/2, 1/2, 0
    b = torch.tensor([[-inf, np.log(3.0), 0.0, 0.0]])  # 0, 3/5, 1/5, 1/5
    expected = torch.log(torch.tensor([[0.0, (0.5 + 0.6) / 2, (0.5 + 0.2) / 2, 0.1]]))
    torch.testing.assert_close(ensemble_log_probs([a, b]), expected)
    torch.testing.assert_close(ensemble_log_probs([a, a + 7.0]), torch.log_softmax(a, dim=1))  # shift-invariant
    assert ensemble_log_probs([a, b])[0, 0] == -inf  # PAD stays out of every list


@pytest.fixture(scope="module")
def second_teachers(data_root, tmp_path_factory):
    """The same SASRec recipe with another seed (an ensemble's second member) and its two fold teachers."""
    return train_with_folds(data_root, tmp_path_factory, "second", seed=7)


def test_ensemble_export_ranks_the_mean_probability_of_its_teachers(teachers, second_teachers, data_root, tmp_path):
    from recbole_llmkd.data.artifacts import load_artifacts
    from recbole_llmkd.data.folds import row_folds
    from recbole_llmkd.jobs.export import export_teacher
    from recbole_llmkd.run import load, resolve_checkpoint

    export = lambda run, name, **kw: load_artifacts(export_teacher(  # noqa: E731
        run, output=tmp_path / f"{name}.safetensors", topk=5, show_progress=False, **kw))
    ensemble = export(teachers["all"], "ensemble", ensemble=[second_teachers["all"]])
    alone = export(teachers["all"], "alone")

    # the ensemble's scores by hand: the two trained models' full-sort scores, softmax, mean, log
    _, train_data, _, test_data = build(data_root, model="SASRec")
    probabilities, models = [], []
    for run in (teachers["all"], second_teachers["all"]):
        model = load(resolve_checkpoint(run)).model
        models.append(model)
        with torch.no_grad():
            logits = model.full_sort_predict(test_data._dataset.inter_feat).reshape(len(test_data._dataset), -1)
        logits[:, 0] = -torch.inf  # PAD
        probabilities.append(torch.softmax(logits, dim=1))  # [N_test, n_items]
    expected_scores, expected_ids = torch.topk(torch.log((probabilities[0] + probabilities[1]) / 2), 5, dim=1)
    test = ensemble.align(test_data._dataset, split="test")
    from recbole_llmkd.jobs.export import _teacher_rows

    rows = _teacher_rows(models, test_data._dataset.inter_feat[:4], 5, with_user_state=False)
    assert torch.equal(rows["topk_ids"], expected_ids[:4]) and not any(t.requires_grad for t in rows.values())
    assert torch.equal(test.topk, expected_ids)
    torch.testing.assert_close(test.scores, expected_scores, atol=1e-5, rtol=1e-5)
    assert not torch.equal(test.topk, alone.align(test_data._dataset, split="test").topk)  # the second teacher counts
    torch.testing.assert_close(ensemble.item_text_emb, alone.item_text_emb)  # the first teacher's item table
    members = ensemble.teacher["ensemble"]
    assert members["checkpoints"][0].startswith(str(second_teachers["all"])) and len(members["checkpoints_sha256"]) == 1
    assert alone.teacher["ensemble"] is None

    # cross-fitted: each fold's ensemble (the members' fold runs, joined by commas as on the command line) gives the
    # training rows of its users, exactly the ensemble of those fold teachers exported on its own
    crossed = export(teachers["all"], "crossed", ensemble=[second_teachers["all"]],
                     cross_fit=[f"{teachers['fold1']},{second_teachers['fold1']}",
                                [teachers["fold0"], second_teachers["fold0"]]])
    folds = torch.from_numpy(row_folds(train_data._dataset, 2))  # [N]
    for fold in (0, 1):
        fold_ensemble = export(teachers[f"fold{fold}"], f"fold{fold}", ensemble=[second_teachers[f"fold{fold}"]])
        rows = folds == fold
        assert torch.equal(crossed.align(train_data._dataset).topk[rows], fold_ensemble.align(train_data._dataset).topk[rows])
    checkpoints = crossed.teacher["cross_fit"]["checkpoints"]
    assert [len(group) for group in checkpoints] == [2, 2] and checkpoints[0][1].startswith(str(second_teachers["fold0"]))


def test_an_ensemble_member_that_reads_fewer_history_items_scores_its_own_rows(teachers, data_root,
                                                                               tmp_path_factory, tmp_path):
    """A member reading 3 history items beside the teacher reading 10 (its data built the rows): it scores each row's
    last 3 items, exactly the rows of its own data."""
    from recbole_llmkd.data.artifacts import load_artifacts
    from recbole_llmkd.jobs.export import export_teacher, history_view
    from recbole_llmkd.quick_start import run_recbole_llmkd
    from recbole_llmkd.run import load, resolve_checkpoint

    short_run = run_recbole_llmkd("SASRec", SLICE_NAME, config_dict=sasrec_config(data_root, MAX_ITEM_LIST_LENGTH=3),
                                  cmd_args={"run_dir": str(tmp_path_factory.mktemp("short"))})["run_dir"]
    short = load(resolve_checkpoint(short_run)).model
    _, train_data, _, test_data = build(data_root, model="SASRec")  # the teacher's rows: 10 history items
    _, short_train, _, short_test = build(data_root, model="SASRec", MAX_ITEM_LIST_LENGTH=3)
    for rows, own in ((train_data, short_train), (test_data, short_test)):
        inter, own_inter = rows._dataset.inter_feat, own._dataset.inter_feat
        assert inter["item_id_list"].shape[1] == 10 and (inter["item_length"] > 3).any()  # histories to cut
        view = history_view(short, inter)
        for field in own_inter.interaction:  # item_id_list, item_length, timestamp_list, ...: the same rows
            assert torch.equal(view[field], own_inter[field]), field
    teacher = load(resolve_checkpoint(teachers["all"])).model
    assert history_view(teacher, train_data._dataset.inter_feat) is train_data._dataset.inter_feat  # reads them all

    ensemble = load_artifacts(export_teacher(teachers["all"], output=tmp_path / "mixed.safetensors", topk=5,
                                             show_progress=False, ensemble=[short_run]))
    with torch.no_grad():  # by hand: each model on its own data's test rows, softmax, mean, log
        probabilities = [torch.softmax(model.full_sort_predict(data._dataset.inter_feat).reshape(
            len(data._dataset), -1).index_fill(1, torch.tensor([0]), -torch.inf), dim=1)
            for model, data in ((teacher, test_data), (short, short_test))]  # [N_test, n_items] each
    expected_scores, expected_ids = torch.topk(torch.log((probabilities[0] + probabilities[1]) / 2), 5, dim=1)
    test = ensemble.align(test_data._dataset, split="test")
    assert torch.equal(test.topk, expected_ids)
    torch.testing.assert_close(test.scores, expected_scores, atol=1e-5, rtol=1e-5)


def test_ensemble_cross_fit_needs_each_folds_members_trained_without_that_fold(teachers, second_teachers, tmp_path,
                                                                            capsys):
    from recbole_llmkd.cli import main
    from recbole_llmkd.jobs.export import export_teacher

    def export(*groups):
        return export_teacher(teachers["all"], output=tmp_path / "x.safetensors", topk=5, show_progress=False,
                              ensemble=[second_teachers["all"]], cross_fit=list(groups))

    with pytest.raises(ConfigValueError, match="is 1 teacher\\(s\\), but the teacher exported is an ensemble of 2"):
        export(teachers["fold0"], teachers["fold1"])
    with pytest.raises(ConfigValueError, match=r"were trained without different folds \[\(0, 2\), \(1, 2\)\]"):
        export([teachers["fold0"], second_teachers["fold1"]], [teachers["fold1"], second_teachers["fold0"]])
    with pytest.raises(ConfigValueError, match="was trained on every user"):
        export([teachers["fold0"], second_teachers["all"]], [teachers["fold1"], second_teachers["fold1"]])
    with pytest.raises(ConfigValueError, match="names one teacher twice"):
        export([teachers["fold0"], teachers["fold0"]], [teachers["fold1"], second_teachers["fold1"]])
    with pytest.raises(ConfigValueError, match="names one teacher twice"):  # the exported teacher is the first member
        export_teacher(teachers["all"], output=tmp_path / "x.safetensors", ensemble=[teachers["all"]],
                       show_progress=False)
    assert not (tmp_path / "x.safetensors").exists()
    # the command line: --ensemble, and each fold's teachers joined by commas
    output = tmp_path / "cli.safetensors"
    assert main(["export", str(teachers["all"]), "--output", str(output), "--topk", "5",
                 "--ensemble", str(second_teachers["all"]),
                 "--cross-fit", f"{teachers['fold0']},{second_teachers['fold0']}",
                 f"{teachers['fold1']},{second_teachers['fold1']}"]) == 0
    from recbole_llmkd.data.artifacts import load_artifacts

    assert len(load_artifacts(output).teacher["ensemble"]["checkpoints"]) == 1
    capsys.readouterr()
    # bad input on the command line: one error line, exit 2, nothing written
    bad = tmp_path / "bad.safetensors"
    status, err = run_cli(capsys, "export", str(teachers["all"]), "--output", str(bad),
                          "--ensemble", str(teachers["all"]))
    assert status == 2 and len(err) == 1
    assert_one_error_line(err, r"error: ensemble: .*names one teacher twice")
    assert not bad.exists()


def test_list_ranks_and_the_lists_own_metrics():
    from recbole_llmkd.evaluation import list_ranks, metrics_from_ranks

    topk = torch.tensor([[5, 3, 9], [1, 2, 4], [7, 8, 6]])
    ranks = list_ranks(topk, torch.tensor([3, 9, 7]))
    assert ranks.tolist() == [1, 3, 0]  # second, absent (= K), first
    metrics = metrics_from_ranks(ranks, ks=(1, 2))
    assert metrics["hit@1"] == pytest.approx(1 / 3) and metrics["hit@2"] == pytest.approx(2 / 3)
    assert metrics["ndcg@2"] == pytest.approx((1 / np.log2(3) + 1.0) / 3)
    with pytest.raises(ValueError, match=r"topk_ids \[N, K\] and target \[N\]"):
        list_ranks(topk, torch.tensor([3, 9]))


def test_export_diagnostics_give_the_lists_metrics_equal_to_the_teachers_evaluation(teachers, tmp_path):
    """A RecBole teacher's exported valid/test lists score what RecBole's full-ranking evaluation gave the run."""
    import json

    from recbole_llmkd.data.paths import diagnostics_path
    from recbole_llmkd.jobs.export import export_teacher

    artifact = export_teacher(teachers["all"], output=tmp_path / "t.safetensors", topk=20, show_progress=False)
    lists = json.loads(diagnostics_path(artifact).read_text())["list_metrics"]
    with open(f"{teachers['all']}/results.json") as f:
        results = json.load(f)
    compared = [metric for metric in ("ndcg@10", "hit@10", "ndcg@20", "hit@20") if metric in results["test_result"]]
    assert "ndcg@10" in compared and results["test_result"]["ndcg@10"] > 0  # a teacher that finds some targets
    for metric in compared:
        assert lists["test"][metric] == pytest.approx(results["test_result"][metric], abs=1e-4)  # RecBole rounds to 4
        assert lists["valid"][metric] == pytest.approx(results["best_valid_result"][metric], abs=1e-4)


def test_ensemble_member_must_read_the_teachers_history_length(teachers, data_root, tmp_path):
    """The rows hold the exported teacher's history: a member that reads more items is refused (one that reads
    fewer gets each row's last ones: the test above)."""
    from recbole_llmkd.jobs.export import export_teacher
    from recbole_llmkd.quick_start import run_recbole_llmkd

    history = sasrec_config(data_root)["MAX_ITEM_LIST_LENGTH"]
    longer = run_recbole_llmkd("SASRec", SLICE_NAME,
                               config_dict=sasrec_config(data_root, MAX_ITEM_LIST_LENGTH=history + 5, epochs=1),
                               cmd_args={"run_dir": str(tmp_path / "longer")})["run_dir"]
    with pytest.raises(ConfigValueError, match=f"reads {history + 5} history items, the teacher exported {history}: "
                                                 "the rows hold the exported teacher's history"):
        export_teacher(teachers["all"], output=tmp_path / "x.safetensors", ensemble=[longer], show_progress=False)
    longer_fold = run_recbole_llmkd(  # a fold teacher likewise
        "SASRec", SLICE_NAME, config_dict=sasrec_config(data_root, MAX_ITEM_LIST_LENGTH=history + 5, epochs=1,
                                                       cross_fit_folds=2, cross_fit_fold=0),
        cmd_args={"run_dir": str(tmp_path / "longer_fold")})["run_dir"]
    with pytest.raises(ConfigValueError, match=f"cross_fit: .*reads {history + 5} history items, the teacher exported "
                                                 f"{history}"):
        export_teacher(teachers["all"], output=tmp_path / "x.safetensors", cross_fit=[longer_fold, teachers["fold1"]],
                       show_progress=False)
    assert not (tmp_path / "x.safetensors").exists()


def test_a_stand_in_teacher_of_other_items_is_refused(teachers, data_root, tmp_path):
    """An ensemble member or fold teacher on the same dataset name, item count and history whose item ids mean
    other items (one item token renamed in its data) would score other items, silently: its checkpoint's item
    tokens (written by our trainers) are checked against the teacher's data."""
    import shutil

    from recbole_llmkd.data.keys import item_tokens_fingerprint
    from recbole_llmkd.errors import CheckpointMismatchError
    from recbole_llmkd.jobs.export import export_teacher, read_teacher_checkpoint
    from recbole_llmkd.quick_start import run_recbole_llmkd
    from recbole_llmkd.run import resolve_checkpoint

    _, train_data, _, _ = build(data_root, model="SASRec")
    saved = read_teacher_checkpoint(resolve_checkpoint(teachers["all"]))
    assert saved["dataset_fingerprint"] == item_tokens_fingerprint(train_data._dataset)

    renamed_root = tmp_path / "renamed"
    shutil.copytree(data_root, renamed_root)
    inter = renamed_root / SLICE_NAME / f"{SLICE_NAME}.inter"
    header, *lines = inter.read_text(encoding="utf-8").splitlines()
    token = lines[0].split("\t")[1]  # an item of the slice, every one of its rows renamed
    lines = ["\t".join(f"{token}-renamed" if i == 1 and field == token else field
                       for i, field in enumerate(line.split("\t"))) for line in lines]
    inter.write_text("\n".join([header, *lines]) + "\n", encoding="utf-8")
    renamed = {}
    for name, extra in (("all", {}), ("fold1", {"cross_fit_folds": 2, "cross_fit_fold": 1})):
        renamed[name] = run_recbole_llmkd("SASRec", SLICE_NAME,
                                          config_dict=sasrec_config(renamed_root, epochs=1, **extra),
                                          cmd_args={"run_dir": str(tmp_path / f"renamed_{name}")})["run_dir"]
    renamed_items = read_teacher_checkpoint(resolve_checkpoint(renamed["all"]))["dataset_fingerprint"]
    assert renamed_items["n_items"] == saved["dataset_fingerprint"]["n_items"]  # only the count would pass
    assert renamed_items["item_tokens_sha256"] != saved["dataset_fingerprint"]["item_tokens_sha256"]

    output = tmp_path / "x.safetensors"
    with pytest.raises(CheckpointMismatchError, match="item ids would name other items"):
        export_teacher(teachers["all"], output=output, ensemble=[renamed["all"]], show_progress=False)
    with pytest.raises(CheckpointMismatchError, match="item ids would name other items"):
        export_teacher(teachers["all"], output=output, cross_fit=[teachers["fold0"], renamed["fold1"]],
                       show_progress=False)
    assert not output.exists()
