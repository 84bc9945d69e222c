"""The resumable artifact writer: rows arrive in chunks, a crash loses at most the chunk being written.

``ArtifactWriter`` keeps the finished chunks of an export in ``<path>.partial/`` and resumes there; ``finalize``
checks coverage and writes the one artifact file (format in ``docs/ARTIFACTS.md``). ``dataset_metadata`` builds
the caller part of the metadata from a RecBole dataset.
"""
from __future__ import annotations

import json
import os
import re
import shutil
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Mapping, Optional

import numpy as np
import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file

from recbole_llmkd.data.keys import (
    DEFAULT_KEY_HISTORY,
    check_key_history,
    dataset_fingerprint,
    item_tokens,
)
from recbole_llmkd.data.validate import (
    FORMAT_VERSION,
    GLOBAL_TENSORS,
    METADATA_KEY,
    OPTIONAL_ROW_TENSORS,
    SPLITS,
    USER_METADATA_OPTIONAL,
    USER_METADATA_REQUIRED,
    WRITER_METADATA_KEYS,
    ArtifactError,
    check_K,
    check_unique_keys,
    validate_global,
    validate_row_tensors,
    validate_user_metadata,
)
from recbole_llmkd.errors import FIRST_FEW


def _to_jsonable(metadata: Mapping[str, Any], where: str) -> dict:
    """A JSON round trip of ``metadata`` (what the file will hold); raises ``ArtifactError`` if it cannot be."""
    try:
        return json.loads(json.dumps(metadata, sort_keys=True))
    except TypeError as error:
        raise ArtifactError(f"{where}: metadata must be JSON-serialisable: {error}") from error


def dataset_metadata(
    dataset: Any,
    key_history: int = DEFAULT_KEY_HISTORY,
    score_kind: str = "logit",
    teacher: Optional[Mapping[str, Any]] = None,
) -> dict:
    """The caller part of the artifact metadata for ``ArtifactWriter``, taken from a RecBole dataset."""
    return {
        "dataset": str(dataset.dataset_name),
        "fingerprint": dataset_fingerprint(dataset),
        "item_tokens": item_tokens(dataset),
        "key_history": check_key_history(key_history),
        "score_kind": score_kind,
        "teacher": dict(teacher or {}),
    }


def _atomic_save(tensors: dict[str, torch.Tensor], path: Path, metadata: Optional[dict[str, str]] = None) -> None:
    """Write a safetensors file to a temporary sibling and ``os.replace`` it, so readers never see half a file."""
    temporary = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    save_file(tensors, str(temporary), metadata=metadata)
    os.replace(temporary, path)


def _ranges_gaps_overlaps(ranges: list[tuple[int, int]], n_rows: int) -> tuple[list, list]:
    """Gaps ``[(start, end), ...]`` in [0, n_rows) and overlapping pairs of sorted half-open ranges."""
    gaps, overlaps = [], []
    covered_until = 0
    previous = None
    for start, end in ranges:
        if start > covered_until:
            gaps.append((covered_until, start))
        elif start < covered_until and previous is not None:
            overlaps.append((previous, (start, end)))
        if end > covered_until:
            covered_until, previous = end, (start, end)
    if covered_until < n_rows:
        gaps.append((covered_until, n_rows))
    return gaps, overlaps


