"""The per-frame networks that get engines, as plain tensor-in / tensor-out graphs that ONNX and TensorRT can take.

Each target is one or more graphs (`GraphSpec`): a torch module whose forward takes and returns tensors only, its
input and output names, and each input's shape written with named dimensions (batch, h, w) so that one description
gives the exporter's dynamic shapes, TensorRT's optimisation profiles and the engine cache key.

  sam3     `image_encoder`: SAM3's image encoder exactly as Sam3TrackerVideoModel.get_image_features runs it
           (vision encoder, FPN neck, the mask decoder's conv_s0 / conv_s1 projections, the HW x N x C flattening):
           pixel_values (B, 3, S, S) -> three feature maps and three position encodings, each (H_l * W_l, B, C_l).
           Batch is dynamic; S is the model's image size (1008 for facebook/sam3, fixed: the processor resizes).
  vae      the Wan VAE decoder (diffusers AutoencoderKLWan) one latent frame at a time, the causal conv caches
           carried explicitly, so the graphs are small, per frame and free of Python state:
             `decoder_first`: latent frame 0 (B, z, 1, h, w) -> pixel frame 0 (B, 3, 1, 8h, 8w) + the caches
             `decoder_step`:  latent frame i and the caches -> pixel frames 4i-3..4i (B, 3, 4, 8h, 8w) + new caches
           Batch, h and w are dynamic. diffusers keeps caches of one frame (or the marker "Rep") after the first
           chunk; `decoder_first` pads them to two frames with zeros in front, which gives the causal convolutions
           (temporal kernel 3, two frames of zero padding) exactly the same input, so one step graph serves every
           later chunk. Clamp to [-1, 1] (and unpatchify for the Wan2.2 5B VAE) happen per chunk, as in _decode.
  lineart  the line-art generator of sparkle_fast.models.lineart (informative drawings, ControlNet's annotator):
           `generator` (and `generator_coarse` when loaded): frames (B, 3, H, W) in [0, 1] -> (B, 1, H, W) in
           [0, 1]. Batch, H and W are dynamic (H, W multiples of 4). The resizes around it stay on the host.

Our choices (not Sparkle's): what counts as one graph, the chunked VAE formulation, the dimension names.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch

TARGETS = ("sam3", "vae", "lineart")
ENGINE_CHOICES = ("torch", "compile", "tensorrt", "onnxruntime")


class EngineUnavailable(RuntimeError):
    """A target or backend that cannot be used here; the message says what is missing and what to install."""


# A dimension of an input shape: an int (fixed) or (name, scale) (dynamic: scale * the named dimension).
Dim = int | tuple[str, int]


@dataclass
class GraphSpec:
    """One exportable graph.

    module:          forward(*tensors) -> tuple of tensors (no Python state between calls)
    example_inputs:  inputs used for export (dynamic dimensions should not be 1 there, or the exporter
                     specialises them)
    input_shapes:    per input, a tuple of Dim: ints are fixed, (name, scale) means scale * dims[name]
    dims:            name -> (min, opt, max): the range TensorRT's profile covers (and the exporter allows)
    tolerance:       (atol, rtol) of the float32 ONNX graph against PyTorch, what the tests hold it to
    """

    target: str
    name: str
    module: torch.nn.Module
    example_inputs: tuple[torch.Tensor, ...]
    input_names: list[str]
    output_names: list[str]
    input_shapes: list[tuple[Dim, ...]]
    dims: dict[str, tuple[int, int, int]]
    tolerance: tuple[float, float] = (1e-4, 1e-4)
    weights: list[torch.nn.Module] = field(default_factory=list)

    @property
    def full_name(self) -> str:
        return f"{self.target}_{self.name}"

    def shapes_for(self, which: str) -> dict[str, tuple[int, ...]]:
        """Concrete input shapes at the profile's 'min', 'opt' or 'max' point."""
        slot = {"min": 0, "opt": 1, "max": 2}[which]
        return {name: concrete_shape(shape, {k: v[slot] for k, v in self.dims.items()})
                for name, shape in zip(self.input_names, self.input_shapes, strict=True)}

    def cast(self, dtype: torch.dtype) -> GraphSpec:
        """A copy whose module and float example inputs are in `dtype` (the module is deep-copied unless dtype is
        float32, so the adapter's own module keeps its weights). TensorRT 11 networks are strongly typed: the
        precision of an engine is the precision of its ONNX graph."""
        if dtype == torch.float32:
            return self
        module = copy.deepcopy(self.module).to(dtype)
        inputs = tuple(t.to(dtype) if t.is_floating_point() else t for t in self.example_inputs)
        return GraphSpec(self.target, self.name, module, inputs, self.input_names, self.output_names,
                         self.input_shapes, self.dims, self.tolerance, self.weights)


