"""The shard format has one home (index/shard_layout.py): what a bulk job writes is what import reads."""

from __future__ import annotations

import numpy as np
import pyarrow.parquet as pq

from ecg_atlas.bulk.shards import ShardItem, read_identity, shard_table, write_shard
from ecg_atlas.index.shard_layout import IDENTITY_KEYS, METADATA_PREFIX, SHARD_COLUMNS, shard_schema
from ecg_atlas.index.shard_rows import census

from .conftest import DIM, IDENTITY


def test_a_written_shard_has_the_layouts_columns_and_types(tmp_path):
    vector = np.arange(1, DIM + 1, dtype=np.float32)
    items = [ShardItem("a", "a.hea", "p1", {"age": 61, "labels": ["AF"]}, 500.0, ["I", "II"], 10.0, vector,
                       np.stack([vector, vector])),
             ShardItem("b", "b.hea", reason="too_short", message="2.0 s, under the 5 s the encoder needs")]
    identity = {"model_id": IDENTITY.model_id, "checkpoint_sha256": IDENTITY.checkpoint_sha256,
                "preprocessing_version": IDENTITY.preprocessing_version, "dim": str(DIM)}
    path = tmp_path / "shard-000000.parquet"
    write_shard(path, shard_table(items, DIM, identity, shard=0, job="j"))
    written = pq.read_schema(path)
    layout = shard_schema(DIM)
    assert written.names == [*SHARD_COLUMNS, f"{METADATA_PREFIX}age", f"{METADATA_PREFIX}labels"]
    assert [written.field(name).type for name in SHARD_COLUMNS] == list(layout.types)
    assert {key: read_identity(path)[key] for key in IDENTITY_KEYS} == identity
    found = census([path])
    assert found.ids.to_pylist() == ["a"] and dict(found.refusals) == {"too_short": 1}
