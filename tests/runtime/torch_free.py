"""Run Python code in a subprocess where torch, torchvision and every ``pem`` module outside ``pem.runtime``
cannot be imported: a meta-path finder raises ImportError for them, so any hidden dependency fails loudly."""
from __future__ import annotations

import subprocess
import sys
import textwrap

BLOCKER = textwrap.dedent('''
    import importlib.abc
    import sys

    class _DeployOnly(importlib.abc.MetaPathFinder):
        def find_spec(self, name, path=None, target=None):
            if name.split(".")[0] in ("torch", "torchvision") or (
                name.startswith("pem.") and not name.startswith("pem.runtime")
            ):
                raise ImportError(f"blocked import of {name}: the runtime must not need it")
            return None

    sys.meta_path.insert(0, _DeployOnly())
''')

CHECK = textwrap.dedent('''
    leaked = sorted(m for m in sys.modules if m.split(".")[0] in ("torch", "torchvision")
                    or (m.startswith("pem.") and not m.startswith("pem.runtime")))
    assert not leaked, leaked
''')


def run_torch_free(code: str, timeout: float = 600) -> subprocess.CompletedProcess[str]:
    """Run ``code`` after the blocker and check at the end that nothing blocked was loaded; raises with the
    subprocess's stderr when it fails."""
    script = BLOCKER + textwrap.dedent(code) + CHECK
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=timeout)
    if done.returncode != 0:
        raise AssertionError(f"torch-free subprocess failed ({done.returncode}):\n{done.stderr[-4000:]}")
    return done
