"""`sparkle-fast run` as a function: inputs -> manifest -> stages -> Sparkle's index files -> a run summary.

    summary = run_pipeline("videos/", "out/", load_config(), models="tiny")

Order of work (each step safe to kill and rerun):
  1. read the inputs (a folder of videos or a CSV) and register new samples in out/manifest.sqlite;
  2. store the resolved config in the manifest and in out/config.json; report keys that changed since the last run;
  3. check the model folders of the chosen stages (a missing one stops the run here, naming slot and path);
  4. the LocalRunner runs the stages (done and rejected work is skipped, failed work retried up to run.max_attempts);
  5. every theme's prompts/{theme}_train.csv and _metadata.jsonl and the five intermediate jsonl files are rewritten
     whole from the manifest (the train files list only samples that finished stage 5);
  6. out/summary.json: per stage the counts kept / rejected / failed and seconds split into model, kernel, io and
     model loading.
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from sparkle_fast import layout as layout_mod
from sparkle_fast._io import atomic_write

from .config import PipelineConfig
from .inputs import read_inputs
from .manifest import Manifest
from .runner import LocalRunner, disk_full_error, is_disk_full
from .workers import ShardedRunner, needs_workers

STAGE_NUMBERS = (1, 2, 3, 4, 5)
TIME_KEYS = ("model", "kernel", "io", "model_load")


def parse_stages(text: str) -> list[int]:
    """"1-5", "2", "1,3-4" -> sorted stage numbers; ValueError naming the bad part."""
    numbers: set[int] = set()
    for part in text.replace(" ", "").split(","):
        low, _, high = part.partition("-")
        try:
            first, last = int(low), int(high or low)
        except ValueError:
            raise ValueError(f"--stages {text!r}: {part!r} is not a stage number or range like 1-5") from None
        if not (1 <= first <= last <= 5):
            raise ValueError(f"--stages {text!r}: stages are numbered 1 to 5")
        numbers.update(range(first, last + 1))
    return sorted(numbers)


class Progress:
    """A progress bar per step on stderr (tqdm: samples done of those that reached the step, samples/s, ETA); on a
    stream that is not a terminal, one line per update instead (logs stay readable)."""

    def __init__(self, stream=None, prefix: str = ""):
        self.stream = stream or sys.stderr
        self.prefix = prefix
        self._bars: dict[str, Any] = {}
        self._started: dict[str, float] = {}
        self._tty = bool(getattr(self.stream, "isatty", lambda: False)())

    def __call__(self, label: str, done: int, total: int) -> None:
        if self._tty:
            from tqdm import tqdm

            bar = self._bars.get(label)
            if bar is None:
                bar = self._bars[label] = tqdm(total=total, desc=f"{self.prefix}{label}", unit="sample",
                                               file=self.stream, position=len(self._bars), leave=True,
                                               dynamic_ncols=True)
            bar.total = max(bar.total or 0, total)
            bar.update(done - bar.n)
            return
        now = time.perf_counter()
        if label not in self._started:
            self._started[label] = now  # the rate counts from the first finished batch (model loading excluded)
            first = done
        else:
            first = None
        start = self._started[label]
        rate = done / (now - start) if first is None and now > start else None
        eta = f", ETA {(total - done) / rate:.0f} s" if rate else ""
        rate_text = f", {rate:.2f} samples/s" if rate else ""
        print(f"{self.prefix}[{label}] {done}/{total}{rate_text}{eta}", file=self.stream, flush=True)

    def close(self) -> None:
        for bar in self._bars.values():
            bar.close()
        self._bars.clear()


def _write_json(path: Path, value: Any) -> None:
    with atomic_write(path) as handle:
        handle.write((json.dumps(value, indent=2, sort_keys=True) + "\n").encode("utf-8"))


def write_index_files(manifest: Manifest, out: layout_mod.SparkleLayout) -> dict[str, int]:
    """Rewrite every theme's train CSV, metadata jsonl and intermediate jsonl files from the manifest (never
    appended); a theme with no finished sample gets no train CSV or metadata file. Returns {theme: rows in its train
    CSV}."""
    samples = manifest.samples()
    themes = sorted({s.theme for s in samples})
    by_stage = {n: {r.sample_id: r for r in manifest.results(n)} for n in STAGE_NUMBERS}
    rows_per_theme = {}
    for theme in themes:
        ids = [s.id for s in samples if s.theme == theme]
        finished = [sid for sid in ids if (r := by_stage[5].get(sid)) is not None and r.status == "done"]
        rows, metadata = [], []
        for sid in finished:
            edit = by_stage[2][sid].record
            rows.append(out.train_row(theme, sid, edit["prompt"]))
            metadata.append(layout_mod.metadata_record(theme, sid, edit["prompt"], edit.get("chosen_keyword"),
                                                       edit.get("original_scene")))
        if rows:
            layout_mod.write_train_csv(out.train_csv(theme), rows)
            layout_mod.write_jsonl(out.train_metadata(theme), metadata)
        else:  # no kept sample: no files (Kiwi-Edit's train.py stops on a header-only CSV)
            out.train_csv(theme).unlink(missing_ok=True)
            out.train_metadata(theme).unlink(missing_ok=True)
        lines: dict[str, list[dict]] = {name: [] for name in layout_mod.RECORD_FILES}
        for number in STAGE_NUMBERS:
            for sid in ids:
                result = by_stage[number].get(sid)
                if result is None or result.status == "failed" or not isinstance(result.record, dict):
                    continue
                for name, line in (result.record.get("jsonl") or {}).items():
                    lines[name].append(line)
        for name, records in lines.items():
            layout_mod.write_jsonl(out.records_file(theme, name), records)
        rows_per_theme[theme] = len(rows)
    return rows_per_theme


def run_summary(manifest: Manifest, stage_names: dict[int, str], wall_seconds: float,
                changed_keys: Iterable[str], problems: Iterable[str], rows_per_theme: dict[str, int]) -> dict:
    """The run summary: per stage counts and time split (over all results in the manifest, this run and earlier)."""
    stages = {}
    for number in STAGE_NUMBERS:
        results = manifest.results(number)
        if not results and number not in stage_names:
            continue
        counts = {"kept": 0, "rejected": 0, "failed": 0}
        times = dict.fromkeys(TIME_KEYS, 0.0)
        total = 0.0
        for r in results:
            counts["kept" if r.status == "done" else r.status] += 1
            total += r.seconds or 0.0
            for key in TIME_KEYS:
                times[key] += float((r.timing or {}).get(key, 0.0))
        times = {k: round(v, 3) for k, v in times.items()}
        times["other"] = round(max(0.0, total - times["model"] - times["kernel"] - times["io"]), 3)
        stages[str(number)] = {"name": stage_names.get(number, f"stage{number}"), **counts,
                               "seconds": round(total + times["model_load"], 3), "time": times}
    return {"samples": len(manifest.samples()), "stages": stages, "train_rows": rows_per_theme,
            "wall_seconds": round(wall_seconds, 3), "config_changed": list(changed_keys),
            "input_problems": list(problems)}


def run_pipeline(input: str | Path, out: str | Path, config: PipelineConfig, models: str | Path = "tiny",
                 stages: Iterable[int] = range(1, 6), limit: int | None = None,
                 log: Callable[[str], None] | None = None, progress: Callable[[str, int, int], None] | None = None,
                 stage_objects: list | None = None, devices: list[str] | None = None, runner: str = "local",
                 ray_address: str | None = None) -> dict:
    """Run the pipeline (module docstring); returns the summary written to out/summary.json.

    devices: workers.parse_devices' list; None or one device this process can use runs here (LocalRunner), else one
    worker process per device on disjoint shards (workers.ShardedRunner; not with stage_objects).
    runner: "local" (the above) or "ray": actor pools on a Ray cluster at ray_address (None: a local instance;
    driver/ray_runner.py), which places work on the cluster's GPUs itself (devices is then ignored).

    Raises ValueError for unusable inputs and models.ModelFolderError for a missing or incomplete model folder,
    both before any sample is processed."""
    from sparkle_fast.models.slots import check_models_dir
    from sparkle_fast.stages import all_stages

    log = log or (lambda message: print(message, file=sys.stderr, flush=True))
    started = time.perf_counter()
    out_layout = layout_mod.SparkleLayout(out)
    chosen = sorted(set(stages))
    if not chosen or any(n not in STAGE_NUMBERS for n in chosen):
        raise ValueError(f"stages must be among 1..5, got {chosen}")
    stage_list = [s for s in (stage_objects or all_stages()) if s.number in chosen]

    inputs = read_inputs(input, config.run.themes, config.run.seed)
    for problem in inputs.problems:
        log(f"input: {problem}")
    samples = inputs.samples if limit is None else inputs.samples[:max(0, limit)]
    only = None if limit is None else {s.id for s in samples}  # --limit N: run these N, leave the others waiting

    # Wan's VAE (8x) and patching (2x) need frames in multiples of 16: a clip size that stages 3 and 5 cannot
    # generate stops the run now, not at stage 3 after hours of stages 1-2.
    width, height = config.clip.width, config.clip.height
    if any(s.number in (3, 5) for s in stage_list) and (width % 16 or height % 16):
        raise ValueError(f"clip size {width}x{height}: stages 3 and 5 (Wan2.2) generate in multiples of 16 pixels; "
                         f"use {width // 16 * 16}x{height // 16 * 16} (--set clip.width=... clip.height=...) or run "
                         "--stages 1-2 / 4 alone")

    # Models first: a missing folder must stop the run before anything is written.
    if not (isinstance(models, str) and models == "tiny"):
        slots = sorted({slot for s in stage_list for slot in s.model_slots})
        if config.edges.extractor == "lineart" and any(s.number == 5 for s in stage_list):
            slots.append("lineart")  # stage 5's optional edge extractor, needed by this config
        check_models_dir(models, slots)
        from sparkle_fast.models.check import check_run_settings

        check_run_settings(models, config, slots)  # e.g. [i2v] mode "distilled" without the LightX2V LoRAs

    with Manifest(out_layout.root / "manifest.sqlite") as manifest:
        added = manifest.add_samples(samples)
        log(f"{len(samples)} input sample(s), {added} new; {len(manifest.samples())} in the manifest")
        changed = manifest.record_config(config.to_dict())
        if changed:
            log("config changed since the last run: " + ", ".join(changed))
        _write_json(out_layout.root / "config.json", config.to_dict())
        if runner not in ("local", "ray"):
            raise ValueError(f"--runner {runner!r}: expected local or ray")
        if runner == "ray":
            from .ray_runner import RayRunner

            log(f"Ray runner: {ray_address or 'a local Ray instance'}; pools in {out_layout.root / 'logs'}")
            runner_object = RayRunner.from_config(config, address=ray_address, progress=progress or Progress(),
                                                  only=only, log=log)
        elif devices is not None and needs_workers(devices):
            if stage_objects is not None:
                raise ValueError("stage_objects cannot cross into worker processes; run them on one device")
            log(f"{len(devices)} worker(s): {', '.join(devices)}; logs in {out_layout.root / 'logs'}")
            runner_object = ShardedRunner(devices, models, chosen, only=only)
        else:
            runner_object = LocalRunner(config.run.chunk_size, config.run.max_attempts, progress or Progress(),
                                        only=only)
        try:
            runner_object.run(stage_list, manifest, out_layout, config, models)
        finally:
            if progress is None and isinstance(getattr(runner_object, "progress", None), Progress):
                runner_object.progress.close()
        try:
            rows = write_index_files(manifest, out_layout)
            summary = run_summary(manifest, {s.number: s.name for s in stage_list}, time.perf_counter() - started,
                                  changed, inputs.problems, rows)
            if callable(getattr(runner_object, "summary", None)):  # per step and slot figures of this run
                summary.update(runner_object.summary())
            _write_json(out_layout.root / "summary.json", summary)
        except OSError as exc:
            if is_disk_full(exc):
                raise disk_full_error(exc, out_layout.root, "writing the index files") from exc
            raise
    return summary
