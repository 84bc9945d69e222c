"""Teacher artifact export: a trained teacher -> one artifact file (docs/ARTIFACTS.md).

The teacher is a trained LLMRec, or **any trained RecBole sequential model** (SASRec, GRU4Rec, BERT4Rec, a KD
student, your own): a large SASRec compresses into a small one exactly like an LLM does. Such a model's scores are
its ``full_sort_predict`` (``score_kind: logit``; PAD excluded), and its item embeddings (``item_embedding``, row 0
zeros) are the optional ``item_text_emb`` (``item_text: auto`` or ``item_table``; it has no titles to read).

For every row of the train split (RecBole's default augmentation: every prefix of every user, whatever
``llm_train_examples`` the teacher was trained with) and of the valid and test splits:

- ``topk_ids`` [N, K]: the teacher's best K items (argsort of its all-item logits; PAD excluded; target and
  history items are kept, as in the official code), best first;
- ``topk_scores`` [N, K]: their logits (``score_kind: logit``);
- ``confidence`` [N, K]: softmax over the K scores;
- ``target_score`` [N]: the logit of the ground-truth target;
- optionally ``user_state`` [N, d_llm].

Plus ``item_text_emb`` [n_items, d_llm]: each item's title through the **base** LLM (LoRA disabled), last layer,
last token, row 0 zeros (BIGRec recipe); for datasets without an ``.item`` file, ``input_proj(E)`` of the teacher
(docs/METHODS.md §1.3 fallback; recorded in ``teacher.item_text_emb_source``).

The export is written chunk by chunk through ``ArtifactWriter``: an interrupted export, re-run with the same
arguments, continues where it stopped. Default output: ``<teacher run dir>/teacher_artifacts.safetensors``.

    python -m recbole_llmkd.jobs.export RUN_DIR_OR_CHECKPOINT [--output PATH] [--topk 50] [--batch-size 256]
        [--workers N] [--ray-address auto|HOST:PORT|ray://HOST:PORT]
    run_recbole_llmkd.py export ...                  (the same job, the same options)

With ``--workers`` / ``--ray-address`` the rows are computed by teacher replicas on Ray (``export_ray.py``), giving
the same artifact.
"""
from __future__ import annotations

import json
import logging
import math
import os
import sys
import time
from pathlib import Path
from typing import Any, List, NamedTuple, Optional, Sequence

import numpy as np
import torch

from recbole_llmkd.data.folds import cross_fit_setting, item_table_leak, row_folds
from recbole_llmkd.data.item_text import fallback_item_text, item_titles_for_dataset
from recbole_llmkd.data.keys import dataset_example_keys
from recbole_llmkd.data.paths import TEACHER_RUN_ARTIFACT, diagnostics_path
from recbole_llmkd.data.reader import load_artifacts
from recbole_llmkd.data.writer import ArtifactWriter, dataset_metadata
from recbole_llmkd.errors import CheckpointMismatchError, ConfigValueError, Interrupted, ctrl_c_as
from recbole_llmkd.run import load, load_model, read_checkpoint, resolve_checkpoint

ITEM_TEXT_SOURCES = ("auto", "titles", "item_table", "text_encoder", "none")
# Config keys that define what the teacher computes; copied into the artifact's metadata.
TEACHER_CONFIG_KEYS = (
    "llm_backbone",
    "llm_n_layers",
    "lora_r",
    "lora_alpha",
    "lora_dropout",
    "lora_target_modules",
    "item_table",
    "item_dim",
    "head",
    "use_item_titles",
    "llm_title_max_tokens",
    "llm_title_view",
    "MAX_ITEM_LIST_LENGTH",
    "llm_train_examples",
    "learning_rate",
    "epochs",
    "seed",
    "eval_args",
)
# The same for a BIGRec teacher (generation and grounding).
BIGREC_TEACHER_CONFIG_KEYS = (
    "llm_backbone", "llm_n_layers", "lora_r", "lora_alpha", "lora_dropout", "lora_target_modules",
    "bigrec_template", "bigrec_instruction", "bigrec_history_prefix", "bigrec_num_beams", "bigrec_max_new_tokens",
    "bigrec_pop_gamma", "MAX_ITEM_LIST_LENGTH", "llm_train_examples", "learning_rate", "epochs", "seed", "eval_args",
)
# The same for a RecBole teacher (whichever of them its model has).
RECBOLE_TEACHER_CONFIG_KEYS = (
    "hidden_size", "embedding_size", "inner_size", "n_layers", "n_heads", "num_layers", "loss_type",
    "MAX_ITEM_LIST_LENGTH", "learning_rate", "epochs", "seed", "eval_args",
)

logger = logging.getLogger("recbole_llmkd")


def _jsonable(value: Any) -> Any:
    return json.loads(json.dumps(value, default=str))


