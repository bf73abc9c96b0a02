//! Which data-plane worker the current thread is.
//!
//! With several workers, each serves its own `SO_REUSEPORT` listener on its own single-threaded
//! runtime, and a connection a worker opens to an upstream is driven by that worker's reactor.
//! State kept per worker (the idle upstream connections) is indexed by [`current`]: 0 for any
//! thread that is not a data-plane worker (the main runtime: admin, health checks, token
//! fetches), 1 to N for the workers. [`slots`] is how many such indexes this process uses.

use std::cell::Cell;
use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};

static SLOTS: AtomicUsize = AtomicUsize::new(1);

thread_local! {
    static CURRENT: Cell<usize> = const { Cell::new(0) };
}

/// Declares that this process runs `workers` data-plane workers (before anything per worker is
/// built). One worker, or none, means a single slot.
pub fn set_workers(workers: usize) {
    SLOTS.store(if workers > 1 { workers + 1 } else { 1 }, Relaxed);
}

/// How many per-worker slots state should keep: the workers plus one for other threads.
pub fn slots() -> usize {
    SLOTS.load(Relaxed)
}

/// Marks the calling thread as worker `id` (1-based).
pub fn enter(id: usize) {
    CURRENT.with(|c| c.set(id));
}

/// The calling thread's slot, below `len` (state built before [`set_workers`] has fewer
/// slots; it still works, shared).
pub fn current(len: usize) -> usize {
    CURRENT.with(Cell::get) % len.max(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn threads_start_in_slot_zero_and_enter_their_own() {
        assert_eq!(current(3), 0);
        std::thread::spawn(|| {
            enter(2);
            assert_eq!(current(3), 2);
            // Fewer slots than workers: still in range.
            assert_eq!(current(2), 0);
            assert_eq!(current(0), 0);
        })
        .join()
        .unwrap();
        assert_eq!(current(3), 0);
    }
}
