"""The one place that decides numeric precision and memory format from what the hardware does.

``resolve_precision("auto", device)`` picks bf16 autocast only where bf16 runs natively (the
measurements behind each choice are in docs/precision.md):

* CUDA: the device supports bf16 (``torch.cuda.is_bf16_supported()``).
* CPU: the processor has AVX-512 BF16 or AMX **and** the kernels torch will actually run may use
  them. On a CPU without native bf16 (AVX2 only, most laptops and many cloud machines) bf16 is
  emulated and several times *slower* than fp32, so ``auto`` means fp32 there.

The kernel check matters because torch honours two restrictions that the CPU flags do not show:
``ATEN_CPU_CAPABILITY`` (reported by ``torch.backends.cpu.get_cpu_capability()``) and oneDNN's
``ONEDNN_MAX_CPU_ISA`` (not exposed by torch, so its environment variable is read). With either set
below the bf16 ISA, the convolutions run emulated bf16 even on a bf16-capable CPU, and ``auto``
chooses fp32, as it would on a real AVX2 machine.

channels_last (NHWC) is decided separately, by what was measured faster on each path: on CPU it
won in both precisions, so it is always on there; on CUDA it is used with bf16 (tensor-core NHWC
kernels) and left off in fp32.

Nothing else in the code base inspects the CPU: ask :func:`resolve_precision` or
:func:`hardware_summary`.
"""
from __future__ import annotations

import contextlib
import os
import platform
from dataclasses import dataclass
from functools import lru_cache

import torch

PRECISIONS = ("auto", "bf16", "fp32")

# oneDNN ISA names (ONEDNN_MAX_CPU_ISA) that include native bf16 dot products.
_ONEDNN_BF16_ISAS = {"AVX512_CORE_BF16", "AVX512_CORE_FP16", "AVX512_CORE_AMX", "AVX512_CORE_AMX_FP16",
                     "AVX10_1_512", "AVX10_1_512_AMX", "AVX10_1_512_AMX_FP16", "AVX10_2_512",
                     "AVX10_2_512_AMX_2", "ALL", "DEFAULT"}


@dataclass(frozen=True)
class Precision:
    """The resolved choice: ``name`` is ``bf16`` or ``fp32``; ``reason`` says why, for the log;
    ``requested`` is what was asked for (``auto``, ``bf16`` or ``fp32``), to hand on to sub-tasks."""

    name: str
    channels_last: bool
    reason: str
    requested: str = "auto"

    @property
    def amp(self) -> bool:
        """bf16 autocast on."""
        return self.name == "bf16"

    def describe(self) -> str:
        layout = "channels_last" if self.channels_last else "contiguous"
        return f"precision: {self.name} ({self.reason}); {layout} convolutions"

    @property
    def label(self) -> str:
        """Short column label for benchmark tables, e.g. ``fp32+CL``."""
        return self.name + ("+CL" if self.channels_last else "")

    def autocast(self, device: torch.device | str) -> contextlib.AbstractContextManager:
        from .model import autocast
        return autocast(device, self.amp)


@dataclass(frozen=True)
class CpuInfo:
    """What the CPU has and what the kernels torch runs may use."""

    model: str
    has_avx2: bool
    has_avx512: bool
    has_avx512_bf16: bool
    has_amx: bool
    aten_capability: str  # torch.backends.cpu.get_cpu_capability(): DEFAULT | AVX2 | AVX512 | ...
    onednn_max_isa: str | None  # ONEDNN_MAX_CPU_ISA, if set

    @property
    def capability(self) -> str:
        """The hardware class: ``AMX``, ``AVX-512 BF16``, ``AVX-512``, ``AVX2`` or ``baseline``."""
        if self.has_amx:
            return "AMX"
        if self.has_avx512_bf16:
            return "AVX-512 BF16"
        if self.has_avx512:
            return "AVX-512"
        return "AVX2" if self.has_avx2 else "baseline"

    @property
    def restriction(self) -> str | None:
        """The kernel restriction that rules out native bf16, if any (None: none does)."""
        if self.onednn_max_isa is not None and self.onednn_max_isa.upper() not in _ONEDNN_BF16_ISAS:
            return f"ONEDNN_MAX_CPU_ISA={self.onednn_max_isa}"
        if not self.aten_capability.upper().startswith("AVX512"):
            return f"ATen kernels limited to {self.aten_capability}"
        return None

    @property
    def native_bf16(self) -> bool:
        return (self.has_avx512_bf16 or self.has_amx) and self.restriction is None


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown CPU"


