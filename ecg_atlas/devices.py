"""The one device parser: ``--device`` / ``device=`` strings for the encoder, the index and the server.

``auto`` (a GPU when there is one: each user decides how to look), ``cpu``, ``cuda`` (the current
GPU) or ``cuda:N`` (GPU N). Parsing needs neither torch nor faiss, so the server's settings are
checked without loading either; whoever runs on the device checks N against the GPUs it sees
(`require_visible`).
"""

from __future__ import annotations

from dataclasses import dataclass

from ecg_atlas.errors import DeviceError

DEVICE_TYPES = ("auto", "cpu", "cuda")
#: The accepted forms, as error messages and help texts name them.
DEVICE_FORMS = "'auto', 'cpu', 'cuda' or 'cuda:N'"


@dataclass(frozen=True)
class Device:
    """A parsed device: `type` is "auto", "cpu" or "cuda"; `index` is the N of "cuda:N" (None for
    plain "cuda", which leaves the choice of GPU to the library, and for "auto" / "cpu")."""

    type: str
    index: int | None = None

    @property
    def ordinal(self) -> int:
        """The GPU number, 0 where none was named."""
        return self.index or 0

    def __str__(self) -> str:
        return self.type if self.index is None else f"{self.type}:{self.index}"


def parse_device(device: str | object) -> Device:
    """`device` ("auto", "cpu", "cuda", "cuda:N", or anything whose str() is one: a torch.device)
    as a `Device`; anything else raises DeviceError naming the accepted forms."""
    text = str(device)
    name, colon, number = text.partition(":")
    if name in DEVICE_TYPES and not colon:
        return Device(name)
    if name == "cuda" and number.isascii() and number.isdigit():
        return Device(name, int(number))
    raise DeviceError(f"device must be {DEVICE_FORMS}, got {text!r}")


def require_visible(device: Device, visible: int) -> None:
    """Raise DeviceError if `device` names a GPU past the `visible` ones (numbered from 0)."""
    if device.index is not None and device.index >= visible:
        seen = f" (cuda:0 to cuda:{visible - 1})" if visible else ""
        raise DeviceError(f"device '{device}' was asked for but only {visible} GPU(s) are visible{seen}")
