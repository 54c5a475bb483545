"""Type stubs of the extension module (the Rust core); its classes are exported as
serpy_rs.Connection, serpy_rs.Server, serpy_rs.Event and serpy_rs.Pickled."""

from typing import Any, Iterator, List, Optional, Tuple, Union

from typing_extensions import Buffer, Literal, Self  # only for type checkers

Value = Union[int, float, str, bytes, "Pickled", Any]
"""What get_data returns: bytes (v1 modes 0-3), int/float/str/bytes (v2); for a pickle
(v1 modes 4-5) the objects the core's safe reader built, a Pickled it refused, or with
allow_unpickle=True what Python's pickle made."""
Sendable = Union[int, float, str, bytes, bytearray, memoryview, "Pickled", Buffer]
Address = Tuple[str, int]

SLICE_SECONDS: float
FullQueue = Union[
    Literal["block"],
    Tuple[Literal["keep_latest"], int],
    Tuple[Literal["disconnect"], float],
]
"""``full_queue=``: "block" (wait, the default), ("keep_latest", n): keep the newest n
plain messages and drop older ones, ("disconnect", seconds): drop a peer that has not
drained for that long."""

DEFAULT_MAX_MESSAGE_SIZE: int
DEFAULT_QUEUE_CAPACITY: int
DEFAULT_INCOMING_BYTES: int
DEFAULT_OUTGOING_BYTES: int
DEFAULT_MAX_CONNECTIONS: int

def reset_logging() -> None:
    """Forgets the cached levels of the loggers "serpy.*" (after changing them)."""

def _stop_logging() -> None: ...

class Connection:
    """One TCP link to a serpy peer. Make one with serpy_rs.connect() or
    Connection.connect(); a Server hands out the others. Closes with close(), at the
    end of a ``with`` block, or when the last reference goes."""

    @staticmethod
    def connect(
        host: str,
        port: int,
        *,
        protocol: Literal["v1", "v2"] = "v1",
        auto_restart: bool = False,
        encoding: Literal["utf-8", "ascii", "latin-1"] = "utf-8",
        allow_unpickle: bool = False,
        connect_timeout: Optional[float] = None,
        reconnect_backoff: Optional[Tuple[float, float]] = None,
        give_up_after: Optional[int] = None,
        max_message_size: Optional[int] = None,
        incoming_capacity: Optional[int] = None,
        incoming_bytes: Optional[int] = None,
        outgoing_capacity: Optional[int] = None,
        nodelay: Optional[bool] = None,
        keepalive: Optional[float] = None,
        close_timeout: Optional[float] = None,
        outgoing_bytes: Optional[int] = None,
        full_queue: Optional[FullQueue] = None,
        idle_timeout: Optional[float] = None,
        connect_in_background: bool = False,
    ) -> "Connection":
        """Connects to a serpy server. Raises ConnectError, AddressError."""
    def send(
        self,
        data: Sendable,
        mode: Optional[int] = None,
        *,
        timeout: Optional[float] = None,
        copy: bool = True,
    ) -> None:
        """Sends data in v1 mode (0-5, default 0); over v2 the value's type travels.
        Modes 1, 3, 5 return once the peer acknowledged this message. ``copy=False``
        shares a writable buffer instead of copying it: it must not change until sent."""
    def send_object(
        self,
        obj: Any,
        *,
        acked: bool = False,
        timeout: Optional[float] = None,
        protocol: Optional[int] = None,
    ) -> None:
        """Pickles obj and sends it in v1 mode 4 (5 with acked=True)."""
    def _send_pickle(self, data: bytes, acked: bool = False, timeout: Optional[float] = None) -> None: ...
    def get_data(self, timeout: Optional[float] = None) -> Value:
        """The next message, waiting at most timeout seconds (forever if None). Raises
        Timeout, Disconnected (the link is down for good, all was read), Closed."""
    def get_data_with_mode(self, timeout: Optional[float] = None) -> Tuple[Value, Optional[int]]:
        """The next message and the v1 mode it came in (None over v2)."""
    def try_get_data(self) -> Optional[Value]:
        """The next message if one has arrived, else None."""
    def try_iter(self) -> List[Value]:
        """The messages that have arrived, without waiting."""
    def __iter__(self) -> Self: ...
    def __next__(self) -> Value:
        """Blocking iteration; ends when the link is down for good (or closed)."""
    def is_connected(self) -> bool: ...
    def is_data_available(self) -> bool: ...
    def enable_restart(self) -> None: ...
    def disable_restart(self) -> None: ...
    def close(self) -> None:
        """Writes what is queued (at most close_timeout), closes, ends the threads."""
    def __enter__(self) -> Self: ...
    def __exit__(self, *args: object) -> bool: ...
    def next_event(self, timeout: Optional[float] = 0.0) -> Optional["Event"]:
        """The next event, waiting at most timeout (0: no wait; None: until one comes)."""
    def events(self) -> List["Event"]:
        """Every event waiting now, oldest first."""
    def stats(self) -> "Stats":
        """The connection's statistics now."""
    @property
    def peer_addr(self) -> Optional[Address]: ...
    @property
    def local_addr(self) -> Optional[Address]: ...
    @property
    def protocol(self) -> Literal["v1", "v2", "auto"]: ...
    @property
    def id(self) -> int: ...
    allow_unpickle: bool
    _pickles: int
    def __eq__(self, other: object) -> bool: ...
    def __hash__(self) -> int: ...

