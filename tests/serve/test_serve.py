"""pem-serve end to end on loopback: a real Triton server (PyTriton) from ``.venv-serve``, real HTTP clients."""
from __future__ import annotations

import importlib
import io
import json
import re
import signal
import subprocess
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from types import ModuleType
from typing import NamedTuple

import numpy as np
import pytest

pytest.importorskip("tritonclient.http", reason="tritonclient missing: pip install 'tritonclient[http]'")

from PIL import Image  # noqa: E402

from pem.runtime.backends.tritonserver import ServerError, error_line, free_ports, wait_until_ready  # noqa: E402
from pem.runtime.cli import main as predict_main  # noqa: E402
from pem.runtime.predictor import Predictor  # noqa: E402

REPO = Path(__file__).resolve().parents[2]
SERVE = REPO / ".venv-serve" / "bin" / "pem-serve"
MAX_PIXELS = 20_000  # the server's --max-pixels: every test frame is below it, 150x150 is over


class Served(NamedTuple):
    """One pem-serve for the whole module: its HTTP model URL, the artifact it serves, its process."""

    url: str
    grpc_url: str
    artifact: Path
    process: subprocess.Popen


def _start(artifact: Path, *options: str) -> tuple[subprocess.Popen, list[int]]:
    """pem-serve on free loopback ports (HTTP, gRPC, metrics), ready to answer both its models."""
    if not SERVE.is_file():
        pytest.skip(f"{SERVE} missing: python3 -m venv .venv-serve && .venv-serve/bin/pip install -e '.[serve]' "
                    "onnxruntime pillow opencv-python-headless")
    ports = free_ports(3)
    process = subprocess.Popen([str(SERVE), str(artifact), "--http-port", str(ports[0]), "--grpc-port", str(ports[1]),
                                "--metrics-port", str(ports[2]), "--threads", "1", *options],
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        wait_until_ready(f"http://127.0.0.1:{ports[0]}/v2/models/pem_metadata/ready", 60,
                         lambda: process.poll() is None)
    except BaseException:
        _kill(process)
        raise
    return process, ports


def _kill(process: subprocess.Popen) -> None:
    if process.poll() is None:
        process.kill()
        process.wait()


@pytest.fixture(scope="module")
def served(tiny_onnx: Callable[..., Path]) -> Iterator[Served]:
    """pem-serve on free loopback ports, both its models loaded; the module's last test stops it."""
    artifact = tiny_onnx(fusion_size="input", dynamic_batch=True)  # pem-export's default fusion size, free batch
    process, (http, grpc, _) = _start(artifact, "--max-pixels", str(MAX_PIXELS))
    try:
        yield Served(f"http://127.0.0.1:{http}/pem", f"grpc://127.0.0.1:{grpc}/pem", artifact, process)
    finally:
        _kill(process)


def test_dynamic_batching_runs_grouped_requests_as_one_graph_batch(tiny_onnx: Callable[..., Path]) -> None:
    """--max-batch 4 with a long queue delay: 8 concurrent requests are grouped (Triton's counters: fewer model
    executions than requests; each answer says its graph batch) and each answer is the frame's in-process result."""
    import urllib.request

    artifact = tiny_onnx(fusion_size="input", dynamic_batch=True)
    process, (http, _, metrics) = _start(artifact, "--max-batch", "4", "--max-queue-delay-us", "300000")
    try:
        rng = np.random.default_rng(6)
        frames = [rng.integers(0, 256, (128, 128, 3), dtype=np.uint8) for _ in range(8)]
        with Predictor(f"http://127.0.0.1:{http}/pem") as remote, Predictor(artifact, threads=1) as local, \
                ThreadPoolExecutor(8) as pool:
            answers = list(pool.map(remote, frames))
            for frame, answer in zip(frames, answers):
                alone = local(frame)
                assert np.array_equal(answer.panoptic, alone.panoptic) and answer.segments == alone.segments
        assert max(answer.timings.get("batch", 1.0) for answer in answers) > 1
        with urllib.request.urlopen(f"http://127.0.0.1:{metrics}/metrics", timeout=5) as page:
            text = page.read().decode()
        counts = {name: float(value) for name, value in re.findall(
            r'^nv_inference_(request_success|exec_count)\{model="pem",version="1"\} (\S+)$', text, re.MULTILINE)}
        assert counts["request_success"] == 8 and counts["exec_count"] < 8, counts
    finally:
        process.terminate()
        try:
            code = process.wait(60)
        finally:
            _kill(process)
    assert code == 0, "pem-serve did not exit 0 after SIGTERM"


def test_concurrent_clients_match_in_process_and_bad_request_is_refused_alone(served: Served) -> None:
    import tritonclient.http as client_http

    url, artifact = served.url, served.artifact
    rng = np.random.default_rng(0)
    # three sizes resized to the graph's 128x128 (fusion maps at 128x128) and one of that size (fusion maps are the
    # full-size maps, which the client stops asking for after the first answer)
    sizes = [(96, 120), (104, 120), (112, 120), (128, 128)]
    frames = [rng.integers(0, 256, (*size, 3), dtype=np.uint8) for size in sizes]
    local = Predictor(artifact, threads=1)  # the server's --threads: the same float sums
    expected = [local(frame) for frame in frames]
    remote = Predictor(url)

    def run(worker: int) -> int:
        matched = 0
        for request in range(25):
            index = (worker + request) % len(frames)
            result, wanted = remote(frames[index]), expected[index]
            assert np.array_equal(result.panoptic, wanted.panoptic)
            assert result.segments == wanted.segments
            assert np.array_equal(result.fusion_panoptic, wanted.fusion_panoptic)
            assert np.array_equal(result.fusion_semantic, wanted.fusion_semantic)
            assert result.fusion_scale == wanted.fusion_scale
            matched += 1
        return matched

    with ThreadPoolExecutor(4) as pool:
        pending = [pool.submit(run, worker) for worker in range(4)]
        bad = client_http.InferenceServerClient(url.split("/")[2])
        corrupt = client_http.InferInput("image", [1, 1], "BYTES")
        corrupt.set_data_from_numpy(np.array([[b"\xff\xd8 not a jpeg"]], dtype=np.object_))
        with pytest.raises(Exception, match="not an image|corrupt"):
            bad.infer("pem", [corrupt])
        wrong = client_http.InferInput("pixels", [1, 4, 4, 3], "INT32")
        wrong.set_data_from_numpy(np.zeros((1, 4, 4, 3), np.int32))
        with pytest.raises(Exception, match="pixels|INT32|UINT8|dtype|data type"):
            bad.infer("pem", [wrong])
        assert sum(f.result() for f in pending) == 100
    assert np.array_equal(remote(frames[0]).panoptic, expected[0].panoptic)  # still serving
    assert remote.backend._unscaled == {size: size == (128, 128) for size in sizes}
    assert [e.fusion_panoptic.shape for e in expected] == [(128, 128)] * 4 and expected[0].fusion_scale != (1.0, 1.0)
    remote.close()
    local.close()


def _write_frames(folder: Path) -> Path:
    folder.mkdir()
    rng = np.random.default_rng(1)
    for index, (height, width) in enumerate([(96, 120), (112, 100), (128, 128)]):
        Image.fromarray(rng.integers(0, 256, (height, width, 3), dtype=np.uint8)).save(folder / f"frame{index}.png")
    return folder


def test_pem_predict_on_the_url_writes_what_it_writes_in_process(served: Served, tmp_path: Path) -> None:
    source = _write_frames(tmp_path / "frames")
    remote, local = tmp_path / "remote", tmp_path / "local"
    save = ["--save", "panoptic,semantic,overlay", "--quiet"]
    assert predict_main([served.url, str(source), "--out", str(remote), *save]) == 0
    assert predict_main([str(served.artifact), str(source), "--out", str(local), "--threads", "1", *save]) == 0
    written = sorted(p.relative_to(remote) for p in remote.rglob("*.png"))
    assert len(written) == 6 and written == sorted(p.relative_to(local) for p in local.rglob("*.png"))
    for name in written:
        assert (remote / name).read_bytes() == (local / name).read_bytes(), name
    annotations = json.loads((remote / "panoptic.json").read_text())
    assert annotations == json.loads((local / "panoptic.json").read_text())
    assert all(entry["segments_info"] for entry in annotations["annotations"])  # ids that say something
    for name in ("frame0", "frame1", "frame2"):
        assert (remote / "overlay" / f"{name}.jpg").read_bytes() == (local / "overlay" / f"{name}.jpg").read_bytes()
    summary = json.loads((remote / "summary.json").read_text())
    assert summary["processed"] == 3 and not summary["failed"] and summary["backend"].startswith("tritonserver")


def test_an_image_over_the_size_budget_is_refused_alone(served: Served) -> None:
    import tritonclient.http as client_http
    from tritonclient.utils import InferenceServerException

    budget = (f"image over the size budget: 150x150 is 22,500 pixels, the limit is {MAX_PIXELS:,} "
              "(pem-serve --max-pixels)")
    with Predictor(served.url) as remote, Predictor(served.artifact, threads=1) as local:
        with pytest.raises(ServerError) as caught:
            remote(np.zeros((150, 150, 3), np.uint8))
        assert str(caught.value) == f"{served.url}: pem-serve: {budget}"
        encoded = io.BytesIO()
        Image.fromarray(np.zeros((150, 150, 3), np.uint8)).save(encoded, format="PNG")
        image = client_http.InferInput("image", [1, 1], "BYTES")
        image.set_data_from_numpy(np.array([[encoded.getvalue()]], dtype=np.object_))
        raw = client_http.InferenceServerClient(served.url.split("/")[2])
        with pytest.raises(InferenceServerException) as caught:
            raw.infer("pem", [image])
        assert f"pem-serve: {budget}" in caught.value.message()
        raw.close()
        frame = np.random.default_rng(2).integers(0, 256, (100, 140, 3), dtype=np.uint8)  # 14,000: within budget
        for _ in range(3):
            assert np.array_equal(remote(frame).panoptic, local(frame).panoptic)


def _client_module(protocol: str) -> ModuleType:
    """tritonclient.http or tritonclient.grpc; skips the test where the latter lacks grpcio."""
    try:
        return importlib.import_module(f"tritonclient.{protocol}")
    except (ImportError, RuntimeError) as exc:  # RuntimeError: tritonclient without grpcio
        pytest.skip(f"tritonclient.{protocol} unavailable: pip install 'tritonclient[{protocol}]' ({exc})")


def test_grpc_gives_the_http_result(served: Served) -> None:
    _client_module("grpc")
    frame = np.random.default_rng(3).integers(0, 256, (104, 136, 3), dtype=np.uint8)
    with Predictor(served.grpc_url) as over_grpc, Predictor(served.url) as over_http:
        assert over_grpc.backend.description.startswith(f"tritonserver {served.grpc_url}")
        by_grpc, by_http = over_grpc(frame), over_http(frame)
    assert np.array_equal(by_grpc.panoptic, by_http.panoptic) and np.array_equal(by_grpc.semantic, by_http.semantic)
    assert by_grpc.segments == by_http.segments and by_grpc.segments


@pytest.mark.parametrize("protocol", ["http", "grpc"])
def test_a_raw_clients_error_names_the_problem_on_one_line(served: Served, protocol: str) -> None:
    from tritonclient.utils import InferenceServerException

    client_module = _client_module(protocol)
    url = served.url if protocol == "http" else served.grpc_url
    client = client_module.InferenceServerClient(url.split("/")[2])
    corrupt = client_module.InferInput("image", [1, 1], "BYTES")
    corrupt.set_data_from_numpy(np.array([[b"\x89PNG but not one"]], dtype=np.object_))
    with pytest.raises(InferenceServerException) as caught:
        client.infer("pem", [corrupt])
    # PyTriton 0.7 wraps every error of an inference callable in its stub's traceback text (docs/serving.md): the
    # line from "pem-serve: " on is ours and names the problem
    assert error_line(caught.value.message()) == \
        "pem-serve: corrupt image: 16 bytes that are not an image Pillow can read"
    client.close()
    with Predictor(url) as remote:  # the server goes on serving
        assert remote(np.zeros((64, 64, 3), np.uint8)).semantic.shape == (64, 64)


def test_sigterm_stops_cleanly(served: Served) -> None:
    process = served.process
    process.send_signal(signal.SIGTERM)
    output, _ = process.communicate(timeout=60)
    assert process.returncode == 0, output[-2000:]
    assert "stopped (SIGTERM)" in output


