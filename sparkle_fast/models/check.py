"""What a --models DIR holds, slot by slot, and how it differs from Sparkle's setup, without loading a weight.

Read only: each slot's config files (config.json, model_index.json, fun_control.json, adapter_config.json) and the
safetensors headers (8-byte little-endian length + JSON of names, dtypes and shapes). From those: the model family,
its size (parameters counted from the headers, named by the nearest published size of the family), the Wan experts'
input channels and Fun-Control's ref_conv, the LightX2V LoRAs' coverage of both experts' block linear layers.

Sparkle's setup (paper and release README): Qwen3-VL-32B, FLUX.2-klein-9B, EditScore (its size is not published),
SAM3, Wan2.2-I2V-A14B with the 4-step LightX2V distillation, Wan2.2-Fun-A14B-Control.

A slot is "ok" (what Sparkle used, as far as the files tell), "differs" (it runs, but is not Sparkle's: a smaller
model, a missing reference input ...; the notes say how) or "wrong" (the run would refuse it or fail on it: missing
files, another model, a Fun-Control without 52 input channels, distilled mode without its LoRAs ...).
`sparkle-fast check-models DIR` prints the report and exits 1 when any slot is wrong.
"""

from __future__ import annotations

import json
import math
import os
import re
from dataclasses import dataclass, field
from pathlib import Path

from sparkle_fast.models.slots import PIPELINE_SLOTS, SLOTS
from sparkle_fast.models.weights import read_header, safetensors_header

# Published sizes (billions of parameters) per family, for naming a counted size.
FAMILY_SIZES = {
    "Qwen3-VL": (2, 4, 8, 32),
    "Qwen2.5-VL": (3, 7, 32, 72),
    "FLUX.2-klein": (4, 9),
    "Wan2.2": (5, 14),
}
SPARKLE = {
    "vlm": "Qwen3-VL-32B",
    "editor": "FLUX.2-klein-9B",
    "scorer": "EditScore (size not published; EditScore-7B/32B/72B are LoRAs on Qwen2.5-VL)",
    "sam3": "SAM3 (facebook/sam3)",
    "i2v": "Wan2.2-I2V-A14B + LightX2V 4-step LoRAs on both experts",
    "control": "Wan2.2-Fun-A14B-Control (52 input channels, ref_conv)",
    "vace": "not used by Sparkle (our alternative control backend)",
    "lineart": "ControlNet's line-art annotator (if the paper's 'Lineart [5]' is meant)",
}


@dataclass
class SlotReport:
    slot: str
    folder: Path
    status: str = "ok"  # ok | differs | wrong
    holds: str = ""
    sparkle: str = ""
    notes: list[str] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)

    def differs(self, note: str) -> None:
        self.notes.append(note)
        if self.status == "ok":
            self.status = "differs"

    def wrong(self, problem: str) -> None:
        self.problems.append(problem)
        self.status = "wrong"


# --- reading files without loading weights ---------------------------------------------------------------------

def folder_tensors(folder: Path) -> dict[str, tuple[str, tuple[int, ...]]]:
    """{name: (dtype, shape)} of every tensor in the folder's *.safetensors files (shards included)."""
    tensors = {}
    for path in sorted(folder.glob("*.safetensors")):
        tensors.update(read_header(path))
    return tensors


def parameter_count(tensors: dict) -> int:
    return sum(math.prod(shape) for _, shape in tensors.values())


def describe_size(params: int, family: str | None = None) -> tuple[str | None, str]:
    """(published size label like "8B" or None, a readable count). The label is the family's published size
    nearest in log scale, when within a factor 1.5."""
    count = f"{params / 1e9:.2f}B parameters" if params >= 1e8 else f"{params / 1e6:.2f}M parameters"
    sizes = FAMILY_SIZES.get(family or "", ())
    if params <= 0 or not sizes:
        return None, count
    best = min(sizes, key=lambda s: abs(math.log(params / (s * 1e9))))
    return (f"{best}B", count) if abs(math.log(params / (best * 1e9))) < math.log(1.5) else (None, count)


def _json(path: Path) -> dict | None:
    try:
        value = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return value if isinstance(value, dict) else None


