"""recbole_llmkd.jobs.convert: DLLM2Rec/BIGRec/LLaRA splits -> RecBole atomic benchmark files."""
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import recbole_llmkd  # noqa: F401  (numpy-2 shims before RecBole)
from recbole_llmkd.data.convert import main  # the job under its former program name (a compatibility module)
from recbole_llmkd.data.item_text import read_item_text
from recbole_llmkd.jobs.convert import (
    ConversionError,
    SplitRows,
    convert_dllm2rec,
    read_conversion_report,
    read_id2name,
    read_split,
)

PROTOCOL_YAML = Path(__file__).resolve().parents[1] / "properties" / "dllm2rec_protocol.yaml"
N_ITEMS = 30
SEQ_LEN = 10
SPLIT_ROWS = {"train": 36, "valid": 12, "test": 12}
INTER_HEADER = "user_id:token\titem_id_list:token_seq\titem_id:token"
SPECIAL_NAMES = {4: "Foo\tBar", 5: '"Weird" Al'}  # a tab to replace, a quote to survive the round trip


def item_name(item_id):
    return SPECIAL_NAMES.get(item_id, f"Item {item_id} (199{item_id % 10})")


def write_id2name(path, id_format, n_names=N_ITEMS):
    """LLaRA: 'id::name'; BIGRec: 'name<TAB>id'. The tab-containing name only fits LLaRA's format."""
    lines = []
    for item_id in range(n_names):
        name = item_name(item_id)
        if id_format == "bigrec":
            name = name.replace("\t", " ")
            lines.append(f"{name}\t{item_id}")
        else:
            lines.append(f"{item_id}::{name}")
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")


def padded(history, padding, pad_id=N_ITEMS, seq_len=SEQ_LEN):
    pads = [pad_id] * (seq_len - len(history))
    return history + pads if padding == "right" else pads + history


def write_fixture(
    input_dir,
    *,
    id_format="llara",
    padding="right",
    user_column=None,
    seed=0,
    file_names=("train_data.df", "val_data.df", "test_data.df"),
    llara_pairs=False,
):
    """Write the three split pickles and id2name.txt; return {split: [(user, history, target)]}."""
    input_dir.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    expected = {}
    for (split, n_rows), file_name in zip(SPLIT_ROWS.items(), file_names):
        records, rows = [], []
        for row in range(n_rows):
            # lengths 1 and 10 always occur; the rest random
            length = [1, SEQ_LEN][row] if row < 2 else int(rng.integers(1, SEQ_LEN + 1))
            history = [int(item) for item in rng.integers(0, N_ITEMS, size=length)]
            target = int(rng.integers(0, N_ITEMS))
            seq = padded(history, padding)
            user = f"u{row % 7}" if user_column is not None else f"{split}_{row}"
            record = {"seq": seq, "len_seq": length, "next": target}
            if llara_pairs:
                record = {"seq": [(item, 5) for item in seq], "len_seq": length, "next": (target, 4)}
            if user_column is not None:
                record[user_column] = user
            records.append(record)
            rows.append((user, history, target))
        pd.DataFrame(records).to_pickle(input_dir / file_name)
        expected[split] = rows
    write_id2name(input_dir / "id2name.txt", id_format)
    return expected


def read_lines(path):
    return path.read_text(encoding="utf-8").split("\n")


def expected_inter_lines(rows):
    return [INTER_HEADER] + [f"{user}\t{' '.join(map(str, history))}\t{target}" for user, history, target in rows] + [""]


