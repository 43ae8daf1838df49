"""The one device parser (`ecg_atlas.devices`): the forms accepted, the refusals, GPU numbering,
and that parsing loads neither torch nor faiss."""

from __future__ import annotations

import subprocess
import sys

import pytest
import torch

from ecg_atlas.devices import Device, parse_device, require_visible
from ecg_atlas.errors import AtlasError, DeviceError


@pytest.mark.parametrize(("text", "device", "ordinal"), [
    ("auto", Device("auto"), 0),
    ("cpu", Device("cpu"), 0),
    ("cuda", Device("cuda", None), 0),  # the library's current GPU: no number chosen here
    ("cuda:0", Device("cuda", 0), 0),
    ("cuda:3", Device("cuda", 3), 3),
])
def test_accepted_forms_parse_to_one_value(text, device, ordinal):
    parsed = parse_device(text)
    assert parsed == device and parsed.ordinal == ordinal
    assert str(parsed) == text  # what was asked for, as the logs and messages print it


def test_a_torch_device_parses_as_its_string():
    assert parse_device(torch.device("cuda", 1)) == Device("cuda", 1)
    assert parse_device(torch.device("cpu")) == Device("cpu")


@pytest.mark.parametrize("text", ["gpu", "cuda:", "cuda:x", "cpu:1", "auto:0", "cuda:-1", "cuda:1.0",
                                  "CUDA", " cuda", "cuda: 1", "cuda:\u0663", "mps", ""])
def test_other_strings_are_refused_naming_the_accepted_forms(text):
    with pytest.raises(DeviceError, match="'auto', 'cpu', 'cuda' or 'cuda:N'") as caught:
        parse_device(text)
    assert caught.value.reason == "bad_device" and isinstance(caught.value, AtlasError)
    assert repr(text) in str(caught.value)


def test_a_gpu_past_the_visible_ones_is_refused():
    require_visible(Device("cuda", 1), 2)
    require_visible(Device("cuda"), 0)  # no number: whoever runs it finds out if there is a GPU
    require_visible(Device("cpu"), 0)
    with pytest.raises(DeviceError, match=r"'cuda:2' .* only 2 GPU\(s\) are visible \(cuda:0 to cuda:1\)"):
        require_visible(Device("cuda", 2), 2)
    with pytest.raises(DeviceError) as caught:
        require_visible(Device("cuda", 0), 0)
    assert str(caught.value).endswith("only 0 GPU(s) are visible")  # no "cuda:0 to cuda:-1"


def test_parsing_imports_neither_torch_nor_faiss():
    code = ("import sys; from ecg_atlas.devices import parse_device; parse_device('cuda:1'); "
            "print(sorted(m for m in ('torch', 'faiss') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True)
    assert out.stdout.strip() == "[]"
