"""recbole_llmkd: distill LLM sequential recommenders into models that are cheap to serve.

``compat.install()`` runs first so that every process that imports the package (Ray workers included) gets the
RecBole 1.2.1 workarounds before RecBole itself runs (``recbole_llmkd/compat.py``).
"""
from recbole_llmkd import compat

compat.install()  # must stay first: idempotent, cheap (RecBole's modules are patched when they are imported)

__version__ = "0.1.0"
