"""DLLM2Rec / BIGRec / LLaRA-style splits -> RecBole atomic benchmark files.

Input folder (the layout in which the published LLM recommenders' data circulates)::

    train_data.df                 pandas pickles, one per split, columns
    val_data.df | valid_data.df     seq      fixed-length list of item ids, padded with n_items
    test_data.df                    len_seq  number of real items in seq
                                    next     target item id
                                    [user | uid | user_id]  optional user column
    id2name.txt                   one item per line: "id::name" (LLaRA) or "name<TAB>id" (BIGRec)

Item ids are 0-based; the original id is kept as the raw RecBole token (``"17"``), so teacher
outputs keyed by those ids stay valid. LLaRA stores items as ``(id, rating)`` pairs; the first
element is taken as the id. File names are matched case-insensitively (LLaRA ships
``Val_data.df``, ``Test_data.df``).

Output folder ``<output_dir>/<name>/``::

    <name>.train.inter, <name>.valid.inter, <name>.test.inter
        user_id:token  item_id_list:token_seq  item_id:token      (history oldest first)
    <name>.item
        item_id:token  title:token_seq
    conversion.json
        per split: input file, rows read, rows written, rows dropped by reason (see below)

Load it with ``properties/dllm2rec_protocol.yaml`` (``benchmark_filename: [train, valid, test]``).
Only convert pickles you trust: ``pd.read_pickle`` can run arbitrary code.

Empty-history rows are dropped, not converted: a row whose ``seq`` is all padding (no real item)
gives a sequential model nothing to read. Two forms are accepted, counted per split and reason
(logged as a warning, written to ``conversion.json`` and printed by the CLI)::

    len_seq 1   "all-padding seq with len_seq 1 (length clamped to 1 by the writer)": the splits
                as they circulate; the code that wrote them clamps the length to at least 1
    len_seq 0   "len_seq 0 (no history)": an honest empty row

The kept rows keep their file order (and, without a user column, their ``<split>_<row>`` token of
the original row position). Every other inconsistency (an all-padding ``seq`` with ``len_seq`` 2,
``len_seq`` not the number of non-pad items, mixed padding, out-of-range ids, ...) is an error, and
so is a split in which every row is dropped.

CLI::

    python -m recbole_llmkd.jobs.convert --input DIR --output DIR --name NAME [--n-items N]
    run_recbole_llmkd.py convert --input DIR --output DIR --name NAME [--n-items N]      (the same)

prints each written file with its row count, the longest history, then one line per split such as
``train: dropped 3 of 40 rows: 3 all-padding seq with len_seq 1 (length clamped to 1 by the writer)``
(``valid: dropped 0 of 12 rows`` when none).
"""
from __future__ import annotations

import csv
import json
import logging
import numbers
import os
import pickle
import sys
from pathlib import Path
from typing import Any, NamedTuple, Sequence

import pandas as pd

from recbole_llmkd.errors import RecboleLLMKDError

logger = logging.getLogger("recbole_llmkd")

SPLIT_FILE_CANDIDATES = {
    "train": ("train_data.df",),
    "valid": ("val_data.df", "valid_data.df"),
    "test": ("test_data.df",),
}
"""Split name in the output -> accepted input file names (matched case-insensitively)."""

ID2NAME_FILE = "id2name.txt"
CONVERSION_REPORT_FILE = "conversion.json"
"""Written into the dataset folder: per split, the input file and the rows read, written, dropped."""
REQUIRED_COLUMNS = ("seq", "len_seq", "next")
USER_COLUMN_CANDIDATES = ("user", "uid", "user_id")
INTER_HEADER = ("user_id:token", "item_id_list:token_seq", "item_id:token")
ITEM_HEADER = ("item_id:token", "title:token_seq")


class ConversionError(RecboleLLMKDError, ValueError):
    """The input folder cannot be converted; the message names the file and the problem."""


class SequenceExample(NamedTuple):
    """One converted row: raw user token, real history items (oldest first), target item."""

    user: str
    history: list[int]
    target: int


DROPPED_CLAMPED_EMPTY = "all-padding seq with len_seq 1 (length clamped to 1 by the writer)"
DROPPED_NO_HISTORY = "len_seq 0 (no history)"
DROP_REASONS = (DROPPED_CLAMPED_EMPTY, DROPPED_NO_HISTORY)
"""Why :func:`read_split` drops a row, in the order the counts are listed."""


