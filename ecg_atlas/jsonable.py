"""JSON-safe values: the one rule for every JSON the project writes.

CLI ``--json`` output, the web atlas's responses, the probe and cluster-run records kept beside a
store and the reports that travel as JSON text on the wire all go through ``jsonable``:

* NaN and ±infinity → ``null`` (JSON has no such numbers: Python's ``json`` would write a bare
  ``NaN``, which a browser's ``JSON.parse`` and most other readers refuse);
* ``datetime`` / ``date`` / ``time`` → ISO 8601 text;
* NumPy scalars → Python numbers and booleans, NumPy arrays → (nested) lists, under the same rules;
* dicts, lists and tuples are walked (tuples become lists; NumPy scalar keys become Python ones);
* ``str``, ``int``, ``bool``, ``None`` and finite floats stay as they are.

Anything else raises ``TypeError`` naming its type, as ``json`` itself would.
"""

from __future__ import annotations

import datetime as dt
import math

import numpy as np


def jsonable(value):
    """``value`` with every part JSON can carry as it is, and the rest converted (module docstring)."""
    if isinstance(value, np.generic):
        return jsonable(value.item())
    if value is None or isinstance(value, (str, bool, int)):
        return value
    if isinstance(value, float):
        return float(value) if math.isfinite(value) else None
    if isinstance(value, dict):
        return {_key(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [jsonable(v) for v in value]
    if isinstance(value, np.ndarray):
        return jsonable(value.tolist())
    if isinstance(value, (dt.datetime, dt.date, dt.time)):
        return value.isoformat()
    raise TypeError(f"not JSON-serialisable: {type(value).__name__}")


def _key(key):
    return key.item() if isinstance(key, np.generic) else key
