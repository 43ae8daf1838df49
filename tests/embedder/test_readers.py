"""Readers: every supported file type gives the same Recording for the same real ECG, and every
kind of bad input is refused with a message that says what is wrong."""

from __future__ import annotations

import logging
import shutil
from pathlib import Path

import h5py
import numpy as np
import pytest
import wfdb

from ecg_atlas.embedder.leads import canonical_lead_name
from ecg_atlas.embedder.preprocessing import prepare
from ecg_atlas.embedder.readers import (
    iter_hdf5_ecgs,
    parse_header_comments,
    read_ecg,
    recording_from_array,
)
from ecg_atlas.embedder.recording import STANDARD_LEADS
from ecg_atlas.errors import InvalidECGError


def _copy_record(ecg_dir: Path, record: str, dest: Path) -> Path:
    """Copy a corpus record's files (writable) into dest; return the record path there."""
    source = ecg_dir / record
    for file in source.parent.glob(source.name + ".*"):
        shutil.copyfile(file, dest / file.name)
    return dest / source.name


# --- WFDB ----------------------------------------------------------------------------------------


def test_wfdb_challenge_record_signal_and_metadata(ecg_dir):
    rec = read_ecg(ecg_dir / "cinc_cpsc2018" / "A0001")
    assert rec.fs == 500.0
    assert rec.lead_names == list(STANDARD_LEADS)
    assert rec.signal.shape == (12, 7500) and rec.signal.dtype == np.float32
    reference = wfdb.rdrecord(str(ecg_dir / "cinc_cpsc2018" / "A0001")).p_signal.T
    np.testing.assert_array_equal(rec.signal, reference.astype(np.float32))  # physical units (mV)
    assert rec.metadata["age"] == 74
    assert rec.metadata["sex"] == "M"
    assert rec.metadata["dx"] == ["59118001"]
    assert rec.metadata["rx"] == "Unknown"


@pytest.mark.parametrize("suffix", ["", ".hea", ".mat"])
def test_wfdb_record_path_with_or_without_extension(ecg_dir, tmp_path, suffix):
    base = _copy_record(ecg_dir, "cinc_ptbxl/HR00001", tmp_path)
    rec = read_ecg(str(base) + suffix)
    assert rec.signal.shape == (12, 5000)
    assert rec.metadata["dx"] == ["251146004", "426783006"]
    assert rec.metadata["sex"] == "F" and rec.metadata["age"] == 56


def test_wfdb_multiple_diagnoses_and_upper_case_leads(ecg_dir):
    rec = read_ecg(ecg_dir / "code15" / "1111")
    assert rec.lead_names[3:6] == ["AVR", "AVL", "AVF"]
    assert rec.metadata["exam_id"] == "1111"
    assert rec.metadata["sex"] == "M" and rec.metadata["age"] == 43
    assert rec.metadata["chagas_label"] == "False"


def test_parse_header_comments_formats():
    challenge = parse_header_comments(["Age: NaN", "Sex: Female", "Dx: 164889003, 59118001,", "Rx: Unknown"])
    assert challenge == {"age": None, "sex": "F", "dx": ["164889003", "59118001"], "rx": "Unknown"}
    assert parse_header_comments(["Age: 67.0", "Sex: Unknown"]) == {"age": 67, "sex": None}
    mit = parse_header_comments(["<age>: 25  <sex>: M  <diagnoses>: (none)  <medications>: (none)"])
    assert mit == {"age": 25, "sex": "M", "diagnoses": "(none)", "medications": "(none)"}
    free = parse_header_comments(["Asystole", "False alarm", "Dosage (lytic agent): 30 mg"])
    assert free == {"notes": ["Asystole", "False alarm"], "dosage_lytic_agent": "30 mg"}


def test_mit_style_comments_on_real_record(ecg_dir):
    rec = read_ecg(ecg_dir / "misc" / "test01_00s")
    assert rec.metadata["age"] == 25 and rec.metadata["sex"] == "M"
    assert rec.lead_names == ["ECG 1", "ECG 2", "ECG 3", "ECG 4"]


def test_wfdb_lead_names_override(ecg_dir):
    names = ["I", "II", "V1", "V2"]
    rec = read_ecg(ecg_dir / "misc" / "test01_00s", lead_names=names)
    assert rec.lead_names == names and rec.fs == 500.0
    with pytest.raises(InvalidECGError, match="4 leads .* 2 lead names"):
        read_ecg(ecg_dir / "misc" / "test01_00s", lead_names=["I", "II"])