class SplitRows(NamedTuple):
    """What :func:`read_split` read from one split file.

    Attributes:
        examples: the kept rows, in file order.
        dropped: ``{reason: number of rows}`` for the rows dropped, reasons from
            :data:`DROP_REASONS` in that order, only those that occurred (``{}`` when none).
    """

    examples: list[SequenceExample]
    dropped: dict[str, int]

    @property
    def n_rows(self) -> int:
        """Rows in the file: kept plus dropped."""
        return len(self.examples) + sum(self.dropped.values())


def describe_dropped(split: str, n_rows: int, dropped: dict[str, int]) -> str:
    """``"train: dropped 3 of 40 rows: 3 <reason>; ..."``, or ``"train: dropped 0 of 40 rows"``."""
    line = f"{split}: dropped {sum(dropped.values())} of {n_rows} rows"
    if dropped:
        line += ": " + "; ".join(f"{count} {reason}" for reason, count in dropped.items())
    return line


# ---------------------------------------------------------------------------------------------
# id2name.txt
# ---------------------------------------------------------------------------------------------


def _parse_int(text: str) -> int | None:
    """``"17"`` -> 17; anything that is not a (signed) decimal integer -> ``None``."""
    text = text.strip()
    if text.lstrip("-").isdigit():
        return int(text)
    return None


def _parse_llara_line(line: str) -> tuple[int, str] | None:
    """``"17::Toy Story"`` -> ``(17, "Toy Story")``; ``None`` if the line is not in that format."""
    id_text, separator, name = line.partition("::")
    item_id = _parse_int(id_text) if separator else None
    return None if item_id is None else (item_id, name.strip())


def _parse_bigrec_line(line: str) -> tuple[int, str] | None:
    """``"Toy Story\\t17"`` -> ``(17, "Toy Story")``; ``None`` if the line is not in that format."""
    name, separator, id_text = line.rpartition("\t")
    item_id = _parse_int(id_text) if separator else None
    return None if item_id is None else (item_id, name.strip())


ID2NAME_FORMATS = {"llara (id::name)": _parse_llara_line, "bigrec (name<TAB>id)": _parse_bigrec_line}


def read_id2name(path: str | Path) -> dict[int, str]:
    """Read an ``id2name.txt`` in either format, detected once per file.

    Each non-blank line is ``id::name`` (LLaRA) or ``name<TAB>id`` (BIGRec). The file's format is
    the one its first line that parses as exactly one format has; every line must parse in it.

    Returns:
        ``{item id: name}`` (names stripped; they may be empty).

    Raises:
        ConversionError: a line parses as neither format (``file:line``), lines mix formats, or an
            id appears twice.
    """
    path = Path(path)
    with open(path, "r", encoding="utf-8") as handle:
        lines = [line.rstrip("\r\n") for line in handle]

    parsed_lines = []  # [(line_number, {format_name: (id, name)})]
    for line_number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        parses = {}
        for format_name, parse in ID2NAME_FORMATS.items():
            parsed = parse(line)
            if parsed is not None:
                parses[format_name] = parsed
        if not parses:
            raise ConversionError(
                f"{path}:{line_number}: {line!r} parses as neither 'id::name' (LLaRA) nor 'name<TAB>id' (BIGRec)"
            )
        parsed_lines.append((line_number, parses))

    file_format, format_line = None, None
    for line_number, parses in parsed_lines:
        if len(parses) == 1:
            file_format, format_line = next(iter(parses)), line_number
            break
    if file_format is None:
        file_format = next(iter(ID2NAME_FORMATS))  # every line is ambiguous: take LLaRA

    id2name: dict[int, str] = {}
    first_line_of_id: dict[int, int] = {}
    for line_number, parses in parsed_lines:
        if file_format not in parses:
            raise ConversionError(
                f"{path}:{line_number}: the line is in the {next(iter(parses))} format, "
                f"but line {format_line} set the file's format to {file_format}"
            )
        item_id, name = parses[file_format]
        if item_id in first_line_of_id:
            raise ConversionError(
                f"{path}:{line_number}: item id {item_id} appears twice (first at line {first_line_of_id[item_id]})"
            )
        first_line_of_id[item_id] = line_number
        id2name[item_id] = name
    return id2name


