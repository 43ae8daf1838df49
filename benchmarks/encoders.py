"""Every encoder at its released size (random weights), beside its architecture in a reference library.

    python benchmarks/encoders.py                       # all encoders, CPU fp32 and fast modes
    python benchmarks/encoders.py --only hubert-ecg-small --records 6

For each encoder, in one process on the same ECGs:

* **segments/s**: ``embed`` on batches of ``--batch`` model-ready windows (8: the CPU service's
  batch), best of ``--rounds`` rounds in which ours, the reference and the fast mode alternate
  (the best round is the one least disturbed by other work on a shared machine);
* **ms per ECG**: a real 10-s 12-lead ECG (already read from disk) through the encoder's own
  preprocessing and ``embed`` of its windows: per ECG the best of the rounds, then the mean over
  ``--records`` ECGs;
* the **reference**: the same architecture in its reference library — transformers' ``HubertModel``
  for HuBERT-ECG, transformers' ``Wav2Vec2Model`` of ECG-FM's shape for ECG-FM (same layers,
  widths, positional conv and token count; its first conv reads one channel where ECG-FM's reads
  12: < 0.1 % of the FLOPs). Neither library preprocesses ECGs, so its ms per ECG uses our
  preprocessing. ECGFounder's only implementation is its authors' repository code (not a library,
  not vendored here): no reference column;
* **fast**: the opt-in CPU modes where they apply (``int8``: dynamic int8 linear layers), with the
  cosine of their embeddings to fp32 on the same ECGs.

Random weights: speed does not depend on the values. Ratios are ours / reference (≥ 1.0 = ours faster).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parent.parent
SHARED = Path(os.environ.get("ECG_ATLAS_SHARED_DATA", REPO.parent / "shared" / "data"))
ENCODERS = ("ecg-fm", "hubert-ecg-small", "hubert-ecg-base", "hubert-ecg-large", "ecgfounder")
RANDOM_SPEC = {"ecg-fm": "random:base", "hubert-ecg-small": "random:hubert-ecg-small",
               "hubert-ecg-base": "random:hubert-ecg-base", "hubert-ecg-large": "random:hubert-ecg-large",
               "ecgfounder": "random:ecgfounder"}


def real_records(n: int):
    """``n`` real 10-s 500-Hz 12-lead ECGs (PTB-XL records of the Challenge set)."""
    from ecg_atlas.embedder import read_ecg

    paths = sorted((SHARED / "ecg" / "cinc_ptbxl").glob("*.hea"))[:n]
    return [read_ecg(p) for p in paths]


def reference_model(name: str, encoder):
    """(callable windows → vectors, description) in the architecture's reference library, or None."""
    import transformers

    if name.startswith("hubert-ecg"):
        model = transformers.HubertModel(encoder.model.config).eval()

        def run(x: torch.Tensor) -> torch.Tensor:
            return model(input_values=x.reshape(x.shape[0], -1)).last_hidden_state.mean(1)

        return run, f"transformers {transformers.__version__} HubertModel"
    if name == "ecg-fm":
        cfg = encoder.config
        w2v = transformers.Wav2Vec2Config(
            conv_dim=[c for c, _, _ in cfg.conv_layers], conv_kernel=[k for _, k, _ in cfg.conv_layers],
            conv_stride=[s for _, _, s in cfg.conv_layers], conv_bias=cfg.conv_bias, feat_extract_norm="group",
            hidden_size=cfg.embed_dim, num_hidden_layers=cfg.encoder_layers, num_attention_heads=cfg.heads,
            intermediate_size=cfg.ffn_dim, num_conv_pos_embeddings=cfg.conv_pos,
            num_conv_pos_embedding_groups=cfg.conv_pos_groups, do_stable_layer_norm=False,
            mask_time_prob=0.0, layerdrop=0.0)
        model = transformers.Wav2Vec2Model(w2v).eval()

        def run(x: torch.Tensor) -> torch.Tensor:
            # one channel of 2500 samples per window: the same 156 tokens through the same stack
            return model(input_values=x[:, 0]).last_hidden_state.mean(1)

        return run, f"transformers {transformers.__version__} Wav2Vec2Model (ECG-FM's shape)"
    return None, "none (ECGFounder exists only as its authors' repository code)"


def _timed(fn, reps: int = 1) -> float:
    started = time.perf_counter()
    for _ in range(reps):
        fn()
    return (time.perf_counter() - started) / reps


