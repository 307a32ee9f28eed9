"""`sparkle-fast package OUT --to RELEASE`: a run's kept samples as the Sparkle dataset is published.

    summary = package_release("out/", "release/", shard_bytes=5 * 10**9, preview=100)

The release (names and internal paths from Sparkle's release README; what is marked "ours" is not in it):

    RELEASE/
      README.md                                   dataset card (ours: counts, rejections, config, models, masks)
      SHA256SUMS                                  `sha256sum -c` format, every other file (ours)
      release_state.json                          the shard ledger: which sample is in which shard (ours)
      rejected.jsonl                              samples not kept: stage, reason, score, their jsonl lines (ours)
      prompts/{theme}_train.csv, prompts/{theme}_train_metadata.jsonl
      {theme}/{source_video|edited_video}/{id}.mp4                    preview: the first N kept samples per theme
      {theme}_{source_video|edited_video}_partXX.tar                  members {theme}/{kind}/{id}.mp4 (all kept)
      intermediate_data/{theme}/{subdir}/{id}.{png|mp4|npz}           preview of the six intermediate folders
      intermediate_data/{theme}/{five record files}.jsonl             kept samples' lines only
      intermediate_data/{theme}_{subdir}_partXX.tar                   members {theme}/{subdir}/{id}.{ext}
    --format webdataset replaces the two {theme}_{source_video|edited_video} shard series by (ours)
      webdataset/{theme}_partXX.tar               members {id}.source_video.mp4, {id}.edited_video.mp4,
                                                  {id}.source_video_mask.npz, {id}.json (prompt + metadata)

Only samples whose stage 5 is done are released; a theme without one has no CSV, no metadata file, no shards.

Shards: samples in id order, filled greedily up to --shard-size (a shard holds at least one sample). A full shard is
finished and never rewritten; the last shard of a series may be open (under the size) and is rewritten, with the same
part number, when more samples are kept. The ledger records every shard's samples, bytes and SHA-256; packaging again
adds new samples to the open shard and new parts, and refuses a release whose released samples are no longer kept.

Writes: every file through _io.atomic_write (temporary file + rename), the ledger after each shard, so a packaging
killed at any point leaves whole files only (plus temporary files, removed by the next packaging) and the same command
finishes the same release. Tar members are sorted, with fixed mtime, uid/gid 0, no owner names and mode 0644, so the
same samples give byte-identical shards.
"""

from __future__ import annotations

import csv
import filecmp
import hashlib
import io
import json
import os
import re
import shutil
import tarfile
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace

from sparkle_fast import layout as layout_mod
from sparkle_fast import layout_check as names
from sparkle_fast._io import atomic_write

from .manifest import Manifest

DEFAULT_SHARD_BYTES = 5 * 10**9  # Sparkle's "~5GB" shards
DEFAULT_PREVIEW = 100  # Sparkle previews the first 100 samples per theme
STATE_VERSION = 1
TAR_MTIME = 1_767_225_600  # 2026-01-01T00:00:00Z: a fixed member mtime, so shards do not depend on file dates
STAGE_NAMES = {1: "collect", 2: "edit", 3: "background", 4: "bait", 5: "synthesize"}
_SIZE = re.compile(r"(?i)^\s*(\d+(?:\.\d+)?)\s*([kmgt]?i?b?)?\s*$")
_UNITS = {"": 1, "b": 1, "k": 10**3, "kb": 10**3, "m": 10**6, "mb": 10**6, "g": 10**9, "gb": 10**9, "t": 10**12,
          "tb": 10**12, "kib": 2**10, "mib": 2**20, "gib": 2**30, "tib": 2**40, "ki": 2**10, "mi": 2**20,
          "gi": 2**30, "ti": 2**40}


class PackageError(RuntimeError):
    """The run cannot be packaged as asked; the message names the file or option and what to do."""


def parse_size(text: str) -> int:
    """"5GB" -> 5_000_000_000, "300KiB" -> 307200, "12345" -> 12345 (decimal units, binary with an i)."""
    match = _SIZE.match(str(text))
    unit = (match.group(2) or "").lower() if match else ""
    if not match or unit not in _UNITS or float(match.group(1)) * _UNITS[unit] < 1:
        raise ValueError(f"--shard-size {text!r}: expected a positive size like 5GB, 500MB, 300KiB or 12345")
    return int(float(match.group(1)) * _UNITS[unit])


