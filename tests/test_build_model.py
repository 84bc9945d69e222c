"""Models receive what they need (issue 15): ``run.build_model`` reads the files, the constructors read none.

- Built with what ``run.model_inputs`` read, every plugin model family constructs with every file-reading function
  patched to fail: a KD student with ED (teacher artifacts), LLMRec with item titles, SLMRec offline (its trained
  teacher) and online.
- Built without it, each says how to build it.
"""
import builtins
import io

import pytest
import safetensors
import safetensors.torch
import torch

from tests.test_kd_students import KD_TEST_CONFIG, build_split, write_synthetic_artifact
from tests.test_llmrec import SLICE_NAME, build, make_ml_slice, slice_config
from tests.test_slmrec import save_untrained_teacher


@pytest.fixture(scope="module")
def data_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("data")
    make_ml_slice(root)
    return root


def no_file_access(monkeypatch):
    """Every way the package reads or writes a file fails from here on."""

    def refuse(*args, **kwargs):
        raise AssertionError(f"a model constructor touched a file: {args[:1]}")

    for owner, name in ((builtins, "open"), (io, "open"), (torch, "load"), (torch, "save"),
                        (safetensors.torch, "load_file"), (safetensors.torch, "save_file"), (safetensors, "safe_open")):
        monkeypatch.setattr(owner, name, refuse)


def construct_twice(config, dataset, monkeypatch):
    """``config.model_class`` built from ``run.model_inputs``: once as is (lazy imports happen), then with every file
    access refused, from inputs read again; the two have the same weights at the same seed."""
    from recbole_llmkd.run import model_inputs

    torch.manual_seed(0)
    first = config.model_class(config, dataset, **model_inputs(config, dataset))
    inputs = model_inputs(config, dataset)
    with monkeypatch.context() as patch:
        no_file_access(patch)
        torch.manual_seed(0)
        second = config.model_class(config, dataset, **inputs)
    for (name, mine), (_, theirs) in zip(first.state_dict().items(), second.state_dict().items()):
        torch.testing.assert_close(mine, theirs, msg=name)
    return second


def test_a_kd_student_with_ed_is_built_without_opening_a_file(tmp_path, monkeypatch):
    config, train_data, _, _ = build_split("KDSASRec", tmp_path)
    artifact = write_synthetic_artifact(train_data._dataset, tmp_path / "teacher.safetensors")
    config["kd_method"], config["teacher"], config["ed_weight"] = "dllm2rec", str(artifact), 0.5
    model = construct_twice(config, train_data._dataset, monkeypatch)
    assert model.teacher.topk.shape[0] == len(train_data._dataset.inter_feat)
    assert model.teacher_artifacts.splits == ["train"]  # the student keeps the training split of the file only
    assert type(model.item_embedding).__name__ == "EDItemEmbedding"


def test_llm_recommenders_are_built_without_opening_a_file(data_root, tmp_path, monkeypatch):
    config, train_data, _, _ = build(data_root, use_item_titles=True, llm_title_view="cached")
    model = construct_twice(config, train_data._dataset, monkeypatch)
    assert model.title_states.shape[0] == train_data._dataset.item_num

    teacher = save_untrained_teacher(data_root, tmp_path / "teacher.pth", 4)
    for extra in ({"teacher": teacher}, {"kd_mode": "online", "slm_teacher_n_layers": 4}):
        config, train_data, _, _ = build(data_root, model="SLMRec", llm_tiny_config={"num_hidden_layers": 4},
                                         llm_n_layers=2, slm_blocks=2, **extra)
        model = construct_twice(config, train_data._dataset, monkeypatch)
        assert (model.n_teacher_layers, model.n_student_layers) == (4, 2)


def test_models_built_without_their_inputs_say_how_to_build_them(data_root, tmp_path):
    from recbole_llmkd.config import Config
    from recbole_llmkd.errors import ConfigValueError
    from recbole_llmkd.model.distiller import TeacherConfigError

    config, train_data, _, _ = build_split("KDSASRec", tmp_path)
    config["kd_method"], config["teacher"] = "dllm2rec", str(tmp_path / "teacher.safetensors")
    with pytest.raises(TeacherConfigError, match=r"built without its teacher artifacts: build KD students with "
                                                  r"recbole_llmkd.run.build_model"):
        config.model_class(config, train_data._dataset)
    config["kd_method"], config["teacher"], config["item_init"] = "none", None, "text_encoder"
    with pytest.raises(TeacherConfigError, match="item_init: text_encoder needs the titles' sentence embeddings"):
        config.model_class(config, train_data._dataset)

    for model in ("LLMRec", "BIGRec", "SLMRec"):
        config = Config(model, SLICE_NAME, config_dict=slice_config(data_root, llm_n_layers=1, teacher="t.pth"))
        _, train_data, _, _ = build(data_root, model=model, llm_n_layers=1, teacher="t.pth")
        with pytest.raises(ConfigValueError, match=rf"{model} was built without .*recbole_llmkd.run.build_model"):
            config.model_class(config, train_data._dataset)


def test_a_student_written_to_the_old_constructor_is_told_what_to_accept(tmp_path):
    """A ``Distiller`` student whose ``__init__`` takes only ``(config, dataset)`` gets one error naming the keyword
    arguments it must accept, not a ``TypeError`` from deep inside."""
    from recbole.model.sequential_recommender.narm import NARM

    from recbole_llmkd.config import Config
    from recbole_llmkd.errors import ConfigValueError
    from recbole_llmkd.model.distiller import Distiller
    from recbole_llmkd.run import build_model

    class OldKDNARM(Distiller, NARM):
        def __init__(self, config, dataset):
            NARM.__init__(self, config, dataset)
            self.init_distiller(config, dataset)

    _, train_data, _, _ = build_split("KDSASRec", tmp_path)
    artifact = write_synthetic_artifact(train_data._dataset, tmp_path / "teacher.safetensors")
    config = Config(OldKDNARM, "ml-100k", config_dict={**KD_TEST_CONFIG, "kd_method": "rd", "teacher": str(artifact)})
    with pytest.raises(ConfigValueError, match=r"OldKDNARM.__init__ must accept the keyword argument\(s\) \['teacher'\]"):
        build_model(config, train_data._dataset)
