"""One resolver from a ``--checkpoint`` spec to a ready encoder, for every command and the API.

Specs:

* ``bundled`` — ecg-atlas-small-v3, shipped in the package (sha256 pinned in ``weights``);
  ``bundled:v1`` its first release, kept so stores made with it keep working;
* ``random:PRESET[:SEED]`` — an untrained encoder of a known shape (``RANDOM_PRESETS``);
* a local file — the kind is read from its contents: the first of ``KINDS`` that claims the
  loaded file reads it (a dict with ``format`` "ecg-atlas-finetuned/…" is a model.pt of
  ``ecg-atlas finetune``, read with its base family's kind (``finetuned.py``); a dict with
  ``cfg`` + ``model`` is an ECG-FM (fairseq-signals) file;
  ``model_config`` + ``model_state_dict`` a HuBERT-ECG training file; ``state_dict`` an ECGFounder
  file). A ``.safetensors`` file stands for its folder;
* a local folder — the kind that claims it (``config.json``: a HuBERT-ECG hub folder);
* ``hf:OWNER/REPO/FILE[@REVISION]`` — that file from the hub, then as a local file;
  ``hf:OWNER/REPO[@REVISION]`` — the repo's config and weights, then as a local folder.

Every file is read with torch's weights-only unpickler (``checkpoint.load_raw``); the sha256 of
the weights file is always computed (and checked against ``expected_sha256`` when given).

Adding an encoder: one module in ``encoders/`` ending with its ``KIND`` (``encoders.base.EncoderKind``),
and one entry in ``KINDS`` below.
"""

from __future__ import annotations

import os
from pathlib import Path

from ecg_atlas.errors import AtlasError, CheckpointError

from . import finetuned
from .checkpoint import ResolvedCheckpoint, load_raw, resolve_checkpoint
from .encoders import ecgfm, ecgfounder, hubert_ecg
from .encoders.base import BaseEncoder, EncoderKind
from .weights import bundled_release

#: The encoder families.
FAMILIES: tuple[EncoderKind, ...] = (ecgfm.KIND, hubert_ecg.KIND, ecgfounder.KIND)
#: Every kind, in the order a file is offered to them: fine-tuned model.pt files first (their base
#: family's layout sits inside them, under ``weights``), then the families.
KINDS: tuple[EncoderKind, ...] = (finetuned.kind_over(FAMILIES), *FAMILIES)
#: ``random:`` shapes: ECG-FM's (base = its released size), HuBERT-ECG's released sizes, ECGFounder's.
RANDOM_PRESETS = tuple(preset for kind in KINDS for preset in kind.presets)


def random_encoder(preset: str = "base", *, seed: int = 0, device: str = "cpu", dtype: str = "auto",
                   fast: str | None = None) -> BaseEncoder:
    """An untrained encoder of a known shape, labelled as such: the baseline every probe is compared to."""
    for kind in KINDS:
        if preset in kind.presets:
            return kind.random(preset, seed=seed, device=device, dtype=dtype, fast=fast)
    raise AtlasError(f"unknown preset {preset!r}; choose one of {', '.join(RANDOM_PRESETS)}")


def load_encoder(spec: str | os.PathLike, device: str = "cpu", dtype: str = "auto", *,
                 revision: str | None = None, expected_sha256: str | None = None,
                 fast: str | None = None) -> BaseEncoder:
    """The encoder ``spec`` names (module docstring), on ``device`` in ``dtype``."""
    text = os.fspath(spec)
    kwargs = {"device": device, "dtype": dtype, "fast": fast}
    release = bundled_release(text)
    if release is not None:
        return ecgfm.load_bundled(release, **kwargs)
    if text.startswith("random:"):
        _, preset, *seed = text.split(":")
        try:
            seed_value = int(seed[0]) if seed else 0
        except ValueError:
            raise AtlasError(f"random:PRESET[:SEED] takes an integer seed, got {seed[0]!r}") from None
        return random_encoder(preset, seed=seed_value, **kwargs)
    if text.startswith("hf:"):
        name, _, at = text[3:].partition("@")
        if len(name.strip("/").split("/")) == 2:
            return _from_folder(_download_repo(name.strip("/"), at or revision), name=text,
                                expected_sha256=expected_sha256, **kwargs)
    else:
        path = Path(text).expanduser()
        if path.is_dir():
            return _from_folder(path, name=text, expected_sha256=expected_sha256, **kwargs)
        if path.suffix == ".safetensors" and path.is_file():
            return _from_folder(path.parent, name=text, expected_sha256=expected_sha256, **kwargs)
    resolved = resolve_checkpoint(text, revision=revision, expected_sha256=expected_sha256)
    return _from_file(resolved, **kwargs)


def _from_file(resolved: ResolvedCheckpoint, **kwargs) -> BaseEncoder:
    raw = load_raw(resolved)
    for kind in KINDS:
        if kind.claims(raw):
            return kind.from_file(resolved, raw, **kwargs)
    found = sorted(map(str, raw))[:8] if isinstance(raw, dict) else type(raw).__name__
    raise CheckpointError(f"{resolved.name} holds no encoder ECG Atlas reads (found {found}): "
                          + "; ".join(kind.file_layout for kind in KINDS)
                          + (". A hub folder is passed as the folder" if _folder_kinds() else ""))


def _from_folder(folder: Path, *, name: str, expected_sha256: str | None, **kwargs) -> BaseEncoder:
    for kind in _folder_kinds():
        if kind.claims_folder(folder):
            return kind.from_folder(folder, name=name, expected_sha256=expected_sha256, **kwargs)
    raise CheckpointError(f"{name} is a folder that holds no encoder ECG Atlas reads: "
                          + "; ".join(kind.folder_layout for kind in _folder_kinds()))


def _folder_kinds() -> list[EncoderKind]:
    return [kind for kind in KINDS if kind.from_folder is not None]


def _download_repo(repo_id: str, revision: str | None) -> Path:
    try:
        from huggingface_hub import snapshot_download

        return Path(snapshot_download(repo_id=repo_id, revision=revision,
                                      allow_patterns=["config.json", "model.safetensors"]))
    except Exception as exc:  # offline, 404, auth
        raise CheckpointError(
            f"could not fetch the Hugging Face repo {repo_id}{' at revision ' + revision if revision else ''} "
            f"({type(exc).__name__}: {exc}). If this machine is offline, download it where there is internet "
            f"(huggingface-cli download {repo_id} config.json model.safetensors --local-dir DIR) and pass "
            "its local path instead, e.g. --checkpoint DIR") from exc
