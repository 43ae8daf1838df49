"""Fine-tuned models ``ecg-atlas finetune`` writes (``model.pt``), and reading them back as encoders.

A model.pt is one ``torch.save`` dict, read with torch's weights-only unpickler like every checkpoint:

* ``format``: ``FORMAT``;
* ``meta``: name, base (spec, model_id, sha256, family, contract), task, labels, data_digest, recipe,
  metrics, created_at — plain values only;
* ``weights``: the fine-tuned network and its head in the base family's OWN file layout
  (``TrainableNetwork.raw_layout``: a fairseq-signals ``ecg_transformer_classifier`` file for ECG-FM,
  HuBERT-ECG's finetune.py training file, ECGFounder's ``{"state_dict"}`` with the head as ``dense``),
  which that family's loader reads and checks key by key and shape by shape.

``kind_over(families)`` is the resolver's entry for these files (ahead of the families, whose own
files never carry ``format``): ``load_encoder("DIR/model.pt")`` gives the family's encoder with
``model_id = "finetuned-<name>"``, the file's sha256, the labels, ``classify`` (sigmoid, or softmax
for a multi-class head), ``finetuned`` = the metadata, and the base's contract renamed
"<base name>, fine-tuned (<name>)" (same preprocessing). Its store identity differs from the base's.
"""

from __future__ import annotations

import dataclasses
import os
import re
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import torch

from ecg_atlas.atomic import write_atomic
from ecg_atlas.errors import AtlasError, CheckpointError

from .checkpoint import ResolvedCheckpoint, load_raw, resolve_checkpoint
from .contract import EncoderContract
from .encoders.base import BaseEncoder, EncoderKind, file_rebuild
from .finetune_net import TrainableNetwork

FORMAT = "ecg-atlas-finetuned/1"
FORMAT_PREFIX = "ecg-atlas-finetuned/"
#: the task names of ``ecg_atlas.finetune.types`` (the embedder never imports the layer above it)
BINARY, MULTILABEL, MULTICLASS = "binary", "multilabel", "multiclass"
TASKS = (BINARY, MULTILABEL, MULTICLASS)
NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
META_FIELDS = ("name", "base", "task", "labels", "data_digest", "recipe", "metrics", "created_at")


def check_name(name: str) -> str:
    if not isinstance(name, str) or not NAME.match(name):
        raise AtlasError(f"a fine-tuned model's name is 1-64 letters, digits, '_', '-' or '.', starting with a "
                         f"letter or digit; got {name!r}")
    return name


