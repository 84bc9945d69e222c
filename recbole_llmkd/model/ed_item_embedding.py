"""Collaborative embedding distillation (ED) as an item table: ``EDItemEmbedding`` stands in for a RecBole sequential
model's ``self.item_embedding`` (an ``nn.Embedding``, row 0 = [PAD]), so the model's own code distils unchanged.

    input items     item_embedding(ids) = b_i + ed_weight · g(z_i)   (ed_mode offset)   or   g(z_i)   (replace)
    scoring table   item_embedding.weight = b                         (ed_apply_to input)
                                          = the enriched table above  (ed_apply_to input_and_output)

``b`` is the host's ID table (the ``nn.Embedding`` it built, kept inside as ``id_embedding``); ``z`` the teacher's item
text embeddings (a non-persistent buffer: moved by ``.to(device)``, never saved); ``g`` a linear or MLP projector. Rows
without text ([PAD], and BERT4Rec's mask token ``n_items``) keep ``b``. RecBole's ``forward`` embeds its input items
with ``self.item_embedding(item_seq)`` and scores with ``self.item_embedding.weight`` (BERT4Rec slices off the mask
row itself), so the host needs no ``forward`` of its own. ``fold()`` bakes ``ed_weight · g(z)`` into the tables.
"""
from typing import Dict, Optional

import torch
from torch import Tensor, nn


