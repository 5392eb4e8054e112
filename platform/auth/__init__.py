"""Identity and access: users, passwords, tokens, API keys, permissions, rate limits, OAuth
sign-in and share links. Everything lives in Redis under `gobuild:auth:` (the key names are in
`gobuild.platform.stores.keys`)."""
