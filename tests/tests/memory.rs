//! The embedded store holds what its cap says: resident memory under a flood of unique
//! keys stays within 1.25 times the cap plus a small constant. Measured in a child process
//! (`memory_child`), so that no other test's allocations count.

use std::process::Command;

const MIB: u64 = 1 << 20;

fn fill(keys: u64, value_bytes: u64, cap: u64) -> (u64, u64) {
    let out = Command::new(env!("CARGO_BIN_EXE_memory_child"))
        .args([keys, value_bytes, cap].map(|n| n.to_string()))
        .output()
        .expect("running memory_child");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let line = String::from_utf8(out.stdout).expect("utf-8 output");
    let field = |name: &str| -> u64 {
        line.split_whitespace()
            .find_map(|part| part.strip_prefix(name)?.strip_prefix('='))
            .and_then(|n| n.parse().ok())
            .unwrap_or_else(|| panic!("no {name} in {line:?}"))
    };
    assert_eq!(field("loads"), keys + 1, "every key was a miss: {line}");
    (field("rss_before"), field("rss_after"))
}

/// Unique keys, several times what the cap holds: the store grew by 2.5 times its cap
/// (200,000 keys of 1 KiB under the default 64 MiB) when entries kept spare capacity and
/// its bookkeeping went uncounted. Smaller caps here keep the debug build's run short.
#[test]
fn unique_keys_keep_resident_memory_within_the_cap() {
    for (keys, value_bytes, cap) in [
        (60_000, 1024, 16 * MIB),
        (60_000, 100, 8 * MIB),
        (20_000, 4096, 16 * MIB),
    ] {
        let (before, after) = fill(keys, value_bytes, cap);
        let grown = after.saturating_sub(before);
        let bound = cap + cap / 4 + 8 * MIB;
        assert!(
            grown <= bound,
            "{value_bytes} B values, cap {} MiB: resident memory grew by {} MiB (bound {} MiB)",
            cap / MIB,
            grown / MIB,
            bound / MIB
        );
    }
}
