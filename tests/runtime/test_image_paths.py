"""One way in for pixels: a rotated JPEG, a palette PNG, a 16-bit PNG and a CMYK JPEG give the same feed on every
path that reads image files (pem-predict, the datasets, INT8 calibration, the evaluation loop of the sensitivity
search and pem-bench --accuracy, the parity check, pem-demo)."""
from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from pem.runtime.predictor import Predictor

HEIGHT, WIDTH = 36, 52  # not square, so a missed EXIF rotation changes the shape


def _gradient() -> np.ndarray:
    """uint8 [H, W, 3], smooth (JPEG keeps it well) and different in every corner."""
    y, x = np.mgrid[0:HEIGHT, 0:WIDTH]
    return np.stack([4 * x + 20, 6 * y + 10, 2 * (x + y) + 30], axis=-1).astype(np.uint8)


def _exif_rotated_jpeg(path: Path) -> np.ndarray:
    exif = Image.Exif()
    exif[0x0112] = 6  # orientation 6: the stored pixels are shown rotated 90 degrees clockwise
    Image.fromarray(_gradient()).save(path, quality=95, exif=exif)
    with Image.open(path) as stored:  # Pillow decodes the stored (unrotated) pixels
        return np.rot90(np.asarray(stored.convert("RGB")), k=-1)


def _palette_png(path: Path) -> np.ndarray:
    palette = np.array([[250, 10, 10], [10, 250, 10], [10, 10, 250], [200, 200, 40]], dtype=np.uint8)
    indices = (np.add.outer(np.arange(HEIGHT) // 9, np.arange(WIDTH) // 13) % 4).astype(np.uint8)
    image = Image.fromarray(indices, mode="L").convert("P")
    image.putpalette(palette.ravel().tolist())
    image.save(path)
    return palette[indices]


def _grey16_png(path: Path) -> np.ndarray:
    values = (np.add.outer(np.arange(HEIGHT), np.arange(WIDTH)) * 700).astype(np.uint16)
    Image.fromarray(values).save(path)  # mode I;16
    grey = np.rint(values / 257).astype(np.uint8)
    return np.repeat(grey[..., None], 3, axis=2)


def _cmyk_jpeg(path: Path) -> np.ndarray:
    cmyk = np.concatenate([255 - _gradient(), np.full((HEIGHT, WIDTH, 1), 30, np.uint8)], axis=-1)
    Image.fromarray(cmyk, mode="CMYK").save(path, quality=95)
    with Image.open(path) as stored:
        return np.asarray(stored.convert("RGB"))  # Pillow's CMYK -> RGB conversion


IMAGES = {"exif6.jpg": _exif_rotated_jpeg, "palette.png": _palette_png, "grey16.png": _grey16_png,
          "cmyk.jpg": _cmyk_jpeg}


def _predict_path(path: Path) -> np.ndarray:
    from pem.runtime.sources import ImageSource

    (frame,) = list(ImageSource([path], "test"))
    return frame.image


def _dataset_path(path: Path) -> np.ndarray:
    from pem.data.datasets import read_image

    return read_image(path)


def _evaluation_path(path: Path) -> np.ndarray:
    from pem.metrics.predictor_accuracy import panoptic_folder_samples

    folder = path.parent / f"coco_{path.stem}"
    (folder / "images").mkdir(parents=True)
    (folder / "panoptic").mkdir()
    (folder / "images" / path.name).write_bytes(path.read_bytes())
    Image.fromarray(np.zeros((1, 1, 3), np.uint8)).save(folder / "panoptic" / "gt.png")
    index = {"images": [{"id": 1, "file_name": path.name}], "categories": [{"id": 1, "isthing": 1}],
             "annotations": [{"image_id": 1, "file_name": "gt.png", "segments_info": []}]}
    (folder / "panoptic.json").write_text(json.dumps(index))
    (sample,) = list(panoptic_folder_samples(folder, {1: 0}))
    return sample.image


def _parity_path(path: Path) -> np.ndarray:
    from pem.export.parity import load_check_image

    return load_check_image(str(path))


def _demo_path(path: Path) -> np.ndarray:
    from pem.demo import load_image

    return load_image(str(path))


IMAGE_PATHS: dict[str, Callable[[Path], np.ndarray]] = {
    "pem-predict": _predict_path, "datasets": _dataset_path, "evaluation": _evaluation_path,
    "parity": _parity_path, "pem-demo": _demo_path,
}


@pytest.mark.parametrize("reader", [*IMAGE_PATHS, "calibration"])
def test_every_image_path_gives_the_same_feed(reader: str, toy_dir: Path, tmp_path: Path) -> None:
    with Predictor(toy_dir / "raw.onnx") as predictor:
        for name, make in IMAGES.items():
            expected_image = make(tmp_path / name)
            assert expected_image.shape == ((WIDTH, HEIGHT, 3) if name == "exif6.jpg" else (HEIGHT, WIDTH, 3))
            expected = predictor.preprocess(expected_image)[0]
            if reader == "calibration":
                from pem.calibration.feeds import CalibrationFeeds

                feed = CalibrationFeeds(toy_dir / "raw.onnx", [tmp_path / name]).get_next()
                side = predictor.metadata.min_size  # calibration feeds a graph of free size at one square size
                with Predictor(toy_dir / "raw.onnx", input_size=(side, side)) as square:
                    expected = square.preprocess(expected_image)[0]
            else:
                feed = predictor.preprocess(IMAGE_PATHS[reader](tmp_path / name))[0]
            assert feed.keys() == expected.keys()
            for key in feed:
                np.testing.assert_array_equal(feed[key], expected[key], err_msg=f"{reader} reads {name} otherwise")