@pytest.mark.parametrize(
    "id_format, padding, user_column",
    [("llara", "right", None), ("bigrec", "left", "uid"), ("llara", "left", "user_id"), ("bigrec", "right", "user")],
)
def test_convert_writes_expected_files_line_by_line(tmp_path, id_format, padding, user_column):
    expected = write_fixture(tmp_path / "in", id_format=id_format, padding=padding, user_column=user_column)
    dataset_dir = convert_dllm2rec(tmp_path / "in", tmp_path / "out", "toy")

    assert dataset_dir == tmp_path / "out" / "toy"
    for split in ("train", "valid", "test"):
        assert read_lines(dataset_dir / f"toy.{split}.inter") == expected_inter_lines(expected[split])

    item_lines = read_lines(dataset_dir / "toy.item")
    assert item_lines[0] == "item_id:token\ttitle:token_seq"
    assert len(item_lines) == N_ITEMS + 2  # header + items + final newline
    assert item_lines[1] == "0\tItem 0 (1990)"
    assert item_lines[5] == "4\tFoo Bar"  # tab replaced by a space
    assert item_lines[6] == '5\t"""Weird"" Al"'  # csv quoting, read back as "Weird" Al
    assert item_lines[-1] == ""
    titles = read_item_text(dataset_dir / "toy.item")
    assert titles["5"] == '"Weird" Al'
    assert titles["29"] == "Item 29 (1999)"


def test_padding_side_is_detected_from_len_seq_and_pad_value(tmp_path):
    """The same histories, padded left or right, convert to identical files."""
    write_fixture(tmp_path / "left", padding="left", seed=3)
    write_fixture(tmp_path / "right", padding="right", seed=3)
    left_dir = convert_dllm2rec(tmp_path / "left", tmp_path / "out_left", "toy")
    right_dir = convert_dllm2rec(tmp_path / "right", tmp_path / "out_right", "toy")
    for file_name in ("toy.train.inter", "toy.valid.inter", "toy.test.inter", "toy.item"):
        assert (left_dir / file_name).read_text() == (right_dir / file_name).read_text()
    # a left-padded row keeps its items in order: [30, 30, 7, 8, 9] -> "7 8 9"
    frame = pd.DataFrame({"seq": [[N_ITEMS] * 7 + [7, 8, 9]], "len_seq": [3], "next": [1]})
    for split_file in ("train_data.df", "val_data.df", "test_data.df"):
        frame.to_pickle(tmp_path / "left" / split_file)
    left_dir = convert_dllm2rec(tmp_path / "left", tmp_path / "out_left", "toy")
    assert read_lines(left_dir / "toy.train.inter")[1] == "train_0\t7 8 9\t1"


def test_llara_pairs_capitalised_names_and_valid_data_name(tmp_path):
    expected = write_fixture(
        tmp_path / "in", llara_pairs=True, file_names=("train_data.df", "Val_data.df", "Test_data.df")
    )
    dataset_dir = convert_dllm2rec(tmp_path / "in", tmp_path / "out", "toy")
    assert read_lines(dataset_dir / "toy.valid.inter") == expected_inter_lines(expected["valid"])

    expected = write_fixture(tmp_path / "in2", file_names=("train_data.df", "valid_data.df", "test_data.df"))
    dataset_dir = convert_dllm2rec(tmp_path / "in2", tmp_path / "out2", "toy")
    assert read_lines(dataset_dir / "toy.valid.inter") == expected_inter_lines(expected["valid"])


def test_explicit_n_items_sets_the_pad_value(tmp_path):
    """With n_items=35 the pad value is 35 and ids 30..34 (no name) are valid."""
    write_fixture(tmp_path / "in")
    frame = pd.DataFrame({"seq": [[33, 2, 35, 35, 35]], "len_seq": [2], "next": [34]})
    for split_file in ("train_data.df", "val_data.df", "test_data.df"):
        frame.to_pickle(tmp_path / "in" / split_file)
    dataset_dir = convert_dllm2rec(tmp_path / "in", tmp_path / "out", "toy", n_items=35)
    assert read_lines(dataset_dir / "toy.test.inter")[1] == "test_0\t33 2\t34"
    assert len(read_item_text(dataset_dir / "toy.item")) == N_ITEMS  # only named items are listed


def test_missing_id2name_needs_n_items(tmp_path):
    write_fixture(tmp_path / "in")
    (tmp_path / "in" / "id2name.txt").unlink()
    with pytest.raises(ValueError, match=r"id2name\.txt: not found.*n_items"):
        convert_dllm2rec(tmp_path / "in", tmp_path / "out", "toy")
    dataset_dir = convert_dllm2rec(tmp_path / "in", tmp_path / "out", "toy", n_items=N_ITEMS)
    assert read_lines(dataset_dir / "toy.item") == ["item_id:token\ttitle:token_seq", ""]


