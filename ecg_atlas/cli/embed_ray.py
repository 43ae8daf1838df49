"""``ecg-atlas embed … --engine ray``: the command line around the Ray job (ecg_atlas/bulk/ray_job.py).

The job itself returns its summary and reports progress through a callback; this module turns the
arguments into its inputs and options, draws the progress bar and prints the summary.
"""

from __future__ import annotations

import json
import sys

from ecg_atlas.errors import AtlasError


def run_from_args(args) -> int:
    """``ecg-atlas embed … --engine ray``: `args` as ecg_atlas/cli/embed.py parses them."""
    from ecg_atlas.bulk.ray_job import JobOptions, inputs_from_manifest, inputs_from_paths, run_job, summary_dict
    from ecg_atlas.ingest.pseudonym import load_pseudonymiser

    if args.manifest is not None and args.paths:
        raise AtlasError("give ECG paths or --manifest, not both")
    if args.manifest is not None:
        inputs = inputs_from_manifest(args.manifest, path_column=args.path_column, id_column=args.id_column,
                                      patient_column=args.patient_column)
    elif args.paths:
        inputs = inputs_from_paths(args.paths)
    else:
        raise AtlasError("name ECG files or directories, or --manifest FILE")
    if args.out.suffix.lower() in {".parquet", ".npz"}:
        raise AtlasError(f"--engine ray writes a folder of shards; --out {args.out} names a file")
    if args.device not in ("auto", "cpu"):
        raise AtlasError("--engine ray places encoders itself: GPU actors where the cluster has GPUs "
                         "(--device auto), CPU actors with --device cpu")
    options = JobOptions(checkpoint=args.checkpoint, revision=args.revision, checkpoint_sha256=args.checkpoint_sha256,
                         dtype=None if args.dtype == "auto" else args.dtype, batch_size=args.batch_size,
                         concurrency=args.concurrency, cpus_per_actor=args.cpus_per_actor, shard_size=args.shard_size,
                         min_leads=args.min_leads, device=args.device,
                         pseudonymiser=load_pseudonymiser(args.patient_key_file))
    bar = _ProgressBar(enabled=not args.json)
    try:
        summary = run_job(inputs, args.out, options, address=args.address, progress=bar.update)
    finally:
        bar.close()
    if args.json:
        print(json.dumps(summary_dict(summary), indent=2))
    else:
        print(f"{summary.embedded} embedded, {summary.refused} refused into {summary.shards - summary.shards_skipped} "
              f"shards under {args.out} ({summary.shards_skipped} finished before) at {summary.ecgs_per_s} ECGs/s "
              f"on {summary.actors} {summary.actor_device} actor(s), {summary.dtype}")
        for reason, count in sorted(summary.refusal_reasons.items()):
            print(f"  refused {count}: {reason.replace('_', ' ')} (the shards hold each ECG's reason and message)")
    return 0


class _ProgressBar:
    """A tqdm bar on stderr (ECGs, and ECGs/s) fed by the job's ``progress(done, total)``
    callback; opened on its first call: only the job knows how many ECGs are left to embed."""

    def __init__(self, enabled: bool) -> None:
        self.enabled = enabled
        self.bar = None

    def update(self, done: int, total: int) -> None:
        if not self.enabled:
            return
        if self.bar is None:
            from tqdm import tqdm

            self.bar = tqdm(total=total, unit="ECG", desc="embedding (ray)", disable=None, file=sys.stderr)
        self.bar.update(done - self.bar.n)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
