"""Measurements shared by runs, the pipeline report and the benchmarks: parameter counts, inference throughput,
and the context every reported figure carries (device, commit)."""
import os
import platform
import subprocess
import time
from typing import Dict, Optional

import torch


def git_commit() -> str:
    """Short commit of the checkout this package is imported from; ``unknown`` outside a git checkout."""
    try:
        return subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                              cwd=os.path.dirname(os.path.abspath(__file__)), timeout=10).stdout.strip() or "unknown"
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def device_description(device: Optional[torch.device] = None, torch_threads: bool = False) -> str:
    """``GPU: <name>`` or ``CPU: <processor>, <n> cores`` for ``device`` (default: the GPU when CUDA is present).

    ``torch_threads`` appends torch's CPU thread count on CPU (benchmarks report it).
    """
    use_gpu = torch.cuda.is_available() if device is None else torch.device(device).type == "cuda"
    if use_gpu:
        return f"GPU: {torch.cuda.get_device_name(device if device is not None else 0)}"
    description = f"CPU: {platform.processor() or platform.machine()}, {os.cpu_count()} cores"
    return f"{description}, torch threads {torch.get_num_threads()}" if torch_threads else description


def count_parameters(model: torch.nn.Module) -> Dict[str, int]:
    """Total and trainable parameters of the module tree (a teacher kept outside the tree is not counted)."""
    total = sum(p.numel() for p in model.parameters())
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    return {"params_total": total, "params_trainable": trainable}


def _synchronize(device) -> None:
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize(device)


@torch.no_grad()
def full_ranking_throughput(model, eval_data, device, warmup_batches: int = 1, max_batches: int = 0) -> Dict[str, float]:
    """Users per second of full-ranking inference (``full_sort_predict`` over all items), after warm-up.

    Iterates ``eval_data`` (a RecBole full-sort eval dataloader). Each of the first ``warmup_batches`` batches is
    run once untimed before being timed like every other batch, so every user is timed exactly once, even when
    the split fits in one batch. ``max_batches`` > 0 caps the timed batches (0 = the whole split). Only the
    model's forward and scoring are timed, not data loading.
    """
    model.eval()
    timed_users, timed_seconds, seen = 0, 0.0, 0
    for batch_idx, batched_data in enumerate(eval_data):
        interaction = batched_data[0].to(device)
        if batch_idx < warmup_batches:
            model.full_sort_predict(interaction)
        _synchronize(device)
        start = time.perf_counter()
        model.full_sort_predict(interaction)
        _synchronize(device)
        timed_seconds += time.perf_counter() - start
        timed_users += len(interaction)
        seen += 1
        if max_batches and seen >= max_batches:
            break
    if timed_users == 0:
        raise ValueError("the evaluation split is empty: no user to time")
    return {"throughput_users_per_s": timed_users / timed_seconds, "throughput_users_timed": timed_users}