def test_read_id2name_detects_each_format(tmp_path):
    llara = tmp_path / "llara.txt"
    llara.write_text("0::Toy Story (1995)\n1::A::B\n\n2::Tab\there\n", encoding="utf-8")
    assert read_id2name(llara) == {0: "Toy Story (1995)", 1: "A::B", 2: "Tab\there"}
    bigrec = tmp_path / "bigrec.txt"
    bigrec.write_text("Toy Story (1995)\t0\r\n3::Odd name\t1\r\n", encoding="utf-8")
    assert read_id2name(bigrec) == {0: "Toy Story (1995)", 1: "3::Odd name"}


# ---------------------------------------------------------------------------------------------
# empty-history rows (LLaRA/DLLM2Rec splits clamp len_seq to at least 1)
# ---------------------------------------------------------------------------------------------

CLAMPED = "all-padding seq with len_seq 1 (length clamped to 1 by the writer)"
NO_HISTORY = "len_seq 0 (no history)"
# (history, len_seq, next); history None: an all-padding seq
QUIRK_TRAIN = [
    ([1, 2, 3], 3, 4),
    (None, 1, 5),
    ([6], 1, 7),
    (None, 1, 8),
    (None, 0, 9),
    (list(range(10, 20)), 10, 0),  # full length: decides no padding side
    (None, 1, 11),
    ([12, 13], 2, 14),
]
QUIRK_TEST = [(None, 1, 1), ([2, 3], 2, 4), ([5, 6, 7, 8], 4, 9), (None, 1, 10)]


def write_quirk_fixture(input_dir, padding):
    """The standard fixture with train and test rewritten to hold empty-history rows.

    Returns {split: [(user, history, target)]} of the rows that must be kept."""
    expected = write_fixture(input_dir, padding=padding)
    for split, split_file, rows in (("train", "train_data.df", QUIRK_TRAIN), ("test", "test_data.df", QUIRK_TEST)):
        frame = pd.DataFrame(
            {
                "seq": [padded(history or [], padding) for history, _, _ in rows],
                "len_seq": [len_seq for _, len_seq, _ in rows],
                "next": [target for _, _, target in rows],
            }
        )
        write_split(input_dir, split_file, frame)
        expected[split] = [
            (f"{split}_{position}", history, target)
            for position, (history, _, target) in enumerate(rows)
            if history is not None
        ]
    return expected


@pytest.mark.parametrize("padding", ["right", "left"])
def test_empty_history_rows_are_dropped_and_counted(tmp_path, caplog, padding):
    expected = write_quirk_fixture(tmp_path / "in", padding)
    assert [user for user, _, _ in expected["train"]] == ["train_0", "train_2", "train_5", "train_7"]
    assert [user for user, _, _ in expected["test"]] == ["test_1", "test_2"]

    split_rows = read_split(tmp_path / "in" / "train_data.df", "train", N_ITEMS)
    assert isinstance(split_rows, SplitRows)
    assert [tuple(example) for example in split_rows.examples] == expected["train"]
    assert split_rows.dropped == {CLAMPED: 3, NO_HISTORY: 1}
    assert list(split_rows.dropped) == [CLAMPED, NO_HISTORY]
    assert split_rows.n_rows == len(QUIRK_TRAIN)
    assert read_split(tmp_path / "in" / "val_data.df", "valid", N_ITEMS).dropped == {}

    with caplog.at_level("WARNING", logger="recbole_llmkd"):
        dataset_dir = convert_dllm2rec(tmp_path / "in", tmp_path / "out", "toy")
    assert dataset_dir == tmp_path / "out" / "toy"
    for split in ("train", "valid", "test"):
        assert read_lines(dataset_dir / f"toy.{split}.inter") == expected_inter_lines(expected[split])

    report = read_conversion_report(dataset_dir)
    assert report["n_items"] == N_ITEMS
    assert report["splits"] == {
        "train": {"file": "train_data.df", "rows_read": 8, "rows_written": 4, "dropped": {CLAMPED: 3, NO_HISTORY: 1}},
        "valid": {"file": "val_data.df", "rows_read": 12, "rows_written": 12, "dropped": {}},
        "test": {"file": "test_data.df", "rows_read": 4, "rows_written": 2, "dropped": {CLAMPED: 2}},
    }
    warnings = [record.getMessage() for record in caplog.records if record.levelname == "WARNING"]
    assert warnings == [
        f"{tmp_path / 'in' / 'train_data.df'}: train: dropped 4 of 8 rows: 3 {CLAMPED}; 1 {NO_HISTORY}",
        f"{tmp_path / 'in' / 'test_data.df'}: test: dropped 2 of 4 rows: 2 {CLAMPED}",
    ]


