"""A built model given the trained state of a saved RecBole checkpoint (the dict the loader read; no file here)."""
import torch


def restore(model: torch.nn.Module, saved: dict, device) -> torch.nn.Module:
    """``model`` with ``saved["other_parameter"]`` loaded first (an LLM recommender checks its backbone, item table
    and dataset against the saved identity: a clear error before any shape), then ``saved["state_dict"]``; moved to
    ``device`` and in eval mode."""
    model.load_other_parameter(saved.get("other_parameter"))
    model.load_state_dict(saved["state_dict"])
    return model.to(device).eval()
