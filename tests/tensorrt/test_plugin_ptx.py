"""The plugins' PTX: compiled without a GPU for sm_87 and sm_90, entries taking exactly TensorRT's arguments."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from pem.export.tensorrt.plugins.ptx import strip_trailing_params

REPO = Path(__file__).resolve().parents[2]

PTX = """.version 8.5
.target sm_87
.visible .entry k(
\t.param .u64 .ptr .global .align 1 k_param_0,
\t.param .u32 k_param_1,
\t.param .u64 .ptr .global .align 1 k_param_2,
\t.param .u64 .ptr .global .align 1 k_param_3
)
{
\tld.param.b64 \t%rd1, [k_param_0];
\tld.param.b32 \t%r1, [k_param_1];
}
"""


def test_strip_trailing_params() -> None:
    stripped = strip_trailing_params(PTX, "k", 2)
    assert "k_param_1\n)" in stripped and "k_param_2" not in stripped and "k_param_3" not in stripped
    assert stripped.endswith("[k_param_1];\n}\n")
    with pytest.raises(ValueError, match="k reads its parameter 1"):
        strip_trailing_params(PTX, "k", 1)
    with pytest.raises(ValueError, match="k has 4 parameters, expected at least 5"):
        strip_trailing_params(PTX, "k", 5)
    with pytest.raises(ValueError, match="no .entry other"):
        strip_trailing_params(PTX, "other", 1)


def test_plugin_kernels_compile_for_orin_and_hopper(tmp_path: Path) -> None:
    pytest.importorskip("triton")
    env = {key: value for key, value in os.environ.items() if key != "TRITON_INTERPRET"}
    env["TRITON_CACHE_DIR"] = str(tmp_path)
    result = subprocess.run([sys.executable, "-m", "tests.tensorrt.ptx_check"], cwd=REPO, env=env,
                            capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-4000:]
    kernels = json.loads(result.stdout)
    for arch in (87, 90):
        deform, gather = kernels[f"deform_conv2d_sm{arch}"], kernels[f"prototype_gather_sm{arch}"]
        assert deform["name"] == "deform_conv2d_plugin_kernel" and gather["name"] == "prototype_gather_plugin_kernel"
        # TensorRT passes the 5 input pointers, 12 scalars, the output pointer; Triton's scratch pointers are gone
        assert deform["entry"] and len(deform["params"]) == deform["declared"] == 18
        assert [kind for kind, _ in deform["params"]] == [".u64"] * 5 + [".u32"] * 12 + [".u64"]
        assert deform["params"][-1][1] == "deform_conv2d_plugin_kernel_param_17"
        assert gather["entry"] and len(gather["params"]) == gather["declared"] == 9
        assert [kind for kind, _ in gather["params"]] == [".u64"] * 4 + [".u32"] * 4 + [".u64"]
        assert deform["target"].startswith(f"sm_{arch}") and gather["target"].startswith(f"sm_{arch}")
        assert deform["num_warps"] == 4 and deform["constants"]["BLOCK_CO"] == 32
        assert gather["constants"]["BLOCK_D"] == 64
    assert kernels["deform_conv2d_sm87"]["version"] == kernels["prototype_gather_sm87"]["version"] == "8.5"
