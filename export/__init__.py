"""torch -> ONNX export of PEM (``pem-export``), and its parity check against PyTorch.

``pem.export.onnx_export``: ``export_onnx(model, ExportOptions(...)) -> onnx.ModelProto`` and ``save_onnx``;
``pem.export.wrapper``: the export-only ``ExportWrapper`` (inputs, in-graph pre-processing, heads);
``pem.export.custom_ops``: the ONNX function of ``pem::PrototypeGather``;
(the graph's ``metadata_props`` are written by ``pem.runtime.metadata``); ``pem.export.parity``: ``check_parity``;
``pem.export.cli``: the ``pem-export`` command. Names and keys come from ``pem.runtime.contract``.
"""
