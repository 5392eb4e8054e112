"""`python -m gobuild.platform.notifications`: run the notification service."""

from gobuild.platform.config import Settings
from gobuild.platform.notifications.app import create_app
from gobuild.platform.service import configure_logging, run_app

if __name__ == "__main__":
    configure_logging("notifications")
    settings = Settings()
    run_app(create_app(settings), settings.bind_host, settings.notifications_port)
