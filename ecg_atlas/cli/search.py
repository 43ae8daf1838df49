"""`ecg-atlas search (--id ID | --ecg PATH) -k N [--where 'age>=60' ...] [--plot out.png]`.

Search by a stored ECG (--id) lists its k nearest *other* ECGs: the query itself, its own best
match, is left out (--include-self keeps it), as the quickstart and the web atlas do.

Filters name metadata columns (`ecg-atlas get ID` shows an ECG's): ``age>=60``, ``sex=F``,
``label_groups contains AF_AFL`` (a label-list column holds that label), ``labels_abbr contains
RBBB``, ``dataset in (cinc_ptbxl, cinc_cpsc2018)``, ``age is null``, combined with ``and`` /
``or`` / parentheses; several ``--where`` are ANDed. They are parsed here into a structured
filter: no SQL leaves this machine. Hits show age, sex and labels; SNOMED CT codes with their names.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from ecg_atlas.cli._client import add_client_args, connect, print_json, rpc_errors
from ecg_atlas.errors import AtlasError


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("search", help="find the stored ECGs most similar to one", description=__doc__,
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    query = p.add_mutually_exclusive_group(required=True)
    query.add_argument("--id", dest="ecg_id", help="a stored ECG's id")
    query.add_argument("--ecg", type=Path, help="an ECG file (embedded by the server, not stored)")
    p.add_argument("-k", type=int, default=5, help="number of neighbours (default 5)")
    p.add_argument("--where", action="append", default=[], help="filter, e.g. 'age>=60' (repeatable)")
    p.add_argument("--exclude-same-patient", action="store_true",
                   help="leave out ECGs of the query's patient (with --ecg, name that patient with --patient-id)")
    p.add_argument("--patient-id", default=None,
                   help="with --ecg: the query ECG's patient id as the store holds it (what --exclude-same-patient "
                        "excludes)")
    self_group = p.add_mutually_exclusive_group()
    self_group.add_argument("--include-self", dest="include_self", action="store_true",
                            help="with --id: list the query ECG itself too (its own best match, cosine 1)")
    self_group.add_argument("--exclude-self", dest="include_self", action="store_false",
                            help="with --id: leave the query ECG out (the default; kept for scripts)")
    p.set_defaults(include_self=False)
    p.add_argument("--plot", type=Path, default=None, help="write the query and its neighbours as a PNG")
    add_client_args(p)
    p.set_defaults(func=run)


def stored_signal(client, ecg_id: str):
    """A stored ECG's samples from the server (its GetSignal RPC), or None when it has none."""
    import grpc

    try:
        return client.get_signal(ecg_id)
    except (grpc.RpcError, AtlasError):
        return None


def plot_result(client, query_title: str, query_recording, query_meta: dict, hits, out: Path,
                query_id: str | None = None) -> tuple[Path, list[str]]:
    """The query and its neighbours, each drawn from the signal the server keeps. A stored query
    is left out of its own neighbour panels (it is its own best match). Returns the PNG and the
    ids of the neighbours drawn."""
    from ecg_atlas.analysis.ecg_paper import Panel, describe, plot_neighbours

    def panel(title, recording, meta, highlight=False):
        if recording is None:
            return Panel(title, describe(meta), highlight=highlight)
        return Panel(title, describe(meta), recording.signal, recording.fs, list(recording.lead_names), highlight)

    panels = [panel(query_title, query_recording, query_meta, highlight=True)]
    neighbours = [hit for hit in hits if hit.ecg_id != query_id]
    for rank, hit in enumerate(neighbours, 1):
        panels.append(panel(f"#{rank}  {hit.ecg_id}   cosine {hit.score:.3f}", stored_signal(client, hit.ecg_id),
                            hit.metadata))
    return plot_neighbours(panels, out), [hit.ecg_id for hit in neighbours]


@rpc_errors
def run(args: argparse.Namespace) -> int:
    from ecg_atlas.embedder.readers import read_ecg

    recording = None
    if args.ecg is not None and args.exclude_same_patient and not args.patient_id:
        raise AtlasError("--exclude-same-patient with --ecg needs --patient-id: a file's own patient id is not the "
                         "store's (the store keeps only pseudonyms), so say which stored patient to leave out")
    with connect(args) as client:
        if args.ecg is not None:
            recording = read_ecg(args.ecg)
            result = client.search(signal=recording.signal, fs=recording.fs, lead_names=recording.lead_names,
                                   k=args.k, where=args.where or None, patient_id=args.patient_id,
                                   exclude_same_patient=args.exclude_same_patient)
            query_meta, query_title = recording.metadata, f"QUERY  {args.ecg.name}"
        else:
            result = client.search(ecg_id=args.ecg_id, k=args.k, where=args.where or None,
                                   exclude_same_patient=args.exclude_same_patient,
                                   exclude_self=not args.include_self)
            found, _ = client.get([args.ecg_id])
            query_meta = found[0].metadata if found else {}
            query_title = f"QUERY  {args.ecg_id}"
            if args.plot:
                recording = stored_signal(client, args.ecg_id)
        hits = result.hits
        plotted, drawn = (plot_result(client, query_title, recording, query_meta, hits, args.plot,
                                      query_id=args.ecg_id) if args.plot else (None, []))
    if args.json:
        print_json({
            "query": args.ecg_id or str(args.ecg), "k": args.k, "where": args.where,
            "hits": [{"ecg_id": h.ecg_id, "score": h.score, "patient_id": h.patient_id,
                      "metadata": _public(h.metadata)} for h in hits],
            "timing_ms": result.timing, "plot": str(plotted) if plotted else None, "plotted_neighbours": drawn})
        return 0
    if not hits:
        print("no stored ECG matches" + (f" the filter {' and '.join(args.where)}" if args.where else ""))
    for rank, h in enumerate(hits, 1):
        print(f"{rank:>3}. {h.score:7.4f}  {h.ecg_id:<32} {describe_named(h.metadata)}")
    print(f"({result.timing['total_ms']:.1f} ms on the server)")
    if plotted:
        print(f"plot: {plotted}")
    return 0


def describe_named(metadata: dict) -> str:
    """A hit's age · sex · labels, SNOMED CT codes (when those are its only labels) with their names."""
    from ecg_atlas.analysis.ecg_paper import describe
    from ecg_atlas.labels import display_value

    return describe({k: display_value(k, v) for k, v in metadata.items()})


def _public(metadata: dict) -> dict:
    """Metadata without the store's bookkeeping fields, for printing."""
    hidden = {"checkpoint_sha256", "model_id", "preprocessing_version", "lead_names", "ingested_at", "patient_id"}
    return {k: v for k, v in metadata.items() if k not in hidden}
