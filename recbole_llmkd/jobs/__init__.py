"""The jobs that use trained models and the data formats: a teacher's artifact export (``export``, on Ray:
``export_ray``), an external teacher's import (``importer``), the converter of published splits (``convert``) and
the served student's folded checkpoint (``fold``, a Python function: ``save_folded(model, path)``).

They sit above ``model/`` and ``data/``; the command lines of export, import and convert are defined in
``recbole_llmkd.cli``.
"""
