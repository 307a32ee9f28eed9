"""Stage 5's synthesis: Wan2.2-Fun-A14B-Control, on diffusers' Wan building blocks; WanVACEPipeline as an alternative.

Fun-Control is not in diffusers. `WanFunControlPipeline` is our pipeline over diffusers' WanTransformer3DModel (two
experts), AutoencoderKLWan, the UMT5 text encoder and a flow-matching scheduler. It conditions on
  - the control video (stage 5's composed Canny edges, uint8 RGB or floats in [0, 1]),
  - the start image (the edited frame 0), and the text,
as VideoX-Fun's Wan2.2 Fun-Control pipeline does when it is given a start image (read in VideoX-Fun's
pipeline_wan2_2_fun_control.py and utils.get_image_to_video_latent; not copied). The transformer input per step is
the channel concatenation (CHANNEL_LAYOUT, 52 channels):

   0..15  the noisy latents
  16..31  control-video latents: VAE(2 * control - 1), normalised with the VAE's latents_mean / latents_std
  32..35  mask latents: the pixel-frame mask "frame is given" (1 for frame 0, 0 after), first frame repeated 4x and
          folded 4 frames per latent frame, so latent frame 0 is all ones and the rest zeros
  36..51  start-image latents: VAE of [start image, then zeros (mid-grey in [-1, 1]) for the other frames]

Experts: our `transformer` is the high-noise expert (t >= boundary_ratio * 1000) and `transformer_2` the low-noise
one, as in diffusers. VideoX-Fun names them the other way round (its transformer_2 is the high-noise expert, loaded
from high_noise_model/); convert_videox_fun.py maps high_noise_model -> transformer. Boundary 0.9, shift 5.

Defaults follow VideoX-Fun's example (50 Euler steps, guidance 6); with a 4-step LoRA (or distilled experts) pass
`distilled=True` in FunControlConfig: the LightX2V schedule of i2v.py at guidance 1.

`FunControlGenerator` puts both backends ("fun", "vace") behind one interface: generate(control_video, start_image,
prompt) -> uint8 (T, H, W, 3). The VACE backend gives WanVACEPipeline the start image as frame 0 with mask 0 (keep)
and the control frames after it with mask 1 (generate under this control).

Stage 5's filter picks 4 uniformly spaced non-first frames (`score_frame_indices`: [1, 26, 51, 76] for 81 frames).
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from sparkle_fast.models.base import TaskResult, free_memory, pick_device, pick_dtype, to_pil
from sparkle_fast.models.i2v import (
    WanSamplingConfig,
    apply_speed_options,
    check_image_size,
    check_prompt_length,
    check_video_geometry,
    configure_wan_pipeline,
    frames_to_uint8,
    fuse_folder_loras,
)
from sparkle_fast.models.slots import check_model_folder

CHANNEL_LAYOUT = (("noise", 16), ("control", 16), ("mask", 4), ("start_image", 16))
FUN_CONTROL_IN_CHANNELS = sum(n for _, n in CHANNEL_LAYOUT)  # 52
FUN_CONTROL_BOUNDARY_RATIO = 0.9
FUN_CONTROL_MARKER = "fun_control.json"
_COMPONENTS = ("transformer", "transformer_2", "vae", "text_encoder", "tokenizer", "scheduler")


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
    """Control video as float32 (1, 3, T, H, W) in [0, 1] from uint8 (T, H, W, 3) (numpy or torch) or floats in
    [0, 1] shaped (T, H, W, 3)."""
    video = torch.as_tensor(np.asarray(control_video) if not isinstance(control_video, torch.Tensor)
                            else control_video).detach().cpu()
    if video.ndim != 4 or video.shape[-1] != 3:
        raise ValueError(f"control_video must be (T, H, W, 3) RGB, got shape {tuple(video.shape)}")
    if video.dtype == torch.uint8:
        video = video.float() / 255.0
    else:
        video = video.float()
        if video.numel() and (video.min() < 0 or video.max() > 1):
            raise ValueError("a float control_video must hold values in [0, 1] (uint8 frames are scaled for you)")
    return video.permute(3, 0, 1, 2).unsqueeze(0).contiguous()


# ----------------------------------------------------------------------------------------------------------------
# The pipeline
# ----------------------------------------------------------------------------------------------------------------

def _pipeline_bases():
    from diffusers import DiffusionPipeline
    from diffusers.loaders import WanLoraLoaderMixin

    return DiffusionPipeline, WanLoraLoaderMixin


_DiffusionPipeline, _WanLoraLoaderMixin = _pipeline_bases()


class WanFunControlPipeline(_DiffusionPipeline, _WanLoraLoaderMixin):
    """Wan2.2 Fun-Control on diffusers components (see the module docstring for the conditioning layout).

    Components: tokenizer, text_encoder (UMT5EncoderModel), vae (AutoencoderKLWan), scheduler (flow matching),
    transformer (high-noise expert, in_channels 52), transformer_2 (low-noise expert). LoRAs load like diffusers'
    Wan pipelines (load_lora_weights, load_into_transformer_2=True).
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
        self.vae_scale_factor_temporal = vae.config.scale_factor_temporal
        self.vae_scale_factor_spatial = vae.config.scale_factor_spatial

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
        """Normalised latents (B, z, T', h, w) of pixels (B, 3, T, H, W) in [-1, 1] (the distribution's mode)."""
        vae_device = next(self.vae.parameters()).device
        latents = self.vae.encode(pixels.to(vae_device, self.vae.dtype)).latent_dist.mode().float()
        z = self.vae.config.z_dim
        mean = torch.tensor(self.vae.config.latents_mean, dtype=torch.float32).view(1, z, 1, 1, 1)
        std = torch.tensor(self.vae.config.latents_std, dtype=torch.float32).view(1, z, 1, 1, 1)
        return ((latents.cpu() - mean) / std).to(device)

    def first_frame_mask(self, num_frames: int, latent_height: int, latent_width: int) -> torch.Tensor:
        """(1, 4, T', h, w) float: latent frame 0 all ones (the given start image), the others zeros."""
        factor = self.vae_scale_factor_temporal
        pixel_mask = torch.zeros(num_frames, latent_height, latent_width)
        pixel_mask[0] = 1.0
        # Frame 0 stands for `factor` frames in the causal VAE: repeat it so the frames fold evenly.
        pixel_mask = torch.cat([pixel_mask[:1].repeat(factor, 1, 1), pixel_mask[1:]])
        latent_frames = pixel_mask.shape[0] // factor
        return pixel_mask.view(latent_frames, factor, latent_height, latent_width).transpose(0, 1).unsqueeze(0)

    def prepare_condition(self, control_video: torch.Tensor, start_image: torch.Tensor, device) -> torch.Tensor:
        """The 36 conditioning channels (1, 36, T', h, w): control (16), mask (4), start image (16).

        control_video: float (1, 3, T, H, W) in [0, 1]; start_image: float (1, 3, H, W) in [0, 1].
        """
        _, _, num_frames, height, width = control_video.shape
        control_latents = self._vae_latents(control_video * 2.0 - 1.0, device)
        first = start_image.unsqueeze(2) * 2.0 - 1.0
        image_video = torch.cat([first, first.new_zeros(1, 3, num_frames - 1, height, width)], dim=2)
        image_latents = self._vae_latents(image_video, device)
        mask = self.first_frame_mask(num_frames, control_latents.shape[-2], control_latents.shape[-1]).to(device)
        return torch.cat([control_latents, mask, image_latents], dim=1)

    # -- generation --------------------------------------------------------------------------------------------

    @torch.no_grad()
    def __call__(self, prompt: str, control_video, start_image, *, num_frames: int, height: int, width: int,
                 num_inference_steps: int = 50, guidance_scale: float = 6.0, negative_prompt: str = "",
                 generator: torch.Generator | None = None, max_sequence_length: int = 512,
                 output_type: str = "np"):
        """Generate (1, T, H, W, 3) float frames in [0, 1] (output_type "np") or the latents ("latent").

        control_video: (1, 3, T, H, W) float in [0, 1] of exactly num_frames x height x width;
        start_image: (1, 3, H, W) float in [0, 1]. Guidance runs an unconditional pass only when > 1.
        """
        device = self._execution_device
        if tuple(control_video.shape[2:]) != (num_frames, height, width):
            raise ValueError(f"control video is {tuple(control_video.shape[2:])} (T, H, W), expected "
                             f"{(num_frames, height, width)}")
        dtype = self.transformer.dtype
        prompt_embeds = self.encode_prompt(prompt, max_sequence_length, device).to(dtype)
        do_cfg = guidance_scale > 1.0
        negative_embeds = (self.encode_prompt(negative_prompt, max_sequence_length, device).to(dtype)
                           if do_cfg else None)

        self.scheduler.set_timesteps(num_inference_steps, device=device)
        timesteps = self.scheduler.timesteps
        condition = self.prepare_condition(control_video, start_image, device)
        latent_shape = (1, self.vae.config.z_dim, condition.shape[2], condition.shape[3], condition.shape[4])
        from diffusers.utils.torch_utils import randn_tensor

        latents = randn_tensor(latent_shape, generator=generator, device=device, dtype=torch.float32)
        boundary = self.config.boundary_ratio
        boundary_t = None if boundary is None else boundary * self.scheduler.config.num_train_timesteps
        for t in timesteps:
            high = boundary_t is None or self.transformer_2 is None or t >= boundary_t
            expert = self.transformer if high else self.transformer_2
            model_input = torch.cat([latents, condition], dim=1).to(expert.dtype)
            timestep = t.expand(1)
            noise_pred = expert(hidden_states=model_input, timestep=timestep, encoder_hidden_states=prompt_embeds,
                                return_dict=False)[0]
            if do_cfg:
                noise_uncond = expert(hidden_states=model_input, timestep=timestep,
                                      encoder_hidden_states=negative_embeds, return_dict=False)[0]
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
    fun_control.json marker (boundary ratio, expert naming, channel layout)."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    for name in _COMPONENTS:
        component = getattr(pipeline, name, None)
        if component is not None:
            component.save_pretrained(folder / name)
    marker = {"format": "sparkle-fast Wan2.2 Fun-Control", "boundary_ratio": pipeline.config.boundary_ratio,
              "high_noise_expert": "transformer", "low_noise_expert": "transformer_2",
              "channel_layout": [list(item) for item in CHANNEL_LAYOUT], "source": source}
    (folder / FUN_CONTROL_MARKER).write_text(json.dumps(marker, indent=2))
    return folder


