//! Helpers shared by the loopback test suites.
#![allow(dead_code)] // each test binary uses a different part of this module

pub mod logs;
pub mod proxy;

use std::time::Duration;

use serpy::{Connection, Event, Server};

pub mod vectors;

/// Upper bound for anything a test waits for; never a pause.
pub const T: Duration = Duration::from_secs(20);

/// A server on 127.0.0.1 port 0 with `builder`'s options.
pub fn server(builder: serpy::ServerBuilder) -> Server {
    builder.bind("127.0.0.1:0").expect("bind 127.0.0.1:0")
}

/// Connects `builder` to `server` and returns (client, server side of the link).
pub fn pair(server: &Server, builder: serpy::ConnectionBuilder) -> (Connection, Connection) {
    let client = builder.connect(server.local_addr()).expect("connect");
    let peer = server.get_connection_timeout(T).expect("accepted");
    (client, peer)
}

/// Waits for the first event that `pred` accepts; panics after `T`.
pub fn wait_event(conn: &Connection, what: &str, pred: impl Fn(&Event) -> bool) -> Event {
    let deadline = std::time::Instant::now() + T;
    let events = conn.events();
    loop {
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        match events.recv_timeout(left) {
            Ok(e) if pred(&e) => return e,
            Ok(_) => {}
            Err(_) => panic!("no {what} event within {T:?}"),
        }
    }
}

/// The number of threads of this process (Linux: `/proc/self/task`; Windows: a Toolhelp
/// snapshot; 0 where neither exists).
pub fn thread_count() -> usize {
    #[cfg(windows)]
    return windows::thread_count();
    #[cfg(not(windows))]
    std::fs::read_dir("/proc/self/task")
        .map(|d| d.count())
        .unwrap_or(0)
}

/// The number of open file descriptors of this process (Linux: `/proc/self/fd`; Windows:
/// its handles, sockets among them; 0 where neither exists).
pub fn fd_count() -> usize {
    #[cfg(windows)]
    return windows::handle_count();
    #[cfg(not(windows))]
    std::fs::read_dir("/proc/self/fd")
        .map(|d| d.count())
        .unwrap_or(0)
}

/// The counts of [`thread_count`] and [`fd_count`] on Windows, from kernel32.
#[cfg(windows)]
mod windows {
    use std::ffi::c_void;

    type Handle = *mut c_void;
    const INVALID_HANDLE_VALUE: Handle = -1isize as Handle;
    const TH32CS_SNAPTHREAD: u32 = 0x4;

    /// THREADENTRY32.
    #[repr(C)]
    struct ThreadEntry {
        size: u32,
        usage: u32,
        thread_id: u32,
        owner_process_id: u32,
        base_priority: i32,
        delta_priority: i32,
        flags: u32,
    }

    #[link(name = "kernel32")]
    extern "system" {
        fn CreateToolhelp32Snapshot(flags: u32, process_id: u32) -> Handle;
        fn Thread32First(snapshot: Handle, entry: *mut ThreadEntry) -> i32;
        fn Thread32Next(snapshot: Handle, entry: *mut ThreadEntry) -> i32;
        fn CloseHandle(handle: Handle) -> i32;
        fn GetCurrentProcess() -> Handle;
        fn GetProcessHandleCount(process: Handle, count: *mut u32) -> i32;
        fn CancelIoEx(handle: Handle, overlapped: *mut c_void) -> i32;
    }

    /// Ends the reads and writes other threads are blocked in on `socket` (they fail
    /// with "operation aborted"). On Windows, unlike Linux and macOS, `shutdown` does not
    /// wake them.
    pub fn cancel_blocked_io(socket: &std::net::TcpStream) {
        use std::os::windows::io::AsRawSocket;
        // SAFETY: the handle is the open socket `socket` owns; a null OVERLAPPED asks
        // for every pending operation on it to be cancelled.
        unsafe {
            CancelIoEx(
                socket.as_raw_socket() as usize as Handle,
                std::ptr::null_mut(),
            );
        }
    }

    pub fn thread_count() -> usize {
        let me = std::process::id();
        let mut entry = ThreadEntry {
            size: std::mem::size_of::<ThreadEntry>() as u32,
            usage: 0,
            thread_id: 0,
            owner_process_id: 0,
            base_priority: 0,
            delta_priority: 0,
            flags: 0,
        };
        // SAFETY: the snapshot handle is checked and closed; `entry` is a THREADENTRY32
        // with its size set, as Thread32First and Thread32Next require.
        unsafe {
            let snapshot = CreateToolhelp32Snapshot(TH32CS_SNAPTHREAD, 0);
            if snapshot == INVALID_HANDLE_VALUE {
                return 0;
            }
            let mut count = 0;
            let mut more = Thread32First(snapshot, &mut entry) != 0;
            while more {
                if entry.owner_process_id == me {
                    count += 1;
                }
                more = Thread32Next(snapshot, &mut entry) != 0;
            }
            CloseHandle(snapshot);
            count
        }
    }

    pub fn handle_count() -> usize {
        let mut count = 0u32;
        // SAFETY: GetCurrentProcess returns a pseudo-handle that needs no closing;
        // `count` is a valid place for the answer.
        let ok = unsafe { GetProcessHandleCount(GetCurrentProcess(), &mut count) };
        if ok == 0 {
            0
        } else {
            count as usize
        }
    }
}
