"""The exceptions of serpy_rs: one class per error of the Rust core.

Every class derives from :class:`serpy_rs.Error`, and also from the built-in exception
that fits, so that ``except ConnectionError`` or ``except TimeoutError`` catch them too.
The message of each says what happened and what to do.
"""

from typing import Any, Dict

__all__ = [
    "Error",
    "ConnectError",
    "AddressError",
    "IoError",
    "Timeout",
    "Disconnected",
    "Closed",
    "AckUncertain",
    "NotSent",
    "CutShort",
    "QueueFull",
    "OutgoingBytesFull",
    "MessageTooLarge",
    "EmptyMessage",
    "EncodingError",
    "Unsupported",
    "InvalidMode",
    "ProtocolError",
    "PickleError",
]


class Error(Exception):
    """Base class of every error serpy_rs raises (the Rust ``serpy::Error``)."""


class ConnectError(Error, ConnectionError):
    """Connecting to the peer failed (refused, unreachable, timed out).

    ``addr`` is the address tried; ``errno`` what the operating system said, if known.
    """


class AddressError(Error, OSError):
    """The address could not be resolved or bound (``addr``, ``errno``)."""


class IoError(Error, OSError):
    """Another I/O operation failed (``context`` says which)."""


class Timeout(Error, TimeoutError):
    """The call did not complete within its timeout.

    ``operation`` says what timed out (``"get_data"``, ``"send_data (waiting for the
    acknowledgement)"``, ...), ``after`` the timeout in seconds.
    """


class Disconnected(Error, ConnectionError):
    """The link is down for good and everything it delivered has been read."""


class Closed(Error):
    """The connection or server was closed by the program."""


class AckUncertain(Error):
    """The link broke while an acknowledged send waited for its acknowledgement: the
    message may or may not have arrived."""


class NotSent(Error):
    """The message was queued but never written: the link went down for good."""


class CutShort(Error):
    """The link went down for good while the message was being written: part of it
    reached the peer, which drops a message cut short; it was not delivered."""


class QueueFull(Error):
    """A connection's outgoing queue was full (``capacity`` messages waiting)."""


class OutgoingBytesFull(QueueFull):
    """A connection's outgoing queue held its byte budget (``outgoing_bytes``): ``queued``
    bytes were waiting, the budget is ``limit``. The peer does not read as fast as
    messages are sent, or the link is reconnecting. A kind of :class:`QueueFull`, so
    ``except QueueFull`` catches both bounds."""


class MessageTooLarge(Error, ValueError):
    """The message is larger than ``max_message_size`` (``size``, ``max``)."""


class EmptyMessage(Error, ValueError):
    """An empty message cannot travel in v1 mode 0 or 2 (the receiver would drop it)."""


class EncodingError(Error, UnicodeError):
    """Text cannot be encoded in the connection's text encoding (``encoding``)."""


class Unsupported(Error, ValueError):
    """The message or mode cannot travel over this protocol (e.g. an acknowledged mode
    over v2)."""


class InvalidMode(Error, ValueError):
    """A number that is not a v1 mode 0 to 5 (``mode``)."""


class ProtocolError(Error):
    """The peer broke the protocol."""


class PickleError(Error, ValueError):
    """A pickle could not be read or written by the core."""


for _name in __all__:
    # Shown as serpy_rs.Timeout (and so on) in tracebacks: that is where users find them.
    globals()[_name].__module__ = "serpy_rs"
del _name

_ENDS_ITERATION = (Disconnected, Closed)


def make(kind: str, message: str, attrs: Dict[str, Any]) -> Error:
    """Builds the exception ``kind`` (called by the extension module)."""
    cls = globals().get(kind, Error)
    if not (isinstance(cls, type) and issubclass(cls, Error)):
        cls = Error
    err = cls(message)
    for key, value in attrs.items():
        setattr(err, key, value)
    return err
