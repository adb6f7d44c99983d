"""Device and precision choice from the `device` and `trainer.amp` settings."""

import contextlib
import os

import torch

from cnnlab.errors import UserError


def resolve_device(name: str, local_rank: int | None = None) -> torch.device:
    """`device`: auto (CUDA, else Apple's MPS, else the CPU), cpu, cuda, cuda:N or mps; a missing one is a UserError.

    A process of a data-parallel run (`local_rank`: its index on its machine) trains on CUDA device `local_rank`
    when the run trains on CUDA, and on the CPU otherwise.
    """
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "mps" if torch.backends.mps.is_available() else "cpu"
    if local_rank is not None and name.split(":")[0] == "cuda":
        name = f"cuda:{local_rank}"
    device = torch.device(name)
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise UserError(f"device={name} but CUDA is not available here; use device=cpu or device=auto")
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise UserError(
                f"device={name} but only {torch.cuda.device_count()} CUDA device(s) exist; use device=cuda:0"
            )
    if device.type == "mps" and not torch.backends.mps.is_available():
        raise UserError("device=mps but MPS is not available here; use device=cpu or device=auto")
    return device


def flush_denormals(device: torch.device) -> None:
    """On the CPU, treat subnormal floats as zero for the rest of the process.

    x86 cores handle subnormals (magnitudes below 1e-38) in slow microcode; gradients and momenta decaying toward
    zero produce them, and in the fast CIFAR-10 recipe they made every step 4x slower. GPUs flush them in their
    fast paths already; the precision lost is far below anything training can notice.
    """
    if device.type == "cpu":
        torch.set_flush_denormal(True)


def set_deterministic(enabled: bool) -> None:
    """Make this process's kernels deterministic (`trainer.deterministic`), or let them choose freely again.

    Set for every run, on or off, because a sweep runs its trials in one process. On CUDA, cuBLAS needs its
    workspace config before its first call (set here unless the user set it), cuDNN stops autotuning, and an
    operation without a deterministic kernel raises instead of silently differing between runs.
    """
    torch.use_deterministic_algorithms(enabled)
    torch.backends.cudnn.deterministic = enabled
    torch.backends.cudnn.benchmark = False if enabled else torch.backends.cudnn.benchmark
    if enabled:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")


def autocast_dtype(device: torch.device, amp: bool | str) -> torch.dtype | None:
    """The mixed-precision dtype, or None for full fp32. auto: bf16 (or fp16) on CUDA, off elsewhere."""
    if amp is False or (amp == "auto" and device.type != "cuda"):
        return None
    if device.type == "cuda":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    return torch.bfloat16


def synchronize(device: torch.device) -> None:
    """Wait for queued CUDA work, so wall-clock timings measure the work and not its launch."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def autocast(device: torch.device, dtype: torch.dtype | None) -> contextlib.AbstractContextManager:
    """Mixed precision in `dtype` on `device`, or nothing when dtype is None."""
    return contextlib.nullcontext() if dtype is None else torch.autocast(device.type, dtype=dtype)
