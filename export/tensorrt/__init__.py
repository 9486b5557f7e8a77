"""ONNX -> TensorRT engine for PEM (``pem-export --format engine``), with our TensorRT plugins.

``pem.export.tensorrt.shapes``: ``--shapes``/``--orig-sizes`` -> optimization profile;
``pem.export.tensorrt.graph_rewrite``: the graph prepared for the plugins (still runnable by ONNX Runtime);
``pem.export.tensorrt.plugins``: ``pem::PrototypeGather`` and ``pem::DeformConv2d`` as TensorRT ahead-of-time
Python plugins whose PTX comes from the Triton kernels of ``pem.kernels``;
``pem.export.tensorrt.engine_builder``: ``EngineOptions`` and ``build_engine``. TensorRT itself is imported
only when an engine is built.
"""
