"""The driver (installed as sparkle_fast.driver): the `sparkle-fast` command, and later the config, the SQLite
manifest, the runners and the report. It schedules, records and reports; the work itself lives in sparkle_fast."""
