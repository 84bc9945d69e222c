"""The artifact reader: ``load_artifacts`` opens and validates one file, ``TeacherArtifacts`` holds it.

Loading checks everything the writer checked (metadata, tensor names, shapes, dtypes, K, item indices, unique keys)
so a damaged or foreign file fails here with a message naming the problem, never later inside training.
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file

from recbole_llmkd.data.align import AlignedTeacher, align_artifacts
from recbole_llmkd.data import validate
from recbole_llmkd.data.validate import ArtifactError


@dataclass
class TeacherArtifacts:
    """A loaded, validated artifact file: ``metadata`` (the JSON header) and ``tensors`` by file name."""

    path: Path
    metadata: dict
    tensors: dict[str, torch.Tensor] = field(repr=False)

    @property
    def dataset_name(self) -> str:
        """Name of the dataset the artifact was exported from."""
        return self.metadata["dataset"]

    @property
    def item_tokens(self) -> list[str]:
        """Raw item tokens by artifact item index; index 0 is [PAD]."""
        return self.metadata["item_tokens"]

    @property
    def n_items(self) -> int:
        """Number of artifact item indices, [PAD] included."""
        return len(self.metadata["item_tokens"])

    @property
    def key_history(self) -> int:
        """History items in each example key (``keys.example_key``)."""
        return int(self.metadata["key_history"])

    @property
    def score_kind(self) -> str:
        """What the scores are: ``"logit"`` or ``"neg_l2"`` (negative squared distance)."""
        return self.metadata["score_kind"]

    @property
    def teacher(self) -> dict:
        """Free-form description of the teacher (name, config, item-embedding source ...)."""
        return self.metadata["teacher"]

    @property
    def splits(self) -> list[str]:
        """Names of the splits the artifact holds (train always among them)."""
        return list(self.metadata["splits"])

    @property
    def K(self) -> int:
        """K of the train split."""
        return int(self.metadata["splits"]["train"]["K"])

    @property
    def item_text_emb(self) -> Optional[torch.Tensor]:
        """float32 [n_items, d] in artifact item order, or None."""
        return self.tensors.get("item_text_emb")

    def split_tensors(self, split: str) -> dict[str, torch.Tensor]:
        """The tensors of one split, names without the ``<split>.`` prefix, artifact row and item order."""
        if split not in self.metadata["splits"]:
            raise ArtifactError(f"{self.path}: no split {split!r} in the artifact; it has {self.splits}")
        prefix = f"{split}."
        return {name[len(prefix):]: tensor for name, tensor in self.tensors.items() if name.startswith(prefix)}

    def only(self, split: str) -> "TeacherArtifacts":
        """The same artifact holding ``split`` alone (its tensors and the global ones, ``item_text_emb``): what a
        student keeps of a teacher file, without the other splits' rows."""
        keep = self.split_tensors(split)  # raises for a split the artifact does not hold
        tensors = {f"{split}.{name}": tensor for name, tensor in keep.items()}
        tensors.update({name: self.tensors[name] for name in validate.GLOBAL_TENSORS if name in self.tensors})
        metadata = {**self.metadata, "splits": {split: self.metadata["splits"][split]}}
        return TeacherArtifacts(self.path, metadata, tensors)

    def align(self, dataset: Any, split: str = "train", required: bool = True) -> AlignedTeacher:
        """This artifact's ``split`` in the row order and internal item ids of ``dataset``; see
        ``align.align_artifacts`` for the matching rules and the errors raised."""
        return align_artifacts(self, dataset, split=split, required=required)


def _read_metadata(path: Path) -> dict:
    """The artifact metadata: the JSON object under ``validate.METADATA_KEY`` in the safetensors header."""
    try:
        with safe_open(str(path), framework="pt") as handle:
            header = handle.metadata()
    except SafetensorError as error:
        raise ArtifactError(f"{path} is not a safetensors file ({error})") from error
    if not header or validate.METADATA_KEY not in header:
        raise ArtifactError(
            f"{path} is a safetensors file without {validate.METADATA_KEY!r} metadata: not a teacher artifact "
            "(write artifacts with ArtifactWriter or recbole_llmkd.jobs.importer)"
        )
    try:
        metadata = json.loads(header[validate.METADATA_KEY])
    except json.JSONDecodeError as error:
        raise ArtifactError(f"{path}: the {validate.METADATA_KEY!r} metadata is not valid JSON ({error})") from error
    if not isinstance(metadata, dict):
        raise ArtifactError(f"{path}: the {validate.METADATA_KEY!r} metadata must be a JSON object")
    return metadata


def load_artifacts(path: str | os.PathLike) -> TeacherArtifacts:
    """Read and validate an artifact file: header metadata, tensor names, shapes, dtypes, K and item ids."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"teacher artifact file not found: {path}")
    metadata = _read_metadata(path)
    where = str(path)
    version = metadata.get("format_version")
    if version != validate.FORMAT_VERSION:
        raise ArtifactError(
            f"{where}: unsupported format_version {version!r}; this recbole_llmkd reads format_version "
            f"{validate.FORMAT_VERSION}"
        )
    validate.validate_user_metadata(metadata, where)
    for key in ("splits", "has", "fingerprint", "teacher", "created"):
        if key not in metadata:
            raise ArtifactError(f"{where}: metadata lacks {key!r}")
    splits = metadata["splits"]
    if not isinstance(splits, dict) or "train" not in splits or set(splits) - set(validate.SPLITS):
        raise ArtifactError(
            f"{where}: metadata 'splits' must include 'train' and be among {list(validate.SPLITS)}, got {splits!r}"
        )
    n_items = len(metadata["item_tokens"])

    tensors = load_file(str(path))
    expected_names = set(validate.GLOBAL_TENSORS)
    row_tensor_names = validate.REQUIRED_ROW_TENSORS + validate.OPTIONAL_ROW_TENSORS
    for split in splits:
        expected_names |= {f"{split}.{name}" for name in row_tensor_names}
    unknown = sorted(set(tensors) - expected_names)
    if unknown:
        raise ArtifactError(f"{where}: unexpected tensors {unknown} (splits in the metadata: {list(splits)})")
    optional_present = sorted(
        name
        for name in tensors
        if name in validate.GLOBAL_TENSORS or name.split(".", 1)[-1] in validate.OPTIONAL_ROW_TENSORS
    )
    if sorted(metadata["has"]) != optional_present:
        raise ArtifactError(
            f"{where}: metadata 'has' lists {sorted(metadata['has'])}, the file holds {optional_present}"
        )

    for split, info in splits.items():
        if not isinstance(info, dict) or "n_rows" not in info or "K" not in info:
            raise ArtifactError(
                f"{where}: metadata splits[{split!r}] must be {{'n_rows': int, 'K': int}}, got {info!r}"
            )
        K = validate.check_K(info["K"], n_items, f"{where}: split {split!r}")
        prefix = f"{split}."
        split_tensors = {name[len(prefix):]: tensor for name, tensor in tensors.items() if name.startswith(prefix)}
        checked = validate.validate_row_tensors(
            split_tensors, K, n_items, f"{where}: split {split!r}", n_rows=info["n_rows"]
        )
        validate.check_unique_keys(checked["key"], split, int(metadata["key_history"]), where)
        tensors.update({f"{split}.{name}": tensor for name, tensor in checked.items()})
    for name in validate.GLOBAL_TENSORS:
        if name in tensors:
            tensors[name] = validate.validate_global(name, tensors[name], n_items, where)
    return TeacherArtifacts(path=path, metadata=metadata, tensors=tensors)
