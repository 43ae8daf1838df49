"""ecg_atlas/limits.py: the k and page limits, each derived from one constant and obeyed where it applies."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from ecg_atlas import limits
from ecg_atlas.errors import StoreError
from ecg_atlas.index import EncoderIdentity, Store
from ecg_atlas.service.config import ServerConfig


def test_the_limits_nest_and_keep_their_documented_figures():
    assert (limits.MAX_K, limits.SERVER_MAX_K, limits.WEB_MAX_K) == (10_000, 1_000, 50)
    assert 1 <= limits.SHOWN_K <= limits.DEFAULT_K <= limits.WEB_MAX_K <= limits.SERVER_MAX_K <= limits.MAX_K
    assert (limits.MAX_SUGGESTED_IDS, limits.DEFAULT_SUGGESTED_IDS, limits.WEB_SUGGESTED_IDS) == (200, 20, 12)
    assert 1 <= limits.WEB_SUGGESTED_IDS <= limits.MAX_SUGGESTED_IDS
    assert 1 <= limits.DEFAULT_SUGGESTED_IDS <= limits.MAX_SUGGESTED_IDS
    config = ServerConfig(store=Path("."))
    assert config.max_k == limits.SERVER_MAX_K
    assert config.max_receive_message_bytes == config.max_send_message_bytes == limits.MAX_MESSAGE_BYTES


def test_the_store_refuses_a_k_past_its_ceiling(tmp_path):
    identity = EncoderIdentity("limits-test", "b" * 64, "ecgfm-v1", 4)
    with Store.open(tmp_path / "store", device="cpu") as store:
        store.upsert(["e1", "e2"], np.eye(2, 4, dtype=np.float32), identity=identity)
        query = np.ones(4, np.float32)
        assert len(store.search(query, k=limits.MAX_K)[0]) == 2
        with pytest.raises(StoreError, match=f"from 1 to {limits.MAX_K}"):
            store.search(query, k=limits.MAX_K + 1)
