"""VLM answers as JSON: tolerant parsing, Sparkle's box rule, and schema-constrained decoding.

Two halves that protect each other:

1. Parsing (`extract_json`, `parse_grounding`, ...) accepts what real VLMs write: JSON inside ```json fences, JSON
   followed or preceded by prose, single quotes, trailing commas, Python literals, boxes outside the 0..1000 grid or
   with reversed corners, items without a label, "bbox_2d": []. Anything it cannot read raises `AnswerError` with a
   short reason; the adapters turn that into a failed `TaskResult`, never an exception out of a stage.
2. Constrained decoding: `to_json_schema` turns a task's schema (objects with fixed key order, arrays with bounded
   length, strings with bounded length, integers in a range, fixed choices, alternatives) into a standard JSON
   Schema, which every VLM backend hands to xgrammar (models/vlm_backends/grammar.py in-process, a vLLM server's
   structured outputs). Even a random tiny model then answers `{"scene":"..."}` or a list of
   `{"bbox_2d":[x1,y1,x2,y2],"label":"..."}`; real runs get the same protection. (This replaced a hand-written
   character automaton and logits processor: docs/VLM_BACKENDS.md has the comparison.)
"""

from __future__ import annotations

import ast
import json
import re
from dataclasses import dataclass
from typing import Any

import numpy as np

GRID = 1000  # Qwen-VL's relative box grid: bbox_2d values are in 0..1000


class AnswerError(ValueError):
    """A VLM answer that cannot be read as the task's JSON; str(error) is the reason a stage records."""


# ----------------------------------------------------------------------------------------------------------------
# Tolerant parsing
# ----------------------------------------------------------------------------------------------------------------

_FENCE = re.compile(r"```[A-Za-z0-9_-]*[ \t]*\n?(.*?)(?:```|$)", re.S)
_TRAILING_COMMA = re.compile(r",\s*([}\]])")


def _balanced_span(text: str, start: int) -> int | None:
    """Index one past the bracket that closes text[start] ('{' or '['), skipping brackets inside "..." or '...'
    strings; None when the text ends first (a truncated answer)."""
    depth, quote, escaped = 0, None, False
    for i in range(start, len(text)):
        ch = text[i]
        if quote:
            if escaped:
                escaped = False
            elif ch == "\\":
                escaped = True
            elif ch == quote:
                quote = None
            continue
        if ch in "\"'":
            # An apostrophe inside prose-like JSON ("man's hat") only opens a string right after a delimiter.
            if ch == "'" and i > start and text[i - 1].isalnum():
                continue
            quote = ch
        elif ch in "{[":
            depth += 1
        elif ch in "}]":
            depth -= 1
            if depth == 0:
                return i + 1
    return None


def _loads_lenient(snippet: str) -> Any:
    """json.loads, then the repairs VLM answers need: trailing commas, single quotes / Python literals."""
    attempts = [snippet, _TRAILING_COMMA.sub(r"\1", snippet)]
    for candidate in attempts:
        try:
            return json.loads(candidate)
        except json.JSONDecodeError:
            pass
    # Python-literal form: handles single quotes and trailing commas natively.
    pythonish = re.sub(r"\btrue\b", "True", attempts[1])
    pythonish = re.sub(r"\bfalse\b", "False", pythonish)
    pythonish = re.sub(r"\bnull\b", "None", pythonish)
    try:
        return ast.literal_eval(pythonish)
    except (ValueError, SyntaxError, MemoryError, RecursionError) as exc:
        raise AnswerError(f"unreadable JSON ({type(exc).__name__})") from exc


def extract_json(answer: str, expect: type | tuple[type, ...] = (dict, list)) -> Any:
    """The first JSON value of type `expect` (dict and/or list) in a VLM answer.

    Looks inside ```json fences first, then in the whole answer; ignores prose before and after the value.
    Raises AnswerError("no JSON ...", "truncated JSON ...", "unreadable JSON ...") when nothing usable is found.
    """
    if not isinstance(answer, str) or not answer.strip():
        raise AnswerError("empty answer")
    expect = expect if isinstance(expect, tuple) else (expect,)
    openers = ("{" if dict in expect else "") + ("[" if list in expect else "")
    regions = [m.group(1) for m in _FENCE.finditer(answer)] + [answer]
    truncated, last_error = False, None
    for region in regions:
        for start, ch in enumerate(region):
            if ch not in openers:
                continue
            end = _balanced_span(region, start)
            if end is None:
                # Everything after an unclosed bracket is inside it: a nested value is not the answer.
                truncated = True
                break
            try:
                value = _loads_lenient(region[start:end])
            except AnswerError as exc:
                last_error = exc
                continue
            if isinstance(value, expect):
                return value
    if last_error is not None:
        raise last_error
    if truncated:
        raise AnswerError("truncated JSON (the answer ends inside an object or list)")
    kinds = " or ".join("object" if t is dict else "list" for t in expect)
    raise AnswerError(f"no JSON {kinds} in the answer")


