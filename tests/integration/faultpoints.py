"""Run ``fraudstream worker`` with a fault at one point of the exactly-once commit protocol.

    python -m tests.integration.faultpoints POINT N worker --instance-id w1   # the CLI's args

Each point is a place between two steps of the protocol (``stream/runtime/worker.py``, module
docstring) where a commit is in flight and the next batch's outputs are held; the fault is
raised at the first such place from the ``N``-th on where the loop holds at least one output
(a commit after which no record follows, such as the last of a backlog, does not count):

* ``in_flight``: on the transactional-call thread after ``send_offsets_to_transaction``, before
  ``commit_transaction`` (step 4 done, 5 not): SIGKILL.
* ``committed``: on that thread right after ``commit_transaction`` returned, before the loop has
  seen it (step 5 done, 7 not: the held outputs were never produced): SIGKILL.
* ``produced``: in the loop right after the held outputs went into the next transaction (step 7
  done, the next commit not begun): SIGKILL.
* ``sigterm``: like ``in_flight`` but SIGTERM, and the commit then goes on: the worker must
  finish the batch, commit everything and exit cleanly.

A real worker process against the real broker; the points are reached by the worker's own
loop, not by timing. Not a mock: nothing the worker calls is replaced, only observed.
"""

from __future__ import annotations

import os
import signal
import sys
import threading

from stream.runtime import worker as worker_mod

POINTS = ("in_flight", "committed", "produced", "sigterm")


# How long the call thread waits for the loop to hold an output before it lets the commit go
# on and tries again at the next one. While it waits the commit does not return, so the loop
# keeps holding: with records left to process it holds one within milliseconds.
_HOLD_WAIT_S = 2.0


def _wait_for_held(worker: worker_mod.Worker) -> bool:
    """On the call thread: wait until the loop holds an output; False if it holds none within
    ``_HOLD_WAIT_S`` (no record followed this commit) or no commit is in flight any more."""
    tick = threading.Event()
    for _ in range(int(_HOLD_WAIT_S / 0.001)):
        held = worker._held
        if held is None:
            return False
        if held:
            return True
        tick.wait(0.001)
    return False


def install(point: str, nth: int) -> None:
    W = worker_mod.Worker
    count = [0]
    fired = [False]

    def due() -> bool:
        """Whether this point may fire now: the N-th place or a later one, not fired yet."""
        count[0] += 1
        return not fired[0] and count[0] >= nth

    def fire(sig: int) -> None:
        fired[0] = True
        sys.stderr.write(f"faultpoints: {point} #{nth}: signal {sig}\n")
        sys.stderr.flush()
        os.kill(os.getpid(), sig)

    if point in ("in_flight", "committed", "sigterm"):
        commit = W._commit_transaction

        def _commit_transaction(self, producer=None):
            on_thread = producer is not None  # the overlapped commit (not shutdown's own)
            if on_thread and point != "committed" and due() and _wait_for_held(self):
                fire(signal.SIGKILL if point == "in_flight" else signal.SIGTERM)
            commit(self, producer)
            if on_thread and point == "committed" and due() and _wait_for_held(self):
                fire(signal.SIGKILL)
        W._commit_transaction = _commit_transaction
    elif point == "produced":
        settle = W._settle_commit

        def _settle_commit(self):
            held = len(self._held or ())
            settle(self)
            if held and self._in_txn and due():
                fire(signal.SIGKILL)
        W._settle_commit = _settle_commit
    else:
        raise SystemExit(f"unknown point {point!r}; one of {', '.join(POINTS)}")


def main() -> None:
    point, nth = sys.argv[1], int(sys.argv[2])
    install(point, nth)
    from stream.cli import main as cli

    cli.main(args=sys.argv[3:], prog_name="fraudstream")


if __name__ == "__main__":
    main()
