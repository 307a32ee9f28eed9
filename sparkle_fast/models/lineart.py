"""Line-art edges: the informative-drawings generator (Chan et al., "Learning to generate line drawings that convey
geometry and semantics", the paper's reference [5]) run the way ControlNet's line-art annotator runs it
(controlnet_aux's LineartDetector), batched over the frames of a video.

    from sparkle_fast.models.lineart import LineartDetector
    detector = LineartDetector.from_pretrained("MODELS/lineart")   # sk_model.pth (+ optional coarse sk_model2.pth)
    lines = detector(frames)      # uint8 RGB (T, H, W, 3), numpy or torch on any device -> uint8 (T, H, W), same kind

Per frame, as ControlNet's annotator does it:
  1. resize to the detect size: k = detect_resolution / min(H, W), each side scaled by k and rounded to a multiple
     of 64; cv2.resize with INTER_LANCZOS4 when k > 1, else INTER_AREA (skipped when the size is already right)
  2. the generator on RGB / 255 (float, N x 3 x h x w) -> a sigmoid map in [0, 1] (1 = paper, 0 = ink);
     * 255, clipped to [0, 255], truncated to uint8
  3. resized to the output size (default: the input's H x W) with cv2.INTER_LINEAR (ControlNet resizes to its
     image_resolution instead; with `size=` a caller can ask for that)
  4. 255 - map: white lines on black, the polarity of Canny's edge maps, so ops.compose_edges takes either.
Steps 1 and 3 run on the host with OpenCV, the same calls ControlNet makes (frames on a GPU are copied over: stage 5's
frames are on the host anyway, and the resize is cheap next to the generator); step 2 runs on the detector's device,
`batch_size` frames per forward (InstanceNorm normalises each frame on its own, so batching changes no result).

Equality with controlnet_aux 0.0.10's LineartDetector for the same weights (tests/test_lineart.py, CPU, float32): at
most 1 gray level apart anywhere (float summation order differs between a batch and a single frame, and step 2
truncates), identical on almost every pixel. On CUDA, torch's default lets convolutions use TF32; pass
dtype=torch.float32 and set torch.backends.cudnn.allow_tf32 = False for the CPU's numbers, or bf16 for speed.

The generator (LineartGenerator): a ReflectionPad(3) + 7x7 conv to `width` channels, two stride-2 3x3 convs
(width*2, width*4), `blocks` residual blocks (reflection-padded 3x3 convs), two stride-2 transposed convs back to
`width`, a ReflectionPad(3) + 7x7 conv to 1 channel and a sigmoid; every conv but the last is followed by
InstanceNorm (no affine parameters) and ReLU. ControlNet's checkpoints use width 64 and 3 blocks; the state-dict
keys (model0 ... model4) are those of the released sk_model.pth, so the real files load as they are. Width and
block count are read from the checkpoint, so tiny random checkpoints (models/tiny.py) load through the same code.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

FINE_FILE = "sk_model.pth"
COARSE_FILE = "sk_model2.pth"
DETECT_RESOLUTION = 512  # ControlNet's default detect_resolution


def _conv_norm_relu(conv: nn.Module, channels: int) -> list[nn.Module]:
    return [conv, nn.InstanceNorm2d(channels), nn.ReLU(inplace=True)]


class _Residual(nn.Module):
    """x + (pad, 3x3 conv, norm, relu, pad, 3x3 conv, norm)(x); key prefix conv_block as in sk_model.pth."""

    def __init__(self, channels: int):
        super().__init__()
        self.conv_block = nn.Sequential(
            nn.ReflectionPad2d(1), *_conv_norm_relu(nn.Conv2d(channels, channels, 3), channels),
            nn.ReflectionPad2d(1), nn.Conv2d(channels, channels, 3), nn.InstanceNorm2d(channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.conv_block(x)


class LineartGenerator(nn.Module):
    """The informative-drawings generator (module docstring). forward: float (N, 3, H, W) RGB in [0, 1], H and W
    multiples of 4 -> float (N, 1, H, W) in [0, 1] (1 = background paper, 0 = a line)."""

    def __init__(self, width: int = 64, blocks: int = 3):
        super().__init__()
        self.width, self.blocks = width, blocks
        w1, w2, w4 = width, width * 2, width * 4
        self.model0 = nn.Sequential(nn.ReflectionPad2d(3), *_conv_norm_relu(nn.Conv2d(3, w1, 7), w1))
        self.model1 = nn.Sequential(*_conv_norm_relu(nn.Conv2d(w1, w2, 3, stride=2, padding=1), w2),
                                    *_conv_norm_relu(nn.Conv2d(w2, w4, 3, stride=2, padding=1), w4))
        self.model2 = nn.Sequential(*(_Residual(w4) for _ in range(blocks)))
        up = dict(kernel_size=3, stride=2, padding=1, output_padding=1)
        self.model3 = nn.Sequential(*_conv_norm_relu(nn.ConvTranspose2d(w4, w2, **up), w2),
                                    *_conv_norm_relu(nn.ConvTranspose2d(w2, w1, **up), w1))
        self.model4 = nn.Sequential(nn.ReflectionPad2d(3), nn.Conv2d(w1, 1, 7), nn.Sigmoid())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model4(self.model3(self.model2(self.model1(self.model0(x)))))

    @classmethod
    def from_state_dict(cls, state: dict[str, torch.Tensor], source: str = "state dict") -> LineartGenerator:
        """A generator shaped after `state` (width from model0's conv, blocks from model2's keys), weights loaded
        strictly; a ValueError names `source` when the keys are not this generator's."""
        first = state.get("model0.1.weight")
        if not isinstance(first, torch.Tensor) or first.ndim != 4 or tuple(first.shape[1:]) != (3, 7, 7):
            raise ValueError(f"{source}: not an informative-drawings line-art generator (no model0.1.weight of shape "
                             f"(width, 3, 7, 7); keys start {list(state)[:4]})")
        blocks = len({k.split(".")[1] for k in state if k.startswith("model2.")})
        model = cls(width=int(first.shape[0]), blocks=blocks)
        try:
            model.load_state_dict(state, strict=True)
        except RuntimeError as exc:
            raise ValueError(f"{source}: weights do not fit the line-art generator: {exc}") from exc
        return model.eval()


