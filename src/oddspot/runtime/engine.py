"""One exported graph compiled on OpenVINO or ONNX Runtime: numpy in, numpy out, no torch.

Graphs have a static input of one image: a score never depends on what else is scored, and
batch-1 inference runs as fast per image as larger batches on a CPU. The graph's bytes come from
the verified model folder (`oddspot.runs.contract`), never from a path read a second time.
"""

from __future__ import annotations

import os
import sys
from typing import Any

import numpy as np

from oddspot.errors import OddspotError

FORMATS = ("openvino", "onnx")
PRECISIONS = ("fp32", "bf16", "int8")
RUNTIME_OF_FORMAT = {"openvino": "openvino", "onnx": "onnxruntime"}
INSTALL = "pip install 'oddspot[runtime]'"

_threads: int | None = None


def set_threads(n: int | None) -> None:
    """CPU threads every engine compiled from now on uses (None: all cores)."""
    global _threads
    if n is not None and n < 1:
        raise OddspotError(f"threads {n}: use at least 1")
    _threads = n


def threads() -> int:
    return _threads or os.cpu_count() or 1


def runtime_available(runtime: str) -> bool:
    """Whether `runtime` ("openvino", "onnxruntime") can be imported here."""
    import importlib.util

    return importlib.util.find_spec(runtime) is not None


def bf16_supported() -> bool:
    """Whether OpenVINO's CPU plugin computes in bf16 on this machine (else it runs bf16 graphs in fp32)."""
    import openvino as ov

    return "BF16" in ov.Core().get_property("CPU", "OPTIMIZATION_CAPABILITIES")


def _import(runtime: str) -> Any:
    import importlib

    try:
        return importlib.import_module(runtime)
    except ImportError:
        raise OddspotError(f"running an exported model on {runtime} needs it installed: {INSTALL}") from None


class Engine:
    """A compiled graph: `engine(x)` -> list of output arrays. `precision` is what it computes in here."""

    def __init__(self, fmt: str, precision: str, files: dict[str, bytes], where: str) -> None:
        if fmt not in FORMATS:
            raise OddspotError(f"{where}: graph format {fmt!r} unknown; this oddspot runs {', '.join(FORMATS)}")
        if precision not in PRECISIONS:
            raise OddspotError(f"{where}: graph precision {precision!r} unknown; use one of {', '.join(PRECISIONS)}")
        self.format, self.exported_precision, self.precision = fmt, precision, precision
        self.runtime = RUNTIME_OF_FORMAT[fmt]
        self.note = ""
        try:
            if fmt == "openvino":
                self._compile_openvino(files, where)
            else:
                self._compile_onnx(files)
        except OddspotError:
            raise
        except Exception as exc:  # a damaged or foreign graph raises the runtime's own types
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise OddspotError(f"{where}: {self.runtime} cannot load the graph ({first:.200}); export the model again") from None

    def _compile_openvino(self, files: dict[str, bytes], where: str) -> None:
        ov = _import("openvino")
        import openvino.properties.hint as hints

        xml = [n for n in files if n.endswith(".xml")]
        bins = [n for n in files if n.endswith(".bin")]
        if len(xml) != 1 or len(bins) != 1:
            raise OddspotError(f"{where}: an OpenVINO graph is one .xml and one .bin file; export the model again")
        core = ov.Core()
        model = core.read_model(model=files[xml[0]].decode("utf-8"),
                                weights=ov.Tensor(np.frombuffer(files[bins[0]], np.uint8).copy()))
        hint = ov.Type.f32
        if self.exported_precision == "bf16":
            if bf16_supported():
                hint = ov.Type.bf16
            else:
                self.precision = "fp32"
                self.note = "this CPU has no bf16 instructions, so OpenVINO runs the bf16 graph in fp32"
                print(f"warning: {where}: {self.note}", file=sys.stderr)
        # One stream per thread, one thread per stream: images run side by side (throughput), and
        # every image is computed by the same single-threaded kernels, whichever stream takes it.
        n = threads()
        config = {"INFERENCE_NUM_THREADS": n, "NUM_STREAMS": n, "PERFORMANCE_HINT": "THROUGHPUT",
                  hints.inference_precision: hint}
        self._compiled = core.compile_model(model, "CPU", config)
        self._n_outputs = len(self._compiled.outputs)
        self._queue = ov.AsyncInferQueue(self._compiled, n)
        self._results: dict[int, list[np.ndarray]] = {}

        def collect(request: Any, index: int) -> None:
            self._results[index] = [np.array(request.get_output_tensor(i).data) for i in range(self._n_outputs)]

        self._queue.set_callback(collect)

    def _compile_onnx(self, files: dict[str, bytes]) -> None:
        ort = _import("onnxruntime")
        (name,) = [n for n in files if n.endswith(".onnx")] or [None]
        if name is None:
            raise OddspotError("an ONNX graph is one .onnx file; export the model again")
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads()
        options.inter_op_num_threads = 1
        options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        options.log_severity_level = 3
        self._session = ort.InferenceSession(files[name], options, providers=["CPUExecutionProvider"])
        self._input = self._session.get_inputs()[0].name

    def __call__(self, x: np.ndarray) -> list[np.ndarray]:
        """The graph's outputs for one input."""
        return self.run_many([x])[0]

    def run_many(self, inputs: list[np.ndarray]) -> list[list[np.ndarray]]:
        """The outputs for each input, computed side by side where the runtime can (OpenVINO streams)."""
        inputs = [np.ascontiguousarray(x, dtype=np.float32) for x in inputs]
        if self.format == "onnx":
            return [self._session.run(None, {self._input: x}) for x in inputs]
        self._results = {}
        for i, x in enumerate(inputs):
            self._queue.start_async({0: x}, i)
        self._queue.wait_all()
        return [self._results.pop(i) for i in range(len(inputs))]

    def describe(self) -> str:
        """'openvino fp32', 'onnxruntime int8', ... as run here."""
        text = f"{self.runtime} {self.exported_precision}"
        return text if self.precision == self.exported_precision else f"{text} (run as {self.precision})"
