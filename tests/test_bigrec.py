"""BIGRec (issue 16): grounding, popularity, generation cut at the title's end, labels, checkpoint, and the tiny
teacher end to end (train -> evaluate -> export -> KD student with confidence_mode code)."""
import math

import pytest
import torch

from tests.test_llmrec import SLICE_NAME, make_ml_slice

N_USERS = 40  # of which the 9 with <= 25 interactions are kept (user_inter_num_interval): ~200 rows

# A tiny BIGRec: 2-layer random decoder, a short template (the byte tokenizer makes one token per character).
TINY_BIGREC = {
    "MAX_ITEM_LIST_LENGTH": 10,
    "gpu_id": "",
    "show_progress": False,
    "metrics": ["Hit", "NDCG", "MRR"],
    "topk": [10],
    "valid_metric": "NDCG@10",
    "seed": 2020,
    "epochs": 1,
    "train_batch_size": 64,
    "eval_batch_size": 64,
    "llm_backbone": "tiny",
    "llm_tiny_config": {"num_hidden_layers": 2},
    "bigrec_template": "{instruction}{history}\n>",
    "bigrec_instruction": "Next:",
    "bigrec_history_prefix": "",
    "bigrec_max_new_tokens": 6,
    "lora_r": 4,
    "lora_alpha": 8,
    "lora_dropout": 0.0,
    "warmup_steps": 1,
    "learning_rate": 0.01,
    "llm_train_examples": "last_per_user",
    "load_col": {"inter": ["user_id", "item_id", "rating", "timestamp"]},
    "user_inter_num_interval": "[0,25]",
}


@pytest.fixture(scope="module")
def data_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("bigrec_data")
    make_ml_slice(root, n_users=N_USERS, drop_titles=2)
    return root


def bigrec_config(data_root, **overrides) -> dict:
    return {**TINY_BIGREC, "data_path": str(data_root), **overrides}


@pytest.fixture(scope="module")
def built(data_root):
    """(config, train_data, valid_data, test_data, model) of a tiny untrained BIGRec on the slice."""
    from recbole.data import create_dataset, data_preparation
    from recbole.utils import init_seed

    from recbole_llmkd.config import Config
    from recbole_llmkd.run import build_model

    config = Config("BIGRec", SLICE_NAME, config_dict=bigrec_config(data_root))
    init_seed(config["seed"], config["reproducibility"])
    train_data, valid_data, test_data = data_preparation(config, create_dataset(config))
    return config, train_data, valid_data, test_data, build_model(config, train_data._dataset)


def test_grounding_against_hand_computed_distances():
    from recbole_llmkd.model.bigrec import ground

    table = torch.tensor([[9.0, 9.0], [0.0, 0.0], [3.0, 4.0], [1.0, 0.0]])  # row 0 = PAD
    generated = torch.tensor([[0.0, 0.0], [3.0, 0.0]])
    scores = ground(generated, table)
    assert torch.isinf(scores[:, 0]).all() and (scores[:, 0] < 0).all()
    torch.testing.assert_close(scores[:, 1:], -torch.tensor([[0.0, 5.0, 1.0], [3.0, 4.0, 2.0]]), rtol=1e-5, atol=1e-6)

    # BIGRec's popularity adjustment: -(1 + pop)^-gamma * minmax(d); row 0: d = [0, 5, 1] -> [0, 1, 0.2]
    pop = torch.tensor([0.0, 0.0, 1.0, 0.5])
    adjusted = ground(generated[:1], table, pop, gamma=1.0)
    expected = -torch.tensor([0.0, 1.0 / 2.0, 0.2 / 1.5])
    torch.testing.assert_close(adjusted[0, 1:], expected, rtol=1e-5, atol=1e-6)
    assert adjusted[0, 1:].argmax() == 0  # the nearest item stays first


def test_popularity_is_the_min_max_normalised_target_share():
    from recbole_llmkd.model.bigrec import popularity_weights

    pop = popularity_weights(torch.tensor([0, 2, 6, 4]))
    torch.testing.assert_close(pop, torch.tensor([0.0, 0.0, 1.0, 0.5]))


@pytest.mark.parametrize("text, title", [
    ('"Heat (1995)"', "Heat (1995)"),
    ('"Heat (1995)" and "Casino"', "Heat (1995)"),
    ('  "Toy Story\nmore', "Toy Story"),
    ("no quotes at all", "no quotes at all"),
    ('""', ""),
])
def test_generation_is_cut_at_the_end_of_the_title(text, title):
    from recbole_llmkd.model.bigrec import clean_generation

    assert clean_generation(text) == title


