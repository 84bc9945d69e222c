"""The SLMRec evaluation protocol: 1 positive + 999 uniformly sampled negatives per row (docs/METHODS.md §2.6).

For every evaluation row (leave-one-out: one validation or test row per user) the candidates are the row's target
plus ``n_negatives`` items drawn uniformly **without replacement** from all items ``1..n_items-1`` minus the user's
**entire** sequence (training items and the validation/test targets included). ``r`` is the 0-based rank of the
positive among its candidates and

    HR@K   = 1[r < K]
    NDCG@K = 1[r < K] / log2(r + 2)
    MRR    = 1 / (r + 1)        (no cutoff)

averaged over rows. **Ties**: ``r`` = the number of negatives whose score is *strictly* higher than the positive's,
so a negative with exactly the positive's score does not push it down (optimistic; a model that scores every item
the same gets HR@1 = 1 — check ``n_tied`` in the result).

Differences from RecBole's ``uni999`` (kept out on purpose, see docs/METHODS.md §2.6): ``uni999`` may draw history
items as negatives, uses the global numpy RNG and cuts MRR at K. Here negatives never come from the user's sequence, the
draw is reproducible (``numpy.random.Generator(PCG64(seed))`` consumed row by row in loader order, so the same seed
and data give the same negatives whatever the batch size) and MRR is uncut. Call it with a different ``seed`` to
re-draw the negatives (``SLMTrainer`` uses ``slm_eval_seed`` + the number of sampled evaluations so far).

Scoring: one ``full_sort_predict`` per row (one LLM forward for an LLM recommender), then a gather of the
``1 + n_negatives`` candidate columns. Results are never mixed with full-ranking metrics: callers prefix them
(``SLMTrainer`` reports them as ``sampled_<metric>``).
"""
from __future__ import annotations

from collections.abc import Mapping
from typing import Dict, Iterable, Sequence, Union

import numpy as np
import torch

from recbole_llmkd.errors import RecboleLLMKDError

SAMPLED_PREFIX = "sampled_"


class SampledEvaluationError(RecboleLLMKDError, ValueError):
    """The SLMRec protocol cannot be applied to these data (too few candidate items, bad arguments)."""


# ----------------------------------------------------------------------------------------------------------
# Users' entire sequences
# ----------------------------------------------------------------------------------------------------------


def _as_dataset(source):
    """A RecBole dataset from a dataset or a dataloader (``loader._dataset``)."""
    if hasattr(source, "_dataset"):
        return source._dataset
    if hasattr(source, "inter_feat"):
        return source
    raise TypeError(
        f"expected a RecBole Dataset, a RecBole dataloader or a mapping user id -> items, got {type(source).__name__}"
    )


def user_items_from(sources) -> Dict[int, np.ndarray]:
    """Every item each user has interacted with: ``{internal user id: sorted unique item ids}`` (PAD excluded).

    Args:
        sources: a RecBole dataset or dataloader, a list of them (e.g. the train, valid and test loaders), or a
            mapping ``internal user id -> iterable of internal item ids`` (returned normalised). From a dataset, a
            row contributes its target ``item_id`` and, for sequential datasets, every item of ``item_id_list``:
            the union over the train, valid and test splits of RecBole's augmented sequential data is the user's
            entire sequence (every item but the first is some row's target, the first is in every history).
    """
    if isinstance(sources, Mapping):
        return {
            int(user): np.unique(np.asarray([int(item) for item in items if int(item) > 0], dtype=np.int64))
            for user, items in sources.items()
        }
    if not isinstance(sources, (list, tuple)):
        sources = [sources]
    chunks_by_user: Dict[int, list] = {}
    for source in sources:
        dataset = _as_dataset(source)
        inter_feat = dataset.inter_feat
        user_ids = inter_feat[dataset.uid_field].numpy()  # [N]
        columns = [inter_feat[dataset.iid_field].numpy()[:, None]]  # [N, 1]
        item_list_field = dataset.iid_field + dataset.config["LIST_SUFFIX"]
        if item_list_field in inter_feat:
            columns.append(inter_feat[item_list_field].numpy())  # [N, L]
        items = np.concatenate(columns, axis=1)  # [N, 1 + L]
        order = np.argsort(user_ids, kind="stable")
        sorted_users = user_ids[order]
        boundaries = np.flatnonzero(np.diff(sorted_users)) + 1
        for rows in np.split(order, boundaries):
            if len(rows) == 0:
                continue
            chunks_by_user.setdefault(int(user_ids[rows[0]]), []).append(items[rows].ravel())
    user_items = {}
    for user, chunks in chunks_by_user.items():
        all_items = np.unique(np.concatenate(chunks))
        user_items[user] = all_items[all_items > 0]
    return user_items


