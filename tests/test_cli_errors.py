"""The exit-code discipline of every console script (``pem.runtime.entry``): bad input is one line and exit 2,
never a traceback; a bug is one line naming a saved traceback, exit 3; Ctrl-C is one line, exit 130; outputs cannot
overwrite inputs."""
from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import onnx
import pytest
from onnx import TensorProto, helper

from pem.benchmarks.cli import main as bench_main
from pem.runtime.destinations import DestinationError, check_destination
from pem.runtime.entry import command
from pem.runtime.errors import EXIT_INTERNAL, EXIT_INTERRUPTED, EXIT_SOME_FAILED, PemError
from tests.runtime import graphs

BIN = Path(sys.executable).parent
TRACEBACK = "Traceback (most recent call last)"


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """plain.onnx (a valid graph without PEM metadata), corrupt.onnx, model.engine (not an engine), copy.onnx."""
    folder = tmp_path_factory.mktemp("cli_errors")
    graph = helper.make_graph([helper.make_node("Identity", ["x"], ["y"])], "plain",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 8, 8])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 3, 8, 8])])
    onnx.save(helper.make_model(graph), folder / "plain.onnx")
    (folder / "copy.onnx").write_bytes((folder / "plain.onnx").read_bytes())
    (folder / "corrupt.onnx").write_bytes(b"\x08\x07not a protobuf" * 64)
    (folder / "model.engine").write_bytes(bytes(256))
    return folder


CASES = [  # (script, arguments, exit status, a phrase of the one error line)
    ("pem-export", "--config synthetic_panoptic_tiny --imgsz 100000x100000 --output o.onnx", 2, "32..8192"),
    ("pem-export", "--config synthetic_panoptic_tiny --imgsz 7x7 --output o.onnx", 2, "32..8192"),
    ("pem-export", "--onnx plain.onnx --precision fp16 --output o.onnx", 2, "plain.onnx has no PEM metadata"),
    ("pem-export", "--onnx corrupt.onnx --precision fp16 --output o.onnx", 2, "not a readable ONNX model"),
    ("pem-export", "--onnx copy.onnx --precision fp16 --output ./copy.onnx", 2, "is the input"),
    ("pem-data", "synthetic --size 100000x100000 --n 1 --out data", 2, "32..8192"),
    ("pem-data", "video --out v.avi --frames 2 --size 64 --fps nan", 2, "--fps: nan out of range (0, 1000]"),
    ("pem-bench", "plain.onnx", 2, "plain.onnx has no PEM metadata"),
    ("pem-bench", "corrupt.onnx", 2, "not a readable ONNX model"),
    ("pem-bench", "model.engine", 2, "TensorRT engine: measure it with --backend tensorrt"),
    ("pem-bench", "plain.onnx --iters 0", 2, "--iters: 0 out of range 1..1000000"),
    ("pem-bench", "plain.onnx --duration 0", 2, "--duration: 0 out of range (0, 3600]"),
    ("pem-bench", "plain.onnx --batch 100000", 2, "--batch: 100000 out of range 1..256"),
    ("pem-bench", "plain.onnx --json plain.onnx", 2, "is the input"),
    ("pem-bench", "plain.onnx --threads 0", 2, "--threads: 0 out of range 1..1024"),
    ("pem-bench", "plain.onnx --batch 256 --imgsz 8192", 2, "about 294,912 MiB of host images, over the memory budget"),
    ("pem-export", "--config synthetic_panoptic_tiny --imgsz 64 --batch 100000 --output o.onnx", 2,
     "--batch: 100000 out of range 1..256"),
    ("pem-predict", "plain.onnx image.jpg --out out --alpha nan", 2, "--alpha: nan out of range [0, 1]"),
    ("pem-eval", "--config synthetic_panoptic_tiny --weights w.pth --data d --max-images 0", 2,
     "--max-images: must be at least 1"),
    ("pem-convert", "--config synthetic_panoptic_tiny copy.onnx copy.onnx", 2, "is the input"),
    ("pem-predict", "plain.onnx model.engine --out out --video-out model.engine", 2,
     "--video-out model.engine is the input"),
]


