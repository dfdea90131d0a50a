"""One rule for parsing JSON from files we did not write."""

from __future__ import annotations

import json
from typing import Any


def loads_json(text: str) -> Any:
    """json.loads, where every way the text can fail is a json.JSONDecodeError.

    Python's parser also raises RecursionError (nesting thousands deep) and ValueError (an integer
    of more than 4300 digits); readers of untrusted files catch one exception type instead of three.
    """
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        raise
    except RecursionError:
        raise json.JSONDecodeError("nested too deeply", text, 0) from None
    except ValueError as exc:
        raise json.JSONDecodeError(str(exc).split(";")[0], text, 0) from None
