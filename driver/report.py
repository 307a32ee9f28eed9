"""An HTML report of a run (no server needed): per sample its intermediates side by side, each stage's decision,
scores and reason, where the time went, and which implementation (reference / triton / cuda) each op a stage called
ran on (the record's "backends", written by the runner).

    path = write_report("out/", title="sparkle-fast demo", note="The models are random ...")

Media are linked relatively from out/report.html to the dataset's own files; the one picture the dataset does not
hold, the BAIT mask over the source, is rendered into out/report_media/{id}_mask_overlay.mp4.
"""

from __future__ import annotations

import html
import json
import os
from pathlib import Path

import numpy as np

from sparkle_fast import layout as layout_mod
from sparkle_fast._io import atomic_write

from .manifest import Manifest

PANELS = (  # (artifact kind or None for the overlay, caption)
    ("source_video", "source"),
    ("edited_frame0", "edited frame 0 (stage 2)"),
    ("edited_frame0_foreground_removed", "foreground removed (stage 3)"),
    ("edited_background_video", "background video (stage 3)"),
    (None, "BAIT mask over the source (stage 4)"),
    ("edited_video_canny", "control video (stage 5)"),
    ("edited_video", "final video (stage 5)"),
)
STYLE = """body{font-family:sans-serif;margin:1.5em;color:#222} .warn{background:#fff3cd;border:1px solid #e0c46c;
padding:.8em;margin-bottom:1em} .sample{border-top:1px solid #ccc;padding:1em 0} .panels{display:flex;flex-wrap:wrap;
gap:.6em} figure{margin:0;text-align:center;font-size:.8em}
figure img,figure video{width:192px;image-rendering:pixelated;background:#eee}
.missing{width:192px;height:128px;background:#f4f4f4;display:flex;align-items:center;
justify-content:center;color:#999} table{border-collapse:collapse;font-size:.85em} td,th{border:1px solid #ddd;
padding:.25em .5em;text-align:left} .done{color:#186a3b} .rejected{color:#9a6700} .failed{color:#b00020}"""


def mask_overlay(out: layout_mod.SparkleLayout, theme: str, sample: str, media: Path) -> Path | None:
    """The source video with its BAIT mask tinted red, as an mp4 under `media`; None when either is missing."""
    from sparkle_fast.formats import load_mask
    from sparkle_fast.video import read_frames, write_video

    source, mask_path = out.artifact(theme, "source_video", sample), out.artifact(theme, "source_video_mask", sample)
    if not (source.exists() and mask_path.exists()):
        return None
    frames = read_frames(source).frames.numpy().astype(np.float32)
    mask = load_mask(mask_path)[: len(frames), :, :, None]
    tinted = np.where(mask, 0.45 * frames + 0.55 * np.array([255.0, 0.0, 0.0]), frames)
    return write_video(media / f"{sample}_mask_overlay.mp4", np.clip(tinted + 0.5, 0, 255).astype(np.uint8))


def _media(path: Path | None, root: Path, caption: str) -> str:
    if path is None or not path.exists():
        return (f'<figure><div class="missing">not produced</div><figcaption>{html.escape(caption)}</figcaption>'
                "</figure>")
    rel = html.escape(os.path.relpath(path, root).replace(os.sep, "/"))
    tag = (f'<video src="{rel}" controls loop muted autoplay playsinline></video>' if path.suffix == ".mp4"
           else f'<img src="{rel}" alt="{html.escape(caption)}">')
    return f"<figure>{tag}<figcaption>{html.escape(caption)}</figcaption></figure>"


def backends_text(record) -> str:
    """'control_video: triton, canny: triton' from a record's "backends" ({} or no record: '')."""
    used = record.get("backends") if isinstance(record, dict) else None
    return ", ".join(f"{op}: {backend}" for op, backend in sorted((used or {}).items()))


def _stage_backends(manifest: Manifest, names: dict[int, str]) -> str:
    """A table: per stage, every op it called over the run and the implementations they ran on."""
    rows = []
    for number in range(1, 6):
        used: dict[str, set[str]] = {}
        for result in manifest.results(number):
            record = result.record if isinstance(result.record, dict) else {}
            for op, backend in (record.get("backends") or {}).items():
                used.setdefault(op, set()).update(str(backend).split("+"))
        text = ", ".join(f"{op}: {'+'.join(sorted(b))}" for op, b in sorted(used.items())) or "no kernel op called"
        rows.append(f"<tr><td>{number} {html.escape(names.get(number, ''))}</td><td>{html.escape(text)}</td></tr>")
    return "<h2>Kernels</h2><table><tr><th>stage</th><th>op: implementation</th></tr>" + "".join(rows) + "</table>"


