"""SNOMED CT codes shown with their names (ecg_atlas/labels.py): the shipped table covers the
sample corpus, and values are named only in the columns that hold codes."""

from __future__ import annotations

import csv

from ecg_atlas.labels import display_value, holds_snomed, label_display, snomed_name, snomed_table, with_name


def test_every_code_of_the_corpus_has_a_name(ecg_dir):
    rows = list(csv.DictReader(open(ecg_dir / "manifest.csv")))
    codes = {c for r in rows for c in r["labels_snomed"].split(";") if c}
    assert len(codes) > 30
    assert sorted(c for c in codes if snomed_name(c) is None) == []
    assert snomed_name("164889003") == "atrial fibrillation" and snomed_name(164889003) == "atrial fibrillation"
    assert snomed_table()["164889003"].label_group == "AF_AFL"


def test_codes_are_named_only_where_a_column_holds_them():
    assert holds_snomed("dx") and holds_snomed("labels_snomed") and not holds_snomed("labels_abbr")
    assert display_value("dx", ["426783006", "999999"]) == ["426783006 sinus rhythm", "999999"]  # unknown: kept
    assert display_value("labels_snomed", "164889003;59118001") == \
        "164889003 atrial fibrillation; 59118001 right bundle branch block"
    assert display_value("patient_ref", "164889003") == "164889003"  # not a diagnosis column
    assert display_value("dx", None) is None
    assert with_name("164889003.0") == "164889003 atrial fibrillation"  # a code a CSV reader made a float
    assert label_display("labels_snomed:164889003") == "labels_snomed:164889003 atrial fibrillation"
    assert label_display("label_groups:AF_AFL") == "label_groups:AF_AFL"
