"""`search`, `get` and `ingest` as a person reads them, against the corpus server: search by id
leaves the query out unless asked, get shows present fields with SNOMED CT names, and an ingest
lists which files failed."""

from __future__ import annotations

import json

import pytest

from tests.service.conftest import READ_TOKEN, WRITE_TOKEN, cli

QUERY = "cinc_ptbxl/HR00001"  # labels_snomed 251146004;426783006 in the manifest


@pytest.mark.slow
def test_search_by_id_leaves_the_query_out_unless_asked(corpus_server):
    conn = ["--server", corpus_server.address, "--token", READ_TOKEN]
    plain = json.loads(cli("search", "--id", QUERY, "-k", "4", "--json", *conn).stdout)
    assert len(plain["hits"]) == 4 and QUERY not in [h["ecg_id"] for h in plain["hits"]]
    kept = json.loads(cli("search", "--id", QUERY, "-k", "4", "--include-self", "--json", *conn).stdout)
    assert kept["hits"][0]["ecg_id"] == QUERY and kept["hits"][0]["score"] == pytest.approx(1.0, abs=1e-4)
    assert [h["ecg_id"] for h in kept["hits"][1:]] == [h["ecg_id"] for h in plain["hits"][:3]]
    same = json.loads(cli("search", "--id", QUERY, "-k", "4", "--exclude-self", "--json", *conn).stdout)
    assert same["hits"] == plain["hits"]  # the old flag still works: it is the default now
    assert "--include-self" in cli("search", "--help").stdout


@pytest.mark.slow
def test_get_prints_only_present_fields_and_names_snomed_codes(corpus_server):
    conn = ["--server", corpus_server.address, "--token", READ_TOKEN]
    stored = json.loads(cli("get", QUERY, "--json", *conn).stdout)["ecgs"][0]["metadata"]
    unset = [k for k, v in stored.items() if v is None]
    assert unset  # the store has columns this ECG has no value for...
    text = cli("get", QUERY, *conn).stdout
    assert "None" not in text and not any(f"  {k}:" in text for k in unset)  # ...which are not printed
    assert "  labels_snomed: 251146004 low qrs voltages, 426783006 sinus rhythm" in text.splitlines()
    every = cli("get", QUERY, "--all", *conn).stdout
    assert all(f"  {k}: None" in every for k in unset)


@pytest.mark.slow
def test_ingesting_a_folder_lists_the_files_that_failed(corpus_server, ecg_dir):
    first = corpus_server.ingest  # --json of the corpus ingest: every failed id, by reason
    failed = first["failed_by_reason"]
    assert sum(len(ids) for ids in failed.values()) == first["failed"] > 0
    # again, as text: stored ECGs are skipped, the refused ones are tried and listed again
    text = cli("ingest", str(ecg_dir), "--server", corpus_server.address, "--token", WRITE_TOKEN).stdout
    lines = text.splitlines()
    for reason, ids in failed.items():
        at = next(i for i, line in enumerate(lines) if line.startswith(f"  failed {len(ids)}: {reason} "))
        shown, _, rest = lines[at + 1].strip().partition(" and ")
        assert shown.split(", ") == ids[:10]
        assert rest == (f"{len(ids) - 10} more" if len(ids) > 10 else "")
    if any(len(ids) > 10 for ids in failed.values()):
        assert "--json lists every failed ECG" in text