def _teacher_metadata(model, config, checkpoint: Path, item_text_source: str, n_fallbacks: Optional[int],
                      fold_teachers: Optional[list] = None, ensemble: Optional[List[Path]] = None) -> dict:
    from recbole_llmkd.llm import sha256_file

    def paths(checkpoints: List[Path]):  # one checkpoint: its path (the format before ensembles), several: a list
        names = [str(path.resolve()) for path in checkpoints]
        return names[0] if len(names) == 1 else names

    def hashes(checkpoints: List[Path]):
        digests = [sha256_file(path) for path in checkpoints]
        return digests[0] if len(digests) == 1 else digests

    cross_fit = None if not fold_teachers else {
        "folds": len(fold_teachers),
        "checkpoints": [paths(fold_teacher.checkpoints) for fold_teacher in fold_teachers],
        "checkpoints_sha256": [hashes(fold_teacher.checkpoints) for fold_teacher in fold_teachers],
        "item_table_leaks": [fold_teacher.item_table_leak for fold_teacher in fold_teachers],  # None: no leak
    }
    members = None if not ensemble else {
        "combine": "log of the mean softmax probability over all items (ensemble_log_probs)",
        "checkpoints": [str(path.resolve()) for path in ensemble],
        "checkpoints_sha256": [sha256_file(path) for path in ensemble],
    }

    is_llm = _is_llm_teacher(model)
    keys = TEACHER_CONFIG_KEYS if is_llm else BIGREC_TEACHER_CONFIG_KEYS if _is_generative_teacher(model) \
        else RECBOLE_TEACHER_CONFIG_KEYS
    return _jsonable(
        {
            "name": type(model).__name__,
            "checkpoint": str(checkpoint.resolve()),
            "checkpoint_sha256": sha256_file(checkpoint),
            "backbone": dict(model.backbone_identity) if hasattr(model, "backbone_identity") else None,
            "config": {key: config[key] for key in keys if key in config},
            "item_text_emb_source": item_text_source,
            "item_text_fallbacks": n_fallbacks,
            "cross_fit": cross_fit,
            "ensemble": members,  # the further teachers whose scores are averaged with this one's, or None
        }
    )


def _is_llm_teacher(model) -> bool:
    """An LLMRec (a user state and a scoring head over its item table)."""
    from recbole_llmkd.model.llmrec import LLMRec

    return isinstance(model, LLMRec)


def _is_generative_teacher(model) -> bool:
    """A BIGRec (generation grounded by L2 distance: scores are -distances, item_text_emb its grounding table)."""
    from recbole_llmkd.model.bigrec import BIGRec

    return isinstance(model, BIGRec)


def read_teacher_checkpoint(checkpoint: Path) -> dict:
    """The saved RecBole checkpoint of a teacher (``run.read_checkpoint``); a clear error unless it is one of a
    sequential model."""
    from recbole.utils import ModelType

    saved = read_checkpoint(checkpoint)
    config = saved["config"]
    if getattr(config, "model_class", None) is None or config["MODEL_TYPE"] != ModelType.SEQUENTIAL:
        raise CheckpointMismatchError(
            f"{checkpoint} was written by {config['model']!r}, which is not a sequential recommender: a teacher "
            "ranks the next item of every training prefix (LLMRec or a RecBole sequential model)"
        )
    return saved


def _titles_and_fallbacks(config, dataset) -> tuple[list[str], int]:
    titles = item_titles_for_dataset(dataset, config, logger=logger)
    item_tokens = dataset.field2id_token[dataset.iid_field]
    return titles, sum(titles[i] == fallback_item_text(str(item_tokens[i])) for i in range(1, len(titles)))


def choose_item_text(config, dataset, item_text: str, model=None,
                     text_encoder: str = "minilm") -> tuple[str, Optional[list[str]], Optional[int]]:
    """(source label, titles by internal id or None, number of 'item <token>' fallbacks or None)."""
    if item_text not in ITEM_TEXT_SOURCES:
        raise ConfigValueError(f"item_text must be one of {list(ITEM_TEXT_SOURCES)}, got {item_text!r}")
    if item_text == "text_encoder":  # any teacher: the titles through a sentence encoder (llm/text_encoder.py)
        titles, n_fallbacks = _titles_and_fallbacks(config, dataset)
        return f"text encoder {text_encoder} on item titles", titles, n_fallbacks
    if model is not None and _is_generative_teacher(model):
        if item_text == "item_table":
            raise ConfigValueError(f"item_text=item_table: {type(model).__name__} has no item table; use auto (its "
                                   "grounding table of title embeddings), text_encoder or none (command line: "
                                   "--item-text / --export-item-text)")
        if item_text == "none":
            return "none", None, None
        titles, n_fallbacks = _titles_and_fallbacks(config, dataset)
        return "base LLM (LoRA disabled) on item titles, last layer, last token (BIGRec's grounding table)", titles, \
            n_fallbacks
    if model is not None and not _is_llm_teacher(model):
        if item_text == "titles":
            raise ConfigValueError(
                f"item_text=titles needs an LLM teacher to read the titles; {type(model).__name__} has none: use "
                "item_text=item_table (its item embeddings) or none (command line: --item-text item_table, or "
                "--export-item-text item_table with --export-teacher)"
            )
        if item_text == "none":
            return "none", None, None
        if not hasattr(model, "item_embedding"):
            raise ConfigValueError(
                f"{type(model).__name__} has no item_embedding to export as item_text_emb: use item_text=none "
                "(command line: --item-text none)"
            )
        return f"item_embedding of the teacher {type(model).__name__} (no item titles)", None, None
    item_file = Path(config["data_path"]) / f"{config['dataset']}.item"
    if item_text == "auto":
        item_text = "titles" if item_file.is_file() else "item_table"
    if item_text == "none":
        return "none", None, None
    if item_text == "item_table":
        return "input_proj(item_table) of the teacher (no item titles)", None, None
    titles, n_fallbacks = _titles_and_fallbacks(config, dataset)
    return "base LLM (LoRA disabled) on item titles, last layer, last token", titles, n_fallbacks