@lru_cache(maxsize=1)
def cpu_info() -> CpuInfo:
    return CpuInfo(model=_cpu_model(), has_avx2=bool(torch.cpu._is_avx2_supported()),
                   has_avx512=bool(torch.cpu._is_avx512_supported()),
                   has_avx512_bf16=bool(torch.cpu._is_avx512_bf16_supported()),
                   has_amx=bool(torch.cpu._is_amx_tile_supported()),
                   aten_capability=str(torch.backends.cpu.get_cpu_capability()),
                   onednn_max_isa=os.environ.get("ONEDNN_MAX_CPU_ISA") or None)


def native_bf16(device: torch.device | str) -> tuple[bool, str]:
    """(bf16 runs natively on ``device``, the reason in a few words)."""
    device = torch.device(device)
    if device.type == "cuda":
        if torch.cuda.is_bf16_supported():
            return True, f"{torch.cuda.get_device_name(device)} supports bf16"
        return False, f"{torch.cuda.get_device_name(device)} has no bf16 support"
    if device.type != "cpu":
        return False, f"no bf16 autocast on {device.type}"
    info = cpu_info()
    if not (info.has_avx512_bf16 or info.has_amx):
        return False, f"CPU has no native bf16: {info.capability}"
    if info.restriction is not None:
        return False, f"CPU has {info.capability} but {info.restriction}, so bf16 would be emulated"
    return True, f"CPU has native bf16: {info.capability}"


def resolve_precision(requested: str | bool | None = "auto", device: torch.device | str = "cpu") -> Precision:
    """``auto`` | ``bf16`` | ``fp32`` -> :class:`Precision` for ``device``.

    ``True``/``False`` are the legacy ``amp`` switch (``--no_amp`` / ``amp=false``): bf16 / fp32.
    ``None`` means ``auto``.
    """
    if requested is None:
        requested = "auto"
    elif isinstance(requested, bool):
        requested = "bf16" if requested else "fp32"
    requested = str(requested).lower()
    if requested not in PRECISIONS:
        raise ValueError(f"precision must be one of {', '.join(PRECISIONS)}, got {requested!r}")
    device = torch.device(device)
    native, why = native_bf16(device)
    if requested == "auto":
        name, reason = ("bf16" if native else "fp32"), f"auto: {why}"
    else:
        name = requested
        reason = "requested" + ("" if native or name == "fp32" else f"; note: {why}")
    channels_last = device.type == "cpu" or name == "bf16"
    return Precision(name, channels_last, reason, requested)


def add_precision_flag(parser, default: str | list[str] = "auto", compare: bool = False) -> None:
    """``--precision`` (and ``--no_amp``, its legacy alias of fp32) on an argparse parser. With
    ``compare`` (benchmarks) it takes several values, run side by side, ratios against the first."""
    shown = "auto" if default == "==SUPPRESS==" else default  # argparse.SUPPRESS: the caller's config decides
    if compare:
        parser.add_argument("--precision", nargs="+", choices=PRECISIONS, default=default,
                            help="precisions compared side by side, ratios against the first (default: "
                                 f"{' '.join(default)}); auto = what a run would choose on this machine")
    else:
        parser.add_argument("--precision", choices=PRECISIONS, default=default,
                            help="auto: bf16 autocast only where the hardware runs bf16 natively (AVX-512 BF16 / "
                                 f"AMX CPUs, bf16 GPUs), else fp32; or force bf16 | fp32 (default {shown})")
    parser.add_argument("--no_amp", dest="precision", action="store_const", const=["fp32"] if compare else "fp32",
                        help="alias of --precision fp32")


def hardware_summary(threads: int | None = None) -> str:
    """One line for benchmark output: CPU model, capability, native bf16, torch threads (+ GPU)."""
    info = cpu_info()
    native, why = native_bf16("cpu")
    parts = [f"CPU: {info.model}", f"capability {info.capability}",
             f"native bf16 {'yes' if native else 'no'} ({why})",
             f"torch threads {threads if threads is not None else torch.get_num_threads()}"]
    if torch.cuda.is_available():
        parts.append(f"GPU: {torch.cuda.get_device_name(0)}")
    return "; ".join(parts)


__all__ = ["PRECISIONS", "CpuInfo", "Precision", "add_precision_flag", "cpu_info", "hardware_summary", "native_bf16", "resolve_precision"]