# ---------------------------------------------------------------------------------------------
# split pickles
# ---------------------------------------------------------------------------------------------


def _find_file(input_dir: Path, candidates: Sequence[str]) -> Path | None:
    """The one file in ``input_dir`` whose name matches a candidate case-insensitively, else ``None``."""
    wanted = {candidate.lower() for candidate in candidates}
    matches = sorted(entry for entry in input_dir.iterdir() if entry.is_file() and entry.name.lower() in wanted)
    if len(matches) > 1:
        raise ConversionError(
            f"{input_dir}: several files could be the same input: {[match.name for match in matches]}; keep one"
        )
    return matches[0] if matches else None


def _as_int(value: Any) -> int | None:
    """``int`` from an integer (Python or numpy) or an integral float; ``None`` otherwise."""
    if isinstance(value, bool):
        return None
    if isinstance(value, numbers.Integral):
        return int(value)
    if isinstance(value, numbers.Real) and float(value).is_integer():
        return int(value)
    return None


def _as_item_id(value: Any) -> int | None:
    """An item id from an int-like value or a LLaRA ``(id, rating)`` pair; ``None`` if neither."""
    if isinstance(value, (tuple, list)) and len(value) >= 1:
        value = value[0]
    return _as_int(value)


def _real_items(
    item_ids: list[int], len_seq: int, pad_id: int, padding_side: str | None, where: str
) -> tuple[list[int], str | None]:
    """Keep the ``len_seq`` real items of one padded row, in order, and tell the padding side.

    A row of length L with k = ``len_seq`` real items is

        right padded:  items[:k] real, items[k:] == pad_id
        left padded:   items[:L-k] == pad_id, items[L-k:] real

    Both hold when k == L (or k == 0); then the side stays undecided (``None``).

    Args:
        item_ids: the row's ids, already range-checked (real ids in [0, pad_id), pads == pad_id).
        len_seq: number of real items.
        pad_id: padding value (n_items).
        padding_side: the side seen so far in this file, or ``None``.
        where: ``"<file> row <r>"`` for error messages.

    Returns:
        (real items oldest first, the padding side now known or ``None``).
    """
    seq_len = len(item_ids)
    n_real = sum(1 for item_id in item_ids if item_id != pad_id)
    if n_real != len_seq:
        raise ConversionError(
            f"{where}: len_seq is {len_seq} but seq holds {n_real} items that are not the pad value {pad_id} "
            f"(seq={item_ids})"
        )
    is_pad = [item_id == pad_id for item_id in item_ids]
    right_padded = not any(is_pad[:len_seq]) and all(is_pad[len_seq:])
    left_padded = all(is_pad[: seq_len - len_seq]) and not any(is_pad[seq_len - len_seq :])
    if not right_padded and not left_padded:
        raise ConversionError(
            f"{where}: the pad value {pad_id} is neither all on the left nor all on the right of the "
            f"{len_seq} real items (seq={item_ids})"
        )
    if right_padded and left_padded:
        row_side = None
    else:
        row_side = "right" if right_padded else "left"
    if row_side is not None and padding_side is not None and row_side != padding_side:
        raise ConversionError(
            f"{where}: this row is {row_side}-padded but earlier rows of the file are {padding_side}-padded "
            f"(seq={item_ids}, len_seq={len_seq})"
        )
    real_items = item_ids[:len_seq] if right_padded else item_ids[seq_len - len_seq :]
    return real_items, padding_side if row_side is None else row_side


