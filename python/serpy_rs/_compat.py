"""What the drop-in modules serpy_rs.serpy and serpy_rs.serpy2 have in common."""

import queue

from . import _errors
from ._native import Connection as _NativeConnection
from ._native import Server as _NativeServer

# How get_data hands out received pickles (see Pickles in src/lib.rs).
PICKLES_LOAD = 1
PICKLES_RAW = 2
PICKLES_SAFE = 3


def _not_supported_sock():
    return _errors.Unsupported(
        "Connection(sock=...) is not supported by serpy_rs: a Connection makes its own "
        "socket; use Connection(...).connect(adr, port), or a Server for accepted links"
    )


class BaseConnection:
    """The parts of the original Connection that serpy and serpy2 share."""

    _PROTOCOL = "v1"
    _ITER_TIMEOUT = 0.01

    def __init__(self, sock=None, auto_restart=False):
        if sock is not None:
            raise _not_supported_sock()
        self._native = None
        self._auto_restart = bool(auto_restart)
        self.adr = 0

    @classmethod
    def _wrap(cls, native, **attrs):
        self = cls.__new__(cls)
        self._native = native
        self._auto_restart = False
        self.adr = 0
        for k, v in attrs.items():
            setattr(self, k, v)
        return self

    # --- connecting ------------------------------------------------------------------

    def _connect_options(self):
        return {}

    def connect(self, adr, port):
        """Connects to a server at (adr, port) and returns self. A Connection that was
        connected is closed first."""
        if self._native is not None:
            self._native.close()
        native = _NativeConnection.connect(
            adr,
            port,
            protocol=self._PROTOCOL,
            auto_restart=self._auto_restart,
            **self._connect_options(),
        )
        self._native = native
        self.adr = (adr, port)
        return self

    def start(self):
        """The original started the threads of a Connection(sock=...); here a Connection
        runs from connect() on, so this only checks that it is connected."""
        if self._native is None:
            raise _errors.Closed(
                "this Connection is not connected: call connect(adr, port) first"
            )

    def _conn(self):
        if self._native is None:
            raise _errors.Disconnected(
                "this Connection is not connected: call connect(adr, port) first"
            )
        return self._native

    # --- state ------------------------------------------------------------------------

    @property
    def auto_restart(self):
        return self._auto_restart

    @auto_restart.setter
    def auto_restart(self, on):
        if on:
            self.enableRestart()
        else:
            self.disableRestart()

    @property
    def connected(self):
        return self.isConnected()

    def enableRestart(self):
        """Reconnect by itself when the link breaks."""
        self._auto_restart = True
        if self._native is not None:
            self._native.enable_restart()

    def disableRestart(self):
        """Stop reconnecting when the link breaks."""
        self._auto_restart = False
        if self._native is not None:
            self._native.disable_restart()

    def isConnected(self):
        """True while the link is up."""
        return self._native is not None and self._native.is_connected()

    def isDataAvailable(self):
        """True when received data waits to be read."""
        return self._native is not None and self._native.is_data_available()

    def close(self):
        """Writes what is queued, closes the socket and ends the threads."""
        if self._native is not None:
            self._native.close()

    # --- receiving --------------------------------------------------------------------

    def _received(self, value, mode):
        return value

    def getData(self, timeout=None):
        """The next received message, waiting at most timeout seconds (forever if None).

        Raises queue.Empty on timeout, serpy_rs.Disconnected once the link is down for good
        and everything it delivered has been read (the original blocked forever).
        """
        try:
            value, mode = self._conn().get_data_with_mode(timeout)
        except _errors.Timeout:
            raise queue.Empty from None
        return self._received(value, mode)

    def __iter__(self):
        """Yields the received data until none arrives for a short while."""
        while True:
            try:
                yield self.getData(timeout=self._ITER_TIMEOUT)
            except (queue.Empty, _errors.Disconnected, _errors.Closed):
                return

    # --- identity ---------------------------------------------------------------------

    def __eq__(self, other):
        if not isinstance(other, BaseConnection):
            return NotImplemented
        if self._native is None or other._native is None:
            return self is other
        return self._native == other._native

    def __ne__(self, other):
        eq = self.__eq__(other)
        return eq if eq is NotImplemented else not eq

    def __hash__(self):
        return hash(self._native.id) if self._native is not None else id(self)

    def __repr__(self):
        return "<{}.Connection {!r}>".format(type(self).__module__, self._native)


class BaseServer:
    """The parts of the original Server that serpy and serpy2 share."""

    _PROTOCOL = "v1"
    _CONNECTION: type = BaseConnection

    def _bind(self, adr, port, nb_conn, **options):
        self.adr = adr
        self.nb_conn = nb_conn
        self._wrappers = {}
        self._native = _NativeServer(
            adr,
            port,
            protocol=self._PROTOCOL,
            max_connections=nb_conn,
            **options,
        )
        # The real port (the one given, or the one picked for port 0).
        self.port = self._native.port

    def _wrap(self, native):
        w = self._wrappers.get(native.id)
        if w is None:
            # setdefault: two threads wrapping the same connection get the same object.
            w = self._CONNECTION._wrap(native, **self._connection_attrs())
            w = self._wrappers.setdefault(native.id, w)
        return w

    def _connection_attrs(self):
        return {}

    def start(self):
        """Returns self: the server accepts from its creation on."""
        return self

    def getConnection(self, timeout=None):
        """The next new Connection, waiting for it (at most timeout seconds if given:
        then queue.Empty)."""
        try:
            return self._wrap(self._native.get_connection(timeout))
        except _errors.Timeout:
            raise queue.Empty from None

    def getConnectionsList(self):
        """A copy of the list of the server's Connections."""
        natives = self._native.connections()
        ids = {c.id for c in natives}
        for gone in [i for i in list(self._wrappers) if i not in ids]:
            self._wrappers.pop(gone, None)
        return [self._wrap(c) for c in natives]

    @property
    def connections(self):
        return self.getConnectionsList()

    def readableConnections(self):
        """The Connections with received data waiting to be read."""
        return [self._wrap(c) for c in self._native.readable_connections()]

    def __iter__(self):
        yield from self.getConnectionsList()

    def __len__(self):
        return len(self._native)

    def close(self):
        """Stops accepting connections; the connections go on."""
        self._native.close()

    def closeServer(self):
        """Closes every connection and the server."""
        self._native.close_all()

    def __repr__(self):
        return "<{}.Server {!r}>".format(type(self).__module__, self._native)
