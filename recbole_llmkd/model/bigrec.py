"""BIGRec: a generative LLM recommender, DLLM2Rec's own teacher (Bao et al. 2023, github.com/SAI990323/BIGRec).

The LLM reads the history as item titles and *writes* the next item's title; the text is then grounded to real
items by L2 distance in the base LLM's embedding space. Prompt (BIGRec's Alpaca template, ``bigrec_*`` keys)::

    <header>\\n\\n### Instruction:\\n<instruction>\\n\\n### Input:\\n<history prefix>"t_1", "t_2", ..., "t_L"\\n \\n\\n### Response:\\n
    target: "t_next"</s>                  (the only tokens in the loss unless bigrec_train_on_inputs)

Grounding (BIGRec's ``evaluate.py``): the generated text, cut at the title's closing quote and stripped of its
quotes, and every item title are embedded by the **base** LLM (LoRA disabled), left padding, last layer, last
token (``llm.encode_texts``); every item is ranked by ``d_bi = ||g_b - z_i||_2``::

    score_bi = -d_bi                                                  (bigrec_pop_gamma: 0, default; score_kind neg_l2)
    score_bi = -(1 + pop_i)^(-gamma) * (d_bi - min_j d_bj) / (max_j d_bj - min_j d_bj)   (BIGRec's popularity adjustment)

``pop_i`` = item i's share of the training targets, min-max normalised to [0, 1]. The PAD column is ``-inf``. The
title table ``z`` [n_items, d_llm] is computed once when the model is built (the base LLM is frozen, so it never
goes stale) and is also the teacher's ``item_text_emb`` on export.

Trained: LoRA adapters only (BIGRec: q_proj, v_proj). ``state_dict()`` holds them alone; ``other_parameter()``
holds the backbone's identity, which loading verifies (as LLMRec).
"""
from __future__ import annotations

import logging
from typing import Optional

import numpy as np
import torch
import torch.nn.functional as F
from recbole.model.abstract_recommender import SequentialRecommender
from recbole.utils import InputType

from recbole_llmkd.config_schema import read_config
from recbole_llmkd.data.keys import dataset_mismatch, item_tokens_fingerprint
from recbole_llmkd.errors import CheckpointMismatchError, ConfigValueError
from recbole_llmkd.llm import autocast_context, encode_texts, lora_from_config
from recbole_llmkd.measure import count_parameters
from recbole_llmkd.model.llmrec import (
    LLMParts,
    TrainedTensorsCheckpoint,
    missing_parts_error,
    unique_histories,
)

QUOTE = '"'
IGNORE_INDEX = -100  # label of a token outside the loss


def clean_generation(text: str) -> str:
    """The title inside a generated response: from after the opening quote to the closing one (or the first line
    break, or the end), stripped. ``'"Heat (1995)" and more'`` -> ``'Heat (1995)'``."""
    text = text.strip()
    if text.startswith(QUOTE):
        text = text[1:]
    return text.split(QUOTE, 1)[0].split("\n", 1)[0].strip()


def popularity_weights(target_counts: torch.Tensor) -> torch.Tensor:
    """BIGRec's ``pop_i``: each item's share of the training targets, min-max normalised over the real items to
    [0, 1]; [n_items] (PAD = 0)."""
    share = target_counts.float() / target_counts.sum().clamp(min=1)  # [n_items]
    real = share[1:]
    spread = (real.max() - real.min()).clamp(min=1e-12)
    pop = torch.zeros_like(share)
    pop[1:] = (real - real.min()) / spread
    return pop


def ground(generated: torch.Tensor, item_table: torch.Tensor, pop: Optional[torch.Tensor] = None,
           gamma: float = 0.0) -> torch.Tensor:
    """Scores of every item for generated-text embeddings: ``-||g_b - z_i||_2``, or with ``gamma > 0`` BIGRec's
    popularity-adjusted ``-(1 + pop_i)^-gamma * minmax_i(d_bi)``. PAD (column 0) = -inf.

    Args:
        generated: [B, d] embeddings of the generated titles.
        item_table: [n_items, d] title embeddings (row 0 = PAD, ignored).
        pop: [n_items] popularity in [0, 1] (needed when gamma > 0).
    Returns:
        [B, n_items] float32 scores.
    """
    distance = torch.cdist(generated.float(), item_table.float(), p=2)  # [B, n_items]
    if gamma > 0:
        real = distance[:, 1:]  # [B, n_items - 1]
        low, high = real.min(dim=1, keepdim=True).values, real.max(dim=1, keepdim=True).values  # [B, 1]
        normalised = (distance - low) / (high - low).clamp(min=1e-12)  # [B, n_items]
        distance = torch.pow(1.0 + pop[None, :].to(distance), -gamma) * normalised
    scores = -distance
    scores[:, 0] = float("-inf")
    return scores


