"""ONNX export of a GraphSpec with torch.onnx's dynamo exporter (torch.export -> ONNX via onnxscript).

    from sparkle_fast.engines.export import export_graph
    result = export_graph(spec, "out/sam3_image_encoder.onnx", dtype=torch.bfloat16)

The dynamo exporter is the one we use (torch.onnx.export(..., dynamo=True)); it exported every target here with
torch 2.14.1 (sam3 image encoder, Wan decoder first/step). The TorchScript exporter is a fallback only for a graph
dynamo cannot trace (`allow_fallback=True`); the result records which exporter ran and why the fallback was taken.
Weights larger than 2 GB go to an external data file beside the .onnx (ONNX's protobuf limit).
"""

from __future__ import annotations

import json
import logging
import os
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

from sparkle_fast.engines.targets import GraphSpec, torch_export_dynamic_shapes, torchscript_dynamic_axes

log = logging.getLogger(__name__)

PRECISIONS = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}


@dataclass
class ExportResult:
    path: str
    graph: str
    exporter: str  # "dynamo" or "torchscript"
    dtype: str
    seconds: float
    fallback_reason: str | None = None


def check_onnx_installed() -> None:
    missing = [name for name in ("onnx", "onnxscript") if _missing(name)]
    if missing:
        raise ImportError(f"ONNX export needs {' and '.join(missing)}: pip install -e '.[engines]' "
                          f"(or '.[test]', which has them too)")


def _missing(module: str) -> bool:
    import importlib.util

    return importlib.util.find_spec(module) is None


def export_graph(spec: GraphSpec, path: str | os.PathLike, *, dtype: torch.dtype = torch.float32,
                 allow_fallback: bool = True, optimize: bool = True) -> ExportResult:
    """Write `spec` as an ONNX file at `path` in `dtype` (weights and float inputs cast; the adapter's own module is
    not changed). Dynamic dimensions follow spec.input_shapes. Returns what was done; a .json beside the file
    records it too."""
    check_onnx_installed()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    typed = spec.cast(dtype)
    started = time.perf_counter()
    fallback_reason = None
    with torch.inference_mode(False), torch.no_grad():
        try:
            program = torch.onnx.export(
                typed.module, typed.example_inputs, dynamo=True, input_names=typed.input_names,
                output_names=typed.output_names, dynamic_shapes=torch_export_dynamic_shapes(typed), optimize=optimize,
                verbose=False)
            _save_atomically(program, path)
            exporter = "dynamo"
        except Exception as exc:  # noqa: BLE001 - any exporter failure is a reason to try the fallback
            if not allow_fallback:
                raise
            # The TorchScript exporter traces one concrete run; it is kept only for graphs dynamo cannot capture.
            fallback_reason = f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"
            log.warning("dynamo export of %s failed (%s); falling back to the TorchScript exporter", spec.full_name,
                        fallback_reason)
            torch.onnx.export(typed.module, typed.example_inputs, str(path), dynamo=False,
                              input_names=typed.input_names, output_names=typed.output_names,
                              dynamic_axes=torchscript_dynamic_axes(typed), opset_version=18)
            exporter = "torchscript"
    result = ExportResult(str(path), spec.full_name, exporter, str(dtype).removeprefix("torch."),
                          round(time.perf_counter() - started, 3), fallback_reason)
    path.with_suffix(".json").write_text(json.dumps({**asdict(result), "input_names": spec.input_names,
                                                     "output_names": spec.output_names,
                                                     "torch": torch.__version__}, indent=2))
    return result


def _save_atomically(program, path: Path) -> None:
    """Save into a temporary folder under the final name, then move the external data file (if the exporter wrote
    one: weights over 2 GB) and the .onnx last, so a reader never sees an .onnx without its data. The data file's
    location recorded inside the model is its base name, which stays right after the move."""
    import tempfile

    with tempfile.TemporaryDirectory(dir=path.parent, prefix=".export-") as tmp:
        staged = Path(tmp) / path.name
        program.save(str(staged))
        data = staged.with_name(staged.name + ".data")
        if data.exists():
            os.replace(data, path.with_name(data.name))
        os.replace(staged, path)