def test_cli_prints_dropped_rows_per_split(tmp_path, capsys):
    write_quirk_fixture(tmp_path / "in", "left")
    assert main(["--input", str(tmp_path / "in"), "--output", str(tmp_path / "out"), "--name", "toy"]) == 0
    printed = capsys.readouterr().out.splitlines()
    dataset_dir = tmp_path / "out" / "toy"
    assert printed == [
        f"{dataset_dir / 'toy.train.inter'}\t4 rows",
        f"{dataset_dir / 'toy.valid.inter'}\t12 rows",
        f"{dataset_dir / 'toy.test.inter'}\t2 rows",
        f"{dataset_dir / 'toy.item'}\t{N_ITEMS} items with titles",
        "longest history: 10 items (MAX_ITEM_LIST_LENGTH must be at least this)",
        "train: dropped 4 of 8 rows: 3 all-padding seq with len_seq 1 (length clamped to 1 by the writer); "
        "1 len_seq 0 (no history)",
        "valid: dropped 0 of 12 rows",
        "test: dropped 2 of 4 rows: 2 all-padding seq with len_seq 1 (length clamped to 1 by the writer)",
    ]


# ---------------------------------------------------------------------------------------------
# loading the converted files with RecBole
# ---------------------------------------------------------------------------------------------


def build_recbole_data(monkeypatch, tmp_path, data_path, name):
    from recbole.config import Config
    from recbole.data import create_dataset, data_preparation

    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "argv", ["pytest"])
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")  # Config overwrites it; monkeypatch restores it
    config = Config(
        model="SASRec",
        dataset=name,
        config_file_list=[str(PROTOCOL_YAML)],
        config_dict={
            "data_path": str(data_path),
            "gpu_id": "",
            "show_progress": False,
            "shuffle": False,
            "train_batch_size": 512,
            "eval_batch_size": 512,
        },
    )
    dataset = create_dataset(config)
    train_data, valid_data, test_data = data_preparation(config, dataset)
    return config, dataset, train_data, valid_data, test_data


def test_converted_files_load_in_recbole_with_the_protocol_yaml(tmp_path, monkeypatch):
    expected = write_fixture(tmp_path / "in", padding="left", user_column="uid", seed=7)
    convert_dllm2rec(tmp_path / "in", tmp_path / "out", "toy")
    config, dataset, train_data, valid_data, test_data = build_recbole_data(monkeypatch, tmp_path, tmp_path / "out", "toy")

    assert config["data_path"] == str(tmp_path / "out" / "toy")
    assert config["eval_args"]["order"] == "TO"
    assert config["eval_args"]["mode"] == {"valid": "full", "test": "full"}
    assert config["item_text_field"] == "title"
    assert len(train_data._dataset) == SPLIT_ROWS["train"]
    assert len(valid_data._dataset) == SPLIT_ROWS["valid"]
    assert len(test_data._dataset) == SPLIT_ROWS["test"]
    # the history shares item_id's vocabulary (alias_of_item_id): every raw item id is one token
    all_items = {item for rows in expected.values() for _, history, target in rows for item in history + [target]}
    assert dataset.item_num == len(all_items) + 1

    train_batch = next(iter(train_data))  # not shuffled, one batch: rows in file order
    item_tokens = dataset.field2id_token["item_id"]  # [n_items] raw tokens by internal id
    for row, (user, history, target) in enumerate(expected["train"]):
        length = int(train_batch["item_length"][row])
        assert length == len(history)
        internal_history = train_batch["item_id_list"][row, :length].tolist()  # [len] internal ids
        assert internal_history == dataset.token2id("item_id", [str(item) for item in history]).tolist()
        assert [item_tokens[item] for item in internal_history] == [str(item) for item in history]
        assert train_batch["item_id_list"][row, length:].eq(0).all()  # right-padded with [PAD]
        assert item_tokens[int(train_batch["item_id"][row])] == str(target)
        assert dataset.field2id_token["user_id"][int(train_batch["user_id"][row])] == user

    test_batch = next(iter(test_data))[0]  # full-sort loader: (interaction, history, pos_u, pos_i)
    user, history, target = expected["test"][3]
    length = int(test_batch["item_length"][3])
    assert [item_tokens[item] for item in test_batch["item_id_list"][3, :length].tolist()] == [str(i) for i in history]
    assert item_tokens[int(test_batch["item_id"][3])] == str(target)


