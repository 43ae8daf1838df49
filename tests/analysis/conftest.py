"""The real corpus (../shared/data/ecg) embedded once per session by the tiny ECG-FM checkpoint,
and a store holding those vectors with the manifest's labels, age, sex and patient ids."""

from __future__ import annotations

import csv
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

from ecg_atlas.embedder import EmbeddingEngine, load_encoder, preprocess, read_ecg
from ecg_atlas.errors import AtlasError
from ecg_atlas.index import EncoderIdentity, Store
from ecg_atlas.index.signal_copy import StoredSignal


@dataclass
class Corpus:
    ecg_ids: list[str]
    vectors: np.ndarray  # (n, 64) record vectors
    segment_vectors: list[np.ndarray]
    rows: list[dict]  # manifest rows, same order
    sources: list[str]
    signals: list[StoredSignal]  # the samples as read: the store keeps them for baselines and grids

    def metadata(self, i: int) -> dict:
        r = self.rows[i]
        out = {"dataset": r["dataset"],
               "label_groups": [g for g in r["label_groups"].split(";") if g],
               "labels_abbr": [g for g in r["labels_abbr"].split(";") if g]}
        if r["age"]:
            out["age"] = int(float(r["age"]))
            out["age_over_60"] = float(r["age"]) >= 60
        if r["sex"]:
            out["sex"] = r["sex"]
        return out


@pytest.fixture(scope="session")
def encoder(parity_dir):
    return load_encoder(parity_dir / "tiny_pretrained.pt")


@pytest.fixture(scope="session")
def corpus(ecg_dir: Path, encoder) -> Corpus:
    rows = list(csv.DictReader(open(ecg_dir / "manifest.csv")))
    segments, kept, signals = [], [], []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # zero-filled leads of a few records: not what these tests are about
        for r in rows:
            try:
                recording = read_ecg(ecg_dir / r["record"])
                segments.append((r["record"], preprocess(recording)))
                kept.append(r)
                signals.append(StoredSignal.from_recording(recording))
            except AtlasError:
                continue  # 2-lead Holter records and the like: refused by design
    done = list(EmbeddingEngine(encoder, batch_size=64).embed_records(segments))
    return Corpus([d.key for d in done], np.stack([d.record_vector for d in done]),
                  [d.segment_vectors for d in done], kept, [str(ecg_dir / r["record"]) for r in kept], signals)


def identity_of(encoder) -> EncoderIdentity:
    return EncoderIdentity(encoder.model_id, encoder.checkpoint_sha256, encoder.contract.preprocessing_version,
                           encoder.dim)


def fill_store(path: Path, corpus: Corpus, encoder) -> None:
    with Store.open(path, index_kind="flat", device="cpu") as store:
        store.upsert(corpus.ecg_ids, corpus.vectors, identity=identity_of(encoder),
                     patient_ids=[r["patient_id"] or None for r in corpus.rows],
                     segment_vectors=corpus.segment_vectors, sources=corpus.sources, signals=corpus.signals,
                     metadata=[corpus.metadata(i) for i in range(len(corpus.ecg_ids))])


@pytest.fixture(scope="session")
def store_dir(tmp_path_factory, corpus, encoder) -> Path:
    """A store of the whole corpus, shared read-mostly by the session (tests that write use their own)."""
    path = tmp_path_factory.mktemp("atlas") / "store"
    fill_store(path, corpus, encoder)
    return path
