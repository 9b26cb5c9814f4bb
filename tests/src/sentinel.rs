//! A Sentinel-managed primary for tests: one primary, one replica of it, and three
//! sentinels watching them (quorum 2), each a private `redis-server` on a free loopback
//! port, all stopped on drop.

use std::thread::sleep;
use std::time::{Duration, Instant};

use crate::RedisServer;

/// The name the sentinels monitor the primary under.
pub const SERVICE: &str = "cache-aside";
/// How long a primary must not answer before the sentinels call it down.
const DOWN_AFTER_MS: u64 = 1000;
/// Bound of every wait for the set to settle.
const SETTLE_TIMEOUT: Duration = Duration::from_secs(30);

/// A primary, its replica, and three sentinels.
pub struct RedisSentinels {
    /// The two data nodes: the primary first, until a failover swaps their roles.
    nodes: Vec<RedisServer>,
    sentinels: Vec<RedisServer>,
}

impl RedisSentinels {
    /// The primary, its replica (in sync), and three sentinels that know both and each
    /// other.
    pub fn start() -> RedisSentinels {
        let primary = RedisServer::start();
        let port = primary.port().to_string();
        let replica = RedisServer::start_with(&["--replicaof", "127.0.0.1", &port]);
        let mut set = RedisSentinels {
            nodes: vec![primary, replica],
            sentinels: Vec::new(),
        };
        set.wait_until("the replica is in sync", |set| {
            info(&set.nodes[1], "replication").contains("master_link_status:up")
        });
        let config = format!(
            "sentinel monitor {SERVICE} 127.0.0.1 {port} 2\n\
             sentinel down-after-milliseconds {SERVICE} {DOWN_AFTER_MS}\n\
             sentinel failover-timeout {SERVICE} 5000\n\
             sentinel parallel-syncs {SERVICE} 1\n"
        );
        set.sentinels = (0..3)
            .map(|_| RedisServer::start_sentinel(&config))
            .collect();
        set.wait_until("the sentinels know the replica and each other", |set| {
            set.sentinels.iter().all(|s| {
                let master = sentinel_master(s);
                master.contains("num-other-sentinels 2") && master.contains("num-slaves 1")
            })
        });
        set
    }

    /// A cache on the primary the sentinels name, in `namespace`, with a 500 ms timeout
    /// (calls under faults wait for reconnects).
    pub fn cache(&self, namespace: &str) -> cache_aside_runtime::Cache {
        cache_aside_runtime::Cache::builder()
            .namespace(namespace)
            .timeout(Duration::from_millis(500))
            .redis_sentinel(self.urls(), SERVICE)
            .expect("a sentinel cache")
    }

    /// The sentinels' URLs, for `Cache::builder().redis_sentinel(..)`.
    pub fn urls(&self) -> Vec<String> {
        self.sentinels.iter().map(RedisServer::url).collect()
    }

    /// The data nodes (the primary and its replica, in start order).
    pub fn nodes(&self) -> &[RedisServer] {
        &self.nodes
    }

    /// The sentinels, to pause.
    pub fn sentinels(&self) -> &[RedisServer] {
        &self.sentinels
    }

    /// One data node, to kill or restart.
    pub fn node_mut(&mut self, index: usize) -> &mut RedisServer {
        &mut self.nodes[index]
    }

    /// The index of the data node the sentinels name as primary.
    pub fn primary(&self) -> usize {
        let port = self.named_port();
        self.nodes
            .iter()
            .position(|n| n.port() == port)
            .unwrap_or_else(|| panic!("the sentinels name port {port}, not one of ours"))
    }

    /// After the primary `old` is killed or switched over: waits until the sentinels name
    /// the other node, and it answers as a primary.
    pub fn wait_for_failover(&self, old: usize) {
        self.wait_until("the sentinels promote the replica", |set| {
            let port = set.named_port();
            port != set.nodes[old].port()
                && set
                    .nodes
                    .iter()
                    .find(|n| n.port() == port)
                    .is_some_and(|n| info(n, "replication").contains("role:master"))
        });
    }

    /// Waits until the data node `index` is a replica in sync (after a restart, the
    /// sentinels reconfigure it).
    pub fn wait_until_replica(&self, index: usize) {
        self.wait_until("the node rejoins as a replica", |set| {
            let replication = info(&set.nodes[index], "replication");
            replication.contains("role:slave") && replication.contains("master_link_status:up")
        });
    }

    /// `SENTINEL FAILOVER`: the sentinels promote a replica although the primary is up,
    /// and demote the primary.
    pub fn switch_over(&self) {
        let _: () = redis::cmd("SENTINEL")
            .arg("FAILOVER")
            .arg(SERVICE)
            .query(&mut self.sentinels[0].conn())
            .expect("SENTINEL FAILOVER");
    }

    /// The primary's port, as the first sentinel that answers names it.
    fn named_port(&self) -> u16 {
        for sentinel in &self.sentinels {
            let addr: redis::RedisResult<(String, String)> = redis::cmd("SENTINEL")
                .arg("get-master-addr-by-name")
                .arg(SERVICE)
                .query(&mut sentinel.conn());
            if let Ok((_, port)) = addr {
                return port.parse().expect("a port");
            }
        }
        panic!("no sentinel names a primary")
    }

    fn wait_until(&self, what: &str, done: impl Fn(&RedisSentinels) -> bool) {
        let deadline = Instant::now() + SETTLE_TIMEOUT;
        while !done(self) {
            assert!(
                Instant::now() < deadline,
                "{what}: not within {SETTLE_TIMEOUT:?}"
            );
            sleep(Duration::from_millis(50));
        }
    }
}

/// `INFO section` of a node, or "" if it does not answer.
fn info(node: &RedisServer, section: &str) -> String {
    let client = redis::Client::open(node.url()).expect("a client");
    let Ok(mut conn) = client.get_connection_with_timeout(Duration::from_millis(250)) else {
        return String::new();
    };
    redis::cmd("INFO")
        .arg(section)
        .query(&mut conn)
        .unwrap_or_default()
}

/// `SENTINEL MASTER` of the service, as `key value` lines.
fn sentinel_master(sentinel: &RedisServer) -> String {
    let fields: redis::RedisResult<Vec<String>> = redis::cmd("SENTINEL")
        .arg("MASTER")
        .arg(SERVICE)
        .query(&mut sentinel.conn());
    fields
        .unwrap_or_default()
        .chunks(2)
        .map(|kv| kv.join(" "))
        .collect::<Vec<_>>()
        .join("\n")
}
