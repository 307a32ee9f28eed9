"""`sparkle-fast eval`: score result videos on a benchmark in Sparkle-Bench's format, with a VLM judge and with
judge-free metrics, and lay a model's or a run's outputs out the way the benchmark's script reads them.

    BENCH/{edit_type}_bench.csv, {edit_type}_metadata.jsonl, source_videos/{edit_type}/{id}.mp4   (export-bench)
    MASKS/{edit_type}/{id}.npz, {id}_control.mp4                       (export-bench; default BENCH/masks)
    RESULTS/{edit_type}/{subtheme}---{scene_key}/{id}_edited.mp4       the inference layout (Sparkle's README)

writes, per results folder and edit type (README lines 449-525 for the first):
    RESULTS/{edit_type}_{judge}_sparkle_score.jsonl   {"id", "prompt", "edit_type", "subtheme", "scene", "scores",
                                                      "result"}: six scores in Sparkle's order, 2-6 capped at 1
    RESULTS/{edit_type}_{judge}_openve_score.jsonl    the same record with OpenVE-Bench's three scores (--protocol
                                                      openve; the file name is ours)
    RESULTS/{edit_type}_{judge}_{protocol}_failures.jsonl  {"id", "reason", "attempts", "answers"}: samples not scored
                                                      (no result video, unusable answers after the retries, ...)
    RESULTS/{edit_type}_metrics.jsonl                 {"id", "fg_psnr", "fg_ssim", "bg_motion", "flicker",
                                                      "edge_f1", "notes"} (sparkle_fast.metrics)
    RESULTS/eval_{judge}_{protocol}.json               means per edit type, subtheme and dimension, and the macro mean
A rerun skips every sample already in a score or metrics file (failures are tried again). Files are rewritten whole
and atomically after every sample, so a killed evaluation loses at most the sample in flight.
"""

from __future__ import annotations

import csv
import json
import os
import shutil
import sys
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

from sparkle_fast import layout as layout_mod
from sparkle_fast._io import atomic_write

from .export_bench import BENCH_THEMES

SEPARATOR = "---"


class BenchError(ValueError):
    """A benchmark folder that cannot be read; the message names the file and what to do."""


@dataclass(frozen=True)
class BenchSample:
    id: str
    edit_type: str
    prompt: str
    subtheme: str
    scene: str
    source_video: Path

    @property
    def scene_key(self) -> str:
        return self.scene.replace(" ", "_")

    def result_path(self, results: str | os.PathLike) -> Path:
        """{results}/{edit_type}/{subtheme}---{scene_key}/{id}_edited.mp4 (Sparkle's inference layout)."""
        return Path(results) / self.edit_type / f"{self.subtheme}{SEPARATOR}{self.scene_key}" / f"{self.id}_edited.mp4"


def read_bench(bench: str | os.PathLike, edit_types: Iterable[str] | None = None) -> list[BenchSample]:
    """The samples of a benchmark folder, per edit type in file order. chosen_keyword ("subtheme: scene") comes from
    {edit_type}_metadata.jsonl, the source video from {edit_type}_bench.csv's original_video."""
    bench = Path(bench)
    wanted = list(edit_types) if edit_types else [t for t in BENCH_THEMES if (bench / f"{t}_bench.csv").is_file()]
    if not wanted:
        raise BenchError(f"{bench}: no {{edit_type}}_bench.csv for any of {', '.join(BENCH_THEMES)}; is this a "
                         "Sparkle-Bench folder (sparkle-fast export-bench)?")
    samples = []
    for edit_type in wanted:
        csv_path, meta_path = bench / f"{edit_type}_bench.csv", bench / f"{edit_type}_metadata.jsonl"
        if not csv_path.is_file() or not meta_path.is_file():
            raise BenchError(f"{bench}: edit type {edit_type!r} needs {csv_path.name} and {meta_path.name}")
        with open(csv_path, newline="", encoding="utf-8") as handle:
            videos = {Path(row["original_video"]).stem: bench / row["original_video"] for row in csv.DictReader(handle)
                      if row.get("original_video")}
        for number, record in enumerate(layout_mod.read_jsonl(meta_path), start=1):
            keyword = (record.get("metadata") or {}).get("chosen_keyword") or ""
            subtheme, sep, scene = keyword.partition(": ")
            if not sep or not record.get("id"):
                raise BenchError(f"{meta_path}:{number}: needs an id and metadata.chosen_keyword \"subtheme: scene\", "
                                 f"got {keyword!r}")
            source = videos.get(record["id"])
            if source is None:
                raise BenchError(f"{csv_path}: no original_video for {record['id']} (listed in {meta_path.name})")
            samples.append(BenchSample(record["id"], edit_type, record.get("prompt", ""), subtheme, scene, source))
    return samples


