//! `#[cached]` on a real Redis Cluster: three primaries with a replica each, started by the
//! harness and shared by every scenario of this binary (each uses its own namespace).
//!
//! The behaviour scenarios check what the single-node suite checks where a cluster changes
//! it: keys spread over every primary, prefix invalidation visits all of them, an entry and
//! its lock share a slot, none caching, stampedes, stale serving, leases, puts, evictions,
//! batches and tags. The cluster's faults (a primary killed, a slot migrated, a node paused)
//! are rows of the fault suite, in `faults/cluster.rs`.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::sync::atomic::Ordering::SeqCst;
use std::time::{Duration, Instant};

use cache_aside_runtime::{Cache, cache_evict, cached};
use cache_aside_tests::{Db, RedisCluster};
use tokio::task::JoinSet;

/// What the loader returns for `id`: a pure function of it.
fn expected(id: u64) -> String {
    format!("value-{id}-{}", id.wrapping_mul(2_654_435_761) % 1000)
}

#[cached(ttl = 60, prefix = "item", cache = cache, skip(cache, db))]
async fn item(cache: &Cache, db: &Db, id: u64) -> String {
    db.loads.fetch_add(1, SeqCst);
    tokio::time::sleep(db.delay).await;
    expected(id)
}

#[cached(ttl = 60, prefix = "locked", cache = cache, skip(cache, db), lock = true)]
async fn locked(cache: &Cache, db: &Db, id: u64) -> String {
    db.loads.fetch_add(1, SeqCst);
    tokio::time::sleep(db.delay).await;
    expected(id)
}

#[cached(ttl = 60, none_ttl = 60, prefix = "maybe", cache = cache, skip(cache, db))]
async fn maybe(cache: &Cache, db: &Db, id: u64) -> Option<String> {
    db.loads.fetch_add(1, SeqCst);
    id.is_multiple_of(2).then(|| expected(id))
}

#[cached(ttl = "1s", stale = "1m", prefix = "fresh", cache = cache, skip(cache, db))]
async fn fresh(cache: Cache, db: Arc<Db>, id: u64) -> String {
    db.loads.fetch_add(1, SeqCst);
    expected(id)
}

#[test]
fn cluster_suite() {
    let cluster = RedisCluster::start(3, 1);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        hits_misses_and_ttls_on_every_primary(&cluster).await;
        prefix_invalidation_visits_every_primary(&cluster).await;
        none_is_cached(&cluster).await;
        a_load_leases_its_entry_on_its_node_and_the_lock_holds_across_caches(&cluster).await;
        a_stampede_loads_once(&cluster).await;
        stale_entries_are_served_and_refreshed(&cluster).await;
        a_load_overtaken_by_an_invalidation_stores_nothing(&cluster).await;
        a_put_wins_over_an_older_load(&cluster).await;
        evictions_reach_every_entry(&cluster).await;
        a_batch_reads_every_slot_in_one_call(&cluster).await;
        a_tag_reaches_entries_on_every_primary(&cluster).await;
        a_tagged_batch_tags_entries_on_every_primary(&cluster).await;
        a_locked_batch_waits_for_loads_on_every_primary(&cluster).await;
    });
}

#[cached(ttl = 60, prefix = "tagged", tags = ["group:{group}"], cache = cache, skip(cache, db))]
async fn tagged(cache: &Cache, db: &Db, group: u64, id: u64) -> String {
    db.loads.fetch_add(1, SeqCst);
    expected(group * 1000 + id)
}