class _ClosingQuote:
    """Generation stopping criterion: a row is done once its generated tokens hold two quote characters (the
    title's opening and closing quotes). ``quote_count`` [vocab] = quote characters in each token's text."""

    def __init__(self, quote_count: torch.Tensor, prompt_length: int):
        self.quote_count = quote_count
        self.prompt_length = prompt_length

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor, **kwargs) -> torch.BoolTensor:
        generated = input_ids[:, self.prompt_length:]  # [B * beams, t]
        return self.quote_count.to(generated.device)[generated].sum(dim=1) >= 2  # [B * beams]


# The keys BIGRec reads besides the backbone's and LoRA's, by the attribute that holds each: attribute -> key.
BIGREC_OPTIONS = {
    "use_bf16": "llm_bf16", "instruction": "bigrec_instruction", "history_prefix": "bigrec_history_prefix",
    "template": "bigrec_template", "train_on_inputs": "bigrec_train_on_inputs", "num_beams": "bigrec_num_beams",
    "max_new_tokens": "bigrec_max_new_tokens", "pop_gamma": "bigrec_pop_gamma",
}


class BIGRec(TrainedTensorsCheckpoint, SequentialRecommender):
    r"""BIGRec: an LLM (LoRA) that generates the next item's title, grounded to all items by L2 distance."""

    input_type = InputType.POINTWISE
    score_kind = "neg_l2"  # scores are minus the grounding distance (artifact score_kind; DLLM2Rec confidence 'code')

    @staticmethod
    def check_options(config) -> dict:
        """BIGRec's keys (``BIGREC_OPTIONS``), checked before anything is loaded (``run.build_model`` calls it first);
        returns ``{attribute: value}``."""
        options = {attribute: read_config(config, key) for attribute, key in BIGREC_OPTIONS.items()}
        for key in ("{instruction}", "{history}"):
            if key not in options["template"]:
                raise ConfigValueError(f"bigrec_template must contain {key}; got {options['template']!r}")
        return options

    def __init__(self, config, dataset, parts: Optional[LLMParts] = None):
        """``parts``: the loaded causal-LM backbone and the item titles (``recbole_llmkd.run.build_model``)."""
        super().__init__(config, dataset)
        self.logger = logging.getLogger(__name__)
        if parts is None or parts.item_titles is None:
            raise missing_parts_error(type(self).__name__, "its backbone and item titles")
        # load parameters info: bf16, the prompt, generation and grounding
        for attribute, option in self.check_options(config).items():
            setattr(self, attribute, option)
        self.run_device = torch.device(config["device"])

        # backbone with its LM head, LoRA on top (task CAUSAL_LM), base frozen
        backbone = parts.backbone
        self.llm, _ = lora_from_config(backbone, config, self.run_device, causal_lm=True)
        self.backbone_identity = backbone.identity
        self.tokenizer = backbone.tokenizer
        self.eos_token_id = self.tokenizer.eos_token_id
        if self.eos_token_id is None:
            raise ConfigValueError(f"BIGRec needs a tokenizer with an EOS token; {config['llm_backbone']!r} has none")

        # item titles, and their grounding table through the base LLM (LoRA off): [n_items, d_llm], not saved
        self.item_titles = parts.item_titles
        with self.llm.disable_adapter():
            title_table = encode_texts(self.llm.get_base_model().get_decoder(), self.tokenizer,
                                       [title or " " for title in self.item_titles[1:]],
                                       batch_size=read_config(config, "eval_batch_size"), device=self.run_device)
        title_table = torch.cat([title_table.new_zeros(1, title_table.shape[1]), title_table])  # [n_items, d_llm]
        self.register_buffer("item_text_emb", title_table.to(self.run_device), persistent=False)
        targets = torch.as_tensor(np.asarray(dataset.inter_feat[self.ITEM_ID]), dtype=torch.long)  # [N] (tensor or Series)
        target_counts = torch.bincount(targets, minlength=self.n_items)  # [n_items]
        self.register_buffer("item_popularity", popularity_weights(target_counts), persistent=False)  # [n_items]
        vocab = self.tokenizer.convert_ids_to_tokens(list(range(len(self.tokenizer))))
        quote_count = torch.tensor([str(token).count(QUOTE) for token in vocab], dtype=torch.long)  # [vocab]
        self.register_buffer("quote_count", quote_count, persistent=False)
        self.dataset_fingerprint = item_tokens_fingerprint(dataset)
        self.empty_generations = 0  # generated texts with no title in them (embedded as the EOS token instead)
        params = count_parameters(self)
        self.logger.info(
            f"BIGRec: backbone {self.backbone_identity['spec']} ({self.backbone_identity['n_layers']} of "
            f"{self.backbone_identity['n_layers_total']} layers, LM head {self.backbone_identity['lm_head']}); "
            f"{self.num_beams} beam(s), <= {self.max_new_tokens} new tokens, pop gamma {self.pop_gamma}; parameters "
            f"{params['params_total']:,} total, {params['params_trainable']:,} trainable"
        )

    # ----- checkpoint: LoRA (TrainedTensorsCheckpoint) + backbone identity ----------------------------------
    def is_frozen_by_design(self, name: str) -> bool:
        """Every base LLM weight is frozen (never saved): ``state_dict()`` holds the LoRA adapters only."""
        return name.startswith("llm.") and "lora_" not in name

    def other_parameter(self) -> dict:
        return {"backbone_identity": dict(self.backbone_identity), "dataset_fingerprint": dict(self.dataset_fingerprint)}

    def load_other_parameter(self, para: Optional[dict]) -> None:
        """Verify that a checkpoint's backbone and dataset are the ones this model was built with."""
        if para is None:
            return
        saved = para.get("backbone_identity") or {}
        mine = self.backbone_identity
        if saved.get("sha256") != mine["sha256"] or saved.get("n_layers") != mine["n_layers"]:
            raise CheckpointMismatchError(
                f"the checkpoint was trained on backbone {saved.get('spec')!r} ({saved.get('n_layers')} layers, sha256 "
                f"{saved.get('sha256')}), but this model loaded {mine['spec']!r} ({mine['n_layers']} layers, sha256 "
                f"{mine['sha256']})"
            )
        mismatch = dataset_mismatch(para.get("dataset_fingerprint") or {}, self.dataset_fingerprint)
        if mismatch:
            raise CheckpointMismatchError(f"the checkpoint was {mismatch}")

    # ----- prompts ----------------------------------------------------------------------------------------
    def prompt(self, history: list[int]) -> str:
        """BIGRec's prompt for a history of internal item ids (oldest first, PAD removed)."""
        titles = ", ".join(QUOTE + self.item_titles[item] + QUOTE for item in history)
        return self.template.format(instruction=self.instruction, history=self.history_prefix + titles)

    def target_text(self, item: int) -> str:
        return QUOTE + self.item_titles[item] + QUOTE

    def prompts(self, interaction) -> list[str]:
        item_seq = interaction[self.ITEM_SEQ].tolist()  # [B][L], right-padded
        lengths = interaction[self.ITEM_SEQ_LEN].tolist()  # [B]
        return [self.prompt(row[:length]) for row, length in zip(item_seq, lengths)]

    def training_batch(self, interaction) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``(input_ids, attention_mask, labels)``, each [B, T], right-padded: prompt + target title + EOS, labels
        ``IGNORE_INDEX`` on the prompt (unless ``bigrec_train_on_inputs``) and on padding."""
        prompt_ids = self.tokenizer(self.prompts(interaction))["input_ids"]  # B lists (tokenizer's own BOS, if any)
        targets = [self.target_text(item) for item in interaction[self.POS_ITEM_ID].tolist()]
        target_ids = self.tokenizer(targets, add_special_tokens=False)["input_ids"]  # B lists
        rows = [prompt + target + [self.eos_token_id] for prompt, target in zip(prompt_ids, target_ids)]
        width = max(len(row) for row in rows)
        input_ids = torch.full((len(rows), width), self.tokenizer.pad_token_id, dtype=torch.long)  # [B, T]
        attention_mask = torch.zeros(len(rows), width, dtype=torch.long)  # [B, T]
        labels = torch.full((len(rows), width), IGNORE_INDEX, dtype=torch.long)  # [B, T]
        for row_index, (row, prompt) in enumerate(zip(rows, prompt_ids)):
            input_ids[row_index, : len(row)] = torch.tensor(row)
            attention_mask[row_index, : len(row)] = 1
            first_label = 0 if self.train_on_inputs else len(prompt)
            labels[row_index, first_label: len(row)] = torch.tensor(row[first_label:])
        device = self.run_device
        return input_ids.to(device), attention_mask.to(device), labels.to(device)

    # ----- RecBole surface --------------------------------------------------------------------------------
    def calculate_loss(self, interaction) -> torch.Tensor:
        """Next-token cross-entropy on the target title (and EOS); logits only where a label is."""
        input_ids, attention_mask, labels = self.training_batch(interaction)  # [B, T] each
        causal_lm = self.llm.get_base_model()
        with autocast_context(input_ids.device, self.use_bf16):
            hidden = causal_lm.get_decoder()(input_ids=input_ids, attention_mask=attention_mask,
                                             use_cache=False).last_hidden_state  # [B, T, d_llm], LoRA active
        next_labels = labels[:, 1:]  # [B, T-1]: token t+1 is predicted from position t
        predicting = next_labels != IGNORE_INDEX  # [B, T-1]
        logits = causal_lm.get_output_embeddings()(hidden[:, :-1][predicting]).float()  # [n_labels, vocab]
        return F.cross_entropy(logits, next_labels[predicting])

    @torch.no_grad()
    def generate(self, interaction) -> list[str]:
        """The generated response of every row (beam 0), cut at the title's closing quote, quotes stripped."""
        encoded = self.tokenizer(self.prompts(interaction), padding=True, padding_side="left", return_tensors="pt")
        input_ids = encoded["input_ids"].to(self.run_device)  # [B, T_prompt]
        attention_mask = encoded["attention_mask"].to(self.run_device)  # [B, T_prompt]
        from transformers import StoppingCriteriaList

        with autocast_context(input_ids.device, self.use_bf16):
            output = self.llm.generate(
                input_ids=input_ids,
                attention_mask=attention_mask,
                max_new_tokens=self.max_new_tokens,
                num_beams=self.num_beams,
                num_return_sequences=1,
                do_sample=False,
                use_cache=True,
                eos_token_id=self.eos_token_id,
                pad_token_id=self.tokenizer.pad_token_id,
                stopping_criteria=StoppingCriteriaList([_ClosingQuote(self.quote_count, input_ids.shape[1])]),
            )  # [B, T_prompt + t]
        texts = self.tokenizer.batch_decode(output[:, input_ids.shape[1]:], skip_special_tokens=True)
        return [clean_generation(text) for text in texts]

    @torch.no_grad()
    def embed_generations(self, texts: list[str]) -> torch.Tensor:
        """[B, d_llm]: each generated title through the base LLM (LoRA off), last layer, last token; an empty text
        is embedded as the EOS token (counted in ``empty_generations``)."""
        empty = [not text for text in texts]
        self.empty_generations += sum(empty)
        texts = [self.tokenizer.eos_token if is_empty else text for text, is_empty in zip(texts, empty)]
        with self.llm.disable_adapter():
            return encode_texts(self.llm.get_base_model().get_decoder(), self.tokenizer, texts,
                                batch_size=len(texts), device=self.run_device).to(self.run_device)

    def full_sort_predict(self, interaction) -> torch.Tensor:
        """[B, n_items]: minus the grounding distance of every item to the generated title (PAD -inf)."""
        was_training = self.llm.training
        self.llm.eval()
        generated = self.embed_generations(self.generate(interaction))  # [B, d_llm]
        self.llm.train(was_training)
        return ground(generated, self.item_text_emb, self.item_popularity, self.pop_gamma)

    def predict(self, interaction) -> torch.Tensor:
        """Score of each row's item [B]; one generation per *unique* history in the batch (uni999 is cheap)."""
        item_seq = interaction[self.ITEM_SEQ]  # [B, L]
        _, inverse, first_row = unique_histories(item_seq)  # [B], [U]
        unique_scores = self.full_sort_predict(interaction[first_row])  # [U, n_items]
        return unique_scores[inverse].gather(1, interaction[self.ITEM_ID][:, None]).squeeze(1)  # [B]

    def forward(self, item_seq: torch.Tensor, item_seq_len: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError("BIGRec has no user vector: use full_sort_predict (generation + grounding)")
