"""LLMRec: the E-LLMRec (E4SRec-style) LLM sequential recommender, the teacher of recbole_llmkd (docs/METHODS.md §2.1).

Prompt layout (one row per example, ``L = MAX_ITEM_LIST_LENGTH`` item slots)::

    [embed_tokens(instruction)] ++ [L item slots, LEFT-padded] ++ [embed_tokens(response)]

    item slot (default)               = input_proj(E[i])                              1 position
    item slot (use_item_titles: True) = embed_tokens(title_i, left-padded to T) ++ input_proj(E[i])   T + 1 positions
    item slot (use_item_titles: True, llm_title_view: cached)
                                      = input_proj(E[i]) + title_proj(t_i)                      1 position

``t_i`` = the mean final state of item i's title tokens through the *base* decoder (LoRA disabled), computed once
when the model is built ([n_items, d_llm], not saved): the title's meaning at the ID-only prompt's cost. The base
decoder is frozen, so the cache never goes stale; ``title_proj`` (trained) starts at zero, i.e. at the ID slot.

Attention mask: 1 on the instruction and response tokens, ``item > 0`` on an item's soft token, ``item > 0`` and
"is a real title token" on its title tokens. Position ids are contiguous (padded slots still consume positions).
The user state is the final (normed) state of the last response token, ``last_hidden_state[:, -1]``; the head
scores every item (``head: dot``: ``Linear(d_llm, d_item)(h) @ Eᵀ``; ``head: linear``: ``Linear(d_llm, n_items)``),
``logits[:, 0] = -inf`` (PAD), loss = cross-entropy over all items.

Trained: LoRA adapters, ``input_proj``, the head and a trainable item table. Frozen: every base LLM weight and a
pretrained (SASRec) item table. ``state_dict()`` holds the trained tensors only; ``other_parameter()`` holds the
backbone's identity (spec, path, sha256, n_layers), which loading verifies.

The model opens no file: ``recbole_llmkd.run.build_model`` loads the backbone, the pretrained or text-encoder item
vectors and the item titles and hands them over as ``LLMParts``; ``recbole_llmkd.run.load`` rebuilds a trained
teacher from its checkpoint.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any, Optional

import torch
import torch.nn.functional as F
from recbole.model.abstract_recommender import SequentialRecommender
from recbole.utils import InputType
from torch import nn
from torch.nn.modules.module import _IncompatibleKeys

from recbole_llmkd.config_schema import read_config
from recbole_llmkd.data.keys import dataset_mismatch, item_tokens_fingerprint
from recbole_llmkd.errors import CheckpointMismatchError, ConfigValueError
from recbole_llmkd.llm import autocast_context, lora_from_config, tokenize_prompt
from recbole_llmkd.measure import count_parameters

ITEM_TABLE_TRAINABLE = "trainable"
ITEM_TABLE_TEXT_ENCODER = "text_encoder"  # frozen sentence embeddings of the titles beside a learned ID table


@dataclass
class LLMParts:
    """What an LLM recommender is built from, read from disk by ``recbole_llmkd.run.build_model``.

    One ``LLMParts`` serves one model: the model puts LoRA on ``backbone.model`` in place.

    Attributes:
        backbone: the loaded ``recbole_llmkd.llm.Backbone`` (decoder of ``llm_n_layers`` layers, tokenizer, identity).
        item_vectors: ``item_table: text_encoder``: the titles' sentence embeddings ``[n_items, d_text]``; a
            checkpoint path: that SASRec's item table ``[n_items, d_item]``; ``trainable``: None.
        item_table_sha256: the SHA-256 of the pretrained table's checkpoint file (None otherwise).
        item_titles: item text by internal item id (``item_titles_for_dataset``) when the model reads titles.
    """

    backbone: Any
    item_vectors: Optional[torch.Tensor] = None
    item_table_sha256: Optional[str] = None
    item_titles: Optional[list] = None


def missing_parts_error(model_name: str, what: str = "its backbone") -> ConfigValueError:
    """The error of an LLM recommender constructed without (part of) its ``LLMParts``."""
    return ConfigValueError(
        f"{model_name} was built without {what}: build it with recbole_llmkd.run.build_model(config, dataset) "
        "(run.prepare and run.load do), which loads llm_backbone, the item table and the titles and hands them over"
    )


# The keys LLMRec reads besides the backbone's and LoRA's (checked by recbole_llmkd.config_schema).
LLMREC_KEYS = ("head", "use_item_titles", "llm_title_max_tokens", "llm_title_view", "llm_bf16", "llm_prefix_cache",
               "item_table", "item_dim")


def unique_histories(item_seq: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The distinct rows of ``item_seq`` [B, L]: ``(unique_seq [U, L], inverse [B], first_row [U])``, with
    ``item_seq[first_row] == unique_seq`` and ``unique_seq[inverse] == item_seq`` (predict runs each history once)."""
    unique_seq, inverse = torch.unique(item_seq, dim=0, return_inverse=True)  # [U, L], [B]
    first_row = torch.full((unique_seq.shape[0],), item_seq.shape[0], dtype=torch.long, device=item_seq.device)
    first_row = first_row.scatter_reduce(0, inverse, torch.arange(item_seq.shape[0], device=item_seq.device), "amin")
    return unique_seq, inverse, first_row


