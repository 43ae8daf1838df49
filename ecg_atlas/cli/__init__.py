"""ECG Atlas: turn 12-lead ECGs into vectors with a pretrained encoder, keep them in a searchable
store, and ask questions of them (similar ECGs, linear probes, cohorts) from this command line, a
gRPC service or a web atlas. New here: `ecg-atlas quickstart`, then the README's Tour
(`ecg-atlas serve --store DIR` in the background, then the client verbs below). Each command has
its own --help."""

# The docstring above is the top of `ecg-atlas --help`: written for users, not for developers.

from __future__ import annotations

import argparse
import importlib
import logging
import sys

# Each module defines register(subparsers) -> None and sets `func` on its parser.
COMMAND_MODULES = ("embed", "pretrain", "serve", "ingest", "search", "get", "delete", "info", "export", "quickstart",
                   "probe", "cluster", "explain", "web", "bulk_import", "finetune")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="ecg-atlas", description=__doc__)
    parser.add_argument("-v", "--verbose", action="count", default=0, help="more logging (-vv: DEBUG)")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name in COMMAND_MODULES:
        importlib.import_module(f"{__name__}.{name}").register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    level = logging.WARNING - 10 * min(args.verbose, 2)
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    from ecg_atlas.errors import AtlasError

    try:
        return int(args.func(args) or 0)
    except AtlasError as exc:
        print(f"ecg-atlas {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
