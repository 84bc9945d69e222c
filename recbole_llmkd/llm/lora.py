"""LoRA on an LLM backbone (docs/METHODS.md §2.1, item 3) and small training helpers.

E-LLMRec LoRA: peft, task FEATURE_EXTRACTION, r = 16, alpha = 16, dropout 0.05, bias "none", targets the MLP only
(``gate_proj``, ``up_proj``, ``down_proj``); every base weight is frozen. A LoRA-wrapped linear computes
``W x + (alpha / r) * B A dropout(x)`` with ``A: [r, d_in]``, ``B: [d_out, r]`` and ``B`` initialised to zero.
"""
from __future__ import annotations

import contextlib
import warnings
from collections.abc import Iterable, Mapping
from typing import Any

import torch
from torch import nn

from recbole_llmkd.config_schema import read_config
from recbole_llmkd.errors import ConfigValueError

DEFAULT_LORA_TARGETS = ("gate_proj", "up_proj", "down_proj")


def _module_short_names(model: nn.Module) -> set[str]:
    """Last component of every submodule name, e.g. ``layers.0.mlp.up_proj`` -> ``up_proj``."""
    return {name.rsplit(".", 1)[-1] for name, _ in model.named_modules() if name}


def apply_lora(
    model: nn.Module,
    r: int = 16,
    alpha: int = 16,
    dropout: float = 0.05,
    target_modules: Iterable[str] = DEFAULT_LORA_TARGETS,
    bias: str = "none",
    task_type: str = "FEATURE_EXTRACTION",
) -> nn.Module:
    """Wrap ``model`` in a peft ``PeftModel`` (task ``task_type``: FEATURE_EXTRACTION for a decoder without LM head,
    CAUSAL_LM for generation) with LoRA on ``target_modules``.

    Base weights are frozen (``requires_grad=False``); only the LoRA ``A``/``B`` matrices (and biases when
    ``bias != "none"``) are trainable. Every name in ``target_modules`` must match at least one submodule.
    """
    from peft import LoraConfig, PeftModel, TaskType, get_peft_model

    if isinstance(model, PeftModel):
        raise ConfigValueError("apply_lora expects a plain transformers model, got a model that is already a PeftModel")
    if isinstance(r, bool) or not isinstance(r, int) or r < 1:
        raise ConfigValueError(f"LoRA rank r must be a positive int, got {r!r}")
    if not 0.0 <= dropout < 1.0:
        raise ConfigValueError(f"LoRA dropout must be in [0, 1), got {dropout!r}")
    if bias not in ("none", "all", "lora_only"):
        raise ConfigValueError(f"LoRA bias must be one of 'none', 'all', 'lora_only', got {bias!r}")
    target_modules = [target_modules] if isinstance(target_modules, str) else list(target_modules)
    if not target_modules:
        raise ConfigValueError("target_modules is empty; expected module names such as 'gate_proj', 'up_proj'")
    available_names = _module_short_names(model)
    missing_targets = [name for name in target_modules if name not in available_names]
    if missing_targets:
        raise ConfigValueError(
            f"LoRA target modules {missing_targets} are not in {type(model).__name__}; "
            f"available linear-looking names include {sorted(n for n in available_names if n.endswith('proj'))}"
        )

    lora_config = LoraConfig(
        task_type=TaskType[task_type],
        r=r,
        lora_alpha=alpha,
        lora_dropout=dropout,
        target_modules=target_modules,
        bias=bias,
    )
    with warnings.catch_warnings():
        # peft reads transformers' deprecated `is_gradient_checkpointing` alias; the warning is not actionable here
        warnings.filterwarnings("ignore", message=".*is_gradient_checkpointing.*", category=FutureWarning)
        return get_peft_model(model, lora_config)


def lora_state_dict(model: nn.Module) -> dict[str, torch.Tensor]:
    """The adapter weights only (peft's ``get_peft_model_state_dict``); keys carry no adapter name."""
    from peft import get_peft_model_state_dict

    return get_peft_model_state_dict(model)


