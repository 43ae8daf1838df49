"""Hospital ECG exports: every real sample file in ../shared/data/formats reads as its manifest
says, the same ECG in three formats decodes to the same signal, hostile or broken files are
refused with a reason (quickly), and patient ids from files only ever reach the store as keyed
pseudonyms."""

from __future__ import annotations

import base64
import binascii
import csv
import hashlib
import logging
import shutil
import struct
import warnings
from pathlib import Path

import numpy as np
import pytest

from ecg_atlas.embedder.discover import find_ecgs
from ecg_atlas.embedder.formats import sniff_format
from ecg_atlas.embedder.preprocessing import prepare
from ecg_atlas.embedder.readers import read_ecg
from ecg_atlas.errors import AtlasError, InvalidECGError
from ecg_atlas.ingest.pseudonym import ENV_KEY, PatientPseudonymiser, load_pseudonymiser
from tests.conftest import shared_data_dir
from tests.hostile_files import peak_growth_mb

DERIVED = ["III", "aVR", "aVL", "aVF"]
#: Philips files hold 11 s per channel; the 11th second is the calibration trailer we cut.
TRIMMED_DURATION_S = {"philips_sierra_xml": 10.0}
NON_CONFORMANT = "scp/healforce_prince180d_62_nonconformant.scp"
#: Names, birth dates and other identifiers the sample files hold: never in metadata.
IDENTIFIERS = ["TEST 05", "TEST 04", "Clark", "ZZDEMOPTONLY", "ADULT", "106_ABC", "test test", "Patient^Test",
               "1953", "1950-01-01", "1944", "1912", "1971-06-16", "Doe", "Investigator"]
METADATA_KEYS = {"age", "sex", "acquisition_time", "device"}


@pytest.fixture(scope="module")
def formats_dir(shared_data: Path) -> Path:
    path = shared_data / "formats"
    if not path.is_dir():
        pytest.fail(f"hospital export samples not found at {path}", pytrace=False)
    return path


def _manifest() -> list[dict]:
    """The sample files' manifest, read at collection (parametrisation); missing data fails
    ``test_manifest_covers_all_six_formats``."""
    path = shared_data_dir() / "formats" / "manifest.csv"
    if not path.exists():
        return []
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


MANIFEST = _manifest()
READABLE = [row for row in MANIFEST if row["path"] != NON_CONFORMANT]


def _manifest_leads(row: dict) -> list[str]:
    return row["notes"].split(";")[0].removeprefix("leads=").split("|")


# --- every real file -----------------------------------------------------------------------------


def test_manifest_covers_all_six_formats():
    assert {row["format"] for row in MANIFEST} == {
        "ge_muse_xml", "dicom_ecg_waveform", "philips_sierra_xml", "hl7_aecg", "scp_ecg", "edf", "edf_plus"}


@pytest.mark.parametrize("row", READABLE, ids=[row["path"] for row in READABLE])
def test_real_file_matches_manifest(formats_dir, row):
    rec = read_ecg(formats_dir / row["path"])
    stored = _manifest_leads(row)
    assert len(stored) == int(row["n_leads"])
    expected_names = stored + DERIVED if row["format"] == "ge_muse_xml" else stored
    assert rec.lead_names == expected_names
    assert rec.fs == pytest.approx(float(row["sampling_rate_hz"]), abs=0.01)
    duration = TRIMMED_DURATION_S.get(row["format"], float(row["duration_s"]))
    assert rec.duration_s == pytest.approx(duration, abs=1e-3)
    signal = rec.signal
    assert signal.dtype == np.float32 and signal.shape == (len(expected_names), rec.n_samples)
    assert np.isfinite(signal).all()
    # amplitudes in mV: a real ECG's leads swing a few tenths to a few mV
    peak_to_peak = np.ptp(signal, axis=1)
    if "contec" in row["path"]:  # limb leads ~4x the physiological size (converter gain); chest leads unconnected
        assert (peak_to_peak[:6] > 4).all() and (peak_to_peak[:6] < 12).all()
        assert (peak_to_peak[6:] == 0).all()
    else:
        assert (peak_to_peak > 0.1).all() and (peak_to_peak < 6).all(), dict(zip(rec.lead_names, peak_to_peak))
        assert np.abs(signal).max() < 5


