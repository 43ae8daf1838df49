"""Which torch build `make` installs, chosen from what `nvidia-smi` says the driver runs.

Standard library only: the Makefile runs it with the system Python before the virtual environment
holds anything, and again (``check``) with the environment's Python once torch is in.

A torch CUDA wheel carries its own CUDA runtime; the driver must run that runtime. ``nvidia-smi``
prints the newest CUDA version the driver supports ("CUDA Version: 12.2" on R535). The rule:

* driver CUDA 13.x → the newest CUDA 13 build we know (``cu130``);
* driver CUDA 12.x → the newest CUDA 12 build not newer than the driver (R570, 12.8 → ``cu128``),
  or, for drivers older than every CUDA 12 build (R535 12.2, R550 12.4), the oldest CUDA 12 build
  (``cu126``): CUDA 12 runtimes run on any R525+ driver under CUDA's minor-version compatibility;
* older drivers, or no NVIDIA driver → the CPU build (``TORCH_SPEC`` as given, ``TORCH_PIP_ARGS``
  for its index), with a note saying why when a GPU is present.

``TORCH_CUDA=cu126`` (any tag) overrides the choice; ``TORCH_CUDA=cpu`` forces the CPU build;
``TORCH_PIP_ARGS`` (e.g. a mirror's ``--index-url``) replaces the index this script would use.

    python tools/setup_torch.py pip-args --spec torch==2.13.0 [--cuda TAG] [--pip-args ARGS]
    python tools/setup_torch.py check      # fails when a GPU is present and torch cannot see it
"""

from __future__ import annotations

import argparse
import re
import shlex
import subprocess
import sys
from dataclasses import dataclass

#: torch CUDA builds this chooses from, with the CUDA version each needs the driver to run.
CUDA_BUILDS = (("cu126", (12, 6)), ("cu128", (12, 8)), ("cu130", (13, 0)))
WHEEL_INDEX = "https://download.pytorch.org/whl/{tag}"
#: CUDA 12 runtimes run on drivers from R525 on (CUDA minor-version compatibility).
MINOR_COMPAT_MIN_DRIVER = {12: 525, 13: 580}


@dataclass(frozen=True)
class Driver:
    version: str  # "535.216.03"
    cuda: tuple[int, int]  # the newest CUDA the driver runs, e.g. (12, 2)
    gpus: int

    @property
    def major(self) -> int:
        return int(self.version.split(".")[0])


def parse_nvidia_smi(text: str) -> Driver | None:
    """The driver `nvidia-smi`'s default table describes, or None when it found no driver/GPU."""
    driver = re.search(r"Driver Version:\s*([0-9][0-9.]*)", text)
    cuda = re.search(r"CUDA Version:\s*([0-9]+)\.([0-9]+)", text)
    if not driver or not cuda:
        return None
    gpus = len(re.findall(r"^\|\s+\d+\s+\S.*\|\s+[0-9A-Fa-f]{8}:[0-9A-Fa-f]{2}:", text, flags=re.M))
    if gpus == 0:
        return None
    return Driver(driver.group(1), (int(cuda.group(1)), int(cuda.group(2))), gpus)


def choose_build(driver: Driver | None, override: str = "") -> tuple[str, str]:
    """(tag, reason): tag is a CUDA build such as "cu128", or "cpu"."""
    override = override.strip()
    if override:
        if override != "cpu" and not re.fullmatch(r"cu\d{3,}", override):
            raise ValueError(f"TORCH_CUDA must be 'cpu' or a torch CUDA tag such as cu126, got {override!r}")
        return override, f"TORCH_CUDA={override}"
    if driver is None:
        return "cpu", "no NVIDIA driver or GPU found (nvidia-smi)"
    same_major = [(tag, need) for tag, need in CUDA_BUILDS if need[0] == driver.cuda[0]]
    if not same_major or driver.major < MINOR_COMPAT_MIN_DRIVER.get(driver.cuda[0], 10**6):
        return "cpu", (f"driver {driver.version} (CUDA {driver.cuda[0]}.{driver.cuda[1]}) runs none of the "
                       f"torch CUDA builds {', '.join(t for t, _ in CUDA_BUILDS)}: upgrade the driver to R535 "
                       "or newer, or pass TORCH_CUDA=<tag>")
    fitting = [tag for tag, need in same_major if need <= driver.cuda]
    if fitting:
        return fitting[-1], f"driver {driver.version} runs CUDA {driver.cuda[0]}.{driver.cuda[1]}"
    return same_major[0][0], (f"driver {driver.version} runs CUDA {driver.cuda[0]}.{driver.cuda[1]}; "
                              f"{same_major[0][0]} runs on it by CUDA minor-version compatibility")


def pip_args(tag: str, spec: str, user_args: str = "") -> list[str]:
    """Arguments for `pip install` that get `spec` as build `tag`."""
    index = shlex.split(user_args) if user_args.strip() else (
        [] if tag == "cpu" else ["--index-url", WHEEL_INDEX.format(tag=tag)])
    return [*index, spec]


def run_nvidia_smi() -> str:
    try:
        done = subprocess.run(["nvidia-smi"], capture_output=True, text=True, timeout=60)
    except (OSError, subprocess.TimeoutExpired):
        return ""
    return done.stdout if done.returncode == 0 else ""


def check_torch_sees_gpu(driver: Driver | None) -> str | None:
    """None when fine, else what is wrong: a GPU is present and the installed torch cannot use it."""
    import torch  # the environment's torch (run with its Python)

    if driver is None:
        return None
    if not torch.cuda.is_available():
        return (f"nvidia-smi shows {driver.gpus} GPU(s) (driver {driver.version}, CUDA "
                f"{driver.cuda[0]}.{driver.cuda[1]}) but torch {torch.__version__} (CUDA build "
                f"{torch.version.cuda or 'none: a CPU build'}) cannot use them, so the service would run on "
                "the CPU. Reinstall with a build the driver runs: rm -rf .venv && make setup TORCH_CUDA=cu126 "
                "(or TORCH_PIP_ARGS='--index-url <mirror>'), or upgrade the driver")
    return None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("pip-args", help="print the pip install arguments for torch on this machine")
    p.add_argument("--spec", default="torch")
    p.add_argument("--cuda", default="", help="override: a torch CUDA tag (cu126, cu128, cu130) or cpu")
    p.add_argument("--pip-args", default="", help="index arguments that replace the chosen index")
    sub.add_parser("check", help="exit 1 when a GPU is present and the installed torch cannot see it")
    args = parser.parse_args(argv)
    driver = parse_nvidia_smi(run_nvidia_smi())
    if args.command == "check":
        problem = check_torch_sees_gpu(driver)
        if problem:
            print(f"\n*** torch set-up FAILED: {problem}\n", file=sys.stderr)
            return 1
        return 0
    try:
        tag, reason = choose_build(driver, args.cuda)
    except ValueError as exc:
        print(f"setup_torch: {exc}", file=sys.stderr)
        return 2
    print(f"torch build: {tag} ({reason})", file=sys.stderr)
    print(shlex.join(pip_args(tag, args.spec, args.pip_args)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
