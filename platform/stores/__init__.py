"""Shared state in Redis: key names (`keys`) and one store module per concern.

`projects`, `builds` and `deployment_records` hold the pipeline's records; the auth package's
stores use the same `keys` module. `optimistic` is the one WATCH/MULTI retry loop.
"""