@pytest.mark.parametrize("row", READABLE, ids=[row["path"] for row in READABLE])
def test_real_file_keeps_no_identifier_in_metadata(formats_dir, row, caplog):
    with caplog.at_level(logging.DEBUG):
        rec = read_ecg(formats_dir / row["path"])
    assert set(rec.metadata) <= METADATA_KEYS
    values = " ".join(str(v) for v in rec.metadata.values())
    for identifier in IDENTIFIERS:
        assert identifier.lower() not in values.lower()
    if rec.patient_id_in_file:
        assert rec.patient_id_in_file not in values
    assert not [r for r in caplog.records if r.levelno > logging.DEBUG]


def test_demographics_become_metadata(formats_dir):
    muse = read_ecg(formats_dir / "muse/musephi_mac55_muse_ecg1.xml")
    assert muse.metadata == {"age": 60, "sex": "M", "acquisition_time": "2021-05-10T13:15:18", "device": "GE MAC55"}
    assert muse.patient_id_in_file == "JAX01234"
    assert read_ecg(formats_dir / "muse/braveheart_example1.xml").metadata == {}  # no demographic sections
    philips = read_ecg(formats_dir / "sierra/philipsecg104_pagewriter_touch_ZZDEMOPTONLY.xml")
    assert philips.metadata["age"] == 60  # from the birth date, which is not kept
    assert read_ecg(formats_dir / "sierra/philipsecg104_cardiac_science_deid_3.xml").patient_id_in_file is None  # XXXX
    dicom = read_ecg(formats_dir / "dicom/ge_maclab_240hz_hemodynamic_sop.dcm")
    assert dicom.metadata == {"age": 55, "sex": "M", "acquisition_time": "1999-12-23T10:07:09",
                              "device": "GE Marquette MACLB"}


#: What ``prepare`` (ECG-FM's pipeline) makes of each real export that is not accepted as it is.
PREPARE_REFUSALS = {
    "scp/welchallyn_mdw14_v3r_v7_anonymized.scp": "too_few_leads",  # I, II, V1, V2, V4, V6 of the 12
    "edf/contec_ecg90a_0000050_800hz.edf": "too_few_leads",  # V1-V6 flat: chest electrodes unconnected
}


def test_real_exports_preprocess_or_get_their_documented_refusal(formats_dir):
    outcomes = {}
    for row in READABLE:
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # MissingLeadsWarning for the 8-lead Welch Allyn file
                prepare(read_ecg(formats_dir / row["path"]))
        except InvalidECGError as error:
            outcomes[row["path"]] = error.reason
    assert outcomes == PREPARE_REFUSALS
    assert "implausible_amplitude" not in outcomes.values()  # no real export is refused for its amplitude


# --- format specifics ----------------------------------------------------------------------------


def test_same_ecg_in_scp_dicom_and_hl7_aecg_is_the_same_signal(formats_dir):
    scp = read_ecg(formats_dir / "scp/ecgtoolkit_example_eli250.scp")
    dicom = read_ecg(formats_dir / "dicom/ecgtoolkit_example_eli250_implicit_vr.dcm")
    aecg = read_ecg(formats_dir / "hl7_aecg/hl7_example_aecg_eli250_500hz.xml")
    assert scp.fs == dicom.fs == aecg.fs == 500

    def in_dicom_order(rec):
        return np.stack([rec.signal[rec.lead_names.index(name)] for name in dicom.lead_names])

    quantum_mv = 2.5e-3  # 2.5 uV per unit in all three
    assert np.abs(in_dicom_order(scp) - dicom.signal).max() <= quantum_mv / 2
    assert np.abs(in_dicom_order(aecg) - dicom.signal).max() <= quantum_mv / 2


def test_pydicom_waveform_ecg_reads_its_rhythm_group():
    from pydicom.data import get_testdata_file

    rec = read_ecg(get_testdata_file("waveform_ecg.dcm"))
    assert rec.fs == 1000 and rec.n_samples == 10000  # RHYTHM, not the 1.2-s MEDIAN BEAT
    assert rec.lead_names == ["I", "II", "III", "aVR", "aVL", "aVF", "V1", "V2", "V3", "V4", "V5", "V6"]
    assert 0.3 < np.ptp(rec.signal, axis=1).max() < 5  # 1.25 uV units converted to mV


