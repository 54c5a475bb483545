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
//! - [`byte_sum`]: what differs between processors: the v2 checksum (the sum of a
//!   payload's bytes) with the widest vectors the processor has, chosen at run time
//!   (AVX2 on x86-64 processors that have it; the crate is built for baseline x86-64,
//!   whose SSE2 vectors are half as wide).
//!
//! - [`base85_encode_wide`] / [`base85_decode_wide`]: the base85 of v1 modes 2 to 5,
//!   blocks of 8 (6) groups a step with AVX2 where the processor has it (chosen at run
//!   time, [`B85Kernel`]); the portable code in `protocol::v1::base85` does the rest and
//!   everything on other processors, and alone decides what a decoding error is.
//!
//! - [`recv_into`] (Unix): a read into a buffer's uninitialized capacity, which std's
//!   `Read` cannot do (it wants initialized bytes, so the room would be zero-filled
//!   first).
//!
//! - [`set_recv_low_water`] (Linux and Android): the socket option `SO_RCVLOWAT`, which
//!   neither std nor socket2 sets.
//!
//! - [`prefetch_for_write`] (x86-64 processors that have `PREFETCHW`): asks for cache
//!   lines about to be written, without waiting for them.
//!
//! This is the only module of the crate with `unsafe` code (two foreign calls, one on
//! Windows only, one on Linux and Android only; one slice cast, Linux and Android only;
//! the length of what a `recv` wrote, Unix only; the AVX2 byte sum and base85 kernels,
//! x86-64 only; the `PREFETCHW` hint and the `CPUID` question that finds it, x86-64
//! only).

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

/// Reads at most `most` bytes from `socket` (with `flags`, as recv(2)) into the capacity
/// of `buf` after index `from` (at most `buf.len()`; the bytes after it are dropped
/// first) and appends what came: `buf[from..from + n]` holds the `n` bytes read. The
/// room is not zero-filled first (the v2 decoder's receive chunks, 64 KiB each, cost a
/// memset each otherwise). A read interrupted by a signal is retried.
#[cfg(unix)]
#[allow(unsafe_code)]
pub(crate) fn recv_into(
    socket: &std::net::TcpStream,
    buf: &mut bytes::BytesMut,
    from: usize,
    most: usize,
    flags: std::os::raw::c_int,
) -> io::Result<usize> {
    buf.truncate(from);
    let spare = buf.spare_capacity_mut();
    let to = spare.len().min(most);
    let n = loop {
        match socket2::SockRef::from(socket).recv_with_flags(&mut spare[..to], flags) {
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            r => break r?,
        }
    };
    // recv(2) returns at most the length it was given; `min` keeps `set_len` in bounds
    // whatever it says.
    let n = n.min(to);
    // SAFETY: `buf.len()` is `from` (truncated above) and `spare` is the capacity after
    // it; recv(2) wrote the `n` bytes it returned to the start of `spare[..to]`
    // (initialized now), `n <= to <= spare.len()`, so `from + n` is within the capacity
    // and every byte below it is initialized.
    unsafe { buf.set_len(from + n) };
    Ok(n)
}

