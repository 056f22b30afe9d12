"""The machine a benchmark ran on: CPU model, cores, the ISA extensions that decide int8 / bf16 speed,
OS, Python and the versions of every library that computes a figure."""

from __future__ import annotations

import os
import platform
from importlib import metadata
from pathlib import Path

from facederm.runtime.cpu import CPUINFO, read_cpuinfo
from facederm.runtime.version import __version__

from .schema import Environment

#: /proc/cpuinfo flags reported: they decide which kernels the backends pick (VNNI and AMX for int8,
#: AVX-512 BF16 / AMX for OpenVINO's default bf16 compute).
ISA_FLAGS = ("avx2", "fma", "avx512f", "avx512_vnni", "avx512_bf16", "avx_vnni", "amx_tile", "amx_int8", "amx_bf16")

#: Distributions whose versions go into results.json (missing ones are recorded as "not installed").
LIBRARIES = ("numpy", "torch", "timm", "onnx", "onnxruntime", "openvino", "nncf", "coremltools", "tensorrt")


def usable_cpus() -> int:
    """CPUs this process may run on (affinity / cgroup-pinned), which is what thread counts should respect."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # not Linux
        return os.cpu_count() or 1


def library_versions() -> dict[str, str]:
    versions = {"facederm": __version__}
    for name in LIBRARIES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = "not installed"
    return versions


def describe_environment(threads: int, cpuinfo: Path = CPUINFO) -> Environment:
    """Read the environment once, at the start of a run."""
    cpus = read_cpuinfo(cpuinfo)
    first = cpus[0] if cpus else {}
    flags = set(first.get("flags", "").split())
    cores = {(c.get("physical id", "0"), c.get("core id")) for c in cpus if c.get("core id") is not None}
    return Environment(
        cpu_model=first.get("model name") or platform.processor() or platform.machine(),
        logical_cpus=os.cpu_count() or len(cpus) or 1,
        physical_cores=len(cores) or None,
        usable_cpus=usable_cpus(),
        isa={flag: flag in flags for flag in ISA_FLAGS},
        os=platform.platform(),
        python=platform.python_version(),
        versions=library_versions(),
        threads=threads,
    )
