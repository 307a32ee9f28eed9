"""The theme taxonomy file and deterministic keyword sampling."""

from __future__ import annotations

import numpy as np
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


def test_packaged_taxonomy_holds_every_subtheme_the_readme_shows():
    taxonomy = themes.load_themes()
    for theme, names in themes.README_SUBTHEMES.items():
        missing = set(names) - set(taxonomy.subthemes(theme))
        assert not missing, (theme, missing)
    assert "era" in taxonomy.subthemes("style")
    keywords = {k.chosen_keyword for theme in themes.KEYWORD_THEMES for k in taxonomy.keywords(theme)}
    assert set(themes.README_KEYWORDS) <= keywords
    assert sum(len(taxonomy.subthemes(t)) for t in themes.KEYWORD_THEMES) == 21  # the paper's count


def _user_taxonomy(path):
    lines = []
    for theme in themes.KEYWORD_THEMES:
        for sub in ("alpha", "beta", "gamma", "delta"):
            scenes = ", ".join(f'"{theme} {sub} scene {i}"' for i in range(10))
            lines.append(f"[{theme}.{sub}]\nscenes = [{scenes}]\n")
    path.write_text("\n".join(lines))
    return path


def test_a_users_file_replaces_the_taxonomy_in_stage_2(tmp_path):
    """[run] themes_file: stage 2 draws the keyword from the user's file."""
    from sparkle_fast import layout
    from sparkle_fast.driver.config import ConfigError, load_config
    from sparkle_fast.models.base import TaskResult
    from sparkle_fast.stages import StageContext
    from sparkle_fast.stages.base import Sample
    from sparkle_fast.stages.stage2 import EditStage
    from sparkle_fast.video import write_image

    path = _user_taxonomy(tmp_path / "mine.toml")
    config = load_config(overrides={"run.themes_file": str(path), "thresholds.edit_frame0": 0.0})

    class VLM:
        calls = []

        def describe_scene(self, frame0):
            return TaskResult(ok=True, value="a room")

        def write_instruction(self, frame0, original_scene, theme, subtheme, scene):
            self.calls.append((theme, subtheme, scene))
            return TaskResult(ok=True, value=f"Make it {scene}.")

    class Editor:
        def try_edit(self, image, instruction, *, seed=None):
            return TaskResult(ok=True, value=np.asarray(image))

    class Scorer:
        def score_edit(self, source, edited, instruction):
            return TaskResult(ok=True, value={"prompt_following": 9.0, "consistency": 9.0, "perceptual_quality": 9.0,
                                              "overall": 9.0, "SC_reasoning": "", "PQ_reasoning": ""})

    out = layout.SparkleLayout(tmp_path / "out")
    sample = Sample("Sparkle_season_000003", "season", "unused.mp4")
    write_image(out.artifact("season", "source_frame0", sample.id), np.zeros((16, 16, 3), np.uint8))
    vlm = VLM()
    outcome = EditStage().run(sample, StageContext(out, config, {"vlm": vlm, "editor": Editor(), "scorer": Scorer()},
                                                   {}))
    assert outcome.status == "done", outcome.reason
    theme, subtheme, scene = vlm.calls[0]
    assert theme == "season" and subtheme in ("alpha", "beta", "gamma", "delta") and scene.startswith("season ")
    assert outcome.record["chosen_keyword"] == f"{subtheme}: {scene}"
    (tmp_path / "short.toml").write_text("[location.urban]\nscenes = ['a']\n")
    with pytest.raises(ConfigError, match=r"run.themes_file: .*short.toml"):
        load_config(overrides={"run.themes_file": str(tmp_path / "short.toml")})
