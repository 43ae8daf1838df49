"""One bad file never ends a run (issue 24): `ecg-atlas embed` and `ecg-atlas ingest` over a folder
of hostile files beside one valid MUSE export refuse each bad file with a reason code, report it
in the summary and in --json, and go on; a file naming another file (an HDF5 external link, a
WFDB signal file outside the header's folder) never brings that file's bytes into the output."""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from ecg_atlas.errors import InvalidECGError, StoreError
from ecg_atlas.refusal import read_refusal
from tests.service.conftest import WRITE_TOKEN, cli, start_server

from .. import hostile_files

MUSE = "muse/musephi_mac55_muse_ecg1.xml"


def hostile_folder(root: Path, shared_data: Path) -> tuple[Path, dict[str, str]]:
    """A folder with one valid MUSE export and one file of each hostile kind; (folder, stem of
    each bad file -> what it is). The canary they point at lies outside the folder."""
    folder, secret = root / "ecgs", root / "secret"
    folder.mkdir(parents=True)
    secret.mkdir()
    canary = hostile_files.canary(secret)
    shutil.copy(shared_data / "formats" / MUSE, folder)
    bad = {
        hostile_files.edf_flat_digital_range(folder): "EDF digital max == min",
        hostile_files.wfdb_huge_sig_len(folder): "WFDB sig_len 10**12",
        hostile_files.hdf5_huge_shape(folder, shape=(1, 2**34, 12)): "HDF5 (1, 2**34, 12)",
        hostile_files.hdf5_external_link(folder, canary): "HDF5 external link to the canary",
        hostile_files.wfdb_escaping_signal_file(folder, canary): "WFDB signal file outside its folder",
    }
    return folder, {Path(p).stem: what for p, what in bad.items()}


def _stem(ecg_id: str) -> str:
    return ecg_id.split("/")[0]  # an HDF5 file's rows are FILE/ROW


def test_any_exception_reading_a_file_is_one_unreadable_refusal(caplog):
    caplog.set_level(logging.DEBUG, logger="ecg_atlas.refusal")
    try:
        raise ZeroDivisionError("float division by zero")
    except ZeroDivisionError as exc:
        error = read_refusal(exc, "site/ecg-17")
    assert isinstance(error, InvalidECGError) and error.reason == "unreadable"
    assert "ZeroDivisionError" in str(error) and "Traceback" not in str(error)
    assert "PermissionError: Permission denied" in str(read_refusal(PermissionError(13, "Permission denied",
                                                                                   "/srv/ecgs/x.xml")))
    assert "/srv" not in str(read_refusal(PermissionError(13, "Permission denied", "/srv/ecgs/x.xml")))
    # the traceback goes to DEBUG only
    assert [r.levelno for r in caplog.records] == [logging.DEBUG] * 3
    assert caplog.records[0].exc_info and "site/ecg-17" in caplog.records[0].getMessage()
    # a reader's own refusal keeps its reason and message
    too_short = InvalidECGError("ECG is too short: 3.00 s", reason="too_short")
    assert read_refusal(too_short) is too_short
    assert read_refusal(StoreError("no")).reason == "store_refused"
    # stopping is not a refusal
    for stop in (KeyboardInterrupt(), SystemExit(3)):
        with pytest.raises(type(stop)):
            read_refusal(stop)


@pytest.mark.slow
def test_embed_refuses_each_bad_file_and_embeds_the_rest(tmp_path, shared_data, tiny_checkpoint):
    folder, bad = hostile_folder(tmp_path, shared_data)
    out = tmp_path / "vectors.parquet"
    common = ("--checkpoint", str(tiny_checkpoint), "--device", "cpu", "--workers", "1")
    done = cli("embed", str(folder), *common, "--out", str(out), "--json", check=False)
    assert done.returncode == 0, done.stderr
    assert "Traceback" not in done.stderr
    summary = json.loads(done.stdout)
    assert summary["embedded"] == 1 and summary["refused"] == len(bad)
    refused = summary["refused_ecgs"]
    assert sorted(_stem(i) for i in refused) == sorted(bad)  # each bad file once, each with its message
    assert all(message for message in refused.values())
    assert sum(summary["refusal_reasons"].values()) == len(bad)
    assert pq.read_table(out, columns=["ecg_id"]).column("ecg_id").to_pylist() == [Path(MUSE).stem]
    assert not hostile_files.holds_canary(done.stdout + done.stderr)

    # the text summary lists each reason; only bad files: nothing embedded, exit 1 as before
    (folder / Path(MUSE).name).unlink()
    text = cli("embed", str(folder), *common, "--out", str(tmp_path / "none.parquet"), check=False)
    assert text.returncode == 1 and "Traceback" not in text.stderr
    assert f"embedded 0 of {len(bad)} ECGs" in text.stdout
    assert sum(int(line.split()[1].rstrip(":")) for line in text.stdout.splitlines()
               if line.strip().startswith("refused ")) == len(bad)
    assert not (tmp_path / "none.parquet").exists()


@pytest.mark.slow
def test_ingest_refuses_each_bad_file_and_stores_the_rest(tmp_path, shared_data, tiny_checkpoint):
    folder, bad = hostile_folder(tmp_path, shared_data)
    server = start_server(tmp_path / "store", tiny_checkpoint, tmp_path / "logs")
    try:
        done = cli("ingest", str(folder), "--server", server.address, "--token", WRITE_TOKEN, "--json",
                   check=False)
        assert done.returncode == 0, done.stderr
        assert "Traceback" not in done.stderr and "Exception iterating requests" not in done.stderr
        result = json.loads(done.stdout)
        assert (result["found"], result["stored"], result["failed"]) == (len(bad) + 1, 1, len(bad))
        assert sorted(_stem(i) for i in result["errors"]) == sorted(bad)
        assert sum(result["failure_reasons"].values()) == len(bad)
        with server.client() as c:
            assert int(c.info()["ecg_count"]) == 1
            stored, missing = c.get([Path(MUSE).stem, *result["errors"]], vectors=True)
            assert [e.ecg_id for e in stored] == [Path(MUSE).stem] and sorted(missing) == sorted(result["errors"])

        # the text summary; a re-run skips what is stored and refuses the bad files again
        text = cli("ingest", str(folder), "--server", server.address, "--token", WRITE_TOKEN, check=False)
        assert text.returncode == 0 and "Traceback" not in text.stderr
        assert f"stored 0 of {len(bad) + 1} ECGs (1 already stored, {len(bad)} failed)" in text.stdout
        assert server.process.poll() is None
    finally:
        server.stop()
    said = done.stdout + done.stderr + text.stdout + text.stderr + server.log()
    assert not hostile_files.holds_canary(said)
    for stored_file in (tmp_path / "store").rglob("*"):  # the store's files hold none of its bytes
        assert stored_file.is_dir() or not hostile_files.holds_canary(stored_file.read_bytes()), stored_file