def _load_state(path: Path) -> dict[str, torch.Tensor]:
    if not path.is_file():
        raise FileNotFoundError(f"{path}: missing line-art weights (ControlNet's annotator file "
                                f"{path.name}; put it in the models folder's lineart/ sub-folder)")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - any unpickling problem is reported with the file's name
        raise ValueError(f"{path}: cannot read line-art weights ({type(exc).__name__}: {exc})") from exc
    if isinstance(state, dict) and "state_dict" in state and isinstance(state["state_dict"], dict):
        state = state["state_dict"]
    if not isinstance(state, dict):
        raise ValueError(f"{path}: expected a state dict of tensors, got {type(state).__name__}")
    return state


def detect_size(height: int, width: int, resolution: int) -> tuple[int, int]:
    """ControlNet's resize_image rule: (h, w) with min side scaled to `resolution`, each rounded to a multiple of 64
    (Python's round: halves go to even, as numpy's)."""
    k = float(resolution) / min(height, width)
    return int(np.round(height * k / 64.0)) * 64, int(np.round(width * k / 64.0)) * 64


def _resize(frames: np.ndarray, height: int, width: int, interpolation: int) -> np.ndarray:
    import cv2

    if frames.shape[1:3] == (height, width):
        return frames
    return np.stack([cv2.resize(np.ascontiguousarray(f), (width, height), interpolation=interpolation)
                     for f in frames]).reshape((len(frames), height, width) + frames.shape[3:])