def load_fun_control(folder: str | os.PathLike, *, dtype: torch.dtype = torch.float32) -> WanFunControlPipeline:
    """Load a control-slot folder (checked first: ModelFolderError names the slot and what is missing)."""
    from diffusers import AutoencoderKLWan, FlowMatchEulerDiscreteScheduler, WanTransformer3DModel
    from transformers import AutoTokenizer, UMT5EncoderModel

    folder = check_model_folder("control", folder)
    marker = json.loads((folder / FUN_CONTROL_MARKER).read_text())
    if marker.get("videox_fun_extras"):
        raise NotImplementedError(
            f"{folder / FUN_CONTROL_MARKER}: the converted checkpoint has VideoX-Fun modules diffusers' transformer "
            f"lacks ({marker['videox_fun_extras']}); running without them would change the model. Not supported yet.")
    scheduler = (FlowMatchEulerDiscreteScheduler.from_pretrained(folder / "scheduler")
                 if (folder / "scheduler").is_dir() else FlowMatchEulerDiscreteScheduler(shift=5.0))
    return WanFunControlPipeline(
        tokenizer=AutoTokenizer.from_pretrained(folder / "tokenizer"),
        text_encoder=UMT5EncoderModel.from_pretrained(folder / "text_encoder", dtype=dtype).eval(),
        vae=AutoencoderKLWan.from_pretrained(folder / "vae", dtype=torch.float32).eval(),
        scheduler=scheduler,
        transformer=WanTransformer3DModel.from_pretrained(folder / "transformer", dtype=dtype).eval(),
        transformer_2=WanTransformer3DModel.from_pretrained(folder / "transformer_2", dtype=dtype).eval(),
        boundary_ratio=marker.get("boundary_ratio", FUN_CONTROL_BOUNDARY_RATIO))


