"""A full disk under what the analysis writes beside a store (probes, the baseline vectors' cache):
the write is refused as ``disk_full`` — RESOURCE_EXHAUSTED on the wire, as a refused ingest is — not
an INTERNAL error; nothing half-written is left, what was kept before stays readable and whole (an
overwrite that fails leaves the previous probe's record *and* weights), and the same call succeeds
once space returns. A real store on a real (tmpfs) disk, filled by a ballast file."""

from __future__ import annotations

import json
import shutil

import grpc
import numpy as np
import pytest

from ecg_atlas.analysis.store_io import list_probes, load_probe, probe_split, random_init_like
from ecg_atlas.analysis.tasks import SplitSpec, train_stored_probe
from ecg_atlas.errors import StorageFullError
from ecg_atlas.index import Store
from ecg_atlas.service.errors import reason_of, status_of
from tests.small_disk import fill, mounted_tmpfs

DISK_MB = 64  # the analysis session's store is about 32 MB


@pytest.mark.slow
def test_a_probe_or_baseline_that_cannot_be_saved_is_refused_as_disk_full(tmp_path, store_dir, encoder):
    split = SplitSpec("patient", (0.6, 0.1, 0.3))
    train = dict(split=split, n_bootstrap=20, fractions=(1.0,))
    with mounted_tmpfs(tmp_path / "disk", DISK_MB) as disk:
        shutil.copytree(store_dir, disk / "store")
        with Store.open(disk / "store", read_only=True, with_index=False) as store:
            kept = train_stored_probe(store, "kept", ["age_over_60"], **train)
            kept_meta = load_probe(store, "kept")[1]
            ballast = fill(disk)

            kept_split = probe_split(store, "kept")
            attempts = (("baseline", {"baseline_encoder": random_init_like(encoder)}), ("plain", {}),
                        ("kept", {"overwrite": True, "seed": 7, "split": SplitSpec("patient", (0.5, 0.2, 0.3))}))
            for name, extra in attempts:
                with pytest.raises(StorageFullError) as refused:
                    train_stored_probe(store, name, ["age_over_60"], **{**train, **extra})
                code, message = status_of(refused.value)
                assert code == grpc.StatusCode.RESOURCE_EXHAUSTED
                assert message == "no space left on the store's disk: free space there, then run it again"
                assert reason_of(refused.value) == "disk_full"
                assert str(disk) not in str(refused.value)
            names = [p["name"] for p in list_probes(store)]
            assert names == ["kept"]  # the refused ones were never listed
            assert not [p for p in (disk / "store").rglob("*.tmp")]  # no temporary file left behind
            probe, meta = load_probe(store, "kept")  # the failed overwrite left the previous probe whole
            assert meta["targets"] == ["age_over_60"] and meta["created_at"] == kept_meta["created_at"]
            np.testing.assert_array_equal(probe.coef, kept.probe.coef)
            assert probe_split(store, "kept") == kept_split and len(kept_split) > 0
            assert sorted(f.name for f in (kept.path).iterdir()) == sorted(["probe.json", *meta["files"].values()])

            ballast.unlink()  # space returns: the same call succeeds, no restart
            again = train_stored_probe(store, "plain", ["age_over_60"], **train)
            assert again.path is not None and [p["name"] for p in list_probes(store)] == ["kept", "plain"]


@pytest.mark.slow
def test_an_overwrite_replaces_the_record_weights_and_split_together(tmp_path, store_dir):
    store_path = tmp_path / "store"
    shutil.copytree(store_dir, store_path)
    with Store.open(store_path, read_only=True, with_index=False) as store:
        first = train_stored_probe(store, "p", ["age_over_60"], split=SplitSpec("patient", (0.6, 0.1, 0.3)),
                                   n_bootstrap=20, fractions=(1.0,))
        first_split = probe_split(store, "p")
        before = {f.name for f in first.path.iterdir()}
        assert len(before) == 3 and first_split  # probe.json, weights-<token>.npz, split-<token>.parquet
        second = train_stored_probe(store, "p", ["age_over_60"], overwrite=True, seed=3, n_bootstrap=20,
                                    split=SplitSpec("patient", (0.5, 0.2, 0.3)), fractions=(1.0,))
        probe, meta = load_probe(store, "p")
        after = {f.name for f in second.path.iterdir()}
        assert after == {"probe.json", *meta["files"].values()} and not after & (before - {"probe.json"})
        np.testing.assert_array_equal(probe.coef, second.probe.coef)
        second_split = probe_split(store, "p")
        assert set(second_split) == set(first_split) and second_split != first_split

        # a probe saved before probe.json named its files (weights.npz, split.parquet) still loads
        record = json.loads((second.path / "probe.json").read_text())
        (second.path / record["files"].pop("weights")).rename(second.path / "weights.npz")
        (second.path / record["files"].pop("split")).rename(second.path / "split.parquet")
        del record["files"]
        (second.path / "probe.json").write_text(json.dumps(record))
        np.testing.assert_array_equal(load_probe(store, "p")[0].coef, second.probe.coef)
        assert probe_split(store, "p") == second_split


@pytest.mark.slow
def test_an_overwrite_that_fails_at_its_commit_point_leaves_the_previous_probe_whole(tmp_path, store_dir,
                                                                                     monkeypatch):
    """The disk fills (or the process dies) after the new weights are written, before the new record:
    the previous record still loads its own weights and split, and the new files are gone."""
    import errno

    from ecg_atlas.analysis import store_io

    store_path = tmp_path / "store"
    shutil.copytree(store_dir, store_path)
    with Store.open(store_path, read_only=True, with_index=False) as store:
        first = train_stored_probe(store, "p", ["age_over_60"], split=SplitSpec("patient", (0.6, 0.1, 0.3)),
                                   n_bootstrap=20, fractions=(1.0,))
        first_split, before = probe_split(store, "p"), {f.name for f in first.path.iterdir()}
        written = store_io._write_json

        def full_at_the_record(path, obj):
            if path.name == "probe.json":
                raise OSError(errno.ENOSPC, "No space left on device")
            written(path, obj)

        monkeypatch.setattr(store_io, "_write_json", full_at_the_record)
        with pytest.raises(StorageFullError):
            train_stored_probe(store, "p", ["age_over_60"], overwrite=True, seed=3, n_bootstrap=20,
                               split=SplitSpec("patient", (0.5, 0.2, 0.3)), fractions=(1.0,))
        probe, _ = load_probe(store, "p")
        np.testing.assert_array_equal(probe.coef, first.probe.coef)
        assert probe_split(store, "p") == first_split and {f.name for f in first.path.iterdir()} == before
