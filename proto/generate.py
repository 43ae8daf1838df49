"""Compile proto/ecg_atlas/v1/*.proto into Python stubs (`make proto`; the drift test calls it too).

Compiled with ``-I proto`` so the generated modules import each other as ``ecg_atlas.v1.*``.
Usage: ``python proto/generate.py [OUT_DIR]`` (default: this folder, i.e. in place).
"""

from __future__ import annotations

import sys
from pathlib import Path

PROTO_ROOT = Path(__file__).resolve().parent


def proto_files() -> list[Path]:
    return sorted((PROTO_ROOT / "ecg_atlas" / "v1").glob("*.proto"))


def generate(out_dir: Path = PROTO_ROOT) -> list[Path]:
    """Write *_pb2.py, *_pb2.pyi and *_pb2_grpc.py for every proto under `out_dir`; return them."""
    import grpc_tools
    from grpc_tools import protoc

    out_dir = Path(out_dir)
    well_known = Path(grpc_tools.__file__).parent / "_proto"
    args = ["grpc_tools.protoc", f"-I{PROTO_ROOT}", f"-I{well_known}", f"--python_out={out_dir}",
            f"--pyi_out={out_dir}", f"--grpc_python_out={out_dir}"]
    args += [str(p.relative_to(PROTO_ROOT)) for p in proto_files()]
    if protoc.main(args) != 0:
        raise SystemExit("protoc failed (see the message above)")
    return sorted(p for p in (out_dir / "ecg_atlas" / "v1").iterdir() if "_pb2" in p.name)


if __name__ == "__main__":
    written = generate(Path(sys.argv[1]) if len(sys.argv) > 1 else PROTO_ROOT)
    print("\n".join(str(p) for p in written))