def concrete_shape(shape: tuple[Dim, ...], dims: dict[str, int]) -> tuple[int, ...]:
    return tuple(d if isinstance(d, int) else dims[d[0]] * d[1] for d in shape)


def torch_export_dynamic_shapes(spec: GraphSpec) -> tuple[dict[int, Any], ...]:
    """The `dynamic_shapes` argument of torch.export / torch.onnx.export(dynamo=True) for the spec's inputs, by
    position (one dict per input). A dimension used with scale k > 1 is the derived dimension k * base."""
    from torch.export import Dim as ExportDim

    bases = {name: ExportDim(name, min=1, max=max(hi, 2) * 64) for name, (_, _, hi) in spec.dims.items()}
    result = []
    for shape in spec.input_shapes:
        axes = {}
        for axis, d in enumerate(shape):
            if not isinstance(d, int):
                name, scale = d
                axes[axis] = bases[name] if scale == 1 else scale * bases[name]
        result.append(axes)
    # torch.export matches dynamic_shapes to forward's signature: inputs taken by *args form one nested tuple
    import inspect

    params = list(inspect.signature(spec.module.forward).parameters.values())
    var = [i for i, p in enumerate(params) if p.kind is inspect.Parameter.VAR_POSITIONAL]
    if var:
        return (*result[:var[0]], tuple(result[var[0]:]))
    return tuple(result)


def torchscript_dynamic_axes(spec: GraphSpec) -> dict[str, dict[int, str]]:
    """The TorchScript exporter's dynamic_axes for the same dimensions (used only when dynamo cannot export)."""
    axes: dict[str, dict[int, str]] = {}
    for name, shape in zip(spec.input_names, spec.input_shapes, strict=True):
        dyn = {a: (d[0] if d[1] == 1 else f"{d[1]}{d[0]}") for a, d in enumerate(shape) if not isinstance(d, int)}
        if dyn:
            axes[name] = dyn
    return axes


# ------------------------------------------------------------------------------------------------------------------
# SAM3 image encoder
# ------------------------------------------------------------------------------------------------------------------

SAM3_OUTPUTS = ("vision_feats_0", "vision_feats_1", "vision_feats_2", "vision_pos_0", "vision_pos_1", "vision_pos_2")


class Sam3ImageEncoderGraph(torch.nn.Module):
    """Sam3TrackerVideoModel.get_image_features as a graph: pixel_values (B, 3, S, S) float -> 3 feature maps and 3
    position encodings, each (H_l * W_l, B, C_l), the order and layout transformers caches per frame."""

    def __init__(self, model):
        super().__init__()
        self.vision_encoder = model.vision_encoder
        self.conv_s0 = model.mask_decoder.conv_s0
        self.conv_s1 = model.mask_decoder.conv_s1

    def forward(self, pixel_values: torch.Tensor) -> tuple[torch.Tensor, ...]:
        outputs = self.vision_encoder(pixel_values, return_dict=True)
        feats = list(outputs.fpn_hidden_states[:-1])
        feats[0] = self.conv_s0(feats[0])
        feats[1] = self.conv_s1(feats[1])
        pos = list(outputs.fpn_position_encoding[:-1])
        flat = [t.flatten(2).permute(2, 0, 1) for t in (*feats, *pos)]
        return tuple(flat)


def sam3_graphs(model, *, max_batch: int = 8, opt_batch: int = 1) -> list[GraphSpec]:
    """The SAM3 image encoder of a Sam3TrackerVideoModel (a Sam3Tracker's .model)."""
    size = int(model.config.image_size)
    graph = Sam3ImageEncoderGraph(model).eval()
    param = next(model.parameters())
    example = torch.randn(2, 3, size, size, generator=torch.Generator().manual_seed(0)).to(param.device, param.dtype)
    return [GraphSpec("sam3", "image_encoder", graph, (example,), ["pixel_values"], list(SAM3_OUTPUTS),
                      [(("batch", 1), 3, size, size)], {"batch": (1, opt_batch, max_batch)},
                      tolerance=(1e-4, 1e-4), weights=[graph])]


# ------------------------------------------------------------------------------------------------------------------
# Wan VAE decoder, one latent frame at a time
# ------------------------------------------------------------------------------------------------------------------