def read_split(path: str | Path, split: str, n_items: int) -> SplitRows:
    """Read one split pickle into examples with the padding removed, dropping empty-history rows.

    A row whose ``seq`` holds no real item (every entry is the pad value) is dropped when its
    ``len_seq`` is 1 (:data:`DROPPED_CLAMPED_EMPTY`, the writer clamped the length to at least 1)
    or 0 (:data:`DROPPED_NO_HISTORY`); its ids and ``next`` are still checked like any other row's.

    Args:
        path: the pickled DataFrame (``seq``, ``len_seq``, ``next``, optional user column).
        split: the split's name, used for user tokens when the file has no user column
            (``"<split>_<row position>"``, e.g. ``train_17``).
        n_items: number of items; real ids are in ``[0, n_items)`` and ``n_items`` is the pad value.

    Returns:
        :class:`SplitRows`: ``examples``, one :class:`SequenceExample` per kept row, in file order,
        with 1 <= len(history) <= L (without a user column, the user token keeps the original row
        position); ``dropped``, ``{reason: count}`` of the dropped rows (``{}`` when none).

    Raises:
        ConversionError: not a DataFrame, missing columns (lists those present), an empty split,
            a value that is not an item id, an id out of range (first bad row, value, n_items),
            ``len_seq`` inconsistent with the padding (an all-padding ``seq`` with ``len_seq``
            other than 0 or 1 included), or a split whose every row is dropped (with the counts).
    """
    path = Path(path)
    try:
        frame = pd.read_pickle(path)
    except (pickle.UnpicklingError, EOFError) as error:
        raise ConversionError(f"{path}: not a readable pandas pickle ({error})") from error
    if not isinstance(frame, pd.DataFrame):
        raise ConversionError(f"{path}: expected a pickled pandas DataFrame, got {type(frame).__name__}")
    missing_columns = [column for column in REQUIRED_COLUMNS if column not in frame.columns]
    if missing_columns:
        raise ConversionError(
            f"{path}: missing column(s) {missing_columns}; expected {list(REQUIRED_COLUMNS)} "
            f"(+ optional user column {list(USER_COLUMN_CANDIDATES)}), present: {[str(c) for c in frame.columns]}"
        )
    if len(frame) == 0:
        raise ConversionError(f"{path}: the {split} split is empty (0 rows)")

    user_column = next((column for column in USER_COLUMN_CANDIDATES if column in frame.columns), None)
    if user_column is None:
        logger.info(
            "%s: no user column (%s); users are named '%s_<row>' by row position",
            path, "/".join(USER_COLUMN_CANDIDATES), split,
        )

    pad_id = n_items
    padding_side = None
    examples = []
    drop_counts = dict.fromkeys(DROP_REASONS, 0)
    for row_position, (seq, len_seq, target, user) in enumerate(
        zip(
            frame["seq"],
            frame["len_seq"],
            frame["next"],
            frame[user_column] if user_column is not None else [None] * len(frame),
        )
    ):
        where = f"{path} row {row_position}"
        if isinstance(seq, (str, bytes)) or not hasattr(seq, "__len__"):
            raise ConversionError(f"{where}: seq must be a list of item ids, got {type(seq).__name__} {seq!r}")
        item_ids = []
        for value in seq:
            item_id = _as_item_id(value)
            if item_id is None:
                raise ConversionError(f"{where}: seq holds {value!r}, which is not an item id")
            if not 0 <= item_id <= pad_id:
                raise ConversionError(
                    f"{where}: seq holds item id {item_id}, out of range: ids must be in [0, {n_items}) "
                    f"with {n_items} as padding (n_items={n_items})"
                )
            item_ids.append(item_id)

        target_id = _as_item_id(target)
        if target_id is None:
            raise ConversionError(f"{where}: next is {target!r}, which is not an item id")
        if not 0 <= target_id < n_items:
            raise ConversionError(
                f"{where}: next is item id {target_id}, out of range [0, {n_items}) (n_items={n_items})"
            )

        n_real = _as_int(len_seq)
        if n_real is None or not 0 <= n_real <= len(item_ids):
            raise ConversionError(f"{where}: len_seq is {len_seq!r}, expected an integer in [0, {len(item_ids)}]")
        if n_real in (0, 1) and all(item_id == pad_id for item_id in item_ids):
            drop_counts[DROPPED_NO_HISTORY if n_real == 0 else DROPPED_CLAMPED_EMPTY] += 1
            continue
        history, padding_side = _real_items(item_ids, n_real, pad_id, padding_side, where)

        user_token = f"{split}_{row_position}" if user_column is None else str(user)
        examples.append(SequenceExample(user=user_token, history=history, target=target_id))

    dropped = {reason: count for reason, count in drop_counts.items() if count}
    if not examples:
        raise ConversionError(
            f"{path}: every row of the {split} split has an empty history, nothing is left to convert "
            f"({describe_dropped(split, len(frame), dropped)})"
        )
    logger.info("%s: %d rows kept, %s padding", path, len(examples), padding_side or "no")
    return SplitRows(examples=examples, dropped=dropped)


