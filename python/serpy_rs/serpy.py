"""Drop-in for the original ``serpy`` module (protocol v1) on the serpy Rust core.

Change ``import serpy as sp`` into ``import serpy_rs.serpy as sp``; the rest of the
script stays as it is. Classes, methods, arguments, defaults, return values and
exceptions are the original's; where the original lost data or hung, this module does
what the Rust core does (see the README, "From Python"):

- ``getData()`` on a link that is down for good (no auto-restart) returns what had arrived,
  then raises :class:`serpy_rs.Disconnected` instead of blocking forever.
- ``sendData`` in mode 1, 3 or 5 returns ``True`` once *this* message is acknowledged,
  ``False`` when its timeout ran out while waiting for the acknowledgement (one deadline,
  not twice the timeout); :class:`serpy_rs.AckUncertain` when the link broke meanwhile.
- An empty message in mode 0 or 2 (which the receiver would drop) raises
  :class:`serpy_rs.EmptyMessage`; a mode outside 0 to 5 raises :class:`serpy_rs.InvalidMode`
  (the original sent nothing, silently).
- Text holding ``0x1F``, ``0x04`` (mode 1) or starting with ``0x01`` is sent in base85
  (mode 2 or 3) with a warning, instead of being cut in two.
- ``force_mode`` never puts bytes on the wire in a mode the peer would misread: bytes
  forced to mode 4/5 travel as a pickle (its intended use); bytes forced to mode 0/1 travel
  as the text they are when they decode in the connection's encoding and hold no control
  byte, else as base85 (mode 2/3); either way they arrive as the same bytes (the original
  sent the base85 text in mode 0, which the peer received as garbage).
- ``encoding`` may be ``"ascii"`` (the default), ``"utf-8"`` or ``"latin-1"``.
- ``Connection(sock=...)`` is not supported (a Connection makes its own socket).

Received pickles (modes 4 and 5) are unpickled with Python's ``pickle`` when
``allow_unpickle`` is true (the original's default): only do that with peers you trust,
since unpickling runs code the peer chooses. ``allow_unpickle="safe"`` reads them with
the core's pickle reader instead, which imports and runs nothing (built-in types and
numpy arrays; other pickles arrive as :class:`serpy_rs.Pickled`).
"""

import pickle
import queue  # noqa: F401  (scripts use sp.queue.Empty / sp.queue.Full)
import select  # noqa: F401  (an attribute of the original module)
import socket  # noqa: F401
import threading  # noqa: F401
import warnings
from base64 import b85decode, b85encode  # noqa: F401
from time import sleep  # noqa: F401

from . import _errors
from ._compat import PICKLES_LOAD, PICKLES_RAW, PICKLES_SAFE, BaseConnection, BaseServer
from ._native import Connection as _NativeConnection  # noqa: F401

__all__ = ["Connection", "Server", "STIMEOUT"]

STIMEOUT = 0.050
"""The original's polling period; the Rust core does not poll (kept for scripts that read it)."""

_SUPPORTED_ENCODINGS = ("ascii", "utf-8", "latin-1")


def _check_encoding(encoding):
    try:
        "".encode(encoding)
        import codecs

        name = codecs.lookup(encoding).name
    except (LookupError, TypeError):
        raise LookupError("unknown encoding: {}".format(encoding)) from None
    if name not in ("ascii", "utf-8", "latin-1", "iso8859-1"):
        raise _errors.Unsupported(
            "encoding {!r} is not supported by serpy_rs: use one of {}".format(
                encoding, ", ".join(_SUPPORTED_ENCODINGS)
            )
        )
    return "latin-1" if name == "iso8859-1" else name


def _pickles_policy(allow_unpickle):
    if allow_unpickle == "safe":
        return PICKLES_SAFE
    return PICKLES_LOAD if allow_unpickle else PICKLES_RAW


