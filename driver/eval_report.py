"""An HTML report of `sparkle-fast eval` (no server, no plotting library): one comparison table over the results
folders (e.g. the full method against its ablations), then per results folder each dimension's mean and score
distribution per edit type and subtheme (inline SVG bars) and the judge-free metrics, then every sample's source,
result(s) and control video side by side with its scores.

    path = write_eval_report("out/eval.html", "bench/", summaries)   # summaries: driver.eval.evaluate's

Media are linked relatively from the report to the bench's, the results' and the masks folder's own files.
"""

from __future__ import annotations

import html
import os
from pathlib import Path

from sparkle_fast import layout as layout_mod
from sparkle_fast._io import atomic_write

from .eval import metrics_file, read_bench, score_file

STYLE = """body{font-family:sans-serif;margin:1.5em;color:#222} .warn{background:#fff3cd;border:1px solid #e0c46c;
padding:.8em;margin-bottom:1em} table{border-collapse:collapse;font-size:.85em;margin:.4em 0 1em}
td,th{border:1px solid #ddd;padding:.25em .5em;text-align:right} th:first-child,td:first-child{text-align:left}
.sample{border-top:1px solid #ccc;padding:1em 0} .panels{display:flex;flex-wrap:wrap;gap:.6em}
figure{margin:0;text-align:center;font-size:.8em} figure video{width:192px;background:#eee}
.missing{width:192px;height:108px;background:#f4f4f4;display:flex;align-items:center;justify-content:center;color:#999}
.hists{display:flex;flex-wrap:wrap;gap:1em} .hist{font-size:.75em;text-align:center}"""
METRIC_LABELS = {"fg_psnr": "fg PSNR dB", "fg_ssim": "fg SSIM", "bg_motion": "bg motion px/frame",
                 "flicker": "flicker", "edge_f1": "edge F1"}


def _fmt(value) -> str:
    return "" if value is None else (f"{value:.3f}" if isinstance(value, float) else str(value))


def _rel(path: Path, root: Path) -> str:
    return html.escape(os.path.relpath(path, root).replace(os.sep, "/"))


def _video(path: Path | None, root: Path, caption: str) -> str:
    if path is None or not path.is_file():
        return (f'<figure><div class="missing">none</div><figcaption>{html.escape(caption)}</figcaption></figure>')
    return (f'<figure><video src="{_rel(path, root)}" controls loop muted autoplay playsinline></video>'
            f"<figcaption>{html.escape(caption)}</figcaption></figure>")


def histogram_svg(counts: list[int], title: str) -> str:
    """Five bars (scores 1..5) as an inline SVG, heights relative to the largest count."""
    top = max(counts) or 1
    bars = []
    for i, count in enumerate(counts):
        height = 60 * count / top
        x = 8 + i * 22
        bars.append(f'<rect x="{x}" y="{70 - height:.1f}" width="16" height="{height:.1f}" fill="#4a78b5"/>'
                    f'<text x="{x + 8}" y="82" text-anchor="middle" font-size="9">{i + 1}</text>'
                    f'<text x="{x + 8}" y="{66 - height:.1f}" text-anchor="middle" font-size="8">{count}</text>')
    return (f'<div class="hist"><svg width="120" height="86" role="img" aria-label="{html.escape(title)}">'
            f'{"".join(bars)}</svg><br>{html.escape(title)}</div>')


def _label(summary: dict) -> str:
    return Path(summary["results"]).name


def comparison_table(summaries: list[dict]) -> str:
    """One row per results folder: macro means of every dimension, their mean, and every metric."""
    dims = summaries[0]["dimensions"] if summaries else []
    metrics = list(METRIC_LABELS)
    head = ("<tr><th>results</th><th>samples</th><th>scored</th><th>failed</th>"
            + "".join(f"<th>{html.escape(d)}</th>" for d in dims) + "<th>overall</th>"
            + "".join(f"<th>{METRIC_LABELS[m]}</th>" for m in metrics) + "</tr>")
    rows = []
    for s in summaries:
        macro = s["macro"]
        rows.append(f"<tr><td title=\"{html.escape(s['results'])}\">{html.escape(_label(s))}</td>"
                    f"<td>{macro['samples']}</td><td>{macro['scored']}</td><td>{macro['failed']}</td>"
                    + "".join(f"<td>{_fmt(macro['dimensions'][d])}</td>" for d in dims)
                    + f"<td>{_fmt(macro['overall'])}</td>"
                    + "".join(f"<td>{_fmt(macro['metrics'][m])}</td>" for m in metrics) + "</tr>")
    return f'<table class="comparison">{head}{"".join(rows)}</table>'


