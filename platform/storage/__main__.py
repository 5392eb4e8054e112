"""`python -m gobuild.platform.storage`: run the storage service."""

from gobuild.platform.config import Settings
from gobuild.platform.service import configure_logging, run_app
from gobuild.platform.storage.app import SERVICE_NAME, create_app
from gobuild.platform.storage_client import MissingInternalToken

if __name__ == "__main__":
    configure_logging(SERVICE_NAME)
    settings = Settings()
    try:
        app = create_app(settings)
    except MissingInternalToken as exc:
        raise SystemExit(str(exc)) from None
    run_app(app, settings.bind_host, settings.storage_port)
