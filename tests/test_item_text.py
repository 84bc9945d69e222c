"""recbole_llmkd.data.item_text: item titles from RecBole atomic .item files."""
import logging
import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

import recbole_llmkd  # noqa: F401  (numpy-2 shims before RecBole)
import recbole
from recbole_llmkd.data.item_text import item_titles_for_dataset, read_item_text

ML100K_DIR = Path(recbole.__file__).parent / "dataset_example" / "ml-100k"

TINY_ITEM = (
    "item_id:token\tmovie_title:token_seq\tname:token\trelease_year:token\n"
    "10\tToy Story\tToy\t1995\n"
    "11\t   \tBlank Title\t1996\n"  # whitespace title: missing
    "12\t\tEmpty Title\t1997\n"  # empty title: missing
    '13\t"""Weird"" Al: the movie"\tAl\t1998\n'  # csv-quoted, as pandas writes it
    "\n"  # blank line: skipped
    "14\t  Padded  Title \n"  # short row: name and year missing
)


@pytest.fixture
def tiny_item_file(tmp_path):
    path = tmp_path / "tiny.item"
    path.write_text(TINY_ITEM, encoding="utf-8")
    return path


def test_read_item_text_picks_movie_title_first_and_drops_missing_titles(tiny_item_file):
    assert read_item_text(tiny_item_file) == {
        "10": "Toy Story",
        "13": '"Weird" Al: the movie',
        "14": "Padded  Title",
    }


def test_read_item_text_named_field(tiny_item_file):
    assert read_item_text(tiny_item_file, "name") == {"10": "Toy", "11": "Blank Title", "12": "Empty Title", "13": "Al"}
    assert read_item_text(str(tiny_item_file), field="release_year")["12"] == "1997"


def test_read_item_text_default_field_order(tmp_path):
    path = tmp_path / "a.item"
    path.write_text("item_id:token\tname:token\ttitle:token_seq\n1\tArtist\tSong\n", encoding="utf-8")
    assert read_item_text(path) == {"1": "Song"}  # title before name
    path.write_text("item_id:token\tname:token\n1\tArtist\n", encoding="utf-8")
    assert read_item_text(path) == {"1": "Artist"}


def test_read_item_text_errors(tmp_path, tiny_item_file):
    missing = tmp_path / "nope.item"
    with pytest.raises(FileNotFoundError, match=r"item file not found: .*nope\.item"):
        read_item_text(missing)
    with pytest.raises(ValueError, match=r"text field 'title' not found; fields present: \['item_id', 'movie_title', 'name', 'release_year'\]"):
        read_item_text(tiny_item_file, "title")
    with pytest.raises(ValueError, match=r"item id field 'iid' not found"):
        read_item_text(tiny_item_file, id_field="iid")

    no_text = tmp_path / "no_text.item"
    no_text.write_text("item_id:token\tclass:token_seq\n1\tDrama\n", encoding="utf-8")
    with pytest.raises(ValueError, match=r"no text field found.*fields present: \['item_id', 'class'\]"):
        read_item_text(no_text)

    bad_header = tmp_path / "bad_header.item"
    bad_header.write_text("item_id\ttitle\n1\tA\n", encoding="utf-8")
    with pytest.raises(ValueError, match=r"header column 'item_id' is not of the form 'name:type'"):
        read_item_text(bad_header)

    too_many = tmp_path / "too_many.item"
    too_many.write_text("item_id:token\ttitle:token_seq\n1\tA\n2\tB\textra\n", encoding="utf-8")
    with pytest.raises(ValueError, match=r"too_many\.item:3: 3 tab-separated columns, but the header names 2"):
        read_item_text(too_many)

    duplicate = tmp_path / "duplicate.item"
    duplicate.write_text("item_id:token\ttitle:token_seq\n1\tA\n1\tB\n", encoding="utf-8")
    with pytest.raises(ValueError, match=r"duplicate\.item:3: item id '1' appears twice \(first at line 2\)"):
        read_item_text(duplicate)

    empty = tmp_path / "empty.item"
    empty.write_text("", encoding="utf-8")
    with pytest.raises(ValueError, match=r"the file is empty"):
        read_item_text(empty)


def test_read_item_text_on_ml100k_from_the_recbole_wheel():
    titles = read_item_text(ML100K_DIR / "ml-100k.item")
    assert len(titles) == 1682
    assert titles["1"] == "Toy Story"
    assert titles["267"] == "unkonwn"  # sic, as shipped


# ---------------------------------------------------------------------------------------------
# item_titles_for_dataset
# ---------------------------------------------------------------------------------------------


def fake_dataset(data_path, name, **config):
    """The three attributes item_titles_for_dataset uses, like a built RecBole Dataset."""
    tokens = np.array(["[PAD]", "13", "10", "99", "11", "14"])  # internal id -> raw token
    return SimpleNamespace(
        iid_field="item_id",
        field2id_token={"item_id": tokens},
        config={"data_path": str(data_path), "dataset": name, **config},
    )


