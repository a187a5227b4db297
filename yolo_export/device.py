"""Device selection: 'cpu', '0', 'cuda:0', 'cuda', '0,1'. Asking for CUDA where there is none is one clear line."""

from __future__ import annotations

from yolo_export.errors import ArgumentError, NotAvailable


def parse_device(device) -> str:
    """Normalise to 'cpu' or 'cuda:N' without importing torch (for the CLI)."""
    if device is None or device == "":
        return "cpu"
    d = str(device).strip().lower().replace(" ", "")
    if d in ("cpu", "mps"):
        return d
    if d == "cuda":
        return "cuda:0"
    d = d.removeprefix("cuda:")
    if d.split(",")[0].isdigit():
        return f"cuda:{d.split(',')[0]}"
    raise ArgumentError(f"unknown device '{device}' (use cpu, 0, cuda:0)")


def select_device(device=None):
    """A torch.device, checked: CUDA requested without a visible NVIDIA GPU raises NotAvailable."""
    import torch

    d = parse_device(device)
    if d.startswith("cuda"):
        if not torch.cuda.is_available():
            raise NotAvailable(
                f"device '{device}' asks for CUDA, but this machine has no usable NVIDIA GPU "
                f"(torch {torch.__version__}, torch.cuda.is_available() is False); use --device cpu"
            )
        idx = int(d.split(":")[1])
        if idx >= torch.cuda.device_count():
            raise NotAvailable(f"device '{device}': only {torch.cuda.device_count()} CUDA device(s) visible")
    if d == "mps" and not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
        raise NotAvailable("device 'mps' asks for Apple's GPU, which this machine does not have")
    return torch.device(d)
