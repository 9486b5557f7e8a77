"""Artifact metadata: parsing and the errors for missing, foreign or malformed metadata."""
from __future__ import annotations

import json

import pytest

from pem.runtime import contract
from pem.runtime.metadata import ArtifactError, ArtifactMetadata
from tests.runtime import graphs


def test_parse_contract_metadata() -> None:
    meta = ArtifactMetadata.from_props(graphs.metadata("raw", static_size=(64, 96)), "a.onnx")
    assert (meta.preset, meta.head, meta.input_layout) == ("toy_panoptic", "raw", "uint8_nhwc")
    assert meta.num_classes == 4 and meta.thing_ids == (2, 3)
    assert meta.classes[1].dataset_id == 4 and meta.class_colors[2] == (220, 40, 40)
    assert (meta.min_size, meta.max_size, meta.size_divisibility) == (64, 128, 32)
    assert meta.static_size == (64, 96) and meta.panoptic_on and meta.has_panoptic
    assert ArtifactMetadata.from_props(graphs.metadata("raw"), "a").static_size is None
    semantic = ArtifactMetadata.from_props(graphs.metadata("semantic", panoptic_on=False), "a")
    assert not semantic.has_panoptic


def _broken(key: str, value: str | None) -> dict[str, str]:
    props = graphs.metadata("raw")
    if value is None:
        del props[key]
    else:
        props[key] = value
    return props


@pytest.mark.parametrize(("key", "value", "message"), [
    (contract.META_FORMAT, None, "no PEM metadata"),
    (contract.META_FORMAT, "pem-edge/99", "unsupported artifact format"),
    (contract.META_HEAD, "boxes", "unknown head"),
    (contract.META_INPUT_LAYOUT, "uint16", "unknown input layout"),
    (contract.META_PRESET, None, "'pem.preset' is missing"),
    (contract.META_CLASSES, "[]", "non-empty list"),
    (contract.META_CLASSES, json.dumps([{"id": 0, "name": "a"}]), "needs id, name, isthing"),
    (contract.META_CLASSES, json.dumps([{"id": 1, "name": "a", "isthing": 0, "color": [1, 2, 3], "dataset_id": 1}]),
     "malformed"),
    (contract.META_TEST, "{not json", "not valid JSON"),
    (contract.META_TEST, json.dumps({"max_size": 10}), "lacks 'min_size'"),
    (contract.META_TEST, json.dumps({"min_size": "big", "max_size": 10}), "must be int"),
])
def test_bad_metadata_is_named(key: str, value: str | None, message: str) -> None:
    with pytest.raises(ArtifactError, match=message) as info:
        ArtifactMetadata.from_props(_broken(key, value), "model.onnx")
    assert "model.onnx" in str(info.value)
