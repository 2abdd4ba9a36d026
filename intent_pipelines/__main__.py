"""`python -m intent_pipelines`: the `intent` command, for environments without its entry point on PATH."""

from intent_pipelines.cli.main import main

main()
