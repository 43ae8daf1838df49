"""A full disk under what the analysis writes beside a store (probes, the baseline vectors' cache):
the write is refused as ``disk_full`` — RESOURCE_EXHAUSTED on the wire, as a refused ingest is — not
an INTERNAL error; nothing half-written is left, what was kept before stays readable, and the same
call succeeds once space returns. A real store on a real (tmpfs) disk, filled by a ballast file."""

from __future__ import annotations

import shutil

import grpc
import pytest

from ecg_atlas.analysis.store_io import list_probes, load_probe, random_init_like
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
            ballast = fill(disk)

            for name, extra in (("baseline", {"baseline_encoder": random_init_like(encoder)}), ("plain", {})):
                with pytest.raises(StorageFullError) as refused:
                    train_stored_probe(store, name, ["age_over_60"], **train, **extra)
                code, message = status_of(refused.value)
                assert code == grpc.StatusCode.RESOURCE_EXHAUSTED
                assert message == "no space left on the store's disk: free space there, then run it again"
                assert reason_of(refused.value) == "disk_full"
                assert str(disk) not in str(refused.value)
            names = [p["name"] for p in list_probes(store)]
            assert names == ["kept"]  # the refused ones were never listed
            assert not [p for p in (disk / "store").rglob("*.tmp")]  # no temporary file left behind
            probe, meta = load_probe(store, "kept")
            assert meta["targets"] == ["age_over_60"] and probe.coef.shape == kept.probe.coef.shape

            ballast.unlink()  # space returns: the same call succeeds, no restart
            again = train_stored_probe(store, "plain", ["age_over_60"], **train)
            assert again.path is not None and [p["name"] for p in list_probes(store)] == ["kept", "plain"]
