"""Tiny random-initialised models of the real classes, for tests and the demo (no hub, no weights, CPU-fast).

Each builder returns objects of exactly the classes the real adapters load (Qwen3VLForConditionalGeneration +
Qwen3VLProcessor, Flux2KleinPipeline with its Qwen3 text encoder), configured a few hundred kilobytes small.
`save_tiny_models(root)` writes them in the `--models DIR` layout of `slots.py`, so the real from_pretrained loading
code runs on them too. Their outputs are noise: only the shapes and the call paths mean anything.

Config constraints (learned the hard way, see shared/FACTS.md): Qwen3-VL's mrope_section must sum to head_dim/2;
FLUX.2-klein's text_encoder_out_layers must name layers the tiny text encoder has (we pass (1,)).
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


def tiny_qwen3_vl(seed: int = 0):
    """(Qwen3VLForConditionalGeneration, Qwen3VLProcessor): 2 text + 2 vision layers, hidden 32, ~160k params.

    Images are resized to 32x32..64x64 pixels (4..16 patches of 16 px, 1..4 tokens after 2x2 merging), videos
    are sampled at 2 fps like the real processor does.
    """
    from transformers import Qwen2VLImageProcessor, Qwen3VLConfig, Qwen3VLForConditionalGeneration, Qwen3VLProcessor
    from transformers.models.qwen3_vl.video_processing_qwen3_vl import Qwen3VLVideoProcessor

    tokenizer = tiny_qwen_tokenizer()
    pixels = {"shortest_edge": 32 * 32, "longest_edge": 64 * 64}
    image_processor = Qwen2VLImageProcessor(patch_size=16, temporal_patch_size=2, merge_size=2, size=pixels)
    video_processor = Qwen3VLVideoProcessor(patch_size=16, temporal_patch_size=2, merge_size=2, fps=2,
                                            size={"shortest_edge": 32 * 32, "longest_edge": 64 * 64 * 16},
                                            min_frames=2, max_frames=16)
    processor = Qwen3VLProcessor(image_processor=image_processor, tokenizer=tokenizer,
                                 video_processor=video_processor, chat_template=TINY_CHAT_TEMPLATE)
    ids = {t: tokenizer.convert_tokens_to_ids(t) for t in QWEN_SPECIAL_TOKENS}
    config = Qwen3VLConfig(
        text_config=dict(vocab_size=len(tokenizer), hidden_size=32, intermediate_size=37, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, head_dim=8, max_position_embeddings=4096,
                         pad_token_id=ids["<|endoftext|>"], eos_token_id=ids["<|im_end|>"],
                         rope_parameters={"rope_type": "default", "rope_theta": 10000.0, "mrope_section": [2, 1, 1],
                                          "mrope_interleaved": True}),
        vision_config=dict(depth=2, hidden_size=32, intermediate_size=32, num_heads=4, out_hidden_size=32,
                           patch_size=16, spatial_merge_size=2, temporal_patch_size=2, num_position_embeddings=16,
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


def tiny_flux2_klein(seed: int = 0):
    """A Flux2KleinPipeline with a 1+1-block transformer, a 1-level VAE and a 2-layer Qwen3 text encoder.

    Call it with text_encoder_out_layers=(1,) (the tiny encoder has 2 layers; the real default names deeper ones):
    `FluxKleinEditor.tiny()` does. Reference images must be >= 64 px a side (as with the real pipeline).
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
        transformer = Flux2Transformer2DModel(patch_size=1, in_channels=4, num_layers=1, num_single_layers=1,
                                              attention_head_dim=16, num_attention_heads=2, joint_attention_dim=16,
                                              timestep_guidance_channels=256, axes_dims_rope=[4, 4, 4, 4],
                                              guidance_embeds=False)
        text_encoder = Qwen3ForCausalLM(Qwen3Config(intermediate_size=16, hidden_size=16, num_hidden_layers=2,
                                                    num_attention_heads=2, num_key_value_heads=2, head_dim=8,
                                                    vocab_size=len(tokenizer), max_position_embeddings=1024))
        vae = AutoencoderKLFlux2(sample_size=32, in_channels=3, out_channels=3,
                                 down_block_types=("DownEncoderBlock2D",), up_block_types=("UpDecoderBlock2D",),
                                 block_out_channels=(4,), layers_per_block=1,
                                 latent_channels=1, norm_num_groups=1, use_quant_conv=False, use_post_quant_conv=False)
    return Flux2KleinPipeline(scheduler=FlowMatchEulerDiscreteScheduler(), vae=vae, text_encoder=text_encoder.eval(),
                              tokenizer=tokenizer, transformer=transformer.eval(), is_distilled=True)


def save_tiny_models(root: str | os.PathLike, *, with_lora: bool = True, seed: int = 0) -> Path:
    """Write tiny models in the `--models DIR` layout (see slots.py) with save_pretrained; returns root.

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
    return root
