"""The subcommands of `sparkle-fast`, one module each.

A command module defines NAME (the word on the command line), HELP (one line), add_arguments(parser) and
run(args) -> exit status. Import heavy libraries inside run(), not at module level: `sparkle-fast --help` loads every
command module. To add a command, add its module name to COMMAND_MODULES.
"""

COMMAND_MODULES = ("info", "vote_demo", "validate", "bait", "camera_motion", "run", "demo", "export_bench", "package", "plan", "eval",
                   "engines", "selftest", "check_models", "openve3m_filter")
