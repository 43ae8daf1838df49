"""What an encoder expects and gives back, carried by the encoder itself (timm's habit).

Every encoder (ECG-FM, HuBERT-ECG, ECGFounder, the bundled one, random-init twins) exposes one
``EncoderContract``: its input (leads and their order, sampling rate, window and windowing,
filtering, normalisation, the preprocessing version), its output (dimension, pooling), and where
its weights may be used (licence, citation). ``Info``, the store identity and ``embed --json``
report ``contract.to_dict()``; ``licence_notice`` is what must be announced at start-up when the
weights are not free for any use.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

from .recording import STANDARD_LEADS


@dataclass(frozen=True)
class EncoderContract:
    name: str  # the model family in the user's words: "ECG-FM", "HuBERT-ECG", "ECGFounder"
    architecture: str  # e.g. "wav2vec 2.0 transformer, 12 layers x 768"
    leads: tuple[str, ...]
    fs: int  # Hz of the model-ready windows (before any decimation inside the pipeline)
    segment_samples: int  # samples of one window at ``fs``
    input_shape: tuple[int, int]  # one model-ready window as ``preprocess`` returns it: (leads, samples)
    windowing: str
    filtering: str
    normalisation: str
    preprocessing_version: str  # bumped whenever the numbers of preprocessing change; stored per vector
    dim: int
    pooling: str
    weight_licence: str
    citation: str
    #: False: the weights may not be used commercially; None: their licence is not stated anywhere.
    commercial_use: bool | None = True
    source: str = ""  # where the released weights live

    @property
    def window_s(self) -> float:
        return self.segment_samples / self.fs

    @property
    def licence_notice(self) -> str:
        """'' when the weights are free to use; otherwise what the service must announce."""
        if self.commercial_use is False:
            return (f"{self.name} weights are licensed {self.weight_licence}: NON-COMMERCIAL use only. "
                    f"Vectors made with them inherit that restriction")
        if self.commercial_use is None:
            return (f"{self.name} weights: {self.weight_licence}. No licence is stated for them; "
                    f"check with their authors before any use beyond research")
        return ""

    def to_dict(self) -> dict:
        out = asdict(self)
        out["leads"] = list(self.leads)
        out["input_shape"] = list(self.input_shape)
        out["window_s"] = self.window_s
        out["licence_notice"] = self.licence_notice
        return out


ECGFM_CITATION = ("Mckeen K. et al., ECG-FM: an open electrocardiogram foundation model, arXiv:2408.05178 "
                  "(2024)")


def ecgfm_contract(*, name: str = "ECG-FM", architecture: str, dim: int, weight_licence: str,
                   commercial_use: bool | None = True, source: str = "", citation: str = ECGFM_CITATION
                   ) -> EncoderContract:
    """ECG-FM's input contract (ecgfm_spec.md §7) for an ECG-FM-architecture network."""
    from .recording import PREPROCESSING_VERSION, SEGMENT_SAMPLES, TARGET_FS

    return EncoderContract(
        name=name, architecture=architecture, leads=STANDARD_LEADS, fs=TARGET_FS,
        segment_samples=SEGMENT_SAMPLES, input_shape=(len(STANDARD_LEADS), SEGMENT_SAMPLES),
        windowing="non-overlapping 5-s windows from the start, remainder dropped; record vector = mean",
        filtering="none; linear resampling to 500 Hz (fairseq-signals' interp1d placement)",
        normalisation="per-lead z-score over the whole record (population std); flat leads set to 0",
        preprocessing_version=PREPROCESSING_VERSION, dim=dim,
        pooling="final-layer output, sum over time / count of non-zero values (ECG-FM's encoder_out_to_emb)",
        weight_licence=weight_licence, citation=citation, commercial_use=commercial_use, source=source,
    )