/// A tag's set lives in one slot, its entries in every slot: the invalidation deletes them
/// all (redis-rs splits the `UNLINK` by slot), and a load overtaken by it stores nothing.
async fn a_tag_reaches_entries_on_every_primary(cluster: &RedisCluster) {
    use cache_aside_runtime::tag::Tag;
    let cache = cluster.cache("c-tags");
    let db = Db::new(Duration::ZERO);
    for id in 0..40 {
        tagged(&cache, &db, 1, id).await;
        tagged(&cache, &db, 2, id).await;
    }
    let owners: BTreeSet<usize> = (0..40)
        .map(|id| cluster.primary_of(&tagged_cache_key(&cache, 1, id).unwrap()))
        .collect();
    assert_eq!(owners.len(), 3, "entries on every primary: {owners:?}");
    let tag = Tag::new("group").unwrap().value(&1).unwrap();
    assert_eq!(cache.invalidate_tag(&tag).await.unwrap(), 40);
    for id in 0..40 {
        assert_eq!(tagged(&cache, &db, 1, id).await, expected(1000 + id));
        assert_eq!(tagged(&cache, &db, 2, id).await, expected(2000 + id));
    }
    assert_eq!(db.loads(), 120, "group 1 reloaded, group 2 still cached");
    assert_eq!(cache.stats().errors, 0, "{:?}", cache.stats());
}

/// Groups of ids, many at a time, each entry tagged by its group.
#[cached(batch, ttl = 60, prefix = "grouped", tags = ["group:{keys.0}"], cache = cache, skip(cache, db))]
async fn grouped(
    cache: &Cache,
    db: &Db,
    keys: &[(u64, u64)],
) -> std::collections::HashMap<(u64, u64), String> {
    db.loads.fetch_add(keys.len() as u64, SeqCst);
    keys.iter()
        .map(|&(group, id)| ((group, id), expected(group * 1000 + id)))
        .collect()
}

/// A batch's entries on every slot carry their tags: invalidating one group's tag removes
/// that group's entries wherever they live, and leaves the other's.
async fn a_tagged_batch_tags_entries_on_every_primary(cluster: &RedisCluster) {
    use cache_aside_runtime::tag::Tag;
    let cache = cluster.cache("c-tagged-batch");
    let db = Db::new(Duration::ZERO);
    let keys: Vec<(u64, u64)> = (0..30).flat_map(|id| [(1, id), (2, id)]).collect();
    assert_eq!(grouped(&cache, &db, &keys).await.len(), 60);
    assert_eq!(grouped(&cache, &db, &keys).await.len(), 60);
    assert_eq!(db.loads(), 60, "the second batch hit");
    let tag = Tag::new("group").unwrap().value(&1).unwrap();
    assert_eq!(cache.invalidate_tag(&tag).await.unwrap(), 30);
    let got = grouped(&cache, &db, &keys).await;
    assert!(
        keys.iter()
            .all(|&(g, id)| got[&(g, id)] == expected(g * 1000 + id))
    );
    assert_eq!(db.loads(), 90, "group 1 reloaded, group 2 still cached");
    assert_eq!(cache.stats().errors, 0, "{:?}", cache.stats());
}

/// `item`'s entries, many at a time.
#[cached(batch, ttl = 60, prefix = "item", cache = cache, skip(cache, db))]
async fn items(cache: &Cache, db: &Db, ids: &[u64]) -> std::collections::HashMap<u64, String> {
    db.loads.fetch_add(ids.len() as u64, SeqCst);
    ids.iter().map(|&id| (id, expected(id))).collect()
}

/// A batch over keys on every primary: one `MGET` split by slot, only the misses loaded,
/// each stored where the one-key `item` reads it.
async fn a_batch_reads_every_slot_in_one_call(cluster: &RedisCluster) {
    let cache = cluster.cache("c-batch");
    let db = Db::new(Duration::ZERO);
    for id in 0..20 {
        assert_eq!(item(&cache, &db, id).await, expected(id));
    }
    let ids: Vec<u64> = (0..60).collect();
    let got = items(&cache, &db, &ids).await;
    assert_eq!(got.len(), 60);
    assert!(ids.iter().all(|id| got[id] == expected(*id)));
    assert_eq!(db.loads(), 60, "20 hits, 40 loaded in one call");
    let owners: BTreeSet<usize> = (0..60)
        .map(|id| cluster.primary_of(&item_cache_key(&cache, id).unwrap()))
        .collect();
    assert_eq!(owners.len(), 3, "keys on every primary: {owners:?}");
    for id in 20..60 {
        assert_eq!(item(&cache, &db, id).await, expected(id));
    }
    assert_eq!(db.loads(), 60, "the batch's entries are item's");
    assert_eq!(items(&cache, &db, &ids).await.len(), 60);
    assert_eq!(db.loads(), 60);
    assert_eq!(cache.stats().errors, 0, "{:?}", cache.stats());
}