def clean_box(box: Any) -> list[int]:
    """A bbox_2d in the 0..1000 grid with x1 <= x2 and y1 <= y2, or [] when the box is missing or unusable.

    Accepts numbers or numeric strings; values outside the grid are clamped into it and reversed corners are
    swapped (the same ordering rule Sparkle's normalize_bbox applies in pixels). A box of the wrong length, with
    non-numbers, or with zero width or height after clamping is [] (the VLM "failed to localize").
    """
    if not isinstance(box, (list, tuple)) or len(box) != 4:
        return []
    try:
        values = [float(v) for v in box]
    except (TypeError, ValueError):
        return []
    if not all(np.isfinite(values)):
        return []
    x1, y1, x2, y2 = (int(round(min(max(v, 0.0), GRID))) for v in values)
    x1, x2 = min(x1, x2), max(x1, x2)
    y1, y2 = min(y1, y2), max(y1, y2)
    if x1 == x2 or y1 == y2:
        return []
    return [x1, y1, x2, y2]


def normalize_bbox(bbox, video_width: int, video_height: int) -> tuple[int, int, int, int]:
    """A Qwen-VL box on the 0..1000 grid -> pixel (x1, y1, x2, y2), with exactly the results of the rule in
    Sparkle's release README: scale and truncate each coordinate (v / 1000 * size, in that order), clamp into
    [0, W-1] x [0, H-1], and order the corners. Its quirk is kept on purpose: the right/bottom edge is ordered
    against the left/top edge *after* that one was clamped, so a reversed box collapses to zero width."""
    scaled = [int(v / 1000.0 * size) for v, size in zip(bbox, (video_width, video_height) * 2, strict=True)]

    def clamp(value: int, size: int) -> int:
        return max(0, min(value, size - 1))

    left = clamp(min(scaled[0], scaled[2]), video_width)
    top = clamp(min(scaled[1], scaled[3]), video_height)
    right = clamp(max(left, scaled[2]), video_width)
    bottom = clamp(max(top, scaled[3]), video_height)
    return left, top, right, bottom


_BOX_KEYS = ("bbox_2d", "bbox", "box", "bounding_box")
_LIST_KEYS = ("objects", "foreground", "foreground_objects", "results", "detections")


def _object_items(value: Any) -> list:
    """The list of grounding items in a parsed answer: a list, or a dict that wraps one, or a single item."""
    if isinstance(value, list):
        return value
    if isinstance(value, dict):
        for key in _LIST_KEYS:
            if isinstance(value.get(key), list):
                return value[key]
        if any(k in value for k in _BOX_KEYS):
            return [value]
    raise AnswerError("the answer is not a list of {bbox_2d, label} objects")


def _item_box(item: dict) -> Any:
    for key in _BOX_KEYS:
        if key in item:
            return item[key]
    return None


def _item_label(item: dict) -> str:
    label = item.get("label", item.get("name", ""))
    return " ".join(str(label).split()) if label is not None else ""


def parse_grounding(answer: str) -> list[dict]:
    """Round-1 grounding: the usable {"bbox_2d": [x1, y1, x2, y2], "label": str} objects of an answer, boxes cleaned
    with `clean_box`. Items without a label or without a usable box are dropped; duplicates (same label and box)
    are kept once. Raises AnswerError when nothing usable remains."""
    items = _object_items(extract_json(answer))
    objects, seen, dropped = [], set(), {"label": 0, "box": 0}
    for item in items:
        if not isinstance(item, dict):
            dropped["box"] += 1
            continue
        label, box = _item_label(item), clean_box(_item_box(item))
        if not label:
            dropped["label"] += 1
            continue
        if not box:
            dropped["box"] += 1
            continue
        key = (label, tuple(box))
        if key not in seen:
            seen.add(key)
            objects.append({"bbox_2d": box, "label": label})
    if not objects:
        raise AnswerError(f"no usable foreground object ({len(items)} item(s): {dropped['label']} without a label, "
                          f"{dropped['box']} without a usable box)")
    return objects


