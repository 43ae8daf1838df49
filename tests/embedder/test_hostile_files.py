"""Hostile files (tests/hostile_files.py): no reader follows a reference to another file, every
declared size is checked before anything is allocated for it, and each one is refused with a
reason, in a fresh process whose peak memory grows by less than the README's 200 MB."""

from __future__ import annotations

import json
import logging
import subprocess
import sys
from pathlib import Path

import h5py
import numpy as np
import pytest

from ecg_atlas.embedder.formats.common import (
    MAX_SIGNAL_BYTES,
    MAX_VALUES,
    MAX_XML_DEPTH,
    MAX_XML_MARKUP,
)
from ecg_atlas.embedder.readers import iter_hdf5_ecgs, read_ecg
from ecg_atlas.errors import InvalidECGError
from tests import hostile_files as hostile
from tests.conftest import REPO_ROOT

#: The README's promise: every hostile file is refused within this much memory.
RSS_LIMIT_MB = 200
LEADS = [f"lead {i}" for i in range(12)]


@pytest.fixture()
def canary(tmp_path: Path) -> Path:
    """The secret outside the upload's folder that hostile files point at."""
    return hostile.canary(tmp_path / "elsewhere")


def _refusal(call, reason: str, caplog=None) -> InvalidECGError:
    with pytest.raises(InvalidECGError) as caught:
        call()
    error = caught.value
    assert error.reason == reason, str(error)
    assert not hostile.holds_canary(str(error))
    if caplog is not None:
        assert not [r for r in caplog.records if r.levelno > logging.DEBUG]
    return error


# --- no reader follows a reference to another file ------------------------------------------------

REFERENCES = {  # builder -> words the refusal must use to name the feature
    "hdf5_external_link": "external link",
    "hdf5_external_storage": "external storage",
    "hdf5_virtual_dataset": "virtual dataset",
}


def test_the_canary_would_come_back_if_a_reference_were_followed(tmp_path, canary):
    """The check the tests below rely on: h5py itself follows each reference to the canary."""
    for builder in REFERENCES:
        path = getattr(hostile, builder)(tmp_path / builder, canary)
        with h5py.File(path, "r") as handle:
            assert hostile.holds_canary(handle["tracings"][0]), builder


@pytest.mark.parametrize("dataset", ["tracings", "exam_id"])
@pytest.mark.parametrize("builder", sorted(REFERENCES))
def test_hdf5_reference_to_another_file_is_refused(tmp_path, canary, builder, dataset, caplog):
    path = getattr(hostile, builder)(tmp_path / "upload", canary, dataset=dataset)
    with caplog.at_level(logging.DEBUG):
        for call in (lambda: read_ecg(path), lambda: list(iter_hdf5_ecgs(path))):
            error = _refusal(call, "unsupported", caplog)
            assert REFERENCES[builder] in str(error) and f"'{dataset}'" in str(error)


def test_hdf5_soft_link_is_refused_even_inside_the_file(tmp_path):
    """Decision: only datasets stored under their own name (hard links) are read; a soft link's
    path can lead through an external link, and CODE-15 files never use one."""
    path = tmp_path / "soft.h5"
    with h5py.File(path, "w") as handle:
        handle["data"] = np.ones((1, 4096, 12), np.float32)
        handle["tracings"] = h5py.SoftLink("/data")
    assert "soft link" in str(_refusal(lambda: read_ecg(path), "unsupported"))


def test_hdf5_filter_that_needs_a_plugin_is_refused(tmp_path):
    """An unknown filter id makes HDF5 search its plugin folders and load a library from disk."""
    path = tmp_path / "plugin.h5"
    with h5py.File(path, "w") as handle:
        handle.create_dataset("tracings", shape=(1, 4096, 12), dtype="f4", chunks=(1, 4096, 12),
                              compression=32001, allow_unknown_filter=True)  # Blosc, not built in
    assert "filter 32001" in str(_refusal(lambda: read_ecg(path), "unsupported"))