/// `#[cache_put]` against a load that read the old row, as in `tests/write_side.rs`.
async fn a_put_wins_over_an_older_load(cluster: &RedisCluster) {
    use cache_aside_tests::race::{Reader, put_during_a_load};
    let cache = cluster.cache("c-put");
    for (i, reader) in [Reader::Plain, Reader::Locked, Reader::Eager]
        .into_iter()
        .enumerate()
    {
        for later in [false, true] {
            let id = 10 * i as u64 + u64::from(later);
            let seen = put_during_a_load(&cache, reader, id, later).await;
            assert_eq!(seen.paused_load, "old");
            assert_eq!(seen.next_read, "new", "{reader:?}, later reader {later}");
            assert_eq!(seen.later_reader.as_deref().unwrap_or("new"), "new");
        }
    }
    assert!(cache.stats().puts >= 6, "{:?}", cache.stats());
}

#[cache_evict(item(cache, id))]
async fn touch_item(cache: &Cache, id: u64) {}

#[cache_evict(item(cache, ..))]
async fn touch_every_item(cache: &Cache) {}

/// `#[cache_evict]` of one key and of a whole function, whose keys are on every primary.
async fn evictions_reach_every_entry(cluster: &RedisCluster) {
    let cache = cluster.cache("c-evict");
    let db = Db::new(Duration::ZERO);
    for id in 0..40 {
        assert_eq!(item(&cache, &db, id).await, expected(id));
    }
    touch_item(&cache, 3).await;
    assert_eq!(item(&cache, &db, 3).await, expected(3));
    assert_eq!(db.loads(), 41, "one entry evicted");
    touch_every_item(&cache).await;
    for id in 0..40 {
        assert_eq!(item(&cache, &db, id).await, expected(id));
    }
    assert_eq!(db.loads(), 81, "every entry evicted");
    assert_eq!(cache.stats().evictions, 2);
}

/// The invalidation race of `tests/leases.rs`, on the cluster: with and without the lock,
/// with the lease taken by the read or after it, and a reader starting after the write.
async fn a_load_overtaken_by_an_invalidation_stores_nothing(cluster: &RedisCluster) {
    use cache_aside_tests::race::{
        Reader, invalidation_during_a_load, invalidation_during_a_refresh,
    };
    let cache = cluster.cache("c-race");
    for (i, reader) in [Reader::Plain, Reader::Locked, Reader::Eager]
        .into_iter()
        .enumerate()
    {
        for later in [false, true] {
            let id = 10 * i as u64 + u64::from(later);
            let seen = invalidation_during_a_load(&cache, reader, id, later).await;
            assert_eq!(seen.paused_load, "old");
            assert_eq!(seen.next_read, "new", "{reader:?}, later reader {later}");
            assert_eq!(seen.later_reader.is_some(), later, "{reader:?}");
            assert_eq!(seen.later_reader.as_deref().unwrap_or("new"), "new");
        }
    }
    assert_eq!(invalidation_during_a_refresh(&cache, 100).await, "new");
    assert!(cache.stats().fills_dropped >= 7, "{:?}", cache.stats());
}

async fn hits_misses_and_ttls_on_every_primary(cluster: &RedisCluster) {
    let cache = cluster.cache("c-hits");
    assert_eq!(cache.backend_name(), "redis-cluster");
    let db = Db::new(Duration::ZERO);
    for id in 0..60 {
        assert_eq!(item(&cache, &db, id).await, expected(id));
    }
    assert_eq!(db.loads(), 60);
    for id in 0..60 {
        assert_eq!(item(&cache, &db, id).await, expected(id));
    }
    assert_eq!(db.loads(), 60, "the second round is all hits");
    let stats = cache.stats();
    assert_eq!((stats.hits, stats.misses, stats.errors), (60, 60, 0));
    // The keys live on every primary, so every node served some of these calls.
    let owners: BTreeSet<usize> = (0..60)
        .map(|id| cluster.primary_of(&item_cache_key(&cache, id).unwrap()))
        .collect();
    assert_eq!(owners.len(), 3, "keys on every primary: {owners:?}");
    let ttl = cache
        .ttl_of(&item_cache_key(&cache, 7).unwrap())
        .await
        .unwrap()
        .expect("cached");
    assert!(
        ttl > Duration::from_secs(55) && ttl <= Duration::from_secs(60),
        "{ttl:?}"
    );
    assert!(item_invalidate(&cache, 7).await.unwrap());
    assert_eq!(item(&cache, &db, 7).await, expected(7));
    assert_eq!(db.loads(), 61, "an invalidated entry reloads");
}

