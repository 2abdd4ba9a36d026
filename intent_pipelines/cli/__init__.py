"""The `intent` command line (click + rich)."""