def test_gzip_hdf5_with_ordinary_datasets_still_reads(tmp_path):
    path = tmp_path / "ordinary.h5"
    tracing = np.random.default_rng(0).normal(size=(2, 4096, 12)).astype(np.float32)
    with h5py.File(path, "w") as handle:
        handle.create_dataset("tracings", data=tracing, compression="gzip", shuffle=True, fletcher32=True)
        handle.create_dataset("exam_id", data=np.array([11, 12]))
    rows = list(iter_hdf5_ecgs(path))
    assert [r.metadata["exam_id"] for r in rows] == [11, 12]
    np.testing.assert_array_equal(rows[1].signal, tracing[1].T)


@pytest.mark.parametrize("absolute", [False, True], ids=["dotdot", "absolute"])
def test_wfdb_signal_file_outside_the_header_folder_is_refused(tmp_path, canary, absolute, caplog):
    header = hostile.wfdb_escaping_signal_file(tmp_path / "upload", canary, absolute=absolute)
    assert ("../" in header.read_text()) != absolute
    with caplog.at_level(logging.DEBUG):
        for path in (header, header.with_suffix("")):  # the .hea, or the record name
            error = _refusal(lambda path=path: read_ecg(path), "unsupported", caplog)
            assert "header's own folder" in str(error)


def test_wfdb_signal_file_in_the_header_folder_still_reads(tmp_path, canary):
    """The same record with its signal file beside the header is an ECG (here: the canary's bytes),
    so the refusals above are about where the file is, not what it holds."""
    header = hostile.wfdb_escaping_signal_file(tmp_path / "upload", canary)
    (tmp_path / "upload" / "beside.dat").write_bytes(canary.read_bytes())
    header.write_text(header.read_text().replace(str(Path("..", "elsewhere", canary.name)), "beside.dat"))
    assert hostile.holds_canary(read_ecg(header))


# --- declared sizes are checked before allocating -------------------------------------------------

HUGE_DECLARATIONS = [  # (builder call, read_ecg keywords, reason)
    ("hdf5_huge_shape", {}, {}, "too_large"),
    ("hdf5_huge_shape", {"shape": (1, 2**34, 12)}, {}, "too_large"),
    ("hdf5_huge_chunk", {}, {"record_index": 0}, "too_large"),
    ("npz_zip_bomb", {}, {}, "too_large"),
    ("npz_many_members", {}, {}, "too_large"),
    ("npy_huge_header", {}, {"fs": 500, "lead_names": LEADS}, "too_large"),
    ("npy_header_longer_than_data", {}, {"fs": 500, "lead_names": LEADS}, "truncated"),
    ("xml_flood", {}, {}, "too_large"),
    ("xml_flood", {"megabytes": 1}, {}, "too_large"),
    ("xml_deep", {}, {}, "too_large"),
    ("xml_deep", {"depth": MAX_XML_DEPTH + 1}, {}, "too_large"),
    ("xml_deep", {"depth": 1000}, {}, "too_large"),
    ("wfdb_huge_sig_len", {}, {}, "too_large"),
    ("edf_huge_records", {}, {}, "too_large"),
    ("edf_flat_digital_range", {}, {}, "bad_units"),
]
CASE_IDS = [f"{name}-{'-'.join(f'{k}={v}' for k, v in args.items()) or 'default'}"
            for name, args, _, _ in HUGE_DECLARATIONS]


def _build(name: str, args: dict, folder: Path) -> Path:
    return getattr(hostile, name)(folder, **args)


def test_limits_are_the_ones_the_readers_use():
    assert MAX_SIGNAL_BYTES == 4 * MAX_VALUES
    assert MAX_XML_MARKUP < 60 * 10**6 // 4  # the 60 MB flood is over the markup limit too