def load_lora_state_dict(model: nn.Module, state_dict: Mapping[str, torch.Tensor]) -> None:
    """Load adapter weights from :func:`lora_state_dict` into a LoRA model (peft's ``set_peft_model_state_dict``).

    The key set must equal the model's own adapter key set; otherwise a ``ValueError`` names the differences.
    """
    from peft import get_peft_model_state_dict, set_peft_model_state_dict

    expected_keys = set(get_peft_model_state_dict(model).keys())
    given_keys = set(state_dict.keys())
    missing_keys = sorted(expected_keys - given_keys)
    unexpected_keys = sorted(given_keys - expected_keys)
    if missing_keys or unexpected_keys:
        raise ConfigValueError(
            "LoRA state dict does not match the model's adapters: "
            f"missing {missing_keys[:5]}{' ...' if len(missing_keys) > 5 else ''} ({len(missing_keys)} keys), "
            f"unexpected {unexpected_keys[:5]}{' ...' if len(unexpected_keys) > 5 else ''} "
            f"({len(unexpected_keys)} keys)"
        )
    load_result = set_peft_model_state_dict(model, dict(state_dict))
    if load_result.unexpected_keys:
        raise ConfigValueError(f"peft did not place LoRA keys {load_result.unexpected_keys[:5]} into the model")


def prepare_for_training(model: nn.Module, device: str | torch.device, gradient_checkpointing: bool) -> nn.Module:
    """Move ``model`` to ``device``, set train mode and ``use_cache=False``; optionally enable HF gradient checkpointing.

    Gradient checkpointing uses non-reentrant checkpoints, and ``enable_input_require_grads`` makes the token
    embedding output require grad so that checkpointed segments see a grad-requiring input even when the whole
    backbone is frozen (LoRA). Returns ``model``.
    """
    model = model.to(device)
    config = getattr(model, "config", None)
    if config is not None:
        config.use_cache = False
    if gradient_checkpointing:
        checkpoint_kwargs = {"use_reentrant": False}
        if hasattr(model, "activation_checkpointing_enable"):  # transformers >= 5 name
            model.activation_checkpointing_enable(activation_checkpointing_kwargs=checkpoint_kwargs)
        elif hasattr(model, "gradient_checkpointing_enable"):  # transformers 4 name
            model.gradient_checkpointing_enable(gradient_checkpointing_kwargs=checkpoint_kwargs)
        else:
            raise ConfigValueError(
                f"{type(model).__name__} does not support HF gradient checkpointing; "
                "expected a transformers model or a PeftModel around one"
            )
        model.enable_input_require_grads()
    model.train()
    return model


def autocast_context(device: str | torch.device, enabled: bool) -> Any:
    """bf16 autocast on CUDA when ``enabled``; a null context on CPU or when disabled."""
    device_type = torch.device(device).type
    if enabled and device_type == "cuda":
        return torch.autocast(device_type="cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()


def backbone_from_config(config: Any, causal_lm: bool = False) -> Any:
    """The LLM recommenders' base backbone from their config keys: ``load_backbone(llm_backbone, llm_n_layers,
    llm_tiny_config, causal_lm)`` in fp32 (this reads the weights file). The LoRA keys are checked by
    ``recbole_llmkd.config_schema`` first, so a bad value fails before anything is loaded.

    Raises:
        ConfigValueError: a key holds a value the schema does not allow (the message names key, value and rule).
    """
    from recbole_llmkd.llm.backbone import load_backbone

    for key in ("lora_r", "lora_alpha", "lora_dropout", "lora_target_modules", "llm_gradient_checkpointing"):
        read_config(config, key)
    return load_backbone(
        config["llm_backbone"],
        n_layers=read_config(config, "llm_n_layers"),
        dtype=torch.float32,
        tiny_config=config["llm_tiny_config"],
        causal_lm=causal_lm,
    )


def lora_from_config(backbone: Any, config: Any, device: str | torch.device, causal_lm: bool = False) -> tuple[nn.Module, bool]:
    """LoRA on a loaded ``backbone`` from the config keys (``lora_r``, ``lora_alpha``, ``lora_dropout``,
    ``lora_target_modules``; task CAUSAL_LM with ``causal_lm``), moved to ``device`` in train mode, HF gradient
    checkpointing on CUDA when ``llm_gradient_checkpointing``. No file is read.

    Returns:
        ``(llm, gradient_checkpointing)``: the peft model and whether gradient checkpointing is on.
    """
    gradient_checkpointing = read_config(config, "llm_gradient_checkpointing") and torch.device(device).type == "cuda"
    llm = apply_lora(
        backbone.model,
        r=read_config(config, "lora_r"),
        alpha=read_config(config, "lora_alpha"),
        dropout=read_config(config, "lora_dropout"),
        target_modules=read_config(config, "lora_target_modules"),
        task_type="CAUSAL_LM" if causal_lm else "FEATURE_EXTRACTION",
    )
    prepare_for_training(llm, device, gradient_checkpointing=gradient_checkpointing)
    return llm, gradient_checkpointing
