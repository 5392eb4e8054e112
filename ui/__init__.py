"""GoBuild's status dashboard (NiceGUI): a client of the gateway's API for everything it shows
and does, with its own Kafka consumer for the live path (states, logs, resource samples)."""
