"""The retention job: removes old artifacts, logs, deployments and build records, and caches
no build used for long, by policy, never what is live.

`sweep.RetentionSweep` is the library both the scheduled job (`python -m gobuild.retention`)
and the gateway's "run now" call; `app.create_app` runs it on a schedule.
"""
