"""The README is a front door a newcomer can follow to the letter (issue 28).

The Tour's ```bash blocks run exactly as written, in order, in one bash process, from the repository
root with the repository's .venv (what `make quickstart` leaves behind), and each step is checked
by what it prints or writes. The harness adds only `set -e -o pipefail`, a marker line between
blocks, and a TMPDIR inside the test's tmp_path (the Tour's `mktemp -d` lands there). Afterwards
nothing the Tour started may still run. The README's Python blocks run too, and every relative link
in the README and docs/ must name a file that exists.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.conftest import REPO_ROOT

README = REPO_ROOT / "README.md"
MARKER = "@@@ tour step"
#: a cap against a hang, not a timing assertion: the Tour takes 2-4 minutes on a 2-core CPU (8 on a busy one)
TOUR_CAP_S = 1500


def section(text: str, title: str) -> str:
    """The body of the `## title` section of a Markdown text."""
    after = text.split(f"\n## {title}\n", 1)
    assert len(after) == 2, f"README has no '## {title}' section"
    return after[1].split("\n## ", 1)[0]


def fenced(text: str, language: str) -> list[str]:
    return re.findall(rf"^```{language}\n(.*?)^```", text, flags=re.S | re.M)


def tour_blocks() -> list[str]:
    return fenced(section(README.read_text(), "Tour"), "bash")


def test_readme_is_a_front_door():
    text = README.read_text()
    assert len(text.splitlines()) <= 250
    top = text.split("\n# ", 1)[0]  # the two commands come first, as they always did
    assert "make quickstart" in top and "make test" in top
    tour = section(text, "Tour")
    assert len(tour_blocks()) == 8, "one block per step: server, ingest, search, probe, cluster, export, web, stop"
    assert "ecg-atlas finetune" in tour and "docs/training.md" in tour
    assert "mimic_iv_ecg_physionet_pretrained.pt" not in tour  # the Tour runs the bundled encoder


def _links(path: Path) -> list[tuple[str, Path]]:
    out = []
    for target in re.findall(r"\]\(([^)\s]+)\)", path.read_text()):
        if re.match(r"[a-z]+:", target) or target.startswith("#"):
            continue
        out.append((target, (path.parent / target.split("#", 1)[0]).resolve()))
    return out


def test_every_relative_link_in_readme_and_docs_resolves():
    pages = [README, *sorted((REPO_ROOT / "docs").glob("*.md"))]
    missing = [f"{page.relative_to(REPO_ROOT)} -> {target}" for page in pages for target, file in _links(page)
               if not file.exists()]
    assert missing == []


@pytest.mark.slow
def test_readme_python_blocks_run():
    """The README's Python (and docs/encoders.md's) runs as written from the repository root, with the
    bundled encoder or random weights: nothing to download. One process, each block in a fresh namespace."""
    blocks = fenced(README.read_text(), "python") + fenced((REPO_ROOT / "docs" / "encoders.md").read_text(), "python")
    assert len(blocks) >= 3
    driver = ("import json, sys\n"
              "for i, code in enumerate(json.loads(sys.stdin.read())):\n"
              "    print(f'block {i}', flush=True)\n"
              "    exec(compile(code, f'<python block {i}>', 'exec'), {'__name__': '__main__'})\n")
    done = subprocess.run([sys.executable, "-c", driver], input=json.dumps(blocks), cwd=REPO_ROOT,
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, f"{done.stdout[-500:]}\n{done.stderr[-3000:]}"
    ran = [line for line in done.stdout.splitlines() if line.startswith("block ")]
    assert ran == [f"block {i}" for i in range(len(blocks))]


def _tour_processes(tmpdir: Path) -> list[int]:
    """Live processes the Tour started: every one inherits TMPDIR=`tmpdir` from the harness."""
    mark = f"TMPDIR={tmpdir}".encode()
    pids = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit() or int(proc.name) == os.getpid():
            continue
        try:
            environ = (proc / "environ").read_bytes().split(b"\0")
            state = (proc / "stat").read_text().rsplit(")", 1)[1].split()[0]
        except OSError:  # gone meanwhile, or another user's
            continue
        if mark in environ and state != "Z":
            pids.append(int(proc.name))
    return pids


def _wait_gone(tmpdir: Path, within_s: float) -> list[int]:
    deadline = time.monotonic() + within_s
    while (left := _tour_processes(tmpdir)) and time.monotonic() < deadline:
        time.sleep(0.5)
    return left


def _steps(output: str) -> dict[int, str]:
    parts = re.split(rf"^{MARKER} (\d+)$", output, flags=re.M)
    return {int(parts[i]): parts[i + 1] for i in range(1, len(parts) - 1, 2)}


def _hits(text: str) -> list[tuple[float, str, str]]:
    """(score, id, the rest) of each search hit line: '  1.  0.9080  cinc_ningbo/JS45543  age 43 · M ...'."""
    return [(float(score), ecg_id, rest)
            for score, ecg_id, rest in re.findall(r"^\s+\d+\.\s+(-?\d\.\d{4})\s+(\S+)(.*)$", text, flags=re.M)]


@pytest.mark.slow
def test_the_tour_runs_as_written(tmp_path, shared_data):
    if shared_data.resolve() != (REPO_ROOT.parent / "shared" / "data").resolve():
        pytest.fail("the Tour reads ../shared/data as written: link the shared data folder there")
    venv_cli = REPO_ROOT / ".venv" / "bin" / "ecg-atlas"
    if not venv_cli.exists():
        pytest.fail(f"the Tour runs {venv_cli.relative_to(REPO_ROOT)}, which `make quickstart` (or `make setup`) "
                    "creates; it is missing")
    blocks = tour_blocks()
    # a marker line before each block (on a line of its own, whatever the previous block printed last)
    script = "set -e -o pipefail\n" + "".join(f"printf '\\n{MARKER} {i}\\n'\n{block}"
                                                for i, block in enumerate(blocks, 1))
    env = {k: v for k, v in os.environ.items() if not k.startswith("ECG_ATLAS_")}
    env["TMPDIR"] = str(tmp_path)
    started = time.monotonic()
    proc = subprocess.Popen(["bash", "-c", script], cwd=REPO_ROOT, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, start_new_session=True)
    try:
        output, _ = proc.communicate(timeout=TOUR_CAP_S)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        output, _ = proc.communicate()
        pytest.fail(f"the Tour did not finish within {TOUR_CAP_S} s:\n{output[-6000:]}")
    finally:
        leftover = _wait_gone(tmp_path, within_s=60 if proc.returncode == 0 else 0)
        for pid in leftover:  # the Tour's own server or web process (found by its TMPDIR): ours to end
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
    elapsed = time.monotonic() - started
    sys.stderr.write(f"\nthe README's Tour ran in {elapsed:.0f} s\n")
    assert proc.returncode == 0, f"the Tour failed (exit {proc.returncode}):\n{output[-8000:]}"
    assert leftover == [], f"still running after the Tour's last step: {leftover}"

    steps = _steps(output)
    assert sorted(steps) == list(range(1, len(blocks) + 1)), output[-4000:]
    tours = [p for p in tmp_path.iterdir() if (p / "serve.log").exists()]
    assert len(tours) == 1, "the Tour's scratch folder (mktemp -d) is under TMPDIR"
    tour = tours[0]
    store = tour / "store"

    # 1. the server answered with the bundled encoder and an empty store
    assert re.search(r"^listening on 127\.0\.0\.1:\d+$", (tour / "serve.log").read_text(), flags=re.M)
    assert "ecg-atlas-small-v3 (256-d" in steps[1] and re.search(r"^store\s+0 ECGs", steps[1], flags=re.M)

    # 2. ingest: the counts the README promises
    ingest = steps[2]
    assert "stored 346 of 367 ECGs (0 already stored, 21 failed)" in ingest
    for count, reason in ((18, "too_few_leads"), (2, "too_short"), (1, "too_long")):
        assert re.search(rf"failed {count}: {reason}\b", ingest), reason
    assert "stored 3 of 3 ECGs" in ingest
    for n in (169, 180, 166, 182):
        assert f"stored {n} of {n} ECGs" in ingest

    # 3. search by id leaves the query out; the EDF copy of A0001 finds its WFDB twin first, filter held
    by_id, by_file = re.split(r"^\(.*on the server\)$", steps[3], flags=re.M)[:2]
    id_hits, file_hits = _hits(by_id), _hits(by_file)
    assert len(id_hits) == 5 and "cinc_cpsc2018/A0001" not in [h[1] for h in id_hits]
    assert len(file_hits) == 5 and file_hits[0][1] == "cinc_cpsc2018/A0001" and file_hits[0][0] > 0.999
    ages = [int(m) for _, _, rest in file_hits for m in re.findall(r"age (\d+)", rest)]
    assert len(ages) == 5 and min(ages) >= 60
    assert (tour / "neighbours.png").stat().st_size > 10_000
    assert "philips/philipsecg104_cardiac_science_deid_3" in steps[3] and "None" not in steps[3].split("deid_3", 1)[1]

    # 4. the probe: every label has a few dozen training positives, a baseline beside it, and it is listed
    record = json.loads((store / "analysis" / "probes" / "superclass" / "probe.json").read_text())
    counts = {c["label"].split(":")[1]: c for c in record["report"]["counts"]}
    assert set(counts) == {"NORM", "MI", "STTC", "CD", "HYP"}
    assert all(c["train_positive"] >= 30 and c["test_positive"] >= 10 and c["flag"] is None for c in counts.values())
    # on fold 9, which the bundled encoder never trained on, it beats its random-init twin (README step 4)
    macro, baseline = record["report"]["test"]["macro"]["auroc"], record["report"]["baseline"]["test"]["macro"]["auroc"]
    assert macro["value"] > baseline["value"] + 0.02, (macro, baseline)
    assert re.search(r"^superclass\s", steps[4], flags=re.M), "probe list shows the probe"

    # 5. cluster: written inside the store, labels on every ECG
    assert re.search(r"^1046 ECGs → \d+ clusters", steps[5], flags=re.M)
    run_dir = store / "analysis" / "cohorts" / "tour"
    assert (run_dir / "run.json").exists() and (run_dir / "enrichment.csv").exists()
    assert not (REPO_ROOT / "cluster-tour").exists()

    # 6. export
    import pyarrow.parquet as pq

    assert "exported 1046 ECGs" in steps[6]
    assert pq.read_metadata(tour / "atlas.parquet").num_rows == 1046
    assert (tour / "projector.vectors.tsv").exists() and (tour / "projector.metadata.tsv").exists()
    atlas_map = pq.read_table(tour / "map.parquet")
    assert atlas_map.num_rows == 1046 and {"x", "y", "neighbors"} <= set(atlas_map.column_names)

    # 7. the web atlas served its page and saw the cluster run
    assert "<title>ECG Atlas</title>" in steps[7]
    assert re.search(r'"run":\s*"tour"', steps[7]) and re.search(r'"n_ecgs":\s*1046', steps[7])

    # 8. the processes whose pids it saved were the server and the web atlas, and they are gone
    saved = {int((tour / name).read_text()) for name in ("serve.pid", "web.pid")}
    assert len(saved) == 2 and saved.isdisjoint(_tour_processes(tmp_path))
