"""The plugin's Config: RecBole's Config with the plugin's property files and model lookup.

Precedence, lowest first (each layer overrides the ones before it):

1. RecBole's ``overall.yaml``
2. RecBole's yaml for the model, or for the nearest RecBole class in the model's MRO
   (a subclass of SASRec gets SASRec's defaults)
3. RecBole's ``dataset/sample.yaml`` and ``dataset/<name>.yaml``, then RecBole's quick-start yaml for the
   model type (``sequential.yaml``: leave-one-out, time order, full ranking)
4. ``properties/overall.yaml`` (this plugin)
5. ``properties/model/<Class>.yaml`` for every plugin class in the MRO, base classes and mixins first, the model's
   own class last (``KDSASRec`` reads ``Distiller.yaml``, then ``KDSASRec.yaml`` if there is one)
6. ``properties/dataset/<name>.yaml`` (this plugin)
7. the user's ``config_file_list``, in order
8. ``config_dict``
9. the command line (``cmd_args``, parsed by our CLI; ``sys.argv`` is never read here, so Ray workers
   and notebooks get no junk keys)
"""
import difflib
import functools
import os
from typing import Dict, Iterable, List, Optional

import yaml
from recbole.config import Config as RecBoleConfig

from recbole_llmkd import compat, registry
from recbole_llmkd.errors import RecboleLLMKDError

_PACKAGE_DIR = os.path.dirname(os.path.abspath(__file__))


def unknown_keys_with_hints(unknown: Iterable[str], known: Iterable[str]) -> str:
    """``--key (did you mean --a, --b?); --other`` for command-line keys that nothing defines, each with its
    close matches among ``known``."""
    known = sorted(known)
    problems = []
    for key in unknown:
        close = difflib.get_close_matches(key, known, n=3, cutoff=0.75)
        problems.append(f"--{key}" + (f" (did you mean {', '.join('--' + c for c in close)}?)" if close else ""))
    return "; ".join(problems)


class ConfigFileError(RecboleLLMKDError, ValueError):
    """A property or config file that cannot be read as a yaml mapping."""


class UnknownConfigKeyError(RecboleLLMKDError, ValueError):
    """A command-line ``--key`` that no property file, config file or RecBole argument list defines (a typo)."""


def properties_dir() -> str:
    """The plugin's property files: installed inside the package, or ``properties/`` beside it in a checkout."""
    installed = os.path.join(_PACKAGE_DIR, "properties")
    if os.path.isdir(installed):
        return installed
    checkout = os.path.join(os.path.dirname(_PACKAGE_DIR), "properties")
    if os.path.isdir(checkout):
        return checkout
    raise FileNotFoundError(f"recbole_llmkd property files not found in {installed} or {checkout}")


def load_yaml_file(path: str, loader) -> dict:
    """Read a yaml mapping; a syntax error names the file, line and column."""
    with open(path, "r", encoding="utf-8") as f:
        text = f.read()
    try:
        content = yaml.load(text, Loader=loader)
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f"line {mark.line + 1}, column {mark.column + 1}" if mark is not None else "unknown position"
        problem = getattr(err, "problem", None) or str(err)
        raise ConfigFileError(f"malformed yaml in {path}, {where}: {problem}") from None
    if content is None:
        return {}
    if not isinstance(content, dict):
        raise ConfigFileError(f"{path} must hold a mapping of key: value, found a {type(content).__name__}")
    return content


def _recbole_properties_root() -> str:
    import recbole.config.configurator as configurator

    return os.path.normpath(os.path.join(os.path.dirname(configurator.__file__), "..", "properties"))


def recbole_parent_name(model_class: type) -> Optional[str]:
    """Name of the nearest class in the MRO that RecBole ships a property file for."""
    model_dir = os.path.join(_recbole_properties_root(), "model")
    for cls in model_class.__mro__:
        if cls.__module__.startswith("recbole.model.") and os.path.isfile(os.path.join(model_dir, f"{cls.__name__}.yaml")):
            return cls.__name__
    return None


def plugin_model_chain(model_class: type) -> List[str]:
    """Names of the classes in the MRO whose plugin property files apply: the model's class and every plugin base
    class or mixin (``Distiller``, ``LLMRec``, ...), in reversed MRO order, so a class's file overrides its bases'."""
    names = []
    for cls in reversed(model_class.__mro__):
        if cls is model_class or cls.__module__.startswith("recbole_llmkd."):
            names.append(cls.__name__)
    return names


def plugin_model_defaults(model_class: type) -> dict:
    """What the plugin's property files set for ``model_class``: ``properties/model/<Class>.yaml`` along
    ``plugin_model_chain`` (a class's file over its bases'), read with RecBole's yaml loader."""
    loader = compat.recbole_yaml_loader()
    defaults = {}
    for name in plugin_model_chain(model_class):
        path = os.path.join(properties_dir(), "model", f"{name}.yaml")
        if os.path.isfile(path):
            defaults.update(load_yaml_file(path, loader))
    return defaults


@functools.lru_cache(maxsize=1)
def plugin_property_keys() -> frozenset:
    """Every key the plugin's model and dataset property files define (``properties/model``, ``properties/dataset``),
    whichever model reads it."""
    loader = compat.recbole_yaml_loader()
    keys = set()
    for folder in ("model", "dataset"):
        path = os.path.join(properties_dir(), folder)
        for name in sorted(os.listdir(path)):
            if name.endswith(".yaml"):
                keys.update(load_yaml_file(os.path.join(path, name), loader) or {})
    return frozenset(keys)


