"""The life of a request, one module per phase: preflight, steps, verify, rollback, resume, lease, finish."""