async fn prefix_invalidation_visits_every_primary(cluster: &RedisCluster) {
    let cache = cluster.cache("c-prefix");
    let db = Db::new(Duration::ZERO);
    for id in 0..300 {
        item(&cache, &db, id).await;
        maybe(&cache, &db, id).await;
    }
    assert_eq!(item_invalidate_all(&cache).await.unwrap(), 300);
    assert_eq!(
        maybe_invalidate_all(&cache).await.unwrap(),
        300,
        "cached Some and None alike"
    );
    let before = db.loads();
    for id in 0..300 {
        assert_eq!(item(&cache, &db, id).await, expected(id));
    }
    assert_eq!(db.loads() - before, 300, "every entry was gone");
    assert_eq!(cache.invalidate_prefix("item").await.unwrap(), 300);
    assert_eq!(cache.invalidate_prefix("item").await.unwrap(), 0);
}

async fn none_is_cached(cluster: &RedisCluster) {
    let cache = cluster.cache("c-none");
    let db = Db::new(Duration::ZERO);
    assert_eq!(maybe(&cache, &db, 1).await, None);
    assert_eq!(maybe(&cache, &db, 1).await, None);
    assert_eq!(maybe(&cache, &db, 2).await, Some(expected(2)));
    assert_eq!(maybe(&cache, &db, 2).await, Some(expected(2)));
    assert_eq!(db.loads(), 2);
}

async fn a_load_leases_its_entry_on_its_node_and_the_lock_holds_across_caches(
    cluster: &RedisCluster,
) {
    // Two caches: two connections, as two processes of a fleet would have.
    let (a, b) = (cluster.cache("c-lock"), cluster.cache("c-lock"));
    let db = Db::new(Duration::from_millis(300));
    let key = locked_cache_key(&a, 5).unwrap();
    let (first, (second, lease_held_on)) = tokio::join!(locked(&a, &db, 5), async {
        tokio::time::sleep(Duration::from_millis(50)).await;
        // While the first cache loads, its lease is in the entry itself, on the node that
        // serves the entry's slot: one key, so every lease script runs on a cluster.
        let holder = cluster.primary_of(&key);
        let entry: Option<Vec<u8>> = tokio::task::block_in_place(|| {
            redis::cmd("GET")
                .arg(&key)
                .query(&mut cluster.nodes()[holder].conn())
                .unwrap()
        });
        let held = entry.is_some_and(|e| cache_aside_tests::is_pending(&e));
        (locked(&b, &db, 5).await, held.then_some(holder))
    });
    assert_eq!(
        lease_held_on,
        Some(cluster.primary_of(&key)),
        "the lease of {key} is in its slot"
    );
    assert_eq!((first, second), (expected(5), expected(5)));
    assert_eq!(
        db.loads(),
        1,
        "the second cache waited for the first's load"
    );
    assert_eq!(b.stats().lock_waits, 1);
    assert_eq!(a.stats().errors + b.stats().errors, 0);
}

async fn a_stampede_loads_once(cluster: &RedisCluster) {
    let cache = cluster.cache("c-stampede");
    let db = Db::new(Duration::from_millis(50));
    let mut calls = JoinSet::new();
    for _ in 0..100 {
        let (cache, db) = (cache.clone(), db.clone());
        calls.spawn(async move { item(&cache, &db, 9).await });
    }
    while let Some(value) = calls.join_next().await {
        assert_eq!(value.unwrap(), expected(9));
    }
    assert_eq!(db.loads(), 1);
}

