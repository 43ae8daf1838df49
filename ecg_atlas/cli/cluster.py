"""`ecg-atlas cluster --store DIR --run NAME`: (PCA) → UMAP → HDBSCAN over a filtered cohort.

Writes cluster labels into the store as metadata (cluster_NAME, cluster_NAME_prob,
cluster_NAME_outlier: search with --where 'cluster_NAME=3'), and the map, enrichment table,
exemplar and outlier grids under STORE/analysis/cohorts/NAME/, inside the store: nothing is
written to the working folder unless --out names a folder for a copy. When a server holds the
store the run goes through its Cluster RPC (a write token is needed) and the server writes them
there; otherwise the store is opened directly. The labels most enriched in a cluster are printed,
SNOMED CT codes with their names.

Off a terminal (piped, logged) progress is a line per stage and every $ECG_ATLAS_PROGRESS_EVERY_S
seconds (default 10; off: none).
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
                   help="also copy the figures and tables into this folder (default: none; they are kept in "
                        "STORE/analysis/cohorts/RUN/, and a server named by --server alone keeps them in its store)")
    add_client_args(p, store_verb=True)
    p.set_defaults(func=run)


#: Enriched labels the summary prints (the table on disk has them all).
TOP_ENRICHED = 8


@rpc_errors
def run(args: argparse.Namespace) -> int:
    from ecg_atlas.progress import Progress

    path = access(args)
    with Progress("ecg-atlas cluster", 100, "%") as bar:
        def progress(stage: str, percent: float) -> None:
            bar.set(percent, stage)

        summary = _through_server(args, progress) if path.via == "server" else _in_store(args, progress)
    summary["via"] = path.via
    enriched = top_enriched(summary.pop("enrichment_csv"))
    if args.json:
        print(json.dumps({**summary, "top_enriched": enriched}, indent=1))
        return 0
    print(f"{summary['n_ecgs']} ECGs → {summary['n_clusters']} clusters, {summary['noise']} noise")
    if enriched:
        print("most enriched labels (Fisher exact, BH q < 0.05; the whole table is enrichment.md):")
    elif args.labels:
        print("no label is enriched in a cluster at BH q < 0.05 (the whole table is enrichment.md)")
    for row in enriched:
        print(f"  cluster {row['cluster']:>5}  {row['label']:<48} {row['in_cluster']:>14} vs {row['outside']:>14}  "
              f"OR {row['odds_ratio']}  q {row['q_value']}")
    print(f"search by cluster: --where '{summary['columns'][0]}=0'")
    if summary["outputs"]:
        print(f"outputs in {summary['outputs']}: " + ", ".join(summary["files"]))
    else:
        print(f"outputs kept by the server in its store (analysis/cohorts/{args.run}/); --out DIR copies them here")
    if summary.get("copied_to"):
        print(f"copied to {summary['copied_to']}")
    return 0


def top_enriched(enrichment_csv: str, limit: int = TOP_ENRICHED, q_below: float = 0.05) -> list[dict]:
    """The enrichment table's over-represented labels (odds ratio > 1) with q below `q_below`,
    most significant first; SNOMED CT codes named."""
    import csv
    import io

    from ecg_atlas.labels import label_display

    rows = []
    for r in csv.DictReader(io.StringIO(enrichment_csv)):
        try:
            q, odds = float(r.get("q_value") or "nan"), float(r.get("odds_ratio") or "nan")
        except ValueError:
            continue
        if q < q_below and odds > 1:
            rows.append((q, int(r["cluster"]), r))
    rows.sort(key=lambda t: (t[0], t[1], t[2]["label"]))
    return [{"cluster": "noise" if c < 0 else c, "label": label_display(r["label"]),
             "in_cluster": f"{r['positive_in']}/{r['n_in']} ({float(r['prevalence_in']):.0%})",
             "outside": f"{r['positive_out']}/{r['n_out']} ({float(r['prevalence_out']):.0%})",
             "odds_ratio": r["odds_ratio"] if r["odds_ratio"] == "inf" else f"{float(r['odds_ratio']):.1f}",
             "q_value": f"{q:.2g}"} for q, c, r in rows[:limit]]


def _copy(files: dict[str, bytes], out: Path) -> str:
    out.mkdir(parents=True, exist_ok=True)
    for name, body in files.items():
        (out / name).write_bytes(body)
    return str(out)


def _through_server(args: argparse.Namespace, progress) -> dict:
    from ecg_atlas.analysis.store_io import ANALYSIS_DIR, COHORTS
    from ecg_atlas.client import NO_DEADLINE

    with connect(args) as client:
        result = client.cluster(
            args.run, progress=progress, where=args.where or None, label_columns=args.labels,
            colour_by=args.colour_by, n_epochs=args.epochs or 0, min_cluster_size=args.min_cluster_size or 0,
            min_samples=args.min_samples or 0, n_neighbors=args.neighbors, pca_dims=args.pca,
            cluster_dims=args.cluster_dims, n_exemplars=args.exemplars, seed=args.seed,
            exemplar_grid=not args.no_ecg_grids, timeout=NO_DEADLINE)
    files = {f"{name}.png": png for name, png in result.figures.items()}
    files.update({"enrichment.csv": result.enrichment_csv.encode(),
                  "enrichment.md": result.enrichment_markdown.encode(),
                  "run.json": result.run_json.encode()})
    # The server wrote them beside its store: when that is the --store named here, that is where they are.
    in_store = Path(args.store) / ANALYSIS_DIR / COHORTS / args.run if args.store else None
    outputs = str(in_store) if in_store is not None and (in_store / "run.json").exists() else None
    return {"run": result.run, "n_ecgs": result.n_ecgs, "n_clusters": result.n_clusters, "noise": result.noise,
            "cluster_sizes": result.cluster_sizes, "columns": result.columns, "outputs": outputs,
            "files": sorted(files), "copied_to": _copy(files, args.out) if args.out else None,
            "enrichment_csv": result.enrichment_csv}


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
    files = sorted([p.name for p in done.figures.values()]
                   + ["enrichment.csv", "enrichment.md", "assignments.parquet", "run.json"])
    copied = _copy({name: (done.directory / name).read_bytes() for name in files}, args.out) if args.out else None
    return {**record, "n_clusters": r.n_clusters, "noise": int(sizes.get(-1, 0)),
            "cluster_sizes": {int(k): int(v) for k, v in sizes.items()}, "outputs": str(done.directory),
            "files": files, "copied_to": copied, "enrichment_csv": done.enrichment.to_csv()}
