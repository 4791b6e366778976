"""Where a run computes: the devices this machine has (``auto``, ``cpu``, ``cuda``, ``cuda:N``, ``mps``), checked
before a model loads, and described in words for a run's record."""
from __future__ import annotations

import os
import platform

import torch


class DeviceError(ValueError):
    """A device this machine cannot use; the message is one line with the devices it can."""


def _valid_devices() -> list[str]:
    valid = ["auto", "cpu"]
    if torch.cuda.is_available():
        valid += ["cuda"] + [f"cuda:{i}" for i in range(torch.cuda.device_count())]
    if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
        valid.append("mps")
    return valid


def resolve_device(device: str | torch.device | None = None) -> torch.device:
    """``None``/``"auto"`` -> ``cuda`` when available, else ``cpu``; otherwise ``cpu``, ``cuda``, ``cuda:N``
    (``N`` below the GPU count) or ``mps`` where this machine has them; a one-line :class:`DeviceError` if not."""
    if device is None or str(device) == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    valid = _valid_devices()
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError, ValueError):
        dev = None
    ok = dev is not None and (
        dev.type == "cpu" and dev.index in (None, 0)
        or dev.type == "cuda" and torch.cuda.is_available() and (dev.index or 0) < torch.cuda.device_count()
        or dev.type == "mps" and "mps" in valid)
    if not ok:
        why = "; torch sees no CUDA GPU" if dev is not None and dev.type == "cuda" and not torch.cuda.is_available() else ""
        raise DeviceError(f"device {str(device)!r} is not usable here{why}; use one of {', '.join(valid)}")
    return dev


def describe_device(device: str = "auto") -> str:
    """The device a run uses, in words: the GPU's name, or the CPU with its cores and torch's threads."""
    dev = resolve_device(device)
    if dev.type == "cuda":
        return f"cuda: {torch.cuda.get_device_name(dev)}"
    return f"cpu: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, torch threads {torch.get_num_threads()}"
