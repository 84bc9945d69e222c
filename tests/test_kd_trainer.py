"""KDTrainer end to end on ml-100k: every student x every kd_method, teacher fields aligned under shuffling, every KD
term logged, KD terms that are NaN or dead fail loudly, fold of trained GRU4Rec/BERT4Rec students, the CLI path."""
import json
import math
import os

import pytest
import torch

import recbole_llmkd  # noqa: F401  (numpy shims before RecBole)
from recbole_llmkd.compat import TrainerStateCheckpoint, load_checkpoint
from recbole_llmkd.distill import KDTermError
from recbole_llmkd.jobs.fold import save_folded
from recbole_llmkd.model.distiller import TEACHER_TOPK_FIELD, TeacherConfigError
from recbole_llmkd.trainer.kd_trainer import KDTrainer
from tests.test_kd_students import KD_MODELS, KD_TEST_CONFIG, build_split, make_model, write_synthetic_artifact

KD_METHODS = ("none", "logit", "rd", "dllm2rec")
EXPECTED_TERMS = {
    "none": {"base"},
    "logit": {"base", "logit_kd", "overlap"},
    "rd": {"base", "rd_tw", "overlap"},
    "dllm2rec": {"base", "rd", "rd_pos", "rd_neg", "wc_entropy", "overlap", "ed_ratio"},
}


@pytest.fixture(scope="module")
def student_data(tmp_path_factory):
    """Per student: (config, train, valid, test, artifact), built once (one artifact serves all three students)."""
    built = {}
    workdir = tmp_path_factory.mktemp("kd_students")
    artifact = None
    for model_name in KD_MODELS:
        config, train_data, valid_data, test_data = build_split(model_name, workdir)
        if artifact is None:
            artifact = write_synthetic_artifact(train_data._dataset, workdir / "teacher.safetensors")
        built[model_name] = (config, train_data, valid_data, test_data, artifact)
    return built


def _trainer(config, model):
    from recbole_llmkd.registry import get_trainer

    return get_trainer(config["MODEL_TYPE"], config["model"])(config, model)


def _fit(student, saved=False, **overrides):
    config, train_data, valid_data, test_data, artifact = student
    overrides.setdefault("teacher", str(artifact))
    model = make_model(config, train_data, **overrides)
    originals = {key: config[key] for key in overrides}
    for key, value in overrides.items():
        config[key] = value
    try:
        trainer = _trainer(config, model)
        trainer.fit(train_data, valid_data, saved=saved, show_progress=False)
        test_result = trainer.evaluate(test_data, load_best_model=saved, show_progress=False)
    finally:
        for key, value in originals.items():
            config[key] = value
    return model, trainer, test_result


@pytest.mark.parametrize("kd_method", KD_METHODS)
@pytest.mark.parametrize("model_name", KD_MODELS)
def test_end_to_end_one_epoch(student_data, model_name, kd_method):
    student = student_data[model_name]
    train_dataset = student[1]._dataset
    seen_rows = []
    model = None

    def check_batch_alignment(original):
        def calculate_loss(interaction):
            if kd_method != "none":
                # The synthetic teacher puts the true target first: the attached rows follow the shuffled examples.
                assert torch.equal(interaction[TEACHER_TOPK_FIELD][:, 0], interaction[model.POS_ITEM_ID])
            seen_rows.append(len(interaction))
            return original(interaction)

        return calculate_loss

    config, train_data, valid_data, test_data, artifact = student
    for key, value in {"kd_method": kd_method, "teacher": str(artifact)}.items():
        config[key] = value
    try:
        model = make_model(config, train_data)
        model.calculate_loss = check_batch_alignment(model.calculate_loss)
        trainer = _trainer(config, model)
        assert isinstance(trainer, KDTrainer)
        trainer.fit(train_data, valid_data, saved=False, show_progress=False)
        test_result = trainer.evaluate(test_data, load_best_model=False, show_progress=False)
    finally:
        config["kd_method"], config["teacher"] = "none", None

    assert sum(seen_rows) == len(train_dataset.inter_feat)  # one full epoch
    assert set(test_result) == {"hit@10", "ndcg@10", "mrr@10"}
    assert all(0.0 <= value <= 1.0 for value in test_result.values())
    terms = trainer.kd_epoch_terms[0]
    assert set(terms) == EXPECTED_TERMS[kd_method]
    assert all(math.isfinite(value) for value in terms.values())
    assert model.loss_names() == (("base",) if kd_method == "none" else ("base", model.kd_loss_name))
    if kd_method != "none":
        assert terms[model.kd_loss_name] > 0
        assert 0.0 <= terms["overlap"] <= 1.0
    if kd_method == "dllm2rec":
        assert terms["rd"] == pytest.approx(terms["rd_pos"] + terms["rd_neg"], rel=1e-5)
        assert 0.0 < terms["wc_entropy"] <= math.log(model.rd_topk) + 1e-6
        assert terms["ed_ratio"] > 0


