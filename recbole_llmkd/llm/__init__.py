"""LLM backbones: loading (HF directory, GGUF, embedded SmolLM2, tiny test decoder), truncation, LoRA, text embeddings."""
from recbole_llmkd.llm.backbone import (
    ACCEPTED_SPECS,
    Backbone,
    BackboneNotFoundError,
    BackboneSpecError,
    build_byte_tokenizer,
    find_cached_hub_model,
    find_smollm2_gguf,
    load_backbone,
    sha256_file,
    truncate_layers,
)
from recbole_llmkd.llm.lora import (
    DEFAULT_LORA_TARGETS,
    apply_lora,
    autocast_context,
    backbone_from_config,
    load_lora_state_dict,
    lora_from_config,
    lora_state_dict,
    prepare_for_training,
)
from recbole_llmkd.llm.text import encode_texts, tokenize_prompt

__all__ = [
    "ACCEPTED_SPECS",
    "Backbone",
    "BackboneNotFoundError",
    "BackboneSpecError",
    "DEFAULT_LORA_TARGETS",
    "apply_lora",
    "autocast_context",
    "backbone_from_config",
    "build_byte_tokenizer",
    "encode_texts",
    "find_cached_hub_model",
    "find_smollm2_gguf",
    "load_backbone",
    "load_lora_state_dict",
    "lora_from_config",
    "lora_state_dict",
    "prepare_for_training",
    "sha256_file",
    "tokenize_prompt",
    "truncate_layers",
]
