"""The SLMRec evaluation protocol (recbole_llmkd.evaluation, docs/METHODS.md §2.6)."""
import math

import numpy as np
import pytest
import torch

from recbole_llmkd.evaluation import (
    SampledEvaluationError,
    evaluate_sampled,
    metrics_from_ranks,
    positive_ranks,
    prefixed,
    sample_negatives,
    user_items_from,
)

# ml-100k's longest users leave fewer than 999 of its 1682 items as negatives: keep users with <= 500 interactions.
ML100K_SAMPLABLE = {"user_inter_num_interval": "[0,500]"}


# ----- hand-made ranks and metrics --------------------------------------------------------------------------


def test_positive_rank_counts_strictly_higher_negatives_only():
    scores = torch.tensor(
        [
            [5.0, 1.0, 2.0, 3.0],  # best -> 0
            [2.0, 3.0, 1.0, 4.0],  # two higher -> 2
            [1.0, 1.0, 1.0, 0.0],  # ties do not count -> 0
            [0.0, 1.0, 2.0, 3.0],  # worst -> 3
        ]
    )
    assert positive_ranks(scores).tolist() == [0, 2, 0, 3]
    with pytest.raises(SampledEvaluationError, match="NaN"):
        positive_ranks(torch.tensor([[1.0, float("nan")]]))
    with pytest.raises(SampledEvaluationError, match="column 0"):
        positive_ranks(torch.tensor([1.0, 2.0]))


def test_metrics_from_ranks_by_hand():
    ranks = [0, 3, 7, 999]
    result = metrics_from_ranks(ranks, ks=(1, 5, 10))
    assert result["hit@1"] == pytest.approx(1 / 4)
    assert result["hit@5"] == pytest.approx(2 / 4)
    assert result["hit@10"] == pytest.approx(3 / 4)
    assert result["ndcg@1"] == pytest.approx(1.0 / 4)
    assert result["ndcg@5"] == pytest.approx((1.0 + 1 / math.log2(5)) / 4)
    assert result["ndcg@10"] == pytest.approx((1.0 + 1 / math.log2(5) + 1 / math.log2(9)) / 4)
    # MRR has no cutoff: the rank-999 row still contributes 1/1000
    assert result["mrr"] == pytest.approx((1 + 1 / 4 + 1 / 8 + 1 / 1000) / 4)


def test_sample_negatives_uniform_distinct_and_outside_the_sequence():
    rng = np.random.Generator(np.random.PCG64(0))
    seen = np.array([1, 2, 3, 50, 99])
    counts = np.zeros(100)
    for _ in range(400):
        negatives = sample_negatives(rng, 100, seen, 20)  # sparse: rejection sampling
        assert len(set(negatives.tolist())) == 20
        assert not np.isin(negatives, seen).any() and negatives.min() >= 1 and negatives.max() < 100
        counts[negatives] += 1
    allowed = np.setdiff1d(np.arange(1, 100), seen)
    # 400 * 20 draws over 94 items: ~85 each; every allowed item is drawn, none outside
    assert counts[allowed].min() > 40 and counts[allowed].max() < 140
    assert counts[seen].sum() == 0 and counts[0] == 0
    dense = sample_negatives(rng, 100, seen, 90)  # dense pool (94 allowed < 2 * 90): explicit list
    assert len(set(dense.tolist())) == 90 and not np.isin(dense, seen).any()
    with pytest.raises(SampledEvaluationError, match="user 7 has 5 items.*only 94 .*needs 95 negatives"):
        sample_negatives(rng, 100, seen, 95, user=7)


def test_user_items_from_mapping_drops_pad():
    items = user_items_from({3: [5, 0, 2, 5]})
    assert list(items) == [3] and items[3].tolist() == [2, 5]


# ----- on a real dataloader -----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def ml100k_sasrec(tmp_path_factory):
    """A plain (seeded, untrained: training costs ~1 min here) SASRec on ml-100k, its loaders, the full sequences."""
    import os

    from recbole.data import create_dataset, data_preparation
    from recbole.model.sequential_recommender import SASRec
    from recbole.utils import init_seed

    from recbole_llmkd.config import Config
    from tests.conftest import TINY_SEQ_CONFIG

    cwd = os.getcwd()
    os.chdir(tmp_path_factory.mktemp("sasrec"))
    try:
        config = Config("SASRec", "ml-100k", config_dict={**TINY_SEQ_CONFIG, **ML100K_SAMPLABLE})
        init_seed(config["seed"], config["reproducibility"])
        dataset = create_dataset(config)
        full_user_items = {}  # read before data_preparation, which replaces inter_feat by the augmented rows
        inter = dataset.inter_feat
        for user, item in zip(inter[dataset.uid_field].tolist(), inter[dataset.iid_field].tolist()):
            full_user_items.setdefault(user, set()).add(item)
        train_data, valid_data, test_data = data_preparation(config, dataset)
        model = SASRec(config, train_data._dataset)
    finally:
        os.chdir(cwd)
    return model, train_data, valid_data, test_data, full_user_items


