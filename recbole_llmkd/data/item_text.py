"""Item text (titles, artist names) read straight from a RecBole atomic ``.item`` file.

The file is read as text, never through RecBole's loader (``compat.atomic_file_reader`` says why), and the
titles are mapped to RecBole's internal item ids through ``dataset.field2id_token``:

    titles[internal_id] = title of raw item token dataset.field2id_token[item_id][internal_id]
    titles[0]           = ""                      (internal id 0 is [PAD])
    titles[i]           = "item <raw token>"      when the .item file has no text for that item
"""
from __future__ import annotations

import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from recbole_llmkd import compat
from recbole_llmkd.errors import RecboleLLMKDError


class ItemTextError(RecboleLLMKDError, ValueError):
    """The item file cannot give item text (malformed header or row, missing field, no data_path)."""


DEFAULT_TEXT_FIELDS = ("movie_title", "title", "name")
"""Fields tried, in this order, when no text field is named."""

PAD_TEXT = ""
"""Text of internal item id 0 ([PAD])."""


def fallback_item_text(item_token: str) -> str:
    """Text used for an item without a title: ``"item <raw token>"``."""
    return f"item {item_token}"


def _parse_atomic_header(header: list[str], item_file: Path) -> list[str]:
    """``["item_id:token", "movie_title:token_seq"]`` -> ``["item_id", "movie_title"]``."""
    field_names = []
    for column in header:
        field_name, separator, field_type = column.partition(":")
        if not separator or not field_name or not field_type:
            raise ItemTextError(
                f"{item_file}: header column {column!r} is not of the form 'name:type' "
                f"(a RecBole atomic file header looks like 'item_id:token\\ttitle:token_seq')"
            )
        field_names.append(field_name)
    return field_names


def read_item_text(
    item_file: str | Path,
    field: str | None = None,
    *,
    id_field: str = "item_id",
    encoding: str = "utf-8",
) -> dict[str, str]:
    """Read ``raw item token -> text`` from a RecBole atomic ``.item`` file.

    The file is tab separated with a ``name:type`` header, e.g.
    ``item_id:token  movie_title:token_seq  release_year:token  class:token_seq``. Fields are read
    by ``compat.atomic_file_reader`` (tab delimiter, ``"`` quoting as pandas/RecBole read them), never
    split into words. Titles are stripped; empty or whitespace-only titles count as missing and are
    left out of the result.

    Args:
        item_file: path of the ``.item`` file.
        field: the text field; ``None`` picks the first of ``movie_title``, ``title``, ``name``
            present in the header.
        id_field: the item id field (RecBole's ``ITEM_ID_FIELD``).
        encoding: file encoding.

    Returns:
        ``{raw item token: text}`` for every item whose text is not empty.

    Raises:
        FileNotFoundError: the file does not exist.
        ValueError: the header is not an atomic header, the id or text field is missing (the
            message lists the fields present), a row has more columns than the header, or an item
            id appears twice.
    """
    item_file = Path(item_file)
    if not item_file.is_file():
        raise FileNotFoundError(f"item file not found: {item_file}")

    with open(item_file, "r", encoding=encoding, newline="") as handle:
        reader = compat.atomic_file_reader(handle)
        header = next(reader, None)
        if header is None:
            raise ItemTextError(f"{item_file}: the file is empty (expected a 'name:type' header line)")
        field_names = _parse_atomic_header(header, item_file)

        if field is None:
            present_text_fields = [name for name in DEFAULT_TEXT_FIELDS if name in field_names]
            if not present_text_fields:
                raise ItemTextError(
                    f"{item_file}: no text field found; looked for {list(DEFAULT_TEXT_FIELDS)}, "
                    f"fields present: {field_names}. Name the field explicitly (config key item_text_field)."
                )
            field = present_text_fields[0]
        if field not in field_names:
            raise ItemTextError(f"{item_file}: text field {field!r} not found; fields present: {field_names}")
        if id_field not in field_names:
            raise ItemTextError(f"{item_file}: item id field {id_field!r} not found; fields present: {field_names}")
        id_column = field_names.index(id_field)
        text_column = field_names.index(field)

        item_text: dict[str, str] = {}
        first_line_of_token: dict[str, int] = {}
        for row in reader:
            line_number = reader.line_num
            if not row or all(not value.strip() for value in row):
                continue
            if len(row) > len(field_names):
                raise ItemTextError(
                    f"{item_file}:{line_number}: {len(row)} tab-separated columns, "
                    f"but the header names {len(field_names)}"
                )
            item_token = row[id_column].strip() if id_column < len(row) else ""
            if not item_token:
                raise ItemTextError(f"{item_file}:{line_number}: empty item id in field {id_field!r}")
            if item_token in first_line_of_token:
                raise ItemTextError(
                    f"{item_file}:{line_number}: item id {item_token!r} appears twice "
                    f"(first at line {first_line_of_token[item_token]})"
                )
            first_line_of_token[item_token] = line_number

            text = row[text_column].strip() if text_column < len(row) else ""
            if text:
                item_text[item_token] = text
    return item_text