class ArtifactWriter:
    """Resumable export of one artifact file.

    Rows arrive in chunks; each chunk is its own small safetensors file ``<split>.<start>-<end>.safetensors``
    (``end`` exclusive) in the sibling folder ``<path>.partial/``, written to a temporary name and then
    ``os.replace``d, so an interruption never leaves half a chunk. ``<path>.partial/meta.json`` holds the
    metadata; a writer created on an existing folder resumes it, and refuses to when its metadata differ.
    ``finalize()`` checks that every row of every split is present exactly once, concatenates the chunks,
    writes ``<path>`` atomically and removes the folder.

    Args:
        path: the final ``.safetensors`` file.
        metadata: ``dataset``, ``item_tokens``, ``key_history``, ``score_kind`` and optionally ``fingerprint``,
            ``teacher`` (see ``dataset_metadata``). ``format_version``, ``created``, ``splits`` and ``has`` are
            added by the writer.
        splits: number of rows per split, e.g. ``{"train": 97171, "valid": 943}``; ``train`` is required.
        K: number of teacher items per row.
        chunk_rows: rows per chunk proposed by ``pending_ranges`` (``write_chunk`` accepts any size).
        overwrite: replace ``path`` if it already exists (otherwise that is an error).
    """

    def __init__(
        self,
        path: str | os.PathLike,
        metadata: Mapping[str, Any],
        splits: Mapping[str, int],
        K: int,
        chunk_rows: int = 4096,
        overwrite: bool = False,
    ) -> None:
        self.path = Path(path)
        self.partial_dir = Path(f"{self.path}.partial")
        where = f"ArtifactWriter({self.path})"
        if self.path.exists() and not overwrite:
            raise FileExistsError(f"{where}: the artifact file already exists; delete it or pass overwrite=True")

        reserved = [key for key in WRITER_METADATA_KEYS if key in metadata]
        if reserved:
            raise ArtifactError(f"{where}: metadata keys {reserved} are set by the writer; leave them out")
        unknown = sorted(set(metadata) - set(USER_METADATA_REQUIRED) - set(USER_METADATA_OPTIONAL))
        if unknown:
            raise ArtifactError(
                f"{where}: unknown metadata keys {unknown}; put free-form information under 'teacher'"
            )
        self.metadata = _to_jsonable(metadata, where)
        validate_user_metadata(self.metadata, where)
        self.n_items = len(self.metadata["item_tokens"])
        self.key_history = int(self.metadata["key_history"])

        unknown_splits = sorted(set(splits) - set(SPLITS))
        if unknown_splits or "train" not in splits:
            raise ArtifactError(f"{where}: splits must include 'train' and be among {list(SPLITS)}, got {list(splits)}")
        for split, n_rows in splits.items():
            if isinstance(n_rows, bool) or not isinstance(n_rows, (int, np.integer)) or n_rows < 1:
                raise ArtifactError(
                    f"{where}: split {split!r} must have an integer number of rows >= 1, got {n_rows!r}"
                )
        self.splits = {split: int(splits[split]) for split in SPLITS if split in splits}
        self.K = check_K(K, self.n_items, where)
        if isinstance(chunk_rows, bool) or not isinstance(chunk_rows, int) or chunk_rows < 1:
            raise ArtifactError(f"{where}: chunk_rows must be an integer >= 1, got {chunk_rows!r}")
        self.chunk_rows = chunk_rows
        self._open_partial_dir()

    # -- partial folder ------------------------------------------------------------------------------------

    def _partial_meta(self) -> dict:
        return {"format_version": FORMAT_VERSION, "metadata": self.metadata, "splits": self.splits, "K": self.K}

    def _open_partial_dir(self) -> None:
        meta_path = self.partial_dir / "meta.json"
        expected = self._partial_meta()
        if meta_path.exists():
            stored = json.loads(meta_path.read_text(encoding="utf-8"))
            if stored != expected:
                differing = [key for key in ("format_version", "splits", "K") if stored.get(key) != expected[key]]
                stored_metadata = stored.get("metadata", {})
                differing += [
                    f"metadata.{key}"
                    for key in sorted(set(stored_metadata) | set(self.metadata))
                    if stored_metadata.get(key) != self.metadata.get(key)
                ]
                raise ArtifactError(
                    f"{self.partial_dir} holds an unfinished export with different metadata (differs in: "
                    f"{', '.join(differing)}); resume it with the same teacher, dataset and splits, or delete the "
                    "folder to start over"
                )
            return
        self.partial_dir.mkdir(parents=True, exist_ok=True)
        temporary = meta_path.with_name(f".meta.json.tmp-{os.getpid()}")
        temporary.write_text(json.dumps(expected, sort_keys=True), encoding="utf-8")
        os.replace(temporary, meta_path)

    def _chunk_path(self, split: str, start: int, end: int) -> Path:
        return self.partial_dir / f"{split}.{start}-{end}.safetensors"

    def _check_split(self, split: str) -> None:
        if split not in self.splits:
            raise ArtifactError(f"{self.partial_dir}: unknown split {split!r}; this export has {list(self.splits)}")

    # -- progress ------------------------------------------------------------------------------------------

    def done_ranges(self, split: str) -> list[tuple[int, int]]:
        """Sorted half-open row ranges ``(start, end)`` of ``split`` already written."""
        self._check_split(split)
        pattern = re.compile(rf"^{re.escape(split)}\.(\d+)-(\d+)\.safetensors$")
        ranges = []
        for entry in os.listdir(self.partial_dir):
            match = pattern.match(entry)
            if match:
                ranges.append((int(match.group(1)), int(match.group(2))))
        return sorted(ranges)

    def next_start(self, split: str) -> int:
        """First row of ``split`` not yet written: the end of the contiguous run of done rows from row 0."""
        gaps, _ = _ranges_gaps_overlaps(self.done_ranges(split), self.splits[split])
        return gaps[0][0] if gaps else self.splits[split]

    def pending_ranges(self, split: str) -> list[tuple[int, int]]:
        """Row ranges of ``split`` still to write, cut into pieces of at most ``chunk_rows`` rows."""
        gaps, _ = _ranges_gaps_overlaps(self.done_ranges(split), self.splits[split])
        pending = []
        for gap_start, gap_end in gaps:
            for start in range(gap_start, gap_end, self.chunk_rows):
                pending.append((start, min(start + self.chunk_rows, gap_end)))
        return pending

    def done_globals(self) -> list[str]:
        """Names of the global tensors already written."""
        return sorted(name for name in GLOBAL_TENSORS if (self.partial_dir / f"global.{name}.safetensors").exists())

    def is_complete(self) -> bool:
        """Whether every split is fully covered (``finalize`` still checks overlaps)."""
        return all(not self.pending_ranges(split) for split in self.splits)

    # -- writing -------------------------------------------------------------------------------------------

    def write_chunk(self, split: str, start: int, tensors: Mapping[str, Any]) -> tuple[int, int]:
        """Write rows ``[start, start + N)`` of ``split``. ``tensors``: ``key`` [N], ``topk_ids`` [N, K],
        ``topk_scores`` [N, K] and optionally ``confidence`` [N, K], ``target_score`` [N], ``user_state`` [N, d].
        Rewriting exactly the same range replaces it; overlapping another range is an error. Returns
        ``(start, end)``."""
        self._check_split(split)
        n_split_rows = self.splits[split]
        if isinstance(start, bool) or not isinstance(start, (int, np.integer)) or not 0 <= start < n_split_rows:
            raise ArtifactError(
                f"{self.partial_dir}: chunk start must be an integer in [0, {n_split_rows}), got {start!r}"
            )
        start = int(start)
        where = f"{self.partial_dir}: chunk of split {split!r} at row {start}"
        chunk = validate_row_tensors(tensors, self.K, self.n_items, where)
        end = start + chunk["key"].shape[0]
        if end == start:
            raise ArtifactError(f"{where}: the chunk has no rows")
        if end > n_split_rows:
            raise ArtifactError(f"{where}: rows {start}-{end} run past the split's {n_split_rows:,} rows")
        done = self.done_ranges(split)
        for done_start, done_end in done:
            if (done_start, done_end) != (start, end) and done_start < end and start < done_end:
                raise ArtifactError(
                    f"{where}: rows {start}-{end} overlap the chunk already written for rows {done_start}-{done_end}"
                )
        others = [r for r in done if r != (start, end)]
        if others:
            self._check_same_layout(chunk, self._chunk_path(split, *others[0]), where)
        _atomic_save({name: tensor for name, tensor in chunk.items()}, self._chunk_path(split, start, end))
        return start, end

    def _check_same_layout(self, chunk: dict[str, torch.Tensor], other_path: Path, where: str) -> None:
        with safe_open(str(other_path), framework="pt") as other:
            other_shapes = {name: other.get_slice(name).get_shape()[1:] for name in other.keys()}
        shapes = {name: list(tensor.shape[1:]) for name, tensor in chunk.items()}
        if shapes != other_shapes:
            raise ArtifactError(
                f"{where}: tensors {sorted(shapes)} (trailing shapes {shapes}) differ from those of "
                f"{other_path.name} ({other_shapes}); every chunk of a split needs the same tensors"
            )

    def write_global(self, name: str, tensor: Any) -> None:
        """Write a global tensor (``item_text_emb`` float32 [n_items, d], row = artifact item index, row 0 zeros)."""
        value = validate_global(name, tensor, self.n_items, f"{self.partial_dir}: global {name!r}")
        _atomic_save({name: value}, self.partial_dir / f"global.{name}.safetensors")

    # -- finishing -----------------------------------------------------------------------------------------

    def _collect_split(self, split: str) -> dict[str, torch.Tensor]:
        n_rows = self.splits[split]
        ranges = self.done_ranges(split)
        gaps, overlaps = _ranges_gaps_overlaps(ranges, n_rows)
        if overlaps:
            first, second = overlaps[0]
            raise ArtifactError(
                f"{self.partial_dir}: split {split!r} has overlapping chunks, e.g. rows {first[0]}-{first[1]} and "
                f"{second[0]}-{second[1]}; every row must be written exactly once"
            )
        if gaps:
            n_missing = sum(end - start for start, end in gaps)
            listed = ", ".join(f"{start}-{end}" for start, end in gaps[:FIRST_FEW])
            raise ArtifactError(
                f"{self.partial_dir}: split {split!r} is missing {n_missing:,} of {n_rows:,} rows (ranges, end "
                f"exclusive: {listed}{', ...' if len(gaps) > FIRST_FEW else ''}); write them before finalize()"
            )
        parts = [load_file(str(self._chunk_path(split, start, end))) for start, end in ranges]
        names = sorted(parts[0])
        for (start, end), part in zip(ranges, parts):
            if sorted(part) != names:
                raise ArtifactError(
                    f"{self.partial_dir}: split {split!r} chunk {start}-{end} has tensors {sorted(part)}, the first "
                    f"chunk has {names}; every chunk of a split needs the same tensors"
                )
        where = f"{self.partial_dir}: split {split!r}"
        merged = {name: torch.cat([part[name] for part in parts]) for name in names}
        merged = validate_row_tensors(merged, self.K, self.n_items, where, n_rows=n_rows)
        check_unique_keys(merged["key"], split, self.key_history, where)
        return merged

    def finalize(self) -> Path:
        """Check coverage, concatenate the chunks, write ``path`` atomically, remove the partial folder."""
        tensors: dict[str, torch.Tensor] = {}
        has: list[str] = []
        for split in self.splits:
            for name, tensor in self._collect_split(split).items():
                tensors[f"{split}.{name}"] = tensor
                if name in OPTIONAL_ROW_TENSORS:
                    has.append(f"{split}.{name}")
        for name in self.done_globals():
            tensors[name] = load_file(str(self.partial_dir / f"global.{name}.safetensors"))[name]
            has.append(name)
        metadata = {
            "format_version": FORMAT_VERSION,
            "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            **self.metadata,
            "splits": {split: {"n_rows": n_rows, "K": self.K} for split, n_rows in self.splits.items()},
            "has": sorted(has),
        }
        metadata.setdefault("fingerprint", {})
        metadata.setdefault("teacher", {})
        self.path.parent.mkdir(parents=True, exist_ok=True)
        _atomic_save(tensors, self.path, metadata={METADATA_KEY: json.dumps(metadata, sort_keys=True)})
        shutil.rmtree(self.partial_dir)
        return self.path
