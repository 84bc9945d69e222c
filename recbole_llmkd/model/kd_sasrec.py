"""KDSASRec: RecBole's SASRec distilled from an LLM teacher with DLLM2Rec (docs/METHODS.md §1).

SASRec's own ``forward``, ``full_sort_predict`` and tied item table run unchanged: ``Distiller.init_distiller`` puts
the ED item table (``EDItemEmbedding``) in place of ``item_embedding``, so the ED offset ``ed_weight·g(z_i)`` is added
to the input items before the position embedding, LayerNorm and dropout, and scoring uses its ``.weight`` (SASRec's
item table, plus the offset only with ``ed_apply_to: input_and_output``). ``calculate_loss`` is the ``Distiller``'s:
``(L_base, λ_d·L_kd)``. Train with ``KDTrainer``.
"""
from recbole.model.sequential_recommender.sasrec import SASRec

from recbole_llmkd.model.distiller import Distiller


class KDSASRec(Distiller, SASRec):
    r"""SASRec student of DLLM2Rec: importance-aware ranking distillation + collaborative embedding distillation."""

    def __init__(self, config, dataset, teacher=None, item_text_vectors=None):
        """``teacher`` and ``item_text_vectors``: what ``recbole_llmkd.run.build_model`` read for ``init_distiller``."""
        SASRec.__init__(self, config, dataset)
        self.init_distiller(config, dataset, teacher, item_text_vectors)
