"""Drop-in for the original ``serpy2`` module (protocol v2) on the serpy Rust core.

Change ``import serpy2 as sp`` into ``import serpy_rs.serpy2 as sp``; the rest of the
script stays as it is. Values keep their type: int (64-bit), float, str, bytes.

Where this module differs from the original (see the README, "From Python"):

- ``getData()`` on a link that is down for good (no auto-restart) returns what had arrived,
  then raises :class:`serpy_rs.Disconnected` instead of blocking forever.
- A frame with a bad checksum or bytes that are not a frame are reported as events
  (``Connection._native.events()``) and skipped, not printed.
- ``Server(..., nb_conn)`` refuses one connection more than ``nb_conn`` and goes on (the
  original's server thread stopped on an assertion). ``Server.getConnection()`` exists
  here too (serpy2 had none).
- ``sendData`` also takes any object with the buffer protocol (bytearray, memoryview,
  numpy arrays), sent as bytes.
- ``Connection(sock=...)`` is not supported (a Connection makes its own socket).
"""

import queue  # noqa: F401  (scripts use sp.queue.Empty / sp.queue.Full)
import select  # noqa: F401  (an attribute of the original module)
import socket  # noqa: F401
import threading  # noqa: F401
import warnings
from time import sleep  # noqa: F401

from . import _errors
from ._compat import BaseConnection, BaseServer

__all__ = ["Connection", "Server", "STIMEOUT", "QUEUELEN"]

STIMEOUT = 0.010
"""The original's polling period; the Rust core does not poll (kept for scripts that read it)."""
QUEUELEN = 20
"""The original's queue length; the Rust core's queues hold 1024 messages each way."""

BLOCKIDCODE = b"\xDE\xCA\xFE\xCA\xFE"
INTTYPECODE = b"\x01"
FLOATTYPECODE = b"\x11"
STRTYPECODE = b"\x21"
RAWBYTESTYPECODE = b"\x81"
HEADLEN = 14


class Connection(BaseConnection):
    """A TCP link to a serpy2 (v2) peer.

    ``Connection(sock=None, auto_restart=False)``; ``c = Connection(...).connect(adr, port)``.
    """

    _PROTOCOL = "v2"
    _ITER_TIMEOUT = STIMEOUT

    def connect(self, adr, port):
        """Connects to a server at (adr, port) and returns self; a connected Connection is
        closed first, with the original's warning."""
        if self.isConnected():
            warnings.warn("Already connected !! -> Closing connection")
        return super().connect(adr, port)

    def getData(self, timeout=None):
        """Returns the received data in its type (int, float, str or bytes).

        Waits at most ``timeout`` seconds (forever if None); raises queue.Empty on timeout.
        """
        return super().getData(timeout)

    def sendData(self, data, timeout=None):
        """Sends data: str (UTF-8), int (signed 64 bits), float (as float.hex()) or bytes.

        Returns None once queued; raises queue.Full if ``timeout`` runs out while the queue
        is full, TypeError for other types, OverflowError for an int beyond 64 bits.
        """
        t = type(data)
        if not (t is float or t is int or t is str or t is bytes):
            try:
                memoryview(data)
            except TypeError:
                raise TypeError("Unsupported data type. Cannot Send") from None
        try:
            self._conn().send(data, 0, timeout=timeout)
        except _errors.Timeout:
            raise queue.Full from None


class Server(BaseServer):
    """A server of serpy2 (v2) connections: ``s = Server(adr, port, nb_conn=5).start()``.

    It listens from its creation on; ``nb_conn`` is the most connections it keeps.
    """

    _PROTOCOL = "v2"
    _CONNECTION = Connection

    def __init__(self, adr, port, nb_conn=5):
        self._bind(adr, port, nb_conn)


def main(args):
    return 0
