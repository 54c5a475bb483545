//! Small pieces of thread plumbing that the connection and the server share: a lock that
//! survives a panic elsewhere, a bounded queue that drops its oldest item rather than
//! block, and a [`Deadline`] made once from a timeout and passed down.

use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, Sender, TrySendError};

use crate::error::Error;

/// Locks `m`. A panic in another thread that held it must not make every later call
/// panic too: the data behind these locks stays consistent between statements.
pub(crate) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// Locks `m` if nobody holds it (a poisoned lock counts as held).
pub(crate) fn try_lock<T>(m: &Mutex<T>) -> Option<MutexGuard<'_, T>> {
    m.try_lock().ok()
}

/// Puts `item` in the bounded channel `tx`, taking the oldest item out through `rx` (the
/// receiving side of the same channel) while it is full: the newest items are kept and
/// the caller never blocks. Returns how many items were dropped.
pub(crate) fn push_drop_oldest<T>(tx: &Sender<T>, rx: &Receiver<T>, item: T) -> usize {
    let mut item = item;
    let mut dropped = 0;
    loop {
        match tx.try_send(item) {
            Ok(()) => return dropped,
            Err(TrySendError::Full(back)) => {
                if rx.try_recv().is_ok() {
                    dropped += 1;
                }
                item = back;
            }
            Err(TrySendError::Disconnected(_)) => return dropped,
        }
    }
}

/// When a call must give up: made once from the timeout the caller gave, then passed
/// down, so that one call never waits longer than that timeout in total, and the
/// [`Error::Timeout`] it returns names that timeout (not what was left of it).
#[derive(Clone, Copy, Debug)]
pub(crate) struct Deadline {
    /// The moment to give up; `None`: never (no timeout, or one too large to represent).
    pub at: Option<Instant>,
    /// The timeout the caller gave (`Duration::MAX` for none).
    pub timeout: Duration,
}

impl Deadline {
    /// No deadline: wait as long as it takes.
    pub fn never() -> Self {
        Deadline {
            at: None,
            timeout: Duration::MAX,
        }
    }

    /// Gives up `timeout` from now.
    pub fn after(timeout: Duration) -> Self {
        Deadline {
            at: Instant::now().checked_add(timeout),
            timeout,
        }
    }

    /// True when there is a moment to give up at.
    pub fn is_bounded(&self) -> bool {
        self.at.is_some()
    }

    /// Time left (`Duration::MAX` without a deadline, zero once it has passed).
    pub fn remaining(&self) -> Duration {
        match self.at {
            Some(at) => at.saturating_duration_since(Instant::now()),
            None => Duration::MAX,
        }
    }

    /// The error of `operation` running out of this deadline.
    pub fn timed_out(&self, operation: &'static str) -> Error {
        Error::Timeout {
            operation,
            after: self.timeout,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn push_drop_oldest_keeps_the_newest() {
        let (tx, rx) = crossbeam_channel::bounded(2);
        assert_eq!(push_drop_oldest(&tx, &rx, 1), 0);
        assert_eq!(push_drop_oldest(&tx, &rx, 2), 0);
        assert_eq!(push_drop_oldest(&tx, &rx, 3), 1);
        assert_eq!(rx.try_iter().collect::<Vec<_>>(), [2, 3]);
    }

    #[test]
    fn a_deadline_names_the_timeout_it_was_made_from() {
        let d = Deadline::after(Duration::from_millis(250));
        assert!(d.is_bounded());
        assert!(d.remaining() <= Duration::from_millis(250));
        match d.timed_out("x") {
            Error::Timeout { operation, after } => {
                assert_eq!(operation, "x");
                assert_eq!(after, Duration::from_millis(250));
            }
            e => panic!("{e}"),
        }
        assert_eq!(Deadline::never().remaining(), Duration::MAX);
        assert!(!Deadline::after(Duration::MAX).is_bounded());
    }

    #[test]
    fn a_poisoned_lock_still_locks() {
        let m = std::sync::Arc::new(Mutex::new(1));
        let m2 = m.clone();
        let _ = std::thread::spawn(move || {
            let _g = m2.lock().unwrap();
            panic!("poison it");
        })
        .join();
        assert_eq!(*lock(&m), 1);
    }
}
