"""The one error every remover and weights failure becomes, and the command that fixes most."""
from __future__ import annotations

FETCH_COMMAND = "shelfready models fetch"


class ModelError(RuntimeError):
    """A model's weights are missing, corrupt or unknown (one-line message)."""
