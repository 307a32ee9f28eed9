"""Answer parsing on real-looking VLM answers (good and bad), Sparkle's box rule, and constrained decoding."""

from __future__ import annotations

import json

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from sparkle_fast.models import json_answers as ja

# --- grounding (round 1): answer -> expected objects, or the start of the failure reason ----------------------
GROUNDING_CASES = [
    ("plain list", '[{"bbox_2d": [447, 27, 765, 998], "label": "woman in brown hat"}]',
     [{"bbox_2d": [447, 27, 765, 998], "label": "woman in brown hat"}]),
    ("json fence + prose", 'Here are the objects:\n```json\n[{"bbox_2d": [10, 20, 30, 40], "label": "dog"}]\n```\n'
     "Let me know if you need more.", [{"bbox_2d": [10, 20, 30, 40], "label": "dog"}]),
    ("trailing prose without fence", '[{"bbox_2d": [1, 2, 3, 4], "label": "cup"}] These are all the objects.',
     [{"bbox_2d": [1, 2, 3, 4], "label": "cup"}]),
    ("single quotes", "[{'bbox_2d': [5, 6, 7, 8], 'label': 'man'}]", [{"bbox_2d": [5, 6, 7, 8], "label": "man"}]),
    ("trailing commas", '[{"bbox_2d": [5, 6, 7, 8,], "label": "man",},]', [{"bbox_2d": [5, 6, 7, 8], "label": "man"}]),
    ("reversed corners", '[{"bbox_2d": [700, 900, 100, 50], "label": "hat"}]',
     [{"bbox_2d": [100, 50, 700, 900], "label": "hat"}]),
    ("out of range clamped", '[{"bbox_2d": [-20, 10, 1350, 1001], "label": "car"}]',
     [{"bbox_2d": [0, 10, 1000, 1000], "label": "car"}]),
    ("numeric strings", '[{"bbox_2d": ["12", "30", "400.6", "500"], "label": "bag"}]',
     [{"bbox_2d": [12, 30, 401, 500], "label": "bag"}]),
    ("missing label dropped", '[{"bbox_2d": [1, 2, 3, 4]}, {"bbox_2d": [5, 6, 70, 80], "label": "kid"}]',
     [{"bbox_2d": [5, 6, 70, 80], "label": "kid"}]),
    ("empty box dropped", '[{"bbox_2d": [], "label": "ghost"}, {"bbox_2d": [5, 6, 70, 80], "label": "kid"}]',
     [{"bbox_2d": [5, 6, 70, 80], "label": "kid"}]),
    ("wrapped in an object", '{"objects": [{"bbox": [5, 6, 70, 80], "label": " kid  in red "}]}',
     [{"bbox_2d": [5, 6, 70, 80], "label": "kid in red"}]),
    ("single object", '{"bbox_2d": [5, 6, 70, 80], "label": "kid"}', [{"bbox_2d": [5, 6, 70, 80], "label": "kid"}]),
    ("duplicates kept once", '[{"bbox_2d": [1, 1, 9, 9], "label": "a"}, {"bbox_2d": [1, 1, 9, 9], "label": "a"}]',
     [{"bbox_2d": [1, 1, 9, 9], "label": "a"}]),
    ("prose only", "I cannot see any foreground objects in this image.", "no JSON"),
    ("truncated", '```json\n[{"bbox_2d": [1, 2, 3, 4], "label": "ma', "truncated JSON"),
    ("only unusable items", '[{"bbox_2d": [], "label": "x"}, {"label": "y"}, {"bbox_2d": [1, 2, 3]}]',
     "no usable foreground object"),
    ("zero-area box", '[{"bbox_2d": [500, 500, 500, 900], "label": "pole"}]', "no usable foreground object"),
    ("empty answer", "", "empty answer"),
    ("not a list of objects", '{"answer": "yes"}', "the answer is not a list"),
]


@pytest.mark.parametrize("name,answer,expected", GROUNDING_CASES, ids=[c[0] for c in GROUNDING_CASES])
def test_parse_grounding_table(name, answer, expected):
    if isinstance(expected, str):
        with pytest.raises(ja.AnswerError) as info:
            ja.parse_grounding(answer)
        assert str(info.value).startswith(expected)
    else:
        assert ja.parse_grounding(answer) == expected


FRAME_CASES = [
    ("all present", '[{"bbox_2d": [1, 2, 30, 40], "label": "man"}, {"bbox_2d": [5, 5, 9, 9], "label": "hat"}]',
     [[1, 2, 30, 40], [5, 5, 9, 9]]),
    ("label missing -> []", '[{"bbox_2d": [1, 2, 30, 40], "label": "man"}]', [[1, 2, 30, 40], []]),
    ("explicit empty box", '[{"bbox_2d": [], "label": "man"}, {"bbox_2d": [5, 5, 9, 9], "label": "HAT"}]',
     [[], [5, 5, 9, 9]]),
    ("unlabeled item fills its position", '[{"bbox_2d": [1, 2, 30, 40]}, {"bbox_2d": [5, 5, 9, 9], "label": "hat"}]',
     [[1, 2, 30, 40], [5, 5, 9, 9]]),
    ("unknown label ignored", '[{"bbox_2d": [1, 2, 30, 40], "label": "tree"}]', [[], []]),
    ("reversed + clamped", "```json\n[{'bbox_2d': [40, 30, -2, 1200], 'label': 'man'},]\n```", [[0, 30, 40, 1000], []]),
]


