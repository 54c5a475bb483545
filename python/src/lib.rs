//! `serpy_rs._native`: the serpy Rust core as a CPython extension module (abi3, 3.8+).
//!
//! The Pythonic API (`serpy_rs.Connection`, `serpy_rs.Server`, ...) is defined here; the
//! drop-in modules `serpy_rs.serpy` and `serpy_rs.serpy2` are Python code on top of it.
//!
//! - Every call that can block releases the GIL. Waits (`get_data`, `get_connection`,
//!   `recv_any`, `next_event`) run in slices of [`SLICE`] with the GIL released and check
//!   for signals between them, so Ctrl-C interrupts them within about one slice. Sends
//!   that wait for room in the queue do the same; acknowledged sends run on a helper
//!   thread ([`AckHelpers`]) while the caller waits for the answer in slices.
//! - `bytes` and read-only buffers are sent without a copy: the Rust side holds a
//!   reference to the Python object until the message has been written.
//! - Core calls that take a lock or may join threads run with the GIL released: the
//!   core's threads log through Python's logging (pyo3-log), so they may wait for the GIL
//!   while holding a lock, and a caller holding the GIL must never wait for them.
//! - Received payloads become Python `bytes` once, with one copy out of the receive buffer
//!   (the stable ABI of CPython 3.8 has no buffer protocol for extension types).

use std::ffi::{c_int, c_void};
use std::mem::ManuallyDrop;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU8, Ordering};
use std::time::{Duration, Instant, UNIX_EPOCH};

use bytes::Bytes;
use pyo3::exceptions::{PyStopIteration, PyTypeError, PyValueError};
use pyo3::prelude::*;
use pyo3::sync::PyOnceLock;
use pyo3::types::{IntoPyDict, PyBool, PyBytes, PyDict, PyFloat, PyInt, PyList, PyString, PyTuple};

use serpy::{
    Error, Event as RustEvent, EventKind, FullQueue, Message, Mode, Protocol, Refusal, Text,
    TextEncoding,
};

/// How long one wait runs with the GIL released before signals are checked.
const SLICE: Duration = Duration::from_millis(20);

// ---------------------------------------------------------------------------------------
// Errors: the classes live in serpy_rs/_errors.py (so that they can inherit from the
// matching built-in exceptions as well); `_errors.make` builds an instance.
// ---------------------------------------------------------------------------------------

static MAKE_ERROR: PyOnceLock<Py<PyAny>> = PyOnceLock::new();

fn make_error(py: Python<'_>, kind: &str, message: String, attrs: Bound<'_, PyDict>) -> PyErr {
    let make = MAKE_ERROR.get_or_try_init(py, || -> PyResult<Py<PyAny>> {
        Ok(py.import("serpy_rs._errors")?.getattr("make")?.unbind())
    });
    let make = match make {
        Ok(m) => m.bind(py),
        Err(e) => return e,
    };
    match make.call1((kind, message, attrs)) {
        Ok(instance) => PyErr::from_value(instance),
        Err(e) => e,
    }
}

fn to_py_err(py: Python<'_>, e: Error) -> PyErr {
    to_py_err_ref(py, &e)
}

fn to_py_err_ref(py: Python<'_>, e: &Error) -> PyErr {
    let attrs = PyDict::new(py);
    let message = e.to_string();
    let set = |k: &str, v: Bound<'_, PyAny>| {
        let _ = attrs.set_item(k, v);
    };
    let kind = match e {
        Error::Connect { addr, source } => {
            set("addr", PyString::new(py, addr).into_any());
            if let Some(n) = source.raw_os_error() {
                set("errno", PyInt::new(py, n).into_any());
            }
            "ConnectError"
        }
        Error::Address { addr, source } => {
            set("addr", PyString::new(py, addr).into_any());
            if let Some(n) = source.raw_os_error() {
                set("errno", PyInt::new(py, n).into_any());
            }
            "AddressError"
        }
        Error::Io { context, source } => {
            set("context", PyString::new(py, context).into_any());
            if let Some(n) = source.raw_os_error() {
                set("errno", PyInt::new(py, n).into_any());
            }
            "IoError"
        }
        Error::Timeout { operation, after } => {
            set("operation", PyString::new(py, operation).into_any());
            set("after", PyFloat::new(py, after.as_secs_f64()).into_any());
            "Timeout"
        }
        Error::Disconnected => "Disconnected",
        Error::Closed => "Closed",
        Error::AckUncertain => "AckUncertain",
        Error::NotSent => "NotSent",
        Error::MessageTooLarge { size, max } => {
            set("size", PyInt::new(py, *size).into_any());
            set("max", PyInt::new(py, *max).into_any());
            "MessageTooLarge"
        }
        Error::EmptyMessage { mode } => {
            set("mode", PyInt::new(py, u8::from(*mode)).into_any());
            "EmptyMessage"
        }
        Error::Encoding { encoding, .. } => {
            set(
                "encoding",
                PyString::new(py, &encoding.to_string()).into_any(),
            );
            "EncodingError"
        }
        Error::Unsupported { .. } => "Unsupported",
        Error::InvalidMode(m) => {
            set("mode", PyInt::new(py, *m).into_any());
            "InvalidMode"
        }
        Error::CutShort => "CutShort",
        Error::QueueFull { capacity } => {
            set("capacity", PyInt::new(py, *capacity).into_any());
            "QueueFull"
        }
        Error::OutgoingBytesFull { queued, limit } => {
            set("queued", PyInt::new(py, *queued).into_any());
            set("limit", PyInt::new(py, *limit).into_any());
            "OutgoingBytesFull"
        }
        Error::Pickle(_) => "PickleError",
        Error::Protocol(_) => "ProtocolError",
        _ => "Error",
    };
    make_error(py, kind, message, attrs)
}

