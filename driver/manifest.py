"""out/manifest.sqlite: what has been done, so a run can be killed at any moment and resumed by the same command.

Tables
  meta(key, value)                     schema version; the run's resolved config (JSON) and its hash
  samples(id, theme, src_video, prompt, added_at)
  stage_results(sample_id, stage, status, attempts, score, reason, record, seconds, timing, finished_at)
  step_results(sample_id, stage, step, state, seconds, timing, finished_at)
                                       each finished step of a stage still running (sparkle_fast/stages/steps.py):
                                       the stage's state after it; a rerun starts the sample at its first step
                                       without a row, so no finished model call is repeated

A stage's result is written once, when the stage finishes for that sample, in one transaction: status is "done",
"rejected" (a decision, with its reason) or "failed" (an error, with its message; retried on the next run until
`max_attempts`). A stage killed half-way leaves no row, so it simply runs again. `record` holds the stage's JSON
output (scores, grounding, ...) from which the dataset's CSV and jsonl files are regenerated, never appended.

SQLite in WAL mode: a committed transaction survives the process being killed; readers never block the writer.
"""

from __future__ import annotations

import contextlib
import json
import os
import sqlite3
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

SCHEMA_VERSION = 1
STATUSES = ("done", "rejected", "failed")


@dataclass(frozen=True)
class SampleRow:
    id: str
    theme: str
    src_video: str
    prompt: str | None


@dataclass(frozen=True)
class StageResultRow:
    sample_id: str
    stage: int
    status: str
    attempts: int
    score: float | None
    reason: str | None
    record: Any
    seconds: float | None
    timing: dict | None


class ManifestError(RuntimeError):
    """The manifest is unusable (another schema, a corrupt file); the message names the file."""


