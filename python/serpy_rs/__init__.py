"""serpy_rs: easy, fast and dependable TCP/IP messaging on the serpy Rust core.

Two ways to use it:

- Existing scripts change one line: ``import serpy_rs.serpy as sp`` (for ``import serpy
  as sp``) or ``import serpy_rs.serpy2 as sp`` (for serpy2). The classes, methods,
  arguments, defaults, return values and exceptions are those of the original modules.
- New code uses the Pythonic API below::

      import serpy_rs

      with serpy_rs.Server("127.0.0.1", 0, protocol="v2") as server:
          with serpy_rs.connect("127.0.0.1", server.port, protocol="v2") as conn:
              peer = server.get_connection(timeout=5)
              conn.send(b"\\x00" * 1024)
              data = peer.get_data(timeout=5)

Blocking calls release the GIL; Ctrl-C interrupts a waiting ``get_data``,
``get_connection``, ``recv_any`` or ``next_event`` within a few tens of milliseconds.
"""

import atexit as _atexit
import enum as _enum
from typing import Any as _Any

from . import _errors
from ._errors import AckUncertain as AckUncertain
from ._errors import AddressError as AddressError
from ._errors import Closed as Closed
from ._errors import ConnectError as ConnectError
from ._errors import CutShort as CutShort
from ._errors import Disconnected as Disconnected
from ._errors import EmptyMessage as EmptyMessage
from ._errors import EncodingError as EncodingError
from ._errors import Error as Error
from ._errors import InvalidMode as InvalidMode
from ._errors import IoError as IoError
from ._errors import MessageTooLarge as MessageTooLarge
from ._errors import NotSent as NotSent
from ._errors import OutgoingBytesFull as OutgoingBytesFull
from ._errors import PickleError as PickleError
from ._errors import ProtocolError as ProtocolError
from ._errors import QueueFull as QueueFull
from ._errors import Timeout as Timeout
from ._errors import Unsupported as Unsupported
from ._native import DEFAULT_INCOMING_BYTES as DEFAULT_INCOMING_BYTES
from ._native import DEFAULT_OUTGOING_BYTES as DEFAULT_OUTGOING_BYTES
from ._native import DEFAULT_MAX_CONNECTIONS as DEFAULT_MAX_CONNECTIONS
from ._native import DEFAULT_MAX_MESSAGE_SIZE as DEFAULT_MAX_MESSAGE_SIZE
from ._native import DEFAULT_QUEUE_CAPACITY as DEFAULT_QUEUE_CAPACITY
from ._native import Connection as Connection
from ._native import Broadcast as Broadcast
from ._native import Event as Event
from ._native import Stats as Stats
from ._native import Pickled as Pickled
from ._native import Server as Server
from ._native import reset_logging as reset_logging

from . import _native

# Once the interpreter shuts down, the core's threads must not take the GIL to log.
_atexit.register(_native._stop_logging)

__version__ = "0.1.0"


class Mode(_enum.IntEnum):
    """The six v1 (serpy) modes; any int 0 to 5 is accepted where a Mode is."""

    PLAIN = 0
    """The bytes as they are; returns once queued."""
    PLAIN_ACK = 1
    """The bytes, acknowledged: returns once the peer has the message."""
    BASE85 = 2
    """Base85 of the bytes (any bytes); returns once queued."""
    BASE85_ACK = 3
    """Base85, acknowledged."""
    PICKLE = 4
    """A Python pickle (base85 on the wire); returns once queued."""
    PICKLE_ACK = 5
    """A Python pickle, acknowledged."""


def connect(host: str, port: int, **options: _Any) -> Connection:
    """Connects to a serpy server: ``Connection.connect(host, port, **options)``.

    Options (keyword only): ``protocol`` ("v1" or "v2"), ``auto_restart``, ``encoding``
    ("utf-8", "ascii", "latin-1"), ``allow_unpickle``, ``connect_timeout``,
    ``reconnect_backoff`` (first, max), ``give_up_after``, ``max_message_size``,
    ``incoming_capacity``, ``incoming_bytes``, ``outgoing_capacity``, ``nodelay``,
    ``keepalive``, ``close_timeout``, ``outgoing_bytes``, ``full_queue`` ("block",
    ("keep_latest", n) or ("disconnect", seconds)), ``idle_timeout``,
    ``connect_in_background``.
    """
    return Connection.connect(host, port, **options)


__all__ = [
    "Connection",
    "Server",
    "Event",
    "Broadcast",
    "Stats",
    "Pickled",
    "Mode",
    "connect",
    "reset_logging",
    "DEFAULT_INCOMING_BYTES",
    "DEFAULT_OUTGOING_BYTES",
    "DEFAULT_MAX_CONNECTIONS",
    "DEFAULT_MAX_MESSAGE_SIZE",
    "DEFAULT_QUEUE_CAPACITY",
] + list(_errors.__all__)
