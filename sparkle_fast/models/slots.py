"""The model folder layout: one place that knows what each model slot needs on disk and checks it before any work.

`--models DIR` holds one sub-folder per slot:

  DIR/qwen3_vl/            Qwen3-VL (e.g. Qwen3-VL-32B-Instruct): config.json with model_type "qwen3_vl",
                           tokenizer files, processor config, *.safetensors weights
  DIR/flux2_klein/         FLUX.2-klein (e.g. FLUX.2-klein-9B), a diffusers folder: model_index.json naming
                           Flux2KleinPipeline, and transformer/, vae/, text_encoder/, tokenizer/, scheduler/
  DIR/editscore/backbone/  the EditScore VLM backbone: Qwen2.5-VL (model_type "qwen2_5_vl") or Qwen3-VL
  DIR/editscore/lora/      optional EditScore LoRA (peft): adapter_config.json + adapter weights
  DIR/sam3/                SAM3 in transformers' format (e.g. facebook/sam3): config.json with model_type
                           "sam3_video" or "sam3_tracker_video", processor config, *.safetensors weights

  DIR/wan22_i2v/           Wan2.2-I2V-A14B diffusers folder (WanImageToVideoPipeline): model_index.json,
                           transformer/ (high-noise expert), transformer_2/ (low-noise expert), vae/, text_encoder/,
                           tokenizer/, scheduler/; optional lightx2v/{high,low}_noise_model.safetensors (4-step LoRAs)
  DIR/wan22_fun_control/   Wan2.2-Fun-A14B-Control converted by models/convert_videox_fun.py: fun_control.json,
                           transformer/ (high noise), transformer_2/ (low noise), vae/, text_encoder/, tokenizer/;
                           optional lightx2v/ LoRAs as above
  DIR/wan22_vace/          optional alternative control backend: a diffusers WanVACEPipeline folder
  DIR/lineart/             optional, for [edges] extractor = "lineart": ControlNet's line-art annotator files
                           sk_model.pth (required then) and sk_model2.pth (the coarse model)

`check_models_dir` reports every problem at once (slot, path, what is missing) as a ModelFolderError, so a run fails
before its first sample instead of after an hour of stage 1.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path


class ModelLoadError(RuntimeError):
    """A model whose folder passed the file check but which cannot be loaded or set up as configured (weights that
    do not fit, an old conversion, the distilled schedule without its LoRAs ...). The message names the slot, the
    folder and what to do."""


class UnloadedModel:
    """Stands in for a slot whose model failed to load: every task method returns a failed TaskResult carrying the
    load error, so the stage records it as each sample's failure reason and the run goes on (the runner retries on
    a later run). `reason` names the slot, the folder and the error."""

    def __init__(self, slot: str, folder, error: BaseException):
        message = str(error)
        self.reason = message if message.startswith(f"[{slot}]") else \
            f"[{slot}] {folder}: the model could not be loaded: {type(error).__name__}: {message}"
        self.slot, self.folder, self.error = slot, folder, error

    def release(self) -> None:
        return None

    def use_run_config(self, run_config) -> None:
        return None

    def __getattr__(self, name: str):
        if name.startswith("_"):
            raise AttributeError(name)

        def failed(*args, **kwargs):
            from sparkle_fast.models.base import TaskResult

            return TaskResult(ok=False, reason=self.reason)

        return failed


def model_settings(model) -> dict | None:
    """The sampling settings a loaded model reports (its settings() dict) for a stage's record, or None."""
    if isinstance(model, UnloadedModel) or not callable(getattr(model, "settings", None)):
        return None
    settings = model.settings()
    return settings if isinstance(settings, dict) else None


def load_or_stand_in(slot: str, folder, load: Callable):
    """load(folder), or an UnloadedModel carrying the error (printed with its traceback for the log) when loading
    fails, so that one stage's unloadable model fails that stage's samples with the reason instead of the run."""
    import traceback

    try:
        return load(folder)
    except Exception as exc:  # noqa: BLE001 - recorded per sample by the stage
        traceback.print_exc()
        return UnloadedModel(slot, folder, exc)