def _config_value(config: Any, key: str) -> Any:
    """``config[key]`` or ``None`` for a RecBole ``Config`` (which returns ``None`` itself) or a mapping."""
    if isinstance(config, Mapping):
        return config.get(key)
    return config[key]


def item_titles_for_dataset(
    dataset: Any,
    config_or_field: Any = None,
    logger: logging.Logger | None = None,
) -> list[str]:
    """Item text indexed by RecBole internal item id, for a built RecBole ``Dataset``.

    Reads ``<config['data_path']>/<config['dataset']>.item`` (in RecBole's final config
    ``data_path`` already is the dataset folder) and returns ``titles`` with

        titles[0] = ""                                          ([PAD])
        titles[i] = text of raw token field2id_token[iid_field][i]
        titles[i] = "item <raw token>"                          when that item has no text

    The number of fallbacks is logged once (WARNING when there are any, INFO otherwise).

    Args:
        dataset: a RecBole ``Dataset`` (uses ``field2id_token``, ``iid_field`` and ``config``).
        config_or_field: ``None`` -> ``dataset.config``; a ``str`` -> that text field, paths from
            ``dataset.config``; otherwise a RecBole ``Config`` or a mapping with ``data_path``,
            ``dataset`` and optionally ``item_text_field`` and ``encoding``. Without an explicit
            field the config key ``item_text_field`` is used, else the first of
            ``movie_title``, ``title``, ``name``.
        logger: where to log; defaults to ``logging.getLogger("recbole_llmkd")``.

    Returns:
        ``list[str]`` of length ``dataset.item_num`` (PAD included).
    """
    if config_or_field is None or isinstance(config_or_field, str):
        config = dataset.config
        field = config_or_field if isinstance(config_or_field, str) else _config_value(config, "item_text_field")
    else:
        config = config_or_field
        field = _config_value(config, "item_text_field")

    data_path = _config_value(config, "data_path")
    dataset_name = _config_value(config, "dataset")
    if data_path is None or dataset_name is None:
        raise ItemTextError(
            f"the config must give 'data_path' and 'dataset' to locate the .item file "
            f"(got data_path={data_path!r}, dataset={dataset_name!r})"
        )
    item_file = Path(data_path) / f"{dataset_name}.item"
    encoding = _config_value(config, "encoding") or "utf-8"
    text_by_token = read_item_text(item_file, field, id_field=dataset.iid_field, encoding=encoding)

    item_tokens = dataset.field2id_token[dataset.iid_field]  # [n_items] raw tokens, index 0 = "[PAD]"
    titles = [PAD_TEXT]
    missing_tokens = []
    for item_token in item_tokens[1:]:
        item_token = str(item_token)
        text = text_by_token.get(item_token)
        if text is None:
            missing_tokens.append(item_token)
            text = fallback_item_text(item_token)
        titles.append(text)

    logger = logger if logger is not None else logging.getLogger("recbole_llmkd")
    n_real_items = len(item_tokens) - 1
    if missing_tokens:
        logger.warning(
            "item text: %d of %d items have no text in %s; using 'item <token>' for them (first: %s)",
            len(missing_tokens),
            n_real_items,
            item_file,
            ", ".join(missing_tokens[:5]),
        )
    else:
        logger.info("item text: read text for all %d items from %s", n_real_items, item_file)
    return titles
