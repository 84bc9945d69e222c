"""KDBERT4Rec: RecBole's BERT4Rec distilled from an LLM teacher with DLLM2Rec (docs/METHODS.md §1, §3.2).

The base loss stays BERT4Rec's masked-item loss (``base_loss: native``) on the transform's masked sequence. The
distillation acts on the **next-item** logits, BERT4Rec's own ``full_sort_predict`` (the mask token appended after the
unmasked ``item_id_list``); the student's top-K for ``w^o`` comes from those logits. BERT4Rec's ``forward`` runs
unchanged on the ED item table (``EDItemEmbedding``): the offset is added before the position embedding and is zero
for [PAD] and the mask token (id ``n_items``, no text); scoring uses its ``.weight`` without the mask row.
"""
import torch
from recbole.model.sequential_recommender.bert4rec import BERT4Rec

from recbole_llmkd.model.distiller import Distiller


class KDBERT4Rec(Distiller, BERT4Rec):
    r"""BERT4Rec student of DLLM2Rec: importance-aware ranking distillation + collaborative embedding distillation."""

    def __init__(self, config, dataset, teacher=None, item_text_vectors=None):
        """``teacher`` and ``item_text_vectors``: what ``recbole_llmkd.run.build_model`` read for ``init_distiller``."""
        BERT4Rec.__init__(self, config, dataset)
        self.init_distiller(config, dataset, teacher, item_text_vectors)

    def reconstruct_test_data(self, item_seq, item_seq_len):
        """BERT4Rec's own rebuild (mask token at position ``len``, first column dropped), without a Python loop."""
        padding = torch.zeros_like(item_seq[:, :1])  # [B, 1]
        extended = torch.cat((item_seq, padding), dim=-1)  # [B, L + 1]
        extended.scatter_(1, item_seq_len.long()[:, None], self.mask_token)
        return extended[:, 1:]  # [B, L]

    def native_loss(self, interaction, logits):
        """BERT4Rec's masked-item CE loss (its own ``calculate_loss``, scored with ``item_embedding.weight``)."""
        return BERT4Rec.calculate_loss(self, interaction)

    def predict(self, interaction):
        item_seq, item_seq_len = interaction[self.ITEM_SEQ], interaction[self.ITEM_SEQ_LEN]
        test_item = interaction[self.ITEM_ID]  # [B]
        seq_output = self.forward(self.reconstruct_test_data(item_seq, item_seq_len))  # [B, L, H]
        seq_output = self.gather_indexes(seq_output, item_seq_len - 1)  # [B, H]
        test_item_emb = self.item_embedding.weight[test_item]  # [B, H], the scoring table (not the input embedding)
        return torch.mul(seq_output, test_item_emb).sum(dim=1) + self.output_bias[test_item]  # [B]