@torch.no_grad()
def _item_text_embeddings(model, titles: Optional[list[str]], batch_size: int, device) -> torch.Tensor:
    """[n_items, d] float32, row 0 zeros: titles through the base LLM, input_proj(E) of an LLM teacher without
    titles, or the item embeddings of a RecBole teacher."""
    from recbole_llmkd.llm import encode_texts

    if _is_generative_teacher(model):
        item_vectors = model.item_text_emb.detach().float().cpu().clone()  # [n_items, d_llm]: what it grounds with
    elif not _is_llm_teacher(model):
        item_vectors = model.item_embedding.weight[: model.n_items].detach().float().cpu().clone()  # [n_items, H]
    elif titles is None:
        item_vectors = model.input_proj(model.item_embedding.weight).float().cpu()  # [n_items, d_llm]
    else:
        with model.llm.disable_adapter():
            item_vectors = encode_texts(
                model.llm, model.tokenizer, titles[1:], batch_size=batch_size, device=device
            )  # [n_items - 1, d_llm]
        item_vectors = torch.cat([item_vectors.new_zeros(1, item_vectors.shape[1]), item_vectors], dim=0)
    item_vectors[0] = 0.0
    return item_vectors


def ensemble_log_probs(member_logits: Sequence[torch.Tensor]) -> torch.Tensor:
    """The scores of an ensemble of M teachers: the log of the mean of their softmax probabilities over all items,

        s_i = log( (1/M) * sum_m softmax(s^m)_i ) = logsumexp_m( log_softmax(s^m)_i ) - log M

    ``member_logits``: M tensors [b, n_items] (PAD at -inf in each) -> [b, n_items] (PAD -inf). A softmax of the
    result is the ensemble's mean probability, so the scores are logits (``score_kind: logit``) for every KD method.
    """
    log_probs = torch.stack([torch.log_softmax(logits.float(), dim=1) for logits in member_logits])  # [M, b, n_items]
    return torch.logsumexp(log_probs, dim=0) - math.log(len(member_logits))  # [b, n_items]


def history_view(model, interaction):
    """``interaction`` as ``model`` reads it: when the rows hold more history items than the model reads (an ensemble
    member or fold teacher with a smaller ``MAX_ITEM_LIST_LENGTH`` than the teacher exported, whose data built the
    rows), every history field keeps each row's last ``model.max_seq_length`` items, left-aligned and zero-padded as
    RecBole builds them, and the length is cut to match: exactly the rows the model's own data would hold. Otherwise
    ``interaction`` itself."""
    from recbole.data.interaction import Interaction

    item_seq, item_seq_len = interaction[model.ITEM_SEQ], interaction[model.ITEM_SEQ_LEN]  # [b, L], [b]
    rows_history, model_history = item_seq.shape[1], int(model.max_seq_length)
    if model_history >= rows_history:
        return interaction
    list_suffix = model.ITEM_SEQ[len(model.ITEM_ID):]  # RecBole's LIST_SUFFIX
    # [b, n]: each row's last n positions; a row shorter than n keeps its first n, whose tail is RecBole's zero padding
    start = (item_seq_len - model_history).clamp(min=0)  # [b]
    index = start[:, None] + torch.arange(model_history, device=item_seq.device)[None, :]  # [b, n], all < L
    fields = {}
    for name, value in interaction.interaction.items():
        if name.endswith(list_suffix) and value.dim() >= 2 and value.shape[1] == rows_history:
            gather_index = index.view(*index.shape, *[1] * (value.dim() - 2)).expand(-1, -1, *value.shape[2:])
            value = value.gather(1, gather_index)  # [b, n, ...]
        fields[name] = value
    fields[model.ITEM_SEQ_LEN] = item_seq_len.clamp(max=model_history)  # [b]
    return Interaction(fields)


def _all_item_logits(model, interaction) -> tuple[torch.Tensor, Optional[torch.Tensor]]:
    """(logits [b, n_items] with PAD at -inf, the LLM teacher's user state [b, d_llm] or None) of one teacher, which
    reads its own number of history items of each row (``history_view``)."""
    interaction = history_view(model, interaction)
    if _is_llm_teacher(model):
        user_state = model.user_state(interaction)  # [b, d_llm]
        return model.score(user_state), user_state  # [b, n_items], PAD = -inf
    logits = model.full_sort_predict(interaction).reshape(len(interaction), -1)[:, : model.n_items].float()
    logits[:, 0] = -torch.inf  # [b, n_items]: PAD is never a teacher item
    return logits, None


