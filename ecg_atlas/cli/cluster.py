"""`ecg-atlas cluster --store DIR --run NAME`: (PCA) → UMAP → HDBSCAN over a filtered cohort.

Writes cluster labels into the store as metadata (cluster_NAME, cluster_NAME_prob,
cluster_NAME_outlier: search with --where 'cluster_NAME=3'), and the map, enrichment table,
exemplar and outlier grids under STORE/analysis/cohorts/NAME/. Opens the store for writing: run it
while no server holds the store.
"""

from __future__ import annotations

import argparse
import json


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("cluster", help="cluster a cohort (UMAP + HDBSCAN), with map, enrichment and exemplars",
                       description=__doc__)
    p.add_argument("--store", required=True, help="store directory")
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
    p.add_argument("--backend", choices=["auto", "cpu", "cuml"], default="auto",
                   help="auto: cuML on a CUDA machine where installed, else CPU")
    p.add_argument("--no-ecg-grids", action="store_true", help="skip the exemplar/outlier ECG grids (no raw ECG reads)")
    p.add_argument("--json", action="store_true", help="print the run record as JSON")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from ecg_atlas.analysis.cohort import CohortParams
    from ecg_atlas.analysis.store_io import load_cluster_run
    from ecg_atlas.analysis.tasks import cluster_stored
    from ecg_atlas.index import Store

    params = CohortParams(pca_dims=args.pca or None, cluster_dims=args.cluster_dims, n_neighbors=args.neighbors,
                          n_epochs=args.epochs, min_cluster_size=args.min_cluster_size,
                          min_samples=args.min_samples, n_exemplars=args.exemplars, seed=args.seed,
                          backend=args.backend)
    with tqdm(total=100, unit="%", desc="cohort", disable=None, bar_format="{l_bar}{bar}| {n:.0f}% [{elapsed}]") as bar:
        def progress(stage: str, percent: float) -> None:
            bar.set_description(stage)
            bar.update(percent - bar.n)

        with Store.open(args.store, create=False, with_index=False) as store:
            done = cluster_stored(store, args.run, where=args.where, params=params, label_columns=args.labels,
                                  colour_by=args.colour_by, exemplar_grid=not args.no_ecg_grids, progress=progress)
            record = load_cluster_run(store, args.run)
    if args.json:
        print(json.dumps(record, indent=1))
        return 0
    r = done.result
    print(f"{record['n_ecgs']} ECGs → {r.n_clusters} clusters, {r.sizes().get(-1, 0)} noise "
          f"(2-D map trustworthiness {r.trustworthiness}); stage seconds: "
          + ", ".join(f"{k} {v:.1f}" for k, v in r.timings.items()))
    print(f"search by cluster: --where '{record['columns'][0]}=0'")
    print(f"outputs in {done.directory}: " + ", ".join(sorted(p.name for p in done.figures.values()))
          + ", enrichment.csv, enrichment.md, assignments.parquet, run.json")
    return 0