def test_quick_start_run_logs_every_kd_term_and_saves_no_teacher(student_data, tmp_path):
    from recbole_llmkd.compat import load_checkpoint
    from recbole_llmkd.quick_start import run_recbole_llmkd

    artifact = student_data["KDSASRec"][4]
    config_dict = {**KD_TEST_CONFIG, "kd_method": "dllm2rec", "run_dir": str(tmp_path / "run"), "valid_smoothing": 2}
    result = run_recbole_llmkd("KDSASRec", "ml-100k", config_dict=config_dict, cmd_args={"teacher": str(artifact)})
    with open(os.path.join(result["run_dir"], "run.log"), encoding="utf-8") as f:
        log = f.read()
    assert "teacher fields attached" in log
    kd_line = next(line for line in log.splitlines() if "KD terms" in line)
    for name in EXPECTED_TERMS["dllm2rec"]:
        assert f"{name}: " in kd_line
    assert "base: " in log and "rd: " in log  # the loss parts are named on RecBole's epoch line
    assert os.listdir(os.path.join(result["run_dir"], "tensorboard"))
    state_dict = load_checkpoint(result["checkpoint"])["state_dict"]
    assert not any("teacher" in key or "text_emb" in key for key in state_dict)
    assert set(result["test_result"]) == {"hit@10", "ndcg@10", "mrr@10"}
    with open(os.path.join(result["run_dir"], "results.json"), encoding="utf-8") as f:
        written = json.load(f)
    assert written["model"] == "KDSASRec"
    assert written["valid_smoothing"] == 2  # best_valid_score is then a mean: the result says so


def test_quick_start_without_teacher_fails_before_training(tmp_path):
    from recbole_llmkd.quick_start import run_recbole_llmkd

    config_dict = {**KD_TEST_CONFIG, "kd_method": "dllm2rec", "run_dir": str(tmp_path / "run")}
    with pytest.raises(TeacherConfigError, match="needs a teacher"):
        run_recbole_llmkd("KDGRU4Rec", "ml-100k", config_dict=config_dict)
    assert not (tmp_path / "run").exists()  # refused with the config: no run directory, no checkpoint


# ----------------------------------------------------------------------------------------------------------------------
# KD terms fail loudly
# ----------------------------------------------------------------------------------------------------------------------


def test_nan_teacher_score_fails_loudly(student_data):
    config, train_data, valid_data, _, artifact = student_data["KDSASRec"]
    model = make_model(config, train_data, kd_method="dllm2rec", teacher=str(artifact))
    model.teacher.scores[3, 2] = float("nan")
    with pytest.raises(KDTermError, match="'teacher_score' .* non-finite values in 1 training rows"):
        _trainer(config, model).fit(train_data, valid_data, saved=False)


def test_nan_kd_term_fails_loudly(student_data, monkeypatch):
    import recbole_llmkd.model.distiller as distiller

    def nan_loss(student_logits, *args, **kwargs):
        nan = student_logits.sum() * float("nan")
        return nan, nan, nan

    monkeypatch.setattr(distiller.ranking, "dllm2rec_rd_loss", nan_loss)
    with pytest.raises(KDTermError, match="KD term 'rd' .* is not finite"):
        _fit(student_data["KDGRU4Rec"], kd_method="dllm2rec")


def test_kd_term_stuck_at_zero_for_an_epoch_fails_loudly(student_data, monkeypatch):
    import recbole_llmkd.model.distiller as distiller

    monkeypatch.setattr(distiller.ranking, "logit_kd_loss", lambda student_logits, *a, **k: student_logits.sum() * 0.0)
    with pytest.raises(KDTermError, match="'logit_kd' was exactly 0 for all .* batches of epoch 0 .*rd_weight=0.8"):
        _fit(student_data["KDSASRec"], kd_method="logit")
    # With its weight at 0 the same dead term is allowed (and still logged).
    _, trainer, _ = _fit(student_data["KDSASRec"], kd_method="logit", rd_weight=0.0)
    assert trainer.kd_epoch_terms[0]["logit_kd"] == 0.0