def _stage_rows(manifest: Manifest, sample: str, names: dict[int, str]) -> str:
    rows = []
    for number in range(1, 6):
        result = manifest.result(sample, number)
        if result is None:
            rows.append(f"<tr><td>{number} {names.get(number, '')}</td><td>not run</td>" + "<td></td>" * 4 + "</tr>")
            continue
        timing = ", ".join(f"{k} {v:.2f}" for k, v in sorted((result.timing or {}).items()))
        score = "" if result.score is None else f"{result.score:.3f}"
        status = "kept" if result.status == "done" else result.status
        rows.append(f"<tr><td>{number} {names.get(number, '')}</td><td class=\"{result.status}\">{status}</td>"
                    f"<td>{score}</td><td>{html.escape(result.reason or '')}</td>"
                    f"<td>{result.seconds or 0:.2f} s ({html.escape(timing)})</td>"
                    f"<td>{html.escape(backends_text(result.record))}</td></tr>")
    return ("<table><tr><th>stage</th><th>decision</th><th>score</th><th>reason</th><th>seconds (split)</th>"
            "<th>ops: implementation</th></tr>" + "".join(rows) + "</table>")


def write_report(out_dir: str | os.PathLike, *, title: str = "sparkle-fast run", note: str = "") -> Path:
    """Write out_dir/report.html from the manifest, summary.json and config.json; returns its path."""
    root = Path(out_dir)
    out = layout_mod.SparkleLayout(root)
    media = root / "report_media"
    summary = json.loads((root / "summary.json").read_text()) if (root / "summary.json").exists() else {}
    config = json.loads((root / "config.json").read_text()) if (root / "config.json").exists() else {}
    names = {int(k): v["name"] for k, v in summary.get("stages", {}).items()}
    parts = [f"<!doctype html><html><head><meta charset=\"utf-8\"><title>{html.escape(title)}</title>"
             f"<style>{STYLE}</style></head><body><h1>{html.escape(title)}</h1>"]
    if note:
        parts.append(f'<div class="warn">{html.escape(note)}</div>')
    if summary:
        rows = "".join(
            f"<tr><td>{n} {html.escape(s['name'])}</td><td>{s['kept']}</td><td>{s['rejected']}</td>"
            f"<td>{s['failed']}</td>"
            + "".join(f"<td>{s['time'][k]:.2f}</td>" for k in ("model", "kernel", "io", "model_load", "other"))
            + f"<td>{s['seconds']:.2f}</td></tr>" for n, s in summary["stages"].items())
        parts.append("<h2>Stages</h2><table><tr><th>stage</th><th>kept</th><th>rejected</th><th>failed</th>"
                     "<th>model s</th><th>kernel s</th><th>io s</th><th>model load s</th><th>other s</th>"
                     f"<th>total s</th></tr>{rows}</table><p>wall time {summary.get('wall_seconds', 0):.1f} s</p>")
    with Manifest(root / "manifest.sqlite") as manifest:
        parts.append(_stage_backends(manifest, names))
        for sample in manifest.samples():
            panels = []
            for kind, caption in PANELS:
                path = (mask_overlay(out, sample.theme, sample.id, media) if kind is None
                        else out.artifact(sample.theme, kind, sample.id))
                panels.append(_media(path, root, caption))
            edit = (manifest.result(sample.id, 2).record or {}) if manifest.result(sample.id, 2) else {}
            prompt = edit.get("prompt", sample.prompt or "")
            keyword = edit.get("chosen_keyword")
            parts.append(f'<div class="sample"><h3>{html.escape(sample.id)} ({html.escape(sample.theme)})</h3>'
                         f"<p>input {html.escape(sample.src_video)}<br>keyword {html.escape(str(keyword))}; prompt "
                         f"{html.escape(repr(prompt))}</p><div class=\"panels\">{''.join(panels)}</div>"
                         f"{_stage_rows(manifest, sample.id, names)}</div>")
    parts.append(f"<h2>Config</h2><pre>{html.escape(json.dumps(config, indent=2))}</pre></body></html>")
    path = root / "report.html"
    with atomic_write(path) as handle:
        handle.write("".join(parts).encode("utf-8"))
    return path
