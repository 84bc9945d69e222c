"""Model and trainer lookup: the plugin's own registry first, RecBole's built-ins second.

RecBole's ``get_model`` only knows its own package and, for an unknown name, fails with an unrelated
``No module named 'lightgbm'``; our lookup finds RecBole's models through ``compat.recbole_model_module`` and names
the available models.

Plugin models are registered by name -> "module:Class" so that listing them (``--help``) imports
neither torch-heavy modules nor RecBole.
"""
import difflib
import importlib
import importlib.util
import os
from typing import Dict, List

from recbole_llmkd import compat
from recbole_llmkd.errors import RecboleLLMKDError

# name -> "module path:ClassName"; users may add their own with register_model.
_PLUGIN_MODELS: Dict[str, str] = {
    "LLMRec": "recbole_llmkd.model.llmrec:LLMRec",
    "BIGRec": "recbole_llmkd.model.bigrec:BIGRec",
    "KDSASRec": "recbole_llmkd.model.kd_sasrec:KDSASRec",
    "KDGRU4Rec": "recbole_llmkd.model.kd_gru4rec:KDGRU4Rec",
    "KDBERT4Rec": "recbole_llmkd.model.kd_bert4rec:KDBERT4Rec",
    "SLMRec": "recbole_llmkd.model.slmrec:SLMRec",
}
# model name -> "module path:TrainerClass" for plugin models that need a trainer of their own.
_PLUGIN_TRAINERS: Dict[str, str] = {
    "LLMRec": "recbole_llmkd.trainer.llm_trainer:LLMTrainer",
    "BIGRec": "recbole_llmkd.trainer.llm_trainer:LLMTrainer",
    "KDSASRec": "recbole_llmkd.trainer.kd_trainer:KDTrainer",
    "KDGRU4Rec": "recbole_llmkd.trainer.kd_trainer:KDTrainer",
    "KDBERT4Rec": "recbole_llmkd.trainer.kd_trainer:KDTrainer",
    "SLMRec": "recbole_llmkd.trainer.llm_trainer:SLMTrainer",
}
# classes registered at run time by users (register_model(cls)).
_RUNTIME_MODELS: Dict[str, type] = {}


class UnknownModelError(RecboleLLMKDError, ValueError):
    """A model name that neither the plugin nor RecBole provides."""


def register_model(model_class: type, trainer: str = None) -> type:
    """Register a model class (usable as a decorator) so the CLI and quick_start can run it by name."""
    _RUNTIME_MODELS[model_class.__name__] = model_class
    if trainer is not None:
        _PLUGIN_TRAINERS[model_class.__name__] = trainer
    return model_class


def _recbole_properties_dir() -> str:
    spec = importlib.util.find_spec("recbole")
    if spec is None or spec.origin is None:
        raise ModuleNotFoundError(
            "RecBole is not installed. Install it without its stale pins: pip install --no-deps recbole==1.2.1"
        )
    return os.path.join(os.path.dirname(spec.origin), "properties", "model")


def plugin_model_names() -> List[str]:
    return sorted(set(_PLUGIN_MODELS) | set(_RUNTIME_MODELS))


def recbole_model_names() -> List[str]:
    """RecBole's built-in model names (from its per-model property files), exlib models excluded."""
    try:
        properties_dir = _recbole_properties_dir()
    except ModuleNotFoundError:
        return []
    names = [f[: -len(".yaml")] for f in os.listdir(properties_dir) if f.endswith(".yaml")]
    return sorted(n for n in names if compat.recbole_model_module(n) is not None)


def available_models() -> Dict[str, List[str]]:
    return {"recbole_llmkd": plugin_model_names(), "recbole": recbole_model_names()}


def _load(target: str):
    module_path, attr = target.split(":")
    return getattr(importlib.import_module(module_path), attr)


def get_model(model_name: str) -> type:
    """The model class for `model_name`: plugin models first, then RecBole's built-ins."""
    if model_name in _RUNTIME_MODELS:
        return _RUNTIME_MODELS[model_name]
    if model_name in _PLUGIN_MODELS:
        return _load(_PLUGIN_MODELS[model_name])
    module_path = compat.recbole_model_module(model_name)
    if module_path is not None:
        module = importlib.import_module(module_path)
        if hasattr(module, model_name):
            return getattr(module, model_name)
    models = available_models()
    all_names = models["recbole_llmkd"] + models["recbole"]
    close = difflib.get_close_matches(model_name, all_names, n=3, cutoff=0.6)
    hint = f" Did you mean: {', '.join(close)}?" if close else ""
    if not models["recbole"]:
        hint += " (RecBole is not installed: pip install --no-deps recbole==1.2.1)"
    builtins = "; RecBole's built-ins" if models["recbole"] else ""
    raise UnknownModelError(  # one line: the CLI prints it as its error; --list-models prints every name
        f"Unknown model '{model_name}'.{hint} --list-models lists the {len(all_names)} available ones "
        f"(recbole_llmkd: {', '.join(models['recbole_llmkd']) or 'none'}{builtins})"
    )


def get_trainer(model_type, model_name: str) -> type:
    """The trainer class: a plugin trainer registered for the model, else RecBole's choice.

    Either way the class is given the checkpoint-loading fix from ``compat`` (torch >= 2.6).
    """
    if model_name in _PLUGIN_TRAINERS:
        trainer_class = _load(_PLUGIN_TRAINERS[model_name])
    else:
        from recbole.utils import get_trainer as recbole_get_trainer

        trainer_class = recbole_get_trainer(model_type, model_name)
    return compat.checkpoint_safe_trainer(trainer_class)
