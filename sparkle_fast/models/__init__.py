"""Model adapters over real libraries (DESIGN principle 5).

  vlm.Qwen3VLAdapter        transformers Qwen3-VL: the six VLM tasks of stages 1-4
  editor.FluxKleinEditor    diffusers Flux2KleinPipeline: background replacement and foreground removal
  scorer.EditScoreAdapter   the editscore package's prompts and formulas over a Qwen2.5-VL / Qwen3-VL backbone
  json_answers              tolerant parsing of VLM answers, Sparkle's box rule, schema-constrained decoding
  slots                     the --models DIR layout and its checks
  tiny                      tiny random models of the same classes (tests, demo)

Each adapter: `from_pretrained(folder)` (real weights from a local folder), `tiny()`, task methods that return a
`TaskResult` instead of raising, and `release()` to give the memory back before the next stage's models load.
Heavy libraries are imported lazily, so importing this package is cheap.
"""

from sparkle_fast.models.base import TaskResult
from sparkle_fast.models.slots import SLOTS, ModelFolderError, check_model_folder, check_models_dir

__all__ = ["SLOTS", "ModelFolderError", "TaskResult", "check_model_folder", "check_models_dir"]
