"""Read a PEM ONNX file given on a command line: a corrupt file or a graph without PEM metadata is one line."""
from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from pem.runtime.metadata import ArtifactError, ArtifactMetadata

if TYPE_CHECKING:
    import onnx

__all__ = ["read_pem_onnx"]


def read_pem_onnx(path: Path | str, *, external_data: bool = True) -> onnx.ModelProto:
    """The ModelProto of ``path``; :class:`ArtifactError` when it is missing, not a parsable ONNX protobuf, or has
    no valid PEM metadata (``pem.format`` and the rest written by pem-export)."""
    from google.protobuf.message import DecodeError

    from pem.export._deps import require
    from pem.runtime.metadata import read_metadata

    onnx = require("onnx")
    path = Path(path)
    if not path.is_file():
        raise ArtifactError(f"ONNX model not found: {path}")
    try:
        model = onnx.load(str(path), load_external_data=external_data)
    except (DecodeError, RuntimeError, ValueError) as error:
        raise ArtifactError(f"{path} is not a readable ONNX model ({type(error).__name__}: {error})") from None
    ArtifactMetadata.from_props(read_metadata(model), str(path))
    return model