@pytest.mark.parametrize("name,answer,boxes", FRAME_CASES, ids=[c[0] for c in FRAME_CASES])
def test_parse_frame_grounding_table(name, answer, boxes):
    objects = ja.parse_frame_grounding(answer, ["man", "hat"])
    assert [o["label"] for o in objects] == ["man", "hat"]
    assert [o["bbox_2d"] for o in objects] == boxes


TEXT_CASES = [
    ('{"scene": "A quiet  street\\nwith shops."}', "A quiet street with shops."),
    ("```json\n{'scene': 'A beach',}\n```", "A beach"),
    ("A cobblestone street in an old town.", "A cobblestone street in an old town."),  # prose, no wrapper
    ('{"scene": ""}', AssertionError),
    ('{"other": "x"}', AssertionError),
    ('{"scene": "unterminated', AssertionError),
]


@pytest.mark.parametrize("answer,expected", TEXT_CASES)
def test_parse_text_field_table(answer, expected):
    if expected is AssertionError:
        with pytest.raises(ja.AnswerError):
            ja.parse_text_field(answer, "scene")
    else:
        assert ja.parse_text_field(answer, "scene") == expected


VERDICT_CASES = [
    ('{"reasoning": "background shifts left", "camera_moving": "yes"}', True),
    ('Reasoning done.\n```json\n{"reasoning": "static wall", "camera_moving": "No"}\n```', False),
    ("{'reasoning': 'tripod shot', 'camera_moving': false}", False),
    ('{"reasoning": "unsure", "camera_moving": "maybe"}', None),
    ('{"reasoning": "no verdict"}', None),
]


@pytest.mark.parametrize("answer,expected", VERDICT_CASES)
def test_parse_verdict_table(answer, expected):
    if expected is None:
        with pytest.raises(ja.AnswerError):
            ja.parse_verdict(answer, "camera_moving")
    else:
        reasoning, moving = ja.parse_verdict(answer, "camera_moving")
        assert moving is expected and reasoning


def test_normalize_bbox_is_sparkles_rule():
    # README example box on 1280x720, and the clamping/ordering corner cases.
    assert ja.normalize_bbox([447, 27, 765, 998], 1280, 720) == (572, 19, 979, 718)
    assert ja.normalize_bbox([0, 0, 1000, 1000], 1280, 720) == (0, 0, 1279, 719)
    # Verbatim Sparkle: x2 is ordered against the already-clamped x1, so a reversed box collapses to zero width.
    # Our parsers order corners on the 0..1000 grid first (clean_box), so reversed boxes never reach this.
    assert ja.normalize_bbox([900, 800, 100, 200], 1280, 720) == (128, 144, 128, 144)
    assert ja.normalize_bbox(ja.clean_box([900, 800, 100, 200]), 1280, 720) == (128, 144, 1152, 576)
    assert ja.normalize_bbox([-50, -50, 1200, 1100], 100, 50) == (0, 0, 99, 49)


# --- constrained decoding ------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def tokenizer():
    from sparkle_fast.models.tiny import tiny_qwen_tokenizer

    return tiny_qwen_tokenizer()


SCHEMAS = {
    "grounding": ja.grounding_schema(3, 10),
    "frames": ja.frame_grounding_schema(["man", "red hat"]),
    "verdict": ja.Object((("reasoning", ja.Text(12)), ("camera_moving", ja.Choice(("yes", "no"))))),
    "score": ja.Object((("reasoning", ja.Text(8)), ("score", ja.Array(item=ja.Integer(0, 25), min_items=2,
                                                                      max_items=2)))),
}


def _readme_rule(box, width, height):
    """Sparkle's README conversion, restated step by step as the oracle."""
    x1, y1, x2, y2 = (int(box[i] / 1000.0 * (width if i % 2 == 0 else height)) for i in range(4))
    x1 = max(0, min(min(x1, x2), width - 1))
    y1 = max(0, min(min(y1, y2), height - 1))
    x2 = max(0, min(max(x1, x2), width - 1))
    y2 = max(0, min(max(y1, y2), height - 1))
    return x1, y1, x2, y2


@settings(max_examples=300, deadline=None)
@given(box=st.lists(st.floats(-500, 1500, allow_nan=False), min_size=4, max_size=4),
       width=st.integers(1, 4096), height=st.integers(1, 4096))
