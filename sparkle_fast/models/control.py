"""Stage 5's synthesis: Wan2.2-Fun-A14B-Control, on diffusers' Wan building blocks; WanVACEPipeline as an alternative.

Fun-Control is not in diffusers. `WanFunControlPipeline` is our pipeline over `WanFunControlTransformer3DModel`
(diffusers' WanTransformer3DModel plus VideoX-Fun's reference-image convolution `ref_conv`), AutoencoderKLWan, the
UMT5 text encoder and a flow-matching Euler scheduler. It conditions on
  - the control video (stage 5's composed edges, uint8 RGB or floats in [0, 1]),
  - the start image (the edited frame 0) in the inpaint channels, and/or
  - the reference image (the edited frame 0 again) through `ref_conv`,
  - and the text,
as VideoX-Fun's Wan2.2 Fun-Control pipeline does (read in VideoX-Fun's pipeline_wan2_2_fun_control.py,
wan_transformer3d.py and examples/wan2.2_fun/predict_v2v_control_ref.py; not copied). The transformer input per step
is the channel concatenation (CHANNEL_LAYOUT, 52 channels):

   0..15  the noisy latents
  16..31  control-video latents: VAE(2 * control - 1), normalised with the VAE's latents_mean / latents_std
  32..35  mask latents: with a start image, "frame is given" (1 for frame 0, 0 after), first frame repeated 4x and
          folded 4 frames per latent frame, so latent frame 0 is all ones and the rest zeros; without one, all zeros
  36..51  start-image latents: VAE of [start image, then zeros (mid-grey in [-1, 1]) for the other frames]; without
          a start image, zeros (VideoX-Fun's "nothing given" branch)

The reference image (VideoX-Fun's `ref_image`, which its pipeline accepts only when the transformer was built with
add_ref_conv, as Wan2.2-Fun-A14B-Control is): VAE latents of the image alone (one latent frame), `ref_conv` (a 2x2
stride-2 Conv2d, 16 -> width) turns them into one frame of tokens put in front of the video's tokens, at temporal
rotary position 0 (the video's frames move to 1..); they are dropped again after the output projection. A model with
ref_conv and no reference image gets zero latents there, as VideoX-Fun does.

Which of the two image inputs Sparkle used is not published ("this guidance, along with the edited first frame ...
is fed into a control model"); ours feeds both by default (FunControlConfig.use_start_image / use_reference_image,
the run config's [control] start_image / reference_image): the start image keeps frame 0 the edited frame 0, which
stage 2 already scored and stage 5 skips; the reference follows VideoX-Fun's control-with-reference example.

Experts: our `transformer` is the high-noise expert (t >= boundary_ratio * 1000) and `transformer_2` the low-noise
one, as in diffusers. VideoX-Fun names them the other way round (its transformer_2 is the high-noise expert, loaded
from high_noise_model/); convert_videox_fun.py maps high_noise_model -> transformer. Boundary 0.9 (VideoX-Fun's
config/wan2.2/wan_civitai_i2v.yaml), scheduler FlowMatchEulerDiscreteScheduler with shift 5 built by the loader
whatever scheduler config the folder holds (a diffusers Wan folder's UniPC config loads as Euler with shift 1).

Sampling (VideoX-Fun's example: 50 Euler steps, guidance 6, shift 5): FunControlConfig, set from the run config's
[control] section by `use_run_config`. mode "distilled": the LightX2V 4-step schedule of i2v.py at guidance 1, only
with the distillation LoRAs present (or experts declared distilled); without them loading fails with a clear error.

`FunControlGenerator` puts both backends ("fun", "vace") behind one interface: generate(control_video, start_image,
prompt) -> uint8 (T, H, W, 3). The VACE backend gives WanVACEPipeline the start image as frame 0 with mask 0 (keep)
and the control frames after it with mask 1 (generate under this control).

Speed levers (cfg_batch, cache, fp8, attention_backend, context_parallel: levers.py, docs/GENERATION.md) come from
the [control] section like the sampling settings; the pipeline runs each expert call inside cache_context("cond" |
"uncond") as diffusers' Wan pipelines do, and takes precomputed prompt embeddings for the batched-guidance hook.

Stage 5's filter picks 4 uniformly spaced non-first frames (`score_frame_indices`: [1, 26, 51, 76] for 81 frames).
"""

from __future__ import annotations

import dataclasses
import json
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from diffusers import WanTransformer3DModel
from diffusers.configuration_utils import register_to_config
from PIL import Image

from sparkle_fast.models.base import TaskResult, free_memory, pick_device, pick_dtype, to_pil
from sparkle_fast.models.i2v import (
    SpeedOptions,
    WanGeneratorSetup,
    WanSamplingConfig,
    apply_speed_options,
    check_image_size,
    check_prompt_length,
    check_video_geometry,
    frames_to_uint8,
)
from sparkle_fast.models.slots import ModelLoadError, check_model_folder

