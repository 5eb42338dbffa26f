"""Models already in the local Hugging Face cache (for the model panel)."""

from __future__ import annotations


def cached_hub_models(limit: int = 50) -> list[str]:
    """Repo ids of cached *models* (never raises: an unreadable cache just gives [])."""
    try:
        from huggingface_hub import scan_cache_dir

        info = scan_cache_dir()
    except Exception:
        return []
    out = [r.repo_id for r in info.repos if getattr(r, "repo_type", "model") == "model"]
    return sorted(out)[:limit]