def test_normalize_bbox_matches_the_readme_rule_everywhere(box, width, height):
    assert ja.normalize_bbox(box, width, height) == _readme_rule(box, width, height)


# --- JSON Schema for the grammar engines (xgrammar in every backend) ---------------------------------------------

def _xgrammar_accepts(tokenizer, schema, text: str) -> bool:
    import xgrammar as xgr

    from sparkle_fast.models.vlm_backends.grammar import JsonGrammars

    grammars = JsonGrammars(tokenizer, len(tokenizer), [tokenizer.convert_tokens_to_ids("<|im_end|>")])
    matcher = xgr.GrammarMatcher(grammars.compiled(ja.to_json_schema(schema)))
    return matcher.accept_string(text) and matcher.is_completed()


def test_json_schema_grammar_takes_compact_schema_answers_only(tokenizer):
    grounding = SCHEMAS["grounding"]
    assert _xgrammar_accepts(tokenizer, grounding, '[{"bbox_2d":[1,2,3,1000],"label":"a b"}]')
    assert _xgrammar_accepts(tokenizer, grounding, '[{"bbox_2d":[0,0,5,5],"label":"x"},{"bbox_2d":[1,1,2,2],'
                                                   '"label":"0123456789"}]')
    for bad in ('[]', '[{"bbox_2d":[1,2,3],"label":"a"}]', '[{"bbox_2d":[1,2,3,1001],"label":"a"}]',
                '[{"bbox_2d":[01,2,3,4],"label":"a"}]', '[{"bbox_2d":[1,2,3,4],"label":""}]',
                '[{"label":"a","bbox_2d":[1,2,3,4]}]', '[{"bbox_2d": [1,2,3,4],"label":"a"}]',
                '[{"bbox_2d":[1,2,3,4],"label":"01234567890"}]', '[{"bbox_2d":[1,2,3,4],"label":"a\\"b"}]'):
        assert not _xgrammar_accepts(tokenizer, grounding, bad), bad
    frames = SCHEMAS["frames"]
    both = '[{"bbox_2d":[],"label":"man"},{"bbox_2d":[1,2,3,4],"label":"red hat"}]'
    assert _xgrammar_accepts(tokenizer, frames, both)
    assert not _xgrammar_accepts(tokenizer, frames, '[{"bbox_2d":[],"label":"man"}]')
    assert not _xgrammar_accepts(tokenizer, frames, '[{"bbox_2d":[],"label":"hat"},{"bbox_2d":[],"label":"man"}]')


@pytest.mark.parametrize("low,high", [(0, 12), (1, 128), (1, 129), (0, 300)])
def test_long_text_bounds_are_exact_in_chunked_patterns(tokenizer, low, high):
    """Text bounds past xgrammar's safe repetition count (128) are written in chunks; the bounds stay exact."""
    schema = ja.Object((("reasoning", ja.Text(high, min_chars=low)),))
    for n, ok in ((low, True), (high, True), (high + 1, False)) + (((low - 1, False),) if low else ()):
        assert _xgrammar_accepts(tokenizer, schema, '{"reasoning":"' + "a" * n + '"}') is ok, n


@pytest.mark.parametrize("name", list(SCHEMAS))
def test_random_logits_through_xgrammar_give_schema_answers(tokenizer, name):
    """The transformers backend's xgrammar processor: sampling from random logits (an lm_head 5 ids wider than the
    grammar's vocabulary, as real checkpoints have) always ends in a complete, compact answer of the schema."""
    from sparkle_fast.models.vlm_backends.grammar import JsonGrammars

    schema = SCHEMAS[name]
    eos = tokenizer.convert_tokens_to_ids("<|im_end|>")
    width = len(tokenizer) + 5
    processor = JsonGrammars(tokenizer, len(tokenizer), [eos]).processor(ja.to_json_schema(schema), 4)
    generator = torch.Generator().manual_seed(0)
    ids = torch.zeros(4, 3, dtype=torch.long)
    finished = torch.zeros(4, dtype=torch.bool)
    for _ in range(ja.schema_max_chars(schema) + 1):
        scores = processor(ids, torch.randn(4, width, generator=generator) * 5)
        assert torch.isinf(scores[~finished][:, len(tokenizer):]).all()  # never the ids past the vocabulary
        nxt = torch.multinomial(torch.softmax(scores, dim=-1), 1, generator=generator).squeeze(1)
        nxt = torch.where(finished, torch.full_like(nxt, eos), nxt)
        finished |= nxt == eos
        ids = torch.cat([ids, nxt[:, None]], dim=1)
        if finished.all():
            break
    assert finished.all(), "every row must reach EOS within the schema's character bound"
    for row in ids[:, 3:].tolist():
        text = tokenizer.decode([t for t in row if t != eos], clean_up_tokenization_spaces=False)
        assert json.dumps(json.loads(text), separators=(",", ":")) == text
        assert _xgrammar_accepts(tokenizer, schema, text), text
