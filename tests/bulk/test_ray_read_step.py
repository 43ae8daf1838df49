"""The Ray job is library code (issue 25): its read step, which runs in every Ray task, imports
nothing of the CLI."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest


@pytest.mark.slow  # imports Ray in a fresh interpreter
def test_the_read_step_imports_no_cli_module(ecg_dir, tiny_checkpoint):
    code = textwrap.dedent(f"""
        import sys
        import numpy as np
        from ecg_atlas.bulk.ray_job import read_and_prepare
        from ecg_atlas.embedder.resolver import load_encoder

        batch = {{"position": np.arange(1), "ecg_id": np.array(["A0001"], object),
                  "path": np.array([{str(ecg_dir / "cinc_cpsc2018" / "A0001.hea")!r}], object),
                  "row": np.array([-1])}}
        prepare = load_encoder({str(tiny_checkpoint)!r}, device="cpu").preprocessing
        out = read_and_prepare(batch, prepare=prepare, min_leads=None)
        assert out["reason"][0] == "" and out["windows"][0].shape[1:] == (12, 2500), out["message"][0]
        print(sorted(m for m in sys.modules if m.startswith("ecg_atlas.cli")))
    """)
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr[-2000:]
    assert run.stdout.strip() == "[]"