async fn stale_entries_are_served_and_refreshed(cluster: &RedisCluster) {
    let cache = cluster.cache("c-stale");
    let db = Db::new(Duration::ZERO);
    assert_eq!(fresh(cache.clone(), db.clone(), 3).await, expected(3));
    tokio::time::sleep(Duration::from_millis(1_100)).await;
    assert_eq!(fresh(cache.clone(), db.clone(), 3).await, expected(3));
    assert_eq!(cache.stats().stale_served, 1);
    let deadline = Instant::now() + Duration::from_secs(5);
    while db.loads() < 2 {
        assert!(Instant::now() < deadline, "the background refresh ran");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(cache.stats().refreshes, 1);
}

/// Lets held loads finish, one permit each, once the batch's body runs.
#[cached(ttl = 60, prefix = "c-held", cache = cache, skip(cache, go))]
async fn held_item(cache: &Cache, go: &tokio::sync::Semaphore, id: u64) -> String {
    go.acquire().await.unwrap().forget();
    expected(id)
}

#[cached(batch, ttl = 60, prefix = "c-held", lock = true, cache = cache, skip(cache, go, asked))]
async fn held_items(
    cache: &Cache,
    go: &tokio::sync::Semaphore,
    asked: &std::sync::Mutex<Vec<u64>>,
    ids: &[u64],
) -> std::collections::HashMap<u64, String> {
    asked.lock().unwrap().extend_from_slice(ids);
    go.add_permits(6);
    ids.iter().map(|&id| (id, expected(id))).collect()
}

/// A locked batch over every primary waits for the keys another cache (another process)
/// is loading, wherever their slots are, and loads only the others.
async fn a_locked_batch_waits_for_loads_on_every_primary(cluster: &RedisCluster) {
    let (holder, batcher) = (cluster.cache("c-lock-batch"), cluster.cache("c-lock-batch"));
    let go = Arc::new(tokio::sync::Semaphore::new(0));
    let held: Vec<u64> = (1..=6).collect();
    let owners: BTreeSet<usize> = held
        .iter()
        .map(|&id| cluster.primary_of(&held_item_cache_key(&holder, id).unwrap()))
        .collect();
    assert_eq!(owners.len(), 3, "held keys on every primary: {owners:?}");
    let mut loads = JoinSet::new();
    for &id in &held {
        let (holder, go) = (holder.clone(), Arc::clone(&go));
        loads.spawn(async move { (id, held_item(&holder, &go, id).await) });
    }
    let asked = std::sync::Mutex::new(Vec::new());
    let batch = async {
        // Each held key's lease is in place once its entry holds a placeholder.
        for &id in &held {
            let key = held_item_cache_key(&holder, id).unwrap();
            let node = cluster.primary_of(&key);
            let started = Instant::now();
            loop {
                let entry: Option<Vec<u8>> = tokio::task::block_in_place(|| {
                    redis::cmd("GET")
                        .arg(&key)
                        .query(&mut cluster.nodes()[node].conn())
                        .unwrap()
                });
                if entry.is_some_and(|e| cache_aside_tests::is_pending(&e)) {
                    break;
                }
                assert!(
                    started.elapsed() < Duration::from_secs(5),
                    "no lease on {key}"
                );
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
        }
        let ids: Vec<u64> = (1..=12).collect();
        held_items(&batcher, &go, &asked, &ids).await
    };
    let got = batch.await;
    while let Some(loaded) = loads.join_next().await {
        let (id, value) = loaded.unwrap();
        assert_eq!(value, expected(id));
    }
    assert_eq!(got.len(), 12);
    assert!((1..=12).all(|id| got[&id] == expected(id)), "{got:?}");
    let mut asked = asked.into_inner().unwrap();
    asked.sort_unstable();
    assert_eq!(
        asked,
        (7..=12).collect::<Vec<u64>>(),
        "the held keys were waited for"
    );
    assert_eq!(batcher.stats().lock_waits, 6, "{:?}", batcher.stats());
}