trait IntoPyResult<T> {
    fn py(self, py: Python<'_>) -> PyResult<T>;
}

impl<T> IntoPyResult<T> for Result<T, Error> {
    fn py(self, py: Python<'_>) -> PyResult<T> {
        self.map_err(|e| to_py_err(py, e))
    }
}

// ---------------------------------------------------------------------------------------
// Waiting in slices, with the GIL released, checking for signals between the slices.
// ---------------------------------------------------------------------------------------

fn duration(seconds: f64, what: &str) -> PyResult<Duration> {
    if !seconds.is_finite() || seconds < 0.0 {
        return Err(PyValueError::new_err(format!(
            "{what} must be a non-negative number of seconds (or None), not {seconds}"
        )));
    }
    Duration::try_from_secs_f64(seconds)
        .map_err(|e| PyValueError::new_err(format!("{what} = {seconds}: {e}")))
}

/// Runs `attempt(slice)` until it returns something other than `Error::Timeout`, in slices
/// of at most [`SLICE`], for at most `timeout` (forever if `None`). Between slices the
/// GIL is taken back and signal handlers run (Ctrl-C raises `KeyboardInterrupt` here).
fn wait_sliced<T: Send>(
    py: Python<'_>,
    timeout: Option<f64>,
    operation: &'static str,
    attempt: impl Fn(Duration) -> Result<T, Error> + Send + Sync,
) -> PyResult<T> {
    let limit = timeout.map(|t| duration(t, "timeout")).transpose()?;
    let deadline = limit.map(|l| Instant::now().checked_add(l));
    loop {
        let slice = match deadline {
            None | Some(None) => SLICE,
            Some(Some(d)) => SLICE.min(d.saturating_duration_since(Instant::now())),
        };
        match py.detach(|| attempt(slice)) {
            Err(Error::Timeout { .. }) => {
                py.check_signals()?;
                if let Some(Some(d)) = deadline {
                    if Instant::now() >= d {
                        let after = limit.unwrap_or_default();
                        return Err(to_py_err(py, Error::Timeout { operation, after }));
                    }
                }
            }
            other => return other.py(py),
        }
    }
}

// ---------------------------------------------------------------------------------------
// Python values to messages (without a copy where it is safe) and back.
// ---------------------------------------------------------------------------------------

/// The bytes of a Python `bytes` object, shared with the Rust side without a copy. A
/// `bytes` object is immutable, and the reference held here keeps it alive.
struct PyBytesOwner {
    _obj: Py<PyAny>,
    ptr: usize,
    len: usize,
}

impl AsRef<[u8]> for PyBytesOwner {
    fn as_ref(&self) -> &[u8] {
        // SAFETY: `ptr`/`len` describe the buffer of an immutable object (a `bytes`, or the
        // read-only export a memoryview holds) that `_obj` keeps alive and unchanged for
        // as long as this owner exists. Reading it needs no GIL.
        unsafe { std::slice::from_raw_parts(self.ptr as *const u8, self.len) }
    }
}

/// `Py_buffer` as laid out by CPython 3.x (stable since 3.3; part of the limited API
/// only from 3.11, which is why it is declared here for the 3.8 stable ABI).
#[repr(C)]
struct RawBuffer {
    buf: *mut c_void,
    obj: *mut pyo3::ffi::PyObject,
    len: pyo3::ffi::Py_ssize_t,
    itemsize: pyo3::ffi::Py_ssize_t,
    readonly: c_int,
    ndim: c_int,
    format: *mut std::ffi::c_char,
    shape: *mut pyo3::ffi::Py_ssize_t,
    strides: *mut pyo3::ffi::Py_ssize_t,
    suboffsets: *mut pyo3::ffi::Py_ssize_t,
    internal: *mut c_void,
}

extern "C" {
    fn PyObject_GetBuffer(
        obj: *mut pyo3::ffi::PyObject,
        view: *mut RawBuffer,
        flags: c_int,
    ) -> c_int;
    fn PyBuffer_Release(view: *mut RawBuffer);
}

/// A contiguous view of `mv` (a memoryview): (pointer, length, read-only), or `None` when
/// the memory is not contiguous.
fn contiguous_view(py: Python<'_>, mv: &Bound<'_, PyAny>) -> Option<(usize, usize, bool)> {
    let mut view = std::mem::MaybeUninit::<RawBuffer>::zeroed();
    // SAFETY: `mv` is a live object and the GIL is held; PyBUF_SIMPLE (0) asks for a
    // contiguous buffer of bytes. On success the view is released right away: the
    // memoryview keeps its own export of the same memory, which stays valid while the
    // memoryview lives.
    unsafe {
        if PyObject_GetBuffer(mv.as_ptr(), view.as_mut_ptr(), 0) != 0 {
            // Not contiguous (BufferError): the caller copies instead.
            let _ = PyErr::take(py);
            return None;
        }
        let v = view.assume_init_mut();
        let out = (v.buf as usize, v.len.max(0) as usize, v.readonly != 0);
        PyBuffer_Release(v);
        Some(out)
    }
}

/// The payload of a buffer-protocol object: shared without a copy when it is read-only
/// (or `copy` is false), copied once otherwise.
fn buffer_bytes(py: Python<'_>, obj: &Bound<'_, PyAny>, copy: bool) -> PyResult<Bytes> {
    let builtins = py.import("builtins")?;
    let mv = match builtins.getattr("memoryview")?.call1((obj,)) {
        Ok(mv) => mv,
        Err(_) => {
            return Err(PyTypeError::new_err(format!(
                "cannot send a {}: send an int, a float, a str, bytes, or an object with the \
                 buffer protocol (bytearray, memoryview, numpy array); to send any other \
                 object over v1, pickle it with send_object()",
                obj.get_type().name()?
            )))
        }
    };
    match contiguous_view(py, &mv) {
        Some((ptr, len, readonly)) if readonly || !copy => Ok(Bytes::from_owner(PyBytesOwner {
            _obj: mv.unbind(),
            ptr,
            len,
        })),
        Some((ptr, len, _)) => {
            // SAFETY: the view is valid while `mv` lives and the GIL is held.
            let slice = unsafe { std::slice::from_raw_parts(ptr as *const u8, len) };
            Ok(Bytes::copy_from_slice(slice))
        }
        None => {
            let b = mv.call_method0("tobytes")?.cast_into::<PyBytes>()?;
            Ok(bytes_of(b))
        }
    }
}

fn bytes_of(b: Bound<'_, PyBytes>) -> Bytes {
    let s = b.as_bytes();
    let (ptr, len) = (s.as_ptr() as usize, s.len());
    Bytes::from_owner(PyBytesOwner {
        _obj: b.into_any().unbind(),
        ptr,
        len,
    })
}

fn to_message(py: Python<'_>, obj: &Bound<'_, PyAny>, copy: bool) -> PyResult<Message> {
    if let Ok(b) = obj.cast::<PyBytes>() {
        return Ok(Message::Bytes(bytes_of(b.clone())));
    }
    if let Ok(s) = obj.cast::<PyString>() {
        return Ok(Message::Text(Text::from(s.to_cow()?.as_ref())));
    }
    if obj.is_instance_of::<PyBool>() || obj.is_instance_of::<PyInt>() {
        return Ok(Message::Int(obj.extract::<i64>()?));
    }
    if let Ok(f) = obj.cast::<PyFloat>() {
        return Ok(Message::Float(f.value()));
    }
    if let Ok(p) = obj.cast::<Pickled>() {
        return Ok(Message::Pickle(bytes_of(p.get().data.bind(py).clone())));
    }
    Ok(Message::Bytes(buffer_bytes(py, obj, copy)?))
}

/// What `get_data` does with a received pickle (v1 modes 4 and 5).
#[derive(Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
enum Pickles {
    /// Hand out a `Pickled` object (the Pythonic default: nothing is unpickled unasked).
    Wrap = 0,
    /// Unpickle it with Python's `pickle` (`allow_unpickle=True`).
    Load = 1,
    /// Hand out the raw pickle bytes (the drop-in `serpy` with `allow_unpickle=False`).
    Raw = 2,
    /// Decode it with the core's pickle reader, which never imports or runs anything,
    /// into the Python objects it stands for; a pickle it refuses (objects of other
    /// classes, ...) is handed out as a `Pickled` (the Pythonic default).
    Safe = 3,
}

impl Pickles {
    fn from_u8(v: u8) -> Self {
        match v {
            1 => Pickles::Load,
            2 => Pickles::Raw,
            3 => Pickles::Safe,
            _ => Pickles::Wrap,
        }
    }
}

fn pybytes<'py>(py: Python<'py>, b: &[u8]) -> Bound<'py, PyAny> {
    PyBytes::new(py, b).into_any()
}

fn to_value(py: Python<'_>, msg: Message, pickles: Pickles) -> PyResult<Py<PyAny>> {
    Ok(match msg {
        Message::Int(i) => PyInt::new(py, i).into_any().unbind(),
        Message::Float(f) => PyFloat::new(py, f).into_any().unbind(),
        Message::Text(t) => PyString::new(py, t.as_str()).into_any().unbind(),
        Message::Bytes(b) => pybytes(py, &b).unbind(),
        Message::Pickle(b) => match pickles {
            Pickles::Load => py
                .import("pickle")?
                .getattr("loads")?
                .call1((pybytes(py, &b),))?
                .unbind(),
            Pickles::Raw => pybytes(py, &b).unbind(),
            Pickles::Safe => match serpy::pickle::decode_bytes(&b) {
                Ok(v) => match value_to_py(py, &v) {
                    Ok(Some(obj)) => obj.unbind(),
                    Ok(None) => wrap_pickle(py, &b)?,
                    Err(e) => return Err(e),
                },
                Err(_) => wrap_pickle(py, &b)?,
            },
            Pickles::Wrap => Py::new(
                py,
                Pickled {
                    data: PyBytes::new(py, &b).unbind(),
                },
            )?
            .into_any(),
        },
        // A kind of message this package does not know yet: an error that says so,
        // never a silent loss.
        other => {
            return Err(pyo3::exceptions::PyNotImplementedError::new_err(format!(
                "received a kind of message this version of serpy_rs cannot convert: {other:?}; upgrade serpy_rs"
            )))
        }
    })
}

fn wrap_pickle(py: Python<'_>, b: &[u8]) -> PyResult<Py<PyAny>> {
    Ok(Py::new(
        py,
        Pickled {
            data: PyBytes::new(py, b).unbind(),
        },
    )?
    .into_any())
}

/// The Python object a decoded pickle stands for, or `None` when it cannot be built
/// here (a numpy array without numpy installed, a kind of value this code does not know).
fn value_to_py<'py>(
    py: Python<'py>,
    v: &serpy::pickle::Value,
) -> PyResult<Option<Bound<'py, PyAny>>> {
    use serpy::pickle::Value as V;
    let items = |xs: &[V]| -> PyResult<Option<Vec<Bound<'py, PyAny>>>> {
        let mut out = Vec::with_capacity(xs.len());
        for x in xs {
            match value_to_py(py, x)? {
                Some(o) => out.push(o),
                None => return Ok(None),
            }
        }
        Ok(Some(out))
    };
    let builtins = || py.import("builtins");
    Ok(Some(match v {
        V::None => py.None().into_bound(py),
        V::Bool(b) => PyBool::new(py, *b).to_owned().into_any(),
        V::Int(i) => PyInt::new(py, *i).into_any(),
        V::BigInt(b) => py.import("builtins")?.getattr("int")?.call_method(
            "from_bytes",
            (PyBytes::new(py, b.to_signed_bytes_le()), "little"),
            Some(&[("signed", true)].into_py_dict(py)?),
        )?,
        V::Float(f) => PyFloat::new(py, *f).into_any(),
        V::Complex { re, im } => builtins()?.getattr("complex")?.call1((*re, *im))?,
        V::Str(t) => PyString::new(py, t.as_str()).into_any(),
        V::Bytes(b) => PyBytes::new(py, b).into_any(),
        V::ByteArray(b) => pyo3::types::PyByteArray::new(py, b).into_any(),
        V::List(xs) => match items(xs)? {
            Some(o) => PyList::new(py, o)?.into_any(),
            None => return Ok(None),
        },
        V::Tuple(xs) => match items(xs)? {
            Some(o) => PyTuple::new(py, o)?.into_any(),
            None => return Ok(None),
        },
        V::Set(xs) => match items(xs)? {
            Some(o) => pyo3::types::PySet::new(py, o)?.into_any(),
            None => return Ok(None),
        },
        V::FrozenSet(xs) => match items(xs)? {
            Some(o) => pyo3::types::PyFrozenSet::new(py, o)?.into_any(),
            None => return Ok(None),
        },
        V::Dict(pairs) => {
            let d = PyDict::new(py);
            for (k, val) in pairs {
                match (value_to_py(py, k)?, value_to_py(py, val)?) {
                    (Some(k), Some(val)) => d.set_item(k, val)?,
                    _ => return Ok(None),
                }
            }
            d.into_any()
        }
        V::Array(a) => {
            let Ok(np) = py.import("numpy") else {
                return Ok(None);
            };
            let dtype = a.dtype();
            let code = format!("{}{}", dtype.order_char(), dtype.code());
            let shape = PyTuple::new(py, a.shape())?;
            let order = if a.is_fortran_order() { "F" } else { "C" };
            let flat = np.call_method1("frombuffer", (PyBytes::new(py, a.data()), code))?;
            let kwargs = [("order", order)].into_py_dict(py)?;
            // A writable array of its own, as unpickling gives.
            let keep = [("order", "A")].into_py_dict(py)?;
            flat.call_method("reshape", (shape,), Some(&kwargs))?
                .call_method("copy", (), Some(&keep))?
        }
        #[allow(unreachable_patterns)]
        _ => return Ok(None),
    }))
}