def test_dicom_median_beat_sentinel_is_not_data(tmp_path, formats_dir):
    import pydicom

    dataset = pydicom.dcmread(formats_dir / "dicom/ecgtoolkit_example_eli250_implicit_vr.dcm")
    del dataset.WaveformSequence[0]  # only the MEDIAN BEAT group is left
    dataset.WaveformSequence[0].MultiplexGroupLabel = "BEAT 1"
    path = tmp_path / "median_only.dcm"
    dataset.save_as(path)
    with pytest.raises(InvalidECGError) as error:
        read_ecg(path)
    assert error.value.reason == "no_waveform"
    dataset.WaveformSequence[0].MultiplexGroupLabel = "EXTRA"  # an unlabelled group is read, sentinel cut
    dataset.save_as(path)
    rec = read_ecg(path)
    assert rec.n_samples == 599 and np.isfinite(rec.signal).all()


def test_edf_of_cpsc_a0001_matches_the_wfdb_record(formats_dir, ecg_dir):
    edf = read_ecg(formats_dir / "edf/cpsc2018_A0001.edf")
    wfdb_record = read_ecg(ecg_dir / "cinc_cpsc2018" / "A0001")
    assert edf.lead_names == wfdb_record.lead_names and edf.fs == wfdb_record.fs
    assert np.abs(edf.signal - wfdb_record.signal).max() < 1e-4  # 0.04 uV apart (README)


@pytest.mark.parametrize("name", ["edf/cpsc2018_A0001.edf", "edf/contec_ecg90a_0000050_800hz.edf"])
def test_edf_samples_equal_pyedflib(formats_dir, name):
    import pyedflib

    reader = pyedflib.EdfReader(str(formats_dir / name))
    try:
        reference = np.stack([reader.readSignal(i) for i in range(reader.signals_in_file)])
    finally:
        reader.close()
    rec = read_ecg(formats_dir / name)
    np.testing.assert_allclose(rec.signal, reference, atol=1e-5, rtol=1e-6)


def test_muse_derives_the_four_limb_leads(formats_dir):
    rec = read_ecg(formats_dir / "muse/musephi_mac55_muse_ecg2.xml")
    lead = {name: rec.signal[i].astype(np.float64) for i, name in enumerate(rec.lead_names)}
    tolerance = 1e-6
    assert np.abs(lead["III"] - (lead["II"] - lead["I"])).max() < tolerance
    assert np.abs(lead["aVR"] + (lead["I"] + lead["II"]) / 2).max() < tolerance
    assert np.abs(lead["aVL"] - (lead["I"] - lead["II"] / 2)).max() < tolerance
    assert np.abs(lead["aVF"] - (lead["II"] - lead["I"] / 2)).max() < tolerance
    assert np.unique(np.round(lead["I"] / 4.88e-3, 6)).size > 50  # 4.88 uV steps, in mV


#: sha256[:16] of sierraecg 0.4.0's int16 decode (its first 10 s, leads in file order) of the two
#: files it reads under NumPy 2 (it overflows on the third): our decoder must give the same bits.
SIERRAECG_DECODES = {
    "sierra/sierraecg103_heartstart_mrx_129DYPRG.xml": "1cbcf8c5aba9b03c",
    "sierra/philipsecg104_pagewriter_touch_ZZDEMOPTONLY.xml": "c312dd3f6f613394",
}


@pytest.mark.parametrize("name", sorted(SIERRAECG_DECODES))
def test_sierra_decoder_agrees_with_sierraecg_where_it_works(formats_dir, name):
    rec = read_ecg(formats_dir / name)
    samples = np.round(rec.signal.astype(np.float64) / 5e-3).astype("<i2")  # 5 uV per unit
    assert hashlib.sha256(samples.tobytes()).hexdigest()[:16] == SIERRAECG_DECODES[name]


