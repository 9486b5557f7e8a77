"""INT8 post-training quantization to explicit Q/DQ ONNX (built in the TensorRT/precision issue)."""
