"""What a model folder weighs, read from safetensors headers only (no weight is ever loaded).

    sizes = folder_weights("models/wan22_i2v")        # FolderWeights
    sizes.total_bytes, sizes.components["transformer"].bytes, sizes.components["transformer"].largest_block_bytes

A safetensors file starts with an 8-byte little-endian header length and a JSON header naming every tensor's dtype,
shape and byte range; only that is read, so sizing a 66 GB checkpoint costs a few kilobytes of I/O. (The
`safetensors` library's safe_open also checks the data's extent, which header-only test files lack; this reader
needs just the header.)

Components are the immediate sub-folders of a diffusers pipeline folder (transformer/, transformer_2/, vae/,
text_encoder/, ...); a transformers folder (weights at its top level) is one component named ".". A "block" is the
tensors sharing a name prefix up to the first layer index ("blocks.12.attn.q.weight" -> "blocks.12"): the unit a
sequential CPU offload moves, so its largest size is what such an offload keeps resident.
"""

from __future__ import annotations

import json
import os
import re
import struct
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

# Bytes per element of every safetensors dtype string.
DTYPE_BYTES = {"BOOL": 1, "U8": 1, "I8": 1, "F8_E4M3": 1, "F8_E5M2": 1, "F8_E8M0": 1, "U16": 2, "I16": 2, "F16": 2,
               "BF16": 2, "U32": 4, "I32": 4, "F32": 4, "U64": 8, "I64": 8, "F64": 8}
MAX_HEADER_BYTES = 512 * 1024 * 1024  # the format's own limit is 100 MB; far above any real header
_LAYER_INDEX = re.compile(r"^(.*?\.\d+)\.")


class WeightsError(ValueError):
    """A safetensors file whose header cannot be read; the message names the file."""


@dataclass
class ComponentWeights:
    """One component's tensors: total bytes, parameter count, the dtype holding most bytes, the largest block."""

    bytes: int = 0
    parameters: int = 0
    dtype_bytes: dict[str, int] = field(default_factory=dict)
    block_bytes: dict[str, int] = field(default_factory=dict)
    files: list[str] = field(default_factory=list)

    @property
    def main_dtype(self) -> str | None:
        return max(self.dtype_bytes, key=self.dtype_bytes.get) if self.dtype_bytes else None

    @property
    def largest_block_bytes(self) -> int:
        return max(self.block_bytes.values(), default=0)


@dataclass
class FolderWeights:
    folder: Path
    components: dict[str, ComponentWeights]

    @property
    def total_bytes(self) -> int:
        return sum(c.bytes for c in self.components.values())

    @property
    def parameters(self) -> int:
        return sum(c.parameters for c in self.components.values())


def block_name(tensor_name: str) -> str:
    """The offload unit a tensor belongs to: its name up to the first layer index, else the whole name."""
    match = _LAYER_INDEX.match(tensor_name)
    return match.group(1) if match else tensor_name


def safetensors_header(path: str | os.PathLike) -> dict:
    """The header of a .safetensors file: {tensor name: {"dtype", "shape", "data_offsets"}} (without __metadata__).
    WeightsError (a ValueError) naming the file when it is not a safetensors file."""
    path = Path(path)
    with open(path, "rb") as handle:
        prefix = handle.read(8)
        if len(prefix) != 8:
            raise WeightsError(f"{path}: too short for a safetensors file; re-download or re-convert it")
        (length,) = struct.unpack("<Q", prefix)
        if length > path.stat().st_size - 8 or length > MAX_HEADER_BYTES:
            raise WeightsError(f"{path}: header length {length} does not fit the file (not a safetensors file?)")
        try:
            header = json.loads(handle.read(length))
        except ValueError as exc:
            raise WeightsError(f"{path}: header is not JSON ({exc}); re-download or re-convert it") from exc
    if not isinstance(header, dict):
        raise WeightsError(f"{path}: header is not a JSON object")
    header.pop("__metadata__", None)
    return header


def read_header(path: str | os.PathLike) -> dict[str, tuple[str, tuple[int, ...]]]:
    """{tensor name: (dtype string, shape)} from one .safetensors file's header."""
    return {name: (info.get("dtype", "?"), tuple(int(d) for d in info.get("shape", ())))
            for name, info in safetensors_header(path).items()}


def _add_file(component: ComponentWeights, path: Path) -> None:
    for name, (dtype, shape) in read_header(path).items():
        if dtype not in DTYPE_BYTES:
            raise WeightsError(f"{path}: tensor {name!r} has dtype {dtype!r}, unknown to sparkle_fast.models.weights")
        count = 1
        for s in shape:
            count *= s
        nbytes = count * DTYPE_BYTES[dtype]
        component.bytes += nbytes
        component.parameters += count
        component.dtype_bytes[dtype] = component.dtype_bytes.get(dtype, 0) + nbytes
        block = block_name(name)
        component.block_bytes[block] = component.block_bytes.get(block, 0) + nbytes
    component.files.append(str(path))


def folder_weights(folder: str | os.PathLike, skip: tuple[str, ...] = ()) -> FolderWeights:
    """Every *.safetensors under `folder`, grouped by component (first sub-folder; "." for top-level files).
    `skip` names sub-folders to leave out (e.g. an optional LoRA folder sized separately)."""
    folder = Path(folder)
    components: dict[str, ComponentWeights] = defaultdict(ComponentWeights)
    for path in sorted(folder.rglob("*.safetensors")):
        relative = path.relative_to(folder)
        name = relative.parts[0] if len(relative.parts) > 1 else "."
        if name in skip:
            continue
        _add_file(components[name], path)
    return FolderWeights(folder, dict(components))
