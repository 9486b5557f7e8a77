"""``pem.serve``: ``pem-serve``, an exported artifact behind NVIDIA Triton Inference Server (through PyTriton).

Imports :mod:`pem.runtime` only (never torch, never ``pem.export``); PyTriton is imported when the server starts
(the ``serve`` extra). The client side is the runtime's ``tritonserver`` backend (``Predictor("http://HOST:PORT/pem")``).
"""