class LineartDetector:
    """The line-art annotator over videos (module docstring). Holds the fine generator and, when its file was
    present, the coarse one; both on `device` in `dtype`."""

    def __init__(self, model: LineartGenerator, coarse_model: LineartGenerator | None = None, *,
                 device: str | torch.device | None = None, dtype: torch.dtype = torch.float32,
                 detect_resolution: int = DETECT_RESOLUTION, batch_size: int = 8, source: str = "in memory"):
        from sparkle_fast.models.base import pick_device

        self.device, self.dtype, self.source = pick_device(device), dtype, source
        self.detect_resolution, self.batch_size = int(detect_resolution), int(batch_size)
        self.model = model.to(self.device, dtype).eval()
        self.model_coarse = None if coarse_model is None else coarse_model.to(self.device, dtype).eval()

    @classmethod
    def from_pretrained(cls, folder: str | os.PathLike, *, device: str | torch.device | None = None,
                        dtype: torch.dtype = torch.float32, filename: str = FINE_FILE,
                        coarse_filename: str = COARSE_FILE, **kwargs: Any) -> LineartDetector:
        """Load `folder`/sk_model.pth (required) and `folder`/sk_model2.pth (the coarse model, optional) as
        ControlNet publishes them (torch state dicts). device: default cuda when available. kwargs: see __init__."""
        folder = Path(folder)
        if not folder.is_dir():
            raise FileNotFoundError(f"{folder}: no such line-art model folder (expected {filename} and optionally "
                                    f"{coarse_filename} in it)")
        fine = LineartGenerator.from_state_dict(_load_state(folder / filename), str(folder / filename))
        coarse_path = folder / coarse_filename
        coarse = (LineartGenerator.from_state_dict(_load_state(coarse_path), str(coarse_path))
                  if coarse_path.is_file() else None)
        return cls(fine, coarse, device=device, dtype=dtype, source=str(folder), **kwargs)

    @classmethod
    def tiny(cls, *, seed: int = 0, width: int = 4, blocks: int = 1, **kwargs: Any) -> LineartDetector:
        """Random tiny generators of the same class (tests and the demo); their lines are noise."""
        torch.manual_seed(seed)
        fine, coarse = LineartGenerator(width, blocks), LineartGenerator(width, blocks)
        kwargs.setdefault("device", "cpu")
        return cls(fine, coarse, source=f"tiny random (seed {seed})", **kwargs)

    def release(self) -> None:
        """Drop both generators and hand their memory back (the detector cannot be called afterwards)."""
        from sparkle_fast.models.base import free_memory

        self.model = self.model_coarse = None
        free_memory(self.device)

    def __call__(self, frames: Any, *, coarse: bool = False, detect_resolution: int | None = None,
                 size: tuple[int, int] | None = None) -> Any:
        """uint8 RGB frames (T, H, W, 3) (numpy, or torch on any device; one frame (H, W, 3) is taken as T = 1)
        -> uint8 line maps (T, size or (H, W)): 255 on a line, 0 elsewhere; the same kind and device as frames.
        coarse: the coarse generator (sk_model2.pth). detect_resolution: default the detector's (512)."""
        is_torch = isinstance(frames, torch.Tensor)
        host = frames.detach().cpu().numpy() if is_torch else np.asarray(frames)
        if host.dtype != np.uint8 or host.ndim not in (3, 4) or host.shape[-1] != 3:
            raise ValueError(f"LineartDetector: frames must be uint8 RGB (T, H, W, 3), got {host.dtype} with shape "
                             f"{tuple(host.shape)}")
        single = host.ndim == 3
        if single:
            host = host[None]
        if 0 in host.shape:
            raise ValueError(f"LineartDetector: frames must not be empty, got shape {tuple(host.shape)}")
        model = self.model_coarse if coarse else self.model
        if model is None:
            raise FileNotFoundError(f"{self.source}: no {'coarse' if coarse else 'fine'} line-art model "
                                    f"({COARSE_FILE if coarse else FINE_FILE}) is loaded")
        lines = self.lines(host, model, detect_resolution or self.detect_resolution, size)
        out = lines[0] if single else lines
        return torch.from_numpy(out).to(frames.device) if is_torch else out

    def lines(self, frames: np.ndarray, model: LineartGenerator, resolution: int,
              size: tuple[int, int] | None = None) -> np.ndarray:
        """Steps 1-4 on host uint8 (T, H, W, 3) frames; uint8 (T, *size) (default (T, H, W))."""
        import cv2

        height, width = frames.shape[1:3]
        dh, dw = detect_size(height, width, resolution)
        if dh == 0 or dw == 0:
            raise ValueError(f"LineartDetector: frames of {height}x{width} at detect resolution {resolution} give an "
                             f"empty detect size ({dh}x{dw})")
        k = float(resolution) / min(height, width)
        resized = _resize(frames, dh, dw, cv2.INTER_LANCZOS4 if k > 1 else cv2.INTER_AREA)
        raw = np.empty((len(frames), dh, dw), np.uint8)
        with torch.inference_mode():
            for start in range(0, len(frames), self.batch_size):
                batch = torch.from_numpy(np.ascontiguousarray(resized[start:start + self.batch_size]))
                x = batch.to(self.device).permute(0, 3, 1, 2).to(self.dtype) / 255.0
                y = model(x)[:, 0].float()
                raw[start:start + len(batch)] = (y * 255.0).clamp(0, 255).to(torch.uint8).cpu().numpy()
        out_h, out_w = size if size is not None else (height, width)
        return 255 - _resize(raw, int(out_h), int(out_w), cv2.INTER_LINEAR)


class LineartSlot:
    """Stage 5's line-art detector, loaded on first use (only runs with [edges] extractor = "lineart" need it):
    models_source "tiny" gives LineartDetector.tiny(), a --models folder its lineart/ sub-folder (models/slots.py)."""

    def __init__(self, models_source: Any):
        self.models_source = models_source
        self.detector: LineartDetector | None = None
        self.run_config: Any = None

    def use_run_config(self, config: Any) -> None:
        """The runner's hook: the run config's [engines] lineart choice applies when the detector is loaded."""
        self.run_config = config

    def get(self, device: str | torch.device | None = None) -> LineartDetector:
        if self.detector is None:
            if isinstance(self.models_source, str) and self.models_source == "tiny":
                self.detector = LineartDetector.tiny(device=device)
            else:
                from sparkle_fast.models.slots import SLOTS, check_model_folder

                folder = check_model_folder("lineart", Path(self.models_source) / SLOTS["lineart"].subdir)
                self.detector = LineartDetector.from_pretrained(folder, device=device)
            if self.run_config is not None:
                from sparkle_fast.engines.plug import use_run_config_engines

                use_run_config_engines(self.detector, self.run_config)
        return self.detector

    def release(self) -> None:
        if self.detector is not None:
            self.detector.release()
            self.detector = None
