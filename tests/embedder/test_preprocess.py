"""Preprocessing: ECG-FM's numbers exactly (parity files), every real ECG in the corpus either
preprocessed or refused for the documented reason, and the service's own policies (missing leads,
NaN, sampling rate, duration)."""

from __future__ import annotations

import csv
import warnings

import numpy as np
import pytest

from ecg_atlas.embedder.preprocessing import (
    DEFAULT_MAX_DURATION_S,
    DEFAULT_MIN_LEADS,
    MissingLeadsWarning,
    prepare,
    preprocess,
    resample_to_target,
    standardise_leads,
)
from ecg_atlas.embedder.readers import read_ecg, recording_from_array
from ecg_atlas.embedder.recording import STANDARD_LEADS, Recording
from ecg_atlas.errors import InvalidECGError

STANDARD_LOWER = [name.lower() for name in STANDARD_LEADS]


def _subset(rec: Recording, keep_names) -> Recording:
    rows = [rec.lead_names.index(name) for name in keep_names]
    return recording_from_array(rec.signal[rows], rec.fs, list(keep_names), rec.metadata)


def _reference_segments(signal: np.ndarray, fs: float) -> np.ndarray:
    """Independent float64 restatement of ecgfm_spec.md §7 for 12 standard-ordered leads."""
    n_in = signal.shape[1]
    n_out = int(n_in * 500 / fs)
    grid = np.linspace(0, n_out - 1, n_in)
    resampled = np.stack([np.interp(np.arange(n_out), grid, lead) for lead in signal.astype(np.float64)])
    std = resampled.std(axis=1, keepdims=True)
    flat = (resampled.max(axis=1) == resampled.min(axis=1))[:, None]
    z = np.where(flat, 0.0, (resampled - resampled.mean(axis=1, keepdims=True)) / np.where(flat, 1, std))
    n_seg = n_out // 2500
    return z[:, : n_seg * 2500].reshape(12, n_seg, 2500).transpose(1, 0, 2)


# --- parity with fairseq-signals / the ECG-FM notebook -------------------------------------------


@pytest.fixture(params=["code15", "synthetic"])
def parity(request, parity_dir):
    with np.load(parity_dir / f"preprocessing_{request.param}.npz") as data:
        return request.param, {key: data[key] for key in data.files}


def test_parity_whole_record(parity):
    _, data = parity
    fs = float(data["org_sample_rate"])
    full = standardise_leads(resample_to_target(data["org_feats"], fs))
    assert full.shape == data["fs_preprocessed"].shape
    np.testing.assert_allclose(full, data["fs_preprocessed"], rtol=0, atol=1e-9)


def test_parity_segments(parity):
    name, data = parity
    rec = Recording(data["org_feats"], float(data["org_sample_rate"]), list(STANDARD_LEADS))
    prepared = prepare(rec, dtype=np.float64)
    assert prepared.segments.dtype == np.float64
    np.testing.assert_allclose(prepared.segments, data["fs_segments"], rtol=0, atol=1e-9)
    np.testing.assert_allclose(prepared.segments, data["notebook_segments"], rtol=0, atol=1e-6)
    as_float32 = preprocess(rec)
    assert as_float32.dtype == np.float32
    np.testing.assert_array_equal(as_float32, prepared.segments.astype(np.float32))
    assert prepared.report.n_segments == 2 and prepared.report.dropped_tail_s == pytest.approx(0.24)
    if name == "synthetic":  # aVL is the constant 0.05: the reference zeroes it
        assert prepared.report.flat_leads == ("aVL",)
        assert not np.any(prepared.segments[:, STANDARD_LEADS.index("aVL")])


def test_real_ecgfm_record_from_wfdb_matches_parity(ecg_dir, parity_dir):
    """The corpus holds the same CODE-15 exam as the parity file, stored at 1 µV resolution."""
    with np.load(parity_dir / "preprocessing_code15.npz") as data:
        expected = data["fs_segments"]
    segments = preprocess(read_ecg(ecg_dir / "code15" / "code_15_1594286"), dtype=np.float64)
    np.testing.assert_allclose(segments, expected, rtol=0, atol=2e-3)


