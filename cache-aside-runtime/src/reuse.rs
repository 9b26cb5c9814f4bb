//! Per-thread pools of what every Redis hit would otherwise allocate and free: key buffers
//! (`key`) and `GET` commands (`backend::redis`). A value taken on one thread may come back
//! on another (tasks move between workers); the pools even out.

use std::cell::RefCell;
use std::thread::LocalKey;

/// Values kept per thread.
const KEEP: usize = 64;

/// A thread's pool: `thread_local!(static FREE: Free<T> = const { RefCell::new(Vec::new()) })`.
pub(crate) type Free<T> = RefCell<Vec<T>>;

/// A value from this thread's pool, if it has one.
pub(crate) fn take<T: 'static>(free: &'static LocalKey<Free<T>>) -> Option<T> {
    // `try_with`: during thread teardown the pool may be gone.
    free.try_with(|free| free.borrow_mut().pop()).ok().flatten()
}

/// Puts `value` (already emptied by the caller) back in this thread's pool, unless the pool
/// is full or gone; then it is just dropped.
pub(crate) fn give<T: 'static>(free: &'static LocalKey<Free<T>>, value: T) {
    let _ = free.try_with(|free| {
        let mut free = free.borrow_mut();
        if free.len() < KEEP {
            free.push(value);
        }
    });
}
