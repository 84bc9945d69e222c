"""Alignment: a loaded artifact mapped onto the rows and internal item ids of one split of the current dataset.

Artifact rows are keyed by example keys and artifact item indices (raw tokens); a RecBole split dataset has its
own row order and internal ids. ``align_artifacts`` matches rows by key and items by token, and raises
``ArtifactMismatchError`` naming what differs when the artifact belongs to another dataset.
"""
from __future__ import annotations

from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any, Optional

import numpy as np
import torch

from recbole_llmkd.data.keys import check_dataset, dataset_example_keys, describe_dataset_row, item_tokens
from recbole_llmkd.data.validate import OPTIONAL_ROW_TENSORS, ArtifactError
from recbole_llmkd.errors import FIRST_FEW

if TYPE_CHECKING:
    from recbole_llmkd.data.reader import TeacherArtifacts


class ArtifactMismatchError(ArtifactError):
    """A valid teacher artifact does not belong to the dataset it is being aligned with."""


@dataclass
class AlignedTeacher:
    """Teacher tensors in the row order of one split of the current dataset, item ids = RecBole internal ids.

    ``topk`` [N, K] int64, ``scores`` [N, K] float32, optional ``confidence`` [N, K], ``target_score`` [N],
    ``user_state`` [N, d]; ``item_text_emb`` [dataset.item_num, d] in internal-id order (row 0 zeros) or None;
    ``present`` [N] bool, False for rows without a teacher row (only with ``align(..., required=False)``;
    such rows hold topk 0 ([PAD]) and zero scores).
    """

    topk: torch.Tensor
    scores: torch.Tensor
    present: torch.Tensor
    score_kind: str
    split: str
    confidence: Optional[torch.Tensor] = None
    target_score: Optional[torch.Tensor] = None
    user_state: Optional[torch.Tensor] = None
    item_text_emb: Optional[torch.Tensor] = None

    @property
    def K(self) -> int:
        """Teacher items per row."""
        return int(self.topk.shape[1])

    def truncate(self, k: int) -> "AlignedTeacher":
        """The first ``k`` teacher items of every row (``confidence`` is sliced as stored, not renormalised)."""
        if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or not 1 <= k <= self.K:
            raise ValueError(f"truncate(k) needs 1 <= k <= K={self.K} (the artifact's K), got {k!r}")
        return replace(
            self,
            topk=self.topk[:, :k].contiguous(),
            scores=self.scores[:, :k].contiguous(),
            confidence=None if self.confidence is None else self.confidence[:, :k].contiguous(),
        )


def artifact_item_map(artifacts: "TeacherArtifacts", dataset: Any) -> torch.Tensor:
    """Artifact item index -> current internal item id, int64 [n_items]; raises when the items differ."""
    current_tokens = item_tokens(dataset)
    current_name = str(dataset.dataset_name)
    header = (
        f"artifact {artifacts.path.name} was built for dataset {artifacts.dataset_name!r} with "
        f"{artifacts.n_items - 1:,} items; this dataset {current_name!r} has {len(current_tokens) - 1:,} items"
    )
    if current_name != artifacts.dataset_name:
        raise ArtifactMismatchError(f"{header}: a teacher's artifact is for the dataset it was exported from; export "
                                    f"the teacher trained on {current_name!r}, or pass --dataset="
                                    f"{artifacts.dataset_name}")
    artifact_set, current_set = set(artifacts.item_tokens), set(current_tokens)
    if artifact_set != current_set:
        only_artifact = [t for t in artifacts.item_tokens if t not in current_set]
        only_current = [t for t in current_tokens if t not in artifact_set]
        raise ArtifactMismatchError(
            f"{header}, and the item tokens differ: {len(only_artifact):,} only in the artifact (first few: "
            f"{only_artifact[:FIRST_FEW]}), {len(only_current):,} only in this dataset (first few: "
            f"{only_current[:FIRST_FEW]}); export the artifact with this dataset's filtering config"
        )
    token2id = dataset.field2token_id[dataset.iid_field]
    return torch.tensor([token2id[token] for token in artifacts.item_tokens], dtype=torch.int64)  # [n_items]


def align_artifacts(
    artifacts: "TeacherArtifacts", dataset: Any, split: str = "train", required: bool = True
) -> AlignedTeacher:
    """Map the ``split`` of a loaded artifact onto the rows and internal item ids of a built RecBole split dataset.

    Row n of the result belongs to ``dataset.inter_feat`` row n, found by its example key. With
    ``required=True`` every row must have a teacher row; with ``required=False`` missing rows are flagged in
    ``present``. Raises ``ArtifactMismatchError`` naming what differs (dataset name, item tokens, rows), and
    ``ArtifactError`` when the artifact has no such split (whatever ``required`` says). Artifact rows that
    no dataset row uses are ignored.
    """
    check_dataset(dataset)
    split_tensors = artifacts.split_tensors(split)
    item_map = artifact_item_map(artifacts, dataset)  # [n_items]

    dataset_keys = dataset_example_keys(dataset, artifacts.key_history)  # [N]
    artifact_keys = split_tensors["key"].numpy()  # [M]
    key_order = np.argsort(artifact_keys, kind="stable")  # [M]
    sorted_keys = artifact_keys[key_order]  # [M]
    position = np.clip(np.searchsorted(sorted_keys, dataset_keys), 0, max(len(sorted_keys) - 1, 0))  # [N]
    found = sorted_keys[position] == dataset_keys if len(sorted_keys) else np.zeros(len(dataset_keys), bool)
    artifact_rows = key_order[position]  # [N]
    n_missing = int((~found).sum())
    if required and n_missing:
        first_missing = int(np.flatnonzero(~found)[0])
        raise ArtifactMismatchError(
            f"{n_missing:,} of {len(dataset_keys):,} rows of this dataset have no teacher row in split {split!r} "
            f"of artifact {artifacts.path.name} ({len(artifact_keys):,} rows); first missing example "
            f"{describe_dataset_row(dataset, first_missing, artifacts.key_history)}. Was the artifact exported with "
            "the same dataset, filtering and split config?"
        )
    present = torch.from_numpy(found)  # [N]
    rows = torch.from_numpy(np.where(found, artifact_rows, 0))  # [N]

    def gather(tensor: torch.Tensor) -> torch.Tensor:
        gathered = tensor[rows].clone()  # [N, ...]
        gathered[~present] = 0
        return gathered

    topk = item_map[split_tensors["topk_ids"][rows]]  # [N, K] internal ids
    topk[~present] = 0
    item_text_emb = None
    if artifacts.item_text_emb is not None:
        item_text_emb = torch.zeros(int(dataset.item_num), artifacts.item_text_emb.shape[1])  # [item_num, d]
        item_text_emb[item_map] = artifacts.item_text_emb
    optional = {name: gather(split_tensors[name]) for name in OPTIONAL_ROW_TENSORS if name in split_tensors}
    return AlignedTeacher(
        topk=topk,
        scores=gather(split_tensors["topk_scores"]),
        present=present,
        score_kind=artifacts.score_kind,
        split=split,
        item_text_emb=item_text_emb,
        **optional,
    )
