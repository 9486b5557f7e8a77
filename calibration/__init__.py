"""INT8 post-training quantization to explicit Q/DQ ONNX, with a per-block sensitivity search.

``pem.calibration.int8_export.quantize_to_int8`` is the entry point (``pem-export --precision int8`` calls it);
``recipe`` holds the settings, ``quantize`` the calibrated quantizer, ``sensitivity`` the search, ``coverage`` the
INT8 share of multiply-adds, ``images`` the image folders. Needs onnx and onnxruntime (the ``export`` extra).
"""