def test_logit_weight_term_is_trained_logged_and_guarded(student_data, monkeypatch):
    import recbole_llmkd.model.distiller as distiller

    _, trainer, _ = _fit(student_data["KDSASRec"], kd_method="dllm2rec", logit_weight=0.5)
    assert set(trainer.kd_epoch_terms[0]) >= {"rd", "logit_aux"} and trainer.kd_epoch_terms[0]["logit_aux"] > 0
    # a dead logit term stops the run and names its weight (the ranking term, computed elsewhere, still lives)
    monkeypatch.setattr(distiller.ranking, "logit_kd_loss", lambda student_logits, *a, **k: student_logits.sum() * 0.0)
    with pytest.raises(KDTermError, match="'logit_aux' was exactly 0 for all .* batches of epoch 0 .*logit_weight=0.5"):
        _fit(student_data["KDSASRec"], kd_method="dllm2rec", logit_weight=0.5)


def test_select_on_test_needs_the_test_loader_and_is_labelled(student_data):
    config, train_data, valid_data, test_data, artifact = student_data["KDSASRec"]
    model = make_model(config, train_data, kd_method="rd", teacher=str(artifact), select_on="test")
    trainer = _trainer(config, model)
    with pytest.raises(ValueError, match="select_on: test .* needs fit\\(..., test_data=...\\)"):
        trainer.fit(train_data, valid_data, saved=False)
    trainer.fit(train_data, valid_data, saved=False, test_data=test_data)
    assert trainer.selection_label == "test-selected"
    assert trainer.best_valid_result == trainer.evaluate(test_data, load_best_model=False)


# One epoch's validation score per fit epoch: a spike at epoch 1, then a plateau at epochs 4-5 that beats it on average.
SCRIPTED_VALID_SCORES = [0.10, 0.30, 0.12, 0.14, 0.26, 0.27, 0.05, 0.05, 0.05, 0.05]


@pytest.mark.parametrize("smoothing, best_epoch, best_score, epochs_run", [
    # RecBole's rule (stopping_step 2: the third evaluation without a higher score ends the run): the spike wins
    (1, 1, 0.30, 5),
    (2, 5, (0.26 + 0.27) / 2, 9),  # means 0.10 0.20 0.21 0.13 0.20 0.265 0.16 0.05 0.05: the plateau wins
])
def test_valid_smoothing_selects_on_the_mean_of_the_last_scores(student_data, monkeypatch, smoothing, best_epoch,
                                                                 best_score, epochs_run):
    from recbole.trainer import Trainer

    scores = iter(SCRIPTED_VALID_SCORES)

    def scripted_valid_epoch(self, valid_data, show_progress=False):
        score = next(scores)
        return score, {"ndcg@10": score}

    monkeypatch.setattr(Trainer, "_valid_epoch", scripted_valid_epoch)
    saved_epochs = []
    monkeypatch.setattr(TrainerStateCheckpoint, "_save_checkpoint",
                        lambda self, epoch, verbose=True, **kw: saved_epochs.append(epoch))
    config, train_data, valid_data, _, _ = student_data["KDSASRec"]
    settings = {"valid_smoothing": smoothing, "epochs": len(SCRIPTED_VALID_SCORES), "stopping_step": 2}
    monkeypatch.setattr(config, "final_config_dict", {**config.final_config_dict, **settings})
    trainer = _trainer(config, make_model(config, train_data))
    trainer.fit(train_data, valid_data, saved=True, show_progress=False)
    assert trainer.evaluation_scores == SCRIPTED_VALID_SCORES[:epochs_run]
    assert saved_epochs[-1] == best_epoch  # the checkpoint kept is the one at the end of the best window
    assert trainer.best_valid_score == pytest.approx(best_score)
    assert trainer.best_valid_result == {"ndcg@10": SCRIPTED_VALID_SCORES[best_epoch]}  # that epoch's own result


