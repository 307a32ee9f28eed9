"""Model folders laid out like Sparkle's real checkpoints, with configs and safetensors headers of the real sizes but
sparse data (a 66 GB checkpoint takes a few kilobytes of disk). For the plan and check-models tests.

Parameter counts are the public model cards' (rounded), stored in BF16 except SAM3 (F32, as facebook/sam3 ships).
Each layer is one tensor and the rest goes to embeddings: the header sizes, not the tensor names, are what matter.
"""

from __future__ import annotations

import json
import struct
from pathlib import Path

DTYPE_BYTES = {"BF16": 2, "F32": 4}


def write_sparse_safetensors(path: Path, tensors: dict[str, tuple[str, tuple[int, ...]]]) -> int:
    """A valid safetensors file whose data is a hole; returns its tensor bytes."""
    header, offset = {}, 0
    for name, (dtype, shape) in tensors.items():
        count = 1
        for s in shape:
            count *= s
        nbytes = count * DTYPE_BYTES[dtype]
        header[name] = {"dtype": dtype, "shape": list(shape), "data_offsets": [offset, offset + nbytes]}
        offset += nbytes
    raw = json.dumps(header).encode()
    raw += b" " * (-len(raw) % 8)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "wb") as handle:
        handle.write(struct.pack("<Q", len(raw)))
        handle.write(raw)
        handle.truncate(8 + len(raw) + offset)
    return offset


def _layers(prefix: str, layers: int, params: int, width: int, dtype: str = "BF16",
            embed: int = 0) -> dict[str, tuple[str, tuple[int, ...]]]:
    """`layers` equal blocks plus an embedding holding the remainder, `params` parameters in all."""
    per_layer = (params - embed) // layers // width
    tensors = {f"{prefix}.layers.{i}.weight": (dtype, (per_layer, width)) for i in range(layers)}
    rest = params - per_layer * width * layers
    tensors[f"{prefix}.embed.weight"] = (dtype, (rest // width, width))
    return tensors


def _write_json(path: Path, value: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(value))


def _qwen_vl(folder: Path, params: int, layers: int, width: int, heads: int, kv_heads: int, model_type: str) -> int:
    _write_json(folder / "config.json", {"model_type": model_type, "text_config": {
        "hidden_size": width, "num_hidden_layers": layers, "num_attention_heads": heads,
        "num_key_value_heads": kv_heads, "head_dim": 128}})
    _write_json(folder / "tokenizer_config.json", {})
    _write_json(folder / "preprocessor_config.json", {})
    return write_sparse_safetensors(folder / "model.safetensors",
                                    _layers("model.language_model", layers, params, width, embed=1_500_000_000))


def _dit(folder: Path, params: int, layers: int, heads: int, single_layers: int = 0) -> int:
    config = {"num_layers": layers, "num_attention_heads": heads, "attention_head_dim": 128}
    if single_layers:
        config["num_single_layers"] = single_layers
    _write_json(folder / "config.json", config)
    return write_sparse_safetensors(folder / "diffusion_pytorch_model.safetensors",
                                    _layers("blocks", layers + single_layers, params, heads * 128))


def _component(folder: Path, params: int, layers: int, width: int, dtype: str = "BF16") -> int:
    _write_json(folder / "config.json", {})
    return write_sparse_safetensors(folder / "model.safetensors", _layers("encoder", layers, params, width, dtype))


def _wan(folder: Path, marker: str, class_name: str | None) -> int:
    _write_json(folder / marker, {"_class_name": class_name} if class_name else {"model": "Wan2.2-Fun-A14B-Control"})
    total = _dit(folder / "transformer", 14_288_000_000, 40, 40)
    total += _dit(folder / "transformer_2", 14_288_000_000, 40, 40)
    total += _component(folder / "text_encoder", 5_680_000_000, 24, 4096)
    total += _component(folder / "vae", 127_000_000, 8, 1024, "F32")
    _write_json(folder / "tokenizer" / "tokenizer_config.json", {})
    return total


def write_real_size_models(root: Path) -> dict[str, int]:
    """Every pipeline slot under root (the --models DIR layout); returns {slot: tensor bytes written}."""
    root = Path(root)
    sizes = {"vlm": _qwen_vl(root / "qwen3_vl", 33_350_000_000, 64, 5120, 64, 8, "qwen3_vl"),
             "scorer": _qwen_vl(root / "editscore" / "backbone", 8_290_000_000, 28, 3584, 28, 4, "qwen2_5_vl")}
    flux = root / "flux2_klein"
    _write_json(flux / "model_index.json", {"_class_name": "Flux2KleinPipeline"})
    sizes["editor"] = (_dit(flux / "transformer", 9_080_000_000, 8, 24, single_layers=24)
                       + _component(flux / "text_encoder", 8_190_000_000, 36, 4096)
                       + _component(flux / "vae", 84_000_000, 8, 512, "F32"))
    sam3 = root / "sam3"
    _write_json(sam3 / "config.json", {"model_type": "sam3_video"})
    _write_json(sam3 / "preprocessor_config.json", {})
    sizes["sam3"] = write_sparse_safetensors(sam3 / "model.safetensors", _layers("vision", 32, 848_000_000, 1024,
                                                                                   "F32"))
    sizes["i2v"] = _wan(root / "wan22_i2v", "model_index.json", "WanImageToVideoPipeline")
    sizes["control"] = _wan(root / "wan22_fun_control", "fun_control.json", None)
    return sizes
