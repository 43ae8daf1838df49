"""`ecg-atlas quickstart`: the whole product in one command, offline.

Starts a server on a free loopback port with a fresh store, ingests the sample ECGs with their
labels, searches for the neighbours of one of them, prints a short report and writes the
neighbour plot.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import time
from pathlib import Path

from ecg_atlas.embedder.weights import DEFAULT_ENCODER
from ecg_atlas.errors import AtlasError

SHARED_ENV = "ECG_ATLAS_SHARED_DATA"
PREFERRED_QUERIES = ("cinc_ptbxl/HR00001", "cinc_cpsc2018/A0001")
REPORT_COLUMNS = "dataset,age,sex,labels_abbr,label_groups,ptbxl_superclass"


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("quickstart", help="start a server, ingest the sample ECGs, search, plot",
                       description=__doc__)
    p.add_argument("--out", type=Path, default=Path("quickstart-out"),
                   help="folder for the store and the plot (default ./quickstart-out; its store is recreated)")
    p.add_argument("--ecg-dir", type=Path, default=None,
                   help=f"sample ECGs (default: ../shared/data/ecg from the repo or the current dir, "
                        f"or ${SHARED_ENV}/ecg)")
    p.add_argument("--checkpoint", default=DEFAULT_ENCODER,
                   help=f"encoder: bundled, an ECG-FM .pt, a HuBERT-ECG folder or .pt, an ECGFounder .pth, "
                        f"hf:OWNER/REPO[/FILE] or random:PRESET[:SEED] (default {DEFAULT_ENCODER})")
    p.add_argument("--device", default="auto")
    p.add_argument("-k", type=int, default=5)
    p.add_argument("--json", action="store_true", help="machine-readable report")
    p.set_defaults(func=run)


def find_sample_ecgs(given: Path | None = None) -> Path:
    if given is not None:
        candidates = [given]
    else:
        repo = Path(__file__).resolve().parents[2]
        candidates = [Path(os.environ[SHARED_ENV]) / "ecg"] if os.environ.get(SHARED_ENV) else []
        candidates += [repo.parent / "shared" / "data" / "ecg", Path.cwd().parent / "shared" / "data" / "ecg"]
    for path in candidates:
        if (path / "manifest.csv").is_file():
            return path
    raise AtlasError("sample ECGs not found; looked for manifest.csv in: "
                     + ", ".join(str(p) for p in dict.fromkeys(candidates))
                     + f". Set {SHARED_ENV} to the folder that holds ecg/, or pass --ecg-dir")


def run(args: argparse.Namespace) -> int:
    from ecg_atlas.analysis.ecg_paper import describe
    from ecg_atlas.cli._client import print_json
    from ecg_atlas.cli.search import plot_result, stored_signal
    from ecg_atlas.client import Client
    from ecg_atlas.ingest.manifest import read_metadata_csv
    from ecg_atlas.ingest.stream import ingest_files
    from ecg_atlas.service import AtlasServer
    from ecg_atlas.service.config import ServerConfig

    placeholder = args.checkpoint.startswith("random:")
    ecg_dir = find_sample_ecgs(args.ecg_dir)
    store_dir = args.out / "store"
    if store_dir.exists():
        if not (store_dir / "store.duckdb").exists():
            raise AtlasError(f"{store_dir} exists and is not an ECG Atlas store; choose another --out")
        shutil.rmtree(store_dir)
    config = ServerConfig(store=store_dir, checkpoint=args.checkpoint, device=args.device, port=0)
    started = time.perf_counter()
    server = AtlasServer(config).start(background_load=False)
    notice = server.service.runtime.notice  # provenance and weight licence of the encoder that runs
    if notice:
        print(f"NOTE: {notice}", flush=True)
    try:
        with Client(server.address) as client:
            client.wait_ready()
            patients, metadata = read_metadata_csv(ecg_dir / "manifest.csv", "record", "patient_id",
                                                   REPORT_COLUMNS.split(","))
            ingested = ingest_files(client, [ecg_dir], patients=patients, metadata=metadata)
            stored_ids = [i for i in PREFERRED_QUERIES if client.get([i])[0]]
            if not stored_ids:
                raise AtlasError("none of the sample ECGs could be stored; see the errors above")
            query = stored_ids[0]
            result = client.search(ecg_id=query, k=args.k, exclude_self=True, exclude_same_patient=True)
            filtered = client.search(ecg_id=query, k=args.k, exclude_self=True, where="age>=60")
            query_meta = client.get([query])[0][0].metadata
            info = client.info()
            plot, _ = plot_result(client, f"QUERY  {query}", stored_signal(client, query), query_meta, result.hits,
                               args.out / "neighbours.png", query_id=query)
    finally:
        server.stop(grace=5)
    report = {
        "encoder": info["model_id"], "untrained_encoder": placeholder, "encoder_notice": notice,
        "device": info["device"],
        "store": str(store_dir), "ingest": {k: v for k, v in ingested.items() if k != "errors"},
        "query": query, "query_metadata": describe(query_meta),
        "neighbours": [{"ecg_id": h.ecg_id, "score": round(h.score, 4), "metadata": describe(h.metadata)}
                       for h in result.hits],
        "neighbours_age_ge_60": [{"ecg_id": h.ecg_id, "score": round(h.score, 4), "age": h.metadata.get("age")}
                                 for h in filtered.hits],
        "plot": str(plot), "seconds": round(time.perf_counter() - started, 1),
    }
    if args.json:
        print_json(report)
        return 0
    ing = report["ingest"]
    print(f"ingested {ing['stored']} of {ing['found']} sample ECGs in {ing['seconds']:.1f} s "
          f"({ing['ecgs_per_s']} ECGs/s, {ing['segments']} segments) with {report['encoder']} on {report['device']}")
    for reason, count in ing["failure_reasons"].items():
        print(f"  not stored {count}: {reason}")
    print(f"query {query}: {report['query_metadata']}")
    for rank, hit in enumerate(result.hits, 1):
        print(f"  #{rank} {hit.score:6.3f}  {hit.ecg_id:<28} {describe(hit.metadata)}")
    shown = ", ".join(f"{h.ecg_id} (age {h.metadata.get('age')})" for h in filtered.hits)
    print(f"with filter age>=60: {shown}")
    print(f"neighbour plot: {plot}")
    cli = command_name()
    checkpoint = "" if args.checkpoint == DEFAULT_ENCODER else f" --checkpoint {args.checkpoint}"
    print(f"next: the README's Tour, or browse this store: {cli} serve --store {store_dir}{checkpoint} & "
          f"{cli} web   # then open http://127.0.0.1:8080/")
    return 0


def command_name() -> str:
    """How to type `ecg-atlas` here: the bare name when it is on PATH, else the script beside this
    interpreter (``.venv/bin/ecg-atlas`` after `make quickstart`), relative to the working folder."""
    if shutil.which("ecg-atlas"):
        return "ecg-atlas"
    script = Path(sys.executable).parent / "ecg-atlas"
    try:
        return os.path.relpath(script)
    except ValueError:  # another drive (Windows)
        return str(script)
