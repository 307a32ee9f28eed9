"""The theme taxonomy (location, season, time, style: 4-6 subthemes of 10 scenes each, plus openve3m) and the
deterministic choice of a sample's "subtheme: scene" keyword.

What is Sparkle's and what is ours: Sparkle publishes the four keyword themes, the shape (4-6 subthemes per theme,
10 scenes each, 21 subthemes), the "subtheme: scene" keyword form, the subthemes its release README names
(README_SUBTHEMES) and two scenes (README_KEYWORDS). Its full taxonomy is not published: the packaged file
(sparkle_fast/data/themes.toml) is the project's own, built around those names. A run can use another file
(config [run] themes_file; load_themes(path)), validated on load. The keyword sampling rule is ours as well.
openve3m has no keywords: its prompts come with the input, and its metadata edit_type is written
"openve3m_background_change" (Sparkle's spelling).
"""

from __future__ import annotations

import hashlib
import os
import tomllib
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

DEFAULT_THEMES_FILE = Path(__file__).resolve().parent / "data" / "themes.toml"
KEYWORD_THEMES = ("location", "season", "time", "style")
OPENVE3M = "openve3m"
THEMES = (*KEYWORD_THEMES, OPENVE3M)
SCENES_PER_SUBTHEME = 10
SUBTHEMES_PER_THEME = (4, 6)
# Subthemes named in Sparkle's release README (its theme table and its examples); the table ends three of the lists
# with "...", so these are the ones shown, not all of Sparkle's.
README_SUBTHEMES = {
    "location": ("urban", "rural", "nature", "landmark"),
    "season": ("spring", "summer", "autumn", "winter"),
    "time": ("dawn", "dusk", "night"),
    "style": ("era", "mood", "cinematic"),
}
# The chosen_keyword values of the README's examples.
README_KEYWORDS = ("urban: rooftop overlooking skyline", "landmark: ancient stone ruins with wind-swept grass")


class ThemeFileError(ValueError):
    """A themes file that is missing, unreadable or not of the documented shape; the message names the file."""


@dataclass(frozen=True)
class Keyword:
    """A sample's target: theme, subtheme and scene; `chosen_keyword` is the "subtheme: scene" string (Sparkle's
    metadata form)."""

    theme: str
    subtheme: str
    scene: str

    @property
    def chosen_keyword(self) -> str:
        return f"{self.subtheme}: {self.scene}"


@dataclass(frozen=True)
class Taxonomy:
    """theme -> subtheme -> scenes (tuples, file order)."""

    themes: dict[str, dict[str, tuple[str, ...]]]

    def subthemes(self, theme: str) -> list[str]:
        return list(self._theme(theme))

    def scenes(self, theme: str, subtheme: str) -> tuple[str, ...]:
        subthemes = self._theme(theme)
        if subtheme not in subthemes:
            raise KeyError(f"theme {theme!r} has no subtheme {subtheme!r}; it has {list(subthemes)}")
        return subthemes[subtheme]

    def keywords(self, theme: str) -> list[Keyword]:
        return [Keyword(theme, sub, scene) for sub, scenes in self._theme(theme).items() for scene in scenes]

    def _theme(self, theme: str) -> dict[str, tuple[str, ...]]:
        if theme == OPENVE3M:
            raise KeyError("the openve3m theme has no keywords: its prompts come with the input")
        if theme not in self.themes:
            raise KeyError(f"unknown theme {theme!r}; themes are {list(THEMES)}")
        return self.themes[theme]

    def sample_keyword(self, theme: str, sample_id: str, seed: int = 0) -> Keyword:
        """The (subtheme, scene) for one sample (our rule; Sparkle's paper says only that the VLM selects one at
        random): uniform over subthemes, then over that subtheme's scenes, drawn from sha256(seed, theme,
        sample_id), so it is the same on every machine, run and Python version (no hash randomisation) and
        independent of the order samples are processed in."""
        subthemes = self._theme(theme)
        digest = hashlib.sha256(f"{seed}\x00{theme}\x00{sample_id}".encode()).digest()
        first, second = int.from_bytes(digest[:8], "big"), int.from_bytes(digest[8:16], "big")
        subtheme = list(subthemes)[first % len(subthemes)]
        scenes = subthemes[subtheme]
        return Keyword(theme, subtheme, scenes[second % len(scenes)])


def metadata_edit_type(theme: str) -> str:
    """The metadata.edit_type string Sparkle writes for a theme (openve3m -> "openve3m_background_change")."""
    if theme not in THEMES:
        raise KeyError(f"unknown theme {theme!r}; themes are {list(THEMES)}")
    return "openve3m_background_change" if theme == OPENVE3M else theme


def _validate(raw: dict, path: Path) -> Taxonomy:
    problems = []
    unknown = sorted(set(raw) - set(KEYWORD_THEMES))
    if unknown:
        problems.append(f"unknown theme table(s) {unknown}; expected {list(KEYWORD_THEMES)}")
    themes: dict[str, dict[str, tuple[str, ...]]] = {}
    for theme in KEYWORD_THEMES:
        table = raw.get(theme)
        if not isinstance(table, dict):
            problems.append(f"missing theme [{theme}]")
            continue
        lo, hi = SUBTHEMES_PER_THEME
        if not lo <= len(table) <= hi:
            problems.append(f"[{theme}] has {len(table)} subthemes, expected {lo}-{hi}")
        themes[theme] = {}
        for subtheme, body in table.items():
            scenes = body.get("scenes") if isinstance(body, dict) else None
            where = f"[{theme}.{subtheme}]"
            if not isinstance(scenes, list) or not all(isinstance(s, str) and s.strip() for s in scenes):
                problems.append(f"{where} needs scenes = [ ...non-empty strings... ]")
                continue
            cleaned = tuple(" ".join(s.split()) for s in scenes)
            if len(cleaned) != SCENES_PER_SUBTHEME or len(set(cleaned)) != len(cleaned):
                problems.append(f"{where} has {len(cleaned)} scenes ({len(set(cleaned))} distinct), expected "
                                f"{SCENES_PER_SUBTHEME} distinct")
            if ":" in subtheme or any(":" in s for s in cleaned):
                problems.append(f"{where}: ':' is reserved for the 'subtheme: scene' keyword form")
            themes[theme][subtheme] = cleaned
    if problems:
        raise ThemeFileError(f"{path}: " + "; ".join(problems))
    return Taxonomy(themes)


def load_themes(path: str | os.PathLike | None = None) -> Taxonomy:
    """Read and validate a themes TOML file (default, also for "": the packaged sparkle_fast/data/themes.toml)."""
    path = Path(path) if path else DEFAULT_THEMES_FILE
    if path == DEFAULT_THEMES_FILE:
        return _default_taxonomy()
    return _load(path)


def _load(path: Path) -> Taxonomy:
    try:
        raw = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError as exc:
        raise ThemeFileError(f"{path}: no such themes file") from exc
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        raise ThemeFileError(f"{path}: unreadable themes file ({type(exc).__name__}: {exc})") from exc
    return _validate(raw, path)


@lru_cache(maxsize=1)
def _default_taxonomy() -> Taxonomy:
    return _load(DEFAULT_THEMES_FILE)