# --- the run ---------------------------------------------------------------------------------------------------

@dataclass
class RunView:
    """What the packager reads from a run: kept ids per theme (sorted), stage-2 edit records, jsonl lines per
    sample, the rejected/failed/pending samples, the run's config."""

    kept: dict[str, list[str]]
    edits: dict[str, dict]
    lines: dict[str, dict[str, list[dict]]]  # sample -> record file -> lines (stage order)
    rejected: list[dict]
    pending: int
    config: dict
    themes: dict[str, str]


def read_run(out: Path) -> RunView:
    manifest_path = out / "manifest.sqlite"
    if not manifest_path.is_file():
        raise PackageError(f"{manifest_path}: no manifest: run `sparkle-fast run` into {out} first")
    with Manifest(manifest_path) as manifest:
        samples = manifest.samples()
        by_stage = {n: {r.sample_id: r for r in manifest.results(n)} for n in STAGE_NAMES}
        config = manifest.stored_config()
    config_file = out / "config.json"
    if config is None and config_file.is_file():
        config = json.loads(config_file.read_text(encoding="utf-8"))
    max_attempts = int(((config or {}).get("run") or {}).get("max_attempts", 2))
    kept: dict[str, list[str]] = {}
    edits, lines, rejected, pending = {}, {}, [], 0
    for sample in samples:
        results = [(n, by_stage[n].get(sample.id)) for n in STAGE_NAMES]
        sample_lines: dict[str, list[dict]] = {}
        for _, result in results:
            if result is not None and result.status != "failed" and isinstance(result.record, dict):
                for name, line in (result.record.get("jsonl") or {}).items():
                    sample_lines.setdefault(name, []).append(line)
        lines[sample.id] = sample_lines
        edit = by_stage[2].get(sample.id)
        if edit is not None and isinstance(edit.record, dict):
            edits[sample.id] = edit.record
        final = by_stage[5].get(sample.id)
        if final is not None and final.status == "done":
            kept.setdefault(sample.theme, []).append(sample.id)
            continue
        # A failed stage that has retries left will run again: the sample is still in progress, not rejected.
        stopped = next(((n, r) for n, r in results if r is not None and r.status != "done"
                        and (r.status == "rejected" or r.attempts >= max_attempts)), None)
        if stopped is None:
            pending += 1  # still on its way through the stages
            continue
        number, result = stopped
        rejected.append({"id": sample.id, "theme": sample.theme, "stage": number, "stage_name": STAGE_NAMES[number],
                         "status": result.status, "reason": result.reason, "score": result.score,
                         "prompt": (edits.get(sample.id) or {}).get("prompt") or sample.prompt,
                         # the input's file name only: a path on the run's machine means nothing to a downloader
                         "src_video": Path(sample.src_video).name, "records": sample_lines})
    return RunView({t: sorted(ids) for t, ids in kept.items()}, edits, lines, rejected, pending, config or {},
                   {s.id: s.theme for s in samples})


# --- writing ---------------------------------------------------------------------------------------------------

class _HashingWriter:
    """A write-only file object that hashes and counts what passes through (tarfile needs write and tell)."""

    def __init__(self, target):
        self.target, self.sha, self.size = target, hashlib.sha256(), 0

    def write(self, data) -> int:
        self.target.write(data)
        self.sha.update(data)
        self.size += len(data)
        return len(data)

    def tell(self) -> int:
        return self.size


def _tar_member(tar: tarfile.TarFile, name: str, source: Path | bytes) -> None:
    """One regular-file member with fixed metadata (mode 0644, uid/gid 0, no owner names, TAR_MTIME)."""
    info = tarfile.TarInfo(name)
    info.mtime, info.mode, info.uid, info.gid, info.uname, info.gname = TAR_MTIME, 0o644, 0, 0, "", ""
    if isinstance(source, bytes):
        info.size = len(source)
        tar.addfile(info, io.BytesIO(source))
    else:
        info.size = source.stat().st_size
        with open(source, "rb") as handle:
            tar.addfile(info, handle)


