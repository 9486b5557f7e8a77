"""Precision passes over exported ONNX graphs, behind one registry (``registry``: the modes and their names).

``apply`` bakes a mode into an FP32 graph; ``fp16`` is the FP16 pass with FP32 islands, ``scopes`` the module
scopes and blocks both passes select by; the INT8 pass is ``int8`` (``recipe`` the settings, ``quantize`` the
calibrated Q/DQ writer, ``phase_convs`` the ConvTranspose rewrite, ``sensitivity`` the per-block search,
``coverage`` the INT8 share of multiply-adds); ``compare`` checks a result against its FP32 source. Calibration data
and activation ranges come from ``pem.calibration``.
"""