# ---------------------------------------------------------------------------------------------
# command line
# ---------------------------------------------------------------------------------------------


def test_cli_prints_written_files_and_row_counts(tmp_path, capsys):
    write_fixture(tmp_path / "in")
    assert main(["--input", str(tmp_path / "in"), "--output", str(tmp_path / "out"), "--name", "toy"]) == 0
    printed = capsys.readouterr().out.splitlines()
    dataset_dir = tmp_path / "out" / "toy"
    assert printed[0] == f"{dataset_dir / 'toy.train.inter'}\t36 rows"
    assert printed[1] == f"{dataset_dir / 'toy.valid.inter'}\t12 rows"
    assert printed[2] == f"{dataset_dir / 'toy.test.inter'}\t12 rows"
    assert printed[3] == f"{dataset_dir / 'toy.item'}\t{N_ITEMS} items with titles"
    assert printed[4].startswith("longest history: 10 items")
    assert printed[5:] == ["train: dropped 0 of 36 rows", "valid: dropped 0 of 12 rows", "test: dropped 0 of 12 rows"]


def test_cli_reports_bad_input_and_exits_2(tmp_path, capsys):
    write_fixture(tmp_path / "in")
    (tmp_path / "in" / "test_data.df").unlink()
    status = main(["--input", str(tmp_path / "in"), "--output", str(tmp_path / "out"), "--name", "toy", "--n-items", "30"])
    assert status == 2
    assert capsys.readouterr().err.splitlines() == [
        f"python -m recbole_llmkd.data.convert: error: {tmp_path / 'in'}: missing the test split file (test_data.df)"
    ]


# ---------------------------------------------------------------------------------------------
# bad input
# ---------------------------------------------------------------------------------------------


def write_split(input_dir, split_file, frame):
    frame.to_pickle(input_dir / split_file)


def test_missing_split_file(tmp_path):
    write_fixture(tmp_path / "in")
    (tmp_path / "in" / "val_data.df").unlink()
    with pytest.raises(ConversionError, match=r"missing the valid split file \(val_data\.df or valid_data\.df\)"):
        convert_dllm2rec(tmp_path / "in", tmp_path / "out", "toy")


def test_two_candidate_valid_files_are_ambiguous(tmp_path):
    write_fixture(tmp_path / "in")
    (tmp_path / "in" / "valid_data.df").write_bytes((tmp_path / "in" / "val_data.df").read_bytes())
    with pytest.raises(ValueError, match=r"several files.*val_data\.df.*valid_data\.df"):
        convert_dllm2rec(tmp_path / "in", tmp_path / "out", "toy")


def test_missing_columns_lists_present_columns(tmp_path):
    write_fixture(tmp_path / "in")
    write_split(tmp_path / "in", "train_data.df", pd.DataFrame({"seq": [[1, 30]], "len_seq": [1], "target": [2]}))
    with pytest.raises(ValueError, match=r"train_data\.df: missing column\(s\) \['next'\].*present: \['seq', 'len_seq', 'target'\]"):
        convert_dllm2rec(tmp_path / "in", tmp_path / "out", "toy")


def test_seq_id_out_of_range_names_row_value_and_n_items(tmp_path):
    write_fixture(tmp_path / "in")
    frame = pd.DataFrame({"seq": [[1, 2, 30], [3, 4, 30], [5, 33, 30]], "len_seq": [2, 2, 2], "next": [1, 2, 3]})
    write_split(tmp_path / "in", "test_data.df", frame)
    with pytest.raises(ValueError, match=r"test_data\.df row 2: seq holds item id 33, out of range.*n_items=30"):
        convert_dllm2rec(tmp_path / "in", tmp_path / "out", "toy")


