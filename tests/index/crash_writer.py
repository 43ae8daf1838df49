"""Run by the crash test: bulk-adds batches forever, printing each batch's ids once acknowledged."""

import sys

import numpy as np

from ecg_atlas.index import Store
from ecg_atlas.index import store as store_module
from tests.index.conftest import IDENTITY

store_module.AUTOSAVE_MIN_CHANGES = 300  # save the index often, so kills land inside saves too

path, start = sys.argv[1], int(sys.argv[2])
rng = np.random.default_rng(start)
store = Store.open(path)
batch = 100
for b in range(start, start + 10_000):
    ids = [f"ecg-{b}-{i}" for i in range(batch)]
    store.upsert(ids, rng.standard_normal((batch, IDENTITY.dim)).astype(np.float32), identity=IDENTITY,
                 patient_ids=[f"p-{b}"] * batch, metadata=[{"batch": b}] * batch)
    if b % 7 == 3:
        store.delete(patient_ids=[f"p-{b - 1}"])
        print(f"deleted p-{b - 1}", flush=True)
    print(" ".join(ids), flush=True)