class TrainedTensorsCheckpoint:
    """Mixin for LLM recommenders on a frozen base: ``state_dict()`` holds the trained tensors only (names for which
    ``is_frozen_by_design`` is False), and ``load_state_dict`` loads exactly that set (``strict``: equal key sets,
    else a ``CheckpointMismatchError`` naming the differences and ``checkpoint_settings``)."""

    checkpoint_settings = "llm_n_layers and lora_target_modules"  # what decides the key set (for the error)

    def is_frozen_by_design(self, name: str) -> bool:
        raise NotImplementedError

    def state_dict(self, *args, **kwargs):
        full_state = super().state_dict(*args, **kwargs)
        prefix = kwargs.get("prefix", "")
        for key in list(full_state.keys()):
            if key.startswith(prefix) and self.is_frozen_by_design(key[len(prefix):]):
                del full_state[key]
        return full_state

    def load_state_dict(self, state_dict, strict: bool = True, assign: bool = False):
        expected_keys = set(self.state_dict().keys())
        given_keys = set(state_dict.keys())
        missing_keys = sorted(expected_keys - given_keys)
        unexpected_keys = sorted(given_keys - expected_keys)
        if strict and (missing_keys or unexpected_keys):
            raise CheckpointMismatchError(
                f"{type(self).__name__} state_dict does not match this model: missing {missing_keys[:5]} "
                f"({len(missing_keys)} keys), unexpected {unexpected_keys[:5]} ({len(unexpected_keys)} keys). Was it "
                f"saved with the same {self.checkpoint_settings}?"
            )
        result = super().load_state_dict(state_dict, strict=False, assign=assign)
        missing_keys = [key for key in result.missing_keys if not self.is_frozen_by_design(key)]
        return _IncompatibleKeys(missing_keys, list(result.unexpected_keys))


