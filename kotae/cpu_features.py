"""What this CPU computes natively, read from ``/proc/cpuinfo`` flags (Linux; elsewhere no flags).

Two choices depend on it, both measured on 2-core machines of this project:

- bfloat16 training (``precision: auto``): with AVX-512 BF16 or AMX, bf16 autocast trained 1.8x faster
  than fp32; without them torch emulates bf16 and trained 14x *slower* (AMD EPYC, AVX2 only:
  0.15 vs 2.10 sequences/s, ``bench/bench_bf16_step.py``).
- the int8 reader (``runtime: auto``): with an int8 dot-product instruction (AVX-512 VNNI, AVX-VNNI,
  AMX) ONNX Runtime's int8 reader read 10 windows 2-2.6x faster than torch float32 (a busy
  machine); on that AVX2-only EPYC it was no faster (1.00 s vs 0.95 s, idle,
  ``bench/bench_reader_runtime.py``).

Example::

    flags = cpu_flags()
    print(native_bf16(flags), int8_dot_product(flags))
"""

from __future__ import annotations

from pathlib import Path

BF16_FLAGS = frozenset({"avx512_bf16", "amx_bf16"})
INT8_DOT_FLAGS = frozenset({"avx512_vnni", "avx_vnni", "amx_int8"})


def cpu_flags(cpuinfo: str | None = None) -> frozenset[str]:
    """The ``flags`` of ``cpuinfo`` text (default: this machine's ``/proc/cpuinfo``; none if unreadable)."""
    if cpuinfo is None:
        try:
            cpuinfo = Path("/proc/cpuinfo").read_text(encoding="utf-8", errors="replace")
        except OSError:
            cpuinfo = ""
    return frozenset(
        flag
        for line in cpuinfo.splitlines()
        if line.startswith("flags")
        for flag in line.split(":", 1)[-1].split()
    )


def native_bf16(flags: frozenset[str]) -> bool:
    """Whether bfloat16 matrix products are native (AVX-512 BF16 or AMX), not emulated."""
    return bool(flags & BF16_FLAGS)


def int8_dot_product(flags: frozenset[str]) -> bool:
    """Whether the CPU has an int8 dot-product instruction (AVX-512 VNNI, AVX-VNNI or AMX)."""
    return bool(flags & INT8_DOT_FLAGS)