@torch.no_grad()
def _teacher_rows(models: Sequence[Any], interaction, topk: int, with_user_state: bool) -> dict[str, torch.Tensor]:
    """Artifact tensors for one batch of examples (interaction already on the models' device): of one teacher
    (``models`` of one: its own logits), or of an ensemble (``ensemble_log_probs`` of its members' logits)."""
    if len(models) == 1:
        logits, user_state = _all_item_logits(models[0], interaction)  # [b, n_items], [b, d_llm] or None
    else:
        logits, user_state = ensemble_log_probs([_all_item_logits(m, interaction)[0] for m in models]), None
    topk_scores, topk_ids = torch.topk(logits, topk, dim=1)  # [b, K] each, best first
    target = interaction[models[0].POS_ITEM_ID]  # [b]
    rows = {
        "topk_ids": topk_ids.cpu(),
        "topk_scores": topk_scores.cpu(),
        "confidence": torch.softmax(topk_scores, dim=1).cpu(),
        "target_score": logits.gather(1, target[:, None]).squeeze(1).cpu(),
    }
    if with_user_state:
        rows["user_state"] = user_state.cpu()
    return rows


def _check_history(where: str, loaded_config, teacher_config) -> None:
    """A stand-in teacher reads at most the exported teacher's history: the rows are built with the teacher's
    ``MAX_ITEM_LIST_LENGTH``, and one that reads fewer items gets each row's last ones (``history_view``)."""
    history, teacher_history = loaded_config["MAX_ITEM_LIST_LENGTH"], teacher_config["MAX_ITEM_LIST_LENGTH"]
    if history > teacher_history:
        raise ConfigValueError(f"{where} reads {history} history items, the teacher exported {teacher_history}: the "
                               "rows hold the exported teacher's history, so export the teacher that reads the most "
                               "(an ensemble's first member)")


def _check_item_count(where: str, loaded, reference) -> None:
    """A stand-in teacher (an ensemble member, a fold teacher) must score the items ``reference`` scores."""
    if loaded.n_items != reference.n_items:
        raise ConfigValueError(f"{where} scores {loaded.n_items} items, the teacher {reference.n_items}: not the "
                               "same dataset filtering")


def _load_ensemble_members(paths: Sequence[str | os.PathLike], model, config, dataset, device) -> list:
    """The further teachers of an ensemble (``ensemble``), checked against the teacher ``model``: trained sequential
    models on the same dataset, with the same number of items and history length, whose scores are logits (not
    BIGRec's distances). The configs are checked before a model is built on the teacher's dataset."""
    def refuse_distances(teacher, where: str) -> None:
        if _is_generative_teacher(teacher):
            raise ConfigValueError(f"{where}: {type(teacher).__name__} scores by distance (score_kind neg_l2), which "
                                   "cannot be averaged with logits; an ensemble's teachers all give logits")

    refuse_distances(model, "ensemble: the teacher exported")
    members = []
    for path in paths:
        member_checkpoint = resolve_checkpoint(path)
        saved = read_teacher_checkpoint(member_checkpoint)
        member_config, where = saved["config"], f"ensemble: {member_checkpoint}"
        if member_config["dataset"] != config["dataset"]:
            raise ConfigValueError(f"{where} was trained on {member_config['dataset']}, the teacher on "
                                   f"{config['dataset']}")
        _check_history(where, member_config, config)
        member, _ = load_model(saved, dataset, device=device)
        _check_item_count(where, member, model)
        refuse_distances(member, where)
        members.append(member)
    return members


class FoldTeacher(NamedTuple):
    """A cross-fitted fold teacher (one model, or the fold's ensemble), loaded for the export."""

    models: List[Any]  # in eval mode; several: an ensemble (the teacher's members, each trained without this fold)
    checkpoints: List[Path]
    item_table_leak: Optional[str]  # data/folds.py item_table_leak: why a frozen item table saw its fold, or None


def _fold_group(entry, n_members: int) -> List[str | os.PathLike]:
    """One ``cross_fit`` entry as a list of paths: a path, a list of paths, or (for an ensemble of ``n_members`` > 1)
    a string of paths joined by commas (the command line)."""
    if isinstance(entry, str) and n_members > 1:
        return [part for part in entry.split(",") if part]
    if isinstance(entry, (str, os.PathLike)):
        return [entry]
    return list(entry)