def test_negative_seq_id_is_out_of_range(tmp_path):
    write_fixture(tmp_path / "in")
    write_split(tmp_path / "in", "test_data.df", pd.DataFrame({"seq": [[-1, 2, 30]], "len_seq": [2], "next": [1]}))
    with pytest.raises(ValueError, match=r"row 0: seq holds item id -1, out of range"):
        convert_dllm2rec(tmp_path / "in", tmp_path / "out", "toy")


def test_target_equal_to_pad_is_out_of_range(tmp_path):
    write_fixture(tmp_path / "in")
    write_split(tmp_path / "in", "val_data.df", pd.DataFrame({"seq": [[1, 2, 30], [1, 30, 30]], "len_seq": [2, 1], "next": [1, 30]}))
    with pytest.raises(ValueError, match=r"val_data\.df row 1: next is item id 30, out of range \[0, 30\) \(n_items=30\)"):
        convert_dllm2rec(tmp_path / "in", tmp_path / "out", "toy")


@pytest.mark.parametrize(
    "seq, len_seq, message",
    [
        ([1, 2, 3, 30], 2, r"len_seq is 2 but seq holds 3 items that are not the pad value 30"),
        ([1, 30, 2, 30], 2, r"the pad value 30 is neither all on the left nor all on the right"),
        ([1, 2, 30, 30], 5, r"len_seq is 5, expected an integer in \[0, 4\]"),
        ([30, 30, 30, 30], 2, r"len_seq is 2 but seq holds 0 items that are not the pad value 30"),
        ([1, 30, 30, 30], 0, r"len_seq is 0 but seq holds 1 items that are not the pad value 30"),
        ([1, 2, 30, 30], "2", r"len_seq is '2', expected an integer"),
    ],
)
def test_len_seq_inconsistent_with_padding(tmp_path, seq, len_seq, message):
    write_fixture(tmp_path / "in")
    write_split(tmp_path / "in", "train_data.df", pd.DataFrame({"seq": [[1, 2, 3, 4], seq], "len_seq": [4, len_seq], "next": [1, 2]}))
    with pytest.raises(ValueError, match=r"train_data\.df row 1: " + message):
        convert_dllm2rec(tmp_path / "in", tmp_path / "out", "toy")


def test_all_padding_rows_are_still_checked_before_being_dropped(tmp_path):
    """An empty-history row is dropped only when it is otherwise valid: its ids and next are checked."""
    write_fixture(tmp_path / "in")
    frame = pd.DataFrame({"seq": [[1, 2, 30], [30, 30, 30]], "len_seq": [2, 1], "next": [1, 30]})
    write_split(tmp_path / "in", "train_data.df", frame)
    with pytest.raises(ValueError, match=r"train_data\.df row 1: next is item id 30, out of range"):
        convert_dllm2rec(tmp_path / "in", tmp_path / "out", "toy")
    frame = pd.DataFrame({"seq": [[1, 2, 30], [30, 31, 30]], "len_seq": [2, 0], "next": [1, 2]})
    write_split(tmp_path / "in", "train_data.df", frame)
    with pytest.raises(ValueError, match=r"train_data\.df row 1: seq holds item id 31, out of range"):
        convert_dllm2rec(tmp_path / "in", tmp_path / "out", "toy")


def test_split_whose_every_row_is_empty_is_an_error(tmp_path):
    write_fixture(tmp_path / "in")
    frame = pd.DataFrame({"seq": [[30, 30, 30], [30, 30, 30], [30, 30, 30]], "len_seq": [1, 0, 1], "next": [1, 2, 3]})
    write_split(tmp_path / "in", "val_data.df", frame)
    with pytest.raises(ConversionError) as error_info:
        convert_dllm2rec(tmp_path / "in", tmp_path / "out", "toy")
    assert str(error_info.value) == (
        f"{tmp_path / 'in' / 'val_data.df'}: every row of the valid split has an empty history, "
        "nothing is left to convert (valid: dropped 3 of 3 rows: "
        "2 all-padding seq with len_seq 1 (length clamped to 1 by the writer); 1 len_seq 0 (no history))"
    )
    assert not (tmp_path / "out").exists()  # nothing written