def test_sierra_calibration_pulse_is_what_gets_cut(formats_dir):
    from ecg_atlas.embedder.formats.safexml import find, parse_xml
    from ecg_atlas.embedder.formats.xli import xli_decode

    path = formats_dir / "sierra/sierraecg103_heartstart_mrx_129DYPRG.xml"
    waveforms = find(parse_xml(path.read_bytes(), "test"), ".//parsedwaveforms")
    lead_i = xli_decode(base64.b64decode(waveforms.text), 12, 5500, "test")[0]
    assert lead_i.size == 5500 and (lead_i[5350:5450] == 200).all()  # 1 mV at 5 uV per unit, 200 ms
    assert read_ecg(path).n_samples == 5000


def test_sierra_delta_overflow_wraps_like_the_c_reference(formats_dir):
    # sierraecg 0.4.0 raises OverflowError on this file under NumPy 2; its samples wrap in int16
    rec = read_ecg(formats_dir / "sierra/philipsecg104_cardiac_science_deid_3.xml")
    assert rec.n_samples == 5000 and np.ptp(rec.signal, axis=1).max() < 4


def test_utf16_sierra_file_is_sniffed_and_read(formats_dir):
    path = formats_dir / "sierra/philipsecg104_pagewriter_touch_ZZDEMOPTONLY.xml"
    assert path.read_bytes()[:2] == b"\xff\xfe"
    assert sniff_format(path) == "sierra"


def test_non_conformant_scp_is_refused_with_a_reason(formats_dir):
    with pytest.raises(InvalidECGError) as error:
        read_ecg(formats_dir / NON_CONFORMANT)
    assert error.value.reason == "non_conformant"
    assert "EN 1064" in str(error.value)


def test_damaged_scp_metadata_does_not_stop_the_signal(formats_dir):
    rec = read_ecg(formats_dir / "scp/welchallyn_mdw14_v3r_v7_anonymized.scp")
    assert rec.lead_names == ["I", "II", "V3R", "V1", "V2", "V4", "V6", "V7"]
    assert "acquisition_time" not in rec.metadata  # the big-endian date is no date


WELCH_ALLYN = "scp/welchallyn_mdw14_testpatient_20170504.scp"
#: BioSig 2.5.0 (``save2gdf -CSV``, Debian biosig-tools) on the Welch Allyn file with section 3
#: saying 1-6001: 6001 rows per lead, the last 0 (nothing is stored for it); the first 6000, as
#: int16 counts of the file's 3.75 µV step, lead-major: sha256[:16], and each lead's first samples.
BIOSIG_STORED_SHA256 = "c48862ef0f679c4a"
BIOSIG_FIRST_SAMPLES = [[-12, -14, -16], [-29, -34, -39], [-5, -5, -6], [-12, -14, -16], [-24, -28, -33],
                        [-31, -37, -42], [-22, -25, -29], [-15, -17, -20]]


def _scp_declaring_more_samples(data: bytes, extra: int) -> bytes:
    """``data`` (a real SCP file) with every lead's last sample in section 3 moved ``extra``
    samples on, the section's and the file's CRC-CCITT rewritten: what an off-by-one writer makes."""
    data = bytearray(data)
    for at in range(6 + 16, 6 + 16 + struct.unpack_from("<I", data, 6 + 4)[0] - 16, 10):
        section_id, length, index = struct.unpack_from("<HII", data, at)
        if section_id == 3:
            start = index - 1
            break
    leads_at = start + 16
    for lead in range(data[leads_at]):
        field = leads_at + 2 + 9 * lead + 4
        struct.pack_into("<I", data, field, struct.unpack_from("<I", data, field)[0] + extra)
    struct.pack_into("<H", data, start, binascii.crc_hqx(bytes(data[start + 2:start + length]), 0xFFFF))
    struct.pack_into("<H", data, 0, binascii.crc_hqx(bytes(data[2:]), 0xFFFF))
    return bytes(data)


