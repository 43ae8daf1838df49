"""What a fine-tuning run leaves beside its model: ``report.json`` and ``MODEL_CARD.md``.

``report.json`` holds every figure of the run — the base encoder (spec, model id, sha256,
licence), the recipe with its source, the training data (digest, records / patients / windows
per split, label counts, refusals), the training itself (epochs, why it stopped, wall time,
throughput, history) and the evaluation (``evaluate.Evaluation.to_dict``: per-label and macro
AUROC / AUPRC with patient-bootstrap CIs for the fine-tuned model and both baselines, the paired
difference and the verdict). ``MODEL_CARD.md`` says the same for a person. Both are written
atomically (``ecg_atlas.atomic.write_atomic``); neither names a record, a patient or a path outside
the run directory.
"""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

from ecg_atlas.analysis.metrics import MetricSet
from ecg_atlas.analysis.probe import left_out_lines
from ecg_atlas.analysis.splits import SPLITS, TEST, VAL
from ecg_atlas.atomic import write_atomic
from ecg_atlas.jsonable import jsonable

from .evaluate import FINETUNED, FROZEN_PROBE, RANDOM_INIT, Evaluation

FORMAT = "ecg-atlas-finetune-report/1"
REPORT, CARD, MODEL = "report.json", "MODEL_CARD.md", "model.pt"
SOURCE_KINDS = {"manifest": "ECG files labelled by a manifest", "store": "a store's signal copies and metadata",
                "server's store": "a server's store (signal copies and metadata)"}
MODEL_NAMES = {FINETUNED: "fine-tuned", FROZEN_PROBE: "frozen probe (base)", RANDOM_INIT: "random-init probe"}


def base_facts(base, spec: str) -> dict:
    """The base encoder as the report names it (no local path beyond what the user typed)."""
    contract = base.contract
    return {"spec": spec, "model_id": base.model_id, "sha256": base.checkpoint_sha256, "family": contract.name,
            "architecture": contract.architecture, "dim": base.dim,
            "preprocessing_version": contract.preprocessing_version, "weight_licence": contract.weight_licence,
            "commercial_use": contract.commercial_use, "licence_notice": contract.licence_notice,
            "citation": contract.citation, "source": contract.source}


def build_report(*, name: str, base: dict, model_sha256: str | None, task: str, labels: list[str], recipe: dict,
                 train_config: dict, data: dict, training: dict, evaluation: Evaluation, run: dict) -> dict:
    """The report.json record (see the module docstring)."""
    return {
        "format": FORMAT, "name": name, "model_id": f"finetuned-{name}",
        "created_at": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "files": {"model": MODEL, "report": REPORT, "model_card": CARD},
        "model_sha256": model_sha256, "base": base, "task": task, "labels": list(labels), "recipe": recipe,
        "train_config": train_config, "data": data, "training": training, "run": run,
        "evaluation": evaluation.to_dict(), "verdict": evaluation.verdict,
    }


def write_report(out_dir: Path, report: dict) -> Path:
    path = Path(out_dir) / REPORT
    text = json.dumps(jsonable(report), indent=1)

    def write(tmp: str) -> None:
        Path(tmp).write_text(text)

    write_atomic(path, write)
    return path


def write_card(out_dir: Path, report: dict, evaluation: Evaluation) -> Path:
    path = Path(out_dir) / CARD
    text = model_card(report, evaluation)

    def write(tmp: str) -> None:
        Path(tmp).write_text(text)

    write_atomic(path, write)
    return path


# ---------------------------------------------------------------------------------------------
# Tables a person reads (the model card and the CLI summary share them)


def _cell(interval: dict | None) -> str:
    if not interval or interval.get("value") is None:
        return "n/a"
    low, high = interval.get("ci_low"), interval.get("ci_high")
    ci = f" [{low:.3f}, {high:.3f}]" if low is not None and high is not None else ""
    return f"{interval['value']:.3f}{ci}"


