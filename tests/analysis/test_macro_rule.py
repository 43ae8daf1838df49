"""One macro rule for `probe train` and `probe eval`: a label with too few positives or negatives
where the probe is trained or where it is measured is left out of the macro average in both, and
both say which labels and why."""

from __future__ import annotations

import json
import shutil

import pytest

from ecg_atlas.analysis.probe import count_flag, left_out_lines
from ecg_atlas.analysis.tasks import evaluation_flags
from ecg_atlas.cli import main


def test_the_rule_reads_the_training_counts_and_the_evaluated_counts():
    assert count_flag(10, train=(12, 300), test=(10, 80)) is None
    assert count_flag(10, train=(7, 300), test=(12, 80)) == \
        "too few positives/negatives (train 7/300, test 12/80; need 10 of each)"
    # --min-positives 0 trains a label with no known value where it is measured (e.g. a train-only
    # target); it still has no AUROC there and stays out of the macro instead of making it NaN
    assert count_flag(0, train=(7, 78), val=(0, 0)) == \
        "too few positives/negatives (train 7/78, val 0/0; need 1 of each)"
    assert count_flag(0, train=(7, 78), val=(1, 5)) is None
    report = {"min_positives": 10, "counts": [
        {"label": "AF", "train_positive": 7, "train_negative": 300},  # flagged at training
        {"label": "RBBB", "train_positive": 40, "train_negative": 267}]}
    flags = evaluation_flags(report, {"AF": (30, 200), "RBBB": (12, 218)})
    assert list(flags) == ["AF"] and "trained on 7/300" in flags["AF"]  # enough here, too few when trained
    flags = evaluation_flags(report, {"AF": (30, 200), "RBBB": (4, 226)})
    assert set(flags) == {"AF", "RBBB"} and "evaluated 4/226" in flags["RBBB"]
    # a probe saved before min_positives was kept: the default rule (10)
    assert evaluation_flags({"counts": report["counts"]}, {"RBBB": (9, 50)})["RBBB"].endswith("need 10 of each)")
    assert left_out_lines({}) == [] and left_out_lines(flags)[1].startswith("  AF: too few")


@pytest.mark.slow
def test_eval_leaves_out_what_train_left_out_and_both_say_why(tmp_path, store_dir, capsys):
    store = tmp_path / "store"
    shutil.copytree(store_dir, store)
    # HYP has 5 positives in the corpus: never 3 in training and 3 in test at once
    train = ["probe", "train", "--store", str(store), "--name", "groups", "--target", "label_groups:CD",
             "--target", "label_groups:HYP", "--min-positives", "3", "--bootstrap", "50", "--label-fractions", "1"]
    assert main(train) == 0
    text = capsys.readouterr().out
    assert "left out of the macro average" in text and "label_groups:HYP: too few positives/negatives" in text
    report = json.loads(open(store / "analysis" / "probes" / "groups" / "probe.json").read())["report"]
    trained_out = report["test"]["macro"]["left_out"]
    assert "label_groups:HYP" in trained_out and report["min_positives"] == 3
    assert "label_groups:HYP" not in report["test"]["macro"]["labels"]

    assert main(["probe", "eval", "--store", str(store), "--name", "groups", "--bootstrap", "50", "--json"]) == 0
    evaluated = json.loads(capsys.readouterr().out)
    left_out = evaluated["macro"]["left_out"]
    assert set(trained_out) <= set(left_out)  # what training left out stays out
    assert "trained on" in left_out["label_groups:HYP"]
    assert evaluated["macro"]["labels"] == [m["label"] for m in evaluated["labels"] if m["label"] not in left_out]
    assert main(["probe", "eval", "--store", str(store), "--name", "groups", "--bootstrap", "50"]) == 0
    text = capsys.readouterr().out
    assert "left out of the macro average" in text and "label_groups:HYP: too few positives/negatives" in text