def test_mixed_left_and_right_padding_in_one_file(tmp_path):
    write_fixture(tmp_path / "in")
    frame = pd.DataFrame({"seq": [[1, 2, 30], [1, 2, 3], [30, 4, 5]], "len_seq": [2, 3, 2], "next": [1, 2, 3]})
    write_split(tmp_path / "in", "train_data.df", frame)
    with pytest.raises(ValueError, match=r"row 2: this row is left-padded but earlier rows of the file are right-padded"):
        convert_dllm2rec(tmp_path / "in", tmp_path / "out", "toy")


def test_non_id_values_in_seq(tmp_path):
    write_fixture(tmp_path / "in")
    write_split(tmp_path / "in", "train_data.df", pd.DataFrame({"seq": [[1, "x", 30]], "len_seq": [2], "next": [1]}))
    with pytest.raises(ValueError, match=r"row 0: seq holds 'x', which is not an item id"):
        convert_dllm2rec(tmp_path / "in", tmp_path / "out", "toy")


def test_empty_split(tmp_path):
    write_fixture(tmp_path / "in")
    write_split(tmp_path / "in", "test_data.df", pd.DataFrame({"seq": [], "len_seq": [], "next": []}))
    with pytest.raises(ValueError, match=r"test_data\.df: the test split is empty"):
        convert_dllm2rec(tmp_path / "in", tmp_path / "out", "toy")


def test_split_file_that_is_not_a_dataframe(tmp_path):
    write_fixture(tmp_path / "in")
    pd.to_pickle({"seq": [[1]]}, tmp_path / "in" / "train_data.df")
    with pytest.raises(ValueError, match=r"train_data\.df: expected a pickled pandas DataFrame, got dict"):
        convert_dllm2rec(tmp_path / "in", tmp_path / "out", "toy")


def test_id2name_line_in_neither_format_names_file_and_line(tmp_path):
    write_fixture(tmp_path / "in")
    (tmp_path / "in" / "id2name.txt").write_text("0::A\n1::B\nC without id\n", encoding="utf-8")
    with pytest.raises(ValueError, match=r"id2name\.txt:3: 'C without id' parses as neither"):
        convert_dllm2rec(tmp_path / "in", tmp_path / "out", "toy")


def test_id2name_mixed_formats_and_duplicates(tmp_path):
    path = tmp_path / "id2name.txt"
    path.write_text("0::A\nB\t1\n", encoding="utf-8")
    with pytest.raises(ValueError, match=r"id2name\.txt:2: the line is in the bigrec.*line 1 set the file's format to llara"):
        read_id2name(path)
    path.write_text("0::A\n0::B\n", encoding="utf-8")
    with pytest.raises(ValueError, match=r"id2name\.txt:2: item id 0 appears twice \(first at line 1\)"):
        read_id2name(path)


def test_one_based_id2name_is_out_of_range_when_n_items_is_inferred(tmp_path):
    write_fixture(tmp_path / "in")
    (tmp_path / "in" / "id2name.txt").write_text("".join(f"{i}::Item {i}\n" for i in range(1, 31)), encoding="utf-8")
    with pytest.raises(ValueError, match=r"id2name\.txt: item id 30 out of range \[0, 30\).*pass n_items"):
        convert_dllm2rec(tmp_path / "in", tmp_path / "out", "toy")


def test_bad_name_and_missing_input_folder(tmp_path):
    write_fixture(tmp_path / "in")
    with pytest.raises(ValueError, match=r"'ml-100k' is reserved"):
        convert_dllm2rec(tmp_path / "in", tmp_path / "out", "ml-100k")
    with pytest.raises(ValueError, match=r"plain folder name"):
        convert_dllm2rec(tmp_path / "in", tmp_path / "out", "a/b")
    with pytest.raises(ValueError, match=r"input folder not found: .*nowhere"):
        convert_dllm2rec(tmp_path / "nowhere", tmp_path / "out", "toy")
