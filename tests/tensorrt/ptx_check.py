"""Compile the plugin kernels to PTX for Jetson Orin (sm_87, JetPack 6.2 driver: PTX ISA <= 8.5) and Hopper
(sm_90) without a GPU, in a child process (``python -m tests.tensorrt.ptx_check``, TRITON_INTERPRET unset).

Prints one JSON object: per compilation the entry name, ``.version``/``.target`` and the entry's parameters
as (PTX type, name).
"""
from __future__ import annotations

import json
import re
import sys

from pem.export.tensorrt.plugins.ptx import deform_conv2d_ptx, driver_ptx_version, prototype_gather_ptx


def describe(ptx: str, name: str) -> dict[str, object]:
    entry = re.search(rf"\.entry {name}\((.*?)\)", ptx, flags=re.DOTALL)
    params = [] if entry is None else [[p.split()[1], p.split()[-1]] for p in entry.group(1).split(",") if p.strip()]
    return {"entry": entry is not None, "params": params, "version": re.search(r"\.version (\S+)", ptx).group(1),
            "target": re.search(r"\.target (\S+)", ptx).group(1)}


def main() -> int:
    jetpack62 = driver_ptx_version(12060)
    results = {}
    for arch in (87, 90):
        cap = jetpack62 if arch == 87 else None
        for label, kernel in (("deform_conv2d", deform_conv2d_ptx("fp16", arch, (3, 3), 32, cap)),
                              ("prototype_gather", prototype_gather_ptx("fp32", arch, 64, cap))):
            results[f"{label}_sm{arch}"] = {"name": kernel.name, "num_warps": kernel.num_warps,
                                            "declared": kernel.params, "constants": kernel.constants,
                                            **describe(kernel.ptx, kernel.name)}
    json.dump(results, sys.stdout)
    return 0


if __name__ == "__main__":
    sys.exit(main())
