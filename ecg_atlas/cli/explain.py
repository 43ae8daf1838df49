"""`ecg-atlas explain ID|FILE --checkpoint CKPT --out file.png`: ECG-FM's attention saliency drawn over a lead.

ID is a stored ecg_id (with --store; its raw ECG is read from the stored source path) or an ECG
file. The figure is a 12-lead page with the chosen lead's rhythm strip coloured blue (low) → red
(high) saliency; --single-lead draws that lead alone.
"""

from __future__ import annotations

import argparse
from pathlib import Path


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("explain", help="draw ECG-FM attention saliency over a lead of an ECG", description=__doc__)
    p.add_argument("ecg", help="stored ecg_id (with --store) or an ECG file")
    p.add_argument("--out", required=True, type=Path, help="PNG file to write")
    p.add_argument("--checkpoint", required=True, help="ECG-FM checkpoint (the store's encoder, for a stored ECG)")
    p.add_argument("--store", default=None, help="store directory, to look a stored ecg_id up")
    p.add_argument("--lead", default="II", help="lead to colour (default II)")
    p.add_argument("--single-lead", action="store_true", help="draw only that lead, not the 12-lead page")
    p.add_argument("--device", default="auto")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ecg_atlas.analysis.tasks import explain_ecg
    from ecg_atlas.embedder import STANDARD_LEADS, read_ecg
    from ecg_atlas.embedder.encoder import encoder_from_spec
    from ecg_atlas.embedder.leads import canonical_lead_name
    from ecg_atlas.errors import AtlasError, EncoderMismatchError

    lead = canonical_lead_name(args.lead)
    if lead is None:
        raise AtlasError(f"--lead {args.lead!r} is not one of {', '.join(STANDARD_LEADS)}")
    encoder = encoder_from_spec(args.checkpoint, device=args.device)
    title = f"ECG-FM attention saliency — {args.ecg}"
    if args.store:
        from ecg_atlas.index import Store

        with Store.open(args.store, create=False, read_only=True, with_index=False) as store:
            identity = store.info().identity
            if identity is not None and identity.checkpoint_sha256 != encoder.checkpoint_sha256:
                raise EncoderMismatchError(f"--checkpoint is not this store's encoder ({identity.model_id})")
            source = store.get([args.ecg], columns=["source"])[0]["source"]
        if not source:
            raise AtlasError(f"ECG {args.ecg!r} has no stored source path; pass the ECG file instead")
        recording = read_ecg(source)
    else:
        recording = read_ecg(args.ecg)
    out = explain_ecg(encoder, recording, args.out, lead=lead, title=title, page=not args.single_lead)
    print(f"wrote {out}")
    return 0