class LLMRec(TrainedTensorsCheckpoint, SequentialRecommender):
    r"""E-LLMRec: soft item tokens inside an Alpaca prompt, a LoRA-tuned HF decoder, a full-softmax item head."""

    input_type = InputType.POINTWISE
    checkpoint_settings = "llm_n_layers, lora_target_modules, head and item_table"

    @staticmethod
    def check_options(config) -> None:
        """LLMRec's keys (``loss_type`` and ``LLMREC_KEYS``), checked before anything is loaded (``run.build_model``
        calls it first)."""
        if config["loss_type"] != "CE":
            raise ConfigValueError(f"LLMRec is trained with full cross-entropy; loss_type={config['loss_type']!r} is not supported")
        for key in LLMREC_KEYS:
            read_config(config, key)

    def __init__(self, config, dataset, parts: Optional[LLMParts] = None):
        """``parts``: the loaded backbone, item vectors and titles (``recbole_llmkd.run.build_model``)."""
        super().__init__(config, dataset)
        self.logger = logging.getLogger(__name__)
        if parts is None:
            raise missing_parts_error(type(self).__name__)

        # load parameters info
        LLMRec.check_options(config)
        self.loss_type = config["loss_type"]
        self.head_type = read_config(config, "head")
        self.use_item_titles = read_config(config, "use_item_titles")
        self.title_max_tokens = read_config(config, "llm_title_max_tokens")
        self.title_view = read_config(config, "llm_title_view")

        # backbone: HF decoder without LM head, first llm_n_layers layers, LoRA on top, base frozen
        self.use_bf16 = read_config(config, "llm_bf16")
        self.llm_prefix_cache = read_config(config, "llm_prefix_cache")
        self.run_device = torch.device(config["device"])
        backbone = parts.backbone
        self.llm, self.gradient_checkpointing = lora_from_config(backbone, config, self.run_device)
        self.backbone_identity = backbone.identity
        self.tokenizer = backbone.tokenizer
        self.d_llm = int(self.backbone_identity["hidden_size"])

        # item table E: trainable, or a pretrained SASRec table (frozen)
        self.item_table_source = read_config(config, "item_table")
        self.item_table_frozen = self.item_table_source not in (ITEM_TABLE_TRAINABLE, ITEM_TABLE_TEXT_ENCODER)
        if self.item_table_source != ITEM_TABLE_TRAINABLE and parts.item_vectors is None:
            raise missing_parts_error(type(self).__name__, f"the vectors of item_table: {self.item_table_source}")
        if self.use_item_titles and parts.item_titles is None:
            raise missing_parts_error(type(self).__name__, "the item titles of use_item_titles: True")
        if self.item_table_source == ITEM_TABLE_TEXT_ENCODER:
            from recbole_llmkd.model.item_table import SemanticIDItemTable

            semantic = parts.item_vectors  # [n_items, d_text]
            self.item_embedding = SemanticIDItemTable(semantic, read_config(config, "item_dim"))
            self.item_table_sha256 = None
        elif self.item_table_frozen:
            weight = parts.item_vectors.float()  # [n_items, d_item], checked against this dataset by the loader
            self.item_embedding = nn.Embedding.from_pretrained(weight, freeze=True, padding_idx=0)
            self.item_table_sha256 = parts.item_table_sha256
        else:
            self.item_embedding = nn.Embedding(self.n_items, read_config(config, "item_dim"), padding_idx=0)
            nn.init.normal_(self.item_embedding.weight, std=0.02)
            with torch.no_grad():
                self.item_embedding.weight[0].zero_()
            self.item_table_sha256 = None
        self.item_dim = self.item_embedding.weight.shape[1]  # d_text + item_dim for the text_encoder table
        self.input_proj = nn.Linear(self.item_dim, self.d_llm)
        if self.head_type == "dot":
            self.head = nn.Linear(self.d_llm, self.item_dim, bias=False)
        else:
            self.head = nn.Linear(self.d_llm, self.n_items, bias=False)

        # prompt token ids (tokenised once, no BOS/EOS); not saved: rebuilt from the config
        self.register_buffer("instruction_ids", tokenize_prompt(self.tokenizer, config["llm_instruction"]), persistent=False)
        self.register_buffer("response_ids", tokenize_prompt(self.tokenizer, config["llm_response"]), persistent=False)
        if self.use_item_titles:
            title_ids, title_mask = self._tokenize_titles(parts.item_titles)
            if self.title_view == "tokens":
                self.register_buffer("title_token_ids", title_ids, persistent=False)  # [n_items, T]
                self.register_buffer("title_token_mask", title_mask, persistent=False)  # [n_items, T]
            else:
                title_states = self._base_title_states(title_ids, title_mask, read_config(config, "eval_batch_size"))
                self.register_buffer("title_states", title_states, persistent=False)  # [n_items, d_llm]
                self.title_proj = nn.Linear(self.d_llm, self.d_llm)
                nn.init.zeros_(self.title_proj.weight)
                nn.init.zeros_(self.title_proj.bias)

        self.dataset_fingerprint = item_tokens_fingerprint(dataset)
        self.llm_forward_rows = 0  # rows sent through the LLM (predict deduplicates histories; tests count them)
        params = count_parameters(self)
        total, trainable = params["params_total"], params["params_trainable"]
        self.logger.info(
            f"LLMRec: backbone {self.backbone_identity['spec']} ({self.backbone_identity['n_layers']} of "
            f"{self.backbone_identity['n_layers_total']} layers, d_llm {self.d_llm}), item table "
            f"{'frozen ' + self.item_table_source if self.item_table_frozen else 'trainable'} [{self.n_items}, "
            f"{self.item_dim}], head {self.head_type}; parameters {total:,} total, {trainable:,} trainable"
        )

    # ----- construction helpers ---------------------------------------------------------------------------
    def _tokenize_titles(self, titles: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
        """Title token ids per internal item id, truncated and left-padded to T tokens: ([n_items, T], [n_items, T])."""
        encoded = self.tokenizer(
            titles,
            add_special_tokens=False,
            truncation=True,
            max_length=self.title_max_tokens,
            padding="max_length",
            padding_side="left",
            return_tensors="pt",
        )
        return encoded["input_ids"].long(), encoded["attention_mask"].bool()

    @torch.no_grad()
    def _base_title_states(self, title_ids: torch.Tensor, title_mask: torch.Tensor, batch_size: int) -> torch.Tensor:
        """``t_i``: mean final state of item i's real title tokens through the base decoder (LoRA off), PAD and
        empty titles 0 -> ``[n_items, d_llm]`` fp32 on the run device."""
        was_training = self.llm.training
        self.llm.eval()
        states = []
        with self.llm.disable_adapter():
            for start in range(0, title_ids.shape[0], batch_size):
                ids = title_ids[start:start + batch_size].to(self.run_device)  # [b, T], left-padded
                mask = title_mask[start:start + batch_size].to(self.run_device)  # [b, T]
                positions = (mask.long().cumsum(dim=1) - 1).clamp(min=0)  # [b, T]: the title starts at position 0
                hidden = self.llm(input_ids=ids, attention_mask=mask.long(), position_ids=positions,
                                  use_cache=False).last_hidden_state.float()  # [b, T, d_llm]
                weights = mask.float()[..., None]  # [b, T, 1]
                states.append((hidden * weights).sum(dim=1) / weights.sum(dim=1).clamp(min=1.0))  # [b, d_llm]
        self.llm.train(was_training)
        title_states = torch.cat(states)  # [n_items, d_llm]
        title_states[~title_mask.any(dim=1).to(title_states.device)] = 0.0  # PAD (id 0) and items without text
        return title_states

    # ----- checkpoint: trained tensors + backbone identity ------------------------------------------------
    def is_frozen_by_design(self, name: str) -> bool:
        """Whether parameter/buffer ``name`` is a frozen base weight (LLM, pretrained item table): never saved."""
        if name.startswith("llm.") and "lora_" not in name:
            return True
        return self.item_table_frozen and name.startswith("item_embedding.")

    def other_parameter(self) -> dict:
        return {
            "backbone_identity": dict(self.backbone_identity),
            "item_table": {"source": self.item_table_source, "sha256": self.item_table_sha256},
            "dataset_fingerprint": dict(self.dataset_fingerprint),
        }

    def load_other_parameter(self, para: Optional[dict]) -> None:
        """Verify that a checkpoint's backbone, item table and dataset are the ones this model was built with."""
        if para is None:
            return
        saved = para.get("backbone_identity")
        if saved is None:
            raise CheckpointMismatchError("the checkpoint has no backbone identity: not an LLMRec checkpoint")
        mine = self.backbone_identity
        if saved["sha256"] != mine["sha256"]:
            raise CheckpointMismatchError(
                f"the checkpoint was trained on backbone {saved['spec']!r} ({saved.get('path')}, sha256 "
                f"{saved['sha256']}), but this model loaded {mine['spec']!r} ({mine.get('path')}, sha256 "
                f"{mine['sha256']}): a different weights file"
            )
        if saved["n_layers"] != mine["n_layers"]:
            raise CheckpointMismatchError(
                f"the checkpoint was trained with {saved['n_layers']} decoder layers, this model has "
                f"{mine['n_layers']} (llm_n_layers)"
            )
        saved_table = para.get("item_table", {})
        if saved_table.get("sha256") != self.item_table_sha256:
            raise CheckpointMismatchError(
                f"the checkpoint was trained with item table {saved_table.get('source')!r} (sha256 "
                f"{saved_table.get('sha256')}), this model uses {self.item_table_source!r} (sha256 {self.item_table_sha256})"
            )
        mismatch = dataset_mismatch(para.get("dataset_fingerprint") or {}, self.dataset_fingerprint)
        if mismatch:
            raise CheckpointMismatchError(f"the checkpoint was {mismatch}")

    # ----- forward, factored for SLMRec -------------------------------------------------------------------
    @staticmethod
    def left_pad(item_seq: torch.Tensor, item_seq_len: torch.Tensor) -> torch.Tensor:
        """RecBole's right-padded ``item_id_list`` -> the same items left-padded (last item in the last slot)."""
        seq_width = item_seq.shape[1]
        source_pos = torch.arange(seq_width, device=item_seq.device)[None, :] - (seq_width - item_seq_len[:, None])  # [B, L]
        left_padded = item_seq.gather(1, source_pos.clamp(min=0))  # [B, L]
        return left_padded.masked_fill(source_pos < 0, 0)

    def encode(self, item_seq: torch.Tensor, item_seq_len: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Prompt embeddings and attention mask: ([B, T_prompt, d_llm], [B, T_prompt] long)."""
        batch_size = item_seq.shape[0]
        embed_tokens = self.llm.get_input_embeddings()
        item_ids = self.left_pad(item_seq, item_seq_len)  # [B, L]
        item_mask = item_ids > 0  # [B, L]
        item_tokens = self.input_proj(self.item_embedding(item_ids))  # [B, L, d_llm]
        if self.use_item_titles and self.title_view == "cached":
            item_tokens = item_tokens + self.title_proj(self.title_states[item_ids])  # [B, L, d_llm]
        if self.use_item_titles and self.title_view == "tokens":
            title_embeds = embed_tokens(self.title_token_ids[item_ids])  # [B, L, T, d_llm]
            title_mask = self.title_token_mask[item_ids] & item_mask[..., None]  # [B, L, T]
            slot_embeds = torch.cat([title_embeds, item_tokens[:, :, None, :]], dim=2).flatten(1, 2)  # [B, L*(T+1), d_llm]
            slot_mask = torch.cat([title_mask, item_mask[..., None]], dim=2).flatten(1, 2)  # [B, L*(T+1)]
        else:
            slot_embeds, slot_mask = item_tokens, item_mask  # [B, L, d_llm], [B, L]
        instruction_embeds = embed_tokens(self.instruction_ids)[None].expand(batch_size, -1, -1)  # [B, T_i, d_llm]
        response_embeds = embed_tokens(self.response_ids)[None].expand(batch_size, -1, -1)  # [B, T_r, d_llm]
        inputs_embeds = torch.cat([instruction_embeds, slot_embeds.to(instruction_embeds.dtype), response_embeds], dim=1)
        attention_mask = torch.cat(
            [
                slot_mask.new_ones(batch_size, self.instruction_ids.shape[0]),
                slot_mask,
                slot_mask.new_ones(batch_size, self.response_ids.shape[0]),
            ],
            dim=1,
        ).long()  # [B, T_prompt]
        return inputs_embeds, attention_mask

    def backbone_hidden(
        self, inputs_embeds: torch.Tensor, attention_mask: torch.Tensor, output_hidden_states: bool = False
    ) -> tuple[torch.Tensor, Optional[tuple[torch.Tensor, ...]]]:
        """Run the decoder: (user state ``last_hidden_state[:, -1]`` [B, d_llm] fp32, all hidden states or None).

        ``hidden_states`` (when asked) has n_layers + 1 entries ``[B, T_prompt, d_llm]``: index 0 = input embeddings,
        the last = after the final norm (HF convention).
        """
        self.llm_forward_rows += inputs_embeds.shape[0]
        with autocast_context(inputs_embeds.device, self.use_bf16):
            if self._use_prefix_cache():
                outputs = self._forward_with_instruction_cache(inputs_embeds, attention_mask, output_hidden_states)
            else:
                outputs = self.llm(
                    inputs_embeds=inputs_embeds,
                    attention_mask=attention_mask,
                    output_hidden_states=output_hidden_states,
                    use_cache=False,
                )
        user_state = outputs.last_hidden_state[:, -1, :].float()  # [B, d_llm]
        return user_state, (outputs.hidden_states if output_hidden_states else None)

    def _use_prefix_cache(self) -> bool:
        """The instruction-prefix KV cache is on unless disabled or HF gradient checkpointing (which drops caches) runs."""
        if not self.llm_prefix_cache:
            return False
        return not (self.gradient_checkpointing and self.training)

    def _forward_with_instruction_cache(self, inputs_embeds, attention_mask, output_hidden_states: bool):
        """Run the instruction once (batch 1), broadcast its keys/values to the batch, then run the rest.

        Under causal attention the instruction's states depend on the instruction alone, so they are the same for
        every row: computing them once per forward (gradients flow through it) gives the same outputs as the full
        prompt with ``(T_i + T_rest) / T_rest`` fewer token-layer evaluations. ``hidden_states`` then cover the
        positions after the instruction only (the user state, the last position, is among them).
        """
        batch_size = inputs_embeds.shape[0]
        n_instruction = self.instruction_ids.shape[0]
        instruction_out = self.llm(
            inputs_embeds=inputs_embeds[:1, :n_instruction],  # [1, T_i, d_llm]: identical in every row
            attention_mask=attention_mask[:1, :n_instruction],
            use_cache=True,
        )
        # transformers >= 5.2x names the KV cache `cache` (output field and argument; `past_key_values` warns)
        cache_name = "cache" if "cache" in instruction_out.keys() else "past_key_values"
        instruction_cache = instruction_out[cache_name]
        instruction_cache.batch_repeat_interleave(batch_size)  # [B, heads, T_i, d_head] per layer
        return self.llm(
            inputs_embeds=inputs_embeds[:, n_instruction:],  # [B, T_rest, d_llm]
            attention_mask=attention_mask,  # [B, T_i + T_rest]
            **{cache_name: instruction_cache},
            output_hidden_states=output_hidden_states,
            use_cache=True,
        )

    def score(self, user_state: torch.Tensor) -> torch.Tensor:
        """All-item logits from user states [B, d_llm] -> [B, n_items] fp32, PAD column = -inf."""
        if self.head_type == "dot":
            logits = self.head(user_state) @ self.item_embedding.weight.t()  # [B, n_items]
        else:
            logits = self.head(user_state)  # [B, n_items]
        logits = logits.float()
        logits[:, 0] = float("-inf")
        return logits

    def user_state(self, interaction, output_hidden_states: bool = False):
        """The user state [B, d_llm] of every row; with ``output_hidden_states`` also all hidden states."""
        inputs_embeds, attention_mask = self.encode(interaction[self.ITEM_SEQ], interaction[self.ITEM_SEQ_LEN])
        user_state, hidden_states = self.backbone_hidden(inputs_embeds, attention_mask, output_hidden_states)
        return (user_state, hidden_states) if output_hidden_states else user_state

    def forward(self, item_seq: torch.Tensor, item_seq_len: torch.Tensor) -> torch.Tensor:
        """User states [B, d_llm] for histories ``item_seq`` [B, L] (right-padded) of lengths ``item_seq_len`` [B]."""
        inputs_embeds, attention_mask = self.encode(item_seq, item_seq_len)
        return self.backbone_hidden(inputs_embeds, attention_mask)[0]

    # ----- RecBole surface --------------------------------------------------------------------------------
    def calculate_loss(self, interaction) -> torch.Tensor:
        logits = self.score(self.user_state(interaction))  # [B, n_items]
        return F.cross_entropy(logits, interaction[self.POS_ITEM_ID])

    def predict(self, interaction) -> torch.Tensor:
        """Score of each row's item [B]; one LLM forward per *unique* history in the batch (uni999 is cheap)."""
        item_seq = interaction[self.ITEM_SEQ]  # [B, L]
        item_seq_len = interaction[self.ITEM_SEQ_LEN]  # [B]
        unique_seq, inverse, first_row = unique_histories(item_seq)  # [U, L], [B], [U]
        unique_state = self.forward(unique_seq, item_seq_len[first_row])  # [U, d_llm]
        test_item = interaction[self.ITEM_ID]  # [B]
        if self.head_type == "dot":
            user_vector = self.head(unique_state)[inverse]  # [B, d_item]
            scores = (user_vector * self.item_embedding(test_item)).sum(dim=-1)  # [B]
        else:
            scores = self.head(unique_state)[inverse].gather(1, test_item[:, None]).squeeze(1)  # [B]
        return scores.float()

    def full_sort_predict(self, interaction) -> torch.Tensor:
        return self.score(self.user_state(interaction))  # [B, n_items]
