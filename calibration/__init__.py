"""Calibration data for INT8: image folders (``images``), the runtime's pre-processing as ONNX Runtime's data reader
(``feeds``) and activation ranges from ONNX Runtime's calibrators (``ranges``). The INT8 pass that uses them is
``pem.export.precision.int8``; this package imports ``pem.runtime`` only.
"""
