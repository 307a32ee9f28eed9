"""Convert a VideoX-Fun Wan2.2-Fun-A14B-Control checkpoint into our control-slot folder (models/control.py).

VideoX-Fun's layout (its config/wan2.2/wan_civitai_i2v.yaml):
  SRC/high_noise_model/   config.json (original Wan names: dim, num_heads, in_dim, ...) + *.safetensors
  SRC/low_noise_model/    the same for the low-noise expert
  (+ Wan2.1_VAE.pth, models_t5_umt5-xxl-enc-bf16.pth, google/umt5-xxl/: original-format VAE and text encoder)
Its weights use the original Wan key names (blocks.N.self_attn.q, ffn.0, modulation, head.head, ...).

Ours (the "control" slot):
  DST/transformer/        our WanFunControlTransformer3DModel (diffusers' WanTransformer3DModel + VideoX-Fun's
                          ref_conv) = the HIGH-noise expert (from high_noise_model/)
  DST/transformer_2/      the LOW-noise expert (from low_noise_model/)
  DST/vae/, text_encoder/, tokenizer/   copied from a diffusers Wan2.2 folder (--components-from, e.g. the
                          Wan2.2-I2V-A14B-Diffusers folder of the i2v slot: the same Wan2.1 VAE and UMT5-XXL)
  DST/fun_control.json    marker: boundary ratio, expert naming, channel layout, ref_conv, the source
No scheduler is copied: the loader builds FlowMatchEulerDiscreteScheduler with the run's shift (5), because a
diffusers Wan folder's scheduler config (UniPC with flow_shift) loads as Euler with shift 1.

Expert naming is reversed between the two: VideoX-Fun's pipeline calls its high-noise expert `transformer_2`;
diffusers (and we) call it `transformer`. We map by the folder names (high_noise_model -> transformer), never by
VideoX-Fun's attribute names.

Keys are renamed with diffusers' own converter (loaders.single_file_utils.convert_wan_transformer_to_diffusers);
the diffusers config is inferred from the tensor shapes (channels, width, FFN, layers, text and frequency dims) plus
num_heads / eps from config.json. VideoX-Fun's `ref_conv` (the reference-image input of Wan2.2-Fun-A14B-Control,
a Conv2d from 16 latent channels to the width) keeps its name and sets add_ref_conv / in_dim_ref_conv from its
shape. `control_adapter` (VideoX-Fun's camera-control input) is refused: Fun-Control-Camera is another model.

    python -m sparkle_fast.models.convert_videox_fun SRC DST --components-from WAN22_I2V_DIFFUSERS_DIR
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
from pathlib import Path

import torch

EXPERT_FOLDERS = {"transformer": "high_noise_model", "transformer_2": "low_noise_model"}
REF_CONV_PREFIX = "ref_conv."
REFUSED_PREFIXES = ("control_adapter.",)


class ConversionError(ValueError):
    """A VideoX-Fun checkpoint that cannot be converted; the message names the file and the problem."""


def load_safetensors_folder(folder: Path) -> dict[str, torch.Tensor]:
    """All tensors of the *.safetensors files in `folder` (one file or shards)."""
    from safetensors.torch import load_file

    files = sorted(folder.glob("*.safetensors"))
    if not files:
        raise ConversionError(f"{folder}: no *.safetensors weights (expected VideoX-Fun's expert weights)")
    state: dict[str, torch.Tensor] = {}
    for path in files:
        state.update(load_file(str(path)))
    return state


def split_ref_conv(state: dict[str, torch.Tensor], where: str = "") -> tuple[dict, dict]:
    """(transformer keys, ref_conv.* keys). ConversionError for modules of another model (control_adapter.*)."""
    refused = sorted(k for k in state if k.startswith(REFUSED_PREFIXES))
    if refused:
        raise ConversionError(f"{where}: holds {refused[:3]} (VideoX-Fun's camera-control adapter): this is a "
                              f"Fun-Control-Camera checkpoint, not Wan2.2-Fun-A14B-Control")
    ref = {k: v for k, v in state.items() if k.startswith(REF_CONV_PREFIX)}
    return {k: v for k, v in state.items() if k not in ref}, ref


def diffusers_config(original_state: dict[str, torch.Tensor], videox_config: dict, where: str = "") -> dict:
    """WanTransformer3DModel kwargs for an original-Wan-named state dict (before renaming) and its config.json."""
    def need(key):
        if key not in original_state:
            raise ConversionError(f"{where}: missing tensor {key!r} (not a Wan transformer checkpoint?)")
        return original_state[key]

    patch = need("patch_embedding.weight")            # (dim, in_channels, pt, ph, pw)
    dim, in_channels = patch.shape[0], patch.shape[1]
    patch_size = tuple(int(p) for p in patch.shape[2:])
    num_heads = videox_config.get("num_heads")
    if not num_heads:
        raise ConversionError(f"{where}: config.json has no num_heads (needed: it cannot be read off the weights)")
    if dim % num_heads:
        raise ConversionError(f"{where}: dim {dim} is not divisible by num_heads {num_heads}")
    head_out = need("head.head.weight").shape[0]
    layers = {int(k.split(".")[1]) for k in original_state if k.startswith("blocks.")}
    has_cross_norm = any(k.startswith("blocks.0.norm3.") for k in original_state)
    config = dict(
        patch_size=patch_size, num_attention_heads=int(num_heads), attention_head_dim=dim // int(num_heads),
        in_channels=int(in_channels), out_channels=int(head_out // (patch_size[0] * patch_size[1] * patch_size[2])),
        text_dim=int(need("text_embedding.0.weight").shape[1]), freq_dim=int(need("time_embedding.0.weight").shape[1]),
        ffn_dim=int(need("blocks.0.ffn.0.weight").shape[0]), num_layers=len(layers),
        cross_attn_norm=has_cross_norm, qk_norm="rms_norm_across_heads" if "blocks.0.self_attn.norm_q.weight"
        in original_state else None, eps=float(videox_config.get("eps", 1e-6)),
    )
    if "img_emb.proj.1.weight" in original_state:
        config["image_dim"] = int(original_state["img_emb.proj.1.weight"].shape[1])
    return config


def convert_expert(folder: Path):
    """Our WanFunControlTransformer3DModel with the converted weights (ref_conv included when the checkpoint has
    it) for one VideoX-Fun expert folder."""
    from diffusers.loaders.single_file_utils import convert_wan_transformer_to_diffusers

    from sparkle_fast.models.control import WanFunControlTransformer3DModel

    if not folder.is_dir():
        raise ConversionError(f"{folder}: missing expert folder (VideoX-Fun keeps each expert in "
                              f"{' and '.join(EXPERT_FOLDERS.values())})")
    config_path = folder / "config.json"
    try:
        videox_config = json.loads(config_path.read_text())
    except (OSError, ValueError) as exc:
        raise ConversionError(f"{config_path}: missing or not JSON ({exc})") from exc
    state = {k.removeprefix("model.diffusion_model."): v for k, v in load_safetensors_folder(folder).items()}
    state, ref = split_ref_conv(state, where=str(folder))
    config = diffusers_config(state, videox_config, where=str(folder))
    if ref:
        weight = ref.get(REF_CONV_PREFIX + "weight")
        if weight is None or weight.ndim != 4 or weight.shape[0] != config["num_attention_heads"] * \
                config["attention_head_dim"] or tuple(weight.shape[2:]) != config["patch_size"][1:]:
            raise ConversionError(f"{folder}: ref_conv.weight {None if weight is None else tuple(weight.shape)} "
                                  f"does not fit a ref_conv of this model (width x in_dim x patch)")
        config.update(add_ref_conv=True, in_dim_ref_conv=int(weight.shape[1]))
    converted = convert_wan_transformer_to_diffusers(dict(state))
    converted.update(ref)  # same names in our model
    with torch.device("meta"):
        model = WanFunControlTransformer3DModel(**config)
    missing, unexpected = model.load_state_dict(converted, strict=False, assign=True)
    if missing or unexpected:
        raise ConversionError(f"{folder}: weights do not fit the inferred config: missing {sorted(missing)[:8]}, "
                              f"unexpected {sorted(unexpected)[:8]}")
    # Buffers (rope tables) are not in the checkpoint: rebuild them on the host.
    model.rope = type(model.rope)(config["attention_head_dim"], config["patch_size"], model.rope.max_seq_len)
    return model.eval()


def convert_videox_fun_checkpoint(src, dst, *, components_from=None, boundary_ratio: float = 0.9,
                                  dtype: torch.dtype | None = None) -> Path:
    """Convert SRC (VideoX-Fun layout) into DST (our control slot); returns DST. See the module docstring."""
    from sparkle_fast.models.control import FUN_CONTROL_IN_CHANNELS, FUN_CONTROL_MARKER, fun_control_marker

    src, dst = Path(src), Path(dst)
    if not src.is_dir():
        raise ConversionError(f"{src}: no such folder (the VideoX-Fun checkpoint)")
    dst.mkdir(parents=True, exist_ok=True)
    ref_conv = {}
    for ours, theirs in EXPERT_FOLDERS.items():
        model = convert_expert(src / theirs)
        if model.config.in_channels != FUN_CONTROL_IN_CHANNELS:
            raise ConversionError(f"{src / theirs}: in_channels {model.config.in_channels}, expected "
                                  f"{FUN_CONTROL_IN_CHANNELS} for Fun-Control (is this a Fun-Control checkpoint?)")
        ref_conv[ours] = model.ref_conv is not None
        if dtype is not None:
            model = model.to(dtype)
        model.save_pretrained(dst / ours)
    if len(set(ref_conv.values())) != 1:
        raise ConversionError(f"{src}: one expert has ref_conv and the other not ({ref_conv})")
    if components_from is not None:
        components_from = Path(components_from)
        for name in ("vae", "text_encoder", "tokenizer"):
            source = components_from / name
            if not source.is_dir():
                raise ConversionError(f"{source}: missing (--components-from must be a diffusers Wan2.2 folder "
                                      f"with vae/, text_encoder/, tokenizer/)")
            shutil.copytree(source, dst / name, dirs_exist_ok=True)
    marker = fun_control_marker(boundary_ratio, ref_conv["transformer"], str(src),
                                converted_from={ours: theirs for ours, theirs in EXPERT_FOLDERS.items()})
    (dst / FUN_CONTROL_MARKER).write_text(json.dumps(marker, indent=2))
    return dst


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description="Convert a VideoX-Fun Wan2.2-Fun-A14B-Control checkpoint to the "
                                                 "sparkle-fast control slot layout")
    parser.add_argument("src", type=Path, help="VideoX-Fun folder with high_noise_model/ and low_noise_model/")
    parser.add_argument("dst", type=Path, help="output folder (e.g. MODELS/wan22_fun_control)")
    parser.add_argument("--components-from", type=Path, default=None,
                        help="diffusers Wan2.2 folder to copy vae/, text_encoder/, tokenizer/ from")
    parser.add_argument("--boundary-ratio", type=float, default=0.9)
    parser.add_argument("--bf16", action="store_true", help="store the experts in bfloat16")
    args = parser.parse_args(argv)
    try:
        convert_videox_fun_checkpoint(args.src, args.dst, components_from=args.components_from,
                                      boundary_ratio=args.boundary_ratio,
                                      dtype=torch.bfloat16 if args.bf16 else None)
    except ConversionError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(f"wrote {args.dst}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