def _load_fold_teachers(entries: Sequence[Any], models: List[Any], config, dataset, device) -> List[FoldTeacher]:
    """The fold teachers ordered by fold: K entries, each a teacher (or, for an ensemble of M ``models``, M teachers:
    the members' fold runs, in the members' order) trained with ``cross_fit_folds: K`` and fold k, folds 0 .. K-1
    once each, of the classes of ``models``, on the same dataset; a frozen item table that saw the fold is a warning."""
    by_fold: dict[int, FoldTeacher] = {}
    for entry in entries:
        group = _fold_group(entry, len(models))
        if len(group) != len(models):
            raise ConfigValueError(f"cross_fit: {','.join(map(str, group))} is {len(group)} teacher(s), but the "
                                   f"teacher exported is an ensemble of {len(models)}: give each fold's teachers in "
                                   "the members' order, joined by commas")
        fold_models, fold_checkpoints, leaks, settings = [], [], [], set()
        for fold_path, member in zip(group, models):
            fold_checkpoint = resolve_checkpoint(fold_path)
            saved = read_teacher_checkpoint(fold_checkpoint)
            fold_config = saved["config"]
            setting = cross_fit_setting(fold_config)
            where = f"cross_fit: {fold_checkpoint}"
            if setting is None:
                raise ConfigValueError(f"{where} was trained on every user (no cross_fit_folds / cross_fit_fold in "
                                       "its config); train each fold teacher with cross_fit_folds: K, cross_fit_fold: k")
            if setting[1] != len(entries):
                raise ConfigValueError(f"{where} is fold {setting[0]} of {setting[1]}, but {len(entries)} fold "
                                       "teachers were given: give exactly one teacher per fold")
            if fold_config["model"] != type(member).__name__ or fold_config["dataset"] != config["dataset"]:
                raise ConfigValueError(f"{where} is a {fold_config['model']} on {fold_config['dataset']}; the teacher "
                                       f"it stands in for is a {type(member).__name__} on {config['dataset']}")
            _check_history(where, fold_config, config)
            fold_model, _ = load_model(saved, dataset, device=device)
            _check_item_count(where, fold_model, member)
            leak = item_table_leak(fold_config)
            if leak:
                logger.warning(f"{where}: {leak}")
            fold_models.append(fold_model)
            fold_checkpoints.append(fold_checkpoint)
            leaks.append(leak)
            settings.add(setting)
        if len(set(fold_checkpoints)) < len(fold_checkpoints):
            raise ConfigValueError(f"cross_fit: {','.join(map(str, fold_checkpoints))} names one teacher twice: give "
                                   "each member's own fold run")
        if len(settings) > 1:
            raise ConfigValueError(f"cross_fit: {','.join(map(str, fold_checkpoints))} were trained without different "
                                   f"folds {sorted(settings)}: one fold's ensemble is trained without the same fold")
        fold = settings.pop()[0]
        if fold in by_fold:
            raise ConfigValueError(f"cross_fit: fold {fold} is given twice ({by_fold[fold].checkpoints[0]} too)")
        by_fold[fold] = FoldTeacher(fold_models, fold_checkpoints, "; ".join(filter(None, leaks)) or None)
    return [by_fold[fold] for fold in range(len(entries))]


def _cross_fitted_rows(fold_teachers: List[FoldTeacher], folds: np.ndarray, interaction, topk: int,
                       with_user_state: bool) -> dict[str, torch.Tensor]:
    """``_teacher_rows`` of a batch (on the teachers' device), each row computed by the fold teacher of its user
    (``folds`` [B], the fold of each row)."""
    device = interaction[fold_teachers[0].models[0].POS_ITEM_ID].device
    folds = torch.as_tensor(folds)  # [B]
    rows: dict[str, torch.Tensor] = {}
    for fold, fold_teacher in enumerate(fold_teachers):
        index = torch.nonzero(folds == fold).squeeze(1)  # [b_fold]
        if index.numel() == 0:
            continue
        for name, tensor in _teacher_rows(fold_teacher.models, interaction[index.to(device)], topk,
                                          with_user_state).items():
            if name not in rows:
                rows[name] = tensor.new_zeros((len(folds), *tensor.shape[1:]))  # [B, ...] on the CPU
            rows[name][index] = tensor
    return rows


class ExportInterrupted(Interrupted):
    """An export stopped by Ctrl-C; the chunks written so far stay, and the same export resumes from them."""


