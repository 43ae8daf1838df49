"""One resolver from a ``--checkpoint`` spec to a ready encoder, for every command and the API.

Specs:

* ``bundled`` — ecg-atlas-small-v1, shipped in the package (sha256 pinned in ``weights``);
* ``random:PRESET[:SEED]`` — an untrained encoder of a known shape (``RANDOM_PRESETS``);
* a local file — the kind is read from its contents: a dict with ``cfg`` + ``model`` is an ECG-FM
  (fairseq-signals) file; ``model_config`` + ``model_state_dict`` a HuBERT-ECG training file;
  ``state_dict`` an ECGFounder file. A ``.safetensors`` file stands for its folder;
* a local folder with ``config.json`` — a HuBERT-ECG hub folder;
* ``hf:OWNER/REPO/FILE[@REVISION]`` — that file from the hub, then as a local file;
  ``hf:OWNER/REPO[@REVISION]`` — the repo's config and weights (a HuBERT-ECG hub repo).

Every file is read with torch's weights-only unpickler (``checkpoint.load_raw``); the sha256 of
the weights file is always computed (and checked against ``expected_sha256`` when given).
"""

from __future__ import annotations

import os
from pathlib import Path

from ecg_atlas.errors import AtlasError, CheckpointError

from .checkpoint import ResolvedCheckpoint, load_raw, resolve_checkpoint, sha256_of
from .encoder import UNTRAINED_NOTICE, BaseEncoder, Encoder, default_ecgfm_contract, load_ecgfm, untrained_contract
from .model import ECGFM, PRESETS, init_weights

#: ``random:`` shapes: ECG-FM's (base = its released size), HuBERT-ECG's released sizes, ECGFounder's.
HUBERT_PRESETS = ("hubert-ecg-small", "hubert-ecg-base", "hubert-ecg-large")
RANDOM_PRESETS = (*PRESETS, *HUBERT_PRESETS, "ecgfounder")


def random_encoder(preset: str = "base", *, seed: int = 0, device: str = "cpu", dtype: str = "auto",
                   fast: str | None = None) -> BaseEncoder:
    """An untrained encoder of a known shape, labelled as such: the baseline every probe is compared to."""
    kwargs = {"device": device, "dtype": dtype, "fast": fast}
    if preset in PRESETS:
        cfg = PRESETS[preset]
        return Encoder(init_weights(ECGFM(cfg), seed=seed), model_id=f"random-init-{preset}-seed{seed}",
                       checkpoint_sha256="none", source=f"random:{preset}", notice=UNTRAINED_NOTICE,
                       contract=untrained_contract(default_ecgfm_contract(cfg)), **kwargs)
    if preset in HUBERT_PRESETS:
        from .hubert_ecg import random_hubert

        return random_hubert(preset.removeprefix("hubert-ecg-"), seed=seed, **kwargs)
    if preset == "ecgfounder":
        from .ecgfounder import random_ecgfounder

        return random_ecgfounder(seed=seed, **kwargs)
    raise AtlasError(f"unknown preset {preset!r}; choose one of {', '.join(RANDOM_PRESETS)}")


def load_encoder(spec: str | os.PathLike, device: str = "cpu", dtype: str = "auto", *,
                 revision: str | None = None, expected_sha256: str | None = None,
                 fast: str | None = None) -> BaseEncoder:
    """The encoder ``spec`` names (module docstring), on ``device`` in ``dtype``."""
    from .weights import is_bundled

    text = os.fspath(spec)
    kwargs = {"device": device, "dtype": dtype, "fast": fast}
    if is_bundled(text):
        return _bundled(**kwargs)
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
            return _hubert_folder(_download_repo(name.strip("/"), at or revision), name=text,
                                  expected_sha256=expected_sha256, **kwargs)
    else:
        path = Path(text).expanduser()
        if path.is_dir():
            return _hubert_folder(path, name=text, expected_sha256=expected_sha256, **kwargs)
        if path.suffix == ".safetensors" and path.is_file():
            return _hubert_folder(path.parent, name=text, expected_sha256=expected_sha256, **kwargs)
    resolved = resolve_checkpoint(text, revision=revision, expected_sha256=expected_sha256)
    return _from_file(resolved, **kwargs)


def _from_file(resolved: ResolvedCheckpoint, **kwargs) -> BaseEncoder:
    raw = load_raw(resolved)
    if isinstance(raw, dict) and "model_state_dict" in raw:
        from .hubert_ecg import fields_of_training_file, load_hubert

        fields, state = fields_of_training_file(raw)
        flavour = "finetuned" if any(k.startswith("hubert_ecg.") for k in state) else "pretrained"
        return load_hubert(fields, state, sha256=resolved.sha256, source=resolved.name, flavour=flavour, **kwargs)
    if isinstance(raw, dict) and "state_dict" in raw and "model" not in raw:
        from .ecgfounder import load_ecgfounder

        return load_ecgfounder(raw, sha256=resolved.sha256, source=resolved.name, **kwargs)
    return load_ecgfm(resolved.name, resolved=resolved, raw=raw, **kwargs)


def _hubert_folder(folder: Path, *, name: str, expected_sha256: str | None, **kwargs) -> BaseEncoder:
    from .hubert_ecg import load_hubert, read_folder

    fields, state, weights = read_folder(folder)
    digest = sha256_of(weights)
    if expected_sha256 and digest != expected_sha256.lower():
        raise CheckpointError(f"{name}: weights file {weights.name} has sha256 {digest}, but {expected_sha256} "
                              "was expected: not the configured weights (corrupt download or another revision)")
    return load_hubert(fields, state, sha256=digest, source=name, flavour="pretrained", **kwargs)


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


def _bundled(**kwargs) -> Encoder:
    import dataclasses

    from .weights import BUNDLED_NAME, BUNDLED_SHA256, bundled_notice, bundled_path

    path = bundled_path()
    if not path.is_file():
        raise CheckpointError(f"the bundled encoder file is missing from this installation ({path}); "
                              f"reinstall ecg-atlas or pass --checkpoint")
    encoder = load_ecgfm(path, expected_sha256=BUNDLED_SHA256, **kwargs)
    encoder.model_id = BUNDLED_NAME
    encoder.source = BUNDLED_NAME
    encoder.extra_notice = bundled_notice()
    encoder.contract = dataclasses.replace(
        encoder.contract, name=BUNDLED_NAME, source="bundled (embedder/bundled/)",
        weight_licence="MIT (ECG Atlas); trained on CC BY 4.0 / ODC-By 1.0 ECGs (embedder/bundled/MODEL_CARD.md)",
        citation="ECG Atlas, embedder/bundled/MODEL_CARD.md; architecture and objective: " + encoder.contract.citation)
    return encoder