def test_user_items_from_the_splits_is_the_entire_sequence(ml100k_sasrec):
    _, train_data, valid_data, test_data, full_user_items = ml100k_sasrec
    from_splits = user_items_from([train_data, valid_data, test_data])
    assert set(from_splits) == set(full_user_items)
    assert all(set(from_splits[user].tolist()) == full_user_items[user] for user in full_user_items)
    # the test split alone misses items: histories are cut to MAX_ITEM_LIST_LENGTH = 10
    from_test = user_items_from(test_data)
    assert sum(len(items) for items in from_test.values()) < sum(len(items) for items in full_user_items.values())


def test_sasrec_sampled_protocol_negatives_outside_sequence_and_reproducible(ml100k_sasrec):
    model, train_data, valid_data, test_data, full_user_items = ml100k_sasrec
    splits = [train_data, valid_data, test_data]
    result = evaluate_sampled(model, test_data, splits, seed=7, return_details=True)
    candidates = result["candidates"]  # [R, 1000]
    users = test_data._dataset.inter_feat[test_data._dataset.uid_field].tolist()
    targets = test_data._dataset.inter_feat[test_data._dataset.iid_field].tolist()
    assert candidates.shape == (len(users), 1000) and result["n_rows"] == len(users)
    assert candidates[:, 0].tolist() == targets
    for user, row in zip(users, candidates):
        negatives = set(row[1:].tolist())
        assert len(negatives) == 999 and 0 not in negatives
        assert not negatives & full_user_items[user], f"user {user}: a negative is in the user's sequence"
    # the reported metrics are the metrics of the reported ranks
    assert {k: result[k] for k in ("hit@1", "hit@5", "ndcg@5", "mrr")} == {
        k: v for k, v in metrics_from_ranks(result["ranks"]).items() if k in ("hit@1", "hit@5", "ndcg@5", "mrr")
    }
    again = evaluate_sampled(model, test_data, splits, seed=7, return_details=True)
    assert again["ranks"] == result["ranks"] and np.array_equal(again["candidates"], candidates)
    other = evaluate_sampled(model, test_data, splits, seed=8, return_details=True)
    assert not np.array_equal(other["candidates"], candidates)
    assert set(prefixed(result)) == {f"sampled_{k}" for k in ("hit@1", "ndcg@1", "hit@5", "ndcg@5", "hit@10", "ndcg@10", "mrr")}


class _ScoreByItemId(torch.nn.Module):
    """full_sort_predict = sign * item id (a model whose ranking is known by hand)."""

    def __init__(self, n_items, sign):
        super().__init__()
        self.n_items, self.sign = n_items, sign

    def full_sort_predict(self, interaction):
        batch_size = len(interaction)
        return self.sign * torch.arange(self.n_items, dtype=torch.float32).expand(batch_size, -1).clone()


def test_ranks_of_a_hand_made_scorer(ml100k_sasrec):
    _, train_data, valid_data, test_data, _ = ml100k_sasrec
    n_items = test_data._dataset.item_num
    result = evaluate_sampled(_ScoreByItemId(n_items, -1.0), test_data, [train_data, valid_data, test_data], seed=3,
                              return_details=True)
    candidates = result["candidates"]
    expected = (candidates[:, 1:] < candidates[:, :1]).sum(axis=1)  # lower id = higher score
    assert result["ranks"] == expected.tolist()
    assert result["n_tied"] == 0
    constant = evaluate_sampled(_ScoreByItemId(n_items, 0.0), test_data, None, seed=3)
    assert constant["hit@1"] == 1.0 and constant["n_tied"] == constant["n_rows"]  # ties count for the positive


def test_clear_errors(ml100k_sasrec, tiny_seq_config):
    model, train_data, _, test_data, _ = ml100k_sasrec
    with pytest.raises(SampledEvaluationError, match="full-sort evaluation dataloader"):
        evaluate_sampled(model, train_data, None)
    n_real_items = test_data._dataset.item_num - 1
    with pytest.raises(SampledEvaluationError, match=f"has {n_real_items} items; .* needs at least 2000"):
        evaluate_sampled(model, test_data, None, n_negatives=1999)
    # unfiltered ml-100k: its longest users leave fewer than 999 negatives
    from recbole.data import create_dataset, data_preparation

    from recbole_llmkd.config import Config

    config = Config("SASRec", "ml-100k", config_dict=tiny_seq_config)
    train_all, valid_all, test_all = data_preparation(config, create_dataset(config))
    with pytest.raises(SampledEvaluationError, match=r"user \d+ has 7\d\d items in its sequence"):
        evaluate_sampled(model, test_all, [train_all, valid_all, test_all])