/// Sets the socket's receive low-water mark (`SO_RCVLOWAT`) to `bytes` (at least 1): a
/// blocked read (or peek) of it is woken only once that many bytes are there, or its
/// buffer is full, or the stream ends, is shut down or fails, or its timeout runs out
/// (then it returns what is there). Linux caps the mark at half the largest receive
/// buffer and grows the socket's receive buffer to hold it.
#[cfg(any(target_os = "linux", target_os = "android"))]
#[allow(unsafe_code)]
pub(crate) fn set_recv_low_water(socket: &std::net::TcpStream, bytes: usize) -> io::Result<()> {
    use std::os::fd::AsRawFd;
    let value: libc::c_int = bytes.clamp(1, libc::c_int::MAX as usize) as libc::c_int;
    // SAFETY: the descriptor is `socket`'s, open for the whole call (the borrow outlives
    // it); setsockopt(2) reads `size_of::<c_int>()` bytes from the pointer, which points
    // to `value`, a live `c_int` on the stack, and writes nothing through it.
    let r = unsafe {
        libc::setsockopt(
            socket.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_RCVLOWAT,
            (&value as *const libc::c_int).cast::<libc::c_void>(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if r == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

#[cfg(any(target_os = "linux", target_os = "android"))]
thread_local! {
    /// Set on a thread that [`stop_wakeup_preemption`] made `SCHED_BATCH`.
    static UNPREEMPTING: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// Stops the calling thread's wake-ups from preempting the thread running on the
/// processor it is woken on (Linux and Android): a thread of the default policy
/// (`SCHED_OTHER`) becomes `SCHED_BATCH`. Woken, it then runs at once on an idle
/// processor, or else when the running thread blocks or its time slice ends; its nice
/// value and its share of the processor stay as they were. A thread of another policy
/// (real-time, say, inherited from the program) is left as it is; failing changes
/// nothing.
#[cfg(any(target_os = "linux", target_os = "android"))]
#[allow(unsafe_code)]
pub(crate) fn stop_wakeup_preemption() {
    let param = libc::sched_param { sched_priority: 0 };
    // SAFETY: sched_getscheduler(2) and sched_setscheduler(2) with pid 0 read and change
    // the calling thread only; the latter reads one `sched_param` through the pointer,
    // which points to `param`, live on the stack.
    let done = unsafe {
        libc::sched_getscheduler(0) == libc::SCHED_OTHER
            && libc::sched_setscheduler(0, libc::SCHED_BATCH, &param) == 0
    };
    if done {
        UNPREEMPTING.with(|u| u.set(true));
    }
}

/// True if [`stop_wakeup_preemption`] changed the calling thread: a thread it starts
/// inherits `SCHED_BATCH`, which [`restore_wakeup_preemption`] undoes.
#[cfg(any(target_os = "linux", target_os = "android"))]
pub(crate) fn wakeup_preemption_stopped() -> bool {
    UNPREEMPTING.with(|u| u.get())
}

/// Makes the calling thread `SCHED_OTHER` again (see [`wakeup_preemption_stopped`]).
#[cfg(any(target_os = "linux", target_os = "android"))]
#[allow(unsafe_code)]
pub(crate) fn restore_wakeup_preemption() {
    let param = libc::sched_param { sched_priority: 0 };
    // SAFETY: as in `stop_wakeup_preemption`: the calling thread, and `param` on the stack.
    let _ = unsafe { libc::sched_setscheduler(0, libc::SCHED_OTHER, &param) };
}

/// Asks the processor to bring the `lines` cache lines (64 bytes each) from `p` on into
/// this core's cache, ready to be written, without waiting for them (x86-64 with
/// `PREFETCHW`): a hint, which reads and writes nothing and is ordered with no other
/// access (not even locked ones, so a lock taken or let go after it does not wait for
/// it), for any address (even an invalid one, which it ignores). Elsewhere it does
/// nothing.
#[inline]
pub(crate) fn prefetch_for_write(p: *const u8, lines: usize) {
    #[cfg(target_arch = "x86_64")]
    if has_prefetchw() {
        for line in 0..lines {
            let at = p.wrapping_add(line * 64);
            // SAFETY: PREFETCHW (present, see `has_prefetchw`) accesses no memory the
            // program can observe and never faults, whatever the address; it reads
            // the register it is given and changes no register or flag.
            #[allow(unsafe_code)]
            unsafe {
                std::arch::asm!(
                    "prefetchw [{0}]",
                    in(reg) at,
                    options(nostack, preserves_flags, readonly)
                )
            };
        }
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = (p, lines);
}

/// Whether this processor has `PREFETCHW` (CPUID leaf 8000_0001h, ECX bit 8), asked once.
#[cfg(target_arch = "x86_64")]
fn has_prefetchw() -> bool {
    static HAS: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *HAS.get_or_init(|| {
        use std::arch::x86_64::{__cpuid, __get_cpuid_max};
        // SAFETY: every x86-64 processor has CPUID, and leaf 8000_0001h is asked only
        // when the processor says it has it. (Safe functions in newer compilers.)
        #[allow(unsafe_code, unused_unsafe)]
        let has = unsafe {
            __get_cpuid_max(0x8000_0000).0 >= 0x8000_0001
                && __cpuid(0x8000_0001).ecx & (1 << 8) != 0
        };
        has
    })
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

/// Payloads shorter than this are summed by the portable code: below it the wider
/// vectors gain nothing (measured: equal at 200 bytes, 1.3 times faster at 256).
const WIDE_FROM: usize = 256;

/// An implementation of [`byte_sum`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum ByteSum {
    /// [`crate::protocol::v2::portable_checksum`]: portable Rust, which the compiler
    /// vectorises for the processors the crate is built for (SSE2 on x86-64).
    Portable,
    /// 32-byte AVX2 vectors (`vpsadbw`), on x86-64 processors that have them.
    #[cfg(target_arch = "x86_64")]
    Avx2,
}

impl ByteSum {
    /// The implementation [`byte_sum`] takes for `len` bytes on this processor: the
    /// widest one it can run (std detects the processor's features once and caches them
    /// in an atomic), the portable one for short payloads.
    #[inline]
    pub(crate) fn for_len(len: usize) -> ByteSum {
        #[cfg(target_arch = "x86_64")]
        if len >= WIDE_FROM && std::arch::is_x86_feature_detected!("avx2") {
            return ByteSum::Avx2;
        }
        let _ = len;
        ByteSum::Portable
    }

    /// Every implementation this processor can run.
    #[cfg(test)]
    pub(crate) fn available() -> Vec<ByteSum> {
        #[allow(unused_mut)]
        let mut all = vec![ByteSum::Portable];
        #[cfg(target_arch = "x86_64")]
        if std::arch::is_x86_feature_detected!("avx2") {
            all.push(ByteSum::Avx2);
        }
        all
    }

    /// The sum of `bytes` modulo 2^32 by this implementation, whatever their length
    /// (`None` if this processor cannot run it): for tests, which exercise each
    /// implementation directly.
    #[cfg(test)]
    #[allow(unsafe_code)]
    pub(crate) fn sum(self, bytes: &[u8]) -> Option<u32> {
        match self {
            ByteSum::Portable => Some(crate::protocol::v2::portable_checksum(bytes)),
            #[cfg(target_arch = "x86_64")]
            ByteSum::Avx2 => std::arch::is_x86_feature_detected!("avx2")
                // SAFETY: the processor has AVX2 (detected just now).
                .then(|| unsafe { byte_sum_avx2(bytes) }),
        }
    }
}

/// The sum of `bytes` modulo 2^32 (the v2 checksum), by the implementation
/// [`ByteSum::for_len`] picks.
#[inline]
#[allow(unsafe_code)]
pub(crate) fn byte_sum(bytes: &[u8]) -> u32 {
    match ByteSum::for_len(bytes.len()) {
        ByteSum::Portable => crate::protocol::v2::portable_checksum(bytes),
        // SAFETY: `for_len` returns `Avx2` only when the processor has AVX2 (detected at
        // run time), the one requirement of `byte_sum_avx2`.
        #[cfg(target_arch = "x86_64")]
        ByteSum::Avx2 => unsafe { byte_sum_avx2(bytes) },
    }
}

/// [`byte_sum`] with AVX2: `vpsadbw` adds each 8 bytes of a 32-byte vector into a 64-bit
/// lane, and four vectors' lanes are added up apart (no overflow: a lane would need
/// more than 2^56 bytes), so the loop is one load, one `vpsadbw` and one add per 32
/// bytes; the last bytes (under 128) go through the portable code, compiled here for
/// AVX2 too.
///
/// # Safety
///
/// The processor must have AVX2 (`is_x86_feature_detected!("avx2")`).
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
#[allow(unsafe_code)]
unsafe fn byte_sum_avx2(bytes: &[u8]) -> u32 {
    use std::arch::x86_64::{
        __m256i, _mm256_add_epi64, _mm256_loadu_si256, _mm256_sad_epu8, _mm256_setzero_si256,
        _mm256_storeu_si256,
    };
    let zero = _mm256_setzero_si256();
    let (mut a0, mut a1, mut a2, mut a3) = (zero, zero, zero, zero);
    let mut blocks = bytes.chunks_exact(128);
    for block in blocks.by_ref() {
        let at = block.as_ptr().cast::<__m256i>();
        // SAFETY: `block` is 128 bytes long, so `at`, `at + 1`, `at + 2` and `at + 3`
        // each point to 32 readable bytes of it; `loadu` needs no alignment.
        let (v0, v1, v2, v3) = unsafe {
            (
                _mm256_loadu_si256(at),
                _mm256_loadu_si256(at.add(1)),
                _mm256_loadu_si256(at.add(2)),
                _mm256_loadu_si256(at.add(3)),
            )
        };
        a0 = _mm256_add_epi64(a0, _mm256_sad_epu8(v0, zero));
        a1 = _mm256_add_epi64(a1, _mm256_sad_epu8(v1, zero));
        a2 = _mm256_add_epi64(a2, _mm256_sad_epu8(v2, zero));
        a3 = _mm256_add_epi64(a3, _mm256_sad_epu8(v3, zero));
    }
    let all = _mm256_add_epi64(_mm256_add_epi64(a0, a1), _mm256_add_epi64(a2, a3));
    let mut lanes = [0u64; 4];
    // SAFETY: `lanes` is 32 writable bytes; `storeu` needs no alignment.
    unsafe { _mm256_storeu_si256(lanes.as_mut_ptr().cast::<__m256i>(), all) };
    // Modulo 2^32: the low 32 bits of the 64-bit sums.
    let total = lanes.iter().fold(0u64, |sum, &lane| sum.wrapping_add(lane)) as u32;
    total.wrapping_add(crate::protocol::v2::portable_checksum(blocks.remainder()))
}

/// An implementation of the base85 kernels ([`base85_decode_wide`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum B85Kernel {
    /// The portable code of `protocol::v1::base85` alone.
    Portable,
    /// 32-byte AVX2 vectors, on x86-64 processors that have them.
    #[cfg(target_arch = "x86_64")]
    Avx2,
}

impl B85Kernel {
    /// The widest kernel this processor can run (std detects the processor's features
    /// once and caches them in an atomic).
    #[inline]
    pub(crate) fn detect() -> B85Kernel {
        #[cfg(target_arch = "x86_64")]
        if std::arch::is_x86_feature_detected!("avx2") {
            return B85Kernel::Avx2;
        }
        B85Kernel::Portable
    }

    /// Every kernel this processor can run.
    #[cfg(test)]
    pub(crate) fn available() -> Vec<B85Kernel> {
        #[allow(unused_mut)]
        let mut all = vec![B85Kernel::Portable];
        #[cfg(target_arch = "x86_64")]
        if std::arch::is_x86_feature_detected!("avx2") {
            all.push(B85Kernel::Avx2);
        }
        all
    }
}

/// The lookup tables of the wide base85 kernels, built from the alphabet at compile
/// time by [`B85Tables::new`] (the alphabet itself lives with the portable code).
///
/// A 16-entry byte shuffle (`vpshufb`) looks up 16 values at a time; a character (or a
/// digit) has 96 (or 85) possible values, so six tables are looked up, table `t` with
/// the index `x - 16 t` (`x` less the first value, wrapping): below the table's range
/// that index has its top bit set and the shuffle gives 0; at or above it, the entry of
/// `x`'s low four bits. Each table holds its entries XORed with the previous table's,
/// so that the XOR of the six lookups telescopes to the entry of `x`'s own table.
#[derive(Debug)]
pub(crate) struct B85Tables {
    /// Character `0x20 + 16 t + j` -> its digit + 1 (0 outside the alphabet), XORed
    /// with the entry of table `t - 1`; both 16-byte halves the same.
    decode: [[u8; 32]; 6],
    /// Digit `62 + 16 t + j` -> what its character adds to `digit + 48 + 7 (digit > 9)
    /// + 6 (digit > 35)` (which is the character of every digit below 62: `0-9A-Za-z`),
    /// XORed with the entry of table `t - 1`; both 16-byte halves the same.
    encode: [[u8; 32]; 2],
}

impl B85Tables {
    /// The tables of `alphabet`, whose characters must all be in `0x21..0x80`.
    pub(crate) const fn new(alphabet: &[u8; 85]) -> B85Tables {
        let mut value = [0u8; 96];
        let mut i = 0;
        while i < 85 {
            let c = alphabet[i];
            assert!(
                c > 0x20 && c < 0x80,
                "a base85 character outside 0x21..0x80"
            );
            value[(c - 0x20) as usize] = i as u8 + 1;
            i += 1;
        }
        // What each digit's character adds to the ramp `digit + 48 (+ 7 + 6)`.
        let mut extra = [0u8; 32];
        let mut i = 0;
        while i < 85 {
            let ramp = i as u8 + 48 + if i > 9 { 7 } else { 0 } + if i > 35 { 6 } else { 0 };
            let add = alphabet[i].wrapping_sub(ramp);
            if i < 62 {
                assert!(
                    add == 0,
                    "a base85 alphabet that does not start with 0-9A-Za-z"
                );
            } else {
                extra[i - 62] = add;
            }
            i += 1;
        }
        let mut decode = [[0u8; 32]; 6];
        let mut t = 0;
        while t < 6 {
            let mut j = 0;
            while j < 16 {
                let prev = if t == 0 { 0 } else { value[16 * (t - 1) + j] };
                let entry = value[16 * t + j] ^ prev;
                decode[t][j] = entry;
                decode[t][j + 16] = entry;
                j += 1;
            }
            t += 1;
        }
        let mut encode = [[0u8; 32]; 2];
        let mut j = 0;
        while j < 16 {
            let (first, second) = (extra[j], extra[16 + j] ^ extra[j]);
            encode[0][j] = first;
            encode[0][j + 16] = first;
            encode[1][j] = second;
            encode[1][j + 16] = second;
            j += 1;
        }
        B85Tables { decode, encode }
    }
}

/// Encodes blocks of 32 bytes (eight groups, 40 characters) from the start of `data`
/// into `out` with `kernel`, up to the end of either; returns how many blocks it
/// encoded (always 0 for [`B85Kernel::Portable`], which leaves everything to the
/// caller's portable code). Nothing of `out` past the encoded blocks is written.
#[inline]
#[allow(unsafe_code)]
pub(crate) fn base85_encode_wide(
    kernel: B85Kernel,
    tables: &B85Tables,
    data: &[u8],
    out: &mut [u8],
) -> usize {
    match kernel {
        B85Kernel::Portable => {
            let _ = (tables, data, out);
            0
        }
        // SAFETY: `B85Kernel::Avx2` is only made where the processor has AVX2 (detected
        // at run time by `detect` and `available`), the one requirement of
        // `base85_encode_avx2`.
        #[cfg(target_arch = "x86_64")]
        B85Kernel::Avx2 => unsafe { base85_encode_avx2(tables, data, out) },
    }
}

/// [`base85_encode_wide`] with AVX2, one block of eight groups a step, in 32-bit lanes:
/// the big-endian value `v` of each group; `q = v / 85^2` (`v * 2434904643 >> 44`,
/// exact for every `u32`: 2434904643 * 7225 exceeds 2^44 by 1259 <= 2^12) and
/// `v % 85^2`; the first digit `q / 85^2` (`q * 594460 >> 32`, exact for `q < 594455`:
/// the excess 6204 times 594455 is below 2^32) and `q % 85^2`; then both remainders,
/// below 85^2, in 16-bit lanes: `x / 85` (`x * 12337 >> 20`, exact below 2^20 / 69)
/// and `x % 85`. Digits become characters by a ramp with two steps (`0-9A-Za-z`) and
/// two table lookups (the punctuation), and two shuffles put them in order: 20
/// characters from each 128-bit half.
///
/// # Safety
///
/// The processor must have AVX2 (`is_x86_feature_detected!("avx2")`).
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
#[allow(unsafe_code)]
unsafe fn base85_encode_avx2(tables: &B85Tables, data: &[u8], out: &mut [u8]) -> usize {
    use std::arch::x86_64::{
        __m128i, __m256i, _mm256_add_epi8, _mm256_and_si256, _mm256_blend_epi32,
        _mm256_castsi256_si128, _mm256_cmpgt_epi8, _mm256_extracti128_si256, _mm256_loadu_si256,
        _mm256_mul_epu32, _mm256_mulhi_epu16, _mm256_mullo_epi16, _mm256_mullo_epi32,
        _mm256_or_si256, _mm256_set1_epi16, _mm256_set1_epi32, _mm256_set1_epi8, _mm256_setr_epi8,
        _mm256_shuffle_epi8, _mm256_slli_epi16, _mm256_slli_epi32, _mm256_srli_epi16,
        _mm256_srli_epi64, _mm256_sub_epi16, _mm256_sub_epi32, _mm256_sub_epi8, _mm256_xor_si256,
        _mm_storeu_si128,
    };
    let blocks = (data.len() / 32).min(out.len() / 40);
    // SAFETY: each table is 32 readable bytes; `loadu` needs no alignment.
    let (extra0, extra1) = unsafe {
        (
            _mm256_loadu_si256(tables.encode[0].as_ptr().cast::<__m256i>()),
            _mm256_loadu_si256(tables.encode[1].as_ptr().cast::<__m256i>()),
        )
    };
    // Digit -> character: the ramp `digit + 48 + 7 (digit > 9) + 6 (digit > 35)` for
    // `0-9A-Za-z`, plus what the two tables add for the digits from 62 (the table of
    // 62..78 gives 0 below 62, that of 78..85 below 78).
    let to_chars = |d: __m256i| {
        let extra = _mm256_xor_si256(
            _mm256_shuffle_epi8(extra0, _mm256_sub_epi8(d, _mm256_set1_epi8(62))),
            _mm256_shuffle_epi8(extra1, _mm256_sub_epi8(d, _mm256_set1_epi8(78))),
        );
        let letters = _mm256_and_si256(
            _mm256_cmpgt_epi8(d, _mm256_set1_epi8(9)),
            _mm256_set1_epi8(7),
        );
        let small = _mm256_and_si256(
            _mm256_cmpgt_epi8(d, _mm256_set1_epi8(35)),
            _mm256_set1_epi8(6),
        );
        _mm256_add_epi8(
            _mm256_add_epi8(d, _mm256_set1_epi8(48)),
            _mm256_add_epi8(_mm256_add_epi8(letters, small), extra),
        )
    };
    let swap = _mm256_setr_epi8(
        3, 2, 1, 0, 7, 6, 5, 4, 11, 10, 9, 8, 15, 14, 13, 12, //
        3, 2, 1, 0, 7, 6, 5, 4, 11, 10, 9, 8, 15, 14, 13, 12,
    );
    // The first 16 characters of each half's four groups: the last four of groups 0 to
    // 2 from `rest`, the first of groups 0 to 3 from `first`.
    let from_rest = _mm256_setr_epi8(
        -1, 0, 1, 2, 3, -1, 4, 5, 6, 7, -1, 8, 9, 10, 11, -1, //
        -1, 0, 1, 2, 3, -1, 4, 5, 6, 7, -1, 8, 9, 10, 11, -1,
    );
    let from_first = _mm256_setr_epi8(
        0, -1, -1, -1, -1, 4, -1, -1, -1, -1, 8, -1, -1, -1, -1, 12, //
        0, -1, -1, -1, -1, 4, -1, -1, -1, -1, 8, -1, -1, -1, -1, 12,
    );
    let by_pow2 = _mm256_set1_epi32(2_434_904_643_u32 as i32);
    let by_pow2_small = _mm256_set1_epi32(594_460);
    let pow2 = _mm256_set1_epi32(7225);
    let by_85 = _mm256_set1_epi16(12337);
    let d85 = _mm256_set1_epi16(85);
    for i in 0..blocks {
        // SAFETY: `i < blocks <= data.len() / 32`, so the 32 bytes at `i * 32` are within
        // `data`; `loadu` needs no alignment.
        let v = unsafe { _mm256_loadu_si256(data.as_ptr().add(i * 32).cast::<__m256i>()) };
        let v = _mm256_shuffle_epi8(v, swap);
        // q = v / 85^2: the even lanes' products in the low halves of the 64-bit lanes,
        // the odd lanes' in the high halves.
        let even = _mm256_srli_epi64::<44>(_mm256_mul_epu32(v, by_pow2));
        let odd = _mm256_srli_epi64::<12>(_mm256_mul_epu32(_mm256_srli_epi64::<32>(v), by_pow2));
        let q = _mm256_blend_epi32::<0b1010_1010>(even, odd);
        let low = _mm256_sub_epi32(v, _mm256_mullo_epi32(q, pow2));
        let even = _mm256_srli_epi64::<32>(_mm256_mul_epu32(q, by_pow2_small));
        let odd = _mm256_mul_epu32(_mm256_srli_epi64::<32>(q), by_pow2_small);
        let first = _mm256_blend_epi32::<0b1010_1010>(even, odd);
        let high = _mm256_sub_epi32(q, _mm256_mullo_epi32(first, pow2));
        // 16-bit lanes: d1 * 85 + d2, d3 * 85 + d4 -> bytes d1, d2, d3, d4.
        let pairs = _mm256_or_si256(high, _mm256_slli_epi32::<16>(low));
        let tens = _mm256_srli_epi16::<4>(_mm256_mulhi_epu16(pairs, by_85));
        let units = _mm256_sub_epi16(pairs, _mm256_mullo_epi16(tens, d85));
        let rest = to_chars(_mm256_or_si256(tens, _mm256_slli_epi16::<8>(units)));
        let first = to_chars(first);
        let head = _mm256_or_si256(
            _mm256_shuffle_epi8(rest, from_rest),
            _mm256_shuffle_epi8(first, from_first),
        );
        // Each half's last four characters are the last four bytes of its `rest`: that
        // half is stored 4 bytes on, and its `head` then over the first 16.
        // SAFETY: `i < blocks <= out.len() / 40`, so the 40 bytes at `i * 40` are within
        // `out`: 16 at `at + 4`, `at`, `at + 24` and `at + 20`; `storeu` needs no
        // alignment.
        unsafe {
            let at = out.as_mut_ptr().add(i * 40);
            _mm_storeu_si128(at.add(4).cast::<__m128i>(), _mm256_castsi256_si128(rest));
            _mm_storeu_si128(at.cast::<__m128i>(), _mm256_castsi256_si128(head));
            _mm_storeu_si128(
                at.add(24).cast::<__m128i>(),
                _mm256_extracti128_si256::<1>(rest),
            );
            _mm_storeu_si128(
                at.add(20).cast::<__m128i>(),
                _mm256_extracti128_si256::<1>(head),
            );
        }
    }
    blocks
}

/// Decodes blocks of six base85 groups (30 characters, 24 bytes) from the start of
/// `text` into `out` with `kernel`, up to the first block that holds a character
/// outside the alphabet or a group whose value exceeds 32 bits, or the end of either;
/// returns how many blocks it decoded (always 0 for [`B85Kernel::Portable`], which
/// leaves everything to the caller's portable code). Nothing of `out` past the
/// decoded blocks is written.
#[inline]
#[allow(unsafe_code)]
pub(crate) fn base85_decode_wide(
    kernel: B85Kernel,
    tables: &B85Tables,
    text: &[u8],
    out: &mut [u8],
) -> usize {
    match kernel {
        B85Kernel::Portable => {
            let _ = (tables, text, out);
            0
        }
        // SAFETY: `B85Kernel::Avx2` is only made where the processor has AVX2 (detected
        // at run time by `detect` and `available`), the one requirement of
        // `base85_decode_avx2`.
        #[cfg(target_arch = "x86_64")]
        B85Kernel::Avx2 => unsafe { base85_decode_avx2(tables, text, out) },
    }
}

/// [`base85_decode_wide`] with AVX2, one block of six groups a step: two 16-byte loads
/// (characters 0..16 and 14..30, three groups in each 128-bit half); six table lookups
/// map the 32 characters to digit + 1 (0 for a character outside the alphabet, and
/// characters from 0x80 are caught by their sign); `vpmaddubsw` and `vpmaddwd` make the
/// last four digits of each group its value below 85^4 (`(d1 85 + d2) 85^2 + d3 85 +
/// d4`), to which the first digit times 85^4 is added; a group overflows when its first
/// digit is above 82, or 82 with the rest above 2^32 - 1 - 82 * 85^4; the values are
/// then byte-swapped (big-endian) and their 24 bytes stored.
///
/// # Safety
///
/// The processor must have AVX2 (`is_x86_feature_detected!("avx2")`).
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
#[allow(unsafe_code)]
unsafe fn base85_decode_avx2(tables: &B85Tables, text: &[u8], out: &mut [u8]) -> usize {
    use std::arch::x86_64::{
        __m128i, __m256i, _mm256_add_epi32, _mm256_and_si256, _mm256_castsi128_si256,
        _mm256_castsi256_si128, _mm256_cmpeq_epi32, _mm256_cmpeq_epi8, _mm256_cmpgt_epi32,
        _mm256_cmpgt_epi8, _mm256_extracti128_si256, _mm256_inserti128_si256, _mm256_loadu_si256,
        _mm256_madd_epi16, _mm256_maddubs_epi16, _mm256_movemask_epi8, _mm256_mullo_epi32,
        _mm256_or_si256, _mm256_permutevar8x32_epi32, _mm256_set1_epi16, _mm256_set1_epi32,
        _mm256_set1_epi8, _mm256_setr_epi32, _mm256_setr_epi8, _mm256_setzero_si256,
        _mm256_shuffle_epi8, _mm256_sub_epi8, _mm256_xor_si256, _mm_loadu_si128, _mm_storel_epi64,
        _mm_storeu_si128,
    };
    let blocks = (text.len() / 30).min(out.len() / 24);
    let mut tab = [_mm256_setzero_si256(); 6];
    for (t, table) in tab.iter_mut().zip(&tables.decode) {
        // SAFETY: `table` is 32 readable bytes; `loadu` needs no alignment.
        *t = unsafe { _mm256_loadu_si256(table.as_ptr().cast::<__m256i>()) };
    }
    let zero = _mm256_setzero_si256();
    let one = _mm256_set1_epi8(1);
    // Groups start at bytes 0, 5 and 10 of the low half and 1, 6 and 11 of the high one.
    // The last four digits of each group, in the group's 32-bit lane (the fourth lane of
    // each half is 0: -1 gives 0 in a shuffle).
    let rest_of = _mm256_setr_epi8(
        1, 2, 3, 4, 6, 7, 8, 9, 11, 12, 13, 14, -1, -1, -1, -1, //
        2, 3, 4, 5, 7, 8, 9, 10, 12, 13, 14, 15, -1, -1, -1, -1,
    );
    // The first digit of each group, zero-extended.
    let first_of = _mm256_setr_epi8(
        0, -1, -1, -1, 5, -1, -1, -1, 10, -1, -1, -1, -1, -1, -1, -1, //
        1, -1, -1, -1, 6, -1, -1, -1, 11, -1, -1, -1, -1, -1, -1, -1,
    );
    let swap = _mm256_setr_epi8(
        3, 2, 1, 0, 7, 6, 5, 4, 11, 10, 9, 8, 15, 14, 13, 12, //
        3, 2, 1, 0, 7, 6, 5, 4, 11, 10, 9, 8, 15, 14, 13, 12,
    );
    let pack = _mm256_setr_epi32(0, 1, 2, 4, 5, 6, 7, 7);
    let w85 = _mm256_set1_epi16(0x0155); // bytes 85, 1: d1 * 85 + d2
    let w7225 = _mm256_set1_epi32(0x0001_1C39); // words 7225, 1
    let pow4 = _mm256_set1_epi32(52_200_625);
    let top = _mm256_set1_epi32(82);
    let top_rest = _mm256_set1_epi32((u32::MAX - 82 * 52_200_625) as i32);
    let mut done = 0;
    while done < blocks {
        // SAFETY: `done < blocks <= text.len() / 30`, so the 16 bytes at `done * 30` and
        // at `done * 30 + 14` are within `text`; `loadu` needs no alignment.
        let c = unsafe {
            let at = text.as_ptr().add(done * 30);
            let low = _mm_loadu_si128(at.cast::<__m128i>());
            let high = _mm_loadu_si128(at.add(14).cast::<__m128i>());
            _mm256_inserti128_si256::<1>(_mm256_castsi128_si256(low), high)
        };
        let mut d = zero;
        for (t, table) in tab.iter().enumerate() {
            let index = _mm256_sub_epi8(c, _mm256_set1_epi8(0x20 + 16 * t as i8));
            d = _mm256_xor_si256(d, _mm256_shuffle_epi8(*table, index));
        }
        let bad = _mm256_or_si256(_mm256_cmpeq_epi8(d, zero), _mm256_cmpgt_epi8(zero, c));
        let d = _mm256_sub_epi8(d, one);
        let rest = _mm256_madd_epi16(
            _mm256_maddubs_epi16(_mm256_shuffle_epi8(d, rest_of), w85),
            w7225,
        );
        let first = _mm256_shuffle_epi8(d, first_of);
        let over = _mm256_or_si256(
            _mm256_cmpgt_epi32(first, top),
            _mm256_and_si256(
                _mm256_cmpeq_epi32(first, top),
                _mm256_cmpgt_epi32(rest, top_rest),
            ),
        );
        if _mm256_movemask_epi8(_mm256_or_si256(bad, over)) != 0 {
            break;
        }
        let value = _mm256_add_epi32(_mm256_mullo_epi32(first, pow4), rest);
        let bytes = _mm256_permutevar8x32_epi32(_mm256_shuffle_epi8(value, swap), pack);
        // SAFETY: `done < blocks <= out.len() / 24`, so the 24 bytes at `done * 24` are
        // within `out`: 16 at `at`, 8 at `at + 16`; `storeu` and `storel` need no
        // alignment.
        unsafe {
            let at = out.as_mut_ptr().add(done * 24);
            _mm_storeu_si128(at.cast::<__m128i>(), _mm256_castsi256_si128(bytes));
            _mm_storel_epi64(
                at.add(16).cast::<__m128i>(),
                _mm256_extracti128_si256::<1>(bytes),
            );
        }
        done += 1;
    }
    done
}

#[cfg(test)]
mod tests {

    use super::*;

    /// The write prefetch is a hint: any address, valid or not, changes nothing.
    #[test]
    fn prefetch_for_write_changes_nothing_at_any_address() {
        let buf: Vec<u8> = (0..1024u32).map(|i| i as u8).collect();
        prefetch_for_write(buf.as_ptr(), 16);
        prefetch_for_write(buf.as_ptr().wrapping_add(buf.len()), 4);
        prefetch_for_write(std::ptr::null(), 2);
        prefetch_for_write(usize::MAX as *const u8, 2);
        let freed = {
            let gone = Vec::<u8>::with_capacity(4096);
            gone.as_ptr()
        };
        prefetch_for_write(freed, 64);
        assert!(buf.iter().enumerate().all(|(i, &b)| b == i as u8));
    }

    fn naive(bytes: &[u8]) -> u32 {
        bytes
            .iter()
            .fold(0, |sum, &b| sum.wrapping_add(u32::from(b)))
    }

    /// `recv_into` appends what came after `from`, at most `most` bytes, and keeps what
    /// is before `from`.
    #[cfg(unix)]
    #[test]
    fn recv_into_appends_what_came() {
        use std::io::Write;
        use std::net::{TcpListener, TcpStream};
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let mut tx = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let (rx, _) = listener.accept().unwrap();
        let sent: Vec<u8> = (0..200u8).collect();
        tx.write_all(&sent).unwrap();
        let mut buf = bytes::BytesMut::with_capacity(300);
        buf.extend_from_slice(b"held, then room");
        let mut got = Vec::new();
        while got.len() < sent.len() {
            let n = recv_into(&rx, &mut buf, 4, 7, 0).unwrap();
            assert!((1..=7).contains(&n), "{n}");
            assert_eq!(buf.len(), 4 + n);
            assert_eq!(&buf[..4], b"held");
            got.extend_from_slice(&buf[4..]);
        }
        assert_eq!(got, sent);
        // The end of the data, then no room (most 0) reads nothing either.
        drop(tx);
        assert_eq!(recv_into(&rx, &mut buf, 2, 100, 0).unwrap(), 0);
        assert_eq!(&buf[..], b"he");
    }

    /// Without data, a read that must not block says so and leaves the buffer as it was
    /// up to `from`.
    #[cfg(any(target_os = "linux", target_os = "android"))]
    #[test]
    fn recv_into_without_waiting() {
        use std::net::{TcpListener, TcpStream};
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let _tx = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let (rx, _) = listener.accept().unwrap();
        let mut buf = bytes::BytesMut::with_capacity(64);
        buf.extend_from_slice(b"abc");
        let e = recv_into(&rx, &mut buf, 3, 64, libc::MSG_DONTWAIT).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::WouldBlock);
        assert_eq!(&buf[..], b"abc");
    }

    /// Every length up to 300 and around the blocks' sizes, at every offset from 0 to 63
    /// (alignment), of mixed bytes and of 0xff bytes.
    #[test]
    fn every_byte_sum_is_the_naive_sum() {
        let mixed: Vec<u8> = (0..5000u32)
            .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
            .collect();
        let ones = vec![0xffu8; 5000];
        let mut lens: Vec<usize> = (0..300).collect();
        for block in [512, 1024, 2048, 4096] {
            lens.extend(block - 2..block + 3);
        }
        for imp in ByteSum::available() {
            for data in [&mixed, &ones] {
                for &len in &lens {
                    for offset in 0..64 {
                        let bytes = &data[offset..offset + len];
                        assert_eq!(imp.sum(bytes), Some(naive(bytes)), "{imp:?} {len} {offset}");
                    }
                }
            }
        }
    }

    /// Sums past 2^32 wrap around.
    #[test]
    fn every_byte_sum_wraps_around() {
        // 0xff * 2^24 = 0xff00_0000; 0xff * (2^24 + 2^16 + 2^8 + 2) = 2^32 + 0xfe.
        let len = (1 << 24) + (1 << 16) + (1 << 8) + 2;
        let ones = vec![0xffu8; len + 1];
        for imp in ByteSum::available() {
            assert_eq!(imp.sum(&ones[..1 << 24]), Some(0xff00_0000), "{imp:?}");
            assert_eq!(imp.sum(&ones[..len]), Some(0xfe), "{imp:?}");
            assert_eq!(imp.sum(&ones[1..]), Some(naive(&ones[1..])), "{imp:?}");
        }
    }

    /// The dispatch takes the widest implementation the processor has from `WIDE_FROM`
    /// bytes on, the portable one below.
    #[test]
    fn byte_sum_takes_the_widest_implementation() {
        let widest = *ByteSum::available().last().unwrap();
        #[cfg(target_arch = "x86_64")]
        assert_eq!(
            widest == ByteSum::Avx2,
            std::arch::is_x86_feature_detected!("avx2")
        );
        for len in [0, 1, WIDE_FROM - 1] {
            assert_eq!(ByteSum::for_len(len), ByteSum::Portable);
        }
        for len in [WIDE_FROM, WIDE_FROM + 1, 1 << 20, usize::MAX] {
            assert_eq!(ByteSum::for_len(len), widest);
        }
        let data: Vec<u8> = (0..1000u32).map(|i| (i * 7) as u8).collect();
        for len in [0, 255, 256, 1000] {
            assert_eq!(byte_sum(&data[..len]), naive(&data[..len]));
        }
    }
}