def metric_rows(evaluation: Evaluation, part: str, metric: str = "auroc") -> list[tuple[str, ...]]:
    """(label, +/-, fine-tuned, frozen probe, random init) rows, then the macro row, for `part`."""
    sets: dict[str, MetricSet] = {m: evaluation.metrics[m][part] for m in (FINETUNED, FROZEN_PROBE, RANDOM_INIT)}
    dicts = {m: s.to_dict() for m, s in sets.items()}
    rows = []
    for i, entry in enumerate(dicts[FINETUNED]["labels"]):
        note = " *" if entry["label"] in sets[FINETUNED].left_out else ""
        rows.append((entry["label"] + note, f"{entry['n_positive']}/{entry['n_negative']}",
                     *(_cell(dicts[m]["labels"][i][metric]) for m in dicts)))
    macro_n = len(sets[FINETUNED].macro_labels)
    rows.append((f"macro ({macro_n} label{'s' if macro_n != 1 else ''})", "",
                 *(_cell(dicts[m]["macro"][metric]) for m in dicts)))
    return rows


def summary_lines(report: dict, evaluation: Evaluation) -> list[str]:
    """The CLI's closing summary: per-label and macro AUROC beside the baselines, the verdict, the files."""
    lines = []
    for part in evaluation.parts:
        lines.append(f"{part} AUROC [95% CI]  (fine-tuned | frozen probe | random-init probe)")
        for label, counts, *cells in metric_rows(evaluation, part):
            lines.append(f"  {label[:26]:<26} {counts:>9}  " + "  ".join(f"{c:<21}" for c in cells).rstrip())
        lines += ["  " + line for line in left_out_lines(evaluation.metrics[FINETUNED][part].left_out)]
    lines.append(evaluation.verdict)
    training = report.get("training", {})
    lines.append(f"stopped by {training.get('stopped')} after {training.get('epochs_run')} epoch(s), best epoch "
                 f"{training.get('best_epoch')}; {training.get('seconds', 0):.0f} s, "
                 f"{training.get('segments_per_s', 0):.1f} windows/s")
    return lines


def _table(header: tuple[str, ...], rows: list[tuple[str, ...]]) -> list[str]:
    out = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    out += ["| " + " | ".join(row) + " |" for row in rows]
    return out