# ----------------------------------------------------------------------------------------------------------
# Negative sampling
# ----------------------------------------------------------------------------------------------------------


def sample_negatives(
    rng: np.random.Generator, n_items: int, seen_items: np.ndarray, n_negatives: int, user=None
) -> np.ndarray:
    """``n_negatives`` distinct items drawn uniformly from ``1..n_items-1`` minus ``seen_items`` (sorted unique).

    Sparse pools use rejection sampling (draw, drop seen items and repeats, keep the first ``n_negatives`` in draw
    order: a uniform sample without replacement); dense pools (fewer than 2·n_negatives allowed items) draw from
    the explicit list of allowed items.
    """
    pool_size = (n_items - 1) - len(seen_items)
    if pool_size < n_negatives:
        who = f"user {user}" if user is not None else "a row"
        raise SampledEvaluationError(
            f"{who} has {len(seen_items)} items in its sequence, so only {pool_size} of the {n_items - 1} items can be "
            f"negatives; the SLMRec protocol needs {n_negatives} negatives (1 + {n_negatives} = "
            f"{n_negatives + 1} candidates). Use a dataset with more items, or drop very long users "
            f"(e.g. user_inter_num_interval: \"[0,{n_items - 1 - n_negatives}]\")"
        )
    if pool_size < 2 * n_negatives:
        allowed = np.setdiff1d(np.arange(1, n_items, dtype=np.int64), seen_items, assume_unique=True)
        return rng.choice(allowed, size=n_negatives, replace=False)
    chosen = np.empty(0, dtype=np.int64)
    while len(chosen) < n_negatives:
        missing = n_negatives - len(chosen)
        draw = rng.integers(1, n_items, size=2 * missing + 16, dtype=np.int64)
        draw = draw[~np.isin(draw, seen_items, assume_unique=False)]
        merged = np.concatenate([chosen, draw])
        _, first_index = np.unique(merged, return_index=True)
        chosen = merged[np.sort(first_index)]
    return chosen[:n_negatives]


# ----------------------------------------------------------------------------------------------------------
# Ranks and metrics
# ----------------------------------------------------------------------------------------------------------


def positive_ranks(candidate_scores: torch.Tensor) -> torch.Tensor:
    """0-based rank of column 0 (the positive) among the candidates of each row: ``[R, C] -> [R]`` long.

    ``r = #{j >= 1 : s_j > s_0}``: ties with the positive do not count (see the module docstring).
    """
    if candidate_scores.dim() != 2 or candidate_scores.shape[1] < 2:
        raise SampledEvaluationError(
            f"candidate scores must be [rows, 1 + n_negatives] with the positive in column 0, got "
            f"{tuple(candidate_scores.shape)}"
        )
    if torch.isnan(candidate_scores).any():
        raise SampledEvaluationError("the model returned NaN scores for some candidates")
    positive = candidate_scores[:, :1]  # [R, 1]
    return (candidate_scores[:, 1:] > positive).sum(dim=1)  # [R]


