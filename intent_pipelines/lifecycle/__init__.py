"""The life of a request: how it ends (finish), who owns it and whether they are alive (liveness)."""