fn mode_from(value: &Bound<'_, PyAny>) -> PyResult<Mode> {
    let n: i64 = value
        .extract()
        .map_err(|_| PyTypeError::new_err("mode must be an int 0 to 5 (or a serpy_rs.Mode)"))?;
    let py = value.py();
    u8::try_from(n)
        .map_err(|_| Error::InvalidMode(u8::MAX))
        .and_then(Mode::try_from)
        .map_err(|e| match e {
            Error::InvalidMode(_) => {
                let attrs = PyDict::new(py);
                let _ = attrs.set_item("mode", n);
                make_error(
                    py,
                    "InvalidMode",
                    format!("{n} is not a serpy mode; modes are 0 to 5"),
                    attrs,
                )
            }
            e => to_py_err(py, e),
        })
}

fn mode_value(py: Python<'_>, mode: Option<Mode>) -> Py<PyAny> {
    match mode {
        Some(m) => PyInt::new(py, u8::from(m)).into_any().unbind(),
        None => py.None(),
    }
}

fn addr_tuple(py: Python<'_>, a: Option<SocketAddr>) -> PyResult<Py<PyAny>> {
    match a {
        Some(a) => Ok(PyTuple::new(
            py,
            [
                PyString::new(py, &a.ip().to_string()).into_any(),
                PyInt::new(py, a.port()).into_any(),
            ],
        )?
        .into_any()
        .unbind()),
        None => Ok(py.None()),
    }
}

fn protocol_from(name: &str, server: bool) -> PyResult<Protocol> {
    match name.to_ascii_lowercase().as_str() {
        "v1" | "1" | "serpy" => Ok(Protocol::V1),
        "v2" | "2" | "serpy2" => Ok(Protocol::V2),
        "auto" if server => Ok(Protocol::Auto),
        _ => Err(PyValueError::new_err(format!(
            "protocol {name:?} is not known: use \"v1\" (serpy), \"v2\" (serpy2){}",
            if server { " or \"auto\"" } else { "" }
        ))),
    }
}

fn protocol_name(p: Protocol) -> &'static str {
    match p {
        Protocol::V1 => "v1",
        Protocol::V2 => "v2",
        _ => "auto",
    }
}

fn encoding_from(name: &str) -> PyResult<TextEncoding> {
    let n = name.to_ascii_lowercase().replace('_', "-");
    match n.as_str() {
        "utf-8" | "utf8" | "u8" => Ok(TextEncoding::Utf8),
        "ascii" | "us-ascii" | "646" => Ok(TextEncoding::Ascii),
        "latin-1" | "latin1" | "iso-8859-1" | "iso8859-1" | "l1" => Ok(TextEncoding::Latin1),
        _ => Err(PyValueError::new_err(format!(
            "encoding {name:?} is not supported: use \"utf-8\", \"ascii\" or \"latin-1\""
        ))),
    }
}

fn host_port(host: &str, port: u16) -> (String, u16) {
    // As with Python sockets, "" means every interface.
    let host = if host.is_empty() { "0.0.0.0" } else { host };
    (
        host.trim_start_matches('[')
            .trim_end_matches(']')
            .to_string(),
        port,
    )
}

// ---------------------------------------------------------------------------------------
// Options shared by connections and servers.
// ---------------------------------------------------------------------------------------

#[derive(Default)]
struct Options {
    encoding: Option<TextEncoding>,
    max_message_size: Option<usize>,
    incoming_capacity: Option<usize>,
    incoming_bytes: Option<usize>,
    outgoing_capacity: Option<usize>,
    nodelay: Option<bool>,
    keepalive: Option<Option<Duration>>,
    close_timeout: Option<Duration>,
    outgoing_bytes: Option<usize>,
    full_queue: Option<FullQueue>,
    idle_timeout: Option<Duration>,
}

/// Sets on builder `$b` each option of `$o` (an [`Options`]) that the caller gave.
macro_rules! apply_options {
    ($b:expr, $o:expr) => {{
        let mut b = $b;
        let o = $o;
        apply_options!(@each b, o: encoding, max_message_size, incoming_capacity,
            incoming_bytes, outgoing_capacity, nodelay, keepalive, close_timeout,
            outgoing_bytes, full_queue);
        if let Some(v) = o.idle_timeout {
            b = b.idle_timeout(Some(v));
        }
        b
    }};
    (@each $b:ident, $o:ident: $($option:ident),*) => {
        $(
            if let Some(v) = $o.$option {
                $b = $b.$option(v);
            }
        )*
    };
}

#[allow(clippy::too_many_arguments)]
fn options(
    encoding: &str,
    max_message_size: Option<usize>,
    incoming_capacity: Option<usize>,
    incoming_bytes: Option<usize>,
    outgoing_capacity: Option<usize>,
    nodelay: Option<bool>,
    keepalive: Option<f64>,
    close_timeout: Option<f64>,
    outgoing_bytes: Option<usize>,
    full_queue: Option<&Bound<'_, PyAny>>,
    idle_timeout: Option<f64>,
) -> PyResult<Options> {
    let positive = |v: Option<usize>, what: &str| -> PyResult<Option<usize>> {
        match v {
            Some(0) => Err(PyValueError::new_err(format!("{what} must be at least 1"))),
            v => Ok(v),
        }
    };
    Ok(Options {
        encoding: Some(encoding_from(encoding)?),
        max_message_size: positive(max_message_size, "max_message_size")?,
        incoming_capacity: positive(incoming_capacity, "incoming_capacity")?,
        incoming_bytes: positive(incoming_bytes, "incoming_bytes")?,
        outgoing_capacity: positive(outgoing_capacity, "outgoing_capacity")?,
        nodelay,
        keepalive: keepalive
            .map(|k| duration(k, "keepalive").map(Some))
            .transpose()?,
        close_timeout: close_timeout
            .map(|c| duration(c, "close_timeout"))
            .transpose()?,
        outgoing_bytes: positive(outgoing_bytes, "outgoing_bytes")?,
        full_queue: full_queue.map(full_queue_from).transpose()?,
        idle_timeout: idle_timeout
            .map(|t| duration(t, "idle_timeout"))
            .transpose()?,
    })
}