def export_teacher(
    checkpoint_or_run_dir: str | os.PathLike,
    output: Optional[str | os.PathLike] = None,
    topk: int = 50,
    batch_size: Optional[int] = None,
    with_user_state: bool = False,
    chunk_rows: int = 4096,
    key_history: int = 10,
    item_text: str = "auto",
    device: Any = None,
    overwrite: bool = False,
    show_progress: bool = True,
    text_encoder: str = "minilm",
    compare_with: Optional[str | os.PathLike] = None,
    ray_address: Optional[str] = None,
    num_workers: Optional[int] = None,
    cpus_per_worker: float = 1,
    gpus_per_worker: Optional[float] = None,
    cross_fit: Optional[Sequence[Any]] = None,
    ensemble: Optional[Sequence[str | os.PathLike]] = None,
) -> Path:
    """Export a trained teacher's artifacts (LLMRec or a RecBole sequential model); returns the path. See the
    module docstring.

    Args:
        checkpoint_or_run_dir: the teacher's checkpoint (``.pth``) or its run directory.
        output: artifact file; default ``<checkpoint dir>/teacher_artifacts.safetensors``.
        topk: K, teacher items per row (store more than the students use: they can truncate).
        batch_size: rows per teacher forward; default the teacher's ``eval_batch_size``.
        with_user_state: also store the teacher's user state [N, d_llm] per row.
        chunk_rows: rows per resumable chunk.
        key_history: history items in the example key (docs/ARTIFACTS.md).
        item_text: ``auto`` (an LLM teacher: titles when the dataset has an .item file, else the item table; a
            RecBole teacher: its item table), ``titles``, ``item_table``, ``text_encoder`` (the titles through the
            sentence encoder ``text_encoder``, for any teacher) or ``none`` (no ``item_text_emb``).
        text_encoder: the sentence encoder of ``item_text: text_encoder`` (``minilm`` or a local directory).
        device: where to run the teacher (default: its training device, CPU without CUDA).
        overwrite: replace an existing finished artifact file.
        compare_with: a plain student's checkpoint or run directory (any RecBole sequential model): the
            diagnostics then also give the share of each teacher list that this model ranks in its own top-K
            anyway (``distill.overlap_ratio``), i.e. what the teacher has left to teach it.
        ray_address, num_workers: when either is given, the pending chunks are computed on Ray by ``num_workers``
            teacher replicas (default: as many as the cluster holds) and written here as they arrive
            (``jobs/export_ray.py``); ``ray_address`` ``auto``, ``HOST:PORT`` or ``ray://HOST:PORT`` joins that
            cluster, none starts Ray embedded. The artifact is the single-process one (same rows, batching and
            chunks), and resumes the same way. Neither given: the chunks are computed here, one after the other.
        cpus_per_worker, gpus_per_worker: Ray resources of each worker (default 1 CPU, with that many torch
            threads; 1 GPU when the export's device is CUDA, else none).
        cross_fit: the run dirs or checkpoints of K fold teachers of the same model and dataset, trained with
            ``cross_fit_folds: K`` and ``cross_fit_fold`` 0 .. K-1 (``data/folds.py``): each training row is then
            computed by the teacher that never trained on its user; validation and test rows and the item
            embeddings still come from this teacher. Not with Ray workers. With ``ensemble``, each entry is that
            fold's ensemble: the members' fold teachers in the members' order (a list, or paths joined by commas).
        ensemble: the run dirs or checkpoints of further teachers (any RecBole sequential model or LLMRec, on the
            same dataset and items): every row then ranks the log of the mean of all the teachers' softmax
            probabilities (``ensemble_log_probs``; Hinton et al.'s distillation of an ensemble into one model).
            The item embeddings, user states and metadata are this teacher's; not with ``with_user_state`` or Ray.
    """
    checkpoint = resolve_checkpoint(checkpoint_or_run_dir)
    # resolved before the export's work: a wrong path is an error now, not after every row is computed
    student_checkpoint = resolve_checkpoint(compare_with) if compare_with is not None else None
    ensemble_checkpoints = [resolve_checkpoint(path) for path in ensemble or ()]
    named = [checkpoint.resolve()] + [path.resolve() for path in ensemble_checkpoints]
    if ensemble_checkpoints and len(set(named)) < len(named):
        raise ConfigValueError(f"ensemble: {', '.join(map(str, named))} names one teacher twice (the teacher exported "
                               "is the ensemble's first member)")
    if ray_address:  # likewise a Ray address where nothing listens (ray.init would hang for minutes on it)
        from recbole_llmkd.jobs.export_ray import check_ray_address

        check_ray_address(ray_address)
    output = Path(output) if output is not None else checkpoint.parent / TEACHER_RUN_ARTIFACT
    if output.exists() and not overwrite:
        raise FileExistsError(f"{output} already exists; delete it or pass overwrite=True (command line: --overwrite, "
                              "or --export-overwrite with --export-teacher)")

    # Ctrl-C: the chunks written so far stay in the partial artifact, and the same export again resumes from them
    with ctrl_c_as(ExportInterrupted, f"export interrupted; the same command again resumes it (the rows written so "
                                      f"far stay in {output}.partial)"):
        read_teacher_checkpoint(checkpoint)  # a sequential model's, checked before the data are built
        run = load(checkpoint, device=device)
        model, config, train_data = run.model, run.config, run.train_data
        split_datasets = {"train": train_data._dataset, "valid": run.valid_data._dataset, "test": run.test_data._dataset}
        split_datasets = {split: ds for split, ds in split_datasets.items() if len(ds.inter_feat) > 0}

        if with_user_state and not _is_llm_teacher(model):
            raise ConfigValueError(f"with_user_state: {type(model).__name__} is not an LLM teacher with a user state "
                                   "to store (SLMRec reads LLMRec teachers)")
        run_device = config["device"]
        batch_size = int(batch_size or config["eval_batch_size"] or 256)
        teachers = [model]  # the teachers whose scores the rows rank: this one, and the ensemble's others
        if ensemble_checkpoints:
            if with_user_state:
                raise ConfigValueError("ensemble: an ensemble has no single user state to store; export without "
                                       "with_user_state")
            if ray_address is not None or num_workers is not None:
                raise ConfigValueError("ensemble: the ensemble's export runs here, not on Ray workers")
            teachers += _load_ensemble_members(ensemble_checkpoints, model, config, train_data._dataset, run_device)
        fold_teachers, train_row_folds = None, None
        if cross_fit:
            if ray_address is not None or num_workers is not None:
                raise ConfigValueError("cross_fit: the cross-fitted export runs here, not on Ray workers")
            fold_teachers = _load_fold_teachers(cross_fit, teachers, config, train_data._dataset, run_device)
            train_row_folds = row_folds(train_data._dataset, len(fold_teachers))  # [N_train]

        item_text_source, titles, n_fallbacks = choose_item_text(config, train_data._dataset, item_text, model, text_encoder)
        metadata = dataset_metadata(
            train_data._dataset,
            key_history=key_history,
            score_kind=getattr(model, "score_kind", "logit"),  # BIGRec: neg_l2 (minus the grounding distance)
            teacher=_teacher_metadata(model, config, checkpoint, item_text_source, n_fallbacks, fold_teachers,
                                      ensemble_checkpoints),
        )
        writer = ArtifactWriter(
            output,
            metadata,
            splits={split: len(ds.inter_feat) for split, ds in split_datasets.items()},
            K=topk,
            chunk_rows=chunk_rows,
            overwrite=overwrite,
        )
        pending = {split: writer.pending_ranges(split) for split in split_datasets}
        n_pending = sum(end - start for ranges in pending.values() for start, end in ranges)
        n_total = sum(writer.splits.values())
        if n_pending < n_total:
            logger.info(f"export: resuming {writer.partial_dir}: {n_total - n_pending:,} of {n_total:,} rows already written")

        from tqdm.auto import tqdm

        start_time = time.perf_counter()
        progress = tqdm(total=n_pending, desc="teacher export", unit="row", disable=not show_progress)
        if ray_address is not None or num_workers is not None:  # the same chunks, computed by Ray workers
            from recbole_llmkd.jobs.export_ray import compute_chunks_on_ray

            keys = {split: dataset_example_keys(split_datasets[split], key_history) for split, r in pending.items() if r}

            def write_with_keys(split: str, chunk_start: int, chunk: dict) -> None:
                chunk["key"] = keys[split][chunk_start:chunk_start + len(chunk["topk_ids"])]  # [n]
                writer.write_chunk(split, chunk_start, chunk)

            compute_chunks_on_ray(
                checkpoint, train_data._dataset, [(split, *r) for split, ranges in pending.items() for r in ranges],
                lambda split, chunk_start, chunk_end: split_datasets[split].inter_feat[chunk_start:chunk_end],
                write_with_keys, topk, with_user_state, batch_size, ray_address=ray_address, num_workers=num_workers,
                cpus_per_worker=cpus_per_worker, gpus_per_worker=gpus_per_worker,
                use_gpu=torch.device(run_device).type == "cuda", on_rows=progress.update,
            )
            pending = {}  # computed
        for split, ranges in pending.items():
            split_dataset = split_datasets[split]
            keys = dataset_example_keys(split_dataset, key_history) if ranges else None  # [N]
            for chunk_start, chunk_end in ranges:
                parts: dict[str, list[torch.Tensor]] = {}
                for batch_start in range(chunk_start, chunk_end, batch_size):
                    batch_end = min(batch_start + batch_size, chunk_end)
                    interaction = split_dataset.inter_feat[batch_start:batch_end].to(run_device)
                    if split == "train" and fold_teachers:  # each row from the teacher that never trained on its user
                        rows = _cross_fitted_rows(fold_teachers, train_row_folds[batch_start:batch_end], interaction,
                                                  topk, with_user_state)
                    else:
                        rows = _teacher_rows(teachers, interaction, topk, with_user_state)
                    for name, tensor in rows.items():
                        parts.setdefault(name, []).append(tensor)
                    progress.update(batch_end - batch_start)
                chunk = {name: torch.cat(tensors) for name, tensors in parts.items()}
                chunk["key"] = keys[chunk_start:chunk_end]
                writer.write_chunk(split, chunk_start, chunk)
        progress.close()
        rows_seconds = time.perf_counter() - start_time

        if item_text_source != "none" and "item_text_emb" not in writer.done_globals():
            if item_text == "text_encoder":
                from recbole_llmkd.llm.text_encoder import encode_item_texts

                item_vectors = encode_item_texts(titles, text_encoder, batch_size=batch_size, device=run_device)
            else:
                item_vectors = _item_text_embeddings(model, titles, batch_size, run_device)
            writer.write_global("item_text_emb", item_vectors)
        path = writer.finalize()
    logger.info(
        f"export: wrote {path} ({os.path.getsize(path) / 2**20:.1f} MiB; {n_pending:,} rows computed in "
        f"{rows_seconds:.1f} s, {n_pending / max(rows_seconds, 1e-9):,.0f} rows/s; K={topk})"
    )
    with ctrl_c_as(ExportInterrupted, f"export interrupted after {path} was written, before its list diagnostics "
                                      f"({diagnostics_path(path)}): export again with --overwrite to have them"):
        student = None
        if student_checkpoint is not None:
            student, _ = load_model(read_teacher_checkpoint(student_checkpoint), train_data._dataset, device=run_device)
        write_list_diagnostics(path, train_data._dataset, student=student, batch_size=batch_size,
                               eval_datasets={split: split_datasets[split] for split in ("valid", "test")
                                              if split in split_datasets})
    return path


