"""Which encoder runs when none is configured (torch-free, so client-side commands stay light).

``bundled`` is the current release of ECG Atlas's own small ECG-FM-architecture encoder,
ecg-atlas-small-v3: v1 (pretrained on the train-split patients of the project's 367 public ECGs)
fine-tuned on PTB-XL folds 1-7 and those ECGs' labels, rhythm groups included
(embedder/bundled_recipe.py). Every release ships inside the package so the service works offline
and a store made with an earlier one keeps working: ``bundled:v1`` / ``bundled:v2`` (or
``bundled:ecg-atlas-small-v1``...) load them. It is *not* ECG-FM's published model. Data, compute and
measured quality: embedder/bundled/MODEL_CARD.md (v3), MODEL_CARD_v2.md and MODEL_CARD_v1.md.
Every entry point (serve, quickstart, embed, config) reads ``DEFAULT_ENCODER``;
``resolver.load_encoder`` turns any spec into an encoder.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from ecg_atlas.errors import CheckpointError

BUNDLED_SPEC = "bundled"


@dataclass(frozen=True)
class BundledRelease:
    """One release of the bundled encoder; the loader refuses a file whose bytes differ from ``sha256``."""

    version: str   # "v1"
    name: str      # its model_id in stores: "ecg-atlas-small-v1"
    file: str      # under embedder/bundled/
    sha256: str
    card: str      # its model card, under embedder/bundled/
    headline: str  # its measured quality in one line (the card's; `make encoder-quality`)

    @property
    def spec(self) -> str:
        return f"{BUNDLED_SPEC}:{self.version}"


RELEASES = {r.version: r for r in (
    BundledRelease("v1", "ecg-atlas-small-v1", "ecg-atlas-small-v1.pt",
                   "b1baa0cf39b446013d17ed97a3c81b11687184d475f25c3b686ebad4f8d1ee8a", "MODEL_CARD_v1.md",
                   "only a little better than a random-init encoder of its shape"),
    BundledRelease("v2", "ecg-atlas-small-v2", "ecg-atlas-small-v2.pt",
                   "3cb730ad52a1598dcdb3bb15d5f5431258271378d805fb175c1ffa90002fe22b", "MODEL_CARD_v2.md",
                   ("PTB-XL fold 9 linear-probe macro AUROC 0.903 against 0.877-0.892 for random-init "
                    "encoders of its shape; retrieval by diagnosis on held-out ECGs 1.65x random init")),
    BundledRelease("v3", "ecg-atlas-small-v3", "ecg-atlas-small-v3.pt",
                   "c0215fcee49411755e7df58ac400efac8984a3108af03987e6bd9f3f8ed715af", "MODEL_CARD.md",
                   ("PTB-XL fold 9 linear-probe macro AUROC 0.895 against 0.877-0.892 for random-init "
                    "encoders of its shape; retrieval by diagnosis on held-out ECGs 1.74x random init")),
)}
#: what plain ``bundled`` loads
CURRENT = RELEASES["v3"]
BUNDLED_NAME, BUNDLED_FILE, BUNDLED_SHA256 = CURRENT.name, CURRENT.file, CURRENT.sha256
DEFAULT_ENCODER = BUNDLED_SPEC
#: where ECG-FM's own weights live, for messages that tell a user how to switch
ECGFM_HUB_CHECKPOINT = "hf:wanglab/ecg-fm/mimic_iv_ecg_physionet_pretrained.pt"


def bundled_release(spec: str) -> BundledRelease | None:
    """The release ``spec`` names (``bundled``, ``bundled:v1``, ``bundled:ecg-atlas-small-v1``), None
    for a spec that is not a bundled one; CheckpointError for ``bundled:`` + an unknown release."""
    if spec == BUNDLED_SPEC:
        return CURRENT
    if not spec.startswith(f"{BUNDLED_SPEC}:"):
        return None
    wanted = spec.partition(":")[2]
    for release in RELEASES.values():
        if wanted in (release.version, release.name):
            return release
    raise CheckpointError(f"no bundled encoder {wanted!r}; this installation ships "
                          + ", ".join(f"{r.spec} ({r.name})" for r in RELEASES.values())
                          + f"; plain `{BUNDLED_SPEC}` is {CURRENT.name}")


def release_for_sha256(sha256: str | None) -> BundledRelease | None:
    """The bundled release whose file has this sha256 (a store's identity names it), if any."""
    return next((r for r in RELEASES.values() if r.sha256 == sha256), None)


def bundled_path(release: BundledRelease = CURRENT) -> Path:
    return Path(__file__).resolve().parent / "bundled" / release.file


def is_bundled(spec: str) -> bool:
    return bundled_release(spec) is not None


def checkpoint_choices() -> str:
    """What a user can pass instead of a checkpoint that is not there (errors end with this)."""
    return (f"pass `{BUNDLED_SPEC}` (the small open encoder shipped in the package, the default; "
            f"`{BUNDLED_SPEC}:v1` loads its first release), "
            f"`{ECGFM_HUB_CHECKPOINT}` (ECG-FM's released weights, downloaded once through "
            "huggingface_hub; any hf:OWNER/REPO/FILE works), `random:PRESET` (an untrained baseline), "
            "or the path of a local file or folder that exists")


def bundled_notice(release: BundledRelease = CURRENT) -> str:
    return (f"no ECG-FM checkpoint configured: running the bundled open encoder {release.name} (a small "
            f"ECG-FM-architecture model that ECG Atlas trained on public ECGs; measured: {release.headline}; "
            f"see its model card, embedder/bundled/{release.card}). It is not ECG-FM's published model: for that, pass "
            f"--checkpoint {ECGFM_HUB_CHECKPOINT} or a local .pt file")