/// `full_queue=`: "block", ("keep_latest", n) or ("disconnect", seconds).
fn full_queue_from(v: &Bound<'_, PyAny>) -> PyResult<FullQueue> {
    let bad = || {
        PyValueError::new_err(format!(
            "full_queue must be \"block\", (\"keep_latest\", n) with n >= 1, or \
             (\"disconnect\", seconds), not {v}"
        ))
    };
    if let Ok(name) = v.extract::<String>() {
        return match name.as_str() {
            "block" => Ok(FullQueue::Block),
            _ => Err(bad()),
        };
    }
    let (name, arg): (String, Bound<'_, PyAny>) = v.extract().map_err(|_| bad())?;
    match name.as_str() {
        "keep_latest" => match arg.extract::<usize>() {
            Ok(n) if n >= 1 && !arg.is_instance_of::<PyBool>() => Ok(FullQueue::KeepLatest(n)),
            _ => Err(bad()),
        },
        "disconnect" => {
            let secs: f64 = arg.extract().map_err(|_| bad())?;
            Ok(FullQueue::Disconnect(duration(
                secs,
                "full_queue disconnect time",
            )?))
        }
        _ => Err(bad()),
    }
}

// ---------------------------------------------------------------------------------------
// Connection
// ---------------------------------------------------------------------------------------

/// One acknowledged send, done on a helper thread while the caller waits in slices.
struct AckJob {
    conn: serpy::Connection,
    msg: Message,
    mode: Mode,
    limit: Option<Duration>,
    answer: crossbeam_channel::Sender<Result<(), Error>>,
}

impl AckJob {
    fn run(self, idle: Option<&AtomicBool>) {
        let r = match self.limit {
            None => self.conn.send_data(self.msg, self.mode),
            Some(t) => self.conn.send_data_timeout(self.msg, self.mode, t),
        };
        drop(self.conn);
        if let Some(idle) = idle {
            // Free again before the answer goes out, so that the caller's next send finds
            // this thread available.
            idle.store(true, Ordering::Release);
        }
        let _ = self.answer.send(r);
    }
}

/// The helper threads of a connection's acknowledged sends: one that stays (started with
/// the first acknowledged send; the usual case is one send at a time), and one more per
/// send made while it is busy, which ends with that send. `close()` and the end of the
/// object stop the one that stays.
struct AckHelpers {
    #[allow(clippy::type_complexity)]
    jobs: std::sync::Mutex<
        Option<(
            crossbeam_channel::Sender<AckJob>,
            std::thread::JoinHandle<()>,
        )>,
    >,
    idle: std::sync::Arc<AtomicBool>,
    stopped: AtomicBool,
}

impl AckHelpers {
    fn new() -> Self {
        AckHelpers {
            jobs: std::sync::Mutex::new(None),
            idle: std::sync::Arc::new(AtomicBool::new(true)),
            stopped: AtomicBool::new(false),
        }
    }

    fn run(&self, job: AckJob) -> std::io::Result<()> {
        let name = format!("serpy-py-ack-{}", job.conn.id());
        if !self.stopped.load(Ordering::Acquire) && self.idle.swap(false, Ordering::AcqRel) {
            let mut jobs = self.jobs.lock().unwrap_or_else(|e| e.into_inner());
            if jobs.is_none() {
                let (tx, rx) = crossbeam_channel::unbounded::<AckJob>();
                let idle = self.idle.clone();
                let started = std::thread::Builder::new()
                    .name(name.clone())
                    .spawn(move || {
                        for job in rx {
                            job.run(Some(&idle));
                        }
                    });
                match started {
                    Ok(handle) => *jobs = Some((tx, handle)),
                    Err(e) => {
                        self.idle.store(true, Ordering::Release);
                        return Err(e);
                    }
                }
            }
            let sent = match jobs.as_ref() {
                Some((tx, _)) => tx.send(job),
                None => Err(crossbeam_channel::SendError(job)),
            };
            match sent {
                Ok(()) => return Ok(()),
                Err(crossbeam_channel::SendError(job)) => {
                    // The thread is gone; do this one on a thread of its own.
                    *jobs = None;
                    self.idle.store(true, Ordering::Release);
                    return Self::spawn_one(name, job);
                }
            }
        }
        Self::spawn_one(name, job)
    }

    fn spawn_one(name: String, job: AckJob) -> std::io::Result<()> {
        std::thread::Builder::new()
            .name(name)
            .spawn(move || job.run(None))
            .map(drop)
    }

    /// Ends the thread that stays, after the send it is doing (which a closed connection
    /// ends at once), and waits for it. Call it without the GIL.
    fn stop(&self) {
        self.stopped.store(true, Ordering::Release);
        let taken = self.jobs.lock().unwrap_or_else(|e| e.into_inner()).take();
        if let Some((tx, handle)) = taken {
            drop(tx);
            let _ = handle.join();
        }
    }
}

/// One TCP link to a serpy peer (see the module documentation and `__init__.pyi`).
#[pyclass(module = "serpy_rs", name = "Connection", frozen)]
struct PyConnection {
    /// Taken out in `Drop`, to be dropped with the GIL released (see `release`).
    inner: ManuallyDrop<serpy::Connection>,
    pickles: AtomicU8,
    /// A client connection made by `connect`: this object is its only Python handle, so
    /// dropping it closes the connection, even while a helper thread still holds a handle
    /// (an acknowledged send interrupted by Ctrl-C). A server's connections belong to
    /// the server (several Python objects may stand for one of them).
    owned: bool,
    acks: AckHelpers,
}

impl PyConnection {
    fn wrap(inner: serpy::Connection, pickles: Pickles, owned: bool) -> Self {
        PyConnection {
            inner: ManuallyDrop::new(inner),
            pickles: AtomicU8::new(pickles as u8),
            owned,
            acks: AckHelpers::new(),
        }
    }

    fn pickles(&self) -> Pickles {
        Pickles::from_u8(self.pickles.load(Ordering::Relaxed))
    }

    /// Sends `msg`, interruptible by Ctrl-C however long it waits:
    ///
    /// - Unacknowledged: in slices. A slice that runs out while the outgoing queue is full
    ///   has queued nothing (the core says so), so the send is simply tried again after
    ///   the signal handlers ran.
    /// - Acknowledged (v1 modes 1, 3, 5): the send runs on a helper thread and the caller
    ///   waits for its result in slices. On Ctrl-C the caller gets KeyboardInterrupt and
    ///   the helper goes on until the acknowledgement comes or the link ends, as the core
    ///   has no way to withdraw a message that may be on the wire.
    fn send_message(
        &self,
        py: Python<'_>,
        msg: Message,
        mode: Mode,
        timeout: Option<f64>,
    ) -> PyResult<()> {
        let limit = timeout.map(|t| duration(t, "timeout")).transpose()?;
        if mode.is_acked() && self.inner.protocol() != Protocol::V2 {
            return self.send_acked(py, msg, mode, limit);
        }
        let conn = &*self.inner;
        let deadline = limit.and_then(|l| Instant::now().checked_add(l));
        loop {
            let slice = match deadline {
                None => SLICE,
                Some(d) => SLICE.min(d.saturating_duration_since(Instant::now())),
            };
            let m = msg.clone(); // shares the payload
            match py.detach(|| conn.send_data_timeout(m, mode, slice)) {
                Err(Error::Timeout { operation, .. }) => {
                    py.check_signals()?;
                    if deadline.is_some_and(|d| Instant::now() >= d) {
                        let after = limit.unwrap_or_default();
                        return Err(to_py_err(py, Error::Timeout { operation, after }));
                    }
                }
                other => return other.py(py),
            }
        }
    }

    fn send_acked(
        &self,
        py: Python<'_>,
        msg: Message,
        mode: Mode,
        limit: Option<Duration>,
    ) -> PyResult<()> {
        let (tx, rx) = crossbeam_channel::bounded(1);
        let job = AckJob {
            conn: (*self.inner).clone(),
            msg,
            mode,
            limit,
            answer: tx,
        };
        self.acks.run(job).map_err(|e| {
            to_py_err(
                py,
                Error::Io {
                    context: "starting the thread of an acknowledged send",
                    source: e,
                },
            )
        })?;
        loop {
            match py.detach(|| rx.recv_timeout(SLICE)) {
                Ok(r) => return r.py(py),
                Err(crossbeam_channel::RecvTimeoutError::Timeout) => py.check_signals()?,
                Err(crossbeam_channel::RecvTimeoutError::Disconnected) => {
                    return Err(to_py_err(py, Error::NotSent))
                }
            }
        }
    }

    fn receive(&self, py: Python<'_>, timeout: Option<f64>) -> PyResult<Message> {
        let conn = &self.inner;
        // What has arrived is taken without giving up the GIL.
        if let Some(m) = conn.try_get_data().py(py)? {
            return Ok(m);
        }
        wait_sliced(py, timeout, "get_data", |slice| {
            conn.get_data_timeout(slice)
        })
    }
}

#[pymethods]
impl PyConnection {
    /// Connects to a serpy server at (host, port).
    #[staticmethod]
    #[pyo3(signature = (host, port, *, protocol="v1", auto_restart=false, encoding="utf-8",
        allow_unpickle=false, connect_timeout=None, reconnect_backoff=None, give_up_after=None,
        max_message_size=None, incoming_capacity=None, incoming_bytes=None,
        outgoing_capacity=None, nodelay=None, keepalive=None, close_timeout=None,
        outgoing_bytes=None, full_queue=None, idle_timeout=None,
        connect_in_background=false, _pickles=None))]
    #[allow(clippy::too_many_arguments)]
    fn connect(
        py: Python<'_>,
        host: &str,
        port: u16,
        protocol: &str,
        auto_restart: bool,
        encoding: &str,
        allow_unpickle: bool,
        connect_timeout: Option<f64>,
        reconnect_backoff: Option<(f64, f64)>,
        give_up_after: Option<u32>,
        max_message_size: Option<usize>,
        incoming_capacity: Option<usize>,
        incoming_bytes: Option<usize>,
        outgoing_capacity: Option<usize>,
        nodelay: Option<bool>,
        keepalive: Option<f64>,
        close_timeout: Option<f64>,
        outgoing_bytes: Option<usize>,
        full_queue: Option<&Bound<'_, PyAny>>,
        idle_timeout: Option<f64>,
        connect_in_background: bool,
        _pickles: Option<u8>,
    ) -> PyResult<Self> {
        let o = options(
            encoding,
            max_message_size,
            incoming_capacity,
            incoming_bytes,
            outgoing_capacity,
            nodelay,
            keepalive,
            close_timeout,
            outgoing_bytes,
            full_queue,
            idle_timeout,
        )?;
        let mut b = serpy::Connection::builder()
            .protocol(protocol_from(protocol, false)?)
            .auto_restart(auto_restart)
            .connect_in_background(connect_in_background)
            .give_up_after(give_up_after);
        if let Some(t) = connect_timeout {
            b = b.connect_timeout(duration(t, "connect_timeout")?);
        }
        if let Some((first, max)) = reconnect_backoff {
            b = b.reconnect_backoff(
                duration(first, "reconnect_backoff")?,
                duration(max, "reconnect_backoff")?,
            );
        }
        let b = apply_options!(b, o);
        let addr = host_port(host, port);
        let conn = py.detach(|| b.connect((addr.0.as_str(), addr.1))).py(py)?;
        let pickles = match _pickles {
            Some(p) => Pickles::from_u8(p),
            None if allow_unpickle => Pickles::Load,
            None => Pickles::Safe,
        };
        Ok(PyConnection::wrap(conn, pickles, true))
    }

    /// Sends `data` in v1 `mode` (0 to 5; over v2 the value's own type is sent).
    #[pyo3(signature = (data, mode=None, *, timeout=None, copy=true))]
    fn send(
        &self,
        py: Python<'_>,
        data: &Bound<'_, PyAny>,
        mode: Option<&Bound<'_, PyAny>>,
        timeout: Option<f64>,
        copy: bool,
    ) -> PyResult<()> {
        let mode = match mode {
            Some(m) => mode_from(m)?,
            None => Mode::Plain,
        };
        let msg = to_message(py, data, copy)?;
        self.send_message(py, msg, mode, timeout)
    }

    /// Pickles `obj` (Python's pickle, default protocol) and sends it in v1 mode 4, or 5
    /// with `acked=True`; the peer unpickles it.
    #[pyo3(signature = (obj, *, acked=false, timeout=None, protocol=None))]
    fn send_object(
        &self,
        py: Python<'_>,
        obj: &Bound<'_, PyAny>,
        acked: bool,
        timeout: Option<f64>,
        protocol: Option<i32>,
    ) -> PyResult<()> {
        let pickle = py.import("pickle")?;
        let protocol = match protocol {
            Some(p) => p,
            None => pickle.getattr("DEFAULT_PROTOCOL")?.extract()?,
        };
        let data = pickle
            .getattr("dumps")?
            .call1((obj, protocol))?
            .cast_into::<PyBytes>()?;
        let mode = Mode::Pickle.with_ack(acked);
        self.send_message(py, Message::Pickle(bytes_of(data)), mode, timeout)
    }

    /// Sends raw pickle bytes (already pickled) in mode 4, or 5 with `acked`.
    #[pyo3(signature = (data, acked=false, timeout=None))]
    fn _send_pickle(
        &self,
        py: Python<'_>,
        data: &Bound<'_, PyAny>,
        acked: bool,
        timeout: Option<f64>,
    ) -> PyResult<()> {
        let bytes = match data.cast::<PyBytes>() {
            Ok(b) => bytes_of(b.clone()),
            Err(_) => buffer_bytes(py, data, true)?,
        };
        let mode = Mode::Pickle.with_ack(acked);
        self.send_message(py, Message::Pickle(bytes), mode, timeout)
    }

    /// The next message (waits at most `timeout` seconds, forever if None).
    #[pyo3(signature = (timeout=None))]
    fn get_data(&self, py: Python<'_>, timeout: Option<f64>) -> PyResult<Py<PyAny>> {
        let m = self.receive(py, timeout)?;
        to_value(py, m, self.pickles())
    }

    /// The next message and the v1 mode it came in (None over v2).
    #[pyo3(signature = (timeout=None))]
    fn get_data_with_mode(
        &self,
        py: Python<'_>,
        timeout: Option<f64>,
    ) -> PyResult<(Py<PyAny>, Py<PyAny>)> {
        let conn = &self.inner;
        let (m, mode) = match conn.get_data_with_mode(Some(Duration::ZERO)) {
            Ok(x) => x,
            Err(Error::Timeout { .. }) => wait_sliced(py, timeout, "get_data", |slice| {
                conn.get_data_with_mode(Some(slice))
            })?,
            Err(e) => return Err(to_py_err(py, e)),
        };
        Ok((to_value(py, m, self.pickles())?, mode_value(py, mode)))
    }

    /// The next message if one has arrived, else None.
    fn try_get_data(&self, py: Python<'_>) -> PyResult<Option<Py<PyAny>>> {
        match self.inner.try_get_data().py(py)? {
            Some(m) => Ok(Some(to_value(py, m, self.pickles())?)),
            None => Ok(None),
        }
    }

    /// The messages that have arrived, without waiting.
    fn try_iter<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyList>> {
        let list = PyList::empty(py);
        while let Some(m) = self.inner.try_get_data().py(py)? {
            list.append(to_value(py, m, self.pickles())?)?;
        }
        Ok(list)
    }

    fn __iter__(slf: PyRef<'_, Self>) -> PyRef<'_, Self> {
        slf
    }

    /// Blocking iteration: the next message; ends when the link is down for good (or
    /// closed) and everything has been read.
    fn __next__(&self, py: Python<'_>) -> PyResult<Py<PyAny>> {
        match self.receive(py, None) {
            Ok(m) => to_value(py, m, self.pickles()),
            Err(e) => {
                let end = py.import("serpy_rs._errors")?.getattr("_ENDS_ITERATION")?;
                if e.is_instance(py, &end) {
                    Err(PyStopIteration::new_err(()))
                } else {
                    Err(e)
                }
            }
        }
    }

    fn is_connected(&self) -> bool {
        self.inner.is_connected()
    }

    fn is_data_available(&self) -> bool {
        self.inner.is_data_available()
    }

    fn enable_restart(&self) {
        self.inner.enable_restart();
    }

    fn disable_restart(&self) {
        self.inner.disable_restart();
    }

    /// Closes the connection: writes what is queued (for at most the close timeout) and
    /// returns once its threads have ended. Calling it again does nothing.
    fn close(&self, py: Python<'_>) {
        let conn = &self.inner;
        let acks = &self.acks;
        py.detach(|| {
            conn.close();
            acks.stop();
        });
    }

    fn __enter__(slf: PyRef<'_, Self>) -> PyRef<'_, Self> {
        slf
    }

    #[pyo3(signature = (*_args))]
    fn __exit__(&self, py: Python<'_>, _args: &Bound<'_, PyTuple>) -> bool {
        self.close(py);
        false
    }

    /// The next event of the link, waiting at most `timeout` seconds (0: do not wait;
    /// None: until one comes); None when none came.
    #[pyo3(signature = (timeout=0.0))]
    fn next_event(&self, py: Python<'_>, timeout: Option<f64>) -> PyResult<Option<Event>> {
        next_event(py, &self.inner.events(), timeout)
    }

    /// The connection's statistics now (see `Stats`).
    fn stats(&self, py: Python<'_>) -> Stats {
        let conn = &*self.inner;
        Stats::from_rust(py.detach(|| conn.stats()))
    }

    /// Every event waiting now, oldest first.
    fn events(&self) -> Vec<Event> {
        let events = self.inner.events();
        std::iter::from_fn(|| events.try_recv().ok().flatten())
            .map(Event::from_rust)
            .collect()
    }

    #[getter]
    fn peer_addr(&self, py: Python<'_>) -> PyResult<Py<PyAny>> {
        let conn = &*self.inner;
        let a = py.detach(|| conn.peer_addr());
        addr_tuple(py, a)
    }

    #[getter]
    fn local_addr(&self, py: Python<'_>) -> PyResult<Py<PyAny>> {
        let conn = &*self.inner;
        let a = py.detach(|| conn.local_addr());
        addr_tuple(py, a)
    }

    #[getter]
    fn protocol(&self) -> &'static str {
        protocol_name(self.inner.protocol())
    }

    #[getter]
    fn id(&self) -> u64 {
        self.inner.id()
    }

    #[getter]
    fn allow_unpickle(&self) -> bool {
        self.pickles() == Pickles::Load
    }

    #[setter]
    fn set_allow_unpickle(&self, on: bool) {
        self.pickles.store(
            if on { Pickles::Load } else { Pickles::Safe } as u8,
            Ordering::Relaxed,
        );
    }

    #[getter(_pickles)]
    fn pickles_policy(&self) -> u8 {
        self.pickles() as u8
    }

    #[setter(_pickles)]
    fn set_pickles_policy(&self, v: u8) {
        self.pickles
            .store(Pickles::from_u8(v) as u8, Ordering::Relaxed);
    }

    fn __eq__(&self, other: &Bound<'_, PyAny>) -> bool {
        match other.cast::<PyConnection>() {
            Ok(o) => *o.get().inner == *self.inner,
            Err(_) => false,
        }
    }

    fn __hash__(&self) -> u64 {
        self.inner.id()
    }

    fn __repr__(&self, py: Python<'_>) -> PyResult<String> {
        let conn = &*self.inner;
        let peer = py
            .detach(|| conn.peer_addr())
            .map(|a| a.to_string())
            .unwrap_or_else(|| "?".into());
        Ok(format!(
            "<serpy_rs.Connection id={} peer={} protocol={} connected={}>",
            self.inner.id(),
            peer,
            protocol_name(self.inner.protocol()),
            if self.inner.is_connected() {
                "True"
            } else {
                "False"
            }
        ))
    }
}

