"""`python -m gobuild.ui`: run the status dashboard."""

from __future__ import annotations

import logging
import os
import sys

from gobuild.platform.config import Settings
from gobuild.ui.app import DashboardConfigError, run


def main() -> int:
    # NiceGUI serves on its screen-test port when it believes it runs inside pytest; a
    # dashboard that a test's `gobuild dev` started inherits the variable that says so.
    os.environ.pop("PYTEST_CURRENT_TEST", None)
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s dashboard %(name)s: %(message)s"
    )
    try:
        run(Settings())
    except DashboardConfigError as exc:
        logging.getLogger("gobuild.ui").error("%s", exc)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