# --- every real ECG in the corpus ----------------------------------------------------------------

#: Records whose file holds a standard lead that is all zeros (dead electrode), found by reading
#: them; the manifest does not say so. Flat leads are not usable leads.
FLAT_LEADS = {
    "cinc_ningbo/JS45542": ("V1", "V2", "V3", "V4", "V5", "V6"),
    "cinc_ningbo/JS45544": ("V2", "V3", "V4", "V5", "V6"),
    "cinc_ningbo/JS45551": ("V4", "V5", "V6"),
}


def _expected_refusal(row) -> str | None:
    """The refusal the documented policy predicts from the manifest columns (None: accepted)."""
    fs = float(row["sampling_rate_hz"])
    names = [name.strip().lower() for name in row["lead_names"].split("|")]
    assert len(names) == int(row["n_leads"])
    usable = len(set(names) & set(STANDARD_LOWER)) - len(FLAT_LEADS.get(row["record"], ()))
    if not 100 <= fs <= 1000:
        return "sampling rate"
    if usable < DEFAULT_MIN_LEADS:
        return "usable standard leads"
    if float(row["duration_s"]) > DEFAULT_MAX_DURATION_S:
        return "too long"
    if int(int(row["n_samples"]) * 500 / fs) < 2500:
        return "too short"
    return None


