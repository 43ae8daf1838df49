"""Stored signal copies read in batches (``Store.signals``) are exactly the one-by-one reads, and
``SignalSource.recordings`` answers per id: a missing or unknown id is None, the rest are read."""

from __future__ import annotations

import numpy as np
import pytest

from ecg_atlas.analysis.signals import BATCH, SignalSource
from ecg_atlas.errors import NotFoundError
from ecg_atlas.index import Store


@pytest.mark.slow
def test_batched_signal_reads_equal_single_reads(store_dir, corpus):
    ids = corpus.ecg_ids[: BATCH + 5]  # more than one batch
    with Store.open(store_dir, read_only=True, with_index=False) as store:
        many = store.signals(ids)
        assert list(many) == ids
        for ecg_id in ids[:: 7]:
            one = store.signal(ecg_id)
            assert (one.fs, one.lead_names, one.n_samples) == (many[ecg_id].fs, many[ecg_id].lead_names,
                                                               many[ecg_id].n_samples)
            np.testing.assert_array_equal(one.array(), many[ecg_id].array())
        with pytest.raises(NotFoundError, match="not-stored"):
            store.signals([ids[0], "not-stored"])
        recordings = SignalSource(store).recordings([*ids, "not-stored"])
    assert recordings[-1] is None and all(r is not None for r in recordings[:-1])
    first = corpus.signals[0]
    assert recordings[0].fs == first.fs and list(recordings[0].lead_names) == list(first.lead_names)