def write_tar(path: Path, members: Iterable[tuple[str, Path | bytes]]) -> tuple[int, str]:
    """Write a deterministic ustar archive atomically: members sorted by name. Returns (bytes, sha256 hex)."""
    with atomic_write(path) as handle:
        hashing = _HashingWriter(handle)
        with tarfile.open(fileobj=hashing, mode="w", format=tarfile.USTAR_FORMAT) as tar:
            for name, source in sorted(members, key=lambda m: m[0]):
                _tar_member(tar, name, source)
    return hashing.size, hashing.sha.hexdigest()


def _tar_bytes(sizes: Iterable[int]) -> int:
    """Bytes a member list takes in a tar: a 512-byte header each, data padded to 512."""
    return sum(512 + (size + 511) // 512 * 512 for size in sizes)


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _copy(src: Path, dst: Path) -> None:
    if dst.is_file() and dst.stat().st_size == src.stat().st_size and filecmp.cmp(src, dst, shallow=False):
        return  # already in place, same bytes: a rerun rewrites nothing
    with open(src, "rb") as source, atomic_write(dst) as target:
        shutil.copyfileobj(source, target)


def _write_bytes(path: Path, data: bytes) -> None:
    if path.is_file() and path.read_bytes() == data:
        return
    with atomic_write(path) as handle:
        handle.write(data)


def save_state(release: Path, state: dict) -> None:
    _write_bytes(release / names.RELEASE_STATE, (json.dumps(state, indent=1, sort_keys=True) + "\n").encode())


def load_state(release: Path) -> dict | None:
    path = release / names.RELEASE_STATE
    if not path.exists():
        return None
    try:
        state = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        raise PackageError(f"{path}: not a readable release state ({exc}); package into a new folder") from exc
    if not isinstance(state, dict) or state.get("version") != STATE_VERSION:
        raise PackageError(f"{path}: release state version {state.get('version') if isinstance(state, dict) else '?'}"
                           f", this sparkle-fast writes {STATE_VERSION}; package into a new folder")
    return state


def remove_temporaries(release: Path) -> list[Path]:
    """Temporary files a killed packaging left (atomic_write's .{name}.XXXX.tmp); removed before packaging."""
    stale = [p for p in release.rglob(".*.tmp") if p.is_file()]
    for path in stale:
        path.unlink()
    return stale


# --- the plan --------------------------------------------------------------------------------------------------

def _series(theme: str, fmt: str) -> list[str]:
    main = ["webdataset"] if fmt == "webdataset" else list(layout_mod.THEME_ARTIFACTS)
    return main + list(layout_mod.INTERMEDIATE_ARTIFACTS)


def _sample_members(run_layout: layout_mod.SparkleLayout, view: RunView, theme: str, kind: str,
                    sample: str) -> list[tuple[str, Path | bytes]]:
    """The (member name, source) pairs one sample contributes to a shard of series `kind`."""
    if kind != "webdataset":
        return [(names.member_name(theme, kind, sample), run_layout.artifact(theme, kind, sample))]
    edit = view.edits[sample]
    record = layout_mod.metadata_record(theme, sample, edit["prompt"], edit.get("chosen_keyword"),
                                        edit.get("original_scene"))
    record.update(run_layout.train_row(theme, sample, edit["prompt"]))
    members: list[tuple[str, Path | bytes]] = [
        (names.webdataset_member("json", sample), (json.dumps(record, ensure_ascii=False, sort_keys=True)
                                                   + "\n").encode("utf-8"))]
    for kind_ in ("source_video", "edited_video", "source_video_mask"):
        members.append((names.webdataset_member(kind_, sample), run_layout.artifact(theme, kind_, sample)))
    return members


def _member_bytes(members: list[tuple[str, Path | bytes]]) -> int:
    return _tar_bytes(len(s) if isinstance(s, bytes) else s.stat().st_size for _, s in members)


def _check_artifacts(run_layout: layout_mod.SparkleLayout, view: RunView) -> None:
    missing = [run_layout.artifact(theme, kind, sample) for theme, ids in view.kept.items() for sample in ids
               for kind in [*layout_mod.THEME_ARTIFACTS, *layout_mod.INTERMEDIATE_ARTIFACTS]
               if not run_layout.artifact(theme, kind, sample).is_file()]
    no_edit = [sample for ids in view.kept.values() for sample in ids if "prompt" not in view.edits.get(sample, {})]
    if missing or no_edit:
        shown = [str(p) for p in missing[:5]] + [f"{s} (no stage-2 prompt in the manifest)" for s in no_edit[:5]]
        raise PackageError(f"{len(missing) + len(no_edit)} kept artifact(s) missing from the run folder, e.g. "
                           f"{'; '.join(shown)}; rerun `sparkle-fast run` on it to redo them, then package again")


def _fill(ids: list[str], size_of: Callable[[str], int], limit: int) -> list[list[str]]:
    """Greedy, in order: a shard takes samples until the next would pass `limit` (end-of-archive included)."""
    shards, current, used = [], [], 1024
    for sample in ids:
        size = size_of(sample)
        if current and used + size > limit:
            shards.append(current)
            current, used = [], 1024
        current.append(sample)
        used += size
    if current:
        shards.append(current)
    return shards


# --- the release -----------------------------------------------------------------------------------------------

def package_release(out: str | os.PathLike, release: str | os.PathLike, *, shard_bytes: int | None = None,
                    preview: int | None = None, fmt: str | None = None, models: str | os.PathLike | None = None,
                    log: Callable[[str], None] = lambda message: None) -> dict:
    """Package the run in `out` into `release` (module docstring). None for shard_bytes / preview / fmt: the value
    the release was packaged with, else the default. Returns a summary: samples per theme, shards written, kept."""
    out, release = Path(out), Path(release)
    if release.resolve() == out.resolve() or out.resolve() in release.resolve().parents:
        raise PackageError(f"--to {release}: the release must be a folder outside the run folder {out}")
    state = load_state(release)
    previous = state or {}
    fmt = fmt or previous.get("format", "tar")
    if fmt not in names.RELEASE_FORMATS:
        raise PackageError(f"--format {fmt!r}: expected one of {', '.join(names.RELEASE_FORMATS)}")
    if state and state["format"] != fmt:
        raise PackageError(f"{release / names.RELEASE_STATE}: this release was packaged as {state['format']!r}, not "
                           f"{fmt!r}; package into a new folder")
    shard_bytes = int(shard_bytes or previous.get("shard_bytes", DEFAULT_SHARD_BYTES))
    preview = int(preview if preview is not None else previous.get("preview", DEFAULT_PREVIEW))
    if shard_bytes < 1 or preview < 0:
        raise PackageError(f"--shard-size must be positive and --preview >= 0, got {shard_bytes} and {preview}")

    view = read_run(out)
    if not view.kept:
        raise PackageError(f"{out}: nothing to release: no sample has finished stage 5 ({len(view.rejected)} not "
                           f"kept, {view.pending} in progress); run or resume `sparkle-fast run` first")
    run_layout = layout_mod.SparkleLayout(out)
    _check_artifacts(run_layout, view)
    state = state or {"version": STATE_VERSION, "format": fmt, "shards": {}}
    state.update(shard_bytes=shard_bytes, preview=preview, config=view.config)
    kept_ids = {sample for ids in view.kept.values() for sample in ids}
    gone = sorted({s for entry in state["shards"].values() for s in entry["samples"]} - kept_ids)
    if gone:
        raise PackageError(f"{release / names.RELEASE_STATE}: {len(gone)} released sample(s) are no longer kept by "
                           f"the run in {out} (e.g. {gone[0]}); finished shards are never rewritten: package into "
                           f"a new folder")
    release.mkdir(parents=True, exist_ok=True)
    for path in remove_temporaries(release):
        log(f"removed a temporary file left by an interrupted packaging: {path}")

    written = []
    for theme, ids in sorted(view.kept.items()):
        for kind in _series(theme, fmt):
            written += _package_series(release, state, run_layout, view, theme, kind, ids, shard_bytes, log)
    _write_index(release, run_layout, view)
    _write_previews(release, run_layout, view, preview)
    _write_bytes(release / names.REJECTED, "".join(json.dumps(r, ensure_ascii=False, sort_keys=True) + "\n"
                                                   for r in view.rejected).encode("utf-8"))
    _write_bytes(release / names.CARD, dataset_card(view, state, models).encode("utf-8"))
    save_state(release, state)
    write_checksums(release, state)
    summary = {"release": str(release), "format": fmt, "kept": {t: len(ids) for t, ids in view.kept.items()},
               "rejected": len(view.rejected), "pending": view.pending, "shards_written": written,
               "shards": len(state["shards"])}
    log(f"packaged {sum(summary['kept'].values())} kept sample(s) into {release}: {len(written)} shard(s) written, "
        f"{len(state['shards'])} in the release")
    return summary


def _package_series(release: Path, state: dict, run_layout: layout_mod.SparkleLayout, view: RunView, theme: str,
                    kind: str, ids: list[str], shard_bytes: int, log: Callable[[str], None]) -> list[str]:
    """Write the shards of one series (theme, kind) that are new or whose open shard gained samples."""
    series = sorted((entry for entry in state["shards"].values()
                     if entry["theme"] == theme and entry["kind"] == kind), key=lambda e: e["part"])
    finished = [e for e in series if e["finished"]]
    placed = {s for e in finished for s in e["samples"]}
    reopened = [s for e in series if not e["finished"] for s in e["samples"]]
    todo = reopened + sorted(set(ids) - placed - set(reopened))
    members_of = {s: _sample_members(run_layout, view, theme, kind, s) for s in todo}
    plan = _fill(todo, lambda s: _member_bytes(members_of[s]), shard_bytes)
    written = []
    for number, samples in enumerate(plan, start=len(finished)):
        name = names.shard_name(theme, kind, number)
        entry = state["shards"].get(name)
        path = release / name
        is_last = number == len(finished) + len(plan) - 1
        if entry and entry["samples"] == samples and path.is_file() and path.stat().st_size == entry["bytes"]:
            # Unchanged since it was written (the open shard of a rerun): not rewritten; finished once others follow.
            if not is_last and not entry["finished"]:
                entry["finished"] = True
                save_state(release, state)
            continue
        size, sha = write_tar(path, [m for s in samples for m in members_of[s]])
        state["shards"][name] = {"theme": theme, "kind": kind, "part": number, "samples": samples, "bytes": size,
                                 "sha256": sha, "finished": not is_last or size >= shard_bytes}
        save_state(release, state)  # after every shard: a kill loses at most the shard being written
        written.append(name)
        log(f"wrote {name}: {len(samples)} sample(s), {size} bytes")
    return written


def _write_index(release: Path, run_layout: layout_mod.SparkleLayout, view: RunView) -> None:
    """prompts/ for themes with kept samples; the five record files with kept samples' lines."""
    rel = layout_mod.SparkleLayout(release)
    for theme in layout_mod.THEMES:
        ids = view.kept.get(theme, [])
        if not ids:
            for path in (rel.train_csv(theme), rel.train_metadata(theme)):
                path.unlink(missing_ok=True)  # a header-only CSV stops Kiwi-Edit's train.py
            continue
        rows = [run_layout.train_row(theme, s, view.edits[s]["prompt"]) for s in ids]
        buffer = io.StringIO()
        writer = csv.DictWriter(buffer, fieldnames=layout_mod.TRAIN_CSV_COLUMNS, lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)
        _write_bytes(rel.train_csv(theme), buffer.getvalue().encode("utf-8"))
        metadata = [layout_mod.metadata_record(theme, s, view.edits[s]["prompt"], view.edits[s].get("chosen_keyword"),
                                               view.edits[s].get("original_scene")) for s in ids]
        _write_bytes(rel.train_metadata(theme), _jsonl(metadata))
        for name in layout_mod.RECORD_FILES:
            lines = [line for s in ids for line in view.lines[s].get(name, [])]
            _write_bytes(rel.records_file(theme, name), _jsonl(lines))


def _jsonl(records: Iterable[dict]) -> bytes:
    return "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records).encode("utf-8")


def _write_previews(release: Path, run_layout: layout_mod.SparkleLayout, view: RunView, preview: int) -> None:
    """The first `preview` kept samples of each theme, uncompressed; stale preview files (a smaller --preview) go."""
    rel = layout_mod.SparkleLayout(release)
    wanted = set()
    for theme, ids in view.kept.items():
        for sample in ids[:preview]:
            for kind in [*layout_mod.THEME_ARTIFACTS, *layout_mod.INTERMEDIATE_ARTIFACTS]:
                target = rel.artifact(theme, kind, sample)
                _copy(run_layout.artifact(theme, kind, sample), target)
                wanted.add(target)
    for theme in layout_mod.THEMES:
        for kind in [*layout_mod.THEME_ARTIFACTS, *layout_mod.INTERMEDIATE_ARTIFACTS]:
            folder = rel.artifact(theme, kind, "x").parent
            for path in folder.glob(f"Sparkle_{theme}_*") if folder.is_dir() else ():
                if path not in wanted:
                    path.unlink()


def write_checksums(release: Path, state: dict) -> None:
    """SHA256SUMS over every file but itself (shards' digests from the ledger, recorded as they were written)."""
    shard_sha = {name: entry["sha256"] for name, entry in state["shards"].items()}
    lines = []
    for path in sorted(p for p in release.rglob("*") if p.is_file()):
        name = path.relative_to(release).as_posix()
        if name == names.CHECKSUMS:
            continue
        lines.append(f"{shard_sha.get(name) or sha256_file(path)}  {name}\n")
    _write_bytes(release / names.CHECKSUMS, "".join(lines).encode("utf-8"))


# --- the dataset card ------------------------------------------------------------------------------------------

def _subtheme_scene(keyword: str | None) -> tuple[str, str]:
    """Sparkle-Bench's rule: chosen_keyword "subtheme: scene" split on ": "."""
    if not keyword:
        return "(none)", "(none)"
    subtheme, _, scene = keyword.partition(": ")
    return subtheme, scene or "(none)"


def _reason_kind(reason: str | None) -> str:
    """A rejection reason with its numbers replaced by #, so reasons of one kind count together."""
    return re.sub(r"-?\d+(?:\.\d+)?", "#", reason or "(no reason)")


def _models_lines(models: str | os.PathLike | None) -> list[str]:
    if models is None:
        return ["The run does not record its model folders; package with `--models DIR` to list them here."]
    folder = Path(models)
    if not folder.is_dir():
        return [f"`{folder}` (not a folder on the packaging machine)"]
    lines = [f"From `{folder.name}/` (one folder per model slot):", ""]
    for slot in sorted(p for p in folder.iterdir() if p.is_dir()):
        facts = []
        for marker in ("model_index.json", "config.json", "fun_control.json"):
            path = slot / marker
            if path.is_file():
                try:
                    data = json.loads(path.read_text(encoding="utf-8"))
                except (OSError, json.JSONDecodeError):
                    continue
                for key in ("_name_or_path", "_class_name", "model_type", "architectures", "_diffusers_version",
                            "transformers_version"):
                    if data.get(key):
                        facts.append(f"{key}={data[key]}")
                break
        lines.append(f"- `{slot.name}/`" + (f": {', '.join(map(str, facts))}" if facts else ""))
    return lines


def dataset_card(view: RunView, state: dict, models: str | os.PathLike | None) -> str:
    """README.md of the release: what is in it, how it was made, how to read it."""
    from sparkle_fast._version import __version__

    from .config import kiwi_crop_note

    kept_total = sum(len(ids) for ids in view.kept.values())
    out = ["# Sparkle-format video background-replacement dataset", "",
           f"Packaged by sparkle-fast {__version__} from one pipeline run, in the layout of the Sparkle release "
           "(https://huggingface.co/datasets/stdKonjac/Sparkle): "
           f"{kept_total} kept source-edited pair(s); {len(view.rejected)} sample(s) not kept "
           f"(listed in `{names.REJECTED}`); {view.pending} still in progress when packaged (not included).", "",
           "## Samples per theme", "", "| theme | kept |", "|---|---|"]
    out += [f"| {theme} | {len(view.kept.get(theme, []))} |" for theme in layout_mod.THEMES if theme in view.kept]
    out += ["", "## Samples per subtheme and scene", "", "| theme | subtheme | scene | kept |", "|---|---|---|---|"]
    for theme, ids in sorted(view.kept.items()):
        counts = Counter(_subtheme_scene(view.edits[s].get("chosen_keyword")) for s in ids)
        by_sub = Counter()
        for (sub, _), n in counts.items():
            by_sub[sub] += n
        for (sub, scene), n in sorted(counts.items()):
            out.append(f"| {theme} | {sub} ({by_sub[sub]}) | {scene} | {n} |")
    out += ["", "## Samples not kept, per stage", "", "| stage | status | count | reasons (numbers as #) |",
            "|---|---|---|---|"]
    per_stage = Counter((r["stage"], r["status"]) for r in view.rejected)
    for (stage, status), n in sorted(per_stage.items()):
        reasons = Counter(_reason_kind(r["reason"]) for r in view.rejected
                          if (r["stage"], r["status"]) == (stage, status))
        text = "; ".join(f"{k.replace('|', '/')} ({c})" for k, c in reasons.most_common(8))
        out.append(f"| {stage} {STAGE_NAMES[stage]} | {status} | {n} | {text} |")
    if not per_stage:
        out.append("| - | - | 0 | |")
    clip = view.config.get("clip") or {}
    note = None
    if isinstance(clip.get("width"), int) and isinstance(clip.get("height"), int):
        note = kiwi_crop_note(SimpleNamespace(clip=SimpleNamespace(width=clip["width"], height=clip["height"])))
    out += ["", "## How it was made", "",
            "The run's resolved configuration (thresholds, clip size and length, seeds):", "", "```json",
            json.dumps(view.config, indent=2, sort_keys=True), "```", ""]
    if note:
        out += [f"Note: {note}", ""]
    out += ["Models:", "", *_models_lines(models), "",
            "## Files", "",
            "- `prompts/{theme}_train.csv` (prompt, src_video, tgt_video, task; Kiwi-Edit's training CSV) and "
            "`prompts/{theme}_train_metadata.jsonl`; a theme without kept samples has neither.",
            f"- `{{theme}}/source_video/`, `{{theme}}/edited_video/`, `intermediate_data/{{theme}}/{{subdir}}/`: the "
            f"first {state['preview']} samples of each theme, uncompressed.",
            "- `intermediate_data/{theme}/*.jsonl`: the five per-stage record files, kept samples only.",
            "- `intermediate_data/{theme}_{subdir}_partXX.tar`: every kept sample's intermediates; extract inside "
            "`intermediate_data/` (members are `{theme}/{subdir}/{id}.{ext}`)."]
    if state["format"] == "webdataset":
        out += ["- `webdataset/{theme}_partXX.tar`: WebDataset shards, one sample per id with "
                "`{id}.source_video.mp4`, `{id}.edited_video.mp4`, `{id}.source_video_mask.npz` and `{id}.json` "
                "(prompt, metadata, the CSV's paths). Stream them without extracting:", "", "```python",
                "import webdataset as wds", "",
                "for sample in wds.WebDataset(sorted(glob.glob('webdataset/location_part*.tar')), shardshuffle=False):",
                "    key, prompt = sample['__key__'], json.loads(sample['json'])['prompt']",
                "    source_mp4, edited_mp4 = sample['source_video.mp4'], sample['edited_video.mp4']  # bytes", "```"]
    else:
        out += ["- `{theme}_{source_video|edited_video}_partXX.tar`: the full corpus; members are "
                "`{theme}/{source_video|edited_video}/{id}.mp4`, so `for f in *.tar; do tar -xf \"$f\"; done` at "
                "the root makes every CSV path resolve."]
    out += [f"- `{names.REJECTED}`: one line per sample not kept: id, theme, stage, status (rejected: a filter's "
            "decision; failed: an error after every retry), reason, score, and the jsonl lines it had.",
            f"- `{names.CHECKSUMS}`: `sha256sum -c {names.CHECKSUMS}` checks every file; `{names.RELEASE_STATE}`: "
            "which samples each shard holds (used to add shards when more samples are kept).", "",
            "## Loading the foreground masks", "",
            "`source_video_mask/{id}.npz` holds `mask` (np.packbits of the flattened bool (T, H, W) mask) and "
            "`shape` (T, H, W), as in Sparkle:", "", "```python", "import numpy as np", "",
            "def load_mask(mask_path):", "    data = np.load(mask_path)",
            "    shape = tuple(int(s) for s in data['shape'])",
            "    total = shape[0] * shape[1] * shape[2]",
            "    return np.unpackbits(data['mask'])[:total].reshape(shape).astype(bool)  # (T, H, W)", "```", "",
            "`sparkle-fast validate RELEASE` checks this folder: names, members, checksums, videos, masks.", ""]
    return "\n".join(out)