def _copy(src: Path, dst: Path) -> None:
    with open(src, "rb") as source, atomic_write(dst) as target:
        shutil.copyfileobj(source, target)


def layout_results(samples: list[BenchSample], source: str | os.PathLike, results: str | os.PathLike) -> dict:
    """Copy each sample's output video from `source` into `results` in the inference layout; returns
    {"placed": n, "missing": [ids]}. source: a `sparkle-fast run` output folder ({theme}/edited_video/{id}.mp4,
    written for the samples stage 5 kept) or any folder holding {id}.mp4 or {id}_edited.mp4 files (searched
    recursively)."""
    source = Path(source)
    if not source.is_dir():
        raise BenchError(f"--layout-from {source}: no such folder")
    found: dict[str, Path] = {}
    if (source / "manifest.sqlite").is_file():  # a run: only its final videos (not sources, backgrounds, controls)
        for sample in samples:
            video = layout_mod.SparkleLayout(source).artifact(sample.edit_type, "edited_video", sample.id)
            if video.is_file():
                found[sample.id] = video
    else:  # {id}_edited.mp4 wins over {id}.mp4
        for path in sorted(source.rglob("*.mp4"), key=lambda p: (not p.stem.endswith("_edited"), str(p))):
            found.setdefault(path.stem.removesuffix("_edited"), path)
    placed, missing = 0, []
    for sample in samples:
        video = found.get(sample.id)
        if video is None or video.resolve() == sample.source_video.resolve():
            missing.append(sample.id)
            continue
        target = sample.result_path(results)
        if video.resolve() != target.resolve():
            _copy(video, target)
        placed += 1
    return {"placed": placed, "missing": missing}


def score_file(results: Path, edit_type: str, judge: str, protocol: str) -> Path:
    return results / f"{edit_type}_{judge}_{protocol}_score.jsonl"


def failures_file(results: Path, edit_type: str, judge: str, protocol: str) -> Path:
    return results / f"{edit_type}_{judge}_{protocol}_failures.jsonl"


def metrics_file(results: Path, edit_type: str) -> Path:
    return results / f"{edit_type}_metrics.jsonl"


def _read(path: Path) -> list[dict]:
    return layout_mod.read_jsonl(path) if path.is_file() else []


def _ordered(records: dict[str, dict], samples: list[BenchSample]) -> list[dict]:
    return [records[s.id] for s in samples if s.id in records]


def run_metrics(samples: list[BenchSample], results: Path, masks: Path | None, log: Callable[[str], None],
                options=None) -> int:
    """{edit_type}_metrics.jsonl for every sample with a result video not yet measured; returns how many were
    computed now."""
    from sparkle_fast.metrics import metrics_for_files

    done = 0
    for edit_type in dict.fromkeys(s.edit_type for s in samples):
        group = [s for s in samples if s.edit_type == edit_type]
        path = metrics_file(results, edit_type)
        records = {r["id"]: r for r in _read(path)}
        for sample in group:
            video = sample.result_path(results)
            if sample.id in records or not video.is_file():
                continue
            mask = control = None
            if masks is not None:
                mask = masks / edit_type / f"{sample.id}.npz"
                control = masks / edit_type / f"{sample.id}_control.mp4"
            record = metrics_for_files(sample.id, sample.source_video, video,
                                       mask if mask is not None and mask.is_file() else None,
                                       control if control is not None and control.is_file() else None, options)
            if masks is not None and not (masks / edit_type / f"{sample.id}.npz").is_file():
                record["notes"].append(f"no mask file {masks / edit_type / f'{sample.id}.npz'}")
            records[sample.id] = record
            layout_mod.write_jsonl(path, _ordered(records, group))
            done += 1
        log(f"metrics {results.name}/{edit_type}: {len(records)} of {len(group)} samples measured")
    return done


