"""The operations listener: health, readiness, metrics (and, next, the status page)."""
