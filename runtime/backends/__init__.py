"""Backends behind one contract (:class:`Backend`), chosen by name, by the artifact's file suffix or by its URL.

The runtime's own backends (``onnxruntime`` for ``.onnx``, ``tensorrt`` for ``.engine``/``.plan`` with the JSON
manifest beside the engine, ``tritonserver`` for ``http://HOST:PORT/MODEL`` and ``grpc://HOST:PORT/MODEL``) are
registered here as ``"module:attr"`` loaders imported only when opened, so onnxruntime or TensorRT load lazily.

Every other backend comes from the entry-point group ``pem.backends`` (:data:`ENTRY_POINT_GROUP`): the entry's name
is the backend name and its value the backend class, whose class attributes ``suffixes`` and ``url_schemes`` say
what it opens. The ``torch`` backend (``pem.export.torch_backend``, for our ``.pth`` checkpoints) is such an entry in
PEM's own ``pyproject.toml``, so the runtime never names it and never imports torch unless it is asked for: an
entry-point class is loaded only when its name is asked for, or when no runtime backend reads the artifact.
A third-party backend is a module with a :class:`Backend` subclass plus one entry point.
"""
from __future__ import annotations

import importlib
from collections.abc import Sequence
from dataclasses import dataclass
from importlib.metadata import EntryPoint, entry_points
from pathlib import Path
from typing import Any

from pem.runtime.backends.base import Backend, TensorInfo
from pem.runtime.metadata import ArtifactError

__all__ = ["ENTRY_POINT_GROUP", "Backend", "BackendSpec", "TensorInfo", "backend_names", "open_backend",
           "register_backend", "url_scheme"]

ENTRY_POINT_GROUP = "pem.backends"


@dataclass(frozen=True)
class BackendSpec:
    """``loader`` is ``"module:attr"``, a callable ``(artifact, providers=...) -> Backend``; ``url_schemes`` the
    URL schemes (``"http"``) whose artifacts it opens."""

    name: str
    suffixes: tuple[str, ...]
    loader: str
    url_schemes: tuple[str, ...] = ()


_REGISTRY: dict[str, BackendSpec] = {}


def register_backend(name: str, suffixes: Sequence[str], loader: str, url_schemes: Sequence[str] = ()) -> None:
    """Register (or replace) the backend ``name`` reading files ending in ``suffixes`` (lower case, with dot) and
    artifacts that are URLs with one of ``url_schemes``."""
    _REGISTRY[name] = BackendSpec(name, tuple(s.lower() for s in suffixes), loader,
                                  tuple(s.lower() for s in url_schemes))


def _entry_points() -> dict[str, EntryPoint]:
    """The installed ``pem.backends`` entry points by name (read on each call, so a newly installed one shows)."""
    return {entry.name: entry for entry in entry_points(group=ENTRY_POINT_GROUP)}


def _spec_from_entry_point(entry: EntryPoint) -> BackendSpec:
    """Load the entry's class and describe it; ArtifactError when it cannot be imported or is not a Backend."""
    try:
        factory = entry.load()
    except ImportError as error:
        raise ImportError(f"the {entry.name!r} backend ({entry.value}) cannot be imported: {error}") from error
    if not (isinstance(factory, type) and issubclass(factory, Backend)):
        raise ArtifactError(f"entry point {entry.name!r} of {ENTRY_POINT_GROUP} ({entry.value}) is not a Backend class")
    return BackendSpec(entry.name, tuple(s.lower() for s in getattr(factory, "suffixes", ())), entry.value,
                       tuple(s.lower() for s in getattr(factory, "url_schemes", ())))


def backend_names() -> list[str]:
    """The backend names: the runtime's own and the installed entry points' (nothing is imported)."""
    return sorted(set(_REGISTRY) | set(_entry_points()))


def url_scheme(artifact: str | Path) -> str | None:
    """``"http"`` for ``"http://host:8000/pem"``; None for a file path (``C:\\x`` or ``./a:b`` included)."""
    text = str(artifact)
    scheme, separator, _ = text.partition("://")
    return scheme.lower() if separator and scheme.isalpha() and len(scheme) > 1 else None


def _spec_named(name: str) -> BackendSpec:
    if name in _REGISTRY:
        return _REGISTRY[name]
    entry = _entry_points().get(name)
    if entry is None:
        raise ArtifactError(f"unknown backend {name!r}; registered backends: {', '.join(backend_names())}")
    return _spec_from_entry_point(entry)


def _spec_for(artifact: str | Path) -> BackendSpec:
    """The backend that reads ``artifact``: the runtime's own first, then the entry points' (loaded on demand)."""
    scheme = url_scheme(artifact)
    suffix = Path(str(artifact)).suffix.lower()

    def reads(spec: BackendSpec) -> bool:
        return scheme in spec.url_schemes if scheme else suffix in spec.suffixes

    spec = next((s for s in _REGISTRY.values() if reads(s)), None)
    if spec is not None:
        return spec
    known = list(_REGISTRY.values())
    for name, entry in _entry_points().items():
        if name in _REGISTRY:
            continue
        try:
            candidate = _spec_from_entry_point(entry)
        except (ImportError, ArtifactError):
            continue  # an unusable plugin backend cannot read this artifact; naming it explicitly shows why
        if reads(candidate):
            return candidate
        known.append(candidate)
    formats = "; ".join(f"{', '.join(s.suffixes + tuple(f'{u}://' for u in s.url_schemes))} -> {s.name}"
                        for s in known if s.suffixes or s.url_schemes)
    what = f"URL scheme {scheme + '://'!r}" if scheme else f"artifact format {suffix or '(no suffix)'!r}"
    raise ArtifactError(f"unknown {what} for {artifact}; known formats: {formats}")


def open_backend(artifact: str | Path, backend: str = "auto", providers: Sequence[Any] | None = None,
                 threads: int | None = None, **options: Any) -> Backend:
    """Open ``artifact`` (a file, or a URL for a serving backend) with the backend called ``backend``, or the one
    that reads it (``auto``). ``threads``: intra-op CPU threads, for the ``onnxruntime`` backend only (None: its
    default). ``options`` go to the backend's constructor as they are (e.g. ``head=`` for ``torch``).

    Raises FileNotFoundError for a missing file, ArtifactError for an unknown format or backend, ValueError for
    ``threads`` on another backend."""
    scheme = url_scheme(artifact)
    if scheme is None and not Path(artifact).exists():
        raise FileNotFoundError(f"artifact not found: {artifact}")
    spec = _spec_for(artifact) if backend == "auto" else _spec_named(backend)
    if threads is not None and spec.name != "onnxruntime":
        raise ValueError(f"a thread count applies to the onnxruntime backend only, not to {spec.name}")
    module_name, _, attr = spec.loader.partition(":")
    factory = getattr(importlib.import_module(module_name), attr)
    if threads is not None:
        options["threads"] = threads
    target = str(artifact) if scheme else Path(artifact)
    return factory(target, providers=providers, **options)


register_backend("onnxruntime", (".onnx",), "pem.runtime.backends.onnxruntime:OnnxRuntimeBackend")
register_backend("tensorrt", (".engine", ".plan"), "pem.runtime.backends.tensorrt:TensorRTBackend")
register_backend("tritonserver", (), "pem.runtime.backends.tritonserver:TritonServerBackend",
                 ("http", "https", "grpc"))