@pytest.mark.slow
def test_every_manifest_record(ecg_dir):
    with open(ecg_dir / "manifest.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert len(rows) == 367
    outcomes = {"accepted": 0}
    for row in rows:
        rec = read_ecg(ecg_dir / row["record"])
        assert rec.fs == float(row["sampling_rate_hz"]) and rec.n_samples == int(row["n_samples"])
        assert bool(np.isnan(rec.signal).any()) == (row["has_nan"] == "True"), row["record"]
        expected = _expected_refusal(row)
        if expected is not None:
            with pytest.raises(InvalidECGError, match=expected):
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore", MissingLeadsWarning)
                    prepare(rec)
            outcomes[expected] = outcomes.get(expected, 0) + 1
            continue
        with warnings.catch_warnings():
            warnings.simplefilter("error", MissingLeadsWarning)  # every accepted record has all 12
            prepared = prepare(rec)
        segments, report = prepared.segments, prepared.report
        n_resampled = int(rec.n_samples * 500 / rec.fs)
        assert segments.shape == (n_resampled // 2500, 12, 2500), row["record"]
        assert segments.dtype == np.float32 and np.isfinite(segments).all()
        assert report.flat_leads == FLAT_LEADS.get(row["record"], ()), row["record"]
        assert report.missing_leads == () and report.nan_counts == {}

        order = [[name.lower() for name in rec.lead_names].index(lead) for lead in STANDARD_LOWER]
        reference = _reference_segments(rec.signal[order], rec.fs)
        np.testing.assert_allclose(segments, reference, rtol=0, atol=1e-4, err_msg=row["record"])
        by_lead = segments.transpose(1, 0, 2).reshape(12, -1)
        flat = [STANDARD_LEADS.index(lead) for lead in report.flat_leads]
        assert not np.any(by_lead[flat])
        if report.dropped_tail_s == 0:  # windows cover the whole record: exact z-scores
            live = np.setdiff1d(np.arange(12), flat)
            np.testing.assert_allclose(by_lead[live].mean(axis=1), 0, atol=1e-4)
            np.testing.assert_allclose(by_lead[live].std(axis=1), 1, atol=1e-4)
        outcomes["accepted"] += 1
    assert outcomes == {"accepted": 346, "usable standard leads": 19, "too short": 2}


def test_same_ecg_at_100_and_500_hz(ecg_dir):
    """PTB-XL 00001 at 100 Hz (ptbxl_lr) and its 500 Hz copy (cinc_ptbxl/HR00001) agree."""
    low = preprocess(read_ecg(ecg_dir / "ptbxl_lr" / "00001_lr"))
    high = preprocess(read_ecg(ecg_dir / "cinc_ptbxl" / "HR00001"))
    assert low.shape == high.shape == (2, 12, 2500)
    correlations = [np.corrcoef(low[:, i].ravel(), high[:, i].ravel())[0, 1] for i in range(12)]
    assert min(correlations) > 0.9 and np.mean(correlations) > 0.95


def test_lead_names_matched_regardless_of_case_and_order(ecg_dir):
    rec = read_ecg(ecg_dir / "code15" / "1111")  # writes AVR, AVL, AVF
    canonical = preprocess(recording_from_array(rec.signal, rec.fs, list(STANDARD_LEADS)))
    shuffled = np.random.default_rng(1).permutation(12)
    mixed = recording_from_array(rec.signal[shuffled], rec.fs, [rec.lead_names[i].lower() for i in shuffled])
    np.testing.assert_array_equal(preprocess(rec), canonical)
    np.testing.assert_array_equal(preprocess(mixed), canonical)


def test_extra_leads_are_ignored_and_reported(ecg_dir):
    prepared = prepare(read_ecg(ecg_dir / "ptbdb" / "s0010_re"))  # 12 leads + Frank vx, vy, vz
    assert prepared.report.ignored_leads == ("vx", "vy", "vz")
    assert prepared.segments.shape == (7, 12, 2500)


def test_duplicate_leads_refused(ecg_dir):
    rec = read_ecg(ecg_dir / "cinc_cpsc2018" / "A0002")
    names = list(rec.lead_names)
    names[2] = "ii"
    with pytest.raises(InvalidECGError, match="lead II appears twice"):
        preprocess(recording_from_array(rec.signal, rec.fs, names))


def test_units_do_not_matter(ecg_dir):
    rec = read_ecg(ecg_dir / "cinc_georgia" / "E00002")
    microvolts = recording_from_array(rec.signal * 1000.0, rec.fs, rec.lead_names)
    np.testing.assert_allclose(preprocess(microvolts), preprocess(rec), rtol=0, atol=1e-5)


# --- missing leads -------------------------------------------------------------------------------


def test_missing_leads_zero_filled_with_warning(ecg_dir, caplog):
    rec = read_ecg(ecg_dir / "cinc_cpsc2018" / "A0003")
    full = preprocess(rec)
    kept = [name for name in STANDARD_LEADS if name not in ("aVL", "V1", "V3")]
    with pytest.warns(MissingLeadsWarning, match="aVL, V1, V3"):
        prepared = prepare(_subset(rec, kept), min_leads=9)
    assert prepared.report.missing_leads == ("aVL", "V1", "V3")
    assert "zero-filling missing leads: aVL, V1, V3" in caplog.text
    for i, lead in enumerate(STANDARD_LEADS):
        if lead in kept:  # standardisation is per lead: the others are untouched
            np.testing.assert_array_equal(prepared.segments[:, i], full[:, i])
        else:
            assert not np.any(prepared.segments[:, i])


def test_too_few_leads_refused_with_the_leads_named(ecg_dir):
    rec = read_ecg(ecg_dir / "cinc_cpsc2018" / "A0003")
    two = _subset(rec, ["I", "II"])
    with pytest.raises(InvalidECGError, match=r"2 usable standard leads \(I, II\); at least 8") as refusal:
        preprocess(two, min_leads=8)
    assert "not in the recording: III, aVR, aVL, aVF, V1, V2, V3, V4, V5, V6" in str(refusal.value)
    with pytest.warns(MissingLeadsWarning):
        assert preprocess(two, min_leads=2).shape == (2, 12, 2500)


def test_real_two_lead_holter_refused_by_default(ecg_dir):
    rec = read_ecg(ecg_dir / "cpsc2021" / "data_101_6")
    with pytest.raises(InvalidECGError, match="2 usable standard leads"):
        preprocess(rec)


def test_flat_leads_do_not_count_as_usable(ecg_dir):
    rec = read_ecg(ecg_dir / "cinc_ningbo" / "JS45542")  # V1–V6 all zeros in the file
    with pytest.raises(InvalidECGError, match=r"6 usable .*flat \(constant\): V1, V2, V3, V4, V5, V6"):
        preprocess(rec)
    segments = preprocess(rec, min_leads=6)
    assert not np.any(segments[:, 6:]) and np.all(np.any(segments[:, :6], axis=2))


def test_limb_leads_derived_from_i_and_ii(ecg_dir):
    rec = read_ecg(ecg_dir / "cinc_cpsc2018" / "A0002")
    full = preprocess(rec)
    eight = _subset(rec, ["I", "II", "V1", "V2", "V3", "V4", "V5", "V6"])
    with warnings.catch_warnings():
        warnings.simplefilter("error", MissingLeadsWarning)  # nothing is zero-filled
        prepared = prepare(eight, derive_limb_leads=True)
    assert prepared.report.derived_leads == ("III", "aVR", "aVL", "aVF")
    assert prepared.report.missing_leads == ()
    for i in range(2, 6):  # a real recording obeys Einthoven/Goldberger up to noise
        assert np.corrcoef(prepared.segments[:, i].ravel(), full[:, i].ravel())[0, 1] > 0.998
    with pytest.warns(MissingLeadsWarning, match="III, aVR, aVL, aVF"):
        assert prepare(eight).report.derived_leads == ()  # off by default, as in the reference


# --- NaN samples ---------------------------------------------------------------------------------


def test_v102s_isolated_nans_interpolated(ecg_dir):
    rec = read_ecg(ecg_dir / "misc" / "v102s")  # II has 3 single-sample NaNs; V, PLETH, RESP unused
    with pytest.raises(InvalidECGError, match="1 usable standard leads"):
        preprocess(rec)
    with pytest.warns(MissingLeadsWarning):
        prepared = prepare(rec, min_leads=1)
    assert prepared.report.nan_counts == {"II": 3}
    assert prepared.report.ignored_leads == ("V", "PLETH", "RESP")
    assert np.isfinite(prepared.segments).all() and prepared.segments.shape == (60, 12, 2500)

    lead_ii = rec.signal[0].astype(np.float64)
    for gap in np.flatnonzero(np.isnan(lead_ii)):  # a one-sample gap gets its neighbours' mean
        lead_ii[gap] = (lead_ii[gap - 1] + lead_ii[gap + 1]) / 2
    by_hand = recording_from_array(lead_ii[None].astype(np.float32), rec.fs, ["II"])
    with pytest.warns(MissingLeadsWarning):
        np.testing.assert_array_equal(preprocess(by_hand, min_leads=1), prepared.segments)


def _with_nans(ecg_dir, lead: str, index) -> Recording:
    rec = read_ecg(ecg_dir / "cinc_cpsc2018" / "A0002")  # 10 s at 500 Hz
    rec.signal[rec.lead_names.index(lead), index] = np.nan
    return rec


def test_long_nan_gap_refused(ecg_dir):
    rec = _with_nans(ecg_dir, "V2", slice(1000, 1100))  # 0.2 s
    with pytest.raises(InvalidECGError, match=r"lead V2 has 100 NaN samples .* gap of 0.200 s"):
        preprocess(rec)


def test_short_nan_gap_accepted(ecg_dir):
    prepared = prepare(_with_nans(ecg_dir, "V2", slice(1000, 1050)))  # 0.1 s: the limit
    assert prepared.report.nan_counts == {"V2": 50} and np.isfinite(prepared.segments).all()


def test_too_many_scattered_nans_refused(ecg_dir):
    rec = _with_nans(ecg_dir, "I", slice(0, None, 10))  # 10 % of the samples, each gap 1 sample
    with pytest.raises(InvalidECGError, match=r"lead I has 500 NaN samples \(10.0%\)"):
        preprocess(rec)


def test_all_nan_lead_is_missing(ecg_dir):
    rec = _with_nans(ecg_dir, "aVF", slice(None))
    with pytest.warns(MissingLeadsWarning, match="aVF"):
        prepared = prepare(rec)
    assert prepared.report.nan_leads == ("aVF",) and prepared.report.missing_leads == ("aVF",)
    assert not np.any(prepared.segments[:, STANDARD_LEADS.index("aVF")])


def test_nan_only_signal_refused():
    rec = recording_from_array(np.full((12, 5000), np.nan), 500, STANDARD_LEADS)
    with pytest.raises(InvalidECGError, match="0 usable standard leads.*entirely NaN: I, II, III"):
        preprocess(rec)


# --- sampling rate and duration ------------------------------------------------------------------


@pytest.mark.parametrize("fs", [100, 200, 250, 257, 360, 400, 500, 1000])
def test_sampling_rates_100_to_1000_hz_accepted(ecg_dir, fs):
    rec = read_ecg(ecg_dir / "cinc_georgia" / "E00001")  # 10 s at 500 Hz
    at_500 = preprocess(rec)
    seconds = np.arange(rec.n_samples) / rec.fs
    resampled = np.stack([np.interp(np.arange(10 * fs) / fs, seconds, lead) for lead in rec.signal])
    segments = preprocess(recording_from_array(resampled, fs, rec.lead_names))
    assert segments.shape == (2, 12, 2500)
    for i in range(12):  # the same heartbeat, whatever rate it came at
        assert np.corrcoef(segments[:, i].ravel(), at_500[:, i].ravel())[0, 1] > 0.8


@pytest.mark.parametrize("fs", [50, 99.5, 1001, 2000])
def test_sampling_rates_outside_range_refused(fs):
    rec = recording_from_array(np.random.default_rng(0).normal(size=(12, int(fs * 10))), fs, STANDARD_LEADS)
    with pytest.raises(InvalidECGError, match=f"sampling rate {fs:g} Hz is outside .*100–1000 Hz"):
        preprocess(rec)


def test_one_second_record_refused(ecg_dir):
    rec = read_ecg(ecg_dir / "cinc_cpsc2018" / "A0002")
    short = recording_from_array(rec.signal[:, :500], rec.fs, rec.lead_names)
    with pytest.raises(InvalidECGError, match=r"too short: 1.00 s .* at least 5 s"):
        preprocess(short)


def test_five_second_boundary(ecg_dir):
    rec = read_ecg(ecg_dir / "cinc_cpsc2018" / "A0002")
    exactly = recording_from_array(rec.signal[:, :2500], rec.fs, rec.lead_names)
    assert preprocess(exactly).shape == (1, 12, 2500)
    with pytest.raises(InvalidECGError, match="too short"):
        preprocess(recording_from_array(rec.signal[:, :2499], rec.fs, rec.lead_names))


def test_real_short_code15_record_refused(ecg_dir):
    with pytest.raises(InvalidECGError, match=r"too short: 4.33 s \(2162 samples at 500 Hz\)"):
        preprocess(read_ecg(ecg_dir / "code15" / "919842"))


def test_maximum_duration(ecg_dir):
    rec = read_ecg(ecg_dir / "cinc_ptb" / "S0002")  # 115.2 s at 1000 Hz
    with pytest.raises(InvalidECGError, match=r"too long: 115.2 s; the limit is 60 s"):
        preprocess(rec, max_duration_s=60)
    assert preprocess(rec).shape == (23, 12, 2500)


def test_windows_are_consecutive_slices_of_the_standardised_record(ecg_dir):
    rec = read_ecg(ecg_dir / "cinc_cpsc2018" / "A0001")  # 15 s at 500 Hz → 3 windows
    whole = standardise_leads(resample_to_target(rec.signal, rec.fs))
    segments = preprocess(rec, dtype=np.float64)
    np.testing.assert_array_equal(np.concatenate(list(segments), axis=1), whole)


@pytest.mark.parametrize("record,reason", [
    ("cpsc2021/data_101_6", "too_few_leads"),  # 2-lead Holter
    ("mitdb/100", "too_few_leads"),
])
def test_refusals_carry_a_machine_readable_reason(ecg_dir, record, reason):
    with pytest.raises(InvalidECGError) as info:
        preprocess(read_ecg(ecg_dir / record))
    assert info.value.reason == reason


def test_short_record_reason(ecg_dir):
    rec = read_ecg(ecg_dir / "cinc_cpsc2018/A0001")
    rec.signal = np.ascontiguousarray(rec.signal[:, :500])  # 1 s
    with pytest.raises(InvalidECGError) as info:
        preprocess(rec)
    assert info.value.reason == "too_short" and "at least 5 s" in str(info.value)


@pytest.mark.parametrize("fs", [100.0, 200.0, 257.0, 360.0, 400.0, 999.0, 1000.0])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_resampling_is_scipy_interp1d_bit_for_bit(ecg_dir, fs, dtype):
    # The reference resamples with interp1d(linspace(0, M-1, N), x, axis=1)(arange(M)) as SciPy
    # up to 1.17 computes it: slope = (y_hi - y_lo) / (x_hi - x_lo), y = slope * (x - x_lo) + y_lo.
    # Ours computes that without the interpolator object and must not differ in any bit. (SciPy
    # 1.18, which Python 3.13 gets, rounds its interp1d differently in the last bit: parity with
    # the reference's stored outputs is what test_parity holds, and that formula is written here.)
    from scipy.interpolate import interp1d

    rec = read_ecg(ecg_dir / "cinc_cpsc2018" / "A0001")
    signal = np.concatenate([rec.signal, rec.signal[:, :1234]], axis=1).astype(dtype)  # odd length
    n_out = int(signal.shape[1] * 500 / fs)
    knots, at = np.linspace(0, n_out - 1, signal.shape[1]), np.arange(n_out, dtype=np.float64)
    hi = np.clip(np.searchsorted(knots, at), 1, len(knots) - 1)
    lo = hi - 1
    y_lo, y_hi = signal[:, lo], signal[:, hi]
    expected = (y_hi - y_lo) / (knots[hi] - knots[lo]) * (at - knots[lo]) + y_lo
    got = resample_to_target(signal, fs)
    assert got.dtype == np.float64 and got.shape == expected.shape
    np.testing.assert_array_equal(got, expected)
    installed = interp1d(knots, signal, axis=1)(at)  # whatever SciPy is installed: the same to rounding
    eps = np.finfo(dtype).eps  # (SciPy 1.18 keeps float32 input in float32)
    np.testing.assert_allclose(got, installed, rtol=4 * eps, atol=4 * eps * float(np.abs(signal).max()))


def test_standardising_is_numpys_mean_and_std_bit_for_bit(ecg_dir):
    rec = read_ecg(ecg_dir / "cinc_cpsc2018" / "A0001")
    x = resample_to_target(rec.signal, rec.fs)
    x[2] = 0.1  # constant: its float mean may round, leaving a std of ~1e-17
    x[5] = 1e6 + np.arange(x.shape[1]) % 3 * 1e-6  # not constant, but std ≈ 1e-12 · mean
    x[7] = 0.0
    std = x.std(axis=1, keepdims=True)
    expected = (x - x.mean(axis=1, keepdims=True)) / np.where(std == 0, 1.0, std)
    expected[[2, 7]] = 0.0
    got = standardise_leads(x)
    np.testing.assert_array_equal(got, expected)
    assert np.all(got[[2, 7]] == 0) and got[5].std() == pytest.approx(1.0)