CHANNEL_LAYOUT = (("noise", 16), ("control", 16), ("mask", 4), ("start_image", 16))
FUN_CONTROL_IN_CHANNELS = sum(n for _, n in CHANNEL_LAYOUT)  # 52
FUN_CONTROL_BOUNDARY_RATIO = 0.9
FUN_CONTROL_SHIFT = 5.0
FUN_CONTROL_MARKER = "fun_control.json"
_COMPONENTS = ("transformer", "transformer_2", "vae", "text_encoder", "tokenizer")


def score_frame_indices(num_frames: int, count: int = 4) -> list[int]:
    """Stage 5's frames to score: `count` distinct, uniformly spaced frames after frame 0.

    The README gives [1, 26, 51, 76] for 81 frames (stride 25), not its formula; we keep the same stride relative
    to the length, round(25 * (num_frames - 1) / 80), so 81 frames give exactly the released indices and shorter
    clips scale down (an inference), capped so that all `count` frames fit: 13 frames give [1, 4, 7, 10], 25 give
    [1, 8, 15, 22], 5 give [1, 2, 3, 4]. Only a clip with fewer than count + 1 frames gets fewer: every non-first
    frame.
    """
    if num_frames < 2 or count < 1:
        raise ValueError(f"need num_frames >= 2 and count >= 1, got num_frames={num_frames}, count={count}")
    stride = round(25 * (num_frames - 1) / 80 * 4 / count)
    if count > 1:
        stride = min(stride, (num_frames - 2) // (count - 1))  # the last index, 1 + (count-1)*stride, stays < T
    stride = max(1, stride)
    return [1 + i * stride for i in range(count) if 1 + i * stride < num_frames]


def control_video_to_unit(control_video) -> torch.Tensor:
    """Control video as float32 (1, 3, T, H, W) in [0, 1] from uint8 (T, H, W, 3) (numpy or torch, any device) or
    floats in [0, 1] shaped (T, H, W, 3). A torch input stays on its device."""
    video = control_video.detach() if isinstance(control_video, torch.Tensor) else torch.as_tensor(
        np.asarray(control_video))
    if video.ndim != 4 or video.shape[-1] != 3:
        raise ValueError(f"control_video must be (T, H, W, 3) RGB, got shape {tuple(video.shape)}")
    if video.dtype == torch.uint8:
        video = video.float() / 255.0
    else:
        video = video.float()
        if video.numel() and bool((video.min() < 0) | (video.max() > 1)):
            raise ValueError("a float control_video must hold values in [0, 1] (uint8 frames are scaled for you)")
    return video.permute(3, 0, 1, 2).unsqueeze(0).contiguous()


# ----------------------------------------------------------------------------------------------------------------
# The transformer: diffusers' Wan transformer + VideoX-Fun's reference-image tokens
# ----------------------------------------------------------------------------------------------------------------

class WanFunControlTransformer3DModel(WanTransformer3DModel):
    """WanTransformer3DModel with VideoX-Fun's optional `ref_conv` (add_ref_conv=True): reference-image latents
    (B, in_dim_ref_conv, h, w) become one frame of tokens in front of the video's (see the module docstring).
    Without add_ref_conv, or without ref_latents, it is exactly diffusers' transformer."""

    @register_to_config
    def __init__(self, patch_size=(1, 2, 2), num_attention_heads=40, attention_head_dim=128, in_channels=16,
                 out_channels=16, text_dim=4096, freq_dim=256, ffn_dim=13824, num_layers=40, cross_attn_norm=True,
                 qk_norm="rms_norm_across_heads", eps=1e-6, image_dim=None, added_kv_proj_dim=None,
                 rope_max_seq_len=1024, pos_embed_seq_len=None, add_ref_conv: bool = False,
                 in_dim_ref_conv: int = 16):
        super().__init__(patch_size=patch_size, num_attention_heads=num_attention_heads,
                         attention_head_dim=attention_head_dim, in_channels=in_channels, out_channels=out_channels,
                         text_dim=text_dim, freq_dim=freq_dim, ffn_dim=ffn_dim, num_layers=num_layers,
                         cross_attn_norm=cross_attn_norm, qk_norm=qk_norm, eps=eps, image_dim=image_dim,
                         added_kv_proj_dim=added_kv_proj_dim, rope_max_seq_len=rope_max_seq_len,
                         pos_embed_seq_len=pos_embed_seq_len)
        inner_dim = num_attention_heads * attention_head_dim
        self.ref_conv = (torch.nn.Conv2d(in_dim_ref_conv, inner_dim, kernel_size=tuple(patch_size[1:]),
                                         stride=tuple(patch_size[1:])) if add_ref_conv else None)

    def forward(self, hidden_states, timestep, encoder_hidden_states, encoder_hidden_states_image=None,
                ref_latents=None, return_dict: bool = True, attention_kwargs=None):
        """hidden_states (B, C, F, H, W); timestep (B,); encoder_hidden_states (B, L, text_dim); ref_latents
        (B, in_dim_ref_conv, H, W) or None. Returns (B, out_channels, F, H, W) like diffusers' transformer."""
        if ref_latents is None or self.ref_conv is None:
            if ref_latents is not None:
                raise ValueError("ref_latents given but this transformer has no ref_conv (add_ref_conv is False)")
            return super().forward(hidden_states, timestep, encoder_hidden_states, encoder_hidden_states_image,
                                   return_dict=return_dict, attention_kwargs=attention_kwargs)
        from diffusers.models.modeling_outputs import Transformer2DModelOutput

        if timestep.ndim != 1:
            raise ValueError("per-token timesteps (Wan2.2 TI2V) are not supported with a reference image")
        batch, channels, frames, height, width = hidden_states.shape
        p_t, p_h, p_w = self.config.patch_size
        if ref_latents.shape[-2:] != (height, width):
            raise ValueError(f"ref_latents are {tuple(ref_latents.shape[-2:])} (h, w), the video latents "
                             f"{(height, width)}")
        # Rotary positions for one more frame: the reference takes temporal position 0, the video 1.. (the rope
        # only reads the shape, so an expanded view of one frame is enough).
        rotary_emb = self.rope(hidden_states[:, :, :1].expand(batch, channels, frames + p_t, height, width))
        tokens = self.patch_embedding(hidden_states).flatten(2).transpose(1, 2)
        ref_tokens = self.ref_conv(ref_latents.to(tokens.dtype)).flatten(2).transpose(1, 2)
        hidden = torch.cat([ref_tokens, tokens], dim=1).contiguous()
        temb, timestep_proj, encoder_hidden_states, encoder_hidden_states_image = self.condition_embedder(
            timestep, encoder_hidden_states, encoder_hidden_states_image, timestep_seq_len=None)
        timestep_proj = timestep_proj.unflatten(1, (6, -1))
        if encoder_hidden_states_image is not None:
            encoder_hidden_states = torch.concat([encoder_hidden_states_image, encoder_hidden_states], dim=1)
        for block in self.blocks:
            hidden = block(hidden, encoder_hidden_states, timestep_proj, rotary_emb)
        shift, scale = (self.scale_shift_table.to(temb.device) + temb.unsqueeze(1)).chunk(2, dim=1)
        hidden = (self.norm_out(hidden.float()) * (1 + scale.to(hidden.device)) + shift.to(hidden.device)).type_as(
            hidden)
        hidden = self.proj_out(hidden)[:, ref_tokens.shape[1]:]  # drop the reference frame's tokens
        hidden = hidden.reshape(batch, frames // p_t, height // p_h, width // p_w, p_t, p_h, p_w, -1)
        output = hidden.permute(0, 7, 1, 4, 2, 5, 3, 6).flatten(6, 7).flatten(4, 5).flatten(2, 3)
        return (output,) if not return_dict else Transformer2DModelOutput(sample=output)


# ----------------------------------------------------------------------------------------------------------------
# The pipeline
# ----------------------------------------------------------------------------------------------------------------

def _pipeline_bases():
    from diffusers import DiffusionPipeline
    from diffusers.loaders import WanLoraLoaderMixin

    return DiffusionPipeline, WanLoraLoaderMixin


_DiffusionPipeline, _WanLoraLoaderMixin = _pipeline_bases()


def has_ref_conv(transformer) -> bool:
    return getattr(transformer, "ref_conv", None) is not None


class WanFunControlPipeline(_DiffusionPipeline, _WanLoraLoaderMixin):
    """Wan2.2 Fun-Control on diffusers components (see the module docstring for the conditioning layout).

    Components: tokenizer, text_encoder (UMT5EncoderModel), vae (AutoencoderKLWan), scheduler (flow matching),
    transformer (high-noise expert, in_channels 52), transformer_2 (low-noise expert); both experts
    WanFunControlTransformer3DModel (with or without ref_conv) or plain WanTransformer3DModel (no reference image).
    LoRAs load like diffusers' Wan pipelines (load_lora_weights, load_into_transformer_2=True).
    """

    model_cpu_offload_seq = "text_encoder->transformer->transformer_2->vae"
    _optional_components = ["transformer_2"]

    def __init__(self, tokenizer, text_encoder, vae, scheduler, transformer, transformer_2=None,
                 boundary_ratio: float | None = FUN_CONTROL_BOUNDARY_RATIO):
        super().__init__()
        self.register_modules(tokenizer=tokenizer, text_encoder=text_encoder, vae=vae, scheduler=scheduler,
                              transformer=transformer, transformer_2=transformer_2)
        self.register_to_config(boundary_ratio=boundary_ratio)
        if transformer.config.in_channels != FUN_CONTROL_IN_CHANNELS:
            raise ValueError(f"Fun-Control experts take {FUN_CONTROL_IN_CHANNELS} input channels "
                             f"({' + '.join(f'{n} {k}' for k, n in CHANNEL_LAYOUT)}), this transformer has "
                             f"{transformer.config.in_channels}")
        if transformer_2 is not None and has_ref_conv(transformer) != has_ref_conv(transformer_2):
            raise ValueError("the two experts disagree on ref_conv (one has the reference-image input, one not)")
        self.vae_scale_factor_temporal = vae.config.scale_factor_temporal
        self.vae_scale_factor_spatial = vae.config.scale_factor_spatial

    @property
    def accepts_reference(self) -> bool:
        """Whether the experts have VideoX-Fun's ref_conv (the reference-image input)."""
        return has_ref_conv(self.transformer)

    # -- conditioning ------------------------------------------------------------------------------------------

    def encode_prompt(self, prompt: str, max_sequence_length: int, device) -> torch.Tensor:
        """UMT5 embeddings (1, max_sequence_length, D), zeroed past the prompt's tokens (as Wan is trained)."""
        from diffusers.pipelines.wan.pipeline_wan import prompt_clean

        inputs = self.tokenizer([prompt_clean(prompt)], padding="max_length", max_length=max_sequence_length,
                                truncation=True, add_special_tokens=True, return_attention_mask=True,
                                return_tensors="pt")
        encoder_device = next(self.text_encoder.parameters()).device
        hidden = self.text_encoder(inputs.input_ids.to(encoder_device),
                                   inputs.attention_mask.to(encoder_device)).last_hidden_state
        hidden = hidden * inputs.attention_mask.to(hidden.device).unsqueeze(-1).to(hidden.dtype)
        return hidden.to(device)

    def _vae_latents(self, pixels: torch.Tensor, device) -> torch.Tensor:
        """Normalised latents (B, z, T', h, w) float32 of pixels (B, 3, T, H, W) in [-1, 1] (the distribution's
        mode), normalised where the VAE ran (no host round trip), then moved to `device`."""
        vae_device = next(self.vae.parameters()).device
        latents = self.vae.encode(pixels.to(vae_device, self.vae.dtype)).latent_dist.mode().float()
        z = self.vae.config.z_dim
        mean = torch.tensor(self.vae.config.latents_mean, dtype=torch.float32, device=latents.device)
        std = torch.tensor(self.vae.config.latents_std, dtype=torch.float32, device=latents.device)
        return ((latents - mean.view(1, z, 1, 1, 1)) / std.view(1, z, 1, 1, 1)).to(device)

    def first_frame_mask(self, num_frames: int, latent_height: int, latent_width: int, device=None) -> torch.Tensor:
        """(1, 4, T', h, w) float: latent frame 0 all ones (the given start image), the others zeros."""
        factor = self.vae_scale_factor_temporal
        pixel_mask = torch.zeros(num_frames, latent_height, latent_width, device=device)
        pixel_mask[0] = 1.0
        # Frame 0 stands for `factor` frames in the causal VAE: repeat it so the frames fold evenly.
        pixel_mask = torch.cat([pixel_mask[:1].repeat(factor, 1, 1), pixel_mask[1:]])
        latent_frames = pixel_mask.shape[0] // factor
        return pixel_mask.view(latent_frames, factor, latent_height, latent_width).transpose(0, 1).unsqueeze(0)

    def prepare_condition(self, control_video: torch.Tensor, start_image: torch.Tensor | None,
                          device) -> torch.Tensor:
        """The 36 conditioning channels (1, 36, T', h, w): control (16), mask (4), start image (16).

        control_video: float (1, 3, T, H, W) in [0, 1]; start_image: float (1, 3, H, W) in [0, 1], or None (mask and
        start-image channels zero, VideoX-Fun's branch for "no frame given").
        """
        _, _, num_frames, height, width = control_video.shape
        control_latents = self._vae_latents(control_video * 2.0 - 1.0, device)
        if start_image is None:
            empty = control_latents.new_zeros(1, 4 + control_latents.shape[1], *control_latents.shape[2:])
            return torch.cat([control_latents, empty], dim=1)
        first = start_image.to(control_video.device).unsqueeze(2) * 2.0 - 1.0
        image_video = torch.cat([first, first.new_zeros(1, 3, num_frames - 1, height, width)], dim=2)
        image_latents = self._vae_latents(image_video, device)
        mask = self.first_frame_mask(num_frames, control_latents.shape[-2], control_latents.shape[-1], device)
        return torch.cat([control_latents, mask, image_latents], dim=1)

    def reference_latents(self, ref_image: torch.Tensor | None, latent_shape, device) -> torch.Tensor | None:
        """(1, z, h, w) latents of the reference image (1, 3, H, W) in [0, 1] for ref_conv (zeros when None), or None
        when the experts have no ref_conv (then a reference image is an error, as in VideoX-Fun)."""
        if not self.accepts_reference:
            if ref_image is not None:
                raise ValueError("a reference image was given but this Fun-Control checkpoint has no ref_conv "
                                 "(convert a checkpoint with ref_conv, or turn [control] reference_image off)")
            return None
        if ref_image is None:
            return torch.zeros(1, latent_shape[1], latent_shape[3], latent_shape[4], device=device)
        return self._vae_latents(ref_image.unsqueeze(2) * 2.0 - 1.0, device)[:, :, 0]

    # -- generation --------------------------------------------------------------------------------------------

    @torch.no_grad()
    def __call__(self, prompt: str, control_video, start_image=None, *, ref_image=None, num_frames: int,
                 height: int, width: int, num_inference_steps: int = 50, guidance_scale: float = 6.0,
                 negative_prompt: str = "", generator: torch.Generator | None = None,
                 max_sequence_length: int = 512, output_type: str = "np", prompt_embeds=None,
                 negative_prompt_embeds=None):
        """Generate (1, T, H, W, 3) float frames in [0, 1] (output_type "np") or the latents ("latent").

        control_video: (1, 3, T, H, W) float in [0, 1] of exactly num_frames x height x width; start_image,
        ref_image: (1, 3, H, W) float in [0, 1] or None. Guidance runs an unconditional pass only when > 1.
        prompt_embeds / negative_prompt_embeds (1, L, D): precomputed (encode_prompt) instead of prompt /
        negative_prompt; passed to the experts as given (the CFG-batching hook matches them by identity). Each
        expert call runs inside cache_context("cond" | "uncond") like diffusers' Wan pipelines (for their cache
        hooks).
        """
        device = self._execution_device
        if tuple(control_video.shape[2:]) != (num_frames, height, width):
            raise ValueError(f"control video is {tuple(control_video.shape[2:])} (T, H, W), expected "
                             f"{(num_frames, height, width)}")
        dtype = self.transformer.dtype
        if prompt_embeds is None:
            prompt_embeds = self.encode_prompt(prompt, max_sequence_length, device).to(dtype)
        do_cfg = guidance_scale > 1.0
        negative_embeds = None
        if do_cfg:
            negative_embeds = (negative_prompt_embeds if negative_prompt_embeds is not None else
                               self.encode_prompt(negative_prompt, max_sequence_length, device).to(dtype))

        self.scheduler.set_timesteps(num_inference_steps, device=device)
        timesteps = self.scheduler.timesteps
        condition = self.prepare_condition(control_video, start_image, device)
        latent_shape = (1, self.vae.config.z_dim, condition.shape[2], condition.shape[3], condition.shape[4])
        reference = self.reference_latents(ref_image, latent_shape, device)
        from diffusers.utils.torch_utils import randn_tensor

        latents = randn_tensor(latent_shape, generator=generator, device=device, dtype=torch.float32)
        boundary = self.config.boundary_ratio
        boundary_t = None if boundary is None else boundary * self.scheduler.config.num_train_timesteps
        for t in timesteps:
            high = boundary_t is None or self.transformer_2 is None or t >= boundary_t
            expert = self.transformer if high else self.transformer_2
            model_input = torch.cat([latents, condition], dim=1).to(expert.dtype)
            extra = {} if reference is None else {"ref_latents": reference.to(expert.dtype)}
            timestep = t.expand(1)
            with expert.cache_context("cond"):
                noise_pred = expert(hidden_states=model_input, timestep=timestep,
                                    encoder_hidden_states=prompt_embeds, return_dict=False, **extra)[0]
            if do_cfg:
                with expert.cache_context("uncond"):
                    noise_uncond = expert(hidden_states=model_input, timestep=timestep,
                                          encoder_hidden_states=negative_embeds, return_dict=False, **extra)[0]
                noise_pred = noise_uncond + guidance_scale * (noise_pred - noise_uncond)
            latents = self.scheduler.step(noise_pred.float(), t, latents, return_dict=False)[0]

        if output_type == "latent":
            self.maybe_free_model_hooks()
            return latents
        z = self.vae.config.z_dim
        mean = torch.tensor(self.vae.config.latents_mean).view(1, z, 1, 1, 1).to(latents)
        std = torch.tensor(self.vae.config.latents_std).view(1, z, 1, 1, 1).to(latents)
        vae_device = next(self.vae.parameters()).device
        video = self.vae.decode((latents * std + mean).to(vae_device, self.vae.dtype), return_dict=False)[0]
        self.maybe_free_model_hooks()
        frames = ((video.float().clamp(-1, 1) + 1) / 2).permute(0, 2, 3, 4, 1)  # (1, T, H, W, 3)
        return frames.cpu().numpy()


def save_fun_control(pipeline: WanFunControlPipeline, folder: str | os.PathLike, *, source: str = "") -> Path:
    """Write the pipeline as our control-slot folder: one save_pretrained sub-folder per component + the
    fun_control.json marker (boundary ratio, expert naming, channel layout, ref_conv). No scheduler: the loader
    builds Euler with the run's shift."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    for name in _COMPONENTS:
        component = getattr(pipeline, name, None)
        if component is not None:
            component.save_pretrained(folder / name)
    (folder / FUN_CONTROL_MARKER).write_text(json.dumps(
        fun_control_marker(pipeline.config.boundary_ratio, pipeline.accepts_reference, source), indent=2))
    return folder


def fun_control_marker(boundary_ratio: float, ref_conv: bool, source: str = "", **extra) -> dict:
    return {"format": "sparkle-fast Wan2.2 Fun-Control", "boundary_ratio": boundary_ratio,
            "high_noise_expert": "transformer", "low_noise_expert": "transformer_2",
            "channel_layout": [list(item) for item in CHANNEL_LAYOUT], "ref_conv": bool(ref_conv),
            "scheduler": "FlowMatchEulerDiscreteScheduler built at load with the run's shift (Fun-Control: 5)",
            "source": source, **extra}


def load_fun_control(folder: str | os.PathLike, *, dtype: torch.dtype = torch.float32,
                     shift: float = FUN_CONTROL_SHIFT) -> WanFunControlPipeline:
    """Load a control-slot folder (checked first: ModelFolderError names the slot and what is missing). The
    scheduler is always FlowMatchEulerDiscreteScheduler(shift=shift), whatever folder/scheduler/ holds.
    ModelLoadError (naming the folder and what to do) for a folder that cannot become the pipeline."""
    from diffusers import AutoencoderKLWan, FlowMatchEulerDiscreteScheduler
    from transformers import AutoTokenizer, UMT5EncoderModel

    folder = check_model_folder("control", folder)
    marker = json.loads((folder / FUN_CONTROL_MARKER).read_text())
    if marker.get("videox_fun_extras"):
        raise ModelLoadError(
            f"[control] {folder / FUN_CONTROL_MARKER}: converted by an older sparkle-fast that set VideoX-Fun's "
            f"{marker['videox_fun_extras']} aside; convert the VideoX-Fun checkpoint again "
            f"(python -m sparkle_fast.models.convert_videox_fun SRC {folder} --components-from ...): ref_conv is "
            f"now part of the experts")
    num_train = 1000
    scheduler_config = folder / "scheduler" / "scheduler_config.json"
    if scheduler_config.is_file():
        num_train = int(json.loads(scheduler_config.read_text()).get("num_train_timesteps", 1000))
    experts = [WanFunControlTransformer3DModel.from_pretrained(folder / name, dtype=dtype).eval()
               for name in ("transformer", "transformer_2")]
    for name, expert in zip(("transformer", "transformer_2"), experts, strict=True):
        if expert.config.in_channels != FUN_CONTROL_IN_CHANNELS:
            raise ModelLoadError(f"[control] {folder / name}: in_channels {expert.config.in_channels}, Fun-Control "
                                 f"takes {FUN_CONTROL_IN_CHANNELS} (is this a Fun-Control checkpoint?)")
    return WanFunControlPipeline(
        tokenizer=AutoTokenizer.from_pretrained(folder / "tokenizer"),
        text_encoder=UMT5EncoderModel.from_pretrained(folder / "text_encoder", dtype=dtype).eval(),
        vae=AutoencoderKLWan.from_pretrained(folder / "vae", dtype=torch.float32).eval(),
        scheduler=FlowMatchEulerDiscreteScheduler(num_train_timesteps=num_train, shift=shift),
        transformer=experts[0], transformer_2=experts[1],
        boundary_ratio=marker.get("boundary_ratio", FUN_CONTROL_BOUNDARY_RATIO))


# ----------------------------------------------------------------------------------------------------------------
# The stage-5 generator (both backends)
# ----------------------------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class FunControlConfig(WanSamplingConfig):
    """Stage 5's synthesis. By default VideoX-Fun's settings for the undistilled experts (Euler, 50 steps, guidance
    6, shift 5, boundary 0.9); distilled=True: the LightX2V 4-step schedule at guidance 1 (needs the 4-step LoRAs
    or experts_distilled). use_start_image / use_reference_image: feed the edited frame 0 as the start image
    (inpaint channels) and as the reference image (ref_conv, when the checkpoint has it)."""

    distilled: bool = False
    num_inference_steps: int = 50
    guidance_scale: float = 6.0
    shift: float = FUN_CONTROL_SHIFT
    boundary_ratio: float = FUN_CONTROL_BOUNDARY_RATIO
    use_start_image: bool = True
    use_reference_image: bool = True


class FunControlGenerator(WanGeneratorSetup):
    """generate(control_video, start_image, prompt) -> uint8 (T, H, W, 3), backend "fun" (WanFunControlPipeline)
    or "vace" (diffusers WanVACEPipeline)."""

    BACKENDS = ("fun", "vace")
    SLOT = "control"
    SECTION = "control"

    def __init__(self, pipeline, config: FunControlConfig | None = None, *, backend: str = "fun", device=None,
                 folder: Path | None = None):
        if backend not in self.BACKENDS:
            raise ValueError(f"unknown control backend {backend!r}; choose one of {self.BACKENDS}")
        self.backend, self.pipeline = backend, pipeline
        self.SLOT = "control" if backend == "fun" else "vace"
        self.config = config or FunControlConfig()
        self.device = pick_device(device) if device is not None else pipeline.device
        self._swapper = None
        self._init_setup(folder)
        if folder is None:
            self._apply(self.config)

    @classmethod
    def from_pretrained(cls, folder, *, backend: str = "fun", device=None, dtype=None,
                        config: FunControlConfig | None = None, lora_high=None, lora_low=None,
                        lora_scale: float | None = None, speed: SpeedOptions | None = None):
        """Load the control slot ("fun": our converted folder) or the vace slot ("vace": a diffusers WanVACEPipeline
        folder). With a config (or LoRAs) the settings are applied now (distilled mode: LoRAs from lora_high/low,
        else config.lora_high/low, else folder/lightx2v/, or config.experts_distilled; else ModelLoadError); without
        one, by use_run_config or the first generate. ModelFolderError for missing files, ModelLoadError (naming the
        folder and what to do) for anything else that stops the model from loading."""
        eager = config is not None or lora_high is not None or lora_low is not None
        config = config or FunControlConfig()
        if lora_high is not None or lora_low is not None or lora_scale is not None:
            config = dataclasses.replace(config, lora_high=str(lora_high or ""), lora_low=str(lora_low or ""),
                                         lora_scale=config.lora_scale if lora_scale is None else lora_scale)
        if backend not in cls.BACKENDS:
            raise ValueError(f"unknown control backend {backend!r}; choose one of {cls.BACKENDS}")
        device = pick_device(device)
        dtype = pick_dtype(device, dtype)
        slot = "control" if backend == "fun" else "vace"
        folder = check_model_folder(slot, folder)
        try:
            if backend == "fun":
                pipeline = load_fun_control(folder, dtype=dtype, shift=config.shift)
            else:
                from diffusers import WanVACEPipeline

                pipeline = WanVACEPipeline.from_pretrained(folder, dtype=dtype)
        except ModelLoadError:
            raise
        except Exception as exc:  # noqa: BLE001 - named, with the folder, for the stage's failure record
            raise ModelLoadError(f"[{slot}] {folder}: could not load Wan2.2 Fun-Control ({backend}): "
                                 f"{type(exc).__name__}: {exc}") from exc
        pipeline.set_progress_bar_config(disable=True)
        generator = cls(pipeline, config, backend=backend, device=device, folder=folder)
        if eager:
            generator._apply(config)
        # speed: where the weights live (the runner passes the plan's placement) without applying the settings now
        generator._swapper = apply_speed_options(pipeline, speed or config.speed, device)
        return generator

    @classmethod
    def tiny(cls, *, backend: str = "fun", seed: int = 0, config: FunControlConfig | None = None):
        """Tiny random pipelines (tiny.tiny_wan_fun_control, with ref_conv / tiny_wan_vace), 9 frames of 32x32,
        4 steps. Their random experts stand in for distilled ones (no LoRA needed)."""
        from sparkle_fast.models import tiny

        pipeline = tiny.tiny_wan_fun_control(seed) if backend == "fun" else tiny.tiny_wan_vace(seed)
        pipeline.set_progress_bar_config(disable=True)
        config = config or FunControlConfig(num_frames=9, height=32, width=32, num_inference_steps=4,
                                            guidance_scale=1.0, max_sequence_length=16)
        return cls(pipeline, config, backend=backend, device="cpu")

    def _section_config(self, section, run_config) -> FunControlConfig:
        config = super()._section_config(section, run_config)
        return dataclasses.replace(config, use_start_image=bool(section.start_image),
                                   use_reference_image=bool(section.reference_image))

    def settings(self) -> dict:
        """The sampling settings in force and the image inputs used, for the stage's record."""
        out = super().settings()
        out.update(backend=self.backend, start_image=self.config.use_start_image,
                   reference_image=bool(self.config.use_reference_image and self.backend == "fun"
                                        and self.pipeline.accepts_reference))
        return out

    def release(self) -> None:
        if self._swapper is not None:
            self._swapper.remove()
            self._swapper = None
        self.pipeline = None
        free_memory(self.device)

    def _check_inputs(self, control_video, start_image, prompt, num_frames, height, width):
        cfg = self.config
        check_video_geometry(num_frames, height, width)
        check_prompt_length(self.pipeline.tokenizer, prompt, cfg.max_sequence_length)
        control = control_video_to_unit(control_video)
        if control.shape[2] != num_frames:
            raise ValueError(f"control video has {control.shape[2]} frames but {num_frames} were requested: "
                             f"trim or pad the control video to the requested length")
        if tuple(control.shape[3:]) != (height, width):
            if not cfg.resize_inputs:
                raise ValueError(f"control video is {control.shape[4]}x{control.shape[3]} (WxH) but the video is "
                                 f"{width}x{height}: pass frames of the video's size, or resize_inputs=True")
            control = torch.nn.functional.interpolate(control[0].transpose(0, 1), size=(height, width),
                                                      mode="bilinear", align_corners=False)
            control = control.transpose(0, 1).unsqueeze(0).clamp(0, 1)
        image = check_image_size(to_pil(start_image), height, width, cfg.resize_inputs, what="start_image")
        return control, image

    def generate(self, control_video, start_image, prompt: str, *, seed: int | None = None,
                 num_frames: int | None = None, height: int | None = None, width: int | None = None) -> np.ndarray:
        """The synthesised video, uint8 RGB (T, H, W, 3). control_video: uint8 (T, H, W, 3) (or floats in [0, 1]);
        start_image: PIL or uint8 (H, W, 3), the edited frame 0 (start and/or reference image per the config).
        ValueError for a length/size mismatch or a too-long prompt; ModelLoadError when the run's settings could
        not be applied."""
        self._ensure_ready()
        cfg = self.config
        num_frames, height, width = num_frames or cfg.num_frames, height or cfg.height, width or cfg.width
        control, image = self._check_inputs(control_video, start_image, prompt, num_frames, height, width)
        generator = torch.Generator(device="cpu").manual_seed(cfg.seed if seed is None else seed)
        steps = len(cfg.sigmas) if cfg.distilled else cfg.num_inference_steps
        guidance = 1.0 if cfg.distilled else cfg.guidance_scale
        with torch.inference_mode():
            embeds = self._guided_call(guidance, lambda: self._encode(prompt))
            try:
                if self.backend == "fun":
                    pixels = torch.from_numpy(np.array(image)).permute(2, 0, 1).unsqueeze(0).float() / 255.0
                    pixels = pixels.to(control.device)
                    reference = pixels if cfg.use_reference_image and self.pipeline.accepts_reference else None
                    frames = self.pipeline(prompt, control, pixels if cfg.use_start_image else None,
                                           ref_image=reference, num_frames=num_frames, height=height, width=width,
                                           num_inference_steps=steps, guidance_scale=guidance,
                                           negative_prompt=cfg.negative_prompt, generator=generator,
                                           max_sequence_length=cfg.max_sequence_length, **embeds)
                else:
                    frames = self._generate_vace(control, image, prompt, num_frames, height, width, steps, guidance,
                                                 generator, embeds)
            finally:
                self.lever_state.after_generate()
        return frames_to_uint8(frames)

    def _encode(self, prompt: str):
        """(prompt, negative prompt) embeddings as the backend's pipeline computes them, in the experts' dtype."""
        dtype, cfg = self.pipeline.transformer.dtype, self.config
        if self.backend == "fun":
            device = self.pipeline._execution_device
            return (self.pipeline.encode_prompt(prompt, cfg.max_sequence_length, device).to(dtype),
                    self.pipeline.encode_prompt(cfg.negative_prompt, cfg.max_sequence_length, device).to(dtype))
        positive, negative = self.pipeline.encode_prompt(
            prompt, cfg.negative_prompt or None, do_classifier_free_guidance=True,
            max_sequence_length=cfg.max_sequence_length, device=self.pipeline._execution_device)
        return positive.to(dtype), negative.to(dtype)

    def _generate_vace(self, control, image, prompt, num_frames, height, width, steps, guidance, generator,
                       embeds=None):
        """Frame 0 = the start image under mask 0 (kept); frames 1.. = the control frames under mask 1."""
        control_u8 = (control[0].permute(1, 2, 3, 0).cpu().numpy() * 255.0 + 0.5).astype(np.uint8)
        video = [image] + [Image.fromarray(frame) for frame in control_u8[1:]]
        black, white = Image.new("L", (width, height), 0), Image.new("L", (width, height), 255)
        mask = [black] + [white] * (num_frames - 1)
        texts = {"prompt": None} if embeds else {"prompt": prompt,
                                                  "negative_prompt": self.config.negative_prompt or None}
        return self.pipeline(**texts, **(embeds or {}), video=video, mask=mask, height=height, width=width,
                             num_frames=num_frames, num_inference_steps=steps, guidance_scale=guidance,
                             generator=generator, max_sequence_length=self.config.max_sequence_length,
                             output_type="np").frames

    def generate_to_file(self, path: str | os.PathLike, control_video, start_image, prompt: str, **kwargs) -> Path:
        """generate() and write an H.264 mp4 (Sparkle's edited_video), atomically."""
        from sparkle_fast.video import write_video

        return write_video(path, self.generate(control_video, start_image, prompt, **kwargs), fps=self.config.fps)

    def try_generate(self, control_video, start_image, prompt: str, **kwargs) -> TaskResult:
        """generate() as a TaskResult: bad input or a model error is a recorded reason, not an exception."""
        try:
            return TaskResult(ok=True, value=self.generate(control_video, start_image, prompt, **kwargs), attempts=1)
        except Exception as exc:  # noqa: BLE001
            return TaskResult(ok=False, reason=f"Wan2.2 Fun-Control ({self.backend}) failed: "
                                               f"{type(exc).__name__}: {exc}", attempts=1)


__all__ = ["CHANNEL_LAYOUT", "FUN_CONTROL_IN_CHANNELS", "FunControlConfig", "FunControlGenerator",
           "WanFunControlPipeline", "WanFunControlTransformer3DModel", "control_video_to_unit", "load_fun_control",
           "save_fun_control", "score_frame_indices"]
