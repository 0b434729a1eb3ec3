"""Reading the JSON records the stages write (manifests, stats, checkpoint records)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from curate.core.errors import InputError


def read_json(path: Path) -> dict[str, Any]:
    """A JSON object from ``path`` (``InputError`` for invalid JSON or another JSON type)."""
    try:
        value = json.loads(Path(path).read_text())
    except json.JSONDecodeError as err:
        raise InputError(f"{path} is not valid JSON: {err}") from None
    except UnicodeDecodeError:
        raise InputError(f"{path} is not a UTF-8 text file") from None
    if not isinstance(value, dict):
        raise InputError(f"{path} holds a JSON {type(value).__name__}, expected an object")
    return value
