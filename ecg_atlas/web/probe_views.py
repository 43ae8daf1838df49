"""What the probes view shows of each kept probe: its per-label and macro AUROC / AUPRC with CIs,
its ROC / PR curves, and beside them the same measures of what it is compared with.

A linear probe (``analysis.probe.ProbeReport.to_dict``) is measured on its test split; trained
with ``--baseline`` it carries the same probe on a random-init encoder (``report["baseline"]``).
The served fine-tuned head (kind ``fine-tuned``) carries ``metrics`` in ``MetricSet.to_dict``
form under ``test`` or ``val``, and its comparisons under ``baselines.{frozen_probe,random_init}``.
"""

from __future__ import annotations

FINE_TUNED = "fine-tuned"
#: how the view names each comparison of a fine-tuned head
COMPARISON_NAMES = {"frozen_probe": "linear probe on the frozen encoder", "random_init": "random-init encoder"}


def _labels(metric_set: dict, counts: dict[str, dict] | None = None) -> list[dict]:
    counts = counts or {}
    left_out = (metric_set.get("macro") or {}).get("left_out") or {}
    out = []
    for m in metric_set.get("labels", []):
        label = m.get("label")
        out.append({"label": label, "auroc": m.get("auroc"), "auprc": m.get("auprc"),
                    "n_positive": m.get("n_positive"), "n_negative": m.get("n_negative"),
                    "flag": (counts.get(label) or {}).get("flag") or left_out.get(label), "curves": m.get("curves")})
    return out


def _measured(metric_set: dict, counts: dict[str, dict] | None = None) -> dict:
    return {"labels": _labels(metric_set, counts), "macro": metric_set.get("macro", {})}


def _split_of(metrics: dict) -> str:
    return "test" if metrics.get("test") else "val"


def probe_view(probe: dict) -> dict:
    """One entry of ``Client.list_probes`` as the view draws it."""
    report = probe.get("report") or {}
    view = {"name": probe.get("name"), "kind": probe.get("kind"), "model_id": probe.get("model_id"),
            "created_at": probe.get("created_at"), "where": list(probe.get("where") or [])}
    metrics = probe.get("metrics") or report.get("metrics")
    if probe.get("kind") == FINE_TUNED and metrics:
        split = _split_of(metrics)
        comparisons = []
        for key, both in (metrics.get("baselines") or {}).items():
            if both and both.get(split):
                comparisons.append({"name": COMPARISON_NAMES.get(key, key.replace("_", " ")), "key": key,
                                    **_measured(both[split])})
        return {**view, **_measured(metrics[split]), "measured_on": split, "split": None,
                "fraction_curve": [], "baselines": comparisons}
    counts = {c["label"]: c for c in report.get("counts", [])}
    measured = _measured(report.get("test", {}), counts)
    # every label the probe predicts, in its order, even one the test split could not measure
    by_label = {m["label"]: m for m in measured["labels"]}
    measured["labels"] = [by_label.get(label) or {"label": label, "flag": (counts.get(label) or {}).get("flag")}
                          for label in probe.get("labels") or report.get("labels") or by_label]
    baselines = []
    if report.get("baseline"):
        base = report["baseline"]
        baselines.append({"name": "random-init encoder", "key": "random_init", "model_id": base.get("model_id"),
                          **_measured(base.get("test", {}), {c["label"]: c for c in base.get("counts", [])})})
    return {**view, **measured, "measured_on": "test", "split": (report.get("split") or {}).get("method"),
            "fraction_curve": report.get("fraction_curve", []), "baselines": baselines}