def test_item_titles_for_dataset_maps_internal_ids_with_fallbacks(tmp_path, tiny_item_file, caplog):
    dataset = fake_dataset(tmp_path, "tiny")
    with caplog.at_level(logging.INFO, logger="recbole_llmkd"):
        titles = item_titles_for_dataset(dataset)
    assert titles == ["", '"Weird" Al: the movie', "Toy Story", "item 99", "item 11", "Padded  Title"]
    records = [record for record in caplog.records if record.name == "recbole_llmkd"]
    assert len(records) == 1
    assert records[0].levelno == logging.WARNING
    assert "2 of 5 items have no text" in records[0].getMessage()


def test_item_titles_for_dataset_field_from_config_argument_or_string(tmp_path, tiny_item_file):
    dataset = fake_dataset(tmp_path, "tiny", item_text_field="name")
    assert item_titles_for_dataset(dataset) == ["", "Al", "Toy", "item 99", "Blank Title", "item 14"]
    assert item_titles_for_dataset(dataset, "movie_title")[1] == '"Weird" Al: the movie'
    other_config = {"data_path": str(tmp_path), "dataset": "tiny", "item_text_field": "release_year"}
    assert item_titles_for_dataset(dataset, other_config)[:3] == ["", "1998", "1995"]
    with pytest.raises(ValueError, match=r"'data_path' and 'dataset'"):
        item_titles_for_dataset(dataset, {"item_text_field": "name"})


def test_item_titles_for_dataset_uses_given_logger_once(tmp_path, tiny_item_file):
    messages = []

    class ListHandler(logging.Handler):
        def emit(self, record):
            messages.append((record.levelno, record.getMessage()))

    own_logger = logging.getLogger("test_item_text.own")
    handler = ListHandler()
    own_logger.addHandler(handler)
    own_logger.setLevel(logging.INFO)
    try:
        item_titles_for_dataset(fake_dataset(tmp_path, "tiny"), logger=own_logger)
    finally:
        own_logger.removeHandler(handler)
    assert len(messages) == 1 and messages[0][0] == logging.WARNING


def recbole_config(monkeypatch, tmp_path, dataset_name, **config_dict):
    from recbole.config import Config

    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "argv", ["pytest"])
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")  # Config overwrites it; monkeypatch restores it
    return Config(
        model="SASRec",
        dataset=dataset_name,
        config_dict={"gpu_id": "", "show_progress": False, "train_neg_sample_args": None, **config_dict},
    )


def test_item_titles_for_a_real_recbole_dataset(tmp_path, monkeypatch, caplog):
    """A tiny atomic dataset built by RecBole: titles follow RecBole's internal ids."""
    from recbole.data import create_dataset

    dataset_dir = tmp_path / "data" / "tiny"
    dataset_dir.mkdir(parents=True)
    (dataset_dir / "tiny.item").write_text(TINY_ITEM, encoding="utf-8")
    inter_rows = [(user, item, time) for time, (user, item) in enumerate(
        [("u1", "14"), ("u1", "10"), ("u1", "99"), ("u2", "13"), ("u2", "10"), ("u2", "11")]
    )]
    (dataset_dir / "tiny.inter").write_text(
        "user_id:token\titem_id:token\ttimestamp:float\n" + "".join(f"{u}\t{i}\t{t}\n" for u, i, t in inter_rows),
        encoding="utf-8",
    )
    config = recbole_config(
        monkeypatch, tmp_path, "tiny",
        data_path=str(tmp_path / "data"),
        load_col={"inter": ["user_id", "item_id", "timestamp"]},  # RecBole itself never reads the .item file
        item_text_field="movie_title",
    )
    dataset = create_dataset(config)
    with caplog.at_level(logging.INFO, logger="recbole_llmkd"):
        titles = item_titles_for_dataset(dataset)

    assert len(titles) == dataset.item_num == 6
    assert titles[0] == ""
    assert titles[dataset.token2id("item_id", "10")] == "Toy Story"
    assert titles[dataset.token2id("item_id", "13")] == '"Weird" Al: the movie'
    assert titles[dataset.token2id("item_id", "14")] == "Padded  Title"
    assert titles[dataset.token2id("item_id", "99")] == "item 99"  # not in the .item file
    assert titles[dataset.token2id("item_id", "11")] == "item 11"  # whitespace title
    assert sum("have no text" in record.getMessage() for record in caplog.records) == 1


def test_item_titles_for_ml100k_use_the_final_data_path(tmp_path, monkeypatch, caplog):
    """RecBole's final data_path for ml-100k is the dataset folder inside the wheel."""
    from recbole.data import create_dataset

    config = recbole_config(monkeypatch, tmp_path, "ml-100k", load_col={"inter": ["user_id", "item_id", "timestamp"]})
    assert Path(config["data_path"]).resolve() == ML100K_DIR.resolve()
    dataset = create_dataset(config)
    with caplog.at_level(logging.INFO, logger="recbole_llmkd"):
        titles = item_titles_for_dataset(dataset, "movie_title")

    assert len(titles) == 1683  # 1,682 items + [PAD]
    assert titles[dataset.token2id("item_id", "1")] == "Toy Story"
    assert titles[dataset.token2id("item_id", "267")] == "unkonwn"
    assert not any(record.levelno >= logging.WARNING for record in caplog.records if record.name == "recbole_llmkd")