def test_stopping_criterion_stops_each_row_after_the_closing_quote():
    from recbole_llmkd.model.bigrec import _ClosingQuote

    quote_count = torch.tensor([0, 1, 0, 2])  # token 1 is '"', token 3 is '""'
    criterion = _ClosingQuote(quote_count, prompt_length=2)
    input_ids = torch.tensor([[0, 0, 1, 2, 1], [0, 0, 1, 2, 2], [0, 0, 3, 0, 0], [1, 1, 2, 2, 2]])
    assert criterion(input_ids, None).tolist() == [True, False, True, False]  # the prompt's quotes do not count


def test_generation_stops_inside_hf_generate(built):
    """The criterion is wired into transformers' generate: when every token counts as a quote, two tokens end a row."""
    _, train_data, _, _, model = built
    batch = train_data._dataset.inter_feat[:3]
    saved = model.quote_count.clone()
    try:
        model.quote_count.fill_(1)
        encoded = model.tokenizer(model.prompts(batch), padding=True, padding_side="left", return_tensors="pt")
        from transformers import StoppingCriteriaList

        from recbole_llmkd.model.bigrec import _ClosingQuote

        output = model.llm.generate(**encoded, max_new_tokens=6, do_sample=False, pad_token_id=0,
                                    eos_token_id=model.eos_token_id,
                                    stopping_criteria=StoppingCriteriaList([_ClosingQuote(model.quote_count,
                                                                                          encoded["input_ids"].shape[1])]))
        assert output.shape[1] - encoded["input_ids"].shape[1] <= 2
        assert len(model.generate(batch)) == 3
    finally:
        model.quote_count.copy_(saved)


def test_prompt_and_labels(built):
    """The prompt lists the history's titles in order; every real token carries its label (BIGRec trains on inputs)
    or, with bigrec_train_on_inputs off, only the quoted target title and EOS do."""
    from recbole_llmkd.model.bigrec import IGNORE_INDEX

    _, train_data, _, _, model = built
    batch = train_data._dataset.inter_feat[:4]
    prompts = model.prompts(batch)
    row = batch["item_id_list"][3][: int(batch["item_length"][3])].tolist()
    assert prompts[3] == "Next:" + ", ".join(f'"{model.item_titles[item]}"' for item in row) + "\n>"
    input_ids, attention_mask, labels = model.training_batch(batch)  # bigrec_train_on_inputs: True (BIGRec's scripts)
    n_real = attention_mask.sum(dim=1)  # [4]
    for index in range(4):
        assert torch.equal(labels[index, : n_real[index]], input_ids[index, : n_real[index]])
        assert (labels[index, n_real[index]:] == IGNORE_INDEX).all()
    model.train_on_inputs = False
    try:
        input_ids, attention_mask, labels = model.training_batch(batch)
    finally:
        model.train_on_inputs = True
    for index in range(4):
        labelled = labels[index][labels[index] != IGNORE_INDEX].tolist()
        target = batch["item_id"][index].item()
        assert model.tokenizer.decode(labelled[:-1]) == f'"{model.item_titles[target]}"'
        assert labelled[-1] == model.eos_token_id
        n_real = int(attention_mask[index].sum())
        assert (labels[index, n_real:] == IGNORE_INDEX).all() and n_real == len(model.tokenizer(prompts[index])
                                                                                 ["input_ids"]) + len(labelled)
    loss = model.calculate_loss(batch)
    assert torch.isfinite(loss) and loss.item() > 0
    loss.backward()
    trained = [name for name, parameter in model.named_parameters() if parameter.grad is not None]
    assert trained and all("lora_" in name for name in trained)
    model.zero_grad(set_to_none=True)


def test_titles_are_grounded_with_the_base_llm(built):
    """The grounding table is the base decoder (LoRA off) on each title, last token; PAD row zero; full_sort_predict
    is minus the L2 distance of the generated title's embedding."""
    from recbole_llmkd.llm import encode_texts

    _, train_data, _, _, model = built
    decoder = model.llm.get_base_model().get_decoder()
    with model.llm.disable_adapter():
        expected = encode_texts(decoder, model.tokenizer, model.item_titles[1:4])
    torch.testing.assert_close(model.item_text_emb[1:4], expected, rtol=1e-5, atol=1e-6)
    assert not model.item_text_emb[0].any()

    batch = train_data._dataset.inter_feat[:2]
    model.eval()
    scores = model.full_sort_predict(batch)  # [2, n_items]
    texts = model.generate(batch)
    with model.llm.disable_adapter():
        generated = encode_texts(decoder, model.tokenizer, [t or model.tokenizer.eos_token for t in texts])
    distance = torch.cdist(generated, model.item_text_emb)
    torch.testing.assert_close(scores[:, 1:], -distance[:, 1:], rtol=1e-4, atol=1e-5)
    assert torch.isinf(scores[:, 0]).all()
    predicted = model.predict(batch)  # the row's own item
    torch.testing.assert_close(predicted, scores.gather(1, batch["item_id"][:, None]).squeeze(1), rtol=1e-5, atol=1e-6)


