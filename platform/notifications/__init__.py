"""The notification service: tells people and forges what happens to builds.

It consumes `build-status`, `build-completions`, `deployment-status` and `build-logs` as its
own consumer groups and, for each stage a build reaches, queues deliveries in Redis: commit
statuses to GitHub / GitLab, signed outgoing webhooks, e-mail to members who opted in. A worker
sends them with bounded concurrency, retries with backoff and records each in the project's
delivery log. Error lines found in build logs become the excerpt failure alerts quote, and are
published as `BuildErrorsFound`.
"""
