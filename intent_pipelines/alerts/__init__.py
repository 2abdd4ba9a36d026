"""Failure alerting: signatures, alert logs, runbook reports, forensics and webhook delivery."""
