"""Progress of long steps (ecg_atlas/progress.py): a bar on a terminal, plain periodic lines when
stderr is not one (piped, logged), so a long run is never silent."""

from __future__ import annotations

import io
import threading

from ecg_atlas.progress import EVERY_S_ENV, Progress, every_s, waiting


def test_off_a_terminal_a_percent_step_prints_each_stage_and_where_it_ended():
    out = io.StringIO()  # not a terminal
    with Progress("ecg-atlas cluster", 100, "%", stream=out, interval_s=3600) as bar:
        for stage, percent in [("pca", 0), ("pca", 3), ("neighbours", 3), ("neighbours", 20), ("umap", 20),
                               ("umap", 100)]:
            bar.set(percent, stage)
    lines = out.getvalue().splitlines()
    # a line per stage change (the interval never came round), then one saying where it ended
    assert [line.split(" (")[0] for line in lines] == [
        "ecg-atlas cluster: pca 0%", "ecg-atlas cluster: neighbours 3%", "ecg-atlas cluster: umap 20%",
        "ecg-atlas cluster: done 100%"]


def test_off_a_terminal_a_count_prints_at_the_interval_and_says_done():
    out = io.StringIO()
    with Progress("ingesting", 4, "ECGs", stream=out, interval_s=0) as bar:
        for _ in range(4):
            bar.update(1)
    lines = out.getvalue().splitlines()
    assert [line.split(" (")[0] for line in lines] == [f"ingesting: {i}/4 ECGs, {25 * i}%" for i in range(1, 5)]
    quiet = io.StringIO()  # a quick step inside the interval prints nothing at all
    with Progress("ingesting", 4, "ECGs", stream=quiet, interval_s=3600) as bar:
        bar.update(4)
    assert quiet.getvalue() == ""


def test_the_interval_comes_from_the_environment(monkeypatch):
    monkeypatch.delenv(EVERY_S_ENV, raising=False)
    assert every_s() == 10.0
    monkeypatch.setenv(EVERY_S_ENV, "2.5")
    assert every_s() == 2.5
    monkeypatch.setenv(EVERY_S_ENV, "off")
    assert every_s() is None
    out = io.StringIO()
    with Progress("ecg-atlas cluster", 100, "%", stream=out) as bar:  # off: no lines, not even stages
        bar.set(50, "umap")
    assert out.getvalue() == ""


def test_waiting_says_when_it_started_that_it_runs_and_when_it_is_done():
    out = io.StringIO()
    beat = threading.Event()
    with waiting("ecg-atlas probe train", stream=out, interval_s=0) as progress:
        # a heartbeat arrives while the block runs (bounded wait on the condition, not a sleep)
        for _ in range(100):
            if "still running" in out.getvalue():
                break
            beat.wait(0.1)
        assert progress.terminal is False
    lines = out.getvalue().splitlines()
    assert lines[0].startswith("ecg-atlas probe train: started")
    assert any(line.startswith("ecg-atlas probe train: still running") for line in lines[1:-1])
    assert lines[-1].startswith("ecg-atlas probe train: done")


def test_on_a_terminal_it_is_a_bar_not_lines():
    out = io.StringIO()
    with Progress("ingesting", 3, "ECGs", stream=out, interval_s=0, terminal=True) as bar:
        bar.update(3)
    text = out.getvalue()
    assert "3/3" in text and "\r" in text and "ingesting: 3/3 ECGs, 100%" not in text


def test_a_note_is_a_line_of_its_own_bar_or_not():
    for terminal in (False, True):
        out = io.StringIO()
        with Progress("ecg-atlas finetune: training", 10, "updates", stream=out, interval_s=3600,
                      terminal=terminal) as bar:
            bar.note("epoch 1: val macro AUROC 0.812")
        assert "ecg-atlas finetune: training: epoch 1: val macro AUROC 0.812\n" in out.getvalue()