class ModelFolderError(FileNotFoundError):
    """A model folder that is missing, incomplete or holds another model. `problems` lists one line per issue,
    each naming the slot and the path."""

    def __init__(self, problems: list[str]):
        self.problems = list(problems)
        super().__init__("model folder check failed:\n  " + "\n  ".join(self.problems))


def _read_json(path: Path) -> dict | None:
    try:
        value = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return value if isinstance(value, dict) else None


def _has_any(folder: Path, names: Iterable[str]) -> bool:
    return any((folder / n).is_file() for n in names)


def _has_weights(folder: Path, extra_patterns: Iterable[str] = ()) -> bool:
    patterns = ("*.safetensors", "*.safetensors.index.json", "*.bin", *extra_patterns)
    return any(any(folder.glob(p)) for p in patterns)


def _check_transformers_vlm(slot: str, folder: Path, model_types: tuple[str, ...]) -> list[str]:
    """A transformers VLM folder: config.json of an accepted model_type, tokenizer, processor config, weights."""
    problems = []
    config_path = folder / "config.json"
    config = _read_json(config_path)
    if config is None:
        problems.append(f"[{slot}] {config_path}: missing or not a JSON object (config.json of the model)")
    elif config.get("model_type") not in model_types:
        problems.append(f"[{slot}] {config_path}: model_type is {config.get('model_type')!r}, expected "
                        f"{' or '.join(repr(t) for t in model_types)} (wrong model in this folder?)")
    if not _has_any(folder, ("tokenizer.json", "tokenizer_config.json", "vocab.json")):
        problems.append(f"[{slot}] {folder}: no tokenizer (tokenizer.json or tokenizer_config.json)")
    if not _has_any(folder, ("preprocessor_config.json", "processor_config.json")):
        problems.append(f"[{slot}] {folder}: no processor config (preprocessor_config.json or processor_config.json)")
    if not _has_weights(folder):
        problems.append(f"[{slot}] {folder}: no weights (*.safetensors or *.safetensors.index.json)")
    return problems


def _check_qwen3_vl(slot: str, folder: Path) -> list[str]:
    return _check_transformers_vlm(slot, folder, ("qwen3_vl",))


_FLUX_COMPONENTS = {
    "transformer": ("config.json",),
    "vae": ("config.json",),
    "text_encoder": ("config.json",),
    "tokenizer": ("tokenizer_config.json", "tokenizer.json"),
    "scheduler": ("scheduler_config.json",),
}


def _check_flux2_klein(slot: str, folder: Path) -> list[str]:
    problems = []
    index_path = folder / "model_index.json"
    index = _read_json(index_path)
    if index is None:
        problems.append(f"[{slot}] {index_path}: missing or not a JSON object (a diffusers pipeline folder)")
    elif index.get("_class_name") != "Flux2KleinPipeline":
        problems.append(f"[{slot}] {index_path}: _class_name is {index.get('_class_name')!r}, expected "
                        f"'Flux2KleinPipeline' (wrong model in this folder?)")
    for component, files in _FLUX_COMPONENTS.items():
        sub = folder / component
        if not sub.is_dir():
            problems.append(f"[{slot}] {sub}: missing component folder")
        elif not _has_any(sub, files):
            problems.append(f"[{slot}] {sub}: missing {' or '.join(files)}")
        elif component in ("transformer", "vae", "text_encoder") and not _has_weights(sub):
            problems.append(f"[{slot}] {sub}: no weights (*.safetensors)")
    return problems


def _check_editscore(slot: str, folder: Path) -> list[str]:
    problems = _check_transformers_vlm(slot, folder / "backbone", ("qwen2_5_vl", "qwen3_vl"))
    lora = folder / "lora"
    if lora.exists():
        if not (lora / "adapter_config.json").is_file():
            problems.append(f"[{slot}] {lora}: missing adapter_config.json (a peft LoRA folder)")
        if not _has_any(lora, ("adapter_model.safetensors", "adapter_model.bin")):
            problems.append(f"[{slot}] {lora}: missing adapter_model.safetensors")
    return problems


