"""KDGRU4Rec: RecBole's GRU4Rec distilled from an LLM teacher with DLLM2Rec (docs/METHODS.md §1).

GRU4Rec's own ``forward`` and ``full_sort_predict`` run unchanged on the ED item table (``EDItemEmbedding``, the
offset added before the embedding dropout); ``calculate_loss`` is the ``Distiller``'s: ``(L_base, λ_d·L_kd)``. Train
with ``KDTrainer``.
"""
from recbole.model.sequential_recommender.gru4rec import GRU4Rec

from recbole_llmkd.model.distiller import Distiller


class KDGRU4Rec(Distiller, GRU4Rec):
    r"""GRU4Rec student of DLLM2Rec: importance-aware ranking distillation + collaborative embedding distillation."""

    def __init__(self, config, dataset, teacher=None, item_text_vectors=None):
        """``teacher`` and ``item_text_vectors``: what ``recbole_llmkd.run.build_model`` read for ``init_distiller``."""
        GRU4Rec.__init__(self, config, dataset)
        self.init_distiller(config, dataset, teacher, item_text_vectors)
