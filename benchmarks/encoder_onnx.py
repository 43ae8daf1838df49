"""Probe: would ONNX Runtime make the opt-in fast CPU mode reach the encoder issue's ≥ 10 segments/s?

Not a project dependency (yet): needs ``pip install onnxruntime onnx`` in the venv. Exports the
full-size architecture (random weights: fine for timing) with the legacy TorchScript exporter,
quantises the MatMul/Gemm weights to int8 with ONNX Runtime's dynamic quantiser (per tensor and per
output channel; the positional conv's weight is computed from its weight norm at run time, so it
stays fp32), and times each beside this package's own fp32 and ``fast="int8"`` encoders in the same
run, 2 threads, with the cosine of every output to the fp32 embedding.

    python benchmarks/encoder_onnx.py [--batches 1 8 32] [--seconds 15]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import torch


def rate(fn, batch: int, seconds: float) -> float:
    fn()
    n, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        fn()
        n += batch
    return n / (time.perf_counter() - start)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--batches", type=int, nargs="+", default=[1, 8, 32])
    ap.add_argument("--seconds", type=float, default=15.0)
    args = ap.parse_args()
    import onnxruntime as ort
    from onnxruntime.quantization import QuantType, quantize_dynamic

    from ecg_atlas.embedder import random_encoder
    from ecg_atlas.embedder.model import pool

    torch.set_num_threads(2)
    fp32, int8 = random_encoder("base", seed=0), random_encoder("base", seed=0, fast="int8")

    class Pooled(torch.nn.Module):
        def __init__(self, model: torch.nn.Module):
            super().__init__()
            self.model = model

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return pool(self.model(x)["x"])

    tmp = Path(tempfile.mkdtemp())
    onnx_fp32 = tmp / "ecgfm_base.onnx"
    torch.onnx.export(Pooled(fp32.model).eval(), (torch.randn(8, 12, 2500),), onnx_fp32, dynamo=False,
                      input_names=["x"], output_names=["v"], dynamic_axes={"x": {0: "b"}, "v": {0: "b"}},
                      opset_version=17)
    models = {"ort fp32": onnx_fp32}
    for name, per_channel in (("ort int8 per-tensor", False), ("ort int8 per-channel", True)):
        models[name] = tmp / f"{name.replace(' ', '_')}.onnx"
        quantize_dynamic(onnx_fp32, models[name], weight_type=QuantType.QInt8, per_channel=per_channel,
                         op_types_to_quantize=["MatMul", "Gemm"])
    options = ort.SessionOptions()
    options.intra_op_num_threads, options.inter_op_num_threads = 2, 1
    sessions = {n: ort.InferenceSession(str(p), options, providers=["CPUExecutionProvider"]) for n, p in models.items()}
    print(f"onnxruntime {ort.__version__}, torch {torch.__version__}, 2 threads; segments/s (cosine to fp32, min)")
    for batch in args.batches:
        x = np.random.default_rng(batch).standard_normal((batch, 12, 2500)).astype(np.float32)
        ref = fp32.embed(x)
        base = rate(lambda x=x: fp32.embed(x), batch, args.seconds)
        int8_rate = rate(lambda x=x: int8.embed(x), batch, args.seconds)
        row = {"torch fp32": (base, 1.0), "torch int8": (int8_rate, None)}
        for name, session in sessions.items():
            out = session.run(None, {"x": x})[0]
            cos = float(((out * ref).sum(1) / np.linalg.norm(out, axis=1) / np.linalg.norm(ref, axis=1)).min())
            row[name] = (rate(lambda session=session, x=x: session.run(None, {"x": x}), batch, args.seconds), cos)
        print(f"batch {batch}: " + "; ".join(
            f"{n} {r:.2f} ({r / base:.2f}× torch fp32{'' if c is None else f', cos {c:.5f}'})"
            for n, (r, c) in row.items()))


if __name__ == "__main__":
    main()