def test_misc_v102s_nan_samples_are_kept_for_preprocessing(ecg_dir):
    rec = read_ecg(ecg_dir / "misc" / "v102s")
    assert rec.lead_names == ["II", "V", "PLETH", "RESP"]
    assert np.isnan(rec.signal).sum(axis=1).tolist() == [3, 2, 17, 1]


# --- lead names ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "name, expected",
    [
        ("aVR", "aVR"), ("AVR", "aVR"), ("avr", "aVR"), (" aVL ", "aVL"), ("AVF", "aVF"),
        ("i", "I"), ("LEAD I", "I"), ("Lead II", "II"), ("lead_III", "III"),
        ("DI", "I"), ("DII", "II"), ("DIII", "III"), ("V1 ", "V1"), ("v6", "V6"), ("Lead V3", "V3"),
        ("MLII", None), ("V", None), ("-aVR", None), ("ECG 1", None), ("vx", None),
        ("PLETH", None), ("V7", None), ("", None),
    ],
)
def test_canonical_lead_name(name, expected):
    assert canonical_lead_name(name) == expected


# --- HDF5 (CODE-15 layout) -----------------------------------------------------------------------


@pytest.fixture
def code15_hdf5(ecg_dir, tmp_path):
    """Two real CODE-15 exams in the CODE-15 HDF5 layout: the short one zero-padded to 4096."""
    short = read_ecg(ecg_dir / "code15" / "1111")  # 2934 samples
    full = read_ecg(ecg_dir / "code15" / "code_15_1594286")  # 4096 samples
    tracings = np.zeros((2, 4096, 12), dtype=np.float32)
    pad = (4096 - short.n_samples) // 2
    tracings[0, pad : pad + short.n_samples] = short.signal.T
    tracings[1] = full.signal.T
    path = tmp_path / "exams_part0.hdf5"
    with h5py.File(path, "w") as handle:
        handle["tracings"] = tracings
        handle["exam_id"] = np.array([1111, 1594286], dtype=np.int64)
    return path, short, full


def test_hdf5_row_with_padding_stripped(code15_hdf5):
    path, short, _ = code15_hdf5
    rec = read_ecg(path, record_index=0)
    assert rec.fs == 400.0 and rec.lead_names == list(STANDARD_LEADS)
    np.testing.assert_array_equal(rec.signal, short.signal)  # exactly the unpadded exam
    assert rec.metadata["exam_id"] == 1111


def test_hdf5_iterates_every_row(code15_hdf5):
    path, short, full = code15_hdf5
    recordings = list(iter_hdf5_ecgs(path))
    assert [r.metadata["exam_id"] for r in recordings] == [1111, 1594286]
    assert [r.n_samples for r in recordings] == [short.n_samples, 4096]
    np.testing.assert_array_equal(recordings[1].signal, full.signal)


def test_hdf5_needs_record_index_and_checks_it(code15_hdf5):
    path, _, _ = code15_hdf5
    with pytest.raises(InvalidECGError, match="holds 2 ECGs; pass record_index"):
        read_ecg(path)
    with pytest.raises(InvalidECGError, match="record_index 2 is out of range"):
        read_ecg(path, record_index=2)


def test_hdf5_without_tracings_or_all_zero(tmp_path):
    path = tmp_path / "other.h5"
    with h5py.File(path, "w") as handle:
        handle["ecg"] = np.zeros((12, 10))
    with pytest.raises(InvalidECGError, match="no 'tracings' dataset"):
        read_ecg(path)
    with h5py.File(path, "w") as handle:
        handle["tracings"] = np.zeros((1, 4096, 12), dtype=np.float32)
    with pytest.raises(InvalidECGError, match="all zeros"):
        read_ecg(path)


def test_hdf5_exam_ids_as_strings_or_of_another_shape(tmp_path):
    path = tmp_path / "strings.h5"
    with h5py.File(path, "w") as handle:
        handle["tracings"] = np.ones((2, 4096, 12), dtype=np.float32)
        handle["exam_id"] = ["exam-1", "exam-2"]  # variable-length strings
    assert [r.metadata["exam_id"] for r in iter_hdf5_ecgs(path)] == ["exam-1", "exam-2"]
    with h5py.File(path, "w") as handle:
        handle["tracings"] = np.ones((2, 4096, 12), dtype=np.float32)
        handle["exam_id"] = np.ones((2, 10**6), dtype=np.int64)  # reading one would read a million
    with pytest.raises(InvalidECGError, match="one integer or string per tracing"):
        read_ecg(path, record_index=0)


# --- NumPy ---------------------------------------------------------------------------------------