class _WanDecoderChunk(torch.nn.Module):
    """Shared parts of the two Wan decoder graphs: the diffusers modules and the per-chunk finish."""

    def __init__(self, vae, cache_count: int | None = None):
        super().__init__()
        self.post_quant_conv = vae.post_quant_conv
        self.decoder = vae.decoder
        self.patch_size = vae.config.patch_size
        self.conv_slots = int(vae._cached_conv_counts["decoder"])
        self.cache_count = cache_count

    def finish(self, out: torch.Tensor) -> torch.Tensor:
        if self.patch_size is not None:
            from diffusers.models.autoencoders.autoencoder_kl_wan import unpatchify

            out = unpatchify(out, patch_size=self.patch_size)
        return torch.clamp(out, min=-1.0, max=1.0)


class WanDecoderFirstGraph(_WanDecoderChunk):
    """Latent frame 0 (B, z, 1, h, w) -> (pixel frame 0 (B, 3, 1, H, W), cache_0 .. cache_{n-1}), every cache
    (B, C_k, 2, h_k, w_k) in the form the step graph reads (see the module docstring)."""

    def forward(self, latent: torch.Tensor) -> tuple[torch.Tensor, ...]:
        from diffusers.models.autoencoders.autoencoder_kl_wan import WanResample

        cache: list[Any] = [None] * self.conv_slots
        index = [0]
        resample_inputs: dict[int, torch.Tensor] = {}

        def remember_input(module, args, kwargs):
            # diffusers stores the marker "Rep" for a temporal upsampler on the first chunk; its cache on the next
            # chunk is [zeros, x]: with a zero cache the step graph computes the same, so we need x's shape.
            if module.mode == "upsample3d":
                resample_inputs[index[0]] = args[0]

        hooks = [m.register_forward_pre_hook(remember_input, with_kwargs=True)
                 for m in self.decoder.modules() if isinstance(m, WanResample)]
        try:
            out = self.decoder(self.post_quant_conv(latent), feat_cache=cache, feat_idx=index, first_chunk=True)
        finally:
            for hook in hooks:
                hook.remove()
        caches = []
        for k, entry in enumerate(cache[:index[0]]):
            if isinstance(entry, str):  # "Rep"
                x = resample_inputs[k]
                entry = torch.zeros_like(x[:, :, -1:]).expand(-1, -1, 2, -1, -1).contiguous()
            elif entry.shape[2] < 2:
                entry = torch.cat([torch.zeros_like(entry[:, :, -1:]), entry[:, :, -1:]], dim=2)
            caches.append(entry)
        return (self.finish(out), *caches)


class WanDecoderStepGraph(_WanDecoderChunk):
    """Latent frame i (B, z, 1, h, w) and the caches -> (pixel frames (B, 3, 4, H, W), the new caches)."""

    def forward(self, latent: torch.Tensor, *caches: torch.Tensor) -> tuple[torch.Tensor, ...]:
        cache: list[Any] = list(caches) + [None] * (self.conv_slots - len(caches))
        out = self.decoder(self.post_quant_conv(latent), feat_cache=cache, feat_idx=[0], first_chunk=False)
        return (self.finish(out), *cache[:len(caches)])


