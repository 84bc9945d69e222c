"""KDSASRec: RecBole's SASRec distilled from an LLM teacher with DLLM2Rec (docs/METHODS.md §1).

Only two things differ from SASRec: ``forward`` embeds the input items with ``embed_input_items`` (the ED offset
``ed_weight·g(z_i)`` is added before the position embedding, LayerNorm and dropout), and ``calculate_loss`` returns
``(L_base, λ_d·L_kd)`` from ``Distiller.distill``. Scoring uses ``output_item_table()``, which is SASRec's tied item
table (plus the ED offset only with ``ed_apply_to: input_and_output``). Train with ``KDTrainer``.
"""
import torch
from recbole.model.sequential_recommender.sasrec import SASRec

from recbole_llmkd.model.distiller import Distiller


class KDSASRec(Distiller, SASRec):
    r"""SASRec student of DLLM2Rec: importance-aware ranking distillation + collaborative embedding distillation."""

    def __init__(self, config, dataset):
        SASRec.__init__(self, config, dataset)
        self.init_distiller(config, dataset, item_table_rows=self.n_items, embedding_size=self.hidden_size)

    def forward(self, item_seq, item_seq_len):
        position_ids = torch.arange(item_seq.size(1), dtype=torch.long, device=item_seq.device)  # [L]
        position_ids = position_ids.unsqueeze(0).expand_as(item_seq)  # [B, L]
        position_embedding = self.position_embedding(position_ids)  # [B, L, H]

        item_emb = self.embed_input_items(item_seq)  # [B, L, H], b_i (+ ed·g(z_i))
        input_emb = self.LayerNorm(item_emb + position_embedding)  # [B, L, H]
        input_emb = self.dropout(input_emb)

        extended_attention_mask = self.get_attention_mask(item_seq)  # [B, 1, L, L]
        trm_output = self.trm_encoder(input_emb, extended_attention_mask, output_all_encoded_layers=True)
        return self.gather_indexes(trm_output[-1], item_seq_len - 1)  # [B, H]

    def calculate_loss(self, interaction):
        item_seq = interaction[self.ITEM_SEQ]  # [B, L]
        pos_items = interaction[self.POS_ITEM_ID]  # [B]
        seq_output = self.forward(item_seq, interaction[self.ITEM_SEQ_LEN])  # [B, H]
        logits = torch.matmul(seq_output, self.output_item_table().transpose(0, 1))  # [B, n_items]
        return self.distill(interaction, logits, item_seq, pos_items, lambda: self.loss_fct(logits, pos_items))

    def predict(self, interaction):
        seq_output = self.forward(interaction[self.ITEM_SEQ], interaction[self.ITEM_SEQ_LEN])  # [B, H]
        test_item_emb = self.output_item_table()[interaction[self.ITEM_ID]]  # [B, H]
        return torch.mul(seq_output, test_item_emb).sum(dim=1)  # [B]

    def full_sort_predict(self, interaction):
        seq_output = self.forward(interaction[self.ITEM_SEQ], interaction[self.ITEM_SEQ_LEN])  # [B, H]
        return torch.matmul(seq_output, self.output_item_table().transpose(0, 1))  # [B, n_items]
