"""A dual-view item table: a frozen semantic view of each item's text beside a learned ID view (LLM-ESR style).

    E[i] = [s_i ; e_i]      s_i: the item's title through a sentence encoder (frozen)    [d_text]
                            e_i: a learned ID embedding                                   [d_id]

It stands in for an ``nn.Embedding`` item table: ``table(ids)`` gives ``[..., d_text + d_id]`` and ``table.weight``
the whole ``[n_items, d_text + d_id]`` table (for dot-product scoring). ``[PAD]`` (id 0) is zero in both views.
"""
from __future__ import annotations

import torch
from torch import nn


class SemanticIDItemTable(nn.Module):
    """``[s_i ; e_i]``: ``semantic`` ``[n_items, d_text]`` frozen (a saved buffer), ``e`` ``[n_items, d_id]`` trained."""

    def __init__(self, semantic: torch.Tensor, id_dim: int, init_std: float = 0.02):
        super().__init__()
        semantic = semantic.detach().float().clone()
        semantic[0] = 0.0
        self.register_buffer("semantic", semantic)  # [n_items, d_text]: saved, so a checkpoint restores it exactly
        self.id_embedding = nn.Embedding(semantic.shape[0], id_dim, padding_idx=0)  # [n_items, d_id]
        nn.init.normal_(self.id_embedding.weight, std=init_std)
        with torch.no_grad():
            self.id_embedding.weight[0].zero_()

    @property
    def embedding_dim(self) -> int:
        return self.semantic.shape[1] + self.id_embedding.embedding_dim

    @property
    def weight(self) -> torch.Tensor:
        return torch.cat([self.semantic, self.id_embedding.weight], dim=1)  # [n_items, d_text + d_id]

    def forward(self, item_ids: torch.Tensor) -> torch.Tensor:
        return torch.cat([self.semantic[item_ids], self.id_embedding(item_ids)], dim=-1)  # [..., d_text + d_id]