# ----------------------------------------------------------------------------------------------------------------
# The stage-5 generator (both backends)
# ----------------------------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class FunControlConfig(WanSamplingConfig):
    """Stage 5's synthesis. By default VideoX-Fun's settings for the undistilled experts (Euler, 50 steps, guidance
    6); distilled=True: the LightX2V 4-step schedule at guidance 1 (with a 4-step LoRA or distilled experts)."""

    distilled: bool = False
    num_inference_steps: int = 50
    guidance_scale: float = 6.0
    boundary_ratio: float = FUN_CONTROL_BOUNDARY_RATIO


class FunControlGenerator:
    """generate(control_video, start_image, prompt) -> uint8 (T, H, W, 3), backend "fun" (WanFunControlPipeline)
    or "vace" (diffusers WanVACEPipeline)."""

    BACKENDS = ("fun", "vace")

    def __init__(self, pipeline, config: FunControlConfig | None = None, *, backend: str = "fun", device=None):
        if backend not in self.BACKENDS:
            raise ValueError(f"unknown control backend {backend!r}; choose one of {self.BACKENDS}")
        self.backend, self.pipeline = backend, pipeline
        self.config = config or FunControlConfig()
        self.device = pick_device(device) if device is not None else pipeline.device
        self._swapper = None
        configure_wan_pipeline(pipeline, self.config.boundary_ratio, self.config.distilled, self.config.sigmas,
                               self.config.shift)

    @classmethod
    def from_pretrained(cls, folder, *, backend: str = "fun", device=None, dtype=None,
                        config: FunControlConfig | None = None, lora_high=None, lora_low=None,
                        lora_scale: float = 1.0):
        """Load the control slot ("fun": our converted folder) or the vace slot ("vace": a diffusers WanVACEPipeline
        folder). LoRAs as in WanI2VGenerator.from_pretrained (explicit, else folder/lightx2v/ when present)."""

        device = pick_device(device)
        dtype = pick_dtype(device, dtype)
        if backend == "fun":
            pipeline = load_fun_control(folder, dtype=dtype)
        elif backend == "vace":
            from diffusers import WanVACEPipeline

            pipeline = WanVACEPipeline.from_pretrained(check_model_folder("vace", folder), dtype=dtype)
        else:
            raise ValueError(f"unknown control backend {backend!r}; choose one of {cls.BACKENDS}")
        pipeline.set_progress_bar_config(disable=True)
        folder = Path(folder)
        fuse_folder_loras(pipeline, folder, lora_high, lora_low, lora_scale)
        generator = cls(pipeline, config, backend=backend, device=device)
        generator._swapper = apply_speed_options(pipeline, generator.config.speed, device)
        return generator

    @classmethod
    def tiny(cls, *, backend: str = "fun", seed: int = 0, config: FunControlConfig | None = None):
        """Tiny random pipelines (tiny.tiny_wan_fun_control / tiny_wan_vace), 9 frames of 32x32, 4 steps."""
        from sparkle_fast.models import tiny

        pipeline = tiny.tiny_wan_fun_control(seed) if backend == "fun" else tiny.tiny_wan_vace(seed)
        pipeline.set_progress_bar_config(disable=True)
        config = config or FunControlConfig(num_frames=9, height=32, width=32, num_inference_steps=4,
                                            guidance_scale=1.0, max_sequence_length=16)
        return cls(pipeline, config, backend=backend, device="cpu")

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
        start_image: PIL or uint8 (H, W, 3). ValueError for a length/size mismatch or a too-long prompt."""
        cfg = self.config
        num_frames, height, width = num_frames or cfg.num_frames, height or cfg.height, width or cfg.width
        control, image = self._check_inputs(control_video, start_image, prompt, num_frames, height, width)
        generator = torch.Generator(device="cpu").manual_seed(cfg.seed if seed is None else seed)
        steps = len(cfg.sigmas) if cfg.distilled else cfg.num_inference_steps
        guidance = 1.0 if cfg.distilled else cfg.guidance_scale
        with torch.inference_mode():
            if self.backend == "fun":
                start = torch.from_numpy(np.array(image)).permute(2, 0, 1).unsqueeze(0).float() / 255.0
                frames = self.pipeline(prompt, control, start, num_frames=num_frames, height=height, width=width,
                                       num_inference_steps=steps, guidance_scale=guidance,
                                       negative_prompt=cfg.negative_prompt, generator=generator,
                                       max_sequence_length=cfg.max_sequence_length)
            else:
                frames = self._generate_vace(control, image, prompt, num_frames, height, width, steps, guidance,
                                             generator)
        return frames_to_uint8(frames)

    def _generate_vace(self, control, image, prompt, num_frames, height, width, steps, guidance, generator):
        """Frame 0 = the start image under mask 0 (kept); frames 1.. = the control frames under mask 1."""
        control_u8 = (control[0].permute(1, 2, 3, 0).numpy() * 255.0 + 0.5).astype(np.uint8)
        video = [image] + [Image.fromarray(frame) for frame in control_u8[1:]]
        black, white = Image.new("L", (width, height), 0), Image.new("L", (width, height), 255)
        mask = [black] + [white] * (num_frames - 1)
        return self.pipeline(prompt=prompt, negative_prompt=self.config.negative_prompt or None, video=video,
                             mask=mask, height=height, width=width, num_frames=num_frames,
                             num_inference_steps=steps, guidance_scale=guidance, generator=generator,
                             max_sequence_length=self.config.max_sequence_length, output_type="np").frames

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
           "WanFunControlPipeline", "control_video_to_unit", "load_fun_control", "save_fun_control",
           "score_frame_indices"]