def _check_sam3(slot: str, folder: Path) -> list[str]:
    """A transformers SAM3 folder Sam3TrackerVideoModel loads: the full SAM3 video checkpoint (its tracker_config is
    used) or a tracker-only one; no tokenizer needed (tracking is prompted with boxes)."""
    problems = []
    config_path = folder / "config.json"
    config = _read_json(config_path)
    accepted = ("sam3_video", "sam3_tracker_video")
    if config is None:
        problems.append(f"[{slot}] {config_path}: missing or not a JSON object (config.json of the model)")
    elif config.get("model_type") not in accepted:
        problems.append(f"[{slot}] {config_path}: model_type is {config.get('model_type')!r}, expected "
                        f"{' or '.join(repr(t) for t in accepted)} (wrong model in this folder?)")
    if not _has_any(folder, ("preprocessor_config.json", "processor_config.json")):
        problems.append(f"[{slot}] {folder}: no processor config (preprocessor_config.json or processor_config.json)")
    if not _has_weights(folder):
        problems.append(f"[{slot}] {folder}: no weights (*.safetensors or *.safetensors.index.json)")
    return problems


# --- Wan2.2 video generation (models/i2v.py, models/control.py) ---

_WAN_COMPONENTS = {
    "transformer": ("config.json",),
    "transformer_2": ("config.json",),
    "vae": ("config.json",),
    "text_encoder": ("config.json",),
    "tokenizer": ("tokenizer_config.json", "tokenizer.json", "spiece.model"),
}


def check_wan_folder(slot: str, folder: Path, class_name: str | None, marker: str = "model_index.json") -> list[str]:
    """A two-expert Wan folder: `marker` JSON (model_index.json naming `class_name`, or our fun_control.json), both
    experts, VAE, text encoder and tokenizer with weights; optional lightx2v/ holding both LoRA files."""
    problems = []
    marker_path = folder / marker
    index = _read_json(marker_path)
    if index is None:
        problems.append(f"[{slot}] {marker_path}: missing or not a JSON object")
    elif class_name is not None and index.get("_class_name") != class_name:
        problems.append(f"[{slot}] {marker_path}: _class_name is {index.get('_class_name')!r}, expected "
                        f"{class_name!r} (wrong model in this folder?)")
    for component, files in _WAN_COMPONENTS.items():
        sub = folder / component
        if not sub.is_dir():
            problems.append(f"[{slot}] {sub}: missing component folder"
                            + (" (the low-noise expert of Wan2.2 A14B)" if component == "transformer_2" else ""))
        elif not _has_any(sub, files):
            problems.append(f"[{slot}] {sub}: missing {' or '.join(files)}")
        elif component != "tokenizer" and not _has_weights(sub):
            problems.append(f"[{slot}] {sub}: no weights (*.safetensors)")
    lora = folder / "lightx2v"
    if lora.exists():
        for name in ("high_noise_model.safetensors", "low_noise_model.safetensors"):
            if not (lora / name).is_file():
                problems.append(f"[{slot}] {lora / name}: missing (LightX2V needs one LoRA per expert)")
    return problems


def _check_wan22_i2v(slot: str, folder: Path) -> list[str]:
    return check_wan_folder(slot, folder, "WanImageToVideoPipeline")


def _check_wan22_fun_control(slot: str, folder: Path) -> list[str]:
    return check_wan_folder(slot, folder, None, marker="fun_control.json")


def _check_wan22_vace(slot: str, folder: Path) -> list[str]:
    return check_wan_folder(slot, folder, "WanVACEPipeline")