def test_state_dict_holds_lora_only_and_a_wrong_backbone_is_refused(built, data_root):
    from recbole.data import create_dataset

    from recbole_llmkd.config import Config
    from recbole_llmkd.model.llmrec import CheckpointMismatchError
    from recbole_llmkd.run import build_model

    _, _, _, _, model = built
    keys = list(model.state_dict())
    assert keys and all("lora_" in key for key in keys)
    para = model.other_parameter()
    other = Config("BIGRec", SLICE_NAME, config_dict=bigrec_config(data_root, llm_tiny_config={"num_hidden_layers": 2,
                                                                                                 "seed": 7}))
    other_model = build_model(other, create_dataset(other))
    with pytest.raises(CheckpointMismatchError, match="backbone"):
        other_model.load_other_parameter(para)


@pytest.mark.slow
def test_tiny_bigrec_end_to_end_through_the_pipeline(data_root, tmp_path, capsys):
    """``teacher_model: BIGRec`` in a profile: the tiny BIGRec trains and evaluates, exports neg_l2 artifacts (its
    grounding table as item_text_emb), and a KD-SASRec trains from them with DLLM2Rec's confidence_mode code (the
    default with this teacher) and ED; the report has no SLMRec rows."""
    import json

    import yaml

    from recbole_llmkd.cli import main
    from recbole_llmkd.data.artifacts import load_artifacts
    from recbole_llmkd.pipeline import Pipeline

    teacher = {key: value for key, value in TINY_BIGREC.items() if key.startswith(("llm_", "bigrec_", "lora_"))}
    profile = {
        "profile": "tiny-bigrec", "dataset": SLICE_NAME, "teacher_model": "BIGRec",
        "common": {"gpu_id": "", "data_path": str(data_root), "load_col": TINY_BIGREC["load_col"],
                   "user_inter_num_interval": "[0,25]", "epochs": 1, "MAX_ITEM_LIST_LENGTH": 10,
                   "metrics": ["Hit", "NDCG"], "topk": [10], "valid_metric": "NDCG@10", "show_progress": False},
        "teacher": {**teacher, "learning_rate": 0.01, "warmup_steps": 1},
        "export": {"topk": 6},
        "students": {"SASRec": {"hidden_size": 8, "inner_size": 8, "n_layers": 1, "n_heads": 1}},
        "kd": {"kd_method": "dllm2rec", "rd_topk": 5},
    }
    profile_file = tmp_path / "tiny_bigrec.yaml"
    profile_file.write_text(yaml.safe_dump(profile), encoding="utf-8")
    steps = Pipeline(str(profile_file), run_dir=str(tmp_path / "plan")).plan()
    assert [(step, model) for step, model, _ in steps] == [
        ("teacher", "BIGRec"), ("export", "export"), ("SASRec", "SASRec"), ("KDSASRec", "KDSASRec")]
    assert steps[-1][2]["confidence_mode"] == "code"

    assert main([f"--pipeline={profile_file}", f"--run_dir={tmp_path / 'run'}"]) == 0
    report = json.loads((tmp_path / "run" / "report.json").read_text(encoding="utf-8"))
    assert [row["model"] for row in report["table"]] == ["BIGRec (teacher)", "SASRec", "KDSASRec"]
    assert report["meta"]["teacher_model"] == "BIGRec"
    assert "SLMRec not run" in (tmp_path / "run" / "report.md").read_text(encoding="utf-8")
    kd_log = (tmp_path / "run" / "KDSASRec" / "run.log").read_text(encoding="utf-8")
    assert "confidence_mode" in kd_log and "code" in kd_log

    artifacts = load_artifacts(tmp_path / "run" / "teacher" / "teacher_artifacts.safetensors")
    assert artifacts.score_kind == "neg_l2" and artifacts.teacher["name"] == "BIGRec"
    assert artifacts.teacher["backbone"]["lm_head"] == "tied"
    assert artifacts.teacher["config"]["bigrec_instruction"] == "Next:"
    train = artifacts.split_tensors("train")
    assert (train["topk_scores"] <= 0).all() and (train["topk_scores"][:, :-1] >= train["topk_scores"][:, 1:]).all()
    torch.testing.assert_close(train["confidence"], torch.softmax(train["topk_scores"], dim=1))
    assert artifacts.item_text_emb.shape[1] == 32 and not artifacts.item_text_emb[0].any()
    assert math.isfinite(report["table"][2]["ndcg@10"])