/// The next event of `events`, waiting up to `timeout` (None: until one comes) in short
/// slices with the GIL released; None when none came in time or the events have ended.
fn next_event(
    py: Python<'_>,
    events: &serpy::Events,
    timeout: Option<f64>,
) -> PyResult<Option<Event>> {
    match events.try_recv() {
        Ok(Some(e)) => return Ok(Some(Event::from_rust(e))),
        Ok(None) => {}
        // The events have ended: nothing more will come.
        Err(_) => return Ok(None),
    }
    if timeout == Some(0.0) {
        return Ok(None);
    }
    // Once the events have ended, `recv_timeout` says so at once (Closed or
    // Disconnected): that ends the wait (None), where waiting on would spin until the
    // timeout, or for ever.
    let got = wait_sliced(py, timeout, "next_event", |slice| {
        match events.recv_timeout(slice) {
            Ok(e) => Ok(Some(e)),
            Err(Error::Timeout { .. }) => Err(Error::Timeout {
                operation: "next_event",
                after: slice,
            }),
            Err(_) => Ok(None),
        }
    });
    match got {
        Ok(e) => Ok(e.map(Event::from_rust)),
        Err(e) => {
            let timeout_cls = py.import("serpy_rs._errors")?.getattr("Timeout")?;
            if e.is_instance(py, &timeout_cls) {
                Ok(None)
            } else {
                Err(e)
            }
        }
    }
}