def _check_lineart(slot: str, folder: Path) -> list[str]:
    """ControlNet's line-art annotator files (lllyasviel/Annotators): sk_model.pth, optionally sk_model2.pth."""
    if not (folder / "sk_model.pth").is_file():
        return [f"[{slot}] {folder / 'sk_model.pth'}: missing (the line-art generator's weights; sk_model2.pth, the "
                "coarse model, is optional)"]
    return []


@dataclass(frozen=True)
class ModelSlot:
    """One model the pipeline loads: its name, its sub-folder of --models DIR and the check of that folder."""

    name: str
    subdir: str
    description: str
    check: Callable[[str, Path], list[str]]

    def problems(self, folder: str | os.PathLike) -> list[str]:
        folder = Path(folder)
        if not folder.is_dir():
            return [f"[{self.name}] {folder}: missing folder ({self.description})"]
        return self.check(self.name, folder)


SLOTS: dict[str, ModelSlot] = {
    "vlm": ModelSlot("vlm", "qwen3_vl", "Qwen3-VL, e.g. Qwen3-VL-32B-Instruct", _check_qwen3_vl),
    "editor": ModelSlot("editor", "flux2_klein", "FLUX.2-klein diffusers folder, e.g. FLUX.2-klein-9B",
                        _check_flux2_klein),
    "scorer": ModelSlot("scorer", "editscore", "EditScore: backbone/ (Qwen2.5-VL or Qwen3-VL) + optional lora/",
                        _check_editscore),
    "sam3": ModelSlot("sam3", "sam3", "SAM3 (transformers format, e.g. facebook/sam3) for BAIT tracking",
                      _check_sam3),
    "i2v": ModelSlot("i2v", "wan22_i2v", "Wan2.2-I2V-A14B diffusers folder (both experts) + optional lightx2v/ LoRAs",
                     _check_wan22_i2v),
    "control": ModelSlot("control", "wan22_fun_control", "Wan2.2-Fun-A14B-Control converted with "
                         "sparkle_fast.models.convert_videox_fun", _check_wan22_fun_control),
    "vace": ModelSlot("vace", "wan22_vace", "Wan2.2 VACE diffusers folder (WanVACEPipeline), alternative control "
                      "backend", _check_wan22_vace),
    "lineart": ModelSlot("lineart", "lineart", "ControlNet's line-art annotator: sk_model.pth (+ sk_model2.pth), for "
                         "[edges] extractor = \"lineart\"", _check_lineart),
}


# What a full pipeline run needs; "vace" is an alternative control backend and "lineart" an alternative edge
# extractor, each checked only when chosen.
PIPELINE_SLOTS = ("vlm", "editor", "scorer", "sam3", "i2v", "control")


def check_model_folder(slot: str, folder: str | os.PathLike) -> Path:
    """Check one slot's folder (the folder itself, not --models DIR); raise ModelFolderError naming what is
    missing. Returns the folder as a Path."""
    if slot not in SLOTS:
        raise KeyError(f"unknown model slot {slot!r}; slots are {sorted(SLOTS)}")
    problems = SLOTS[slot].problems(folder)
    if problems:
        raise ModelFolderError(problems)
    return Path(folder)


def check_models_dir(root: str | os.PathLike, slots: Iterable[str] | None = None) -> dict[str, Path]:
    """Check the needed slots (default: PIPELINE_SLOTS) under --models DIR at once; {slot: folder} or a
    ModelFolderError listing every problem."""
    root = Path(root)
    names = list(PIPELINE_SLOTS) if slots is None else list(slots)
    unknown = [n for n in names if n not in SLOTS]
    if unknown:
        raise KeyError(f"unknown model slot(s) {unknown}; slots are {sorted(SLOTS)}")
    if not root.is_dir():
        raise ModelFolderError([f"[models] {root}: missing folder (expected one sub-folder per slot: "
                                + ", ".join(f"{SLOTS[n].subdir}/" for n in names) + ")"])
    problems, folders = [], {}
    for name in names:
        folder = root / SLOTS[name].subdir
        problems += SLOTS[name].problems(folder)
        folders[name] = folder
    if problems:
        raise ModelFolderError(problems)
    return folders
