//! Reused `GET` commands, per thread, like the key buffers ([`crate::reuse`]): a `redis::Cmd`
//! is two allocations (its bytes and its argument offsets), two of the six a hit makes
//! beyond decoding the value. Only `GET`s are pooled: their size is the key's, while a
//! `SET` holds a value of any size.

use std::cell::RefCell;
use std::ops::{Deref, DerefMut};

use crate::reuse::{self, Free};

/// The longest key whose command is worth keeping.
const MAX_KEY: usize = 512;

thread_local!(static FREE: Free<redis::Cmd> = const { RefCell::new(Vec::new()) });

/// An empty command, returned to this thread's pool when dropped.
pub(crate) struct Pooled {
    cmd: redis::Cmd,
    keep: bool,
}

impl Pooled {
    pub(crate) fn take(key_len: usize) -> Pooled {
        let keep = key_len <= MAX_KEY;
        let reused = if keep { reuse::take(&FREE) } else { None };
        let cmd = match reused {
            Some(cmd) => cmd,
            None => redis::Cmd::with_capacity(2, "GET".len() + key_len.max(MAX_KEY / 4)),
        };
        Pooled { cmd, keep }
    }
}

impl Deref for Pooled {
    type Target = redis::Cmd;
    fn deref(&self) -> &redis::Cmd {
        &self.cmd
    }
}

impl DerefMut for Pooled {
    fn deref_mut(&mut self) -> &mut redis::Cmd {
        &mut self.cmd
    }
}

impl Drop for Pooled {
    fn drop(&mut self) {
        if !self.keep {
            return;
        }
        let mut cmd = std::mem::take(&mut self.cmd);
        cmd.clear();
        reuse::give(&FREE, cmd);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A command back from the pool carries nothing of its last use: had `clear` been
    /// skipped, the second GET would be sent as `GET a GET b`.
    #[test]
    fn a_reused_command_is_empty() {
        let mut first = Pooled::take(1);
        first.arg("GET").arg("a");
        drop(first);
        let mut second = Pooled::take(1);
        second.arg("GET").arg("b");
        assert_eq!(
            second.get_packed_command(),
            b"*2\r\n$3\r\nGET\r\n$1\r\nb\r\n"
        );
        assert_eq!(
            FREE.with(|free| free.borrow().len()),
            0,
            "it came from the pool"
        );
    }

    #[test]
    fn a_command_for_an_over_long_key_is_not_kept() {
        let mut long = Pooled::take(MAX_KEY + 1);
        long.arg("GET").arg("x".repeat(MAX_KEY + 1));
        drop(long);
        assert_eq!(FREE.with(|free| free.borrow().len()), 0);
    }
}