def add_missing_defaults(config) -> List[str]:
    """Give a config read back from a checkpoint the property-file defaults of the keys it lacks, in place: keys
    added to the plugin after the checkpoint was saved (e.g. ``logit_weight``), whose defaults keep the behaviour the
    model was trained with. Returns the keys added, sorted (none for a model this process cannot resolve)."""
    try:
        model_class = registry.get_model(config["model"])
    except ValueError:  # e.g. a user's own model class, not registered in this process
        return []
    defaults = plugin_model_defaults(model_class)
    added = sorted(key for key in defaults if key not in config)
    for key in added:
        config[key] = defaults[key]
    return added


class Config(RecBoleConfig):
    """RecBole's Config, resolving plugin models and loading the plugin's property files (see module doc)."""

    def __init__(
        self,
        model=None,
        dataset: Optional[str] = None,
        config_file_list: Optional[Iterable[str]] = None,
        config_dict: Optional[dict] = None,
        cmd_args: Optional[Dict[str, str]] = None,
    ):
        self._cmd_args = dict(cmd_args or {})
        self.plugin_files_loaded: List[str] = []
        config_file_list = [os.path.abspath(f) for f in (config_file_list or [])]
        for file in config_file_list:
            if not os.path.isfile(file):
                raise FileNotFoundError(f"config file not found: {file}")
        super().__init__(model, dataset, config_file_list, config_dict)

    # ----- external input -------------------------------------------------------------------
    def _load_config_files(self, file_list):
        merged = {}
        for file in file_list or []:
            merged.update(load_yaml_file(file, self.yaml_loader))
        return merged

    def _load_cmd_line(self):
        """Command-line values come from our CLI (strings, converted like RecBole does), never sys.argv."""
        return self._convert_config_dict(dict(self._cmd_args))

    # ----- model lookup ---------------------------------------------------------------------
    def _get_model_and_dataset(self, model, dataset):
        if model is None:
            model = self.external_config_dict.get("model")
            if model is None:
                raise KeyError("no model given: pass --model=NAME (or model: in a config file)")
        if isinstance(model, str):
            model_name, model_class = model, registry.get_model(model)
        else:
            model_name, model_class = model.__name__, model
        if dataset is None:
            dataset = self.external_config_dict.get("dataset")
            if dataset is None:
                raise KeyError("no dataset given: pass --dataset=NAME (or dataset: in a config file)")
        return model_name, model_class, dataset

    # ----- internal property files ----------------------------------------------------------
    def _update_internal_config_dict(self, file):
        config_dict = load_yaml_file(file, self.yaml_loader)
        self.internal_config_dict.update(config_dict)
        return config_dict

    def _load_internal_config_dict(self, model, model_class, dataset):
        # Layers 1-3: RecBole's own files, looked up under the nearest RecBole ancestor's name.
        parent = recbole_parent_name(model_class) or model
        super()._load_internal_config_dict(parent, model_class, dataset)
        # The quick-start yaml above is chosen by model *type*; what it lacks comes from compat.
        quick_start_supplement = compat.quick_start_supplement(self.internal_config_dict["MODEL_TYPE"])
        if quick_start_supplement is not None:
            self._load_plugin_file(quick_start_supplement)
        # Layers 4-6: the plugin's files.
        self._load_plugin_file("overall.yaml")
        for name in plugin_model_chain(model_class):
            self._load_plugin_file(os.path.join("model", f"{name}.yaml"))
        self._load_plugin_file(os.path.join("dataset", f"{dataset}.yaml"), dataset_keys=True)

    def _load_plugin_file(self, relative_path: str, dataset_keys: bool = False):
        path = os.path.join(properties_dir(), relative_path)
        if not os.path.isfile(path):
            return
        config_dict = self._update_internal_config_dict(path)
        self.plugin_files_loaded.append(path)
        if dataset_keys:
            self.parameters["Dataset"] += [k for k in config_dict if k not in self.parameters["Dataset"]]

    # ----- checks ---------------------------------------------------------------------------
    def known_keys(self) -> set:
        """Every key some property file or RecBole's argument lists define for this run."""
        known = set(self.internal_config_dict)
        for category in self.parameters.values():
            known.update(category)
        known.update({"model", "dataset", "config_files", "data_path", "checkpoint_dir"})
        root = _recbole_properties_root()
        for name in os.listdir(os.path.join(root, "dataset")):
            if name.endswith(".yaml"):
                known.update(load_yaml_file(os.path.join(root, "dataset", name), self.yaml_loader))
        return known

    def unknown_cmd_keys(self) -> List[str]:
        """Command-line keys that nothing defines for this run: not RecBole, not a property file of the model or
        dataset, not the user's ``--config_files`` or config dict. Almost always a typo."""
        known = self.known_keys() | set(self.file_config_dict) | set(self.variable_config_dict)
        return sorted(key for key in self._cmd_args if key not in known)

    def check_cmd_keys(self) -> None:
        """Raise ``UnknownConfigKeyError`` (with a did-you-mean) for every unknown command-line key."""
        unknown = self.unknown_cmd_keys()
        if not unknown:
            return
        raise UnknownConfigKeyError(
            f"unknown config key(s) for {self['model']} on {self['dataset']}: "
            f"{unknown_keys_with_hints(unknown, self.known_keys())}. No RecBole argument, property file or "
            "--config_files entry defines them"
        )
