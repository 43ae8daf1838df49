"""Which encoder runs when none is configured (torch-free, so client-side commands stay light).

``bundled`` is ecg-atlas-small-v1: a small ECG-FM-architecture encoder pretrained with this package's
own pretraining code on the train-split patients of the project's 367 public ECGs. It ships inside
the package so the service works offline; it is *not* ECG-FM's published model. Its data, compute
and measured quality are in embedder/bundled/MODEL_CARD.md. Every entry point (serve, quickstart,
embed, config) reads ``DEFAULT_ENCODER``; ``resolver.load_encoder`` turns any spec into an encoder.
"""

from __future__ import annotations

from pathlib import Path

BUNDLED_SPEC = "bundled"
BUNDLED_NAME = "ecg-atlas-small-v1"
BUNDLED_FILE = "ecg-atlas-small-v1.pt"
#: pinned: the loader refuses a bundled file whose bytes differ from the released one
BUNDLED_SHA256 = "b1baa0cf39b446013d17ed97a3c81b11687184d475f25c3b686ebad4f8d1ee8a"
DEFAULT_ENCODER = BUNDLED_SPEC
#: where ECG-FM's own weights live, for messages that tell a user how to switch
ECGFM_HUB_CHECKPOINT = "hf:wanglab/ecg-fm/mimic_iv_ecg_physionet_pretrained.pt"


def bundled_path() -> Path:
    return Path(__file__).resolve().parent / "bundled" / BUNDLED_FILE


def is_bundled(spec: str) -> bool:
    return spec in (BUNDLED_SPEC, f"{BUNDLED_SPEC}:{BUNDLED_NAME}")


def checkpoint_choices() -> str:
    """What a user can pass instead of a checkpoint that is not there (errors end with this)."""
    return (f"pass `{BUNDLED_SPEC}` (the small open encoder shipped in the package, the default), "
            f"`{ECGFM_HUB_CHECKPOINT}` (ECG-FM's released weights, downloaded once through "
            "huggingface_hub; any hf:OWNER/REPO/FILE works), `random:PRESET` (an untrained baseline), "
            "or the path of a local file or folder that exists")


def bundled_notice() -> str:
    return (f"no ECG-FM checkpoint configured: running the bundled open encoder {BUNDLED_NAME} (a small "
            f"ECG-FM-architecture model that ECG Atlas pretrained on public ECGs; see its model card, "
            f"embedder/bundled/MODEL_CARD.md). It is not ECG-FM's published model: for that, pass "
            f"--checkpoint {ECGFM_HUB_CHECKPOINT} or a local .pt file")

