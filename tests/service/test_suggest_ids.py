"""SuggestIds: stored ecg_ids by prefix, for type-ahead (the web atlas's search box)."""

from __future__ import annotations

import grpc
import pyarrow as pa
import pytest

from ecg_atlas.client import error_info
from tests.service.conftest import READ_TOKEN

pytestmark = pytest.mark.slow  # a real server with the whole corpus


def test_ids_with_a_prefix_in_id_order(corpus_server):
    with corpus_server.client(READ_TOKEN) as c:  # a read token may ask
        stored = sorted(pa.Table.from_batches(list(c.export(columns=[], vectors=False))).column("ecg_id").to_pylist())
        expected = [i for i in stored if i.startswith("cinc_ptb/")]
        assert len(expected) > 3
        assert c.suggest_ids("cinc_ptb/", limit=200) == expected
        assert c.suggest_ids("cinc_ptb/", limit=3) == expected[:3]
        assert c.suggest_ids("", limit=5) == stored[:5]
        assert c.suggest_ids("no-such-prefix/") == []
        assert c.suggest_ids("%") == []  # a LIKE wildcard is just a character here


def test_a_limit_beyond_200_is_refused_with_its_reason(corpus_server):
    with corpus_server.client(READ_TOKEN) as c, pytest.raises(grpc.RpcError) as caught:
        c.suggest_ids("c", limit=500)
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert error_info(caught.value) == ("bad_limit", {"limit": "500", "max_limit": "200"})
