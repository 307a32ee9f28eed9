"""The tiny models keep the real models' downsampling and patching (sparkle_fast/models/tiny.py), so a dry run at a real
clip size (`--models tiny`) does the real number of tokens at tiny widths. Structural facts only; no timings
(bench/dry_run.py times a dry run).

Real figures used below (the released configs): Qwen3-VL 16 px patches merged 2x2, images kept within 65,536 ..
16,777,216 pixels (the tiny minimum is lower), sides rounded to multiples of 32; FLUX.2's VAE 8x down and its latents patchified 2x2 (16 px per
transformer token); Wan2.2's VAE 8x spatial / 4x temporal with 1x2x2 transformer patches; SAM3's fixed square input.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from sparkle_fast.models.tiny import tiny_flux2_klein, tiny_qwen3_vl, tiny_sam3_tracker, tiny_wan_parts, \
    tiny_wan_transformer


@pytest.fixture(scope="module")
def qwen():
    return tiny_qwen3_vl(0)


def _image_tokens(processor, text_ids) -> int:
    pad = processor.tokenizer.convert_tokens_to_ids("<|image_pad|>")
    return int((text_ids == pad).sum())


def test_qwen3_vl_tiny_processor_makes_the_real_token_count_at_640x360(qwen):
    model, processor = qwen
    # 640x360: the sides rounded to multiples of 32 (patch 16 x merge 2) -> 640x352 -> 40 x 22 patches -> 220 tokens.
    image = Image.new("RGB", (640, 360))
    grid = processor.image_processor(images=[image], return_tensors="pt")["image_grid_thw"].tolist()
    assert grid == [[1, 22, 40]]
    content = [{"type": "image"}, {"type": "text", "text": "Describe the scene."}]
    text = processor.apply_chat_template([{"role": "user", "content": content}], add_generation_prompt=True,
                                         tokenize=False)
    batch = processor(text=[text], images=[image], return_tensors="pt")
    assert _image_tokens(processor, batch["input_ids"]) == 22 * 40 // 4
    # The model merges what the processor patches.
    assert model.config.vision_config.patch_size == processor.image_processor.patch_size == 16
    assert model.config.vision_config.spatial_merge_size == processor.image_processor.merge_size == 2
    # A 1280x720 frame (Sparkle's clips): 1280x704 -> 80 x 44 patches, 880 tokens; 4x the 640x360 count.
    grid = processor.image_processor(images=[Image.new("RGB", (1280, 720))], return_tensors="pt")["image_grid_thw"]
    assert grid.tolist() == [[1, 44, 80]]


def test_qwen3_vl_tiny_processor_bounds(qwen):
    _, processor = qwen
    from transformers.models.qwen2_vl.image_processing_qwen2_vl import smart_resize

    # The real maximum (16,777,216 pixels, 4096x4096) is kept: a 4160x4160 image would be scaled down to fit it
    # (smart_resize is the processor's own sizing; the image itself would be 400 MB of patches).
    size = processor.image_processor.size
    h, w = smart_resize(4160, 4160, factor=32, min_pixels=size["shortest_edge"], max_pixels=size["longest_edge"])
    assert h * w <= 16777216 and h >= 4000 and w >= 4000
    # The one tiny change: the minimum is 32x32 px (the real one 256x256), so test-size images stay a few tokens.
    t, h, w = processor.image_processor(images=[Image.new("RGB", (96, 64))], return_tensors="pt")[
        "image_grid_thw"][0].tolist()
    assert (t, h, w) == (1, 4, 6)


def test_qwen3_vl_tiny_video_at_2fps_640x360(qwen):
    _, processor = qwen
    # The stage-1 verdict's video: 81 frames at 16 fps sampled to 10 frames at 2 fps (vlm.sample_video), 2 frames per
    # temporal patch: 5 x 22 x 40 patches, 1100 tokens, at full resolution (far below the real video pixel budget).
    frames = np.zeros((10, 360, 640, 3), np.uint8)
    metadata = [{"fps": 2.0, "total_num_frames": 10, "frames_indices": list(range(10))}]
    grid = processor.video_processor(videos=[frames], video_metadata=metadata, return_tensors="pt")["video_grid_thw"]
    assert grid.tolist() == [[5, 22, 40]]


def test_flux2_tiny_vae_downsamples_8x_and_transformer_sees_16px_tokens():
    pipeline = tiny_flux2_klein(0)
    vae = pipeline.vae
    assert pipeline.vae_scale_factor == 8
    with torch.inference_mode():
        latents = vae.encode(torch.zeros(1, 3, 64, 96)).latent_dist.mode()
    assert tuple(latents.shape[-2:]) == (64 // 8, 96 // 8)
    # The pipeline patchifies the latents 2x2 before the transformer.
    assert pipeline.transformer.config.in_channels == 4 * vae.config.latent_channels

    seen = []
    pipeline.transformer.register_forward_pre_hook(
        lambda module, args, kwargs: seen.append(tuple(kwargs["hidden_states"].shape)), with_kwargs=True)
    pipeline.set_progress_bar_config(disable=True)
    image = Image.fromarray((np.random.default_rng(0).random((96, 160, 3)) * 255).astype(np.uint8))
    with torch.inference_mode():
        out = pipeline(image=image, prompt="a beach", num_inference_steps=1, guidance_scale=1.0,
                       max_sequence_length=16, text_encoder_out_layers=(1,),
                       generator=torch.Generator().manual_seed(0)).images[0]
    assert out.size == (160, 96)
    # One token per 16x16 pixels: 6 x 10 for the latents being denoised plus 6 x 10 for the reference image.
    assert seen and all(shape[1] == 2 * (96 // 16) * (160 // 16) for shape in seen)


def test_wan_tiny_vae_compresses_8x_spatially_4x_temporally():
    _, _, vae = tiny_wan_parts(0)
    with torch.inference_mode():
        latents = vae.encode(torch.zeros(1, 3, 9, 64, 96)).latent_dist.mode()
    # 4k+1 frames -> k+1 latent frames; 8x fewer pixels a side.
    assert tuple(latents.shape[2:]) == (1 + (9 - 1) // 4, 64 // 8, 96 // 8)
    with torch.inference_mode():
        frames = vae.decode(latents).sample
    assert tuple(frames.shape[2:]) == (9, 64, 96)


def test_wan_tiny_transformer_patches_like_the_real_one_at_sparkle_size():
    model = tiny_wan_transformer(36, seed=0)
    assert tuple(model.config.patch_size) == (1, 2, 2)
    # A 1280x720 clip of 81 frames: latents 21 x 90 x 160, i.e. 21 x 45 x 80 patches; the rotary tables must cover
    # 80 positions a side (the tiny model once had 32 and failed above 512 px).
    cos, sin = model.rope(torch.zeros(1, 16, 21, 90, 160))
    assert cos.shape[1] == sin.shape[1] == 21 * 45 * 80


def test_sam3_tiny_takes_any_frame_at_its_small_square_size():
    model, processor = tiny_sam3_tracker(0)
    frame = np.zeros((360, 640, 3), np.uint8)
    pixels = processor.image_processor(images=[frame], return_tensors="pt")["pixel_values"]
    # The real SAM3 resizes every frame to 1008x1008 (72 x 72 patches of 14); the tiny one to 112x112 (8 x 8).
    assert tuple(pixels.shape[-2:]) == (112, 112)
    assert model.config.vision_config.backbone_config.image_size // \
        model.config.vision_config.backbone_config.patch_size == 8
