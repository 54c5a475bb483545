//! A logger that counts the crate's log lines, for the tests of rate-limited logging.
//! A test binary has one logger: it is installed at the first [`count_log_lines`], and
//! each test watches lines of its own (a needle), so tests of one binary can run in
//! parallel.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};

/// Counts the log lines of the `serpy` targets whose text holds a watched needle.
struct Counter {
    watched: Mutex<Vec<(String, log::Level, Arc<AtomicUsize>)>>,
}

impl log::Log for Counter {
    fn enabled(&self, m: &log::Metadata) -> bool {
        m.target().starts_with("serpy")
    }
    fn log(&self, r: &log::Record) {
        if !r.target().starts_with("serpy") {
            return;
        }
        let watched = self.watched.lock().unwrap_or_else(|p| p.into_inner());
        if watched.is_empty() {
            return;
        }
        let text = r.args().to_string();
        for (needle, level, count) in watched.iter() {
            if r.level() <= *level && text.contains(needle.as_str()) {
                count.fetch_add(1, Ordering::Relaxed);
            }
        }
    }
    fn flush(&self) {}
}

fn counter() -> &'static Counter {
    static COUNTER: OnceLock<&'static Counter> = OnceLock::new();
    COUNTER.get_or_init(|| {
        let c: &'static Counter = Box::leak(Box::new(Counter {
            watched: Mutex::new(Vec::new()),
        }));
        log::set_logger(c).expect("no other logger in this test binary");
        log::set_max_level(log::LevelFilter::Trace);
        c
    })
}

/// From now on, counts the log lines at `level` or more severe whose text contains
/// `needle` (an empty needle counts every line of the crate).
pub fn count_log_lines(needle: &str, level: log::Level) -> Arc<AtomicUsize> {
    let count = Arc::new(AtomicUsize::new(0));
    counter()
        .watched
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .push((needle.to_string(), level, count.clone()));
    count
}
