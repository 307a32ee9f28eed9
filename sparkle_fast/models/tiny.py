"""Tiny random-initialised models of the real classes, for tests and the demo (no hub, no weights, CPU-fast).

Each builder returns objects of exactly the classes the real adapters load (Qwen3VLForConditionalGeneration +
Qwen3VLProcessor, Flux2KleinPipeline with its Qwen3 text encoder, Sam3TrackerVideoModel +
Sam3TrackerVideoProcessor), configured a few hundred kilobytes to a few megabytes small.
`save_tiny_models(root)` writes them in the `--models DIR` layout of `slots.py`, so the real from_pretrained loading
code runs on them too. Their outputs are noise: only the shapes and the call paths mean anything.

Real downsampling and patching, tiny widths and depths: every tiny model keeps its real model's resolution handling
(Qwen3-VL's 16 px patches, 2x2 merge and the real processors' pixel bounds; FLUX.2's 8x VAE and 2x2 latent patching;
Wan's 8x spatial / 4x temporal VAE and 1x2x2 patches; SAM3's fixed square input), so a dry run at a real clip size
(`--models tiny`) costs what the real models cost divided by width and depth: the same token counts, the same
attention lengths. The structural facts are tested in tests/test_tiny_scaling.py; bench/dry_run.py times it.

Config constraints (learned the hard way, see shared/FACTS.md): Qwen3-VL's mrope_section must sum to head_dim/2;
FLUX.2-klein's text_encoder_out_layers must name layers the tiny text encoder has (we pass (1,)); SAM3's tracker needs
memory_encoder_output_channels 64, a tracker hidden size that is a multiple of 64 and > 64, and an image size that is a
multiple of the patch size.
"""

from __future__ import annotations

import os
from pathlib import Path

import torch

from sparkle_fast.models.slots import SLOTS

QWEN_SPECIAL_TOKENS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|image_pad|>", "<|video_pad|>",
                       "<|vision_start|>", "<|vision_end|>"]