def wan_cache_layout(vae, batch: int, h: int, w: int) -> list[tuple[int, int, int]]:
    """(channels, height scale, width scale) of each decoder cache, found by running decoder_first on zeros."""
    param = next(vae.parameters())
    first = WanDecoderFirstGraph(vae).eval()
    with torch.inference_mode():
        outputs = first(torch.zeros(batch, vae.config.z_dim, 1, h, w, device=param.device, dtype=param.dtype))
    layout = []
    for c in outputs[1:]:
        if c.shape[3] % h or c.shape[4] % w or c.shape[2] != 2:
            raise RuntimeError(f"unexpected Wan decoder cache shape {tuple(c.shape)} for a {h}x{w} latent")
        layout.append((int(c.shape[1]), int(c.shape[3]) // h, int(c.shape[4]) // w))
    return layout


def vae_graphs(vae, *, latent_hw: tuple[int, int] = (90, 160), max_batch: int = 1,
               latent_range: tuple[tuple[int, int], tuple[int, int]] | None = None) -> list[GraphSpec]:
    """The two Wan decoder graphs of an AutoencoderKLWan.

    latent_hw:    the latent height and width the profile is tuned for (720x1280 video: 90x160)
    latent_range: ((h_min, h_max), (w_min, w_max)) of the profile; default: latent_hw only (a static profile)
    """
    h_opt, w_opt = latent_hw
    (h_min, h_max), (w_min, w_max) = latent_range or ((h_opt, h_opt), (w_opt, w_opt))
    dims = {"batch": (1, 1, max_batch), "h": (h_min, h_opt, h_max), "w": (w_min, w_opt, w_max)}
    param = next(vae.parameters())
    # Small example inputs (export cost); 2 in every dynamic dimension so that none is specialised.
    ex_b, ex_h, ex_w = 2, 4, 6
    layout = wan_cache_layout(vae, ex_b, ex_h, ex_w)
    z = int(vae.config.z_dim)
    gen = torch.Generator().manual_seed(0)
    latent = torch.randn(ex_b, z, 1, ex_h, ex_w, generator=gen).to(param.device, param.dtype)
    caches = tuple(torch.randn(ex_b, c, 2, ex_h * sh, ex_w * sw, generator=gen).to(param.device, param.dtype)
                   for c, sh, sw in layout)
    latent_shape = (("batch", 1), z, 1, ("h", 1), ("w", 1))
    cache_shapes = [(("batch", 1), c, 2, ("h", sh), ("w", sw)) for c, sh, sw in layout]
    cache_in = [f"cache_in_{k}" for k in range(len(layout))]
    cache_out = [f"cache_out_{k}" for k in range(len(layout))]
    first = WanDecoderFirstGraph(vae).eval()
    step = WanDecoderStepGraph(vae).eval()
    # float32 tolerance: the chunked graphs equal diffusers' decode exactly in PyTorch; ONNX Runtime's kernels
    # differ from ATen's by rounding only (measured ~1e-6 on the tiny VAE).
    tol = (1e-4, 1e-4)
    return [
        GraphSpec("vae", "decoder_first", first, (latent,), ["latent"], ["frames", *cache_out], [latent_shape], dims,
                  tolerance=tol, weights=[first]),
        GraphSpec("vae", "decoder_step", step, (latent, *caches), ["latent", *cache_in], ["frames", *cache_out],
                  [latent_shape, *cache_shapes], dims, tolerance=tol, weights=[step]),
    ]


# ------------------------------------------------------------------------------------------------------------------
# Line-art generator (hook)
# ------------------------------------------------------------------------------------------------------------------

def lineart_graphs(detector, *, detect_hw: tuple[int, int] = (512, 896), max_batch: int = 8,
                   hw_range: tuple[tuple[int, int], tuple[int, int]] | None = None) -> list[GraphSpec]:
    """The line-art generator(s) of a sparkle_fast.models.lineart.LineartDetector: `generator` (sk_model.pth) and,
    when loaded, `generator_coarse` (sk_model2.pth). float (B, 3, H, W) RGB in [0, 1] -> (B, 1, H, W) in [0, 1].

    detect_hw: the detect size the profile is tuned for (ControlNet's rule at detect resolution 512: 512x896 for a
    720x1280 clip); hw_range: ((h_min, h_max), (w_min, w_max)), default detect_hw only (a static profile).
    Batch, H and W are dynamic in the ONNX graph (H and W multiples of 4: two stride-2 convs and their transposes).
    """
    h_opt, w_opt = detect_hw
    (h_min, h_max), (w_min, w_max) = hw_range or ((h_opt, h_opt), (w_opt, w_opt))
    dims = {"batch": (1, min(max_batch, int(getattr(detector, "batch_size", max_batch))), max_batch),
            "h": (h_min, h_opt, h_max), "w": (w_min, w_opt, w_max)}
    models = [("generator", detector.model), ("generator_coarse", getattr(detector, "model_coarse", None))]
    specs = []
    for name, model in models:
        if model is None or not isinstance(model, torch.nn.Module):
            continue
        param = next(model.parameters())
        # example: 2 frames of 2x4 units of 4 pixels (H, W multiples of 4), so no dimension is specialised
        example = torch.rand(2, 3, 8, 16, generator=torch.Generator().manual_seed(0)).to(param.device, param.dtype)
        specs.append(GraphSpec("lineart", name, model.eval(), (example,), ["frames"], ["lines"],
                               [(("batch", 1), 3, ("h", 4), ("w", 4))],
                               {"batch": dims["batch"], "h": (dims["h"][0] // 4, dims["h"][1] // 4,
                                                              dims["h"][2] // 4),
                                "w": (dims["w"][0] // 4, dims["w"][1] // 4, dims["w"][2] // 4)},
                               tolerance=(1e-4, 1e-4), weights=[model]))
    if not specs:
        raise EngineUnavailable("engine target 'lineart': the detector holds no generator (was it released?)")
    return specs


GRAPH_BUILDERS: dict[str, Callable[..., list[GraphSpec]]] = {"sam3": sam3_graphs, "vae": vae_graphs,
                                                             "lineart": lineart_graphs}
