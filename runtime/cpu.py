"""This CPU: its ISA flags, and what it does with int8 arithmetic (torch-free).

x86 int8 kernels of onnxruntime and OpenVINO multiply u8 activations by s8 weights. With VNNI (AVX-512 VNNI from
Cascade Lake / Zen 4, AVX-VNNI, AMX) the products are summed exactly in 32 bits; without it (AVX2, AVX-512 before
Cascade Lake) ``VPMADDUBSW`` sums pairs in 16 bits and saturates when weights use all 8 bits (255 x 127 x 2 >
32767). ARM's dot-product and widening multiply kernels do not saturate. An artifact exported with 8-bit int8
weights (``facederm-export --int8-weight-bits 8``) therefore decides as its gate measured only where the products
are exact; :func:`int8_saturates` says whether this CPU is not such a place.
"""

from __future__ import annotations

import functools
import os
import platform
from pathlib import Path
from typing import Any

#: /proc/cpuinfo flags (Linux) and numpy CPU-feature names that mean exact u8 x s8 dot products.
VNNI_FLAGS = frozenset({"avx512_vnni", "avx_vnni", "amx_int8"})
VNNI_FEATURES = ("AVX512VNNI", "AVX512_CLX", "AVXVNNI", "AVX_VNNI")
X86_MACHINES = frozenset({"x86_64", "amd64", "i386", "i686", "x86"})
#: Flags reported with a CPU: they pick the backends' kernels (VNNI, AMX for int8; AVX-512 BF16, AMX for bf16).
ISA_FLAGS = ("avx2", "fma", "avx512f", "avx512_vnni", "avx512_bf16", "avx_vnni", "amx_tile", "amx_int8", "amx_bf16")


CPUINFO = Path("/proc/cpuinfo")


def read_cpuinfo(path: Path = CPUINFO) -> list[dict[str, str]]:
    """One dict per logical CPU from /proc/cpuinfo (empty off Linux)."""
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return []
    cpus = []
    for block in text.strip().split("\n\n"):
        entry = {}
        for line in block.splitlines():
            key, sep, value = line.partition(":")
            if sep:
                entry[key.strip()] = value.strip()
        if entry:
            cpus.append(entry)
    return cpus


def usable_cpus() -> int:
    """CPUs this process may run on (affinity, cgroup pinning): what thread counts should respect."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # not Linux
        return os.cpu_count() or 1


def describe_cpu(path: Path = CPUINFO) -> dict[str, Any]:
    """``model``, ``logical_cpus``, ``physical_cores`` (None: unknown), ``usable_cpus`` and ``isa`` (each of
    :data:`ISA_FLAGS`: present or not): for benchmark records and crash reports."""
    cpus = read_cpuinfo(path)
    first = cpus[0] if cpus else {}
    flags = set(first.get("flags", "").split())
    cores = {(c.get("physical id", "0"), c.get("core id")) for c in cpus if c.get("core id") is not None}
    return {
        "model": first.get("model name") or platform.processor() or platform.machine(),
        "logical_cpus": os.cpu_count() or len(cpus) or 1,
        "physical_cores": len(cores) or None,
        "usable_cpus": usable_cpus(),
        "isa": {flag: flag in flags for flag in ISA_FLAGS},
    }


@functools.cache
def _cpuinfo_flags() -> frozenset[str] | None:
    """The first CPU's feature flags (x86 ``flags``, ARM ``Features``); None off Linux. Read once per process:
    they do not change while it runs, and the loader asks on every int8 load."""
    cpus = read_cpuinfo()
    first = cpus[0] if cpus else {}
    flags = first.get("flags", first.get("Features"))
    return None if flags is None else frozenset(flags.split())


def _numpy_features() -> dict[str, bool]:
    try:  # numpy's own dispatch table; private, so absence only means "unknown"
        from numpy._core._multiarray_umath import __cpu_features__
    except ImportError:
        return {}
    return dict(__cpu_features__)


def has_vnni(flags: set[str] | frozenset[str] | None = None, features: dict[str, bool] | None = None) -> bool | None:
    """True when this x86 CPU sums u8 x s8 products exactly (VNNI / AMX), False when it does not, None when it
    cannot tell (no /proc/cpuinfo and numpy reports no VNNI feature name)."""
    flags = _cpuinfo_flags() if flags is None else flags
    if flags:
        return bool(flags & VNNI_FLAGS)
    features = _numpy_features() if features is None else features
    if not features:
        return None
    return any(features.get(name) for name in VNNI_FEATURES)


def exact_int8_products(machine: str | None = None) -> bool:
    """Whether this CPU is known to sum u8 x s8 products exactly: ARM, or x86 with VNNI / AMX (False when unknown)."""
    machine = (machine or platform.machine()).lower()
    if machine.startswith(("arm", "aarch64")):
        return True
    return machine in X86_MACHINES and has_vnni() is True


def int8_saturates(machine: str | None = None) -> bool:
    """Whether 8-bit int8 weights can saturate here: an x86 CPU known to lack VNNI (False on ARM, and when unknown)."""
    machine = (machine or platform.machine()).lower()
    return machine in X86_MACHINES and has_vnni() is False