def test_scp_declaring_one_sample_more_than_stored_reads_what_is_stored(tmp_path, formats_dir, caplog):
    """Issue 24 item 10: a writer's off-by-one that BioSig reads; the stored samples, a warning."""
    original = formats_dir / WELCH_ALLYN
    path = tmp_path / "plus_one.scp"
    path.write_bytes(_scp_declaring_more_samples(original.read_bytes(), 1))
    with caplog.at_level(logging.DEBUG):
        rec = read_ecg(path)
    assert rec.n_samples == 6000
    np.testing.assert_array_equal(rec.signal, read_ecg(original).signal)
    counts = np.round(rec.signal.astype(np.float64) * 1000 / 3.75)
    assert np.abs(rec.signal * 1000 / 3.75 - counts).max() < 1e-3  # whole steps, float32 rounding apart
    counts = counts.astype("<i2")
    assert counts[:, :3].tolist() == BIOSIG_FIRST_SAMPLES
    assert hashlib.sha256(counts.tobytes()).hexdigest()[:16] == BIOSIG_STORED_SHA256
    warnings_logged = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    assert len(warnings_logged) == 1 and "6001" in warnings_logged[0] and "6000" in warnings_logged[0]
    assert path.name not in warnings_logged[0] and str(tmp_path) not in warnings_logged[0]


def test_scp_declaring_two_samples_more_than_stored_is_truncated(tmp_path, formats_dir):
    path = tmp_path / "plus_two.scp"
    path.write_bytes(_scp_declaring_more_samples((formats_dir / WELCH_ALLYN).read_bytes(), 2))
    with pytest.raises(InvalidECGError) as error:
        read_ecg(path)
    assert error.value.reason == "truncated" and "6002 declared" in str(error.value)


# --- SCP encodings the real files do not use: built here -----------------------------------------