def measure(name: str, records, batch: int, rounds: int) -> dict:
    """Ours, the reference and the fast mode, timed in alternation (the machine is shared)."""
    from ecg_atlas.embedder import load_encoder

    torch.manual_seed(0)
    ours = load_encoder(RANDOM_SPEC[name])
    pool = np.concatenate([ours.preprocess(rec) for rec in records])
    x = np.ascontiguousarray(np.resize(pool, (batch, *pool.shape[1:])))
    reference, ref_name = reference_model(name, ours)
    runners = {"ours": ours.embed}
    if reference:
        def ref_embed(windows):
            with torch.inference_mode():
                return reference(torch.from_numpy(np.ascontiguousarray(windows, dtype=np.float32))).numpy()

        runners["ref"] = ref_embed
    if "int8" in ours.fast_modes:
        runners["int8"] = load_encoder(RANDOM_SPEC[name], fast="int8").embed
    batch_s: dict[str, list[float]] = {k: [] for k in runners}
    ecg_s: dict[str, list[list[float]]] = {k: [[] for _ in records] for k in runners}
    for run in runners.values():
        run(x)  # warm-up
    for _ in range(rounds):
        for key, run in runners.items():
            batch_s[key].append(_timed(lambda run=run: run(x)))
            for i, rec in enumerate(records):  # the encoder's own preprocessing included; reading is not
                ecg_s[key][i].append(_timed(lambda run=run, rec=rec: run(ours.preprocess(rec))))
    result = {"encoder": name, "spec": RANDOM_SPEC[name], "model_id": ours.model_id, "dim": ours.dim,
              "parameters": sum(p.numel() for p in ours.model.parameters()),
              "window": list(x.shape[1:]), "batch": batch, "reference": ref_name}
    for key in runners:
        prefix = "" if key == "ours" else f"{key}_"
        result[f"{prefix}segments_per_s"] = round(batch / min(batch_s[key]), 2)
        result[f"{prefix}ms_per_ecg"] = round(1000 * statistics.mean(min(t) for t in ecg_s[key]), 1)
    if reference:
        result["ratio_segments_per_s"] = round(result["segments_per_s"] / result["ref_segments_per_s"], 3)
        result["ratio_ms_per_ecg"] = round(result["ref_ms_per_ecg"] / result["ms_per_ecg"], 3)
    if "int8" in runners:
        if reference:
            result["int8_ratio_segments_per_s"] = round(result["int8_segments_per_s"] / result["ref_segments_per_s"], 3)
        a, b = ours.embed(pool), runners["int8"](pool)
        cos = (a * b).sum(1) / np.linalg.norm(a, axis=1) / np.linalg.norm(b, axis=1)
        result["int8_min_cosine_to_fp32"] = round(float(cos.min()), 5)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--only", nargs="*", choices=ENCODERS, default=list(ENCODERS))
    parser.add_argument("--records", type=int, default=8, help="real 10-s ECGs for ms per ECG")
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--json", type=Path, default=None, help="also write the results here")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    records = real_records(args.records)
    started = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    print(f"{started}, torch {torch.__version__}, {args.threads} threads, batch {args.batch}, "
          f"{len(records)} ECGs of 10 s")
    results = []
    for name in args.only:
        res = measure(name, records, args.batch, args.rounds)
        results.append(res)
        print(json.dumps(res))
    print("\n| encoder | params | segments/s ours | reference | ratio | ms/ECG ours | ms/ECG ref | ratio "
          "| int8 segments/s (× ref) | int8 cosine |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |")
    for r in results:
        print(f"| {r['encoder']} | {r['parameters'] / 1e6:.1f} M | {r['segments_per_s']} "
              f"| {r.get('ref_segments_per_s', '—')} | {r.get('ratio_segments_per_s', '—')} "
              f"| {r['ms_per_ecg']} | {r.get('ref_ms_per_ecg', '—')} | {r.get('ratio_ms_per_ecg', '—')} "
              f"| {r.get('int8_segments_per_s', '—')} ({r.get('int8_ratio_segments_per_s', '—')}) "
              f"| {r.get('int8_min_cosine_to_fp32', '—')} |")
    if args.json:
        args.json.write_text(json.dumps({"started": started, "results": results}, indent=1))


if __name__ == "__main__":
    main()