class Server:
    """Listens for serpy clients and hands out a Connection for each; accepts from its
    creation on. Closes every connection with close_all() or at the end of a ``with``."""

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 0,
        *,
        protocol: Literal["v1", "v2", "auto"] = "v1",
        max_connections: Optional[int] = None,
        detect_timeout: Optional[float] = None,
        encoding: Literal["utf-8", "ascii", "latin-1"] = "utf-8",
        allow_unpickle: bool = False,
        max_message_size: Optional[int] = None,
        incoming_capacity: Optional[int] = None,
        incoming_bytes: Optional[int] = None,
        outgoing_capacity: Optional[int] = None,
        nodelay: Optional[bool] = None,
        keepalive: Optional[float] = None,
        close_timeout: Optional[float] = None,
        outgoing_bytes: Optional[int] = None,
        full_queue: Optional[FullQueue] = None,
        idle_timeout: Optional[float] = None,
        first_message_timeout: Optional[float] = None,
        max_unproven: Optional[int] = None,
    ) -> None: ...
    @property
    def local_addr(self) -> Address: ...
    @property
    def port(self) -> int: ...
    def get_connection(self, timeout: Optional[float] = None) -> Connection: ...
    def try_get_connection(self) -> Optional[Connection]: ...
    def connections(self) -> List[Connection]: ...
    def readable_connections(self) -> List[Connection]: ...
    def recv_any(self, timeout: Optional[float] = None) -> Tuple[Connection, Value, Optional[int]]:
        """The next message from any connection: (connection, message, mode)."""
    def broadcast(
        self, data: Sendable, *, timeout: Optional[float] = None, copy: bool = True
    ) -> "Broadcast":
        """Sends data to every connection (encoded once); returns the report (``.sent``:
        how many it was queued for). A full queue misses it unless ``timeout`` gives it
        time to make room."""
    def broadcast_to(
        self, connections: List[Connection], data: Sendable, *, copy: bool = True
    ) -> "Broadcast":
        """Sends data to these connections only, never waiting on a full queue."""
    def stats(self) -> "Stats":
        """The statistics of every live connection, summed."""
    def next_event(self, timeout: Optional[float] = 0.0) -> Optional["Event"]:
        """The next server-wide event (those of every connection, "accepted",
        "refused"), waiting at most timeout (0: no wait; None: until one comes)."""
    def events(self) -> List["Event"]:
        """Every server-wide event waiting now, oldest first."""
    def __len__(self) -> int: ...
    def __iter__(self) -> Iterator[Connection]: ...
    def close(self) -> None:
        """Stops accepting; the connections go on."""
    def close_all(self) -> None:
        """Stops accepting and closes every connection."""
    def __enter__(self) -> Self: ...
    def __exit__(self, *args: object) -> bool: ...

class Event:
    """Something that happened to a connection or a server. ``id`` is the connection it
    concerns, ``at`` when it happened (seconds since the Unix epoch, as ``time.time()``
    gives: ``datetime.datetime.fromtimestamp(event.at)`` makes a datetime), ``kind``
    what; the fields that apply to that kind are set, the others are None."""

    id: int
    at: float
    kind: Literal[
        "connected", "disconnected", "reconnected", "gave_up", "lost",
        "protocol_detected", "protocol_error", "closed", "dropped", "idle_timeout",
        "unproven", "accepted", "refused", "other",
    ]
    peer: Optional[Address]
    reason: Optional[str]
    reconnecting: Optional[bool]
    attempts: Optional[int]
    messages: Optional[int]
    protocol: Optional[str]
    after: Optional[float]
    refusal: Optional[Literal["too_many_connections", "start_failed"]]
    limit: Optional[int]
    text: str

class Broadcast:
    """What became of a broadcast message at each connection."""

    @property
    def sent(self) -> int:
        """How many connections queued the message."""
    @property
    def dropped_total(self) -> int:
        """Older queued messages dropped by "keep_latest" policies to make room."""
    def is_complete(self) -> bool: ...
    def results(self) -> List[Tuple[Connection, Optional[BaseException]]]: ...
    def failures(self) -> List[Tuple[Connection, BaseException]]: ...
    def dropped(self) -> List[Tuple[Connection, int]]: ...
    def __len__(self) -> int: ...

class Stats:
    """Statistics of a connection, or summed over a server's connections; ``str()`` is
    the core's one-line summary. Times in seconds; ``last_received`` is a Unix
    timestamp like ``Event.at``."""

    connections: int
    messages_in: int
    bytes_in: int
    messages_out: int
    bytes_out: int
    reconnects: int
    dropped: int
    policy_disconnects: int
    protocol_errors: int
    queued_in: int
    queued_in_bytes: int
    queued_out: int
    queued_out_bytes: int
    last_received: Optional[float]
    acked: int
    ack_rtt_last: Optional[float]
    ack_rtt_mean: Optional[float]
    text: str

class Pickled:
    """A received pickle that the core's safe reader refused (it names a class other than
    the built-in types and numpy arrays); ``loads()`` unpickles it with Python's pickle."""

    def __init__(self, data: bytes) -> None: ...
    @property
    def data(self) -> bytes: ...
    def loads(self) -> Any:
        """Unpickles it (runs code the peer chose: only for peers you trust)."""
    def __bytes__(self) -> bytes: ...
    def __len__(self) -> int: ...
