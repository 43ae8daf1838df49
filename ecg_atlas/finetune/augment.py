"""Training-time augmentation of model-ready windows (``ecg-atlas finetune --augment``).

A small labelled set (a few thousand 5-s windows) is memorised within a few epochs; these
label-preserving perturbations make each pass over it a little different. All act on a batch
(B, 12, N) of windows as the encoder's own preprocessing left them (per-lead z-scored for the
ECG-FM family) and draw from torch's global generator, which the trainer seeds per process and
saves in its checkpoints, so an augmented run is as reproducible and resumable as a plain one.

* **time shift**: each window rolled by a random number of samples (the rhythm and beat shapes
  are unchanged; a window's start is arbitrary anyway);
* **amplitude**: each lead scaled by a factor drawn log-uniformly in [1/1.25, 1.25] (gain and
  electrode-placement differences between machines);
* **baseline wander**: a sinusoid of 0.05–0.5 Hz with a random phase and an amplitude up to 0.2
  (in z-score units) added per lead (what a band-pass leaves of respiration and movement);
* **noise**: Gaussian, SD 0.03 (mains and muscle noise after preprocessing);
* **missing leads**: each lead zeroed with probability 0.05, as the service zero-fills a lead an
  ECG lacks (never all of them).
"""

from __future__ import annotations

import math

import torch

MAX_GAIN = 1.25
WANDER_HZ = (0.05, 0.5)
WANDER_AMPLITUDE = 0.2
NOISE_SD = 0.03
LEAD_DROP = 0.05


def augment(x: torch.Tensor, *, fs: float) -> torch.Tensor:
    """A perturbed copy of the (B, L, N) batch ``x`` of windows sampled at ``fs`` Hz."""
    b, leads, n = x.shape
    dev, dtype = x.device, x.dtype
    shifts = torch.randint(0, n, (b,))
    index = (torch.arange(n).unsqueeze(0) + shifts.unsqueeze(1)) % n           # (B, N)
    out = torch.gather(x, 2, index.to(dev).unsqueeze(1).expand(b, leads, n))
    gain = torch.exp((torch.rand(b, leads, 1) * 2 - 1) * math.log(MAX_GAIN))
    t = torch.arange(n, dtype=torch.float32) / fs
    hz = WANDER_HZ[0] + torch.rand(b, leads, 1) * (WANDER_HZ[1] - WANDER_HZ[0])
    phase = torch.rand(b, leads, 1) * 2 * math.pi
    wander = torch.rand(b, leads, 1) * WANDER_AMPLITUDE * torch.sin(2 * math.pi * hz * t + phase)
    noise = torch.randn(b, leads, n) * NOISE_SD
    keep = (torch.rand(b, leads, 1) >= LEAD_DROP).float()
    keep[keep.sum(dim=1).squeeze(1) == 0] = 1.0                                 # never every lead
    return (out * gain.to(dev, dtype) + (wander + noise).to(dev, dtype)) * keep.to(dev, dtype)
