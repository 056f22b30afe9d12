"""Where facederm keeps what it builds once and reuses: ``$FACEDERM_CACHE_DIR``, else
``$XDG_CACHE_HOME/facederm``, else ``~/.cache/facederm`` (the XDG convention platformdirs follows on Linux;
macOS users get the same path, which is fine for a cache)."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any

ENV_VAR = "FACEDERM_CACHE_DIR"


def cache_dir() -> Path:
    """The cache root (not created here)."""
    if os.environ.get(ENV_VAR):
        return Path(os.environ[ENV_VAR]).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME")
    base = Path(xdg).expanduser() if xdg else Path.home() / ".cache"
    return base / "facederm"


def recipe_key(recipe: dict[str, Any], version: str) -> str:
    """A short stable hash of a recipe and the facederm version: a changed recipe or release rebuilds."""
    text = json.dumps({"recipe": recipe, "facederm": version}, sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:16]