def model_card(report: dict, evaluation: Evaluation) -> str:
    """MODEL_CARD.md: intended use, data, recipe with sources, metrics beside baselines, limitations, licences."""
    base, data, training, recipe = report["base"], report["data"], report["training"], report["recipe"]
    labels = ", ".join(report["labels"])
    lines = [f"# {report['model_id']}", "",
             f"Fine-tuned from `{base['model_id']}` ({base['family']}) by `ecg-atlas finetune`, for a "
             f"{report['task']} task: {labels}. Created {report['created_at']}.", "",
             "## Intended use", "",
             "Research on ECG classification: scoring ECGs for the labels above, searching and probing with its "
             "embeddings, and comparing against the baselines below. It is not a medical device and has not been "
             "validated for clinical decisions. Use it only on ECGs like the training data (source, population, "
             "preprocessing) and re-measure it on your own data before relying on it.", "",
             "Serve it with `ecg-atlas serve --checkpoint model.pt`; `Predict` with the probe name `head` gives its "
             "probabilities. Its vectors carry their own identity: a store of the base encoder's vectors refuses "
             "them.", "",
             "## Base encoder", "",
             f"* checkpoint: `{base['spec']}`, model id `{base['model_id']}`, sha256 `{base['sha256']}`",
             f"* architecture: {base['architecture']} ({base['dim']}-d vectors)",
             f"* citation: {base['citation']}", "",
             "## Data", ""]
    source = data.get("source", {})
    selection = data.get("selection", {})
    lines.append(f"* source: {SOURCE_KINDS.get(source.get('kind'), source.get('kind'))}: "
                 + ", ".join(f"{k.replace('_', ' ')} {v}" for k, v in source.items() if k != "kind"))
    lines.append(f"* targets: {', '.join(selection.get('targets', []))} (task {report['task']})")
    filters = selection.get("filters") or {}
    lines.append("* split: " + ("; ".join(f"{part}: `{text}`" for part, text in filters.items()) if filters
                                else selection.get("split_method", "")))
    for part in SPLITS:
        if part in data.get("records", {}):
            lines.append(f"* {part}: {data['records'][part]} records of {data['patients'][part]} patients, "
                         f"{data['segments'][part]} windows")
    if data.get("refused"):
        lines.append("* left out, unreadable: " + ", ".join(f"{n} {r}" for r, n in data["refused"].items()))
    lines.append(f"* left out, no known label: {data.get('left_out_no_label', 0)}; in no split: "
                 f"{data.get('left_out_no_split', 0)}")
    lines.append(f"* data digest (sha256 over ids, labels, split and windows): `{data.get('digest')}`")
    counts = data.get("label_counts", {})
    if counts:
        parts = [p for p in SPLITS if p in data.get("records", {})]
        lines += ["", *_table(("label", *(f"{p} +/-" for p in parts)),
                              [(label, *(f"{c[p][0]}/{c[p][1]}" for p in parts)) for label, c in counts.items()])]
    lines += ["", "## Recipe", ""]
    lines += [f"* {key}: {value}" for key, value in recipe.items() if key != "source"]
    lines.append(f"* source: {recipe.get('source', 'not stated')}")
    config = report.get("train_config", {})
    lines.append("* this run: " + ", ".join(f"{k} {v}" for k, v in config.items() if v is not None))
    lines += ["", "## Training", "",
              f"* {training.get('epochs_run')} epoch(s), stopped by {training.get('stopped')}; best epoch "
              f"{training.get('best_epoch')} (val macro AUROC {_number(training.get('best_val_macro_auroc'))})",
              f"* wall time {training.get('seconds', 0):.0f} s, {training.get('segments_per_s', 0):.1f} windows/s, "
              f"{report['run'].get('processes', 1)} process(es) on {report['run'].get('device')}", ""]
    lines += ["## Metrics", "",
              "Record-level AUROC and AUPRC (the mean of each record's window probabilities), with 95% "
              "confidence intervals from a patient-level bootstrap "
              f"({evaluation.bootstrap.get('resamples')} resamples). Baselines on the same split: the base "
              "encoder's frozen vectors under a linear probe (trained on train, regularisation chosen on val), and "
              "the same probe on a random-init encoder of the same architecture.", ""]
    for part in evaluation.parts:
        for metric in ("auroc", "auprc"):
            lines += [f"### {part} {metric.upper()}", "",
                      *_table(("label", "+/-", *MODEL_NAMES.values()), metric_rows(evaluation, part, metric)), ""]
        left_out = evaluation.metrics[FINETUNED][part].left_out
        if left_out:
            lines += [f"\\* left out of the {part} macro average: "
                      + "; ".join(f"{label}: {why}" for label, why in left_out.items()), ""]
    lines += ["## Verdict", "", evaluation.verdict, "",
              "## Limitations", "",
              f"* Measured on {_sizes(data)}: the intervals above show how little a small split can tell.",
              "* One data source and one split; nothing here measures how it transfers to other hospitals, "
              "devices, populations or preprocessing.",
              "* Labels are taken as given by the manifest or store metadata; their own errors are learned too.",
              "* Window-level training with record-level labels: a finding present in one window only is "
              "taught as present in every window of its record.", "",
              "## Licences", "",
              f"* base weights: {base['weight_licence']}"
              + (f" — {base['licence_notice']}" if base.get("licence_notice") else ""),
              "* the fine-tuned weights derive from the base weights and inherit their licence; the training "
              "data's own terms apply as well.", ""]
    return "\n".join(lines)


def _number(value) -> str:
    return f"{value:.3f}" if isinstance(value, (int, float)) and value == value else "n/a"


def _sizes(data: dict) -> str:
    records = data.get("records", {})
    return ", ".join(f"{records[p]} {p} records" for p in (VAL, TEST) if p in records) or "few records"