def _sized(report: SlotReport, family: str, tensors: dict, sparkle_size: str | None, what: str = "") -> str | None:
    label, count = describe_size(parameter_count(tensors), family)
    report.holds = f"{family}-{label} ({count}{what})" if label else \
        f"{family}, {count}{what} (not a published size)"
    if sparkle_size and label != sparkle_size:
        here = f"{family}-{label}" if label else f"a {family} of {count}{what}"
        report.differs(f"{here} here, Sparkle used {family}-{sparkle_size}")
    return label


# --- LightX2V LoRA coverage --------------------------------------------------------------------------------------

_LORA_KEY = re.compile(r"^(?:model\.diffusion_model\.|diffusion_model\.|transformer\.|base_model\.model\.)?"
                       r"(.*?)\.(?:lora_down|lora_up|lora_A|lora_B|alpha|diff|diff_b)(?:\..*)?$")
_WAN_TO_DIFFUSERS = {"self_attn": "attn1", "cross_attn": "attn2", "q": "to_q", "k": "to_k", "v": "to_v",
                     "o": "to_out.0", "k_img": "add_k_proj", "v_img": "add_v_proj"}


def _diffusers_module(name: str) -> str:
    """A Wan module name in original (LightX2V) naming -> diffusers' (already diffusers: unchanged)."""
    parts, out, i = name.split("."), [], 0
    while i < len(parts):
        if parts[i] == "ffn" and i + 1 < len(parts) and parts[i + 1] in ("0", "2"):
            out.append("ffn.net.0.proj" if parts[i + 1] == "0" else "ffn.net.2")
            i += 2
            continue
        out.append(_WAN_TO_DIFFUSERS.get(parts[i], parts[i]) if i and parts[i - 1] in ("self_attn", "cross_attn")
                   or parts[i] in ("self_attn", "cross_attn") else parts[i])
        i += 1
    return ".".join(out)


def block_linear_layers(tensors: dict) -> set[str]:
    """Module names of the 2-D weights inside the transformer blocks (what a LoRA adapts)."""
    return {name[:-len(".weight")] for name, (_, shape) in tensors.items()
            if name.startswith("blocks.") and name.endswith(".weight") and len(shape) == 2}


def lora_coverage(lora_path: Path, expert_tensors: dict) -> tuple[int, int, int]:
    """(expert block linear layers the LoRA adapts, all of them, LoRA modules the expert lacks)."""
    targets = set()
    for key in safetensors_header(lora_path):
        match = _LORA_KEY.match(key)
        if match:
            targets.add(_diffusers_module(match.group(1)))
    layers = block_linear_layers(expert_tensors)
    return len(targets & layers), len(layers), len(targets - layers)


# --- the slots ---------------------------------------------------------------------------------------------------

def _vlm(report: SlotReport, folder: Path, config) -> None:
    _sized(report, "Qwen3-VL", folder_tensors(folder), "32B")


def _scorer(report: SlotReport, folder: Path, config) -> None:
    backbone = folder / "backbone"
    cfg = _json(backbone / "config.json") or {}
    family = {"qwen2_5_vl": "Qwen2.5-VL", "qwen3_vl": "Qwen3-VL"}.get(cfg.get("model_type"), str(cfg.get("model_type")))
    label = _sized(report, family, folder_tensors(backbone), None)
    lora = _json(folder / "lora" / "adapter_config.json")
    report.holds = (f"EditScore-{label} on " if label and lora else "") + report.holds + \
        (f" + LoRA r={lora.get('r')}" if lora else " without an EditScore LoRA")
    if lora is None:
        report.differs("no lora/: the bare backbone is not EditScore (its releases are LoRAs)")
    if family != "Qwen2.5-VL":
        report.differs(f"{family} backbone: EditScore's released models are Qwen2.5-VL LoRAs")
    passes = getattr(getattr(config, "scorer", None), "passes", 4)
    report.notes.append(f"[scorer] passes = {passes} (Sparkle: 4)")
    if passes != 4:
        report.differs(f"{passes} EditScore passes, Sparkle's records come from 4")


