//! The fault suite's cluster rows: one local Redis Cluster (three primaries with a replica
//! each) on which a slot is migrated, a node paused and a primary killed (its replica is
//! promoted, the old primary restarts and rejoins) while calls run. Each fault is a row of
//! the suite's summary line, `cluster-migrated`, `cluster-paused`, `cluster-killed`: every
//! call must return the loader's value, none may fail, and hits must resume after it.
//!
//! They run one after the other on the one cluster, since each fault changes it.

use super::*;
use cache_aside_tests::{RedisCluster, slot_of};

/// Time limit of the three cluster faults together, cluster start included.
const CLUSTER_LIMIT: Duration = Duration::from_secs(150);
/// Calls run this long under each fault.
const RUN: Duration = Duration::from_secs(6);
/// A call that has not answered by then is failed (and cancelled).
const CAP: Duration = Duration::from_secs(3);
/// Keys the calls cycle over.
const KEYS: u64 = 40;

/// Runs the three cluster faults and records their rows; a fault that panics or runs out of
/// time records a row that says so.
pub(super) async fn scenarios() {
    let task = tokio::spawn(async {
        let mut cluster = tokio::task::block_in_place(|| RedisCluster::start(3, 1));
        migrated(&cluster).await;
        paused(&mut cluster).await;
        killed(&mut cluster).await;
    });
    let abort = task.abort_handle();
    let failure = match tokio::time::timeout(CLUSTER_LIMIT, task).await {
        Ok(Ok(())) => return,
        Ok(Err(join)) => panic_text(join),
        Err(_) => {
            abort.abort();
            format!("did not finish within {CLUSTER_LIMIT:?}")
        }
    };
    ROWS.lock().unwrap().push(Row {
        fault: "cluster",
        calls: 0,
        failed: 0,
        wrong: 0,
        slow: 0,
        worst: Duration::ZERO,
        notes: Vec::new(),
        outcome: Err(failure),
    });
}

/// Calls `item` over [`KEYS`] keys for [`RUN`] while `fault` acts, each call in its own task
/// under [`CAP`]; then checks that hits resume, and records the row. The calls run in a task
/// of their own, so that a fault blocking its thread (`block_in_place`) does not stop them.
async fn under_fault(fault_name: &'static str, cache: &Cache, fault: impl Future<Output = ()>) {
    let db = Db::new(Duration::ZERO);
    let tally = Arc::new(Tally::default());
    let load = tokio::spawn(run_calls(cache.clone(), db.clone(), tally.clone()));
    fault.await;
    if let Err(join) = load.await {
        tally.note(
            &tally.failed,
            format!("the calls' task: {}", panic_text(join)),
        );
    }
    let outcome = hits_resume(cache, &db).await;
    ROWS.lock().unwrap().push(Row {
        fault: fault_name,
        calls: tally.calls.load(SeqCst),
        failed: tally.failed.load(SeqCst),
        wrong: tally.wrong.load(SeqCst),
        slow: 0,
        worst: Duration::from_micros(tally.worst_us.load(SeqCst)),
        notes: tally.notes.lock().unwrap().clone(),
        outcome,
    });
}

/// [`RUN`] of calls, one after another, each in its own task under [`CAP`], counted.
async fn run_calls(cache: Cache, db: Arc<Db>, tally: Arc<Tally>) {
    let until = Instant::now() + RUN;
    let mut n = 0u64;
    while Instant::now() < until {
        let (cache, db, id) = (cache.clone(), db.clone(), n % KEYS);
        let started = Instant::now();
        let call = tokio::spawn(async move { item(&cache, &db, id).await });
        tally.calls.fetch_add(1, SeqCst);
        match tokio::time::timeout(CAP, call).await {
            Ok(Ok(value)) if value == expected(id) => {}
            Ok(Ok(value)) => tally.note(&tally.wrong, format!("{id}: got {value:?}")),
            Ok(Err(join)) => tally.note(&tally.failed, format!("{id}: {}", panic_text(join))),
            Err(_) => tally.note(&tally.failed, format!("{id}: no answer within {CAP:?}")),
        }
        tally
            .worst_us
            .fetch_max(started.elapsed().as_micros() as u64, SeqCst);
        n += 1;
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// After a fault: a round over the keys is served from Redis again within 20 s, with the
/// loader's values all along.
async fn hits_resume(cache: &Cache, db: &Db) -> Result<(), String> {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let before = cache.stats().hits;
        for id in 0..KEYS {
            let value = item(cache, db, id).await;
            if value != expected(id) {
                return Err(format!("after the fault, {id} got {value:?}"));
            }
        }
        if cache.stats().hits - before == KEYS {
            return Ok(());
        }
        if Instant::now() > deadline {
            return Err(format!("hits did not resume: {:?}", cache.stats()));
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// The slot of one of the run's keys moves to another primary mid-run.
async fn migrated(cluster: &RedisCluster) {
    let cache = cluster.cache("c-migrate");
    let key = item_cache_key(&cache, 3).unwrap();
    let slot = slot_of(&key);
    let from = cluster.primary_of(&key);
    let to = *cluster
        .primaries()
        .iter()
        .find(|&&p| p != from)
        .expect("another primary");
    let fault = async {
        tokio::time::sleep(Duration::from_secs(1)).await;
        tokio::task::block_in_place(|| cluster.migrate_slot(slot, to));
    };
    under_fault("cluster-migrated", &cache, fault).await;
    assert_eq!(cluster.primary_of(&key), to, "the slot moved");
}

/// The primary of one of the run's keys stops answering (SIGSTOP) for less than the node
/// timeout, so it is not failed over, then resumes.
async fn paused(cluster: &mut RedisCluster) {
    let cache = cluster.cache("c-pause");
    let key = item_cache_key(&cache, 1).unwrap();
    let node = cluster.primary_of(&key);
    let stopped = &*cluster;
    let fault = async {
        tokio::time::sleep(Duration::from_secs(1)).await;
        stopped.nodes()[node].pause();
        tokio::time::sleep(Duration::from_millis(700)).await;
        stopped.nodes()[node].resume();
    };
    under_fault("cluster-paused", &cache, fault).await;
    tokio::task::block_in_place(|| cluster.settle());
}

/// The primary of one of the run's keys is killed; its replica takes over, and the old
/// primary restarts and rejoins as a replica of its replacement.
async fn killed(cluster: &mut RedisCluster) {
    let cache = cluster.cache("c-kill");
    let key = item_cache_key(&cache, 2).unwrap();
    let victim = cluster.primary_of(&key);
    let killer = {
        let (key, cluster) = (key.clone(), &mut *cluster);
        async move {
            tokio::time::sleep(Duration::from_secs(1)).await;
            cluster.node_mut(victim).kill();
            tokio::task::block_in_place(|| cluster.wait_for_failover(victim, &key));
            tokio::time::sleep(Duration::from_millis(500)).await;
            tokio::task::block_in_place(|| {
                cluster.node_mut(victim).restart();
                cluster.settle();
            });
        }
    };
    under_fault("cluster-killed", &cache, killer).await;
    assert_ne!(cluster.primary_of(&key), victim, "the replica took over");
    assert!(
        !cluster.primaries().contains(&victim),
        "the restarted node rejoined as a replica"
    );
}