def test_npy_and_npz_round_trip_a_real_record(ecg_dir, tmp_path):
    rec = read_ecg(ecg_dir / "cinc_georgia" / "E00001")
    np.save(tmp_path / "ecg.npy", rec.signal)
    with pytest.raises(InvalidECGError, match="pass fs= and lead_names="):
        read_ecg(tmp_path / "ecg.npy")
    from_npy = read_ecg(tmp_path / "ecg.npy", fs=500, lead_names=rec.lead_names)
    np.testing.assert_array_equal(from_npy.signal, rec.signal)

    np.savez(tmp_path / "ecg.npz", signal=rec.signal, fs=500.0, lead_names=np.array(rec.lead_names))
    from_npz = read_ecg(tmp_path / "ecg.npz")
    assert from_npz.fs == 500.0 and from_npz.lead_names == rec.lead_names
    np.testing.assert_array_equal(from_npz.signal, rec.signal)
    assert read_ecg(tmp_path / "ecg.npz", fs=1000).fs == 1000.0  # explicit arguments win


def test_npz_without_signal_or_fs(tmp_path):
    np.savez(tmp_path / "a.npz", data=np.zeros((12, 5000)))
    with pytest.raises(InvalidECGError, match="no 'signal' array"):
        read_ecg(tmp_path / "a.npz")
    np.savez(tmp_path / "b.npz", signal=np.zeros((12, 5000)), lead_names=np.array(STANDARD_LEADS))
    with pytest.raises(InvalidECGError, match="stores no fs"):
        read_ecg(tmp_path / "b.npz")


@pytest.mark.parametrize(
    "array, reason",
    [
        (np.zeros(5000), "must be 2-D"),
        (np.zeros((1, 12, 5000)), "must be 2-D"),
        (np.zeros((12, 5000), dtype=np.complex64), "dtype complex64"),
        (np.zeros((12, 5000), dtype=bool), "dtype bool"),
        (np.full((12, 5000), "x"), "dtype <U1"),
        (np.zeros((5000, 12)), "5000 leads .* 12 lead names"),  # (samples, leads) layout
    ],
)
def test_npy_wrong_dtype_or_shape(tmp_path, array, reason):
    np.save(tmp_path / "bad.npy", array)
    with pytest.raises(InvalidECGError, match=reason):
        read_ecg(tmp_path / "bad.npy", fs=500, lead_names=STANDARD_LEADS)


def test_integer_samples_accepted(tmp_path):
    np.save(tmp_path / "adc.npy", np.arange(24, dtype=np.int16).reshape(2, 12))
    rec = read_ecg(tmp_path / "adc.npy", fs=250, lead_names=["I", "II"])
    assert rec.signal.dtype == np.float32 and rec.signal[1, 11] == 23.0


# --- recording_from_array (the network path) -----------------------------------------------------


@pytest.mark.parametrize("fs", [float("nan"), float("inf"), 0, -500, "500", True, None])
def test_recording_from_array_rejects_bad_fs(fs):
    with pytest.raises(InvalidECGError, match="sampling rate"):
        recording_from_array(np.zeros((12, 5000)), fs, STANDARD_LEADS)


def test_recording_from_array_validates_shape_and_names():
    with pytest.raises(InvalidECGError, match="empty"):
        recording_from_array(np.zeros((12, 0)), 500, STANDARD_LEADS)
    with pytest.raises(InvalidECGError, match="non-empty strings"):
        recording_from_array(np.zeros((2, 10)), 500, ["I", " "])
    rec = recording_from_array(np.ones((2, 10), dtype=np.float64), np.float64(360), ["I", "II"], {"age": 3})
    assert rec.fs == 360.0 and rec.signal.dtype == np.float32 and rec.metadata == {"age": 3}


# --- bad files -----------------------------------------------------------------------------------


def test_missing_file(tmp_path):
    with pytest.raises(InvalidECGError, match="not found"):
        read_ecg(tmp_path / "nothing_here")
    with pytest.raises(InvalidECGError, match="not found"):
        read_ecg(tmp_path / "nothing_here.hea")
    with pytest.raises(InvalidECGError, match="not found"):
        read_ecg(tmp_path / "nothing_here.npz")


def test_garbage_header(tmp_path):
    (tmp_path / "junk.hea").write_bytes(np.random.default_rng(0).bytes(400))
    with pytest.raises(InvalidECGError, match="not a valid WFDB header"):
        read_ecg(tmp_path / "junk")


def test_header_without_samples(tmp_path):
    (tmp_path / "empty.hea").write_text("empty 0 500 0\n")
    with pytest.raises(InvalidECGError, match="declares no signal samples"):
        read_ecg(tmp_path / "empty.hea")


