//! Race-free invalidation: a load that began before an invalidation never stores its value
//! after it, and a reader that starts after it never gets that load's value. Each scenario runs
//! with leases (the default), and without (`__without_leases`, the old path), where it
//! shows the race: the old row served after the write, until the TTL ends.

use cache_aside_runtime::Cache;
use cache_aside_tests::RedisServer;
use cache_aside_tests::race::{
    Reader, Seen, fail_safe_after_another_process_invalidated, invalidation_during_a_failing_load,
    invalidation_during_a_load, invalidation_during_a_refresh, invalidation_from_another_process,
    invalidation_while_another_process_loads,
};

/// What a race-free cache gives: the paused load's caller gets the row it read, everyone
/// after the write gets the new row.
fn fixed(later: bool) -> Seen {
    Seen {
        paused_load: "old".into(),
        later_reader: later.then(|| "new".into()),
        next_read: "new".into(),
    }
}

async fn on_each(cache: &Cache, readers: &[Reader], id: u64) {
    for (i, &reader) in readers.iter().enumerate() {
        for later in [false, true] {
            let id = id + 10 * i as u64 + u64::from(later);
            let seen = invalidation_during_a_load(cache, reader, id, later).await;
            assert_eq!(seen, fixed(later), "{reader:?}, a later reader: {later}");
        }
    }
    assert!(cache.stats().fills_dropped >= readers.len() as u64 * 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_redis_a_load_overtaken_by_an_invalidation_stores_nothing() {
    let server = RedisServer::start();
    let cache = Cache::redis(&server.url()).unwrap();
    on_each(&cache, &[Reader::Plain, Reader::Locked, Reader::Eager], 1).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn in_process_a_load_overtaken_by_an_invalidation_stores_nothing() {
    let cache = Cache::memory();
    on_each(&cache, &[Reader::Plain, Reader::Locked], 1).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refresh_overtaken_by_an_invalidation_stores_nothing() {
    let server = RedisServer::start();
    for cache in [Cache::redis(&server.url()).unwrap(), Cache::memory()] {
        let next = invalidation_during_a_refresh(&cache, 1).await;
        assert_eq!(next, "new", "{}", cache.backend_name());
    }
}

/// Another process's invalidation is not counted here, so a reader that starts after it
/// joins this process's paused load; the load's fill is dropped, and the reader, which did
/// not see its lease, runs its own body instead of taking the old row.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reader_after_another_process_invalidated_never_gets_the_old_row() {
    let server = RedisServer::start();
    let here = Cache::redis(&server.url()).unwrap();
    let there = Cache::redis(&server.url()).unwrap();
    let seen = invalidation_from_another_process(&here, &there, 1).await;
    assert_eq!(seen, fixed(true));
}

/// A load that ran without a lease (another process held it) stored nothing: a reader that
/// joins it after that process invalidated, having read the key empty, loads for itself.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reader_never_takes_an_unleased_load_that_another_process_invalidated() {
    let server = RedisServer::start();
    let here = Cache::redis(&server.url()).unwrap();
    let there = Cache::redis(&server.url()).unwrap();
    let seen = invalidation_while_another_process_loads(&here, &there, 1).await;
    assert_eq!(seen, fixed(true));
}

/// A fail-safe answer's back-off rewrites the kept entry under the load's lease: after an
/// invalidation it has nothing to rewrite, and the next read loads the new row.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fail_safe_back_off_never_brings_an_invalidated_entry_back() {
    let server = RedisServer::start();
    for cache in [Cache::redis(&server.url()).unwrap(), Cache::memory()] {
        let seen = invalidation_during_a_failing_load(&cache, 1).await;
        assert_eq!(
            seen,
            ("old".into(), "new".into()),
            "{}",
            cache.backend_name()
        );
    }
}

/// A fail-safe answer is the last good value before an invalidation: a reader that starts
/// after another process invalidated, and joins the failing load, gets the body's error.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fail_safe_answer_never_reaches_a_reader_after_another_process_invalidated() {
    let server = RedisServer::start();
    let here = Cache::redis(&server.url()).unwrap();
    let there = Cache::redis(&server.url()).unwrap();
    let mut joined = 0;
    for attempt in 0..5 {
        let id = 100 + 10 * attempt;
        let (first, later, waited) =
            fail_safe_after_another_process_invalidated(&here, &there, id).await;
        assert_eq!(
            first,
            Ok("old".into()),
            "the paused load's caller: fail-safe"
        );
        assert_eq!(later, Err("database down".into()), "the later reader");
        joined += u32::from(waited);
    }
    assert!(
        joined > 0,
        "no later reader joined a paused load in 5 attempts"
    );
}

/// The old path, to show the scenarios catch the race: the paused load stores the old
/// row, the later reader joins it, and the next read returns the old row.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_leases_the_old_row_outlives_the_write() {
    let server = RedisServer::start();
    let builder = || Cache::builder().__without_leases();
    let caches = [
        builder().redis(&server.url()).unwrap(),
        builder().memory().unwrap(),
    ];
    for cache in &caches {
        for reader in [Reader::Plain, Reader::Locked] {
            let seen = invalidation_during_a_load(cache, reader, 500, true).await;
            assert_eq!(
                seen.next_read,
                "old",
                "{reader:?} on {}",
                cache.backend_name()
            );
            assert_eq!(seen.later_reader, None, "it joined the paused load");
            reader.invalidate(cache, 500).await;
        }
        let next = invalidation_during_a_refresh(cache, 501).await;
        assert_eq!(next, "old", "the refresh stored it");
    }
    let there = builder().redis(&server.url()).unwrap();
    let seen = invalidation_from_another_process(&caches[0], &there, 502).await;
    assert_eq!(
        seen.later_reader.as_deref(),
        Some("old"),
        "it took the paused load's row"
    );
}