def parse_frame_grounding(answer: str, labels: list[str]) -> list[dict]:
    """Round-2 grounding of one frame: exactly one {"bbox_2d", "label"} per expected label, in `labels` order.

    A label the answer does not mention, or mentions with an unusable box, gets "bbox_2d": [] (Sparkle's marker for
    "not localized"). Labels are matched case- and whitespace-insensitively; an unlabeled item fills the first
    still-missing label at its position in the list (VLMs drop labels but keep order). Raises AnswerError only for
    an unreadable answer.
    """
    items = _object_items(extract_json(answer))
    key = {" ".join(lbl.lower().split()): i for i, lbl in enumerate(labels)}
    boxes: list[list[int] | None] = [None] * len(labels)
    unlabeled = []
    for position, item in enumerate(items):
        if not isinstance(item, dict):
            continue
        label = _item_label(item).lower()
        box = clean_box(_item_box(item))
        if label in key:
            if boxes[key[label]] is None or not boxes[key[label]]:
                boxes[key[label]] = box
        elif not label:
            unlabeled.append((position, box))
    for position, box in unlabeled:
        if position < len(labels) and boxes[position] is None:
            boxes[position] = box
    return [{"bbox_2d": box or [], "label": lbl} for lbl, box in zip(labels, boxes, strict=True)]


def parse_text_field(answer: str, field: str, *, max_chars: int | None = None) -> str:
    """A non-empty string field of a JSON object answer (e.g. "scene", "prompt", "caption"), whitespace-collapsed.

    Falls back to the whole answer when it holds no JSON object but is plain prose (real VLMs sometimes drop the
    wrapper); raises AnswerError when the field is missing or empty.
    """
    try:
        value = extract_json(answer, dict)
    except AnswerError:
        prose = " ".join(answer.replace("```", " ").split()) if isinstance(answer, str) else ""
        if prose and "{" not in prose and "[" not in prose:
            value = {field: prose}
        else:
            raise
    text = value.get(field)
    if not isinstance(text, str) or not text.strip():
        raise AnswerError(f"the answer has no non-empty \"{field}\" text")
    text = " ".join(text.split())
    return text[:max_chars] if max_chars else text


_YES = {"yes", "true", "moving", "y"}
_NO = {"no", "false", "static", "n"}


def parse_verdict(answer: str, field: str) -> tuple[str, bool]:
    """A reasoning-first yes/no answer: (reasoning, verdict). The verdict field may be "yes"/"no", true/false."""
    value = extract_json(answer, dict)
    raw = value.get(field)
    word = str(raw).strip().lower() if raw is not None else ""
    if word not in _YES | _NO:
        raise AnswerError(f"the answer's \"{field}\" is {raw!r}, not yes or no")
    reasoning = value.get("reasoning", "")
    return (" ".join(str(reasoning).split()), word in _YES)


# ----------------------------------------------------------------------------------------------------------------
# Schemas
# ----------------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Text:
    """A JSON string of min_chars..max_chars characters (no escapes, no control characters)."""

    max_chars: int
    min_chars: int = 0


@dataclass(frozen=True)
class Choice:
    """A JSON string that is one of `options` (written in double quotes)."""

    options: tuple[str, ...]


@dataclass(frozen=True)
class Integer:
    """A non-negative JSON integer in low..high (no sign, no leading zeros)."""

    low: int
    high: int


@dataclass(frozen=True)
class Array:
    """A JSON array of min_items..max_items values of `item`, or of the fixed per-position `items` when given."""

    item: Any = None
    min_items: int = 0
    max_items: int = 0
    items: tuple = ()


@dataclass(frozen=True)
class Object:
    """A JSON object with exactly these keys in this order."""

    fields: tuple[tuple[str, Any], ...]


@dataclass(frozen=True)
class AnyOf:
    """One of several schemas."""

    options: tuple


JsonSchema = Text | Choice | Integer | Array | Object | AnyOf

# Whitespace schema_max_chars allows around structural characters. The grammars (to_json_schema, compiled without
# whitespace) write none; the bound stays for answers from servers that allow some.
MAX_WS = 2

# Schema helpers the adapters share.
BOX = AnyOf((Array(item=Integer(0, GRID), min_items=4, max_items=4), Array(item=Integer(0, GRID), max_items=0)))


def grounding_schema(max_objects: int, max_label_chars: int) -> Array:
    """[{"bbox_2d": [x1, y1, x2, y2], "label": "..."}, ...] with 1..max_objects items (round 1)."""
    item = Object((("bbox_2d", Array(item=Integer(0, GRID), min_items=4, max_items=4)),
                   ("label", Text(max_label_chars, min_chars=1))))
    return Array(item=item, min_items=1, max_items=max_objects)


