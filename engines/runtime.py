"""Runners: call an exported graph like the torch module it came from, tensors in and tensors out.

    runner = TensorRTGraph(plan_path)          # CUDA: runs on torch.cuda.current_stream(), outputs are torch tensors
    runner = OnnxRuntimeGraph(onnx_path)       # CPU (or onnxruntime-gpu's CUDA provider); CI runs this one
    outputs = runner(*inputs)                  # tuple of torch tensors, in the graph's output order

Both take their inputs by position in the graph's input order, cast float inputs to the graph's input dtype (an
engine exported in bf16 takes bf16) and return outputs in the graph's own dtype on the inputs' device.
`TorchGraph` wraps the eager (or torch.compile'd) module behind the same call, so an adapter's plug-in does not
care which one it holds.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch

from sparkle_fast.engines.targets import EngineUnavailable

ONNXRUNTIME_EXTRA = "pip install -e '.[engines]' (onnxruntime; onnxruntime-gpu on GPU nodes)"


class TorchGraph:
    """The graph module itself (eager, or compiled with torch.compile when compile=True)."""

    kind = "torch"

    def __init__(self, module: torch.nn.Module, *, compile: bool = False):
        self.module = module
        self.kind = "compile" if compile else "torch"
        self._call = torch.compile(module, dynamic=False) if compile else module

    def __call__(self, *inputs: torch.Tensor) -> tuple[torch.Tensor, ...]:
        with torch.inference_mode():
            outputs = self._call(*inputs)
        return (outputs,) if isinstance(outputs, torch.Tensor) else tuple(outputs)


_ORT_TO_TORCH = {"tensor(float)": torch.float32, "tensor(float16)": torch.float16,
                 "tensor(bfloat16)": torch.bfloat16, "tensor(double)": torch.float64}


class OnnxRuntimeGraph:
    """An ONNX file under onnxruntime. Inputs go through host memory (numpy): the CPU path for CI and for
    checking an export, not the fast path on a GPU (that is TensorRTGraph)."""

    kind = "onnxruntime"

    def __init__(self, path: str | os.PathLike, *, providers: list[str] | None = None, threads: int | None = None):
        try:
            import onnxruntime as ort
        except ImportError as exc:
            raise EngineUnavailable(f"onnxruntime is not installed: {ONNXRUNTIME_EXTRA}") from exc
        options = ort.SessionOptions()
        if threads:
            options.intra_op_num_threads = threads
        options.log_severity_level = 3
        self.session = ort.InferenceSession(str(path), options, providers=providers or ["CPUExecutionProvider"])
        self.input_names = [i.name for i in self.session.get_inputs()]
        self.output_names = [o.name for o in self.session.get_outputs()]
        self.input_dtypes = [_ORT_TO_TORCH.get(i.type) for i in self.session.get_inputs()]

    def __call__(self, *inputs: torch.Tensor) -> tuple[torch.Tensor, ...]:
        if len(inputs) != len(self.input_names):
            raise ValueError(f"graph takes {len(self.input_names)} inputs ({self.input_names}), got {len(inputs)}")
        device = inputs[0].device
        feed = {}
        for name, tensor, dtype in zip(self.input_names, inputs, self.input_dtypes, strict=True):
            tensor = tensor.detach()
            if dtype is not None and tensor.is_floating_point() and tensor.dtype != dtype:
                tensor = tensor.to(dtype)
            feed[name] = tensor.cpu().contiguous().numpy()
        outputs = self.session.run(self.output_names, feed)
        return tuple(torch.from_numpy(np.ascontiguousarray(o)).to(device) for o in outputs)


class TensorRTGraph:
    """A serialized TensorRT engine (.plan) run with enqueue on torch's current CUDA stream.

    Output buffers are allocated by torch (so they live in torch's caching allocator and are ordinary tensors for
    the caller); the engine's activation memory is TensorRT's own, allocated once per context."""

    kind = "tensorrt"

    def __init__(self, plan: str | os.PathLike, *, device: torch.device | str | None = None):
        from sparkle_fast.engines.build import import_tensorrt

        trt = import_tensorrt()
        if not torch.cuda.is_available():
            raise EngineUnavailable("a TensorRT engine runs on a CUDA GPU, and torch sees none on this machine")
        self.trt = trt
        self.device = torch.device(device) if device is not None else torch.device("cuda",
                                                                                   torch.cuda.current_device())
        self.logger = trt.Logger(trt.Logger.WARNING)
        with torch.cuda.device(self.device):
            self.runtime = trt.Runtime(self.logger)  # kept: it must outlive the engine it deserialized
            self.engine = self.runtime.deserialize_cuda_engine(Path(plan).read_bytes())
            if self.engine is None:
                raise RuntimeError(f"TensorRT could not load {plan} (built for another GPU or TensorRT version?)")
            self.context = self.engine.create_execution_context()
        names = [self.engine.get_tensor_name(i) for i in range(self.engine.num_io_tensors)]
        is_input = {n: self.engine.get_tensor_mode(n) == trt.TensorIOMode.INPUT for n in names}
        self.input_names = [n for n in names if is_input[n]]
        self.output_names = [n for n in names if not is_input[n]]
        self.dtypes = {n: _trt_to_torch(trt, self.engine.get_tensor_dtype(n)) for n in names}

    def __call__(self, *inputs: torch.Tensor) -> tuple[torch.Tensor, ...]:
        if len(inputs) != len(self.input_names):
            raise ValueError(f"engine takes {len(self.input_names)} inputs ({self.input_names}), got {len(inputs)}")
        keep = []
        for name, tensor in zip(self.input_names, inputs, strict=True):
            tensor = tensor.to(self.device, self.dtypes[name]).contiguous()
            keep.append(tensor)  # alive until the enqueue below has been issued on the stream
            self.context.set_input_shape(name, tuple(tensor.shape))
            self.context.set_tensor_address(name, tensor.data_ptr())
        outputs = []
        for name in self.output_names:
            shape = tuple(self.context.get_tensor_shape(name))
            if any(d < 0 for d in shape):
                raise RuntimeError(f"TensorRT could not infer the shape of output {name} ({shape})")
            out = torch.empty(shape, dtype=self.dtypes[name], device=self.device)
            self.context.set_tensor_address(name, out.data_ptr())
            outputs.append(out)
        stream = torch.cuda.current_stream(self.device)
        if not self.context.execute_async_v3(stream.cuda_stream):
            raise RuntimeError("TensorRT execute_async_v3 failed (see the TensorRT log)")
        for tensor in keep:
            tensor.record_stream(stream)
        return tuple(outputs)


def _trt_to_torch(trt, dtype) -> torch.dtype:
    table = {trt.float32: torch.float32, trt.float16: torch.float16, trt.int32: torch.int32, trt.int8: torch.int8,
             trt.bool: torch.bool}
    if hasattr(trt, "bfloat16"):
        table[trt.bfloat16] = torch.bfloat16
    if hasattr(trt, "int64"):
        table[trt.int64] = torch.int64
    if dtype not in table:
        raise EngineUnavailable(f"TensorRT tensor type {dtype} has no torch equivalent here")
    return table[dtype]
