"""What ``pem-serve`` prepares before Triton starts: the libpython its Python backend loads, free ports, the config.

The libpython trap: the Python backend's stub (``triton_python_backend_stub`` in the nvidia-pytriton wheel) links
``libpython3.X.so.1.0`` and finds the system's copy. When the interpreter running PyTriton is another build of the
same version (pyenv, conda, a venv made from either), the stub and the interpreter disagree on CPython's private
structures and the model fails to load (``'_thread.RLock' object has no attribute '_recursion_count'``).
:func:`python_library_env` puts the running interpreter's ``sysconfig`` ``LIBDIR`` first on ``LD_LIBRARY_PATH``.
PyTriton starts ``tritonserver`` with a copy of ``os.environ`` (``pytriton/server/triton_server.py``,
``TritonServer._get_env``, tag v0.7.0 = 3a461d1d5e3a96f4ab92fc0eed62d2ed34ad2437), and the stub inherits it from
``tritonserver``, so setting it in this process before the server starts is enough.
"""
from __future__ import annotations

import importlib
import os
import socket
import sysconfig
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from pem.runtime.errors import PemError

__all__ = ["INSTALL_HINT", "ServeError", "check_ports", "import_pytriton", "python_library_env",
           "triton_config"]

INSTALL_HINT = 'pip install "pem-edge[serve]" (nvidia-pytriton, Linux x86_64 or aarch64 with glibc >= 2.35)'


class ServeError(PemError):
    """pem-serve cannot start: the environment, a port, the artifact or an option (exit code 2)."""


def import_pytriton() -> Any:
    """The ``pytriton.triton`` module, or ServeError saying how to install it."""
    try:
        return importlib.import_module("pytriton.triton")
    except ImportError as exc:
        raise ServeError(f"pem-serve needs nvidia-pytriton: {INSTALL_HINT} ({exc})") from None


def python_library_env(environ: Mapping[str, str] | None = None,
                       config: Mapping[str, Any] | None = None) -> dict[str, str]:
    """``environ`` (default ``os.environ``) with ``LD_LIBRARY_PATH`` starting at the interpreter's ``LIBDIR``.

    ``config``: ``sysconfig`` variables (``LIBDIR``, ``INSTSONAME``, ``Py_ENABLE_SHARED``, ``VERSION``), the
    running interpreter's by default. ServeError (one line) when that interpreter has no shared libpython there."""
    env = dict(os.environ if environ is None else environ)
    config = sysconfig.get_config_vars() if config is None else config
    version = config.get("VERSION", "?")
    libdir, soname = config.get("LIBDIR"), config.get("INSTSONAME")
    if not config.get("Py_ENABLE_SHARED") or not libdir or not soname or not (Path(libdir) / soname).is_file():
        raise ServeError(f"this Python {version} has no shared libpython{version} (LIBDIR {libdir}, "
                         f"{soname or 'no INSTSONAME'}, Py_ENABLE_SHARED={config.get('Py_ENABLE_SHARED')}): Triton's "
                         "Python backend loads one; use a Python built with --enable-shared (system, python.org, "
                         "pyenv with PYTHON_CONFIGURE_OPTS=--enable-shared)")
    rest = [p for p in env.get("LD_LIBRARY_PATH", "").split(os.pathsep) if p and p != libdir]
    env["LD_LIBRARY_PATH"] = os.pathsep.join([str(libdir), *rest])
    return env


def check_ports(host: str, ports: Mapping[str, int]) -> None:
    """ServeError naming the first of ``ports`` (label -> port) that cannot be bound on ``host``, or a repeat."""
    seen: dict[int, str] = {}
    for label, port in ports.items():
        if port in seen:
            raise ServeError(f"{label} {port} is also the {seen[port]}; give each endpoint its own port")
        seen[port] = label
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        with socket.socket(family, socket.SOCK_STREAM) as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                probe.bind((host, port))
            except OSError as exc:
                raise ServeError(f"{label} {port} on {host} cannot be used: {exc.strerror or exc}") from None


def triton_config(pytriton: Any, host: str, http_port: int, grpc_port: int, metrics_port: int,
                  exit_timeout_s: int, verbose: bool) -> Any:
    """A ``TritonConfig`` binding the HTTP, gRPC and metrics endpoints to ``host`` (loopback by default), ready only
    when the model is (strict readiness), waiting ``exit_timeout_s`` for in-flight requests on shutdown."""
    return pytriton.TritonConfig(
        http_address=host, http_port=http_port, grpc_address=host, grpc_port=grpc_port, metrics_address=host,
        metrics_port=metrics_port, allow_metrics=True, allow_gpu_metrics=False, strict_readiness=True,
        exit_timeout_secs=exit_timeout_s, log_verbose=1 if verbose else 0)
