"""bf16 where the hardware runs it natively, float32 elsewhere.

bf16 autocast trains SmolLM2-135M 1.6-1.9x faster than float32 on a CPU with AVX512-BF16, but where the CPU lacks
bf16 instructions (AVX2) torch emulates it and one optimizer step took 70 s instead of 4 s. So a recipe that leaves
`bf16` unset gets the precision of the hardware the job trains on; `bf16: true` is honoured, with a one-line warning
where it will be emulated. The choice and its reason go to the log and to `run_info.json`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

# What `cpu_capability` reports for CPUs with bf16 instructions (torch's own capability string stops at AVX512).
NATIVE_BF16_CPU_CAPABILITIES = ("AVX512_BF16", "AMX")


@dataclass(frozen=True)
class Precision:
    """The chosen precision, why, and the machine's CPU capability (what decides on CPU)."""

    bf16: bool
    reason: str
    cpu_capability: str | None
    warning: str | None = None

    def as_dict(self) -> dict[str, Any]:
        """The `precision` entry of run_info.json."""
        return {"dtype": "bf16" if self.bf16 else "fp32", "reason": self.reason, "cpu_capability": self.cpu_capability}


def cpu_capability() -> str:
    """torch's CPU capability (`AVX2`, `AVX512`, ...), refined to `AMX` or `AVX512_BF16` when the CPU has those."""
    import torch

    if torch.cpu._is_amx_tile_supported():
        return "AMX"
    if torch.cpu._is_avx512_bf16_supported():
        return "AVX512_BF16"
    return torch.backends.cpu.get_cpu_capability()


def machine_info() -> dict[str, Any]:
    """What bitwise reproducibility and speed depend on: the CPU, the kernels torch picks for it (`cpu_capability`),
    whether it has bf16 instructions (`cpu_bf16`: what `choose_precision` reads), and the thread count."""
    import platform
    from pathlib import Path

    import torch

    cpu = platform.processor() or platform.machine()
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.is_file():
        names = [line.split(":", 1)[1].strip() for line in cpuinfo.read_text().splitlines() if "model name" in line]
        cpu = names[0] if names else cpu
    return {
        "cpu": cpu,
        "cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "cpu_bf16": cpu_capability() in NATIVE_BF16_CPU_CAPABILITIES,
        "torch_threads": torch.get_num_threads(),
        "cuda": torch.cuda.is_available(),
    }


def cuda_bf16_supported() -> bool:
    import torch

    return torch.cuda.is_bf16_supported()


def trains_on_cpu(use_cpu: bool) -> bool:
    import torch

    return use_cpu or not torch.cuda.is_available()


def choose_precision(requested: bool | None, *, on_cpu: bool, capability: str | None = None) -> Precision:
    """bf16 when `requested` says so or, unset (None), when the device runs it natively; else float32.

    `capability` stands in for `cpu_capability()` (tests); on CUDA the device's own bf16 support decides.
    """
    capability = capability or cpu_capability()
    if on_cpu:
        native = capability in NATIVE_BF16_CPU_CAPABILITIES
        device = f"CPU capability {capability}"
    else:
        native = cuda_bf16_supported()
        device = "this CUDA device"
    support = "runs bf16 natively" if native else "has no bf16 instructions (bf16 would be emulated)"
    if requested is None:
        return Precision(native, f"bf16 unset: {device} {support}", capability)
    if requested and not native:
        warning = f"bf16 is set but {device} has no bf16 instructions: emulated, many times slower (unset it for fp32)"
        return Precision(True, f"bf16 set by the recipe; {device} {support}", capability, warning)
    return Precision(requested, f"bf16 {str(requested).lower()} set by the recipe; {device} {support}", capability)
