"""Per-request outcomes, rollups with percentiles, Prometheus text and drift reports (pure; no dagster)."""