def _default_huffman(values) -> bytes:
    """EN 1064's default Huffman code, written MSB first (the reader's inverse)."""
    bits = []
    for v in values:
        if v == 0:
            bits.append("0")
        elif abs(v) <= 8:
            bits.append("1" * abs(v) + "0" + ("1" if v < 0 else "0"))
        elif -128 <= v <= 127:
            bits.append("1" * 9 + "0" + format(v & 0xFF, "08b"))
        else:
            bits.append("1" * 10 + format(v & 0xFFFF, "016b"))
    stream = "".join(bits)
    stream += "0" * (-len(stream) % 8)
    return int(stream, 2).to_bytes(len(stream) // 8, "big") if stream else b""


def _scp_file(sections: dict[int, bytes]) -> bytes:
    """A framed SCP-ECG file: pointer table (section 0) for sections 0-11, CRC-CCITT, length."""
    section0_length = 16 + 12 * 10
    place, offset = {}, 6 + section0_length
    for section_id in sorted(sections):
        place[section_id] = offset
        offset += 16 + len(sections[section_id])
    pointers = b"".join(
        struct.pack("<HII", i, section0_length if i == 0 else (16 + len(sections[i]) if i in sections else 0),
                    7 if i == 0 else (place[i] + 1 if i in sections else 0))
        for i in range(12))
    body = struct.pack("<HHIBB6s", 0, 0, section0_length, 20, 20, b"SCPECG") + pointers
    for section_id in sorted(sections):
        body += struct.pack("<HHIBB6s", 0, section_id, 16 + len(sections[section_id]), 20, 20, b"\0" * 6)
        body += sections[section_id]
    length = 6 + len(body)
    framed = struct.pack("<I", length) + body
    return struct.pack("<H", binascii.crc_hqx(framed, 0xFFFF)) + framed


def _leads_section(n_samples: int, codes: list[int], flags: int = 0) -> bytes:
    return bytes([len(codes), flags]) + b"".join(struct.pack("<IIB", 1, n_samples, code) for code in codes)


def _data_section(leads: list[bytes], avm_nv: int = 1000, interval_us: int = 2000, differences: int = 0) -> bytes:
    return (struct.pack("<HHBB", avm_nv, interval_us, differences, 0)
            + struct.pack(f"<{len(leads)}H", *[len(lead) for lead in leads]) + b"".join(leads))


def test_scp_default_huffman_with_escapes_and_first_differences(tmp_path):
    rng = np.random.default_rng(0)
    samples = np.cumsum(rng.choice([0, 1, -1, 5, -8, 9, -100, 127, -128, 300, -3000], size=3000)).astype(np.int64)
    differences = np.diff(samples, prepend=0)  # first differences, x[0] stored as itself
    path = tmp_path / "huffman.scp"
    path.write_bytes(_scp_file({
        2: struct.pack("<H", 19999),
        3: _leads_section(3000, [1]),
        6: _data_section([_default_huffman(differences)], avm_nv=5000, differences=1),
    }))
    rec = read_ecg(path)
    assert rec.lead_names == ["I"] and rec.fs == 500
    np.testing.assert_allclose(rec.signal[0], samples * 5e-3, rtol=1e-6)


def test_scp_reference_beat_is_added_back_where_section_3_flags_it(tmp_path):
    n, beat_length, beat_fiducial = 3000, 200, 100  # fiducial: 1-based sample of the beat's QRS
    residual = (np.arange(n) % 7 - 3).astype(np.int16)
    beat = (400 * np.exp(-0.5 * ((np.arange(beat_length) - 99) / 8.0) ** 2)).astype(np.int16)
    qrs = [(0, 501, 550, 600), (0, 1701, 1750, 1800), (1, 2501, 2550, 2600)]  # type, start, fiducial, end
    section4 = struct.pack("<HHH", beat_length, beat_fiducial, len(qrs)) + b"".join(
        struct.pack("<HIII", *q) for q in qrs)
    path = tmp_path / "reference_beat.scp"
    path.write_bytes(_scp_file({
        3: _leads_section(n, [2], flags=1),
        4: section4,
        5: _data_section([beat.tobytes()], avm_nv=1000),
        6: _data_section([residual.tobytes()], avm_nv=1000),
    }))
    expected = residual.astype(np.float64)
    for beat_type, start, fiducial, end in qrs:
        if beat_type == 0:  # only type-0 beats were subtracted
            for s in range(start, end + 1):  # 1-based rhythm samples
                expected[s - 1] += beat[s - fiducial + beat_fiducial - 1]
    rec = read_ecg(path)
    np.testing.assert_allclose(rec.signal[0], expected * 1e-3, atol=1e-9)


# --- content sniffing and discovery --------------------------------------------------------------


def test_formats_are_recognised_by_content_not_extension(tmp_path, formats_dir):
    for row in READABLE:
        disguised = tmp_path / Path(row["path"]).stem  # no extension at all
        shutil.copyfile(formats_dir / row["path"], disguised)
        original = read_ecg(formats_dir / row["path"])
        np.testing.assert_array_equal(read_ecg(disguised).signal, original.signal)


def test_find_ecgs_lists_every_export_and_reports_the_bad_one(formats_dir):
    found = {source.ecg_id for source in find_ecgs([formats_dir])}
    assert found == {str(Path(row["path"]).with_suffix("")) for row in MANIFEST}


def test_unknown_xml_is_refused_as_unknown_file_type(tmp_path):
    path = tmp_path / "notes.xml"
    path.write_text("<?xml version='1.0'?><notes><note>hello</note></notes>")
    with pytest.raises(InvalidECGError) as error:
        read_ecg(path)
    assert error.value.reason == "unreadable" and "HL7 aECG" in str(error.value)


# --- hostile and broken input: a reason, quickly, no blow-up -------------------------------------


def _refused(path: Path, reason: str) -> InvalidECGError:
    refusals = []

    def read():
        with pytest.raises(InvalidECGError) as error:
            read_ecg(path)
        refusals.append(error.value)

    assert peak_growth_mb(read) < 200, "refusal used > 200 MB"
    assert refusals[0].reason == reason, str(refusals[0])
    return refusals[0]


@pytest.fixture()
def muse_text(formats_dir) -> str:
    return (formats_dir / "muse/musephi_mac55_muse_ecg1.xml").read_text(encoding="iso-8859-1")


def _write(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="iso-8859-1")
    return path


def test_billion_laughs_is_refused(tmp_path):
    entities = "".join(f'<!ENTITY lol{i} "{"&lol%d;" % (i - 1) * 10}">' for i in range(1, 10))
    bomb = (f'<?xml version="1.0"?><!DOCTYPE RestingECG [<!ENTITY lol0 "lol">{entities}]>'
            f"<RestingECG><PatientDemographics><PatientID>&lol9;</PatientID></PatientDemographics></RestingECG>")
    _refused(_write(tmp_path, "bomb.xml", bomb), "unsafe_xml")


def test_external_entity_is_refused(tmp_path):
    xxe = ('<?xml version="1.0"?><!DOCTYPE AnnotatedECG [<!ENTITY xxe SYSTEM "file:///etc/passwd">]>'
           '<AnnotatedECG xmlns="urn:hl7-org:v3"><id root="&xxe;"/></AnnotatedECG>')
    _refused(_write(tmp_path, "xxe.xml", xxe), "unsafe_xml")


def test_truncated_base64_is_refused(tmp_path, muse_text):
    start = muse_text.index("<WaveFormData>", muse_text.index("Rhythm")) + len("<WaveFormData>")
    cut = muse_text[:start] + muse_text[start:start + 4001] + muse_text[muse_text.index("</WaveFormData>", start):]
    error = _refused(_write(tmp_path, "cut.xml", cut), "truncated")
    assert "base64" in str(error) or "bytes" in str(error)


def test_truncated_xml_file_is_refused(tmp_path, muse_text):
    _refused(_write(tmp_path, "half.xml", muse_text[: len(muse_text) // 2]), "truncated")


def test_lead_count_not_matching_the_data_is_refused(tmp_path, muse_text):
    wrong = muse_text.replace("<NumberofLeads>8</NumberofLeads>", "<NumberofLeads>12</NumberofLeads>")
    _refused(_write(tmp_path, "leads.xml", wrong), "lead_count_mismatch")


def test_absurd_sampling_rate_is_refused(tmp_path, muse_text):
    absurd = muse_text.replace("<SampleBase>500</SampleBase>", "<SampleBase>500000000</SampleBase>")
    _refused(_write(tmp_path, "fs.xml", absurd), "bad_sampling_rate")


@pytest.fixture()
def ge_dicom(formats_dir):
    import pydicom

    return pydicom.dcmread(formats_dir / "dicom/ge_maclab_240hz_hemodynamic_sop.dcm")


def test_dicom_without_waveform_is_refused(tmp_path, ge_dicom):
    del ge_dicom.WaveformSequence
    ge_dicom.save_as(tmp_path / "image.dcm")
    _refused(tmp_path / "image.dcm", "no_waveform")


def test_dicom_of_another_waveform_kind_is_refused(tmp_path, ge_dicom):
    ge_dicom.SOPClassUID = "1.2.840.10008.5.1.4.1.1.9.4.1"  # Basic Voice Audio
    ge_dicom.save_as(tmp_path / "voice.dcm")
    assert "not an ECG" in str(_refused(tmp_path / "voice.dcm", "no_waveform"))


def test_dicom_pressure_channels_are_left_out(tmp_path, ge_dicom):
    ge_dicom.WaveformSequence[0].ChannelDefinitionSequence[11].ChannelSensitivityUnitsSequence[0].CodeValue = "mm[Hg]"
    ge_dicom.save_as(tmp_path / "hemodynamic.dcm")
    rec = read_ecg(tmp_path / "hemodynamic.dcm")
    assert rec.lead_names == ["I", "II", "III", "aVR", "aVL", "aVF", "V1", "V2", "V3", "V4", "V5"]


@pytest.mark.parametrize(("attribute", "value", "reason"), [
    ("NumberOfWaveformChannels", 13, "lead_count_mismatch"),
    ("SamplingFrequency", 1e9, "bad_sampling_rate"),
    ("NumberOfWaveformSamples", 2**31 - 1, "too_large"),
    ("NumberOfWaveformSamples", 9000, "truncated"),
])
def test_inconsistent_dicom_waveform_is_refused(tmp_path, ge_dicom, attribute, value, reason):
    setattr(ge_dicom.WaveformSequence[0], attribute, value)
    ge_dicom.save_as(tmp_path / "bad.dcm")
    _refused(tmp_path / "bad.dcm", reason)


@pytest.mark.parametrize("name", ["scp/ecgtoolkit_example_eli250.scp", "edf/cpsc2018_A0001.edf"])
def test_truncated_binary_export_is_refused(tmp_path, formats_dir, name):
    data = (formats_dir / name).read_bytes()
    path = tmp_path / Path(name).name
    path.write_bytes(data[: len(data) // 2])
    _refused(path, "truncated")


def test_scp_with_fewer_lead_byte_counts_than_leads_is_refused(tmp_path):
    path = tmp_path / "leads.scp"
    path.write_bytes(_scp_file({3: _leads_section(10, [1, 2]), 6: _data_section([b"\0" * 20])}))
    _refused(path, "truncated")


def test_corrupt_scp_fails_its_crc(tmp_path, formats_dir):
    data = bytearray((formats_dir / "scp/welchallyn_mdw14_testpatient_20170504.scp").read_bytes())
    data[-100] ^= 0xFF
    path = tmp_path / "flipped.scp"
    path.write_bytes(bytes(data))
    _refused(path, "corrupt")


@pytest.mark.parametrize("row", MANIFEST, ids=[row["path"] for row in MANIFEST])
def test_damaged_copies_are_read_or_refused_never_crash(tmp_path, formats_dir, row):
    """Cut and bit-flipped copies of every real file: a Recording or an InvalidECGError, quickly."""
    original = (formats_dir / row["path"]).read_bytes()
    rng = np.random.default_rng(len(original))
    path = tmp_path / Path(row["path"]).name
    for trial in range(12):
        damaged = bytearray(original)
        if trial % 3 == 0:
            damaged = damaged[: int(rng.integers(1, len(damaged)))]
        for position in rng.integers(0, len(damaged), size=int(rng.integers(1, 16))):
            damaged[position] = int(rng.integers(0, 256))
        path.write_bytes(bytes(damaged))
        try:
            rec = read_ecg(path)
        except InvalidECGError as error:
            assert error.reason
        else:
            assert rec.signal.ndim == 2


# --- patient pseudonyms --------------------------------------------------------------------------

KEY = b"k" * 32


def test_same_id_and_key_give_the_same_pseudonym():
    first, second = PatientPseudonymiser(KEY), PatientPseudonymiser(bytes(KEY))
    assert first.pseudonym("JAX01234") == second.pseudonym(" JAX01234 ")
    assert first.pseudonym("JAX01234").startswith("psn_") and "JAX01234" not in first.pseudonym("JAX01234")
    assert first.pseudonym("JAX01234") != first.pseudonym("JAX12345")


def test_another_key_gives_another_pseudonym():
    assert PatientPseudonymiser(KEY).pseudonym("123456789") != PatientPseudonymiser(b"q" * 32).pseudonym("123456789")


def test_no_key_means_no_pseudonymiser_and_short_keys_are_refused(monkeypatch, tmp_path):
    monkeypatch.delenv(ENV_KEY, raising=False)
    assert load_pseudonymiser(None) is None
    monkeypatch.setenv(ENV_KEY, "x" * 40)
    assert load_pseudonymiser(None).pseudonym("a") == PatientPseudonymiser(b"x" * 40).pseudonym("a")
    (tmp_path / "key").write_bytes(KEY + b"\n")
    assert load_pseudonymiser(tmp_path / "key").pseudonym("a") == PatientPseudonymiser(KEY).pseudonym("a")
    with pytest.raises(AtlasError, match="at least 16"):
        PatientPseudonymiser(b"short")
    assert "k" * 16 not in repr(PatientPseudonymiser(KEY))


def test_ingest_command_takes_the_patient_key_file(tmp_path):
    from ecg_atlas.cli import build_parser

    args = build_parser().parse_args(["ingest", str(tmp_path), "--patient-key-file", str(tmp_path / "patient.key")])
    assert args.patient_key_file == tmp_path / "patient.key"
    assert build_parser().parse_args(["ingest", str(tmp_path)]).patient_key_file is None


def test_operator_can_compute_the_pseudonym_to_withdraw_a_patient(tmp_path, capsys, monkeypatch):
    from ecg_atlas.ingest.pseudonym import main

    monkeypatch.delenv(ENV_KEY, raising=False)
    (tmp_path / "patient.key").write_bytes(KEY)
    assert main(["JAX01234", "--patient-key-file", str(tmp_path / "patient.key")]) == 0
    assert capsys.readouterr().out.split() == [PatientPseudonymiser(KEY).pseudonym("JAX01234")]
    assert main(["JAX01234"]) == 2  # no key: nothing printed
    assert capsys.readouterr().out == ""