def list_ranks(topk_ids: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """0-based rank of each row's target in its top-K list, ``K`` where the list misses it: ``[N, K], [N] -> [N]``.

    For lists that are the top K of a full ranking (a teacher artifact's ``topk_ids``), ``metrics_from_ranks`` of
    these ranks with cutoffs ≤ K is that ranking's full-ranking HR@K / NDCG@K (RecBole's, with ``[PAD]`` excluded).
    """
    if topk_ids.dim() != 2 or target.dim() != 1 or target.shape[0] != topk_ids.shape[0]:
        raise ValueError(f"topk_ids [N, K] and target [N] expected, got {list(topk_ids.shape)} and {list(target.shape)}")
    hits = topk_ids.long() == target.long()[:, None]  # [N, K]
    return torch.where(hits.any(dim=1), hits.float().argmax(dim=1), torch.full_like(target.long(), topk_ids.shape[1]))


def metrics_from_ranks(ranks: Union[torch.Tensor, np.ndarray, Sequence[int]], ks: Iterable[int] = (1, 5, 10)) -> Dict[str, float]:
    """``hit@K``, ``ndcg@K`` for every K and the uncut ``mrr``, averaged over rows, from 0-based ranks."""
    ranks = np.asarray(ranks.cpu() if isinstance(ranks, torch.Tensor) else ranks, dtype=np.float64)  # [R]
    if ranks.size == 0:
        raise SampledEvaluationError("no evaluation rows")
    result = {}
    for k in ks:
        hit = ranks < k  # [R]
        result[f"hit@{k}"] = float(hit.mean())
        result[f"ndcg@{k}"] = float((hit / np.log2(ranks + 2.0)).mean())
    result["mrr"] = float((1.0 / (ranks + 1.0)).mean())
    return result


# ----------------------------------------------------------------------------------------------------------
# The protocol
# ----------------------------------------------------------------------------------------------------------


def _model_device(model) -> torch.device:
    device = getattr(model, "device", None)
    if device is not None:
        return torch.device(device)
    for parameter in model.parameters():
        return parameter.device
    return torch.device("cpu")


@torch.no_grad()
def evaluate_sampled(
    model,
    eval_data,
    user_items=None,
    n_negatives: int = 999,
    seed: int = 2020,
    ks: Iterable[int] = (1, 5, 10),
    return_details: bool = False,
) -> Dict[str, float]:
    """Evaluate ``model`` on ``eval_data`` with the SLMRec protocol (see the module docstring).

    Args:
        model: a RecBole sequential recommender (``full_sort_predict`` -> ``[B, n_items]``); put in eval mode here.
        eval_data: a full-sort evaluation dataloader (``eval_args.mode: full``), one row per user.
        user_items: the users' entire sequences: a mapping ``user id -> items`` or the dataset(s)/dataloader(s) to
            read them from (``user_items_from``), typically ``[train_data, valid_data, test_data]``. The row's own
            history and target are always added. ``None`` uses the rows of ``eval_data`` only (their histories
            may be truncated to ``MAX_ITEM_LIST_LENGTH``: pass the full data for the real protocol).
        n_negatives: negatives per row (999 in SLMRec).
        seed: seed of the ``numpy.random.Generator`` that draws the negatives (same seed -> same negatives).
        ks: cutoffs of HR and NDCG.
        return_details: also return the per-row 0-based ranks (``"ranks"``, a list) and candidate item ids
            (``"candidates"``, an int64 array ``[R, 1 + n_negatives]``, positive first).

    Returns:
        ``{"hit@K", "ndcg@K" for K in ks, "mrr", "n_rows", "n_negatives", "seed", "n_tied"}``; ``n_tied`` = rows in
        which some negative scored exactly like the positive.
    """
    from recbole.data.dataloader.general_dataloader import FullSortEvalDataLoader

    if not isinstance(eval_data, FullSortEvalDataLoader):
        raise SampledEvaluationError(
            f"evaluate_sampled needs a full-sort evaluation dataloader (eval_args mode 'full'), got "
            f"{type(eval_data).__name__}: it draws its own negatives"
        )
    if isinstance(n_negatives, bool) or not isinstance(n_negatives, int) or n_negatives < 1:
        raise SampledEvaluationError(f"n_negatives must be an int >= 1, got {n_negatives!r}")
    ks = tuple(int(k) for k in ks)
    if any(k < 1 for k in ks):
        raise SampledEvaluationError(f"every cutoff K must be >= 1, got {ks}")

    dataset = eval_data._dataset
    uid_field, iid_field = dataset.uid_field, dataset.iid_field
    item_list_field = iid_field + dataset.config["LIST_SUFFIX"]
    n_items = int(dataset.item_num)  # ids 0..n_items-1, 0 = PAD
    if n_items - 1 < n_negatives + 1:
        raise SampledEvaluationError(
            f"the dataset has {n_items - 1} items; the SLMRec protocol needs at least {n_negatives + 1} "
            f"(1 positive + {n_negatives} negatives)"
        )
    known_items = user_items_from(user_items) if user_items is not None else {}

    rng = np.random.Generator(np.random.PCG64(seed))
    device = _model_device(model)
    was_training = model.training
    model.eval()
    all_ranks, all_candidates, n_tied = [], [], 0
    try:
        for batch in eval_data:
            interaction = batch[0] if isinstance(batch, tuple) else batch
            user_ids = interaction[uid_field].numpy()  # [B]
            targets = interaction[iid_field].numpy()  # [B]
            histories = interaction[item_list_field].numpy() if item_list_field in interaction else None  # [B, L]
            candidates = np.empty((len(user_ids), n_negatives + 1), dtype=np.int64)  # [B, 1 + n_neg]
            for row, (user, target) in enumerate(zip(user_ids, targets)):
                if target <= 0:
                    raise SampledEvaluationError(f"row {row} of user {user} has target item id {target} (PAD)")
                own = [np.asarray([target])]
                if histories is not None:
                    own.append(histories[row])
                if int(user) in known_items:
                    own.append(known_items[int(user)])
                seen = np.unique(np.concatenate(own))
                seen = seen[seen > 0]
                candidates[row, 0] = target
                candidates[row, 1:] = sample_negatives(rng, n_items, seen, n_negatives, user=int(user))
            scores = model.full_sort_predict(interaction.to(device))  # [B, n_items]
            if scores.dim() != 2 or scores.shape != (len(user_ids), n_items):
                raise SampledEvaluationError(
                    f"full_sort_predict returned shape {tuple(scores.shape)}, expected {(len(user_ids), n_items)}"
                )
            candidate_scores = scores.float().gather(1, torch.from_numpy(candidates).to(scores.device))  # [B, 1 + n_neg]
            all_ranks.append(positive_ranks(candidate_scores).cpu())
            if return_details:
                all_candidates.append(candidates)
            n_tied += int((candidate_scores[:, 1:] == candidate_scores[:, :1]).any(dim=1).sum())
    finally:
        model.train(was_training)
    ranks = torch.cat(all_ranks)  # [R]
    result = metrics_from_ranks(ranks, ks)
    result.update({"n_rows": int(ranks.numel()), "n_negatives": n_negatives, "seed": int(seed), "n_tied": n_tied})
    if return_details:
        result["ranks"] = ranks.tolist()
        result["candidates"] = np.concatenate(all_candidates)
    return result


def prefixed(result: Dict[str, float], prefix: str = SAMPLED_PREFIX) -> Dict[str, float]:
    """The metric entries of an ``evaluate_sampled`` result with ``prefix`` (``sampled_hit@1``, ...)."""
    skip = {"n_rows", "n_negatives", "seed", "n_tied", "ranks", "candidates"}
    return {f"{prefix}{key}": value for key, value in result.items() if key not in skip}