class Manifest:
    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        try:
            self._db = sqlite3.connect(self.path, isolation_level=None, timeout=30.0)
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=NORMAL")
            self._create()
        except sqlite3.DatabaseError as exc:
            raise ManifestError(f"{self.path}: not a usable manifest ({exc}); move it away to start a new run") from exc

    def close(self) -> None:
        self._db.close()

    def __enter__(self) -> Manifest:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def _create(self) -> None:
        with self._transaction():
            self._db.execute("CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)")
            self._db.execute(
                "CREATE TABLE IF NOT EXISTS samples (id TEXT PRIMARY KEY, theme TEXT NOT NULL, "
                "src_video TEXT NOT NULL, prompt TEXT, added_at REAL NOT NULL)")
            self._db.execute(
                "CREATE TABLE IF NOT EXISTS stage_results (sample_id TEXT NOT NULL REFERENCES samples(id), "
                "stage INTEGER NOT NULL, status TEXT NOT NULL CHECK (status IN ('done', 'rejected', 'failed')), "
                "attempts INTEGER NOT NULL, score REAL, reason TEXT, record TEXT, seconds REAL, timing TEXT, "
                "finished_at REAL NOT NULL, PRIMARY KEY (sample_id, stage))")
            self._db.execute(
                "CREATE TABLE IF NOT EXISTS step_results (sample_id TEXT NOT NULL REFERENCES samples(id), "
                "stage INTEGER NOT NULL, step TEXT NOT NULL, state TEXT NOT NULL, seconds REAL, timing TEXT, "
                "finished_at REAL NOT NULL, PRIMARY KEY (sample_id, stage, step))")
            version = self._meta("schema_version")
            if version is None:
                self._set_meta("schema_version", str(SCHEMA_VERSION))
            elif int(version) != SCHEMA_VERSION:
                raise ManifestError(f"{self.path}: manifest schema {version}, this version of sparkle-fast writes "
                                    f"{SCHEMA_VERSION}; use a new --out folder")

    @contextlib.contextmanager
    def _transaction(self) -> Iterator[None]:
        """One write transaction: committed whole or rolled back whole."""
        self._db.execute("BEGIN IMMEDIATE")
        try:
            yield
        except BaseException:
            self._db.execute("ROLLBACK")
            raise
        self._db.execute("COMMIT")

    def _meta(self, key: str) -> str | None:
        row = self._db.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return row[0] if row else None

    def _set_meta(self, key: str, value: str) -> None:
        self._db.execute("INSERT INTO meta (key, value) VALUES (?, ?) ON CONFLICT(key) DO UPDATE SET value = "
                         "excluded.value", (key, value))

    # --- config -----------------------------------------------------------------------------------------------

    def stored_config(self) -> dict | None:
        """The resolved config the last run stored (record_config), or None before any run."""
        value = self._meta("config")
        return None if value is None else json.loads(value)

    def record_config(self, config: dict) -> list[str]:
        """Store the run's resolved config; return the keys whose values differ from the previous run's (empty on
        the first run or when nothing changed), so the driver can report a changed config."""
        previous = self._meta("config")
        with self._transaction():
            self._set_meta("config", json.dumps(config, sort_keys=True))
        if previous is None:
            return []
        return _changed_keys(json.loads(previous), config)

    # --- samples ----------------------------------------------------------------------------------------------

    def add_samples(self, samples: Iterable[SampleRow]) -> int:
        """Register samples (a sample already present is left as it is). Returns how many were new."""
        added = 0
        with self._transaction():
            for sample in samples:
                cursor = self._db.execute(
                    "INSERT OR IGNORE INTO samples (id, theme, src_video, prompt, added_at) VALUES (?, ?, ?, ?, ?)",
                    (sample.id, sample.theme, sample.src_video, sample.prompt, time.time()))
                added += cursor.rowcount
        return added

    def samples(self) -> list[SampleRow]:
        rows = self._db.execute("SELECT id, theme, src_video, prompt FROM samples ORDER BY id").fetchall()
        return [SampleRow(*row) for row in rows]

    # --- stage results ----------------------------------------------------------------------------------------

    def pending(self, stage: int, max_attempts: int) -> list[str]:
        """Sample ids that stage `stage` should (re)run: the previous stage is done (stage 1: any sample), and this
        stage is neither done nor rejected, nor failed `max_attempts` times."""
        previous = "" if stage == 1 else (
            "AND EXISTS (SELECT 1 FROM stage_results p WHERE p.sample_id = s.id AND p.stage = ? "
            "AND p.status = 'done')")
        query = (
            "SELECT s.id FROM samples s LEFT JOIN stage_results r ON r.sample_id = s.id AND r.stage = ? "
            f"WHERE (r.status IS NULL OR (r.status = 'failed' AND r.attempts < ?)) {previous} ORDER BY s.id")
        args = (stage, max_attempts) if stage == 1 else (stage, max_attempts, stage - 1)
        return [row[0] for row in self._db.execute(query, args).fetchall()]

    def finish(self, sample_id: str, stage: int, status: str, *, score: float | None = None,
               reason: str | None = None, record: Any = None, seconds: float | None = None,
               timing: dict | None = None) -> None:
        """Record the outcome of one stage for one sample (attempts counts every finished try)."""
        if status not in STATUSES:
            raise ValueError(f"status must be one of {STATUSES}, got {status!r}")
        if status != "done" and not reason:
            raise ValueError(f"a {status} result needs a reason")
        with self._transaction():
            self._db.execute(
                "INSERT INTO stage_results (sample_id, stage, status, attempts, score, reason, record, seconds, "
                "timing, finished_at) VALUES (?, ?, ?, 1, ?, ?, ?, ?, ?, ?) ON CONFLICT(sample_id, stage) DO UPDATE "
                "SET status = excluded.status, attempts = stage_results.attempts + 1, score = excluded.score, "
                "reason = excluded.reason, record = excluded.record, seconds = excluded.seconds, "
                "timing = excluded.timing, finished_at = excluded.finished_at",
                (sample_id, stage, status, score, reason, None if record is None else json.dumps(record),
                 seconds, None if timing is None else json.dumps(timing), time.time()))

    # --- step results -----------------------------------------------------------------------------------------

    def finish_step(self, sample_id: str, stage: int, step: str, state: dict, *, seconds: float | None = None,
                    timing: dict | None = None) -> None:
        """Record that `step` of `stage` finished for the sample and left `state` (JSON) for the stage's next step."""
        with self._transaction():
            self._db.execute(
                "INSERT INTO step_results (sample_id, stage, step, state, seconds, timing, finished_at) VALUES "
                "(?, ?, ?, ?, ?, ?, ?) ON CONFLICT(sample_id, stage, step) DO UPDATE SET state = excluded.state, "
                "seconds = excluded.seconds, timing = excluded.timing, finished_at = excluded.finished_at",
                (sample_id, stage, step, json.dumps(state), seconds, None if timing is None else json.dumps(timing),
                 time.time()))

    def finished_steps(self, sample_id: str, stage: int) -> dict[str, dict]:
        """{step: {"state", "seconds", "timing"}} of the stage's finished steps for the sample."""
        rows = self._db.execute("SELECT step, state, seconds, timing FROM step_results WHERE sample_id = ? AND "
                                "stage = ?", (sample_id, stage)).fetchall()
        return {step: {"state": json.loads(state), "seconds": seconds,
                       "timing": None if timing is None else json.loads(timing)}
                for step, state, seconds, timing in rows}

    def step_counts(self) -> dict[tuple[int, str], int]:
        """{(stage, step): samples that finished it and went on} over the manifest."""
        return {(stage, step): n for stage, step, n in self._db.execute(
            "SELECT stage, step, COUNT(*) FROM step_results GROUP BY stage, step")}

    def result(self, sample_id: str, stage: int) -> StageResultRow | None:
        row = self._db.execute(
            "SELECT sample_id, stage, status, attempts, score, reason, record, seconds, timing FROM stage_results "
            "WHERE sample_id = ? AND stage = ?", (sample_id, stage)).fetchone()
        return _result_row(row) if row else None

    def results(self, stage: int, status: str | None = None) -> list[StageResultRow]:
        query = ("SELECT sample_id, stage, status, attempts, score, reason, record, seconds, timing FROM "
                 "stage_results WHERE stage = ?" + (" AND status = ?" if status else "") + " ORDER BY sample_id")
        rows = self._db.execute(query, (stage, status) if status else (stage,)).fetchall()
        return [_result_row(row) for row in rows]

    def counts(self) -> dict[int, dict[str, int]]:
        """{stage: {status: count}} over all samples."""
        counts: dict[int, dict[str, int]] = {}
        for stage, status, n in self._db.execute(
                "SELECT stage, status, COUNT(*) FROM stage_results GROUP BY stage, status ORDER BY stage"):
            counts.setdefault(stage, {})[status] = n
        return counts


def _result_row(row) -> StageResultRow:
    sample_id, stage, status, attempts, score, reason, record, seconds, timing = row
    return StageResultRow(sample_id, stage, status, attempts, score, reason,
                          None if record is None else json.loads(record), seconds,
                          None if timing is None else json.loads(timing))


def _changed_keys(old: Any, new: Any, prefix: str = "") -> list[str]:
    """Dotted keys whose values differ between two nested dicts."""
    if isinstance(old, dict) and isinstance(new, dict):
        changed = []
        for key in sorted(set(old) | set(new)):
            changed += _changed_keys(old.get(key), new.get(key), f"{prefix}{key}.")
        return changed
    return [] if old == new else [prefix.rstrip(".")]