/// Drops `handle` (a server) with the GIL released: dropping the last handle of a server
/// closes it and joins its threads (up to the close timeout), which must not stop
/// every other Python thread meanwhile.
fn release<T: Send>(handle: T) {
    Python::attach(|py| py.detach(move || drop(handle)));
}

impl Drop for PyConnection {
    fn drop(&mut self) {
        // SAFETY: `inner` is not used again: this is the end of the object.
        let inner = unsafe { ManuallyDrop::take(&mut self.inner) };
        let (owned, acks) = (self.owned, &self.acks);
        Python::attach(|py| {
            py.detach(|| {
                if owned {
                    inner.close();
                }
                // Without a close, the thread ends on its own after the send it is doing.
                acks.stopped.store(true, Ordering::Release);
                let taken = acks.jobs.lock().unwrap_or_else(|e| e.into_inner()).take();
                if owned {
                    if let Some((tx, handle)) = taken {
                        drop(tx);
                        let _ = handle.join();
                    }
                }
                drop(inner);
            })
        });
    }
}

impl Drop for PyServer {
    fn drop(&mut self) {
        // SAFETY: as above.
        release(unsafe { ManuallyDrop::take(&mut self.inner) });
    }
}

// ---------------------------------------------------------------------------------------
// Server
// ---------------------------------------------------------------------------------------

/// Listens for serpy clients and gives a Connection for each.
#[pyclass(module = "serpy_rs", name = "Server", frozen)]
struct PyServer {
    /// Taken out in `Drop`, to be dropped with the GIL released (see `release`).
    inner: ManuallyDrop<serpy::Server>,
    pickles: Pickles,
}

impl PyServer {
    fn wrap(&self, c: serpy::Connection) -> PyConnection {
        PyConnection::wrap(c, self.pickles, false)
    }

    /// The Python report of a broadcast.
    fn report(&self, py: Python<'_>, report: serpy::Broadcast) -> Broadcast {
        let mut outcomes = Vec::with_capacity(report.len());
        let dropped: std::collections::HashMap<u64, u64> =
            report.dropped().map(|(c, n)| (c.id(), n)).collect();
        for (c, r) in report.iter() {
            let conn = Py::new(py, self.wrap(c.clone())).ok();
            let err = r
                .as_ref()
                .err()
                .map(|e| to_py_err_ref(py, e).into_value(py).into_any());
            if let Some(conn) = conn {
                outcomes.push((conn, err, dropped.get(&c.id()).copied().unwrap_or(0)));
            }
        }
        let b = Broadcast {
            sent: report.sent(),
            dropped_total: report.dropped_total(),
            outcomes,
        };
        // The report holds connection handles: let them go without the GIL.
        py.detach(move || drop(report));
        b
    }
}

