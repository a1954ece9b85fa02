"""What a run records about the machine it ran on (the CPU class decides bf16 speed and numerics)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any


def cpu_info() -> dict[str, Any]:
    """The CPU's model name and its class for bf16 matmuls: AVX512-BF16, AVX512 (no BF16) or AVX2-only."""
    try:
        lines = Path("/proc/cpuinfo").read_text().splitlines()
    except OSError:
        return {"model": "unknown", "class": "unknown", "cores": os.cpu_count()}
    fields = dict(line.split(":", 1) for line in lines if ":" in line)
    fields = {key.strip(): value.strip() for key, value in fields.items()}
    flags = set(fields.get("flags", "").split())
    if "avx512_bf16" in flags:
        kind = "AVX512-BF16"
    elif "avx512f" in flags:
        kind = "AVX512 (no BF16)"
    elif "avx2" in flags:
        kind = "AVX2-only"
    else:
        kind = "no AVX2"
    return {"model": fields.get("model name", "unknown"), "class": kind, "cores": os.cpu_count()}
