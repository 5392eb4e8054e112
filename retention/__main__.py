"""`python -m gobuild.retention`: run the retention job on its schedule."""

from gobuild.platform.config import Settings
from gobuild.platform.service import configure_logging, run_app
from gobuild.retention.app import create_app

if __name__ == "__main__":
    configure_logging("retention")
    settings = Settings()
    run_app(create_app(settings), settings.bind_host, settings.retention_port)