#[pymethods]
impl PyServer {
    /// Binds to (host, port) and starts accepting (port 0: any free port).
    #[new]
    #[pyo3(signature = (host="127.0.0.1", port=0, *, protocol="v1", max_connections=None,
        detect_timeout=None, encoding="utf-8", allow_unpickle=false, max_message_size=None,
        incoming_capacity=None, incoming_bytes=None, outgoing_capacity=None, nodelay=None,
        keepalive=None, close_timeout=None, outgoing_bytes=None, full_queue=None,
        idle_timeout=None, first_message_timeout=None, max_unproven=None, _pickles=None))]
    #[allow(clippy::too_many_arguments)]
    fn new(
        py: Python<'_>,
        host: &str,
        port: u16,
        protocol: &str,
        max_connections: Option<usize>,
        detect_timeout: Option<f64>,
        encoding: &str,
        allow_unpickle: bool,
        max_message_size: Option<usize>,
        incoming_capacity: Option<usize>,
        incoming_bytes: Option<usize>,
        outgoing_capacity: Option<usize>,
        nodelay: Option<bool>,
        keepalive: Option<f64>,
        close_timeout: Option<f64>,
        outgoing_bytes: Option<usize>,
        full_queue: Option<&Bound<'_, PyAny>>,
        idle_timeout: Option<f64>,
        first_message_timeout: Option<f64>,
        max_unproven: Option<usize>,
        _pickles: Option<u8>,
    ) -> PyResult<Self> {
        let o = options(
            encoding,
            max_message_size,
            incoming_capacity,
            incoming_bytes,
            outgoing_capacity,
            nodelay,
            keepalive,
            close_timeout,
            outgoing_bytes,
            full_queue,
            idle_timeout,
        )?;
        let mut b = serpy::Server::builder().protocol(protocol_from(protocol, true)?);
        if let Some(t) = first_message_timeout {
            b = b.first_message_timeout(Some(duration(t, "first_message_timeout")?));
        }
        if let Some(n) = max_unproven {
            if n == 0 {
                return Err(PyValueError::new_err("max_unproven must be at least 1"));
            }
            b = b.max_unproven(n);
        }
        if let Some(n) = max_connections {
            b = b.max_connections(n);
        }
        if let Some(t) = detect_timeout {
            b = b.detect_timeout(duration(t, "detect_timeout")?);
        }
        let b = apply_options!(b, o);
        let addr = host_port(host, port);
        let inner = py.detach(|| b.bind((addr.0.as_str(), addr.1))).py(py)?;
        let pickles = match _pickles {
            Some(p) => Pickles::from_u8(p),
            None if allow_unpickle => Pickles::Load,
            None => Pickles::Safe,
        };
        Ok(PyServer {
            inner: ManuallyDrop::new(inner),
            pickles,
        })
    }

    /// (host, port) the server listens on, with the real port when bound to port 0.
    #[getter]
    fn local_addr(&self, py: Python<'_>) -> PyResult<Py<PyAny>> {
        addr_tuple(py, Some(self.inner.local_addr()))
    }

    #[getter]
    fn port(&self) -> u16 {
        self.inner.local_addr().port()
    }

    /// The next new connection, waiting at most `timeout` seconds (forever if None).
    #[pyo3(signature = (timeout=None))]
    fn get_connection(&self, py: Python<'_>, timeout: Option<f64>) -> PyResult<PyConnection> {
        if let Ok(Some(c)) = self.inner.try_get_connection() {
            return Ok(self.wrap(c));
        }
        let server = &self.inner;
        let c = wait_sliced(py, timeout, "get_connection", |slice| {
            server.get_connection_timeout(slice)
        })?;
        Ok(self.wrap(c))
    }

    fn try_get_connection(&self) -> Option<PyConnection> {
        self.inner
            .try_get_connection()
            .ok()
            .flatten()
            .map(|c| self.wrap(c))
    }

    /// A snapshot of the server's connections.
    fn connections(&self, py: Python<'_>) -> Vec<PyConnection> {
        let server = &*self.inner;
        py.detach(|| server.connections())
            .into_iter()
            .map(|c| self.wrap(c))
            .collect()
    }

    /// The connections with received data waiting to be read.
    fn readable_connections(&self, py: Python<'_>) -> Vec<PyConnection> {
        let server = &*self.inner;
        py.detach(|| server.readable_connections())
            .into_iter()
            .map(|c| self.wrap(c))
            .collect()
    }

    /// The next message from any connection: (connection, message, mode).
    #[pyo3(signature = (timeout=None))]
    fn recv_any(
        &self,
        py: Python<'_>,
        timeout: Option<f64>,
    ) -> PyResult<(PyConnection, Py<PyAny>, Py<PyAny>)> {
        let server = &self.inner;
        let r = match py.detach(|| server.try_recv_any()) {
            Ok(Some(r)) => r,
            _ => wait_sliced(py, timeout, "recv_any", |slice| {
                server.recv_any_timeout(slice)
            })?,
        };
        let value = to_value(py, r.message, self.pickles)?;
        Ok((self.wrap(r.connection), value, mode_value(py, r.mode)))
    }

    /// Sends `data` to every connection (mode 0 over v1), encoded once; returns how many
    /// connections it was queued for. A connection whose queue is full misses it, unless
    /// `timeout` (seconds, in all) gives the full queues time to make room.
    #[pyo3(signature = (data, *, timeout=None, copy=true))]
    fn broadcast(
        &self,
        py: Python<'_>,
        data: &Bound<'_, PyAny>,
        timeout: Option<f64>,
        copy: bool,
    ) -> PyResult<Broadcast> {
        let msg = to_message(py, data, copy)?;
        let limit = timeout.map(|t| duration(t, "timeout")).transpose()?;
        let server = &*self.inner;
        let report = py.detach(|| match limit {
            None => server.broadcast(msg),
            Some(t) => server.broadcast_timeout(msg, t),
        });
        Ok(self.report(py, report.py(py)?))
    }

    /// Sends `data` to the given connections only (of this server or not), encoded once
    /// per protocol, never waiting on a full queue (each follows its `full_queue`
    /// policy); returns the `Broadcast` report.
    #[pyo3(signature = (connections, data, *, copy=true))]
    fn broadcast_to(
        &self,
        py: Python<'_>,
        connections: Vec<PyRef<'_, PyConnection>>,
        data: &Bound<'_, PyAny>,
        copy: bool,
    ) -> PyResult<Broadcast> {
        let msg = to_message(py, data, copy)?;
        let targets: Vec<serpy::Connection> =
            connections.iter().map(|c| (*c.inner).clone()).collect();
        drop(connections);
        let server = &*self.inner;
        let report = py.detach(|| server.broadcast_to(targets, msg));
        Ok(self.report(py, report.py(py)?))
    }

    /// The statistics of every live connection, summed (see `Stats`).
    fn stats(&self, py: Python<'_>) -> Stats {
        let server = &*self.inner;
        Stats::from_rust(py.detach(|| server.stats()))
    }

    /// The next server-wide event (every connection's events, and "accepted" and
    /// "refused"), waiting at most `timeout` seconds (default 0: only one already
    /// waiting; None: until one comes); None when none came.
    #[pyo3(signature = (timeout=0.0))]
    fn next_event(&self, py: Python<'_>, timeout: Option<f64>) -> PyResult<Option<Event>> {
        next_event(py, &self.inner.events(), timeout)
    }

    /// Every server-wide event waiting now, oldest first.
    fn events(&self) -> Vec<Event> {
        let events = self.inner.events();
        std::iter::from_fn(|| events.try_recv().ok().flatten())
            .map(Event::from_rust)
            .collect()
    }

    fn __len__(&self, py: Python<'_>) -> usize {
        let server = &*self.inner;
        py.detach(|| server.len())
    }

    fn __iter__<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        let list = PyList::new(py, self.connections(py))?;
        list.try_iter().map(|i| i.into_any())
    }

    /// Stops accepting; the connections go on.
    fn close(&self, py: Python<'_>) {
        let server = &self.inner;
        py.detach(|| server.close());
    }

    /// Stops accepting and closes every connection.
    fn close_all(&self, py: Python<'_>) {
        let server = &self.inner;
        py.detach(|| server.close_all());
    }

    fn __enter__(slf: PyRef<'_, Self>) -> PyRef<'_, Self> {
        slf
    }

    #[pyo3(signature = (*_args))]
    fn __exit__(&self, py: Python<'_>, _args: &Bound<'_, PyTuple>) -> bool {
        self.close_all(py);
        false
    }

    fn __repr__(&self, py: Python<'_>) -> String {
        format!(
            "<serpy_rs.Server listening on {} connections={}>",
            self.inner.local_addr(),
            self.__len__(py)
        )
    }
}

// ---------------------------------------------------------------------------------------
// Events and pickles
// ---------------------------------------------------------------------------------------

/// Something that happened to a connection or a server: `id` is the connection it
/// concerns, `at` when (seconds since the Unix epoch, as `time.time()` gives), `kind`
/// what; the other fields that apply to that kind are set, the others are None.
#[pyclass(module = "serpy_rs", frozen, get_all)]
struct Event {
    /// The connection's id (`Connection.id`); for "refused", a number given to the
    /// refused socket.
    id: u64,
    /// When it happened: seconds since the Unix epoch (compare with `time.time()`,
    /// or make a `datetime.datetime.fromtimestamp(event.at)`).
    at: f64,
    /// "connected", "disconnected", "reconnected", "gave_up", "lost",
    /// "protocol_detected", "protocol_error", "closed", "dropped", "idle_timeout",
    /// "unproven", "accepted", "refused" (or "other").
    kind: &'static str,
    /// The peer's address ("connected", "reconnected", "accepted", "refused").
    peer: Option<(String, u16)>,
    /// Why, in words: why the link went down ("disconnected"), what the peer broke
    /// ("protocol_error"), why it was closed ("unproven") or refused ("refused").
    reason: Option<String>,
    /// Whether the connection will reconnect ("disconnected").
    reconnecting: Option<bool>,
    /// Connection attempts ("reconnected", "gave_up").
    attempts: Option<u32>,
    /// How many queued messages were dropped ("lost", "dropped").
    messages: Option<u64>,
    /// The peer's protocol ("protocol_detected").
    protocol: Option<&'static str>,
    /// The idle timeout in seconds ("idle_timeout").
    after: Option<f64>,
    /// Why a socket was refused, as a name: "too_many_connections" or "start_failed"
    /// ("refused").
    refusal: Option<&'static str>,
    /// The connection limit that was reached ("refused" with "too_many_connections").
    limit: Option<usize>,
    /// The event as a sentence.
    text: String,
}

impl Event {
    fn from_rust(e: RustEvent) -> Self {
        let text = e.kind.to_string();
        let at =
            e.at.duration_since(UNIX_EPOCH)
                .map(|d| d.as_secs_f64())
                .unwrap_or(0.0);
        let mut ev = Event {
            id: e.id,
            at,
            kind: "other",
            peer: None,
            reason: None,
            reconnecting: None,
            attempts: None,
            messages: None,
            protocol: None,
            after: None,
            refusal: None,
            limit: None,
            text,
        };
        let pair = |a: SocketAddr| (a.ip().to_string(), a.port());
        match e.kind {
            EventKind::Connected { peer } => {
                ev.kind = "connected";
                ev.peer = Some(pair(peer));
            }
            EventKind::Disconnected {
                reason,
                reconnecting,
            } => {
                ev.kind = "disconnected";
                ev.reason = Some(reason);
                ev.reconnecting = Some(reconnecting);
            }
            EventKind::Reconnected { peer, attempts } => {
                ev.kind = "reconnected";
                ev.peer = Some(pair(peer));
                ev.attempts = Some(attempts);
            }
            EventKind::GaveUp { attempts } => {
                ev.kind = "gave_up";
                ev.attempts = Some(attempts);
            }
            EventKind::Lost { messages } => {
                ev.kind = "lost";
                ev.messages = Some(messages as u64);
            }
            EventKind::ProtocolDetected(p) => {
                ev.kind = "protocol_detected";
                ev.protocol = Some(protocol_name(p));
            }
            EventKind::ProtocolError(p) => {
                ev.kind = "protocol_error";
                ev.reason = Some(p.to_string());
            }
            EventKind::Closed => ev.kind = "closed",
            EventKind::Dropped { messages } => {
                ev.kind = "dropped";
                ev.messages = Some(messages);
            }
            EventKind::IdleTimeout { after } => {
                ev.kind = "idle_timeout";
                ev.after = Some(after.as_secs_f64());
            }
            EventKind::Unproven { reason } => {
                ev.kind = "unproven";
                ev.reason = Some(reason);
            }
            EventKind::Accepted { peer } => {
                ev.kind = "accepted";
                ev.peer = Some(pair(peer));
            }
            EventKind::Refused { peer, reason } => {
                ev.kind = "refused";
                ev.peer = Some(pair(peer));
                ev.reason = Some(reason.to_string());
                match reason {
                    Refusal::TooManyConnections { limit } => {
                        ev.refusal = Some("too_many_connections");
                        ev.limit = Some(limit);
                    }
                    Refusal::StartFailed { .. } => ev.refusal = Some("start_failed"),
                    _ => {}
                }
            }
            _ => {}
        }
        ev
    }
}