def _folder_section(summary: dict) -> str:
    dims = summary["dimensions"]
    parts = [f"<h2>{html.escape(_label(summary))}</h2><p>{html.escape(summary['results'])}</p>"]
    head = ("<tr><th>edit type / subtheme</th><th>samples</th><th>scored</th>"
            + "".join(f"<th>{html.escape(d)}</th>" for d in dims) + "<th>overall</th>"
            + "".join(f"<th>{METRIC_LABELS[m]}</th>" for m in METRIC_LABELS) + "</tr>")
    rows = []
    for edit_type, entry in summary["edit_types"].items():
        for label, block, indent in [(edit_type, entry, "")] + [(sub, b, "&nbsp;&nbsp;") for sub, b in
                                                                entry["subthemes"].items()]:
            rows.append(f"<tr><td>{indent}{html.escape(label)}</td><td>{block['samples']}</td>"
                        f"<td>{block['scored']}</td>"
                        + "".join(f"<td>{_fmt(block['dimensions'][d])}</td>" for d in dims)
                        + f"<td>{_fmt(block['overall'])}</td>"
                        + "".join(f"<td>{_fmt(block['metrics'][m])}</td>" for m in METRIC_LABELS) + "</tr>")
    parts.append(f"<table>{head}{''.join(rows)}</table>")
    if summary["judge"]:
        for edit_type, entry in summary["edit_types"].items():
            parts.append(f"<h3>{html.escape(edit_type)}: score distributions</h3><div class=\"hists\">"
                         + "".join(histogram_svg(entry["histogram"][d], d) for d in dims) + "</div>")
            for sub, block in entry["subthemes"].items():
                parts.append(f"<h4>{html.escape(edit_type)} / {html.escape(sub)}</h4><div class=\"hists\">"
                             + "".join(histogram_svg(block["histogram"][d], d) for d in dims) + "</div>")
    return "".join(parts)


def write_eval_report(path: str | os.PathLike, bench: str | os.PathLike, summaries: list[dict], *,
                      masks: str | os.PathLike | None = None, title: str = "sparkle-fast eval") -> Path:
    """Write the report to `path`; returns it."""
    path = Path(path).resolve()
    root = path.parent
    bench = Path(bench)
    masks_dir = Path(masks) if masks is not None else bench / "masks"
    samples = read_bench(bench, list(summaries[0]["edit_types"]) if summaries else None)
    parts = [f"<!doctype html><html><head><meta charset=\"utf-8\"><title>{html.escape(title)}</title>"
             f"<style>{STYLE}</style></head><body><h1>{html.escape(title)}</h1>"]
    judges = {s["judge"] for s in summaries}
    if "tiny" in judges:
        parts.append('<div class="warn">The judge is the tiny random Qwen3-VL: its scores are noise and show only '
                     "that the machinery runs. The judge-free metrics are real measurements.</div>")
    protocol = summaries[0]["protocol"] if summaries else ""
    parts.append(f"<p>bench {html.escape(str(bench))}; judge {html.escape(', '.join(str(j) for j in judges))}; "
                 f"protocol {html.escape(protocol)}. Dimensions after the first are capped at the first.</p>")
    parts.append("<h2>Comparison</h2>" + comparison_table(summaries))
    parts += [_folder_section(s) for s in summaries]
    parts.append("<h2>Samples</h2>")
    scores = {}
    metrics = {}
    for s in summaries:
        res = Path(s["results"])
        for edit_type in s["edit_types"]:
            if s["judge"]:
                for r in layout_mod.read_jsonl(score_file(res, edit_type, s["judge"], protocol)) \
                        if score_file(res, edit_type, s["judge"], protocol).is_file() else []:
                    scores[(s["results"], r["id"])] = r["scores"]
            m_path = metrics_file(res, edit_type)
            for r in layout_mod.read_jsonl(m_path) if m_path.is_file() else []:
                metrics[(s["results"], r["id"])] = r
    for sample in samples:
        panels = [_video(sample.source_video, root, "source")]
        panels += [_video(sample.result_path(s["results"]), root, _label(s)) for s in summaries]
        panels.append(_video(masks_dir / sample.edit_type / f"{sample.id}_control.mp4", root, "control video"))
        rows = []
        for s in summaries:
            m = metrics.get((s["results"], sample.id), {})
            score = scores.get((s["results"], sample.id), "")
            rows.append(f"<tr><td>{html.escape(_label(s))}</td><td>{html.escape(str(score))}</td>"
                        + "".join(f"<td>{_fmt(m.get(k))}</td>" for k in METRIC_LABELS)
                        + f"<td style=\"text-align:left\">{html.escape('; '.join(m.get('notes', [])))}</td></tr>")
        table = ("<table><tr><th>results</th><th>scores</th>"
                 + "".join(f"<th>{v}</th>" for v in METRIC_LABELS.values())
                 + "<th>notes</th></tr>" + "".join(rows) + "</table>")
        parts.append(f'<div class="sample"><h3>{html.escape(sample.id)} ({html.escape(sample.edit_type)}: '
                     f"{html.escape(sample.subtheme)}: {html.escape(sample.scene)})</h3>"
                     f"<p>{html.escape(sample.prompt)}</p><div class=\"panels\">{''.join(panels)}</div>{table}</div>")
    parts.append("</body></html>")
    with atomic_write(path) as handle:
        handle.write("".join(parts).encode("utf-8"))
    return path
