"""KDBERT4Rec: RecBole's BERT4Rec distilled from an LLM teacher with DLLM2Rec (docs/METHODS.md §1, §3.2).

The base loss stays BERT4Rec's masked-item loss (``base_loss: native``) on the transform's masked sequence. The
distillation acts on the **next-item** logits, computed exactly as ``full_sort_predict`` does (the mask token
appended after the unmasked ``item_id_list``); the student's top-K for ``w^o`` comes from those logits. The ED offset
is added before the position embedding and is zero for [PAD] and the mask token (id ``n_items``, no text).
"""
import torch
from torch import nn
from recbole.model.sequential_recommender.bert4rec import BERT4Rec

from recbole_llmkd.model.distiller import Distiller


class KDBERT4Rec(Distiller, BERT4Rec):
    r"""BERT4Rec student of DLLM2Rec: importance-aware ranking distillation + collaborative embedding distillation."""

    def __init__(self, config, dataset):
        BERT4Rec.__init__(self, config, dataset)
        self.init_distiller(config, dataset, item_table_rows=self.n_items + 1, embedding_size=self.hidden_size)

    def forward(self, item_seq):
        position_ids = torch.arange(item_seq.size(1), dtype=torch.long, device=item_seq.device)  # [L]
        position_ids = position_ids.unsqueeze(0).expand_as(item_seq)  # [B, L]
        position_embedding = self.position_embedding(position_ids)  # [B, L, H]
        item_emb = self.embed_input_items(item_seq)  # [B, L, H], b_i (+ ed·g(z_i)); mask token: b only
        input_emb = self.dropout(self.LayerNorm(item_emb + position_embedding))  # [B, L, H]
        extended_attention_mask = self.get_attention_mask(item_seq, bidirectional=True)  # [B, 1, L, L]
        trm_output = self.trm_encoder(input_emb, extended_attention_mask, output_all_encoded_layers=True)
        ffn_output = self.output_gelu(self.output_ffn(trm_output[-1]))  # [B, L, H]
        return self.output_ln(ffn_output)  # [B, L, H]

    def reconstruct_test_data(self, item_seq, item_seq_len):
        """BERT4Rec's own rebuild (mask token at position ``len``, first column dropped), without a Python loop."""
        padding = torch.zeros_like(item_seq[:, :1])  # [B, 1]
        extended = torch.cat((item_seq, padding), dim=-1)  # [B, L + 1]
        extended.scatter_(1, item_seq_len.long()[:, None], self.mask_token)
        return extended[:, 1:]  # [B, L]

    def next_item_logits(self, item_seq, item_seq_len):
        """Next-item logits as ``full_sort_predict`` computes them. ``[B, n_items]``."""
        seq_output = self.forward(self.reconstruct_test_data(item_seq, item_seq_len))  # [B, L, H]
        seq_output = self.gather_indexes(seq_output, item_seq_len - 1)  # [B, H]
        return torch.matmul(seq_output, self.output_item_table().transpose(0, 1)) + self.output_bias  # [B, n_items]

    def masked_item_loss(self, interaction):
        """BERT4Rec's masked-item CE loss, scored with ``output_item_table()``."""
        masked_item_seq = interaction[self.MASK_ITEM_SEQ]  # [B, L]
        pos_items = interaction[self.POS_ITEMS]  # [B, mask_len]
        masked_index = interaction[self.MASK_INDEX]  # [B, mask_len]
        seq_output = self.forward(masked_item_seq)  # [B, L, H]
        pred_index_map = self.multi_hot_embed(masked_index, masked_item_seq.size(-1))  # [B*mask_len, L]
        pred_index_map = pred_index_map.view(masked_index.size(0), masked_index.size(1), -1)  # [B, mask_len, L]
        seq_output = torch.bmm(pred_index_map, seq_output)  # [B, mask_len, H]
        test_item_emb = self.output_item_table()  # [n_items, H]
        logits = torch.matmul(seq_output, test_item_emb.transpose(0, 1)) + self.output_bias  # [B, mask_len, n_items]
        targets = (masked_index > 0).float().view(-1)  # [B*mask_len]
        loss_fct = nn.CrossEntropyLoss(reduction="none")
        per_position = loss_fct(logits.view(-1, test_item_emb.size(0)), pos_items.view(-1))  # [B*mask_len]
        return torch.sum(per_position * targets) / torch.sum(targets)

    def calculate_loss(self, interaction):
        item_seq = interaction[self.ITEM_SEQ]  # [B, L], unmasked history
        item_seq_len = interaction[self.ITEM_SEQ_LEN]  # [B]
        pos_items = interaction[self.POS_ITEM_ID]  # [B], next item
        logits = self.next_item_logits(item_seq, item_seq_len)  # [B, n_items]
        return self.distill(interaction, logits, item_seq, pos_items, lambda: self.masked_item_loss(interaction))

    def predict(self, interaction):
        item_seq, item_seq_len = interaction[self.ITEM_SEQ], interaction[self.ITEM_SEQ_LEN]
        test_item = interaction[self.ITEM_ID]  # [B]
        seq_output = self.forward(self.reconstruct_test_data(item_seq, item_seq_len))  # [B, L, H]
        seq_output = self.gather_indexes(seq_output, item_seq_len - 1)  # [B, H]
        test_item_emb = self.output_item_table()[test_item]  # [B, H]
        return torch.mul(seq_output, test_item_emb).sum(dim=1) + self.output_bias[test_item]  # [B]

    def full_sort_predict(self, interaction):
        return self.next_item_logits(interaction[self.ITEM_SEQ], interaction[self.ITEM_SEQ_LEN])  # [B, n_items]
