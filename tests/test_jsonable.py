"""ecg_atlas/jsonable.py: one rule for every JSON the project writes, and no second copy of it."""

from __future__ import annotations

import ast
import datetime as dt
import json
from pathlib import Path

import numpy as np
import pytest

from ecg_atlas.cli._client import print_json
from ecg_atlas.jsonable import jsonable

REPO = Path(__file__).resolve().parent.parent


def strict_json(text: str):
    """Parse as a strict JSON reader (a browser's JSON.parse) would: NaN and Infinity refused."""
    def refuse(constant):
        raise ValueError(f"{constant} is not JSON")

    return json.loads(text, parse_constant=refuse)


def test_nan_and_infinity_become_null_wherever_they_sit():
    value = {"a": float("nan"), "b": [float("inf"), -float("inf"), 1.5], "c": (np.float32("nan"), np.float64(2.0)),
             "d": np.array([[np.nan, 0.25]])}
    assert jsonable(value) == {"a": None, "b": [None, None, 1.5], "c": [None, 2.0], "d": [[None, 0.25]]}
    strict_json(json.dumps(jsonable(value)))


def test_times_become_iso_text_and_numpy_becomes_python():
    value = {np.int64(3): [dt.datetime(2024, 5, 6, 7, 8, 9), dt.date(2024, 5, 6), dt.time(7, 8)],
             "n": np.int32(7), "flag": np.bool_(True), "text": np.str_("x"), "ids": np.arange(3)}
    out = jsonable(value)
    assert out == {3: ["2024-05-06T07:08:09", "2024-05-06", "07:08:00"], "n": 7, "flag": True, "text": "x",
                   "ids": [0, 1, 2]}
    assert type(out["n"]) is int and type(out["flag"]) is bool and all(type(i) is int for i in out["ids"])
    assert jsonable(None) is None and jsonable("s") == "s" and jsonable(True) is True


def test_anything_else_is_refused_by_name():
    with pytest.raises(TypeError, match="not JSON-serialisable: object"):
        jsonable({"x": [object()]})


def test_cli_json_output_follows_the_rule(capsys):
    print_json({"auroc": float("nan"), "at": dt.datetime(2024, 1, 2), "vector": np.ones(2, np.float32)})
    assert strict_json(capsys.readouterr().out) == {"auroc": None, "at": "2024-01-02T00:00:00", "vector": [1.0, 1.0]}


def test_no_product_module_keeps_its_own_copy():
    """The web atlas, the CLI, the analysis RPCs and the analysis store each had one, with other rules."""
    copies = []
    for folder in ("ecg_atlas", "embedder", "index", "analysis"):
        for path in (REPO / folder).rglob("*.py"):
            for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
                if isinstance(node, ast.FunctionDef) and node.name.strip("_") == "jsonable":
                    copies.append(str(path.relative_to(REPO)))
    assert copies == ["ecg_atlas/jsonable.py"]
