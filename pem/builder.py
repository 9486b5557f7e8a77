"""``pem.build_model``: a PEM model from a preset name, optionally with weights."""
from __future__ import annotations

from pem.config import get_preset
from pem.modeling.pem_model import PEM


def build_model(name: str, weights: str | None = None) -> PEM:
    """Build the preset ``name``; ``weights`` is a checkpoint written by ``pem-convert`` or ``pem-train``.

    The model is returned in eval mode when weights are given, in train mode otherwise.
    """
    model = PEM(get_preset(name))
    if weights is not None:
        from pem.checkpoint import load_checkpoint

        load_checkpoint(model, weights)
        model.eval()
    return model