def run_judge(samples: list[BenchSample], results: Path, judge, log: Callable[[str], None]) -> dict:
    """Score every sample of `results` not yet in its score file; returns {"scored": n, "failed": m} for this call."""
    protocol = judge.protocol
    counts = {"scored": 0, "failed": 0}
    for edit_type in dict.fromkeys(s.edit_type for s in samples):
        group = [s for s in samples if s.edit_type == edit_type]
        scores_path = score_file(results, edit_type, judge.name, protocol.name)
        fails_path = failures_file(results, edit_type, judge.name, protocol.name)
        scored = {r["id"]: r for r in _read(scores_path)}
        failed: dict[str, dict] = {}
        for sample in group:
            if sample.id in scored:
                continue
            video = sample.result_path(results)
            if not video.is_file():
                failed[sample.id] = {"id": sample.id, "reason": f"no result video at {video}", "attempts": 0,
                                     "answers": []}
            else:
                verdict = judge.judge(sample.prompt, sample.source_video, video)
                if verdict.ok:
                    from .eval_judge import result_text

                    scored[sample.id] = {"id": sample.id, "prompt": sample.prompt, "edit_type": edit_type,
                                         "subtheme": sample.subtheme, "scene": sample.scene,
                                         "scores": verdict.scores,
                                         "result": result_text(protocol, verdict.reasoning, verdict.raw)}
                    counts["scored"] += 1
                else:
                    failed[sample.id] = {"id": sample.id, "reason": verdict.reason, "attempts": verdict.attempts,
                                         "answers": verdict.answers}
            layout_mod.write_jsonl(scores_path, _ordered(scored, group))
            layout_mod.write_jsonl(fails_path, _ordered(failed, group))
        counts["failed"] += len(failed)
        log(f"judge {judge.name} ({protocol.name}) {results.name}/{edit_type}: {len(scored)} of {len(group)} scored, "
            f"{len(failed)} failed")
    return counts


def _unscored(samples: list[BenchSample], results: Path, judge: str, protocol: str) -> bool:
    """Whether some sample of `results` has no score yet (a failure is tried again)."""
    for edit_type in dict.fromkeys(s.edit_type for s in samples):
        scored = {r["id"] for r in _read(score_file(results, edit_type, judge, protocol))}
        if any(s.id not in scored for s in samples if s.edit_type == edit_type):
            return True
    return False


def _mean(values: list[float]) -> float | None:
    values = [v for v in values if v is not None]
    return round(sum(values) / len(values), 4) if values else None


