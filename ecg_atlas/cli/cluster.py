"""`ecg-atlas cluster --store DIR --run NAME`: (PCA) → UMAP → HDBSCAN over a filtered cohort.

Writes cluster labels into the store as metadata (cluster_NAME, cluster_NAME_prob,
cluster_NAME_outlier: search with --where 'cluster_NAME=3'), and the map, enrichment table,
exemplar and outlier grids under STORE/analysis/cohorts/NAME/ (and, through a server, into --out).
When a server holds the store the run goes through its Cluster RPC (a write token is needed);
otherwise the store is opened directly.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from ecg_atlas.cli._client import add_client_args, connect, rpc_errors
from ecg_atlas.cli._store import access


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("cluster", help="cluster a cohort (UMAP + HDBSCAN), with map, enrichment and exemplars",
                       description=__doc__)
    p.add_argument("--store", default=None, help="store directory (through its server when one holds it)")
    p.add_argument("--run", required=True, help="run name (lowercase, digits, _): becomes the cluster_RUN column")
    p.add_argument("--where", action="append", default=[], metavar="FILTER", help="cohort filter (repeat: AND)")
    p.add_argument("--labels", action="append", default=[], metavar="COLUMN",
                   help="label-list or boolean column to test for enrichment per cluster (repeat)")
    p.add_argument("--colour-by", action="append", default=[], metavar="COLUMN",
                   help="also draw the map coloured by this metadata column (repeat)")
    p.add_argument("--pca", type=int, default=50, help="PCA dimensions before UMAP; 0 = no PCA (default 50)")
    p.add_argument("--cluster-dims", type=int, default=10, help="UMAP dimensions HDBSCAN clusters in (5–10)")
    p.add_argument("--neighbors", type=int, default=15, help="UMAP n_neighbors (default 15)")
    p.add_argument("--epochs", type=int, default=None, help="UMAP epochs (default: umap-learn's)")
    p.add_argument("--min-cluster-size", type=int, default=None, help="HDBSCAN (default max(10, 0.5%% of cohort))")
    p.add_argument("--min-samples", type=int, default=None, help="HDBSCAN (default min(min cluster size, 10))")
    p.add_argument("--exemplars", type=int, default=5, help="exemplar ECGs per cluster")
    p.add_argument("--seed", type=int, default=42)
    p.add_argument("--backend", choices=["auto", "cpu", "cuml"], default="cpu",
                   help="cpu (default); auto: RAPIDS cuML on a CUDA machine where installed, else CPU")
    p.add_argument("--no-ecg-grids", action="store_true", help="skip the exemplar/outlier ECG grids (no raw ECG reads)")
    p.add_argument("--out", type=Path, default=None,
                   help="through a server: folder for the figures and tables it returns (default ./cluster-RUN)")
    add_client_args(p, store_verb=True)
    p.set_defaults(func=run)


@rpc_errors
def run(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    path = access(args)
    with tqdm(total=100, unit="%", desc="cohort", disable=None, bar_format="{l_bar}{bar}| {n:.0f}% [{elapsed}]") as bar:
        def progress(stage: str, percent: float) -> None:
            bar.set_description(stage)
            bar.update(percent - bar.n)

        summary = _through_server(args, progress) if path.via == "server" else _in_store(args, progress)
    summary["via"] = path.via
    if args.json:
        print(json.dumps(summary, indent=1))
        return 0
    print(f"{summary['n_ecgs']} ECGs → {summary['n_clusters']} clusters, {summary['noise']} noise")
    print(f"search by cluster: --where '{summary['columns'][0]}=0'")
    print(f"outputs in {summary['outputs']}: " + ", ".join(summary["files"]))
    return 0


def _through_server(args: argparse.Namespace, progress) -> dict:
    with connect(args) as client:
        result = client.cluster(
            args.run, progress=progress, where=args.where or None, label_columns=args.labels,
            colour_by=args.colour_by, n_epochs=args.epochs or 0, min_cluster_size=args.min_cluster_size or 0,
            min_samples=args.min_samples or 0, n_neighbors=args.neighbors, pca_dims=args.pca,
            cluster_dims=args.cluster_dims, n_exemplars=args.exemplars, seed=args.seed,
            exemplar_grid=not args.no_ecg_grids, timeout=None)
    out = args.out or Path(f"cluster-{args.run}")
    out.mkdir(parents=True, exist_ok=True)
    files = {f"{name}.png": png for name, png in result.figures.items()}
    files.update({"enrichment.csv": result.enrichment_csv.encode(),
                  "enrichment.md": result.enrichment_markdown.encode(),
                  "run.json": result.run_json.encode()})
    for name, body in files.items():
        (out / name).write_bytes(body)
    return {"run": result.run, "n_ecgs": result.n_ecgs, "n_clusters": result.n_clusters, "noise": result.noise,
            "cluster_sizes": result.cluster_sizes, "columns": result.columns, "outputs": str(out),
            "files": sorted(files)}


def _in_store(args: argparse.Namespace, progress) -> dict:
    from ecg_atlas.analysis.cohort import CohortParams
    from ecg_atlas.analysis.store_io import load_cluster_run
    from ecg_atlas.analysis.tasks import cluster_stored
    from ecg_atlas.index import Store

    params = CohortParams(pca_dims=args.pca or None, cluster_dims=args.cluster_dims, n_neighbors=args.neighbors,
                          n_epochs=args.epochs, min_cluster_size=args.min_cluster_size,
                          min_samples=args.min_samples, n_exemplars=args.exemplars, seed=args.seed,
                          backend=args.backend)
    with Store.open(args.store, create=False, with_index=False) as store:
        done = cluster_stored(store, args.run, where=args.where, params=params, label_columns=args.labels,
                              colour_by=args.colour_by, exemplar_grid=not args.no_ecg_grids, progress=progress)
        record = load_cluster_run(store, args.run)
    r = done.result
    sizes = r.sizes()
    return {**record, "n_clusters": r.n_clusters, "noise": int(sizes.get(-1, 0)),
            "cluster_sizes": {int(k): int(v) for k, v in sizes.items()}, "outputs": str(done.directory),
            "files": sorted([p.name for p in done.figures.values()]
                            + ["enrichment.csv", "enrichment.md", "assignments.parquet", "run.json"])}
