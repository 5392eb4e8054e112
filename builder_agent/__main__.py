"""`python -m gobuild.builder_agent`: run a builder agent until SIGTERM or SIGINT.

On a signal the agent stops taking jobs; builds still running are stopped without committing
their jobs, so another builder runs them again.
"""

from __future__ import annotations

import asyncio
import signal

from gobuild.builder_agent.agent import Agent
from gobuild.platform.config import Settings
from gobuild.platform.service import configure_logging


async def run_until_signalled(settings: Settings) -> None:
    agent = Agent(settings)
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, agent.request_stop)
    await agent.run()


def main() -> None:
    configure_logging("builder")
    asyncio.run(run_until_signalled(Settings()))


if __name__ == "__main__":
    main()
