"""KDGRU4Rec: RecBole's GRU4Rec distilled from an LLM teacher with DLLM2Rec (docs/METHODS.md §1).

``forward`` embeds the input items with ``embed_input_items`` (ED offset added before the embedding dropout);
``calculate_loss`` returns ``(L_base, λ_d·L_kd)`` from ``Distiller.distill``. Train with ``KDTrainer``.
"""
import torch
from recbole.model.sequential_recommender.gru4rec import GRU4Rec

from recbole_llmkd.model.distiller import Distiller


class KDGRU4Rec(Distiller, GRU4Rec):
    r"""GRU4Rec student of DLLM2Rec: importance-aware ranking distillation + collaborative embedding distillation."""

    def __init__(self, config, dataset):
        GRU4Rec.__init__(self, config, dataset)
        self.init_distiller(config, dataset, item_table_rows=self.n_items, embedding_size=self.embedding_size)

    def forward(self, item_seq, item_seq_len):
        item_seq_emb = self.embed_input_items(item_seq)  # [B, L, E], b_i (+ ed·g(z_i))
        item_seq_emb_dropout = self.emb_dropout(item_seq_emb)
        gru_output, _ = self.gru_layers(item_seq_emb_dropout)  # [B, L, H_gru]
        gru_output = self.dense(gru_output)  # [B, L, E]
        return self.gather_indexes(gru_output, item_seq_len - 1)  # [B, E]

    def calculate_loss(self, interaction):
        item_seq = interaction[self.ITEM_SEQ]  # [B, L]
        pos_items = interaction[self.POS_ITEM_ID]  # [B]
        seq_output = self.forward(item_seq, interaction[self.ITEM_SEQ_LEN])  # [B, E]
        logits = torch.matmul(seq_output, self.output_item_table().transpose(0, 1))  # [B, n_items]
        return self.distill(interaction, logits, item_seq, pos_items, lambda: self.loss_fct(logits, pos_items))

    def predict(self, interaction):
        seq_output = self.forward(interaction[self.ITEM_SEQ], interaction[self.ITEM_SEQ_LEN])  # [B, E]
        test_item_emb = self.output_item_table()[interaction[self.ITEM_ID]]  # [B, E]
        return torch.mul(seq_output, test_item_emb).sum(dim=1)  # [B]

    def full_sort_predict(self, interaction):
        seq_output = self.forward(interaction[self.ITEM_SEQ], interaction[self.ITEM_SEQ_LEN])  # [B, E]
        return torch.matmul(seq_output, self.output_item_table().transpose(0, 1))  # [B, n_items]