class EDItemEmbedding(nn.Module):
    """The host's ID ``nn.Embedding`` plus the ED offset (see the module docstring).

    Args:
        id_embedding: the host's item table ``b`` ``[rows, H]`` (``rows = n_items``, ``n_items + 1`` with a mask token).
        n_items: item ids ``[0, n_items)``; rows ``1 .. n_items - 1`` have text.
        item_text_emb: ``z`` ``[n_items, d_llm]`` (row 0 zeros), or None for a student rebuilt from a folded
            checkpoint: its input table (``folded_input``) then comes with the state dict.
        terms: the host's KD terms; each training forward writes ``ed_ratio`` there: ‖offset‖ / ‖ID rows‖ of its
            real items ([PAD] out).
    """

    def __init__(
        self, id_embedding: nn.Embedding, n_items: int, item_text_emb: Optional[Tensor], terms: Dict[str, Tensor], *,
        ed_weight: float, projector: str, mode: str, scale: str, apply_to: str, scale_init: float = 0.1,
    ):
        super().__init__()
        self.id_embedding = id_embedding  # b: [rows, H]
        self.n_items = n_items
        self.terms = terms
        self.ed_weight, self.mode, self.scale, self.apply_to = ed_weight, mode, scale, apply_to
        self.ed_projector: Optional[nn.Module] = None
        self.folded_input: Optional[nn.Embedding] = None
        rows, width = id_embedding.weight.shape
        if item_text_emb is None:
            self.folded_input = nn.Embedding(rows, width, padding_idx=0)  # b + ed·g(z), loaded with the state dict
            return
        if scale == "learned":  # a scalar the optimiser moves, starting small (a ReZero-style gate on the offset)
            self.ed_gate = nn.Parameter(torch.tensor(float(scale_init)))
        text_emb = item_text_emb.float()  # [n_items, d_llm], row 0 zeros
        d_llm = text_emb.shape[1]
        padded = torch.zeros(rows, d_llm)  # [rows, d_llm]; a mask-token row has no text
        padded[: text_emb.shape[0]] = text_emb
        self.register_buffer("item_text_emb", padded, persistent=False)
        has_text = torch.zeros(rows, 1)  # [rows, 1]: 0 for [PAD] and the mask token
        has_text[1:n_items] = 1.0
        self.register_buffer("has_text", has_text, persistent=False)
        if projector == "linear":
            self.ed_projector = nn.Linear(d_llm, width)
        else:
            self.ed_projector = nn.Sequential(nn.Linear(d_llm, width), nn.GELU(), nn.Linear(width, width))

    def projected_table(self) -> Tensor:
        """``g(z)`` for every row, zero for [PAD] and the mask token. ``[rows, H]``.

        ``ed_scale: id_norm`` rescales it to the ID table's size, ``g(z_i) · mean_j ‖b_j‖ / mean_j ‖g(z_j)‖`` (both
        means over the text rows, detached), so the offset ``ed_weight · g(z)`` is ``ed_weight`` times the ID
        embeddings' size from the first step on; ``learned`` multiplies that by a learned scalar ``ed_gate`` that
        starts at ``ed_scale_init``, so the offset starts at ``ed_weight · ed_scale_init`` times the ID embeddings'
        size and grows or shrinks as the loss asks; ``fixed`` (the official code) leaves ``g(z)`` as it comes.
        """
        projected = self.ed_projector(self.item_text_emb) * self.has_text  # [rows, H]
        if self.scale in ("id_norm", "learned"):
            text_rows = self.has_text.squeeze(-1).bool()  # [rows]
            id_norm = self.id_embedding.weight[text_rows].detach().norm(dim=-1).mean()
            text_norm = projected[text_rows].detach().norm(dim=-1).mean().clamp_min(1e-12)
            projected = projected * (id_norm / text_norm)
        if self.scale == "learned":
            projected = projected * self.ed_gate
        return projected

    def enriched_table(self, projected: Tensor) -> Tensor:
        """``b + ed·g(z)`` (offset) or ``g(z)`` (replace) on text rows; [PAD]/mask rows keep ``b``. ``[rows, H]``."""
        table = self.id_embedding.weight  # [rows, H]
        if self.mode == "offset":
            return table + self.ed_weight * projected
        return torch.where(self.has_text.bool(), projected, table)

    def forward(self, item_ids: Tensor) -> Tensor:
        """Input embeddings ``[B, L, H]`` of ``item_ids`` ``[B, L]``, before the host's positions and LayerNorm."""
        if self.folded_input is not None:
            return self.folded_input(item_ids)  # [B, L, H]
        id_emb = self.id_embedding(item_ids)  # [B, L, H]
        projected = self.projected_table()[item_ids]  # [B, L, H]
        if self.training:
            with torch.no_grad():
                real = item_ids > 0  # [B, L]; the mask token has projected = 0
                offset_norm = (self.ed_weight * projected[real]).norm()
                self.terms["ed_ratio"] = offset_norm / id_emb[real].norm().clamp_min(1e-12)
        if self.mode == "offset":
            return id_emb + self.ed_weight * projected
        has_text = self.has_text[item_ids]  # [B, L, 1]
        return torch.where(has_text.bool(), projected, id_emb)

    @property
    def weight(self) -> Tensor:
        """The scoring table, every row (a mask-token row included, as ``nn.Embedding.weight``). ``[rows, H]``."""
        if self.ed_projector is not None and self.apply_to == "input_and_output":
            return self.enriched_table(self.projected_table())
        return self.id_embedding.weight

    @torch.no_grad()
    def fold(self) -> nn.Module:
        """Bake ``ed_weight·g(z)`` in; afterwards neither projector nor ``z`` is needed. Returns the host's new table.

        ``ed_apply_to: input_and_output``: the ID ``nn.Embedding``, now holding the enriched table, so the host is
        its RecBole model exactly. ``input``: this module, whose inputs now read ``folded_input`` (the enriched table)
        while scoring keeps ``b``. Idempotent.
        """
        if self.ed_projector is None:
            return self
        enriched = self.enriched_table(self.projected_table())  # [rows, H]
        if self.apply_to == "input_and_output":
            self.id_embedding.weight.copy_(enriched)
            return self.id_embedding
        self.folded_input = nn.Embedding(*enriched.shape, padding_idx=0).to(enriched.device)
        self.folded_input.weight.copy_(enriched)
        self.ed_projector = None
        if self.scale == "learned":
            del self.ed_gate
        del self.item_text_emb
        del self.has_text
        return self


# State-dict names of ED before it became this module (recbole_llmkd <= ff1d2bf), relative to the host model.
_PRE_MODULE_NAMES = (
    ("item_embedding.weight", "item_embedding.id_embedding.weight"),
    ("ed_projector.", "item_embedding.ed_projector."),
    ("folded_input_embedding.", "item_embedding.folded_input."),
)


def upgrade_pre_module_keys(host: nn.Module, state_dict: dict, prefix: str, *args) -> None:
    """Load-state-dict pre-hook of a host whose ``item_embedding`` is an ``EDItemEmbedding``: renames, in place, the
    keys a KD checkpoint written before this module has (``ed_projector.*`` beside ``item_embedding.weight``) to
    today's, so those checkpoints keep loading strictly. Keys already in today's names are left alone, and nothing is
    renamed once folding has made ``item_embedding`` a plain ``nn.Embedding`` again."""
    if not isinstance(host.item_embedding, EDItemEmbedding):
        return
    for old, new in _PRE_MODULE_NAMES:
        for key in [k for k in state_dict if k.startswith(prefix + old)]:
            renamed = prefix + new + key[len(prefix + old):]
            if renamed not in state_dict:
                state_dict[renamed] = state_dict.pop(key)

