"""`python -m gobuild.platform.orchestrator`: run the build orchestrator."""

from gobuild.platform.config import Settings
from gobuild.platform.orchestrator.app import create_app
from gobuild.platform.service import configure_logging, run_app

if __name__ == "__main__":
    configure_logging("orchestrator")
    settings = Settings()
    run_app(create_app(settings), settings.bind_host, settings.orchestrator_port)