def _editor(report: SlotReport, folder: Path, config) -> None:
    _sized(report, "FLUX.2-klein", folder_tensors(folder / "transformer"), "9B", " in the transformer")


def _sam3(report: SlotReport, folder: Path, config) -> None:
    cfg = _json(folder / "config.json") or {}
    _, count = describe_size(parameter_count(folder_tensors(folder)))
    report.holds = f"SAM3 ({cfg.get('model_type')}), {count}"


def _wan_experts(report: SlotReport, folder: Path, in_channels: int) -> dict:
    experts = {}
    for name, noise in (("transformer", "high"), ("transformer_2", "low")):
        tensors = folder_tensors(folder / name)
        experts[name] = tensors
        cfg = _json(folder / name / "config.json") or {}
        if cfg.get("in_channels") != in_channels:
            report.wrong(f"{folder / name}: in_channels {cfg.get('in_channels')}, expected {in_channels} "
                         f"({noise}-noise expert)")
    label, count = describe_size(parameter_count(experts["transformer"]), "Wan2.2")
    report.holds = f"two experts of {count} each" if label is None else f"A{label} experts ({count} each)"
    if label != "14B":
        report.differs(f"experts of {count}, Sparkle's are Wan2.2 A14B (14B each)")
    return experts


def _distillation(report: SlotReport, folder: Path, section, experts: dict) -> None:
    """LightX2V coverage of both experts, and whether the configured mode can run."""
    from sparkle_fast.models.i2v import LIGHTX2V_HIGH_FILE, LIGHTX2V_LOW_FILE

    mode = getattr(section, "mode", None)
    high = Path(section.lora_high) if section is not None and section.lora_high else folder / "lightx2v" / \
        LIGHTX2V_HIGH_FILE
    low = Path(section.lora_low) if section is not None and section.lora_low else folder / "lightx2v" / \
        LIGHTX2V_LOW_FILE
    if high.is_file() and low.is_file():
        parts = []
        for path, expert in ((high, "transformer"), (low, "transformer_2")):
            try:
                covered, total, extra = lora_coverage(path, experts[expert])
            except ValueError as exc:
                report.wrong(str(exc))
                continue
            parts.append(f"{path.name} covers {covered}/{total} block linear layers of {expert}"
                         + (f" ({extra} LoRA modules the expert lacks, ignored)" if extra else ""))
            if covered == 0:
                report.wrong(f"{path}: adapts none of {expert}'s layers (a LoRA for another model?)")
            elif covered < total:
                report.differs(f"{path.name} leaves {total - covered} of {expert}'s block linear layers unadapted")
        report.notes.append("LightX2V: " + "; ".join(parts))
    elif mode == "distilled" and not section.experts_distilled:
        report.wrong(f"no LightX2V LoRAs ({high}, {low}): mode 'distilled' (Sparkle's 4-step schedule) cannot run; "
                     f"add them, set experts_distilled = true, or mode = \"stock\"")
    else:
        report.notes.append("no LightX2V LoRAs" + (" (experts declared distilled)" if section is not None and
                                                   section.experts_distilled else ""))
    if mode is not None:
        report.notes.append(f"mode = {mode!r}")


def _i2v(report: SlotReport, folder: Path, config) -> None:
    experts = _wan_experts(report, folder, 36)
    report.holds = "Wan2.2-I2V " + report.holds
    _distillation(report, folder, getattr(config, "i2v", None), experts)
    section = getattr(config, "i2v", None)
    if section is not None and section.mode != "distilled":
        report.differs(f"[i2v] mode {section.mode!r}: Sparkle used the 4-step distilled schedule")