#[pymethods]
impl Event {
    fn __repr__(&self) -> String {
        format!("<serpy_rs.Event #{} {}: {}>", self.id, self.kind, self.text)
    }

    fn __str__(&self) -> String {
        self.text.clone()
    }
}

/// What became of a broadcast message at each connection: `sent` (how many queued it),
/// `dropped_total` (older messages dropped by "keep_latest" policies to make room),
/// `results()`, `failures()`, `dropped()`. `len()` is how many connections were tried.
#[pyclass(module = "serpy_rs", frozen)]
struct Broadcast {
    sent: usize,
    dropped_total: u64,
    /// Per connection: the connection, the exception if it missed the message, and how
    /// many older queued messages its policy dropped.
    outcomes: Vec<(Py<PyConnection>, Option<Py<PyAny>>, u64)>,
}

#[pymethods]
impl Broadcast {
    /// How many connections queued the message.
    #[getter]
    fn sent(&self) -> usize {
        self.sent
    }

    /// Older queued messages dropped, over all connections, to make room ("keep_latest").
    #[getter]
    fn dropped_total(&self) -> u64 {
        self.dropped_total
    }

    /// True when every connection queued the message.
    fn is_complete(&self) -> bool {
        self.sent == self.outcomes.len()
    }

    /// (connection, None or the exception it got) for each connection tried.
    fn results(&self, py: Python<'_>) -> Vec<(Py<PyConnection>, Option<Py<PyAny>>)> {
        self.outcomes
            .iter()
            .map(|(c, e, _)| (c.clone_ref(py), e.as_ref().map(|e| e.clone_ref(py))))
            .collect()
    }

    /// (connection, exception) for each connection that missed the message.
    fn failures(&self, py: Python<'_>) -> Vec<(Py<PyConnection>, Py<PyAny>)> {
        self.outcomes
            .iter()
            .filter_map(|(c, e, _)| e.as_ref().map(|e| (c.clone_ref(py), e.clone_ref(py))))
            .collect()
    }

    /// (connection, count) for each connection whose policy dropped older messages.
    fn dropped(&self, py: Python<'_>) -> Vec<(Py<PyConnection>, u64)> {
        self.outcomes
            .iter()
            .filter(|(_, _, n)| *n > 0)
            .map(|(c, _, n)| (c.clone_ref(py), *n))
            .collect()
    }

    fn __len__(&self) -> usize {
        self.outcomes.len()
    }

    fn __repr__(&self) -> String {
        format!(
            "<serpy_rs.Broadcast sent to {} of {}, {} dropped>",
            self.sent,
            self.outcomes.len(),
            self.dropped_total
        )
    }
}

/// Statistics of a connection (or, summed, of a server's connections) at one moment:
/// `str()` gives the core's one-line summary. Times are seconds; `last_received` is a
/// Unix timestamp like `Event.at`.
#[pyclass(module = "serpy_rs", frozen, get_all)]
struct Stats {
    connections: usize,
    messages_in: u64,
    bytes_in: u64,
    messages_out: u64,
    bytes_out: u64,
    reconnects: u64,
    dropped: u64,
    policy_disconnects: u64,
    protocol_errors: u64,
    queued_in: usize,
    queued_in_bytes: usize,
    queued_out: usize,
    queued_out_bytes: usize,
    /// When data was last received (seconds since the Unix epoch), None if never.
    last_received: Option<f64>,
    acked: u64,
    /// Round trip of the last acknowledged send, in seconds.
    ack_rtt_last: Option<f64>,
    /// Mean round trip of the acknowledged sends, in seconds.
    ack_rtt_mean: Option<f64>,
    text: String,
}

impl Stats {
    fn from_rust(s: serpy::Stats) -> Self {
        let now = (Instant::now(), std::time::SystemTime::now());
        let last_received = s.last_received.map(|t| {
            let ago = now.0.saturating_duration_since(t);
            now.1
                .checked_sub(ago)
                .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
                .map_or(0.0, |d| d.as_secs_f64())
        });
        Stats {
            connections: s.connections,
            messages_in: s.messages_in,
            bytes_in: s.bytes_in,
            messages_out: s.messages_out,
            bytes_out: s.bytes_out,
            reconnects: s.reconnects,
            dropped: s.dropped,
            policy_disconnects: s.policy_disconnects,
            protocol_errors: s.protocol_errors,
            queued_in: s.queued_in,
            queued_in_bytes: s.queued_in_bytes,
            queued_out: s.queued_out,
            queued_out_bytes: s.queued_out_bytes,
            last_received,
            acked: s.acked,
            ack_rtt_last: s.ack_rtt_last.map(|d| d.as_secs_f64()),
            ack_rtt_mean: s.ack_rtt_mean.map(|d| d.as_secs_f64()),
            text: s.to_string(),
        }
    }
}

#[pymethods]
impl Stats {
    fn __str__(&self) -> String {
        self.text.clone()
    }

    fn __repr__(&self) -> String {
        format!("<serpy_rs.Stats {}>", self.text)
    }
}

/// A received Python pickle (v1 mode 4 or 5) that was not unpickled: unpickling runs
/// code chosen by the peer, so it only happens on request (`loads()`, or
/// `allow_unpickle=True`). Sending a `Pickled` sends its bytes as a pickle again.
#[pyclass(module = "serpy_rs", frozen)]
struct Pickled {
    data: Py<PyBytes>,
}

#[pymethods]
impl Pickled {
    #[new]
    fn new(data: Bound<'_, PyBytes>) -> Self {
        Pickled {
            data: data.unbind(),
        }
    }

    /// The pickle's bytes.
    #[getter]
    fn data(&self, py: Python<'_>) -> Py<PyBytes> {
        self.data.clone_ref(py)
    }

    /// Unpickles it with Python's pickle. Only for peers you trust.
    fn loads(&self, py: Python<'_>) -> PyResult<Py<PyAny>> {
        Ok(py
            .import("pickle")?
            .getattr("loads")?
            .call1((self.data.bind(py),))?
            .unbind())
    }

    fn __bytes__(&self, py: Python<'_>) -> Py<PyBytes> {
        self.data.clone_ref(py)
    }

    fn __len__(&self, py: Python<'_>) -> usize {
        self.data.bind(py).as_bytes().len()
    }

    fn __eq__(&self, py: Python<'_>, other: &Bound<'_, PyAny>) -> bool {
        match other.cast::<Pickled>() {
            Ok(o) => o.get().data.bind(py).as_bytes() == self.data.bind(py).as_bytes(),
            Err(_) => false,
        }
    }

    fn __repr__(&self, py: Python<'_>) -> String {
        format!(
            "<serpy_rs.Pickled pickle of {} bytes>",
            self.data.bind(py).as_bytes().len()
        )
    }
}

static LOG_RESET: std::sync::OnceLock<pyo3_log::ResetHandle> = std::sync::OnceLock::new();

/// Stops handing log lines to Python (registered with `atexit`): once the interpreter
/// shuts down, a core thread must not try to take the GIL to log.
#[pyfunction]
fn _stop_logging() {
    log::set_max_level(log::LevelFilter::Off);
}

/// Forgets the cached levels of the Python loggers the core logs to ("serpy.*"): call it
/// after changing their levels or handlers.
#[pyfunction]
fn reset_logging() {
    if let Some(h) = LOG_RESET.get() {
        h.reset();
    }
}

/// The serpy Rust core as the extension module `serpy_rs._native`.
#[pymodule]
fn _native(m: &Bound<'_, PyModule>) -> PyResult<()> {
    // The core's log lines go to Python's logging, under the loggers "serpy.*". Levels
    // are cached (call serpy_rs.reset_logging() after changing them). Another logger
    // already installed in this module's copy of `log` is left in place.
    if let Ok(handle) = pyo3_log::try_init() {
        let _ = LOG_RESET.set(handle);
    }
    m.add_function(wrap_pyfunction!(reset_logging, m)?)?;
    m.add_function(wrap_pyfunction!(_stop_logging, m)?)?;
    m.add_class::<PyConnection>()?;
    m.add_class::<PyServer>()?;
    m.add_class::<Event>()?;
    m.add_class::<Pickled>()?;
    m.add_class::<Broadcast>()?;
    m.add_class::<Stats>()?;
    m.add("SLICE_SECONDS", SLICE.as_secs_f64())?;
    m.add("DEFAULT_MAX_MESSAGE_SIZE", serpy::DEFAULT_MAX_MESSAGE_SIZE)?;
    m.add("DEFAULT_QUEUE_CAPACITY", serpy::DEFAULT_QUEUE_CAPACITY)?;
    m.add("DEFAULT_INCOMING_BYTES", serpy::DEFAULT_INCOMING_BYTES)?;
    m.add("DEFAULT_OUTGOING_BYTES", serpy::DEFAULT_OUTGOING_BYTES)?;
    m.add("DEFAULT_MAX_CONNECTIONS", serpy::DEFAULT_MAX_CONNECTIONS)?;
    Ok(())
}
