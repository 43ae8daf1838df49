"""The cohort map's server-side pieces without a server: the hover thumbnail of a real ECG, label
lists as "contains" codes, the enrichment table as the page reads it, and the empty-state hint
(a command the real CLI parser accepts)."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import numpy as np
import pytest

from ecg_atlas.analysis.enrichment import enrichment
from ecg_atlas.embedder import read_ecg
from ecg_atlas.web.map_api import THUMB_BINS, label_codes, parse_enrichment, thumbnail

MAP_JS = Path(__file__).resolve().parents[2] / "ecg_atlas" / "web" / "static" / "js" / "map.js"


def test_a_thumbnail_is_lead_ii_as_an_envelope_that_keeps_every_extreme(ecg_dir):
    recording = read_ecg(ecg_dir / "cinc_cpsc2018" / "A0001.hea")  # 500 Hz, 15 s
    thumb = thumbnail(recording.signal, recording.fs, list(recording.lead_names))
    assert thumb["lead"] == "II" and thumb["seconds"] == 10.0 and thumb["duration_s"] == 15.0
    assert len(thumb["y"]) == 2 * THUMB_BINS
    lead = recording.signal[list(recording.lead_names).index("II"), : int(10 * recording.fs)]
    lead = lead - np.median(lead)
    assert min(thumb["y"]) == pytest.approx(lead.min(), abs=1e-3)
    assert max(thumb["y"]) == pytest.approx(lead.max(), abs=1e-3)
    # each bin's two values are its own extremes, in the order they occur
    edges = np.linspace(0, len(lead), THUMB_BINS + 1).astype(int)
    for b in (0, 7, THUMB_BINS - 1):
        part = lead[edges[b]:edges[b + 1]]
        in_order = sorted([part.min(), part.max()], key=lambda v: int(np.flatnonzero(part == v)[0]))
        assert thumb["y"][2 * b: 2 * b + 2] == pytest.approx(in_order, abs=1e-3)


def test_a_thumbnail_of_a_short_record_without_lead_ii_uses_its_first_lead():
    signal = np.vstack([np.sin(np.linspace(0, 20, 1000)), np.full(1000, np.nan)])
    thumb = thumbnail(signal, 250.0, ["V1", "V2"])
    assert thumb["lead"] == "V1" and thumb["seconds"] == 4.0 and len(thumb["y"]) == 2 * THUMB_BINS
    gaps = thumbnail(signal[::-1], 250.0, ["V2", "V1"])  # the first lead is all NaN: gaps travel as null
    assert gaps["lead"] == "V2" and set(gaps["y"]) == {None}


def test_label_lists_become_labels_by_count_and_per_row_codes():
    labels, codes = label_codes([["AF", "RBBB"], ["NORM"], None, [], ["AF"], ["AF", "AF"]], "labels_abbr")
    assert labels == [{"label": "AF", "count": 3, "shown": "AF"}, {"label": "NORM", "count": 1, "shown": "NORM"},
                      {"label": "RBBB", "count": 1, "shown": "RBBB"}]
    assert codes == [[0, 2], [1], None, [], [0], [0]]
    # a SNOMED CT column's codes are shown with their names
    labels, _ = label_codes([["164889003", "59118001"], ["164889003"]], "labels_snomed")
    assert [(x["label"], x["shown"]) for x in labels] == [("164889003", "164889003 atrial fibrillation"),
                                                          ("59118001", "59118001 right bundle branch block")]


def test_the_enrichment_table_reads_back_as_written_most_significant_first():
    clusters = np.array([0] * 30 + [1] * 30 + [-1] * 5)
    af = np.r_[np.ones(20), np.zeros(10), np.zeros(28), np.ones(2), np.zeros(5)]
    labels = np.column_stack([af, np.r_[np.full(60, np.nan), np.ones(5)]])
    table = enrichment(clusters, labels, ["label_groups:AF_AFL", "label_groups:NORM"],
                       ages=[50 + i % 30 for i in range(65)], sexes=["F", "M"] * 32 + [None])
    parsed = parse_enrichment(table.to_csv())
    assert [c["cluster"] for c in parsed["clusters"]] == [-1, 0, 1]
    assert {c["cluster"]: c["size"] for c in parsed["clusters"]} == {-1: 5, 0: 30, 1: 30}
    assert len(parsed["labels"]) == len(table.labels)
    best = min(table.labels, key=lambda r: r.q_value)
    top = parsed["labels"][0]
    assert (top["cluster"], top["label"], top["positive_in"], top["n_in"]) == (best.cluster, best.label,
                                                                               best.positive_in, best.n_in)
    assert top["q_value"] == pytest.approx(best.q_value, rel=1e-5)
    assert all(r["shown"] == r["label"] for r in parsed["labels"])  # label_groups: no codes to name
    named = parse_enrichment(enrichment(clusters, labels[:, :1], ["labels_snomed:164889003"]).to_csv())
    assert named["labels"][0]["shown"] == "labels_snomed:164889003 atrial fibrillation"
    q = [r["q_value"] for r in parsed["labels"] if r["q_value"] is not None]
    assert q == sorted(q)
    assert parse_enrichment("") == {"clusters": [], "labels": []}


def test_the_empty_map_hint_is_a_cluster_command_the_cli_accepts():
    from ecg_atlas.cli import build_parser

    hint = re.search(r'NO_RUNS_HINT = "([^"]*)"\s*\+\s*"`([^`]*)`', MAP_JS.read_text())
    assert hint, "map.js's empty-state hint lost its command"
    words = shlex.split(hint.group(2).replace("STORE", "/tmp/store").replace("NAME", "first_map"))
    assert words[0] == "ecg-atlas"
    args = build_parser().parse_args(words[1:])
    assert args.command == "cluster" and args.run == "first_map" and args.labels == ["label_groups"]
    assert args.store == "/tmp/store"
