//! What differs between the platforms at the socket level, in one place.
//!
//! - [`wake_blocked`]: frees the threads blocked in a `recv` or `send` on a socket, so
//!   that `close()` and `Drop` end them. On Unix, `shutdown()` does that. On Windows it
//!   does not: a blocked `recv` goes on waiting for data that will never come. There the
//!   calls are also cancelled with `CancelIoEx`, which neither std nor socket2 offers;
//!   a cancelled call returns `WSA_OPERATION_ABORTED` (995), see [`is_cancelled`].
//!
//! - [`FAILED_WRITE_HIDES_PROGRESS`]: whether a write that fails may have sent part of
//!   its bytes without saying so.
//!
//! - [`recv_now`] (Linux and Android): a read that does not block on a socket that other
//!   threads read with blocking calls (`MSG_DONTWAIT`; switching the socket to
//!   non-blocking mode would change it for every thread).
//!
//! This is the only module of the crate with `unsafe` code (one foreign call, Windows
//! only; one slice cast, Linux and Android only).

use std::io;
use std::net::Shutdown;

#[cfg(unix)]
use std::os::fd::AsFd as AsSock;
#[cfg(windows)]
use std::os::windows::io::AsSocket as AsSock;

/// Shuts the socket down both ways and frees every thread blocked in a `recv` or `send`
/// on it, also through another descriptor or handle of the same socket (`try_clone`):
/// on Windows such handles share the socket's file object, whose pending calls
/// `CancelIoEx` cancels (checked under Wine, where the test suite relies on it). Errors
/// are ignored: the socket may be shut down already, or not connected.
pub(crate) fn wake_blocked<S: AsSock>(socket: &S) {
    let _ = socket2::SockRef::from(socket).shutdown(Shutdown::Both);
    #[cfg(windows)]
    cancel_io(socket);
}

/// Cancels every pending I/O call of this process on the socket (Windows: `shutdown`
/// does not end a blocked `recv`).
#[cfg(windows)]
#[allow(unsafe_code)]
fn cancel_io<S: AsSock>(socket: &S) {
    use std::os::windows::io::AsRawSocket;
    use windows_sys::Win32::Foundation::HANDLE;
    use windows_sys::Win32::System::IO::CancelIoEx;

    let handle = socket.as_socket().as_raw_socket() as HANDLE;
    // SAFETY: `handle` is the socket handle borrowed from `socket`, open for the whole
    // call (the borrow outlives it); a socket handle is a kernel file handle, which
    // CancelIoEx accepts. A null OVERLAPPED pointer means "every pending call on this
    // handle" and is documented as valid; nothing is written through either pointer.
    // A failure (no call pending: ERROR_NOT_FOUND) changes nothing and is ignored.
    let _ = unsafe { CancelIoEx(handle, std::ptr::null()) };
}

/// Reads what the socket holds now into `buf`, without blocking: `WouldBlock` when it
/// holds nothing (also when another thread blocks in a read of it). `Ok(0)` at the end
/// of the peer's data, as `read`.
#[cfg(any(target_os = "linux", target_os = "android"))]
#[allow(unsafe_code)]
pub(crate) fn recv_now(socket: &std::net::TcpStream, buf: &mut [u8]) -> io::Result<usize> {
    use std::mem::MaybeUninit;
    // SAFETY: `MaybeUninit<u8>` has the layout of `u8`, and every byte of `buf` is
    // initialised. Such a cast is unsound only if the callee may write uninitialised
    // bytes through it; `recv_with_flags` hands the pointer to recv(2), which writes
    // only bytes it received (socket2's own `Read for Socket` makes the same cast for
    // the same reason). The borrow of `buf` outlives the call.
    let uninit = unsafe { &mut *(buf as *mut [u8] as *mut [MaybeUninit<u8>]) };
    socket2::SockRef::from(socket).recv_with_flags(uninit, libc::MSG_DONTWAIT)
}

/// Whether `e` is what a call freed by [`wake_blocked`] returns on Windows
/// (`WSA_OPERATION_ABORTED`, `ERROR_OPERATION_ABORTED`: 995), which std does not map to
/// an error kind of its own. Always false elsewhere.
pub(crate) fn is_cancelled(e: &io::Error) -> bool {
    cfg!(windows) && e.raw_os_error() == Some(995)
}

/// True where a blocking write that fails reports no count, though part of its bytes
/// may have reached the peer: on Windows, a blocking `send` returns once all of its
/// bytes are taken, or an error, and the bytes it took before the error are not
/// counted. A message whose write failed there counts as cut short (the peer drops
/// it), not as not sent. On Unix, a write that took bytes returns their count.
pub(crate) const FAILED_WRITE_HIDES_PROGRESS: bool = cfg!(windows);
