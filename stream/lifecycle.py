"""Stopping long-running processes (worker, trainer) the same way.

The first SIGTERM or SIGINT asks the process to finish what it is doing and exit cleanly (the
worker commits its batch, the trainer publishes what is pending); a second one exits at once.
SIGUSR1 prints every thread's stack to stderr, to see where a process waits.
"""

from __future__ import annotations

import faulthandler
import logging
import os
import signal
from typing import Any

__all__ = ["GracefulStop", "Stoppable"]

log = logging.getLogger(__name__)


class GracefulStop:
    """A stop flag set by the first signal; ``what`` names what a clean stop still does."""

    def __init__(self, what: str) -> None:
        self.what = what
        self.requested = False
        self._signals = 0

    def request(self, *_: Any) -> None:
        self._signals += 1
        if self._signals > 1:
            log.warning("second stop signal: exiting at once")
            os._exit(130)
        log.info("stop requested: %s", self.what)
        self.requested = True

    def install(self) -> None:
        signal.signal(signal.SIGTERM, self.request)
        signal.signal(signal.SIGINT, self.request)
        faulthandler.register(signal.SIGUSR1, all_threads=True)


class Stoppable:
    """Mixin for a process object with ``self._stopper = GracefulStop(...)``: the signal API and
    the ``_stop`` flag its loop checks."""

    _stopper: GracefulStop

    def request_stop(self, *_: Any) -> None:
        """First call: stop cleanly. Second call: exit at once."""
        self._stopper.request()

    @property
    def _stop(self) -> bool:
        return self._stopper.requested

    def install_signal_handlers(self) -> None:
        """SIGTERM/SIGINT stop cleanly; SIGUSR1 prints the stacks."""
        self._stopper.install()
