"""EditScore's LoRA merged into its backbone once, into a cached model folder that vLLM (or an OpenAI-compatible
server) can load like any other model.

vLLM can also apply LoRA adapters per request, but a merged folder costs nothing per token and works on every
backend; peft's merge_and_unload does the merge. The cache key is a digest of the backbone's config and the
adapter's files, so a changed adapter gets a new folder and an unchanged one is merged only once.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

_DONE = "merged.json"


def _digest(backbone: Path, lora: Path) -> str:
    h = hashlib.sha256()
    h.update((backbone / "config.json").read_bytes())
    for path in sorted(p for p in lora.rglob("*") if p.is_file()):
        h.update(path.relative_to(lora).as_posix().encode())
        h.update(path.read_bytes())
    return h.hexdigest()[:16]


def merged_lora_folder(backbone: str | Path, lora: str | Path, cache_root: str | Path) -> Path:
    """A folder with the backbone's weights with the LoRA merged in, plus its processor files; made on the first
    call (in a temporary folder renamed into place, so an interrupted merge leaves no half folder), reused after.

    backbone: a Qwen2.5-VL / Qwen3-VL model folder; lora: a peft adapter folder (adapter_config.json);
    cache_root: where merged folders live (cache_root/<name>-<digest>/).
    """
    backbone, lora, cache_root = Path(backbone), Path(lora), Path(cache_root)
    for path, what in ((backbone / "config.json", "backbone config"), (lora / "adapter_config.json", "LoRA config")):
        if not path.is_file():
            raise FileNotFoundError(f"merged_lora_folder: {what} {path} not found")
    target = cache_root / f"{backbone.name}-{lora.name}-{_digest(backbone, lora)}"
    if (target / _DONE).is_file():
        return target

    import torch
    from peft import PeftModel
    from transformers import AutoConfig, AutoProcessor

    model_type = AutoConfig.from_pretrained(backbone).model_type
    if model_type == "qwen2_5_vl":
        from transformers import Qwen2_5_VLForConditionalGeneration as model_class
    else:
        from transformers import Qwen3VLForConditionalGeneration as model_class
    model = model_class.from_pretrained(backbone, dtype="auto")
    merged = PeftModel.from_pretrained(model, lora).merge_and_unload()
    partial = cache_root / (target.name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)
    partial.mkdir(parents=True)
    with torch.no_grad():
        merged.save_pretrained(partial)
    AutoProcessor.from_pretrained(backbone).save_pretrained(partial)
    (partial / _DONE).write_text(json.dumps({"backbone": str(backbone), "lora": str(lora)}))
    shutil.rmtree(target, ignore_errors=True)
    partial.rename(target)
    return target
