"""recbole_llmkd: distill LLM sequential recommenders into models that are cheap to serve.

``compat`` is imported first so that every process that imports the package (Ray workers
included) gets the RecBole 1.2.1 workarounds before RecBole itself is imported.
"""
from recbole_llmkd import compat  # noqa: F401  (must stay the first import)

__version__ = "0.1.0"
