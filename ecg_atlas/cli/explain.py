"""`ecg-atlas explain ID|FILE --out file.png`: an ECG-FM-architecture encoder's attention saliency
drawn over a lead.

ID is a stored ecg_id (with --store or --server): when a server holds the store the drawing comes
from its Explain RPC (the server's encoder, the store's copy of the signal); otherwise the store
is opened directly and its copy of the ECG's samples is read (never a path the store names).
FILE is an ECG file, explained with --checkpoint locally. The figure is a 12-lead page with the
chosen lead's rhythm strip coloured blue (low) → red (high) saliency; --single-lead draws that
lead alone.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from ecg_atlas.cli._client import add_client_args, connect, rpc_errors
from ecg_atlas.cli._store import access


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("explain", help="draw ECG-FM attention saliency over a lead of an ECG", description=__doc__)
    p.add_argument("ecg", help="stored ecg_id (with --store / --server) or an ECG file")
    p.add_argument("--out", required=True, type=Path, help="PNG file to write")
    p.add_argument("--checkpoint", default=None,
                   help="an ECG-FM-architecture encoder (ECG-FM .pt, bundled, hf:..., random:base|small|tiny) for "
                        "a file or a store opened directly (default: the store's encoder when it is the bundled "
                        "one, else bundled)")
    p.add_argument("--store", default=None, help="store directory, to explain a stored ecg_id")
    p.add_argument("--lead", default="II", help="lead to colour (default II)")
    p.add_argument("--single-lead", action="store_true", help="draw only that lead, not the 12-lead page")
    p.add_argument("--device", default="auto")
    add_client_args(p, store_verb=True)
    p.set_defaults(func=run)


@rpc_errors
def run(args: argparse.Namespace) -> int:
    from ecg_atlas.embedder import STANDARD_LEADS
    from ecg_atlas.embedder.leads import canonical_lead_name
    from ecg_atlas.errors import AtlasError

    lead = canonical_lead_name(args.lead)
    if lead is None:
        raise AtlasError(f"--lead {args.lead!r} is not one of {', '.join(STANDARD_LEADS)}")
    if (args.store or args.server) and access(args).via == "server":
        with connect(args) as client:
            done = client.explain(args.ecg, png=True, lead=lead, single_lead=args.single_lead)
        args.out.write_bytes(done.png)
        print(f"wrote {args.out} (through the server: {done.model_id})")
        return 0
    out = _explain_here(args, lead)
    print(f"wrote {out}")
    return 0


def _explain_here(args: argparse.Namespace, lead: str) -> Path:
    from ecg_atlas.analysis.tasks import explain_ecg
    from ecg_atlas.embedder import read_ecg
    from ecg_atlas.embedder.resolver import load_encoder
    from ecg_atlas.embedder.weights import BUNDLED_SPEC, release_for_sha256
    from ecg_atlas.errors import AtlasError, EncoderMismatchError

    recording, identity = None, None
    if args.store:
        from ecg_atlas.analysis.signals import SignalSource
        from ecg_atlas.index import Store

        with Store.open(args.store, create=False, read_only=True, with_index=False) as store:
            identity = store.info().identity
            recording = SignalSource(store).recording(args.ecg)
    else:
        recording = read_ecg(args.ecg)
    spec = args.checkpoint
    if spec is None:
        release = release_for_sha256(identity.checkpoint_sha256) if identity is not None else None
        if identity is not None and release is None:
            raise AtlasError(f"this store's vectors come from {identity.model_id}: pass it as --checkpoint")
        spec = release.spec if release is not None else BUNDLED_SPEC  # a bundled store: its own release
    encoder = load_encoder(spec, device=args.device)
    if identity is not None and identity.checkpoint_sha256 != encoder.checkpoint_sha256:
        raise EncoderMismatchError(f"--checkpoint is not this store's encoder ({identity.model_id})")
    if not hasattr(encoder, "saliency"):
        raise AtlasError(f"{encoder.contract.name} has no attention saliency: explain needs an "
                         f"ECG-FM-architecture encoder (an ECG-FM checkpoint, bundled, or random:base|small|tiny)")
    title = f"{encoder.contract.name} attention saliency — {args.ecg}"
    return explain_ecg(encoder, recording, args.out, lead=lead, title=title, page=not args.single_lead)