@pytest.mark.parametrize(("script", "arguments", "status", "phrase"), CASES, ids=[f"{c[0]} {c[1]}" for c in CASES])
def test_bad_input_is_one_line(files: Path, script: str, arguments: str, status: int, phrase: str) -> None:
    before = {p.name: p.read_bytes() for p in files.iterdir()}
    done = subprocess.run([str(BIN / script), *arguments.split()], cwd=files, capture_output=True, text=True,
                          timeout=120, env={**os.environ, "PEM_DEBUG": ""})
    assert TRACEBACK not in done.stderr
    assert done.returncode == status, done.stderr
    assert phrase in done.stderr.strip().splitlines()[-1]
    assert {p.name: p.read_bytes() for p in files.iterdir()} == before  # nothing written, no input replaced


def _default_sigint() -> None:
    """In the child before exec: SIGINT back to its default. A job started with ``&`` by a non-interactive shell (a CI
    runner's background step) inherits SIGINT ignored, and Python then installs no KeyboardInterrupt handler."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def test_ctrl_c_is_one_line_and_130(tmp_path: Path) -> None:
    process = subprocess.Popen([str(BIN / "pem-data"), "synthetic", "--out", str(tmp_path / "data"), "--n", "5000",
                                "--size", "256"], stderr=subprocess.PIPE, text=True, preexec_fn=_default_sigint)
    deadline = time.monotonic() + 60
    while not (tmp_path / "data").exists() and time.monotonic() < deadline:  # started writing
        time.sleep(0.05)
    process.send_signal(signal.SIGINT)
    _, err = process.communicate(timeout=60)
    assert process.returncode == EXIT_INTERRUPTED and err == "pem-data: interrupted\n"


def test_batch_checked_against_the_graph_before_building(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    graph = graphs.raw_graph(tmp_path / "static.onnx", static_size=(64, 96),  # a PEM-contract graph of batch 1
                             props=graphs.metadata("raw", static_size=(64, 96)))
    assert bench_main([str(graph), "--imgsz", "64x96", "--batch", "2", "--iters", "1", "--warmup-ms", "0",
                       "--cache", str(tmp_path / "cache")]) == 2
    assert "takes batch 1 only" in capsys.readouterr().err


@command("pem-toy")
def _toy(argv: list[str]) -> int:
    """A console script whose first argument says how it ends."""
    kind = argv[0]
    if kind == "bug":
        return {}["missing"]
    if kind == "interrupt":
        raise KeyboardInterrupt
    if kind == "refused":
        raise PemError("bad\ninput")
    if kind == "some-failed":
        raise PemError("two files failed", exit_code=EXIT_SOME_FAILED)
    return len(argv) - 1  # the arguments left after --debug was taken out


def test_wrapper_exit_codes(capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("PEM_DEBUG", raising=False)
    assert _toy(["ok", "a", "--debug", "b"]) == 2
    assert _toy(["refused"]) == 2
    assert capsys.readouterr().err == "pem-toy: error: bad input\n"
    assert _toy(["some-failed"]) == EXIT_SOME_FAILED
    assert _toy(["interrupt"]) == EXIT_INTERRUPTED
    assert capsys.readouterr().err.splitlines()[-1] == "pem-toy: interrupted"

    assert _toy(["bug"]) == EXIT_INTERNAL
    err = capsys.readouterr().err
    assert len(err.splitlines()) == 1 and TRACEBACK not in err
    saved = Path(re.search(r"traceback saved to (\S+);", err).group(1))
    text = saved.read_text()
    saved.unlink()
    assert TRACEBACK in text and "KeyError: 'missing'" in text

    assert _toy(["bug", "--debug"]) == EXIT_INTERNAL
    err = capsys.readouterr().err
    assert TRACEBACK in err
    Path(re.search(r"traceback saved to (\S+)\)", err).group(1)).unlink()


def test_destination_refusals(tmp_path: Path) -> None:
    source = tmp_path / "model.onnx"
    source.write_bytes(b"x")
    (tmp_path / "sub").mkdir()
    link = tmp_path / "link.onnx"
    link.symlink_to(source)
    with pytest.raises(DestinationError, match="is the input"):
        check_destination(tmp_path / "sub" / ".." / "model.onnx", [source])
    with pytest.raises(DestinationError, match="is the input"):
        check_destination(link, [source])
    with pytest.raises(DestinationError, match="is a folder"):
        check_destination(tmp_path / "sub", [source])
    assert check_destination(tmp_path / "new" / "deeper" / "out.onnx", [source, None]).name == "out.onnx"
    if os.geteuid() != 0:  # root writes anywhere
        (tmp_path / "sub").chmod(0o500)
        with pytest.raises(DestinationError, match="not a writable folder"):
            check_destination(tmp_path / "sub" / "out.onnx", [source])
        (tmp_path / "sub").chmod(0o700)