def summarize(samples: list[BenchSample], results: str | os.PathLike, judge: str | None,
              protocol: str = "sparkle") -> dict:
    """Means of every dimension (and their mean, "overall") and of every metric, per edit type, per subtheme and
    macro-averaged over edit types, plus score histograms; read from the files of `results`."""
    from sparkle_fast.metrics import METRIC_KEYS

    from .eval_judge import load_protocol

    results = Path(results)
    dims = load_protocol(protocol).dimensions
    groups: dict[str, dict] = {}
    for edit_type in dict.fromkeys(s.edit_type for s in samples):
        group = [s for s in samples if s.edit_type == edit_type]
        by_id = {s.id: s for s in group}
        scores = _read(score_file(results, edit_type, judge, protocol)) if judge else []
        fails = _read(failures_file(results, edit_type, judge, protocol)) if judge else []
        metrics = {r["id"]: r for r in _read(metrics_file(results, edit_type))}

        def block(ids: set[str], n_samples: int) -> dict:
            rows = [r for r in scores if r["id"] in ids]
            out = {"samples": n_samples, "scored": len(rows),
                   "failed": sum(1 for f in fails if f["id"] in ids),
                   "dimensions": {d: _mean([r["scores"][i] for r in rows]) for i, d in enumerate(dims)},
                   "histogram": {d: [sum(1 for r in rows if r["scores"][i] == v) for v in range(1, 6)]
                                 for i, d in enumerate(dims)},
                   "metrics": {k: _mean([m.get(k) for i, m in metrics.items() if i in ids]) for k in METRIC_KEYS},
                   "measured": sum(1 for i in metrics if i in ids)}
            out["overall"] = _mean([v for r in rows for v in r["scores"]])
            return out

        entry = block(set(by_id), len(group))
        entry["subthemes"] = {sub: block({s.id for s in group if s.subtheme == sub},
                                         sum(1 for s in group if s.subtheme == sub))
                              for sub in dict.fromkeys(s.subtheme for s in group)}
        groups[edit_type] = entry
    macro = {"dimensions": {d: _mean([g["dimensions"][d] for g in groups.values()]) for d in dims},
             "overall": _mean([g["overall"] for g in groups.values()]),
             "metrics": {k: _mean([g["metrics"][k] for g in groups.values()]) for k in METRIC_KEYS},
             "samples": sum(g["samples"] for g in groups.values()),
             "scored": sum(g["scored"] for g in groups.values()),
             "failed": sum(g["failed"] for g in groups.values()),
             "measured": sum(g["measured"] for g in groups.values())}
    return {"results": str(results), "judge": judge, "protocol": protocol, "dimensions": list(dims),
            "edit_types": groups, "macro": macro}


def evaluate(bench: str | os.PathLike, results: list[str | os.PathLike], judge: str | None, *,
             protocol: str = "sparkle", masks: str | os.PathLike | None = None,
             edit_types: list[str] | None = None, layout_from: list[str | os.PathLike] | None = None,
             metrics: bool = True, judge_model: str | None = None, api_key_env: str = "OPENAI_API_KEY",
             judge_frames: int = 8, log: Callable[[str], None] | None = None) -> list[dict]:
    """The whole evaluation (module docstring); returns one summary per results folder (also written to
    RESULTS/eval_{judge}_{protocol}.json). judge None: metrics only."""
    from .eval_judge import build_judge, judge_name, load_protocol

    log = log or (lambda message: print(message, file=sys.stderr, flush=True))
    load_protocol(protocol)  # a bad --protocol fails before any work
    samples = read_bench(bench, edit_types)
    masks_dir = Path(masks) if masks is not None else Path(bench) / "masks"
    if not masks_dir.is_dir():
        if masks is not None:
            raise BenchError(f"--masks {masks_dir}: no such folder (export-bench --masks writes one)")
        log(f"no {masks_dir}: the mask-based metrics will be null")
        masks_dir = None
    if layout_from and len(layout_from) != len(results):
        raise ValueError(f"--layout-from is given {len(layout_from)} time(s) for {len(results)} --results folder(s); "
                         "give one per results folder, in the same order")
    result_dirs = [Path(r) for r in results]
    for source, target in zip(layout_from or [], result_dirs, strict=False):
        placed = layout_results(samples, source, target)
        log(f"laid out {placed['placed']} of {len(samples)} outputs of {source} into {target}"
            + (f"; missing: {', '.join(placed['missing'])}" if placed["missing"] else ""))
    for target in result_dirs:
        target.mkdir(parents=True, exist_ok=True)
        if metrics:
            run_metrics(samples, target, masks_dir, log)
    name = None
    if judge is not None:
        name = judge_name(judge, judge_model)
        pending = [t for t in result_dirs if _unscored(samples, t, name, protocol)]
        if pending:  # the model is loaded only when something is left to score (a finished rerun loads nothing)
            vlm = build_judge(judge, load_protocol(protocol), model=judge_model, api_key_env=api_key_env,
                              frames=judge_frames)
            try:
                for target in pending:
                    run_judge(samples, target, vlm, log)
            finally:
                vlm.release()
    summaries = []
    for target in result_dirs:
        summary = summarize(samples, target, name, protocol)
        with atomic_write(target / f"eval_{name or 'metrics'}_{protocol}.json") as handle:
            handle.write((json.dumps(summary, indent=2) + "\n").encode("utf-8"))
        summaries.append(summary)
    return summaries
