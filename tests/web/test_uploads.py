"""Dropped files that attack the web process: bodies past the cap, files that declare gigabytes,
files that point at other server files, files a reader chokes on. Each one is refused with a
reason, as JSON with the security headers, naming no server path, and the web process's peak
memory (VmHWM of the real process) stays within the README's 200 MB.
"""

from __future__ import annotations

import itertools
import json
import re
import shutil
import tempfile
import uuid
from pathlib import Path

import h5py
import numpy as np
import pytest

from ecg_atlas.web.api import MAX_UPLOAD_BYTES
from tests import hostile_files as hostile
from tests.web.conftest import assert_json_error

pytestmark = pytest.mark.slow  # a real server with the whole corpus and a web process

#: the README's promise for a hostile file
PEAK_RSS_BUDGET_MB = 200
TEMP_FOLDER_PREFIX = "ecg-atlas-web-"
#: the atlas's own URL paths, which its access log writes
URL_PATHS = ("/api/", "/static/", "/vendor/")


def multipart(files: list[tuple[str, bytes]], **fields: str) -> tuple[bytes, str]:
    boundary = uuid.uuid4().hex
    parts = [f'--{boundary}\r\nContent-Disposition: form-data; name="{k}"\r\n\r\n{v}\r\n'.encode()
             for k, v in fields.items()]
    for name, data in files:
        parts.append(f'--{boundary}\r\nContent-Disposition: form-data; name="files"; filename="{name}"\r\n'
                     f"Content-Type: application/octet-stream\r\n\r\n".encode() + data + b"\r\n")
    return b"".join(parts) + f"--{boundary}--\r\n".encode(), f"multipart/form-data; boundary={boundary}"


def upload(web, *paths: Path, names: list[str] | None = None, k: str = "3"):
    """(status, headers, raw body) of dropping `paths` on the search view, as the page sends them."""
    body, content_type = multipart([(name, p.read_bytes()) for name, p in zip(names or [p.name for p in paths], paths)],
                                   k=k)
    return web.request("/api/search-file", data=body, headers={"Origin": web.origin, "Content-Type": content_type})


def memory_kb(pid: int) -> dict[str, int]:
    fields = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("VmHWM", "VmRSS"):
            fields[key] = int(value.split()[0])
    return fields


def reset_peak(pid: int) -> int:
    """Reset the process's VmHWM to its current RSS (Linux clear_refs 5); the RSS in kB."""
    Path(f"/proc/{pid}/clear_refs").write_text("5")
    after = memory_kb(pid)
    assert after["VmHWM"] - after["VmRSS"] < 4096, f"this kernel did not reset VmHWM: {after}"
    return after["VmRSS"]


def paths_in(text: str, *folders: Path) -> list[str]:
    """Server paths `text` quotes: the web's temp folders, the given folders, any absolute path."""
    found = [m for m in (TEMP_FOLDER_PREFIX, tempfile.gettempdir() + "/", *(str(f) for f in folders)) if m in text]
    absolute = re.findall(r"""(?:^|[\s'"(=])(/[\w.+-]+/[\w./+-]*)""", text, re.MULTILINE)
    return found + [p for p in absolute if not p.startswith(URL_PATHS)]


@pytest.fixture(scope="module")
def outside(tmp_path_factory):
    """A folder of canary files (outside any upload's folder) and a sibling of the web's temp
    folders for headers whose relative ``../`` names reach the canary from there."""
    folder = tmp_path_factory.mktemp("outside")
    beside_web_tmp = Path(tempfile.mkdtemp(prefix="hostile-"))  # same parent as the web's ecg-atlas-web-*
    yield folder, beside_web_tmp
    shutil.rmtree(beside_web_tmp, ignore_errors=True)


def hostile_cases(tmp_path: Path, outside_folder: Path, beside_web_tmp: Path) -> dict[str, list[Path]]:
    """name -> the files one drop sends."""
    target = hostile.canary(outside_folder)

    def wfdb(header: Path) -> list[Path]:  # a header with a .dat of its own record name beside it
        dat = header.with_suffix(".dat")
        dat.write_bytes(np.ones((100, 12), "<i2").tobytes())
        return [header, dat]

    cases = {
        "hdf5 (1, 2**25, 12)": [hostile.hdf5_huge_shape(tmp_path / "h25")],
        "hdf5 (1, 2**34, 12)": [hostile.hdf5_huge_shape(tmp_path / "h34", shape=(1, 2**34, 12))],
        "npz zip bomb": [hostile.npz_zip_bomb(tmp_path / "npz")],
        "xml flood 60 MB": [hostile.xml_flood(tmp_path / "flood", megabytes=60)],
        "xml 100k deep": [hostile.xml_deep(tmp_path / "deep")],
        "edf digital max == min": [hostile.edf_flat_digital_range(tmp_path / "edf")],
        "wfdb sig_len 10**12": wfdb(hostile.wfdb_huge_sig_len(tmp_path / "siglen")),
        "hdf5 external link": [hostile.hdf5_external_link(tmp_path / "link", target)],
        "hdf5 external storage": [hostile.hdf5_external_storage(tmp_path / "storage", target)],
        "hdf5 virtual dataset": [hostile.hdf5_virtual_dataset(tmp_path / "vds", target)],
        "wfdb absolute signal file": wfdb(hostile.wfdb_escaping_signal_file(tmp_path / "abs", target, absolute=True)),
        "wfdb ../ signal file": wfdb(hostile.wfdb_escaping_signal_file(beside_web_tmp, target)),
    }
    return cases