class Connection(BaseConnection):
    """A TCP link to a serpy (v1) peer.

    ``Connection(sock=None, encoding='ascii', auto_restart=False, allow_unpickle=True)``;
    ``c = Connection(...).connect(adr, port)``.
    """

    _PROTOCOL = "v1"
    _ITER_TIMEOUT = 0.01

    def __init__(self, sock=None, encoding="ascii", auto_restart=False, allow_unpickle=True):
        super().__init__(sock, auto_restart)
        self._encoding = _check_encoding(encoding)
        self.encoding = encoding
        self._allow_unpickle = allow_unpickle if allow_unpickle == "safe" else bool(allow_unpickle)
        self.in_mode = 0
        self.out_mode = 0

    def _connect_options(self):
        return {"encoding": self._encoding, "_pickles": self._pickles()}

    def _pickles(self):
        return _pickles_policy(self._allow_unpickle)

    @property
    def allow_unpickle(self):
        return self._allow_unpickle

    @allow_unpickle.setter
    def allow_unpickle(self, on):
        self._allow_unpickle = on if on == "safe" else bool(on)
        if self._native is not None:
            self._native._pickles = self._pickles()

    def _received(self, value, mode):
        if mode is not None:
            self.in_mode = mode
        return value

    def getData(self, timeout=None):
        """Returns the received data: bytes (modes 0 to 3), or the unpickled object (modes
        4 and 5; the pickle's bytes when allow_unpickle is false).

        Waits at most ``timeout`` seconds (forever if None); raises queue.Empty on timeout.
        ``self.in_mode`` is the mode the returned message came in.
        """
        return super().getData(timeout)

    def sendData(self, data, mode=0, timeout=None, *, force_mode=False):
        """Sends data in a mode (0 to 5).

        - modes 0, 2, 4 return None once the message is queued (queue.Full if ``timeout``
          runs out while the queue is full);
        - modes 1, 3, 5 return True once the peer acknowledged this message, False if
          ``timeout`` ran out while waiting for the acknowledgement.

        int and float are sent as their text; str in the connection's encoding; bytes
        switch mode 0/4 to 2 and 1/5 to 3; other objects are pickled (mode 4 or 5).
        """
        mode_l = mode
        was_bytes = type(data) is bytes
        if type(data) is float or type(data) is int:
            data = str(data)
        elif was_bytes:
            if mode == 0 or mode == 4:
                mode = 2
                warnings.warn("Wrong mode used, using mode {} instead".format(mode))
            elif mode == 1 or mode == 5:
                mode = 3
                warnings.warn("Wrong mode used, using mode {} instead".format(mode))
        elif type(data) is not str:
            if mode == 0 or mode == 2:
                mode = 4
                warnings.warn("Wrong mode used, using mode {} instead".format(mode))
            elif mode == 1 or mode == 3:
                mode = 5
                warnings.warn("Wrong mode used, using mode {} instead".format(mode))

        pickled = None
        if force_mode:
            warnings.warn("Discouraged. Forcing mode {} instead of {}".format(mode_l, mode))
            if was_bytes and mode_l in (4, 5):
                # The intended use: bytes that are a pickle, unpickled by the receiver.
                pickled = data
                mode = mode_l
            elif was_bytes and mode_l in (0, 1):
                # Bytes received as text, forwarded in their mode: they go as that text
                # where it can travel raw (the core picks base85 where it cannot).
                try:
                    data = data.decode(self._encoding)
                    mode = mode_l
                except UnicodeDecodeError:
                    pass
        if pickled is None and mode in (4, 5):
            if type(data) is str:
                data = data.encode(self.encoding)
            pickled = pickle.dumps(data, protocol=pickle.HIGHEST_PROTOCOL)

        conn = self._conn()
        acked = mode in (1, 3, 5)
        try:
            if pickled is not None:
                conn._send_pickle(pickled, acked, timeout)
            else:
                conn.send(data, mode, timeout=timeout)
        except _errors.Timeout as e:
            if acked and "acknowledgement" in getattr(e, "operation", ""):
                self.out_mode = mode
                return False
            raise queue.Full from None
        self.out_mode = mode
        return True if acked else None


class Server(BaseServer):
    """A server of serpy (v1) connections.

    ``s = Server(adr, port, nb_conn=5, encoding='ascii', allow_unpickle=True).start()``.
    It listens from its creation on; ``nb_conn`` is the most connections it keeps (one
    more is refused, and the server goes on).
    """

    _PROTOCOL = "v1"
    _CONNECTION = Connection

    def __init__(self, adr, port, nb_conn=5, encoding="ascii", allow_unpickle=True):
        self.encoding = encoding
        self.allow_unpickle = allow_unpickle
        native_encoding = _check_encoding(encoding)
        self._bind(
            adr,
            port,
            nb_conn,
            encoding=native_encoding,
            _pickles=_pickles_policy(allow_unpickle),
        )

    def _connection_attrs(self):
        return {
            "encoding": self.encoding,
            "_encoding": _check_encoding(self.encoding),
            "_allow_unpickle": self.allow_unpickle if self.allow_unpickle == "safe" else bool(self.allow_unpickle),
            "in_mode": 0,
            "out_mode": 0,
        }


def main(args):
    return 0
