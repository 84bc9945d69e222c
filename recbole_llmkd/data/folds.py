"""Cross-fitted teachers: user folds, a training split without one fold, and the fold of every example row.

A teacher trained to convergence fits its own training examples. Its top-K lists on the training prefixes then
mostly hold the very target (96 % for a 4 x 256 SASRec on Last.fm, ``benchmarks/RESULTS.md``), so ranking
distillation re-teaches the label the student already has. Cross-fitting gives every training prefix the list of
a teacher that never trained on that user:

1. the users are split into K folds by their raw token (``keys.user_fold``);
2. teacher k is trained with ``cross_fit_folds: K`` and ``cross_fit_fold: k``: its training split without the
   users of fold k (``hold_out_fold``; validation and test unchanged);
3. the export takes each training row from the teacher of its user's fold and every other row (validation, test)
   and the item embeddings from the teacher trained on everything
   (``export_teacher(..., cross_fit=[the K fold teachers])``, ``run_recbole_llmkd.py export --cross-fit``).

A teacher that reads a frozen pretrained item table (LLMRec's ``item_table: <SASRec checkpoint>``, E4SRec) is only
cross-fitted when its table is: the export warns (``item_table_leak``) when a fold teacher's table was trained on the
held-out users.
"""
from __future__ import annotations

import logging
import os
from typing import Optional

import numpy as np
import torch

from recbole_llmkd.config_schema import read_config
from recbole_llmkd.data.keys import user_fold
from recbole_llmkd.errors import ConfigValueError

logger = logging.getLogger("recbole_llmkd")


def cross_fit_setting(config) -> Optional[tuple[int, int]]:
    """``(fold, folds)`` of a fold teacher's config, or None for a teacher trained on every user.

    Raises:
        ConfigValueError: only one of ``cross_fit_folds`` / ``cross_fit_fold`` is set, or the fold is not below
            the number of folds.
    """
    folds = read_config(config, "cross_fit_folds")
    fold = read_config(config, "cross_fit_fold")
    if folds is None and fold is None:
        return None
    if folds is None or fold is None:
        raise ConfigValueError(f"cross_fit_folds={folds!r}, cross_fit_fold={fold!r}: set both (fold k of K users "
                               "held out of the teacher's training split) or neither")
    if fold >= folds:
        raise ConfigValueError(f"cross_fit_fold={fold} must be below cross_fit_folds={folds} (folds 0 .. {folds - 1})")
    return fold, folds


def row_folds(dataset, folds: int) -> np.ndarray:
    """``[len(dataset.inter_feat)]`` int64: the fold of each row's user (``keys.user_fold`` of the raw token)."""
    user_tokens = dataset.field2id_token[dataset.uid_field]
    fold_of_user = np.array([user_fold(str(token), folds) if i > 0 else -1 for i, token in enumerate(user_tokens)],
                            dtype=np.int64)  # [n_users]; internal id 0 is [PAD]
    user_ids = dataset.inter_feat[dataset.uid_field]  # [N]
    return fold_of_user[np.asarray(user_ids, dtype=np.int64)]


def hold_out_fold(config, train_data):
    """``train_data`` without the rows of the users of fold ``cross_fit_fold`` (a new loader of the same class, same
    sampler and shuffling), or ``train_data`` itself when the config sets no fold (``cross_fit_setting``)."""
    setting = cross_fit_setting(config)
    if setting is None:
        return train_data
    fold, folds = setting
    dataset = train_data._dataset
    keep = row_folds(dataset, folds) != fold  # [N]
    if keep.all() or not keep.any():
        raise ConfigValueError(f"cross_fit_fold={fold} of {folds}: the fold holds {'no' if keep.all() else 'every'} "
                               "training row; use fewer folds")
    kept = dataset.copy(dataset.inter_feat[torch.from_numpy(np.nonzero(keep)[0])])
    logger.info(f"cross-fitting: the users of fold {fold} of {folds} are held out of training: "
                f"{int((~keep).sum()):,} of {len(keep):,} training rows removed")
    return type(train_data)(config, kept, train_data._sampler, shuffle=train_data.shuffle)


def item_table_leak(config) -> Optional[str]:
    """Why a fold teacher's frozen pretrained item table defeats its cross-fitting, or None.

    An E4SRec-style teacher (``item_table: <a RecBole checkpoint>``) scores items with a table another model learned;
    a table trained on every user (or without another fold) carries the held-out users' own training sequences into
    their lists. Measured on the ml-100k ``cpu`` slice (``benchmarks/RESULTS.md``): 58 % of the cross-fitted lists
    still held the target with the shared table, 49 % with tables trained without the same fold.
    """
    setting = cross_fit_setting(config)
    source = config["item_table"] if "item_table" in config else None
    if setting is None or source is None or not os.path.isfile(str(source)):  # not a fold teacher, or no pretrained table
        return None
    from recbole_llmkd.run import read_checkpoint

    table_setting = cross_fit_setting(read_checkpoint(source)["config"])
    if table_setting == setting:
        return None
    fold, folds = setting
    trained = "on every user" if table_setting is None else f"with fold {table_setting[0]} of {table_setting[1]} held out"
    return (f"fold teacher {fold} of {folds} reads the frozen item table {source}, which was trained {trained}: "
            f"the users of fold {fold} reach their own lists through it. Train the table with cross_fit_folds: "
            f"{folds}, cross_fit_fold: {fold} as well")