def test_resume_goes_on_with_the_smoothing_window_and_the_kd_terms(student_data, monkeypatch, tmp_path):
    """A checkpoint holds the trainer's own state beside RecBole's (``trainer_state``), and ``resume_checkpoint`` gives
    it back: the resumed run's first smoothed score averages the scores before the checkpoint, and its KD terms per
    epoch go on from the checkpoint's epoch. Scripted validation, valid_smoothing 2: 0.10, 0.30 (mean 0.20, best,
    saved at epoch 1), 0.05, 0.05; resumed from epoch 1: 0.14 (mean 0.22 with the 0.30 before it: a new best, saved;
    alone it would be 0.14, below 0.20, and nothing would be saved), 0.05."""
    from recbole.trainer import Trainer

    script = iter([0.10, 0.30, 0.05, 0.05, 0.14, 0.05])

    def scripted_valid_epoch(self, valid_data, show_progress=False):
        score = next(script)
        return score, {"ndcg@10": score}

    monkeypatch.setattr(Trainer, "_valid_epoch", scripted_valid_epoch)
    config, train_data, valid_data, _, artifact = student_data["KDSASRec"]
    settings = {"valid_smoothing": 2, "epochs": 4, "stopping_step": 10, "checkpoint_dir": str(tmp_path),
                "kd_method": "rd", "teacher": str(artifact)}
    monkeypatch.setattr(config, "final_config_dict", {**config.final_config_dict, **settings})
    first = _trainer(config, make_model(config, train_data, kd_method="rd", teacher=str(artifact)))
    first.fit(train_data, valid_data, saved=True, show_progress=False)
    checkpoint = load_checkpoint(first.saved_model_file)
    assert checkpoint["epoch"] == 1
    assert checkpoint["trainer_state"]["evaluation_scores"] == [0.10, 0.30]
    assert checkpoint["trainer_state"]["kd_epoch_terms"] == first.kd_epoch_terms[:2]

    resumed = _trainer(config, make_model(config, train_data, kd_method="rd", teacher=str(artifact)))
    resumed.resume_checkpoint(first.saved_model_file)
    assert resumed.start_epoch == 2 and resumed.best_checkpoint_epoch == 1
    resumed.fit(train_data, valid_data, saved=True, show_progress=False)
    assert resumed.evaluation_scores == [0.10, 0.30, 0.14, 0.05]
    assert resumed.best_valid_score == pytest.approx((0.30 + 0.14) / 2)
    assert load_checkpoint(resumed.saved_model_file)["epoch"] == 2
    assert len(resumed.kd_epoch_terms) == 4 and resumed.kd_epoch_terms[:2] == first.kd_epoch_terms[:2]
    assert all(terms["rd_tw"] > 0 for terms in resumed.kd_epoch_terms[2:])


def test_valid_smoothing_must_be_a_count(student_data):
    from recbole_llmkd.errors import ConfigValueError

    config, train_data, _, _, _ = student_data["KDSASRec"]
    model = make_model(config, train_data)
    config["valid_smoothing"] = 0
    try:
        with pytest.raises(ConfigValueError, match="valid_smoothing=0 is not supported"):
            _trainer(config, model)
    finally:
        config["valid_smoothing"] = 1


# ----------------------------------------------------------------------------------------------------------------------
# Fold of trained students into plain RecBole models
# ----------------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("model_name", ["KDGRU4Rec", "KDBERT4Rec"])
def test_trained_student_folds_into_the_plain_recbole_model(student_data, tmp_path, model_name):
    from recbole_llmkd.compat import load_checkpoint
    from recbole_llmkd.registry import get_model

    config, train_data, _, test_data, _ = student_data[model_name]
    artifact = write_synthetic_artifact(train_data._dataset, tmp_path / "teacher.safetensors", seed=9)
    model, _, _ = _fit(student_data[model_name], kd_method="dllm2rec", teacher=str(artifact),
                       ed_apply_to="input_and_output")
    model.eval()
    batch = next(iter(test_data))[0]
    with torch.no_grad():
        before = model.full_sort_predict(batch)
    saved = save_folded(model, tmp_path / "folded.pth", config)
    os.remove(artifact)
    checkpoint = load_checkpoint(saved["path"])
    assert saved["model"] == model_name[2:]
    plain = get_model(checkpoint["config"]["model"])(checkpoint["config"], train_data._dataset)
    assert type(plain).__module__.startswith("recbole.model.")
    plain.load_state_dict(checkpoint["state_dict"])
    plain.eval()
    with torch.no_grad():
        assert torch.allclose(plain.full_sort_predict(batch), before, atol=1e-5)
        assert torch.allclose(model.full_sort_predict(batch), before, atol=1e-5)
