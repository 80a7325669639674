"""torch module -> ONNX -> OpenVINO IR, in fp32, bf16 or int8 (post-training static quantization).

Every graph goes through ONNX (the TorchScript exporter, static shapes): ONNX Runtime runs it as
is, OpenVINO converts it to its IR. int8 is calibrated on real inputs: NNCF for OpenVINO,
`onnxruntime.quantization.quantize_static` (QDQ, per-channel weights) for ONNX. bf16 is an
OpenVINO inference precision: the IR keeps fp32 weights and the CPU plugin computes in bf16 where
the processor supports it.
"""

from __future__ import annotations

import io
import tempfile
import warnings
from pathlib import Path

import numpy as np
import torch

from oddspot.errors import OddspotError
from oddspot.export.graphs import TorchGraph

OPSET = 17
INSTALL = "pip install 'oddspot[export]'"


def _need(module: str) -> None:
    import importlib.util

    if importlib.util.find_spec(module) is None:
        raise OddspotError(f"exporting needs {module}: {INSTALL}")


def to_onnx(graph: TorchGraph) -> bytes:
    """The graph as ONNX bytes (fp32, static input shape)."""
    _need("onnx")
    buffer = io.BytesIO()
    module = graph.module.eval()
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")  # tracer warnings about Python values: the shapes are static by design
        torch.onnx.export(module, (graph.example,), buffer, input_names=["input"], output_names=list(graph.output_names),
                          opset_version=OPSET, dynamo=False, do_constant_folding=True)
    return buffer.getvalue()


def convert(graph: TorchGraph, name: str, fmt: str, precision: str, calibration: list[np.ndarray] | None,
            seed: int = 0) -> dict[str, bytes]:
    """Files of one exported graph: {name}.onnx, or {name}.xml + {name}.bin."""
    if precision == "int8" and not calibration:
        raise OddspotError("--precision int8 needs calibration images; pass --calibration DIR (normal images)")
    if fmt == "onnx" and precision == "bf16":
        raise OddspotError("--precision bf16 is an OpenVINO precision (ONNX Runtime's CPU provider has no bf16 "
                           "kernels); use --format openvino, or fp32 / int8 for onnx")
    onnx_bytes = to_onnx(graph)
    with tempfile.TemporaryDirectory(prefix="oddspot-export-") as tmp:
        src = Path(tmp) / "model.onnx"
        src.write_bytes(onnx_bytes)
        if fmt == "onnx":
            if precision == "fp32":
                return {f"{name}.onnx": onnx_bytes}
            return {f"{name}.onnx": _onnx_int8(src, Path(tmp), calibration)}
        _need("openvino")
        import openvino as ov

        model = ov.Core().read_model(str(src))  # reads ONNX directly: several times faster than convert_model
        if precision == "int8":
            model = _openvino_int8(model, calibration, seed)
        xml = Path(tmp) / f"{name}.xml"
        ov.save_model(model, str(xml), compress_to_fp16=False)
        return {f"{name}.xml": xml.read_bytes(), f"{name}.bin": xml.with_suffix(".bin").read_bytes()}


def _openvino_int8(model: object, calibration: list[np.ndarray], seed: int) -> object:
    _need("nncf")
    import logging

    import nncf

    logging.getLogger("nncf").setLevel(logging.ERROR)
    from nncf.quantization.advanced_parameters import AdvancedQuantizationParameters, OverflowFix

    # The overflow fix (7-bit weights everywhere) keeps CPUs without VNNI from saturating the
    # int16 sums of their u8 x s8 products, which otherwise corrupts the features.
    dataset = nncf.Dataset(calibration)
    return nncf.quantize(model, dataset, subset_size=len(calibration), preset=nncf.QuantizationPreset.MIXED,
                         advanced_parameters=AdvancedQuantizationParameters(overflow_fix=OverflowFix.ENABLE))


def _onnx_int8(src: Path, tmp: Path, calibration: list[np.ndarray]) -> bytes:
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static

    class Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self.items = iter(calibration)

        def get_next(self) -> dict[str, np.ndarray] | None:
            x = next(self.items, None)
            return None if x is None else {"input": x.astype(np.float32)}

    out = tmp / "int8.onnx"
    # reduce_range: 7-bit weights, so CPUs without VNNI do not saturate their int16 sums
    quantize_static(str(src), str(out), Reader(), quant_format=QuantFormat.QDQ, per_channel=True, reduce_range=True,
                    activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8)
    return out.read_bytes()