def save_finetuned(path: str | os.PathLike, *, base: BaseEncoder, base_spec: str, network: TrainableNetwork,
                   head: torch.nn.Linear, task: str, labels: list[str], name: str, data_digest: str,
                   recipe: dict, metrics: dict) -> str:
    """Write ``network`` + ``head`` fine-tuned from ``base`` to ``path`` atomically; returns its sha256."""
    check_name(name)
    if task not in TASKS:
        raise AtlasError(f"task must be one of {', '.join(TASKS)}, got {task!r}")
    labels = [str(label) for label in labels]
    if not labels or len(set(labels)) != len(labels):
        raise AtlasError("a fine-tuned head needs at least one label, each named once")
    if head.out_features != len(labels):
        raise AtlasError(f"the head has {head.out_features} outputs but {len(labels)} labels were given")
    if network.dim != base.dim:
        raise AtlasError(f"the network pools to {network.dim} values but the base encoder's vectors have {base.dim}")
    meta = {
        "name": name,
        "base": {"spec": str(base_spec), "model_id": base.model_id, "sha256": base.checkpoint_sha256,
                 "family": network.family, "contract": base.contract.to_dict()},
        "task": task, "labels": labels, "data_digest": str(data_digest), "recipe": dict(recipe),
        "metrics": dict(metrics or {}),
        "created_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }
    payload = {"format": FORMAT, "meta": meta, "weights": network.raw_layout(head)}
    return _save_atomic(Path(path), payload)


def _save_atomic(path: Path, payload: dict) -> str:
    """``torch.save`` all or nothing (``ecg_atlas.atomic.write_atomic``); returns the file's sha256."""
    path.parent.mkdir(parents=True, exist_ok=True)
    return write_atomic(path, lambda tmp: torch.save(payload, tmp))


def read_meta(path: str | os.PathLike) -> dict:
    """A model.pt's metadata (no network is built)."""
    resolved = resolve_checkpoint(path)
    raw = load_raw(resolved)
    if not claims(raw):
        raise CheckpointError(f"{resolved.name} is not a fine-tuned model.pt of ecg-atlas finetune")
    return _check_meta(raw, resolved.name)


def claims(raw: Any) -> bool:
    return isinstance(raw, dict) and str(raw.get("format", "")).startswith(FORMAT_PREFIX)


def _check_meta(raw: dict, name: str) -> dict:
    if raw.get("format") != FORMAT:
        raise CheckpointError(f"{name} is a fine-tuned model of format {raw.get('format')!r}; this ECG Atlas reads "
                              f"{FORMAT}: upgrade ecg-atlas")
    meta = raw.get("meta")
    if not isinstance(meta, dict) or any(field not in meta for field in META_FIELDS):
        raise CheckpointError(f"{name}: its metadata lacks {[f for f in META_FIELDS if f not in (meta or {})]}")
    if not isinstance(raw.get("weights"), dict):
        raise CheckpointError(f"{name}: a fine-tuned model.pt holds its network under 'weights'; this one has none")
    if meta["task"] not in TASKS or not meta["labels"]:
        raise CheckpointError(f"{name}: task {meta['task']!r} with labels {meta['labels']!r} is not a classifier "
                              f"this ECG Atlas reads ({', '.join(TASKS)})")
    return meta


def base_contract(meta: dict, name: str) -> EncoderContract:
    """The base encoder's contract as saved, renamed "<base name>, fine-tuned (<name>)"."""
    saved = meta["base"].get("contract") or {}
    fields = {f.name for f in dataclasses.fields(EncoderContract)}
    try:
        values = {k: v for k, v in saved.items() if k in fields}
        values["leads"], values["input_shape"] = tuple(values["leads"]), tuple(values["input_shape"])
        contract = EncoderContract(**values)
    except (KeyError, TypeError) as exc:
        raise CheckpointError(f"{name}: the base encoder's contract in its metadata is incomplete ({exc})") from exc
    return dataclasses.replace(contract, name=f"{contract.name}, fine-tuned ({meta['name']})")


def kind_over(families: tuple[EncoderKind, ...]) -> EncoderKind:
    """The resolver's entry for model.pt files, reading the weights with the base family's kind."""
    by_name = {kind.name: kind for kind in families}

    def from_file(resolved: ResolvedCheckpoint, raw: dict, **kwargs) -> BaseEncoder:
        meta = _check_meta(raw, resolved.name)
        family = meta["base"].get("family")
        kind = by_name.get(family)
        if kind is None or kind.network is None:
            raise CheckpointError(f"{resolved.name}: base family {family!r} is not one ECG Atlas fine-tunes "
                                  f"({', '.join(k.name for k in families if k.network is not None)})")
        weights = raw["weights"]
        if not kind.claims(weights):
            raise CheckpointError(f"{resolved.name}: its weights are not in the {family} layout ({kind.file_layout})")
        try:
            encoder = kind.from_file(resolved, weights, **kwargs)
        except CheckpointError as exc:
            raise CheckpointError(f"{resolved.name}: its weights do not fit the base architecture {family} "
                                  f"({exc})") from exc
        return _dress(encoder, meta, resolved, kind)

    def refuse_random(preset: str, **kwargs):
        raise AtlasError("a fine-tuned model has no random: preset")

    return EncoderKind(
        name="fine-tuned", presets=(), random=refuse_random, claims=claims, from_file=from_file,
        file_layout=f"a fine-tuned model.pt of ecg-atlas finetune is a dict with format {FORMAT!r}")


def _dress(encoder: BaseEncoder, meta: dict, resolved: ResolvedCheckpoint, kind: EncoderKind) -> BaseEncoder:
    labels = tuple(str(label) for label in meta["labels"])
    head = encoder.head
    if head is None or head.out_features != len(labels):
        found = "no head" if head is None else f"a head of {head.out_features} outputs"
        raise CheckpointError(f"{resolved.name}: its weights hold {found} but its metadata names {len(labels)} labels")
    contract = base_contract(meta, resolved.name)
    if contract.dim != encoder.dim:
        raise CheckpointError(f"{resolved.name}: its weights pool to {encoder.dim} values, its base's contract "
                              f"says {contract.dim}")
    encoder.model_id = f"finetuned-{meta['name']}"
    encoder.label_names = labels
    encoder.head_activation = "softmax" if meta["task"] == MULTICLASS else "sigmoid"
    encoder.finetuned = {field: meta[field] for field in META_FIELDS}
    encoder.contract = contract
    encoder.source = resolved.name
    encoder.extra_notice = ""
    encoder._rebuild = file_rebuild(resolved, kind.network, unwrap=lambda raw: raw["weights"])
    return encoder