@pytest.mark.parametrize(("name", "args", "keywords", "reason"), HUGE_DECLARATIONS, ids=CASE_IDS)
def test_hostile_declaration_is_refused_with_a_reason(tmp_path, name, args, keywords, reason, caplog):
    path = _build(name, args, tmp_path / "upload")
    with caplog.at_level(logging.DEBUG):
        _refusal(lambda: read_ecg(path, **keywords), reason, caplog)


# --- ... within 200 MB, measured in a fresh process ------------------------------------------------

_CHILD = r"""
import gc, json, sys
from ecg_atlas.embedder.readers import read_ecg
from ecg_atlas.errors import InvalidECGError
# this process's own figures (ru_maxrss would be the forking parent's peak on Linux); cwd is the repo
from tests.hostile_files import status_kb

warm, cases = json.loads(sys.argv[1])
for path, keywords in warm:  # imports, numba caches, first-use allocations: not the hostile file's
    read_ecg(path, **keywords)
gc.collect()
with open("/proc/self/clear_refs", "w") as clear:  # the high-water mark starts again from the RSS now
    clear.write("5")
baseline = status_kb("VmRSS")
assert status_kb("VmHWM") <= baseline + 1024, "the peak RSS was not reset"
for path, keywords in cases:
    try:
        read_ecg(path, **keywords)
        outcome = "read"
    except InvalidECGError as error:
        outcome = error.reason
    except BaseException as error:
        outcome = "crash: " + type(error).__name__
    print(json.dumps([path, outcome, (status_kb("VmHWM") - baseline) / 1024]), flush=True)
"""


@pytest.mark.slow
def test_every_hostile_file_is_refused_within_200_mb(tmp_path, shared_data, ecg_dir, canary):
    """One fresh interpreter reads a valid file of every kind first, then every hostile file; its
    peak RSS (a high-water mark) may pass its RSS after the valid files by less than 200 MB over
    all of them together, so by less for each one."""
    warm_folder = tmp_path / "valid"
    warm_folder.mkdir()
    record = ecg_dir / "cinc_cpsc2018" / "A0001"
    signal = read_ecg(record).signal
    np.savez(warm_folder / "valid.npz", signal=signal, fs=500.0, lead_names=np.array(LEADS))
    np.save(warm_folder / "valid.npy", signal)
    with h5py.File(warm_folder / "valid.h5", "w") as handle:
        handle["tracings"] = signal.T[None, :4096]
    warm = [[str(record), {}], [str(warm_folder / "valid.npz"), {}], [str(warm_folder / "valid.h5"), {}],
            [str(warm_folder / "valid.npy"), {"fs": 500, "lead_names": LEADS}]]
    warm += [[str(p), {}] for p in sorted((shared_data / "formats").glob("*/*"))
             if "nonconformant" not in p.name]
    cases, expected = [], {}
    for i, (name, args, keywords, reason) in enumerate(HUGE_DECLARATIONS):
        path = _build(name, args, tmp_path / f"case{i}")
        cases.append([str(path), keywords])
        expected[str(path)] = reason
    for i, builder in enumerate(sorted(REFERENCES)):
        for dataset in ("tracings", "exam_id"):
            path = getattr(hostile, builder)(tmp_path / f"ref{i}{dataset}", canary, dataset=dataset)
            cases.append([str(path), {}])
            expected[str(path)] = "unsupported"
    path = hostile.wfdb_escaping_signal_file(tmp_path / "wfdb_escape", canary)
    cases.append([str(path), {}])
    expected[str(path)] = "unsupported"

    child = subprocess.run([sys.executable, "-c", _CHILD, json.dumps([warm, cases])], cwd=REPO_ROOT,
                           capture_output=True, text=True, timeout=600, check=False)
    assert child.returncode == 0, child.stderr[-3000:]
    results = [json.loads(line) for line in child.stdout.splitlines()]
    assert {path: outcome for path, outcome, _ in results} == expected
    growth = {Path(path).parent.name + "/" + Path(path).name: mb for path, _, mb in results}
    assert max(growth.values()) < RSS_LIMIT_MB, growth