@pytest.mark.slow
def test_direct_wfdb_reader_equals_wfdb_on_every_corpus_record(ecg_dir):
    from ecg_atlas.embedder.wfdb_reader import read_wfdb_record

    headers = sorted(ecg_dir.rglob("*.hea"))
    assert len(headers) >= 300
    formats = set()
    for header in headers:
        base = header.with_suffix("")
        direct, reference = read_wfdb_record(base), wfdb.rdrecord(str(base))
        assert direct is not None, f"{base} fell back to wfdb"
        assert np.array_equal(direct.p_signal, reference.p_signal, equal_nan=True), base
        assert (direct.fs, direct.sig_name, direct.comments) == (reference.fs, reference.sig_name, reference.comments)
        assert type(direct.fs) is type(reference.fs)
        formats.update(zip(reference.fmt, (Path(f).suffix for f in reference.file_name)))
    assert {("16", ".dat"), ("16", ".mat"), ("212", ".dat")} <= formats  # the corpus covers each path


@pytest.mark.slow
def test_records_read_as_int16_give_the_bits_of_wfdbs_float64_signal(ecg_dir):
    # Records whose leads share one gain keep their int16 samples (sent as they are by ingest);
    # the float32 signal made from them must be wfdb's float64 physical signal rounded once.
    digital = 0
    for header in sorted(ecg_dir.rglob("*.hea")):
        base = header.with_suffix("")
        reference = wfdb.rdrecord(str(base))
        recording = read_ecg(base)
        gains = set(reference.adc_gain)
        if recording.digital is not None:
            digital += 1
            d = recording.digital
            assert len(gains) == 1 and d.gain == gains.pop(), base
            assert np.array_equal((d.samples.astype(np.float64) - d.baseline) / d.gain, reference.p_signal.T), base
        else:
            assert len(gains) > 1 or np.isnan(reference.p_signal).any(), f"{base} fell back to float32"
        expected = np.ascontiguousarray(reference.p_signal.T, dtype=np.float32)
        assert np.array_equal(recording.signal, expected, equal_nan=True), base
    assert digital >= 300


@pytest.mark.parametrize("gain", [1000.0, 200.0, 4880.0, 9151.773049645391, 6.06, 1e-3])
@pytest.mark.parametrize("baseline", [0, -7, 1024, 2**24])
def test_physical_from_digital_rounds_once_like_float64(gain, baseline):
    from ecg_atlas.embedder.recording import physical_from_digital

    rng = np.random.default_rng(abs(int(gain * 7) + baseline))
    samples = rng.integers(-32768, 32768, size=(12, 5000)).astype(np.int16)
    expected = ((samples.astype(np.float64) - baseline) / gain).astype(np.float32)
    assert np.array_equal(physical_from_digital(samples, gain, baseline), expected)


def test_invalid_samples_and_per_lead_baselines_in_a_wfdb_record(tmp_path):
    # An invalid sample (NaN) keeps the float path; per-lead baselines are folded into the int16
    # samples when they fit, and the record falls back to float32 when they would not.
    rng = np.random.default_rng(3)
    d = rng.integers(-2000, 2000, size=(3000, 12)).astype(np.int32)
    def write(name, d, baseline):
        wfdb.wrsamp(name, fs=500, units=["mV"] * 12, sig_name=list(STANDARD_LEADS), d_signal=d,
                    fmt=["16"] * 12, adc_gain=[200.0] * 12, baseline=baseline, write_dir=str(tmp_path))
        return read_ecg(tmp_path / name), wfdb.rdrecord(str(tmp_path / name))
    with_gap = d.copy()
    with_gap[100, 3] = -32768
    rec, ref = write("gap", with_gap, [0] * 12)
    assert rec.digital is None and np.isnan(rec.signal[3, 100]) and np.isnan(ref.p_signal[100, 3])
    rec, ref = write("shifted", d, list(range(-600, 600, 100)))
    assert rec.digital is not None and rec.digital.baseline == 0
    assert np.array_equal(rec.signal, ref.p_signal.T.astype(np.float32))
    wide = d.copy()
    wide[0, :] = 32000
    rec, ref = write("wide", wide, [-1000] + [0] * 11)  # 32000 - (-1000) does not fit in int16
    assert rec.digital is None
    assert np.array_equal(rec.signal, ref.p_signal.T.astype(np.float32))


