"""`python -m gobuild.platform.gateway`: run the API gateway."""

from gobuild.platform.config import Settings
from gobuild.platform.gateway.app import create_app
from gobuild.platform.service import configure_logging, run_app
from gobuild.platform.storage_client import MissingInternalToken

if __name__ == "__main__":
    configure_logging("gateway")
    settings = Settings()
    try:
        app = create_app(settings)
    except MissingInternalToken as exc:
        raise SystemExit(str(exc)) from None
    run_app(app, settings.bind_host, settings.gateway_port)