def _control(report: SlotReport, folder: Path, config) -> None:
    from sparkle_fast.models.control import FUN_CONTROL_IN_CHANNELS, FUN_CONTROL_MARKER

    marker = _json(folder / FUN_CONTROL_MARKER) or {}
    if marker.get("videox_fun_extras"):
        report.wrong(f"{folder / FUN_CONTROL_MARKER}: converted by an older sparkle-fast that set "
                     f"{marker['videox_fun_extras']} aside; convert the VideoX-Fun checkpoint again")
    experts = _wan_experts(report, folder, FUN_CONTROL_IN_CHANNELS)
    ref = {name: "ref_conv.weight" in tensors for name, tensors in experts.items()}
    in_channels = (_json(folder / "transformer" / "config.json") or {}).get("in_channels")
    report.holds = (f"Wan2.2-Fun-Control {report.holds}, in_channels {in_channels}, "
                    f"ref_conv: {'yes' if all(ref.values()) else 'no'}")
    if len(set(ref.values())) > 1:
        report.wrong(f"{folder}: one expert has ref_conv and the other not ({ref})")
    elif not any(ref.values()):
        report.differs("no ref_conv: Wan2.2-Fun-A14B-Control's reference-image input is missing (another checkpoint, "
                       "or an old conversion); the edited frame goes in as start image only")
    _distillation(report, folder, getattr(config, "control", None), experts)


_INSPECT = {"vlm": _vlm, "scorer": _scorer, "editor": _editor, "sam3": _sam3, "i2v": _i2v, "control": _control}


def check_models(root: str | os.PathLike, config=None) -> list[SlotReport]:
    """One SlotReport per pipeline slot (and per optional slot whose folder exists) under --models `root`.
    `config`: the run config (driver.config.PipelineConfig) whose [scorer] / [i2v] / [control] settings are
    checked against the folders; None: Sparkle's defaults."""
    if config is None:
        from sparkle_fast.driver.config import PipelineConfig

        config = PipelineConfig()
    root = Path(root)
    reports = []
    for name, slot in SLOTS.items():
        folder = root / slot.subdir
        if name not in PIPELINE_SLOTS and not folder.exists():
            continue
        report = SlotReport(name, folder, sparkle=SPARKLE.get(name, ""))
        for problem in slot.problems(folder):
            report.wrong(problem)
        if folder.is_dir() and name in _INSPECT:
            try:
                _INSPECT[name](report, folder, config)
            except (OSError, ValueError, KeyError, TypeError) as exc:
                report.wrong(f"{folder}: could not be read: {type(exc).__name__}: {exc}")
        if not report.holds:
            report.holds = "missing" if not folder.exists() else "(see problems)" if report.problems else "present"
        reports.append(report)
    return reports


def format_report(reports: list[SlotReport]) -> str:
    lines = []
    for r in reports:
        lines.append(f"{r.slot}: {r.status.upper()}  {r.holds}  [{r.folder}]")
        lines.append(f"    Sparkle: {r.sparkle}")
        lines += [f"    - {note}" for note in r.notes]
        lines += [f"    ! {problem}" for problem in r.problems]
    wrong = [r.slot for r in reports if r.status == "wrong"]
    differs = [r.slot for r in reports if r.status == "differs"]
    lines.append(f"{len(reports)} slot(s): {len(wrong)} wrong{' (' + ', '.join(wrong) + ')' if wrong else ''}, "
                 f"{len(differs)} differ from Sparkle's setup{' (' + ', '.join(differs) + ')' if differs else ''}")
    return "\n".join(lines)


def run_settings_problems(root: str | os.PathLike, config, slots) -> list[str]:
    """What in the run config's [i2v] / [control] settings the --models folder cannot run (the distilled schedule
    without its LoRAs, a named LoRA file missing), for the check before any work."""
    from sparkle_fast.models.control import FunControlConfig
    from sparkle_fast.models.i2v import I2VConfig, distillation_problem, settings_from_section

    problems = []
    for slot, base in (("i2v", I2VConfig()), ("control", FunControlConfig())):
        section = getattr(config, slot, None)
        if slot not in slots or section is None:
            continue
        try:
            settings = settings_from_section(section, base, config.run.seed)
        except ValueError as exc:
            problems.append(f"[{slot}] {exc}")
            continue
        problem = distillation_problem(slot, Path(root) / SLOTS[slot].subdir, settings)
        if problem:
            problems.append(problem)
    return problems


def check_run_settings(root: str | os.PathLike, config, slots) -> None:
    """ModelFolderError listing run_settings_problems, if any (called by `sparkle-fast run` before any work)."""
    from sparkle_fast.models.slots import ModelFolderError

    problems = run_settings_problems(root, config, slots)
    if problems:
        raise ModelFolderError(problems)
