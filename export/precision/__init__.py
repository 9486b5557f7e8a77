"""Precision passes over exported ONNX graphs: FP16 casts with FP32 islands (``fp16``), module scopes and blocks
(``scopes``). INT8 Q/DQ lives in ``pem.calibration``."""
