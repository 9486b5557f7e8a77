"""torch -> ONNX -> TensorRT export of PEM (built in the export issue)."""