def warm_up(web, ecg_dir: Path, formats: Path, tmp_path: Path) -> None:
    """One valid drop of every format the hostile cases use, so that the readers' imports and
    first-call allocations are in the baseline."""
    valid = tmp_path / "valid.h5"
    with h5py.File(valid, "w") as f:
        rng = np.random.default_rng(0)
        f.create_dataset("tracings", data=rng.normal(0, 0.3, (1, 4096, 12)).astype(np.float32))
        f.create_dataset("exam_id", data=np.array([1], dtype=np.int64))
    npz = tmp_path / "valid.npz"
    np.savez(npz, signal=np.random.default_rng(1).normal(0, 0.3, (12, 5000)).astype(np.float32), fs=500.0,
             lead_names=np.array(["I", "II", "III", "aVR", "aVL", "aVF", "V1", "V2", "V3", "V4", "V5", "V6"]))
    record = ecg_dir / "cinc_cpsc2018" / "A0001"
    for files in ([valid], [npz], [formats / "muse" / "braveheart_example1.xml"],
                  [formats / "edf" / "cpsc2018_A0001.edf"], [Path(f"{record}.hea"), Path(f"{record}.mat")]):
        status, _, raw = upload(web, *files)
        assert status == 200, (files, raw[:300])


def test_hostile_uploads_are_refused_with_reasons_within_the_memory_budget(second_web, ecg_dir, shared_data,
                                                                           tmp_path, outside):
    web = second_web
    outside_folder, beside_web_tmp = outside
    cases = hostile_cases(tmp_path, outside_folder, beside_web_tmp)
    warm_up(web, ecg_dir, shared_data / "formats", tmp_path)
    log_before = len(web.log())
    baseline_kb = reset_peak(web.process.pid)
    answers = {}
    for name, files in cases.items():
        status, headers, raw = upload(web, *files)
        answers[name] = (status, raw)
        assert 400 <= status < 500, (name, status, raw[:300])  # a refusal: never read, never a 500
        body = assert_json_error(status, headers, raw, status)
        assert body["reason"] != "internal_error", (name, body)
        assert not hostile.holds_canary(raw), name
        assert not paths_in(raw.decode(), outside_folder, tmp_path, beside_web_tmp), (name, body["error"])
    peak_mb = (memory_kb(web.process.pid)["VmHWM"] - baseline_kb) / 1024
    print(f"web peak RSS over its warm baseline across {len(cases)} hostile drops: {peak_mb:.0f} MB; "
          + "; ".join(f"{n}: {s} {json.loads(r)['reason']}" for n, (s, r) in answers.items()))
    assert peak_mb < PEAK_RSS_BUDGET_MB
    log = web.log()[log_before:]
    assert not paths_in(log, outside_folder, tmp_path, beside_web_tmp), log
    assert "Traceback" not in log and hostile.CANARY_TOKEN[:16].decode() not in log


def test_a_chunked_upload_past_the_cap_is_refused_while_it_streams(second_web):
    boundary = "chunked-cap"
    head = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"files\"; filename=\"big.npy\"\r\n"
            f"Content-Type: application/octet-stream\r\n\r\n").encode()
    total = 2 * MAX_UPLOAD_BYTES  # far past the cap, with no Content-Length to say so
    chunk = bytes(256 * 1024)
    chunks = itertools.chain([head], itertools.repeat(chunk, total // len(chunk)))
    status, headers, raw, sent = second_web.chunked("/api/search-file", chunks, {
        "Origin": second_web.origin, "Content-Type": f"multipart/form-data; boundary={boundary}"})
    body = assert_json_error(status, headers, raw, 413, "too_large")
    assert f"{MAX_UPLOAD_BYTES >> 20} MiB" in body["error"]
    assert sent < total  # refused on the way, not after the whole body was buffered
    print(f"chunked upload refused after {sent / 2**20:.0f} MiB sent (cap {MAX_UPLOAD_BYTES >> 20} MiB)")


def test_a_declared_length_past_the_cap_is_refused_before_the_body(second_web):
    answer = second_web.declaring("/api/search-file", MAX_UPLOAD_BYTES + 1, {
        "Origin": second_web.origin, "Content-Type": "multipart/form-data; boundary=x"})
    assert_json_error(*answer, 413, "too_large")


def test_a_lone_wfdb_header_asks_for_its_signal_file(second_web, ecg_dir):
    header = ecg_dir / "cinc_cpsc2018" / "A0001.hea"
    body = assert_json_error(*upload(second_web, header, names=["my record A0001.hea"]), 400, "missing_signal_file")
    assert "add its .dat (or .mat) beside it" in body["error"] and "my record A0001.hea" in body["error"]
    assert not paths_in(body["error"], ecg_dir)
    # with a signal file of another name than the header's: the same advice, naming the one it wants
    other = ecg_dir / "code15" / "47946.dat"
    body = assert_json_error(*upload(second_web, header, other, names=["A0001.hea", "47946.dat"]), 400,
                             "missing_signal_file")
    assert "add its .dat (or .mat) beside it" in body["error"] and "A0001.mat" in body["error"]
    assert not paths_in(json.dumps(body), ecg_dir), body


def test_a_reader_refusal_names_the_uploaded_file_not_the_temp_path(second_web, tmp_path):
    damaged = tmp_path / "damaged.npz"
    damaged.write_bytes(b"PK\x03\x04 not really a zip archive")
    body = assert_json_error(*upload(second_web, damaged, names=["my ecg (copy).npz"]), 400)
    assert body["reason"] != "internal_error"
    assert not paths_in(json.dumps(body), tmp_path), body
    # the name the visitor dropped, not the temp file's (sanitised) one
    assert "my ecg (copy).npz" in body["error"] and "my_ecg__copy_" not in body["error"]