# ---------------------------------------------------------------------------------------------
# writing
# ---------------------------------------------------------------------------------------------


def _clean_title(name: str) -> str:
    """Tabs, carriage returns and newlines -> spaces, so that a title stays one atomic field."""
    return name.replace("\t", " ").replace("\r", " ").replace("\n", " ")


def _write_rows(path: Path, header: Sequence[str], rows: list[Sequence[str]]) -> None:
    """Tab-separated, ``\\n``-terminated (RecBole drops the header's last character), ``"`` quoting
    as pandas reads it back."""
    with open(path, "w", encoding="utf-8", newline="") as handle:
        writer = csv.writer(handle, delimiter="\t", lineterminator="\n", quoting=csv.QUOTE_MINIMAL)
        writer.writerow(header)
        writer.writerows(rows)


def convert_dllm2rec(
    input_dir: str | Path,
    output_dir: str | Path,
    name: str,
    n_items: int | None = None,
) -> Path:
    """Convert a DLLM2Rec/BIGRec/LLaRA data folder into RecBole atomic benchmark files.

    Writes ``<output_dir>/<name>/<name>.{train,valid,test}.inter``, ``<name>.item`` and
    ``conversion.json`` (see the module docstring for the formats) and returns ``<output_dir>/<name>``.
    Empty-history rows are dropped (see :func:`read_split`); the counts per split and reason are
    logged as a warning and written to ``conversion.json`` (read it with :func:`read_conversion_report`).

    Args:
        input_dir: folder with ``train_data.df``, ``val_data.df`` (or ``valid_data.df``),
            ``test_data.df`` and ``id2name.txt``.
        output_dir: parent folder of the dataset folder (RecBole's ``data_path``).
        name: dataset name (RecBole's ``dataset``).
        n_items: number of items (the padding value); inferred as the number of names in
            ``id2name.txt`` when ``None``. ``id2name.txt`` may be absent only when it is given.

    Raises:
        ConversionError (a ValueError): any bad input; the message names the file and the problem.
    """
    input_dir = Path(input_dir)
    output_dir = Path(output_dir)
    if not input_dir.is_dir():
        raise ConversionError(f"input folder not found: {input_dir}")
    if not name or name in (".", "..") or "/" in name or os.sep in name:
        raise ConversionError(f"dataset name {name!r} must be a plain folder name")
    if name == "ml-100k":
        raise ConversionError(
            "dataset name 'ml-100k' is reserved: RecBole 1.2.1 always loads it from its own package, "
            "ignoring data_path; choose another name"
        )

    id2name_path = _find_file(input_dir, (ID2NAME_FILE,))
    if id2name_path is None:
        if n_items is None:
            raise ConversionError(
                f"{input_dir / ID2NAME_FILE}: not found; it is needed to infer n_items (or pass n_items)"
            )
        logger.warning("%s: not found; %s.item will list no titles", input_dir / ID2NAME_FILE, name)
        id2name: dict[int, str] = {}
    else:
        id2name = read_id2name(id2name_path)

    if n_items is None:
        n_items = len(id2name)
        if n_items == 0:
            raise ConversionError(f"{id2name_path}: no items listed, cannot infer n_items")
    if isinstance(n_items, bool) or not isinstance(n_items, numbers.Integral) or n_items <= 0:
        raise ConversionError(f"n_items must be a positive integer, got {n_items!r}")
    out_of_range_ids = sorted(item_id for item_id in id2name if not 0 <= item_id < n_items)
    if out_of_range_ids:
        raise ConversionError(
            f"{id2name_path}: item id {out_of_range_ids[0]} out of range [0, {n_items}) (n_items={n_items}); "
            f"ids must be 0-based; when the names do not cover every id, pass n_items explicitly"
        )

    split_paths = {}
    for split, candidates in SPLIT_FILE_CANDIDATES.items():
        split_path = _find_file(input_dir, candidates)
        if split_path is None:
            raise ConversionError(f"{input_dir}: missing the {split} split file ({' or '.join(candidates)})")
        split_paths[split] = split_path
    rows_by_split = {split: read_split(path, split, n_items) for split, path in split_paths.items()}
    for split, split_rows in rows_by_split.items():
        if split_rows.dropped:
            logger.warning(
                "%s: %s", split_paths[split], describe_dropped(split, split_rows.n_rows, split_rows.dropped)
            )

    dataset_dir = output_dir / name
    dataset_dir.mkdir(parents=True, exist_ok=True)
    for split, split_rows in rows_by_split.items():
        rows = [
            (example.user, " ".join(str(item_id) for item_id in example.history), str(example.target))
            for example in split_rows.examples
        ]
        _write_rows(dataset_dir / f"{name}.{split}.inter", INTER_HEADER, rows)
    item_rows = [(str(item_id), _clean_title(id2name[item_id])) for item_id in sorted(id2name)]
    _write_rows(dataset_dir / f"{name}.item", ITEM_HEADER, item_rows)
    report = {
        "input": str(input_dir),
        "n_items": int(n_items),
        "splits": {
            split: {
                "file": split_paths[split].name,
                "rows_read": split_rows.n_rows,
                "rows_written": len(split_rows.examples),
                "dropped": split_rows.dropped,
            }
            for split, split_rows in rows_by_split.items()
        },
    }
    (dataset_dir / CONVERSION_REPORT_FILE).write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")

    logger.info(
        "converted %s -> %s: %s rows, %d items",
        input_dir, dataset_dir,
        {split: len(split_rows.examples) for split, split_rows in rows_by_split.items()}, n_items,
    )
    return dataset_dir


