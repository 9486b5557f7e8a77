"""A Polygraphy network script: TensorRT's network of a PEM ONNX graph as ``pem-export`` builds it, PEM's plugins
registered in Polygraphy's own process (Polygraphy's ``--plugins`` loads shared libraries only; ours are Python).

    PEM_ONNX=model.onnx polygraphy run "$(python -m pem.export.tensorrt.polygraphy_network)":load_network --trt ...

``python -m pem.export.tensorrt.polygraphy_network`` prints this file's path. ``load_network()`` reads the ONNX named
by ``PEM_ONNX``; unless ``PEM_PLUGINS=0``, on a TensorRT with ahead-of-time Python plugins (>= 10.9) it rewrites the
graph for ``pem::DeformConv2d``/``pem::PrototypeGather`` and registers them, as ``build_engine`` does; the network is
strongly typed on TensorRT 10.x (always on 11). Polygraphy then configures and builds it from its own options.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any

__all__ = ["load_network"]

_KEEP: list[Any] = []  # the logger must outlive the builder Polygraphy keeps


def load_network() -> tuple[Any, Any, Any]:
    """(builder, network, parser) of ``$PEM_ONNX``, parsed; ValueError without ``PEM_ONNX``, EngineBuildError when
    TensorRT cannot parse it (the failing nodes named)."""
    from pem.export._deps import require
    from pem.export.tensorrt.engine_builder import (
        EngineBuildError,
        _has_aot_plugins,
        format_parser_errors,
        needs_strongly_typed_flag,
    )
    from pem.export.tensorrt.graph_rewrite import rewrite_for_plugins
    from pem.export.tensorrt.plugins import register_plugins
    from pem.runtime.backends.tensorrt import import_tensorrt, make_logger

    source = os.environ.get("PEM_ONNX")
    if not source or not Path(source).is_file():
        raise ValueError(f"set PEM_ONNX to the ONNX file to load (got {source!r})")
    model = require("onnx").load(source)
    trt = import_tensorrt()
    logger = make_logger(trt)
    _KEEP.append(logger)
    trt.init_libnvinfer_plugins(logger, "")
    if os.environ.get("PEM_PLUGINS", "1") != "0" and _has_aot_plugins(trt):
        rewrite_for_plugins(model)
        register_plugins()
    builder = trt.Builder(logger)
    strong = needs_strongly_typed_flag(trt.__version__)
    network = builder.create_network(1 << int(trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED) if strong else 0)
    parser = trt.OnnxParser(network, logger)
    if not parser.parse(model.SerializeToString(), source):
        errors = [parser.get_error(i) for i in range(parser.num_errors)]
        raise EngineBuildError(format_parser_errors(source, [(e.node_name(), e.node_operator(), e.desc())
                                                             for e in errors]))
    return builder, network, parser


if __name__ == "__main__":
    print(Path(__file__).resolve())
