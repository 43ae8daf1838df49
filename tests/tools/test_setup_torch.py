"""`make`'s torch build choice (tools/setup_torch.py), on `nvidia-smi` outputs recorded from real drivers."""

from __future__ import annotations

import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

from tools import setup_torch
from tools.setup_torch import Driver, choose_build, parse_nvidia_smi, pip_args

REPO = Path(__file__).resolve().parents[2]
RECORDED = Path(__file__).parent / "nvidia_smi"


def recorded(name: str) -> Driver | None:
    return parse_nvidia_smi((RECORDED / name).read_text())


@pytest.mark.parametrize("name, version, cuda, gpus, tag", [
    ("r535_h100.txt", "535.216.03", (12, 2), 1, "cu126"),  # older than every CUDA 12 build: minor-version compat
    ("r550_a100.txt", "550.127.05", (12, 4), 2, "cu126"),
    ("r570_h200.txt", "570.172.08", (12, 8), 1, "cu128"),
    ("r580_h100.txt", "580.95.05", (13, 0), 1, "cu130"),
])
def test_each_driver_gets_a_build_it_runs(name, version, cuda, gpus, tag):
    driver = recorded(name)
    assert driver == Driver(version, cuda, gpus)
    chosen, reason = choose_build(driver)
    assert chosen == tag and driver.version in reason
    # never a CUDA 13 build on an R5xx < 580 driver: the failure this set-up exists to prevent
    if driver.major < 580:
        assert not chosen.startswith("cu13")


def test_no_driver_or_no_nvidia_smi_gets_the_cpu_build():
    assert recorded("no_driver.txt") is None
    assert parse_nvidia_smi("") is None  # nvidia-smi missing: run_nvidia_smi gives ""
    assert choose_build(None)[0] == "cpu"
    assert pip_args("cpu", "torch==2.13.0") == ["torch==2.13.0"]


def test_a_driver_too_old_for_any_build_falls_back_to_the_cpu_with_the_reason():
    old = Driver("470.256.02", (11, 4), 1)
    tag, reason = choose_build(old)
    assert tag == "cpu" and "upgrade the driver" in reason


def test_overrides_and_index_arguments():
    driver = recorded("r580_h100.txt")
    assert choose_build(driver, "cu126")[0] == "cu126"  # TORCH_CUDA wins over the driver
    assert choose_build(driver, "cpu")[0] == "cpu"
    with pytest.raises(ValueError, match="TORCH_CUDA"):
        choose_build(driver, "cuda12")
    assert pip_args("cu128", "torch==2.13.0") == [
        "--index-url", "https://download.pytorch.org/whl/cu128", "torch==2.13.0"]
    mirror = "--index-url https://mirror.example/whl/cu128 --trusted-host mirror.example"
    assert pip_args("cu128", "torch==2.13.0", mirror) == [*shlex.split(mirror), "torch==2.13.0"]


def test_cli_prints_shell_words_for_pip(monkeypatch, capsys):
    monkeypatch.setattr(setup_torch, "run_nvidia_smi", lambda: (RECORDED / "r570_h200.txt").read_text())
    assert setup_torch.main(["pip-args", "--spec", "torch>=2.3,<3"]) == 0
    out = capsys.readouterr()
    assert shlex.split(out.out) == ["--index-url", "https://download.pytorch.org/whl/cu128", "torch>=2.3,<3"]
    assert "cu128" in out.err and "570.172.08" in out.err
    assert setup_torch.main(["pip-args", "--cuda", "bogus"]) == 2


def test_check_fails_loudly_when_a_gpu_is_present_and_torch_cannot_see_it(monkeypatch, capsys):
    import torch

    monkeypatch.setattr(setup_torch, "run_nvidia_smi", lambda: (RECORDED / "r535_h100.txt").read_text())
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert setup_torch.main(["check"]) == 1
    assert "FAILED" in capsys.readouterr().err
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert setup_torch.main(["check"]) == 0
    monkeypatch.setattr(setup_torch, "run_nvidia_smi", lambda: "")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert setup_torch.main(["check"]) == 0  # no GPU: the CPU build is right


def test_the_makefile_runs_the_script_with_the_standard_library_alone():
    """The Makefile names the script by path and runs it with the system Python before the virtual
    environment holds anything: every script it names exists, and this one answers without site-packages."""
    makefile = (REPO / "Makefile").read_text()
    named = set(re.findall(r"[\w./-]+\.py\b", makefile))
    assert "tools/setup_torch.py" in named
    assert [path for path in sorted(named) if not (REPO / path).is_file()] == []
    done = subprocess.run([sys.executable, "-S", "-I", str(REPO / "tools" / "setup_torch.py"), "pip-args",
                           "--cuda", "cpu", "--spec", "torch==2.13.0"], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert shlex.split(done.stdout) == ["torch==2.13.0"] and "cpu" in done.stderr