def write_list_diagnostics(artifact_path: str | os.PathLike, train_dataset, chunk_rows: int = 8192,
                           student=None, batch_size: int = 1024, eval_datasets: Optional[dict] = None) -> dict:
    """The teacher lists' diagnostics on the training split (``distill.teacher_list_diagnostics``): logged, and
    written to ``diagnostics_path(artifact_path)`` for the report. With ``student`` (a RecBole sequential model in
    eval mode, e.g. the plain student), also ``student_overlap``: the mean share of each list that the student
    ranks in its own top-K (``distill.overlap_ratio``, K = the artifact's). With ``eval_datasets`` (``{"valid":
    dataset, "test": dataset}``), also ``list_metrics``: each split's HR@k / NDCG@k (k = 10, 20 up to K) of the
    lists themselves (``evaluation.list_ranks``), the teacher's full-ranking quality, an ensemble's included.
    Returns them."""
    from recbole_llmkd.distill import overlap_ratio, teacher_list_diagnostics

    artifacts = load_artifacts(artifact_path)
    aligned = artifacts.align(train_dataset, split="train")
    inter = train_dataset.inter_feat
    target = inter[train_dataset.iid_field]  # [N]
    history = inter[train_dataset.iid_field + train_dataset.config["LIST_SUFFIX"]]  # [N, L]
    totals = {"target_in_list": 0.0, "history_in_list": 0.0, "history_items_share": 0.0}
    n_rows = len(target)
    for start in range(0, n_rows, chunk_rows):
        end = min(start + chunk_rows, n_rows)
        part = teacher_list_diagnostics(aligned.topk[start:end], target[start:end], history[start:end])
        for name in totals:
            totals[name] += part[name] * part["rows"]
    diagnostics = {"split": "train", "rows": n_rows, "K": int(aligned.K),
                   **{name: value / max(n_rows, 1) for name, value in totals.items()}}
    message = (
        f"export: teacher lists on the training split: {diagnostics['target_in_list']:.1%} contain the target, "
        f"{diagnostics['history_in_list']:.1%} contain history items ({diagnostics['history_items_share']:.1%} of "
        f"the K={diagnostics['K']} listed items are history items); rd_filter_candidates removes both from RD"
    )
    if student is not None:
        overlap = 0.0
        with torch.no_grad():
            for start in range(0, n_rows, batch_size):
                end = min(start + batch_size, n_rows)
                interaction = inter[start:end].to(student.device)
                logits = student.full_sort_predict(interaction).reshape(end - start, -1)[:, : student.n_items]
                overlap += overlap_ratio(aligned.topk[start:end], logits.float().cpu(), int(aligned.K)) * (end - start)
        diagnostics.update(student=type(student).__name__, student_overlap=overlap / max(n_rows, 1))
        message += (f"; {diagnostics['student_overlap']:.1%} of the listed items are in {diagnostics['student']}'s "
                    f"own top-{diagnostics['K']} already")
    if eval_datasets:
        from recbole_llmkd.evaluation import list_ranks, metrics_from_ranks

        cutoffs = [k for k in (10, 20) if k <= int(aligned.K)]
        diagnostics["list_metrics"] = {}
        for split, dataset in eval_datasets.items():
            eval_aligned = artifacts.align(dataset, split=split)
            ranks = list_ranks(eval_aligned.topk, dataset.inter_feat[dataset.iid_field])  # [N_split]
            split_metrics = metrics_from_ranks(ranks, ks=cutoffs)
            diagnostics["list_metrics"][split] = {name: value for name, value in split_metrics.items() if name != "mrr"}
        message += "; the lists' own " + ", ".join(
            f"{split} NDCG@10 {values['ndcg@10']:.4f}" for split, values in diagnostics["list_metrics"].items()
            if "ndcg@10" in values)
    logger.info(message)
    diagnostics_path(artifact_path).write_text(json.dumps(diagnostics, indent=2), encoding="utf-8")
    return diagnostics


EXPORT_PROG = "python -m recbole_llmkd.jobs.export"


def main(argv: Optional[list[str]] = None) -> int:
    """``python -m recbole_llmkd.jobs.export RUN_DIR [...]``: the ``export`` job of ``recbole_llmkd.cli``
    (``run_recbole_llmkd.py export``); bad input is one ``error:`` line, exit status 2."""
    from recbole_llmkd.cli import data_job_main

    return data_job_main("export", argv, EXPORT_PROG)


if __name__ == "__main__":
    sys.exit(main())