def frame_grounding_schema(labels: list[str]) -> Array:
    """One {"bbox_2d": [4 ints] or [], "label": <that label, fixed>} per expected label, in order (round 2)."""
    items = tuple(Object((("bbox_2d", BOX), ("label", Choice((label,))))) for label in labels)
    return Array(items=items)


def schema_max_chars(schema: Any) -> int:
    """An upper bound on the characters of any answer of `schema` (so max_new_tokens can cover it: a token is at
    least one character)."""
    ws = 2 * MAX_WS
    if isinstance(schema, Text):
        return schema.max_chars + 2
    if isinstance(schema, Choice):
        return max(len(json.dumps(o)) for o in schema.options)
    if isinstance(schema, Integer):
        return len(str(schema.high))
    if isinstance(schema, Array):
        parts = list(schema.items) or [schema.item] * schema.max_items
        return 2 + ws + sum(schema_max_chars(p) + 1 + ws for p in parts)
    if isinstance(schema, Object):
        return 2 + ws + sum(len(json.dumps(k)) + 2 + 2 * ws + schema_max_chars(v) for k, v in schema.fields)
    if isinstance(schema, AnyOf):
        return max(schema_max_chars(o) for o in schema.options)
    raise TypeError(f"not a schema: {schema!r}")


def to_json_schema(schema: Any) -> dict:
    """The standard JSON Schema of one of our schemas, as every backend's grammar engine takes it (xgrammar in the
    transformers backend, vLLM's structured outputs, an OpenAI-compatible server's json_schema response_format).

    Strings are bounded by a `pattern` with a {min,max} repetition and no minLength/maxLength: xgrammar ignores
    length bounds next to a pattern (vLLM rejects that mix). The pattern allows printable ASCII without quotes and
    backslashes (our choice): the text needs no escapes, and each character is at least one token, so
    schema_max_chars bounds the tokens of an answer (a multi-byte character would be up to 4 byte-level tokens).
    Objects are closed, with every key required in the given order; integers carry minimum/maximum; fixed
    per-position arrays are prefixItems with items false.
    """
    if isinstance(schema, Text):
        return {"type": "string", "pattern": f"^{_text_pattern(schema.min_chars, schema.max_chars)}$"}
    if isinstance(schema, Choice):
        return {"type": "string", "enum": list(schema.options)}
    if isinstance(schema, Integer):
        return {"type": "integer", "minimum": schema.low, "maximum": schema.high}
    if isinstance(schema, Array):
        if schema.items:
            return {"type": "array", "prefixItems": [to_json_schema(s) for s in schema.items], "items": False,
                    "minItems": len(schema.items), "maxItems": len(schema.items)}
        out: dict = {"type": "array", "minItems": schema.min_items, "maxItems": schema.max_items}
        out["items"] = to_json_schema(schema.item) if schema.item is not None else {"type": "integer"}
        return out
    if isinstance(schema, Object):
        return {"type": "object", "properties": {k: to_json_schema(v) for k, v in schema.fields},
                "required": [k for k, _ in schema.fields], "additionalProperties": False}
    if isinstance(schema, AnyOf):
        return {"anyOf": [to_json_schema(o) for o in schema.options]}
    raise TypeError(f"not a schema: {schema!r}")


def _text_pattern(low: int, high: int) -> str:
    """A regex for low..high text characters whose repetition counts stay <= _MAX_REPEAT: xgrammar 0.2.8 (vLLM
    0.32's) fails with "Check failed: per_rule_fsm_hashes" when a grammar with a longer {m,n} repetition is compiled
    after another one in a caching compiler (as a vLLM server's is), so 0..800 is written 0..32 then 0..128 x 6."""
    if low > _MAX_REPEAT or high < low:
        raise ValueError(f"text bounds {low}..{high}: need low <= high and low <= {_MAX_REPEAT}")
    chunks = max(0, (high - 1) // _MAX_REPEAT)
    head = high - chunks * _MAX_REPEAT
    tail = f"(?:{_TEXT_CHAR}{{0,{_MAX_REPEAT}}}){{0,{chunks}}}" if chunks else ""
    return f"{_TEXT_CHAR}{{{low},{head}}}{tail}"


_MAX_REPEAT = 128
# One character of an answer's text: printable ASCII (space to "~") except the quote and the backslash.
_TEXT_CHAR = r"[ !#-\[\]-~]"