def read_conversion_report(dataset_dir: str | Path) -> dict[str, Any]:
    """The ``conversion.json`` that :func:`convert_dllm2rec` wrote into ``dataset_dir``::

        {"input": str, "n_items": int,
         "splits": {split: {"file": str, "rows_read": int, "rows_written": int,
                            "dropped": {reason: count}}}}
    """
    with open(Path(dataset_dir) / CONVERSION_REPORT_FILE, "r", encoding="utf-8") as handle:
        return json.load(handle)


# ---------------------------------------------------------------------------------------------
# CLI
# ---------------------------------------------------------------------------------------------


def _read_data_rows(path: Path) -> list[list[str]]:
    """The rows of an atomic file written by :func:`_write_rows`, header excluded."""
    with open(path, "r", encoding="utf-8", newline="") as handle:
        return list(csv.reader(handle, delimiter="\t"))[1:]


def describe_conversion(dataset_dir: str | Path, name: str) -> list[str]:
    """What the CLI prints after a conversion: each written file with its row count, the longest history, then
    :func:`describe_dropped` per split."""
    dataset_dir = Path(dataset_dir)
    lines = []
    max_history = 0
    for split in SPLIT_FILE_CANDIDATES:
        inter_path = dataset_dir / f"{name}.{split}.inter"
        rows = _read_data_rows(inter_path)
        max_history = max([max_history] + [len(row[1].split()) for row in rows])
        lines.append(f"{inter_path}\t{len(rows)} rows")
    item_path = dataset_dir / f"{name}.item"
    lines.append(f"{item_path}\t{len(_read_data_rows(item_path))} items with titles")
    lines.append(f"longest history: {max_history} items (MAX_ITEM_LIST_LENGTH must be at least this)")
    for split, split_report in read_conversion_report(dataset_dir)["splits"].items():
        lines.append(describe_dropped(split, split_report["rows_read"], split_report["dropped"]))
    return lines


CONVERT_PROG = "python -m recbole_llmkd.jobs.convert"


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m recbole_llmkd.jobs.convert --input DIR --output DIR --name NAME [--n-items N] [--debug]``: the
    ``convert`` job of ``recbole_llmkd.cli`` (``run_recbole_llmkd.py convert``).

    A bad input folder is one ``error:`` line and exit status 2 (``recbole_llmkd.errors``).
    """
    from recbole_llmkd.cli import data_job_main

    return data_job_main("convert", argv, CONVERT_PROG)


if __name__ == "__main__":
    sys.exit(main())
