"""`python -m gobuild.platform.gateway`: run the API gateway."""

from gobuild.platform.config import Settings
from gobuild.platform.gateway.app import create_app
from gobuild.platform.service import configure_logging, run_app

if __name__ == "__main__":
    configure_logging("gateway")
    settings = Settings()
    run_app(create_app(settings), settings.bind_host, settings.gateway_port)