# A Qwen-style chat template: messages with typed content, vision placeholders the processor expands.
TINY_CHAT_TEMPLATE = (
    "{% for m in messages %}<|im_start|>{{ m['role'] }}\n"
    "{% if m['content'] is string %}{{ m['content'] }}{% else %}{% for c in m['content'] %}"
    "{% if c['type'] == 'image' %}<|vision_start|><|image_pad|><|vision_end|>"
    "{% elif c['type'] == 'video' %}<|video_pad|>"
    "{% else %}{{ c['text'] }}{% endif %}{% endfor %}{% endif %}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)

# Text the tiny BPE tokenizer is trained on: JSON punctuation and task words, so answers tokenize into a mix of
# single characters and multi-character pieces like a real vocabulary.
_CORPUS = [
    '[{"bbox_2d": [120, 80, 560, 940], "label": "person"}, {"bbox_2d": [0, 0, 1000, 1000], "label": "dog"}]',
    '{"reasoning": "the background stays still", "camera_moving": "no"}',
    '{"scene": "a street with buildings"}', '{"prompt": "Replace the background with a beach at sunset"}',
    '{"caption": "waves roll onto the sand"}', '{"reasoning": "good edit", "score": [20, 18]}',
    "Describe the scene. Remove the man. The image shows a woman in a hat.",
]


def tiny_qwen_tokenizer(vocab_size: int = 360):
    """A byte-level BPE tokenizer (like Qwen's) trained offline on a few lines, with Qwen's special tokens.

    Returns a transformers Qwen2TokenizerFast; decode(ids) equals the concatenation of single-token decodes, which
    the constrained decoder relies on (as it does with the real Qwen vocabulary).
    """
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import Qwen2TokenizerFast

    backend = Tokenizer(models.BPE())
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    backend.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=QWEN_SPECIAL_TOKENS, show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    backend.train_from_iterator(_CORPUS * 4, trainer)
    tokenizer = Qwen2TokenizerFast(tokenizer_object=backend, pad_token="<|endoftext|>", eos_token="<|im_end|>",
                                   unk_token=None)
    tokenizer.add_special_tokens({"additional_special_tokens": QWEN_SPECIAL_TOKENS[1:]})
    tokenizer.chat_template = TINY_CHAT_TEMPLATE
    return tokenizer


# Qwen3-VL's released preprocessor_config.json / video_preprocessor_config.json (Qwen/Qwen3-VL-*-Instruct): pixel
# bounds per image and per video (all sampled frames together), 16 px patches, 2 frames per temporal patch, 2x2 merge.
QWEN3_VL_PATCH_SIZE = 16
QWEN3_VL_MERGE_SIZE = 2
# The one change: the tiny processor's image minimum is 32x32 px, not 256x256 (65,536), so that the tests' and the
# demo's small images stay a few tokens; every frame of a real clip size is above both minimums, where the counts
# are the real ones.
QWEN3_VL_IMAGE_PIXELS = {"shortest_edge": 65536, "longest_edge": 16777216}
TINY_IMAGE_MIN_PIXELS = 32 * 32
QWEN3_VL_VIDEO_PIXELS = {"shortest_edge": 4096, "longest_edge": 25165824}
QWEN3_VL_MEAN_STD = [0.5, 0.5, 0.5]


def tiny_qwen3_vl(seed: int = 0):
    """(Qwen3VLForConditionalGeneration, Qwen3VLProcessor): 2 text + 2 vision layers, hidden 32, ~160k params.

    The processors are the real model's (QWEN3_VL_* above) but for a lower image minimum: an image of at least
    256x256 px becomes as many 16 px patches and 2x2-merged tokens as with Qwen3-VL (a 640x360 frame: 640x352,
    40x22 patches, 220 tokens); videos are sampled at 2 fps with 2 frames per temporal patch, within the real pixel
    budget. Only widths and depths are tiny.
    """
    from transformers import Qwen2VLImageProcessor, Qwen3VLConfig, Qwen3VLForConditionalGeneration, Qwen3VLProcessor
    from transformers.models.qwen3_vl.video_processing_qwen3_vl import Qwen3VLVideoProcessor

    tokenizer = tiny_qwen_tokenizer()
    patching = dict(patch_size=QWEN3_VL_PATCH_SIZE, temporal_patch_size=2, merge_size=QWEN3_VL_MERGE_SIZE,
                    image_mean=QWEN3_VL_MEAN_STD, image_std=QWEN3_VL_MEAN_STD)
    image_processor = Qwen2VLImageProcessor(size={**QWEN3_VL_IMAGE_PIXELS, "shortest_edge": TINY_IMAGE_MIN_PIXELS},
                                            **patching)
    video_processor = Qwen3VLVideoProcessor(size=dict(QWEN3_VL_VIDEO_PIXELS), fps=2, min_frames=4, max_frames=768,
                                            **patching)
    processor = Qwen3VLProcessor(image_processor=image_processor, tokenizer=tokenizer,
                                 video_processor=video_processor, chat_template=TINY_CHAT_TEMPLATE)
    ids = {t: tokenizer.convert_tokens_to_ids(t) for t in QWEN_SPECIAL_TOKENS}
    config = Qwen3VLConfig(
        text_config=dict(vocab_size=len(tokenizer), hidden_size=32, intermediate_size=37, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, head_dim=8, max_position_embeddings=262144,
                         pad_token_id=ids["<|endoftext|>"], eos_token_id=ids["<|im_end|>"],
                         rope_parameters={"rope_type": "default", "rope_theta": 10000.0, "mrope_section": [2, 1, 1],
                                          "mrope_interleaved": True}),
        vision_config=dict(depth=2, hidden_size=32, intermediate_size=32, num_heads=4, out_hidden_size=32,
                           patch_size=QWEN3_VL_PATCH_SIZE, spatial_merge_size=QWEN3_VL_MERGE_SIZE,
                           temporal_patch_size=2, num_position_embeddings=16,
                           deepstack_visual_indexes=[0, 1]),
        image_token_id=ids["<|image_pad|>"], video_token_id=ids["<|video_pad|>"],
        vision_start_token_id=ids["<|vision_start|>"], vision_end_token_id=ids["<|vision_end|>"],
        tie_word_embeddings=False,
    )
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        model = Qwen3VLForConditionalGeneration(config).eval()
    model.generation_config.pad_token_id = ids["<|endoftext|>"]
    model.generation_config.eos_token_id = ids["<|im_end|>"]
    return model, processor


# FLUX.2's VAE (AutoencoderKLFlux2's defaults, the released config): four levels (8x down), latents patchified 2x2
# before the transformer (patch_size 1 there): an image of H x W is (H/16) x (W/16) transformer tokens.
FLUX2_VAE_LEVELS = 4
FLUX2_LATENT_PATCH = 2


def tiny_flux2_klein(seed: int = 0):
    """A Flux2KleinPipeline with a 1+1-block transformer, a 4-level VAE (8x down like the real one, widths 4-8) and a
    2-layer Qwen3 text encoder.

    Call it with text_encoder_out_layers=(1,) (the tiny encoder has 2 layers; the real default names deeper ones):
    `FluxKleinEditor.tiny()` does. Reference images must be >= 64 px a side (as with the real pipeline); like the
    real pipeline it works at multiples of 16 px (a 640x360 frame: 640x352, 40x22 = 880 tokens per image).
    """
    from diffusers import (
        AutoencoderKLFlux2,
        FlowMatchEulerDiscreteScheduler,
        Flux2KleinPipeline,
        Flux2Transformer2DModel,
    )
    from transformers import Qwen3Config, Qwen3ForCausalLM

    tokenizer = tiny_qwen_tokenizer()
    tokenizer.chat_template = ("{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n"
                               "{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}")
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        latent_channels = 4  # the real VAE: 32, i.e. 128 transformer input channels after the 2x2 patching
        transformer = Flux2Transformer2DModel(patch_size=1, in_channels=latent_channels * FLUX2_LATENT_PATCH ** 2,
                                              num_layers=1, num_single_layers=1,
                                              attention_head_dim=16, num_attention_heads=2, joint_attention_dim=16,
                                              timestep_guidance_channels=256, axes_dims_rope=[4, 4, 4, 4],
                                              guidance_embeds=False)
        text_encoder = Qwen3ForCausalLM(Qwen3Config(intermediate_size=16, hidden_size=16, num_hidden_layers=2,
                                                    num_attention_heads=2, num_key_value_heads=2, head_dim=8,
                                                    vocab_size=len(tokenizer), max_position_embeddings=1024))
        vae = AutoencoderKLFlux2(sample_size=32, in_channels=3, out_channels=3,
                                 down_block_types=("DownEncoderBlock2D",) * FLUX2_VAE_LEVELS,
                                 up_block_types=("UpDecoderBlock2D",) * FLUX2_VAE_LEVELS,
                                 block_out_channels=(4, 8, 8, 8), layers_per_block=1, latent_channels=latent_channels,
                                 norm_num_groups=4, patch_size=(FLUX2_LATENT_PATCH, FLUX2_LATENT_PATCH))
    return Flux2KleinPipeline(scheduler=FlowMatchEulerDiscreteScheduler(), vae=vae, text_encoder=text_encoder.eval(),
                              tokenizer=tokenizer, transformer=transformer.eval(), is_distilled=True)


def tiny_sam3_tracker(seed: int = 0, image_size: int = 112):
    """(Sam3TrackerVideoModel, Sam3TrackerVideoProcessor): a 2-layer ViT (hidden 32, patch 14) and a 128-wide tracker
    with one memory-attention layer, ~1.7M parameters; frames are resized to image_size x image_size (a multiple of
    14). Same classes and call paths as facebook/sam3's tracker."""
    from transformers import (
        Sam2VideoVideoProcessor,
        Sam3ImageProcessor,
        Sam3TrackerVideoConfig,
        Sam3TrackerVideoModel,
        Sam3TrackerVideoProcessor,
    )

    if image_size % 14:
        raise ValueError(f"tiny SAM3: image_size must be a multiple of the patch size 14, got {image_size}")
    config = Sam3TrackerVideoConfig(
        vision_config=dict(model_type="sam3_vision_model",
                           backbone_config=dict(model_type="sam3_vit_model", hidden_size=32, intermediate_size=64,
                                                num_hidden_layers=2, num_attention_heads=2, image_size=image_size,
                                                patch_size=14, window_size=4, global_attn_indexes=[1],
                                                pretrain_image_size=56),
                           fpn_hidden_size=128),
        prompt_encoder_config=dict(hidden_size=128, image_size=image_size, patch_size=14),
        mask_decoder_config=dict(hidden_size=128, mlp_dim=64, num_attention_heads=2, iou_head_hidden_dim=64),
        memory_attention_hidden_size=128, memory_attention_num_layers=1, memory_attention_feed_forward_hidden_size=128,
        memory_encoder_hidden_size=128, memory_encoder_output_channels=64, mask_downsampler_embed_dim=128,
        memory_fuser_embed_dim=128, memory_fuser_intermediate_dim=64, image_size=image_size)
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        model = Sam3TrackerVideoModel(config).eval()
    size = {"height": image_size, "width": image_size}
    processor = Sam3TrackerVideoProcessor(
        image_processor=Sam3ImageProcessor(size=size, image_mean=[0.5] * 3, image_std=[0.5] * 3),
        video_processor=Sam2VideoVideoProcessor(size=size, image_mean=[0.5] * 3, image_std=[0.5] * 3))
    return model, processor


def save_tiny_models(root: str | os.PathLike, *, with_lora: bool = True, seed: int = 0,
                     with_video_models: bool = True) -> Path:
    """Write tiny models of every pipeline slot in the `--models DIR` layout (see slots.py); returns root.

    The EditScore slot gets a tiny Qwen3-VL backbone and, when with_lora, a peft LoRA on its attention projections
    (zero-initialised B, so merging it is a no-op on the outputs but runs the real loading path).
    """
    root = Path(root)
    model, processor = tiny_qwen3_vl(seed)
    vlm_dir = root / SLOTS["vlm"].subdir
    model.save_pretrained(vlm_dir)
    processor.save_pretrained(vlm_dir)

    tiny_flux2_klein(seed).save_pretrained(root / SLOTS["editor"].subdir)

    scorer_dir = root / SLOTS["scorer"].subdir
    backbone, backbone_processor = tiny_qwen3_vl(seed + 1)
    backbone.save_pretrained(scorer_dir / "backbone")
    backbone_processor.save_pretrained(scorer_dir / "backbone")
    if with_lora:
        from peft import LoraConfig, get_peft_model

        lora = get_peft_model(backbone, LoraConfig(r=2, lora_alpha=4, target_modules=["q_proj", "v_proj"]))
        lora.save_pretrained(scorer_dir / "lora")

    tracker, tracker_processor = tiny_sam3_tracker(seed)
    tracker.save_pretrained(root / SLOTS["sam3"].subdir)
    tracker_processor.save_pretrained(root / SLOTS["sam3"].subdir)
    save_tiny_lineart(root / SLOTS["lineart"].subdir, seed=seed)
    if with_video_models:
        save_tiny_video_models(root, seed=seed)
    return root


def save_tiny_lineart(folder: str | os.PathLike, *, seed: int = 0, width: int = 4, blocks: int = 1) -> Path:
    """ControlNet's line-art files (sk_model.pth, coarse sk_model2.pth) for random generators of width `width` and
    `blocks` residual blocks (the real ones: 64 and 3); models/lineart.py reads both sizes from the checkpoint."""
    from sparkle_fast.models.lineart import COARSE_FILE, FINE_FILE, LineartGenerator

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    with torch.random.fork_rng():
        for offset, name in ((0, FINE_FILE), (1, COARSE_FILE)):
            torch.manual_seed(seed + offset)
            torch.save(LineartGenerator(width, blocks).state_dict(), folder / name)
    return folder


# --- Wan2.2 video generation (models/i2v.py, models/control.py) ---

_WAN_WORDS = ("a the dog cat runs in park camera pans left slowly beach waves street trees wind sunset city "
              "background moves negative blurry static")


def tiny_wan_tokenizer():
    """A word-level tokenizer standing in for UMT5's (pad 0, eos 1, unk 2), offline."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {"<pad>": 0, "</s>": 1, "<unk>": 2}
    for word in _WAN_WORDS.split():
        vocab.setdefault(word, len(vocab))
    backend = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    backend.pre_tokenizer = pre_tokenizers.Whitespace()
    return PreTrainedTokenizerFast(tokenizer_object=backend, pad_token="<pad>", eos_token="</s>", unk_token="<unk>")


# Wan2.2's transformers (released configs): 1x2x2 patches over the VAE's latents, rotary tables for 1024 positions per
# axis (a 1280x720 clip is 80 latent patches wide; the table's length changes no value at smaller sizes).
WAN_PATCH_SIZE = (1, 2, 2)
WAN_ROPE_MAX_SEQ_LEN = 1024


def tiny_wan_transformer(in_channels: int = 36, seed: int = 0):
    """WanTransformer3DModel with 2 layers, 2 heads of 12, text_dim 32: ~40k params. in_channels 36 = I2V
    (16 noise + 4 mask + 16 image latents), 52 = Fun-Control (16 noise + 16 control + 4 mask + 16 image)."""
    from diffusers import WanTransformer3DModel

    with torch.random.fork_rng():
        torch.manual_seed(seed)
        return WanTransformer3DModel(patch_size=WAN_PATCH_SIZE, num_attention_heads=2, attention_head_dim=12,
                                     in_channels=in_channels, out_channels=16, text_dim=32, freq_dim=256, ffn_dim=32,
                                     num_layers=2, cross_attn_norm=True, qk_norm="rms_norm_across_heads",
                                     rope_max_seq_len=WAN_ROPE_MAX_SEQ_LEN).eval()


def tiny_wan_parts(seed: int = 0):
    """(tokenizer, UMT5EncoderModel d_model 32, AutoencoderKLWan z_dim 16 with 4x temporal / 8x spatial
    compression like the real VAE: three 2x levels, two of them also 2x in time; width 3 instead of 96, one residual
    block per level instead of 2) shared by the tiny Wan pipelines."""
    from diffusers import AutoencoderKLWan
    from transformers import UMT5Config, UMT5EncoderModel

    with torch.random.fork_rng():
        torch.manual_seed(seed)
        text_encoder = UMT5EncoderModel(UMT5Config(vocab_size=64, d_model=32, d_kv=8, d_ff=37, num_layers=2,
                                                   num_heads=4, relative_attention_num_buckets=8)).eval()
        # One residual block per level (the real VAE: 2). Not 0, though that halves a dry run's VAE time (width-3
        # convolutions at full resolution take PyTorch's slow CPU conv3d path): with 0, tests/test_eval.py's tiny
        # run got a control video and a generated video without a single Canny edge (edge_f1 None).
        vae = AutoencoderKLWan(base_dim=3, z_dim=16, dim_mult=[1, 1, 1, 1], num_res_blocks=1,
                               temperal_downsample=[False, True, True]).eval()
    return tiny_wan_tokenizer(), text_encoder, vae


def tiny_wan_i2v(seed: int = 0):
    """WanImageToVideoPipeline with two tiny experts (different seeds, so their outputs differ) and boundary 0.9."""
    from diffusers import FlowMatchEulerDiscreteScheduler, WanImageToVideoPipeline

    tokenizer, text_encoder, vae = tiny_wan_parts(seed)
    return WanImageToVideoPipeline(tokenizer=tokenizer, text_encoder=text_encoder, vae=vae,
                                   scheduler=FlowMatchEulerDiscreteScheduler(shift=5.0),
                                   transformer=tiny_wan_transformer(36, seed + 1),
                                   transformer_2=tiny_wan_transformer(36, seed + 2),
                                   image_encoder=None, image_processor=None, boundary_ratio=0.9)


def tiny_wan_fun_control_transformer(seed: int = 0, ref_conv: bool = True):
    """WanFunControlTransformer3DModel (models/control.py): tiny_wan_transformer's shape with 52 input channels and,
    like Wan2.2-Fun-A14B-Control, VideoX-Fun's ref_conv (16 latent channels -> width 24, 2x2 stride 2)."""
    from sparkle_fast.models.control import WanFunControlTransformer3DModel

    with torch.random.fork_rng():
        torch.manual_seed(seed)
        return WanFunControlTransformer3DModel(patch_size=WAN_PATCH_SIZE, num_attention_heads=2,
                                               attention_head_dim=12, in_channels=52, out_channels=16, text_dim=32,
                                               freq_dim=256, ffn_dim=32, num_layers=2, cross_attn_norm=True,
                                               qk_norm="rms_norm_across_heads", rope_max_seq_len=WAN_ROPE_MAX_SEQ_LEN,
                                               add_ref_conv=ref_conv, in_dim_ref_conv=16).eval()


def tiny_wan_fun_control(seed: int = 0, ref_conv: bool = True):
    """Our WanFunControlPipeline (models/control.py) with two tiny 52-channel experts (with ref_conv by default, as
    the real checkpoint has it)."""
    from diffusers import FlowMatchEulerDiscreteScheduler

    from sparkle_fast.models.control import WanFunControlPipeline

    tokenizer, text_encoder, vae = tiny_wan_parts(seed)
    return WanFunControlPipeline(tokenizer=tokenizer, text_encoder=text_encoder, vae=vae,
                                 scheduler=FlowMatchEulerDiscreteScheduler(shift=5.0),
                                 transformer=tiny_wan_fun_control_transformer(seed + 1, ref_conv),
                                 transformer_2=tiny_wan_fun_control_transformer(seed + 2, ref_conv),
                                 boundary_ratio=0.9)


def tiny_wan_vace(seed: int = 0):
    """WanVACEPipeline with two tiny VACE experts (VACE layers 0 and 1) and boundary 0.9."""
    from diffusers import FlowMatchEulerDiscreteScheduler, WanVACEPipeline, WanVACETransformer3DModel

    tokenizer, text_encoder, vae = tiny_wan_parts(seed)

    def expert(s):
        with torch.random.fork_rng():
            torch.manual_seed(s)
            return WanVACETransformer3DModel(patch_size=WAN_PATCH_SIZE, num_attention_heads=2, attention_head_dim=12,
                                             in_channels=16, out_channels=16, text_dim=32, freq_dim=256, ffn_dim=32,
                                             num_layers=2, cross_attn_norm=True, qk_norm="rms_norm_across_heads",
                                             rope_max_seq_len=WAN_ROPE_MAX_SEQ_LEN, vace_layers=[0, 1],
                                             vace_in_channels=96).eval()

    return WanVACEPipeline(tokenizer=tokenizer, text_encoder=text_encoder, vae=vae,
                           scheduler=FlowMatchEulerDiscreteScheduler(shift=5.0), transformer=expert(seed + 1),
                           transformer_2=expert(seed + 2), boundary_ratio=0.9)


def save_tiny_video_models(root: str | os.PathLike, *, seed: int = 0) -> Path:
    """Write the tiny Wan I2V and Fun-Control models in the `--models DIR` layout (slots i2v, control); returns root.
    The Fun-Control folder is written by our own save code (fun_control.json marker), as the converter does."""
    from sparkle_fast.models.control import save_fun_control

    root = Path(root)
    tiny_wan_i2v(seed).save_pretrained(root / SLOTS["i2v"].subdir)
    save_fun_control(tiny_wan_fun_control(seed), root / SLOTS["control"].subdir)
    return root
