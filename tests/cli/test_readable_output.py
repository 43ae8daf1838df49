"""What the verbs print for a person: ingest lists the files that failed, get shows only the
fields an ECG has, and SNOMED CT codes carry their names (get, cluster enrichment)."""

from __future__ import annotations

import numpy as np

from ecg_atlas.analysis.enrichment import enrichment
from ecg_atlas.cli.cluster import top_enriched
from ecg_atlas.cli.get import present_fields
from ecg_atlas.cli.ingest import failure_lines


def _result(failed: dict[str, list[str]]) -> dict:
    return {"failure_reasons": {r: len(ids) for r, ids in failed.items()},
            "failure_examples": {r: f"{r.replace('_', ' ')}: example" for r in failed},
            "failed_by_reason": failed}


def test_ingest_lists_every_failed_file_up_to_a_limit_then_counts_the_rest():
    few = _result({"too_short": ["a/short1", "a/short2"]})
    assert failure_lines(few) == ["  failed 2: too_short (e.g. too short: example)", "    a/short1, a/short2"]
    many = _result({"too_few_leads": [f"holter/{i:03d}" for i in range(18)], "too_long": ["x/long"]})
    lines = failure_lines(many, limit=10)
    assert lines[1] == "    " + ", ".join(f"holter/{i:03d}" for i in range(10)) + " and 8 more"
    assert lines[3] == "    x/long"
    assert lines[-1] == "  (--json lists every failed ECG with its message)"


def test_get_shows_present_fields_with_snomed_names():
    metadata = {"age": 56, "sex": "F", "note": None, "site": "", "labels_snomed": ["251146004", "426783006"],
                "dx": ["164889003"], "label_groups": [], "labels_abbr": ["LQRSV", "NSR"], "model_id": "bundled-1",
                "checkpoint_sha256": "c664" * 16}
    shown = dict(present_fields(metadata))
    # no None, no "", no encoder identity (the same for the whole store: `ecg-atlas info`)
    assert set(shown) == {"age", "sex", "labels_snomed", "dx", "label_groups", "labels_abbr"}
    assert shown["labels_snomed"] == "251146004 low qrs voltages, 426783006 sinus rhythm"
    assert shown["dx"] == "164889003 atrial fibrillation"
    assert shown["labels_abbr"] == "LQRSV, NSR" and shown["label_groups"] == "(none)"
    every = dict(present_fields(metadata, everything=True))
    assert every["note"] is None and every["model_id"] == "bundled-1"


def test_cluster_prints_the_most_enriched_labels_with_snomed_names():
    rng = np.random.default_rng(0)
    clusters = np.repeat([0, 1, -1], [60, 60, 10])
    af = np.r_[rng.random(60) < 0.8, rng.random(60) < 0.05, np.zeros(10, bool)].astype(float)
    noise = (rng.random(130) < 0.3).astype(float)
    table = enrichment(clusters, np.c_[af, noise], ["labels_snomed:164889003", "label_groups:NSR"])
    [top, *rest] = top_enriched(table.to_csv())
    assert top["cluster"] == 0 and top["label"] == "labels_snomed:164889003 atrial fibrillation"
    assert float(top["q_value"]) < 0.05 and top["in_cluster"].startswith(f"{int(af[:60].sum())}/60")
    assert all(float(r["q_value"]) < 0.05 for r in rest)