@pytest.mark.parametrize("fmt", ["80", "24", "32"])
def test_formats_outside_the_direct_subset_fall_back_to_wfdb(tmp_path, fmt):
    from ecg_atlas.embedder.wfdb_reader import read_wfdb_record

    rng = np.random.default_rng(0)
    digital = rng.integers(-100, 100, size=(3000, 12)).astype(np.int32)
    wfdb.wrsamp("rec", fs=500, units=["mV"] * 12, sig_name=list(STANDARD_LEADS), d_signal=digital,
                fmt=[fmt] * 12, adc_gain=[200.0] * 12, baseline=[0] * 12, write_dir=str(tmp_path))
    assert read_wfdb_record(tmp_path / "rec") is None
    recording = read_ecg(tmp_path / "rec")
    assert np.allclose(recording.signal, digital.T / 200.0, atol=1e-6)


def test_direct_reader_reads_no_further_than_a_short_file_and_wfdb_names_it(ecg_dir, tmp_path):
    from ecg_atlas.embedder.wfdb_reader import read_wfdb_record

    base = _copy_record(ecg_dir, "cinc_ptbxl/HR00001", tmp_path)
    (tmp_path / "HR00001.mat").write_bytes((tmp_path / "HR00001.mat").read_bytes()[:-2])  # one sample short
    assert read_wfdb_record(base) is None
    with pytest.raises(InvalidECGError, match="truncated"):
        read_ecg(base)


@pytest.mark.parametrize("record", ["code15/1111", "cinc_ptbxl/HR00001"])  # .dat and Challenge .mat
def test_truncated_signal_file(ecg_dir, tmp_path, record):
    base = _copy_record(ecg_dir, record, tmp_path)
    signal_file = next(p for p in tmp_path.iterdir() if p.suffix in (".dat", ".mat"))
    signal_file.write_bytes(signal_file.read_bytes()[: signal_file.stat().st_size // 2])
    with pytest.raises(InvalidECGError, match="truncated"):
        read_ecg(base)


def test_signal_file_missing(ecg_dir, tmp_path):
    base = _copy_record(ecg_dir, "code15/1111", tmp_path)
    (tmp_path / "1111.dat").unlink()
    with pytest.raises(InvalidECGError, match="signal file .* not found"):
        read_ecg(base)


def test_signal_file_without_header(ecg_dir, tmp_path):
    _copy_record(ecg_dir, "cinc_ptbxl/HR00001", tmp_path)
    (tmp_path / "HR00001.hea").unlink()
    with pytest.raises(InvalidECGError, match="WFDB header not found"):
        read_ecg(tmp_path / "HR00001.mat")


def test_unknown_extension_and_misplaced_record_index(ecg_dir, tmp_path):
    (tmp_path / "ecg.csv").write_text("1,2,3\n")
    with pytest.raises(InvalidECGError, match="unknown ECG file type .csv"):
        read_ecg(tmp_path / "ecg.csv")
    with pytest.raises(InvalidECGError, match="record_index only applies to HDF5"):
        read_ecg(ecg_dir / "code15" / "1111", record_index=0)


def test_corrupt_npy_and_hdf5(tmp_path):
    (tmp_path / "x.npy").write_bytes(b"not numpy at all")
    with pytest.raises(InvalidECGError, match="not a readable .npy"):
        read_ecg(tmp_path / "x.npy", fs=500, lead_names=STANDARD_LEADS)
    (tmp_path / "x.h5").write_bytes(b"not hdf5 at all")
    with pytest.raises(InvalidECGError, match="not a readable HDF5"):
        read_ecg(tmp_path / "x.h5", record_index=0)


def test_no_file_names_in_logs_above_debug(ecg_dir, tmp_path, caplog):
    """File names can identify patients: INFO and above must not carry them."""
    base = _copy_record(ecg_dir, "cinc_cpsc2018/A0002", tmp_path)
    rec = read_ecg(base)
    rec.signal[0, 100] = np.nan
    keep = [i for i, name in enumerate(rec.lead_names) if name not in ("V1", "V2")]
    rec = recording_from_array(rec.signal[keep], rec.fs, [rec.lead_names[i] for i in keep], source=rec.source)
    with caplog.at_level(logging.DEBUG, logger="ecg_atlas"):
        with pytest.warns(UserWarning):
            prepare(rec)
        read_ecg(base)
    loud = [r.getMessage() for r in caplog.records if r.levelno > logging.DEBUG]
    assert any("V1, V2" in message for message in loud)  # the leads are named...
    assert not any("A0002" in message or str(tmp_path) in message for message in loud)  # ...not the file
    assert any("A0002" in r.getMessage() for r in caplog.records if r.levelno == logging.DEBUG)
