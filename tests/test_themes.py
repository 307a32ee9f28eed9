"""The theme taxonomy file and deterministic keyword sampling."""

from __future__ import annotations

import pytest

from sparkle_fast import themes


def test_packaged_taxonomy_has_sparkles_shape():
    taxonomy = themes.load_themes()
    for theme in themes.KEYWORD_THEMES:
        subthemes = taxonomy.subthemes(theme)
        assert 4 <= len(subthemes) <= 6
        for subtheme in subthemes:
            scenes = taxonomy.scenes(theme, subtheme)
            assert len(scenes) == 10 and len(set(scenes)) == 10
    # Scenes named in Sparkle's README exist in this keyword form.
    assert "urban: rooftop overlooking skyline" in {k.chosen_keyword for k in taxonomy.keywords("location")}
    assert "landmark: ancient stone ruins with wind-swept grass" in {
        k.chosen_keyword for k in taxonomy.keywords("location")}


def test_sampling_is_deterministic_and_covers_subthemes():
    taxonomy = themes.load_themes()
    first = [taxonomy.sample_keyword("season", f"Sparkle_season_{i:06d}", seed=3) for i in range(200)]
    again = [taxonomy.sample_keyword("season", f"Sparkle_season_{i:06d}", seed=3) for i in range(200)]
    other_seed = [taxonomy.sample_keyword("season", f"Sparkle_season_{i:06d}", seed=4) for i in range(200)]
    assert first == again
    assert first != other_seed
    assert {k.subtheme for k in first} == set(taxonomy.subthemes("season"))
    assert all(k.scene in taxonomy.scenes("season", k.subtheme) for k in first)
    # Known value: pins the hash recipe so a refactor cannot silently reshuffle a dataset.
    assert taxonomy.sample_keyword("location", "Sparkle_location_000001").chosen_keyword == \
        "rural: country road lined with trees"


def test_openve3m_has_no_keywords_and_its_edit_type():
    taxonomy = themes.load_themes()
    with pytest.raises(KeyError, match="prompts come with the input"):
        taxonomy.sample_keyword("openve3m", "Sparkle_openve3m_000000")
    assert themes.metadata_edit_type("openve3m") == "openve3m_background_change"
    assert themes.metadata_edit_type("time") == "time"
    with pytest.raises(KeyError):
        themes.metadata_edit_type("weather")


def test_bad_theme_files_are_named(tmp_path):
    missing = tmp_path / "nope.toml"
    with pytest.raises(themes.ThemeFileError, match="no such themes file"):
        themes.load_themes(missing)
    broken = tmp_path / "broken.toml"
    broken.write_text("[location\n")
    with pytest.raises(themes.ThemeFileError, match="unreadable"):
        themes.load_themes(broken)
    short = tmp_path / "short.toml"
    short.write_text("[location.urban]\nscenes = ['a', 'b']\n")
    with pytest.raises(themes.ThemeFileError) as info:
        themes.load_themes(short)
    message = str(info.value)
    assert "short.toml" in message and "expected 10 distinct" in message and "missing theme [season]" in message
