"""The served student: a DLLM2Rec student folded and written as a checkpoint that needs no teacher file.

``save_folded(model, path)`` calls ``model.fold_teacher()`` (``ed_weight·g(z)`` baked into the item tables, in
memory) and writes RecBole's checkpoint layout: a plain RecBole checkpoint of the host class (e.g. ``SASRec``)
whenever the folded student is one (``model.plain_exportable()``), else a checkpoint of the KD class with
``ed_folded: True``, ``teacher: ~`` and ``kd_method: none``, which ``recbole_llmkd.run.load`` rebuilds without the
teacher.
"""
import copy
import os
from pathlib import Path
from typing import Dict, Optional

import torch

from recbole_llmkd import compat
from recbole_llmkd.model.distiller import TeacherConfigError

ED_KEYS = {"ed_weight": "ed_weight", "ed_projector": "ed_projector_kind", "ed_apply_to": "ed_apply_to", "ed_mode": "ed_mode"}


def save_folded(model, path, config=None, plain: Optional[bool] = None) -> Dict[str, str]:
    """Fold ``model`` (a ``Distiller`` student) and write its checkpoint to ``path``.

    Args:
        config: the config to save (default: the one the model was built with, ``model.kd_config``).
        plain: None: a plain RecBole checkpoint whenever possible; True: raise when it is not possible; False: always
            the KD class's checkpoint.

    Returns:
        ``{"path": ..., "model": class name the checkpoint loads into}``.
    """
    config = config if config is not None else model.kd_config
    if plain and not model.plain_exportable():
        raise TeacherConfigError(
            "ed_apply_to: input embeds input items with b + ed·g(z) but scores with b; RecBole's "
            f"{model.recbole_parent().__name__} ties both to one table, so the folded student is not a plain "
            "RecBole model. Use ed_apply_to: input_and_output for a plain export, or save_folded(plain=False)"
        )
    plain = model.plain_exportable() if plain is None else plain
    model.fold_teacher()
    config = copy.deepcopy(config)
    config["teacher"] = None
    config["kd_method"] = "none"
    for key, attribute in ED_KEYS.items():
        config[key] = getattr(model, attribute)
    state_dict = model.state_dict()  # folded: with a plain export, the host's nn.Embedding, nothing of ED left
    if plain:
        parent = model.recbole_parent()
        config["model"] = parent.__name__
        config.model = parent.__name__
        compat.as_plain_recbole_config(config)  # the pickle then references RecBole only
        model_name = parent.__name__
    else:
        config["ed_folded"] = True
        model_name = type(model).__name__
    checkpoint = {
        "config": config,
        "epoch": -1,
        "cur_step": 0,
        "best_valid_score": None,
        "state_dict": state_dict,
        "other_parameter": model.other_parameter(),
        "optimizer": None,
    }
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(checkpoint, os.fspath(path), pickle_protocol=4)
    return {"path": os.fspath(path), "model": model_name}
