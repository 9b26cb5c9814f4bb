//! A private Redis Cluster: `redis-server --cluster-enabled yes` processes on free
//! `127.0.0.1` ports, joined by `redis-cli --cluster create`, torn down on drop.

use std::process::{Command, Stdio};
use std::thread::sleep;
use std::time::{Duration, Instant};

use crate::tls::ClusterTls;
use crate::{RedisServer, fresh_dir};

/// How long the cluster gets to agree that every slot is served.
const FORM_TIMEOUT: Duration = Duration::from_secs(30);
/// How long a failover or a migration gets to settle.
const SETTLE_TIMEOUT: Duration = Duration::from_secs(30);
/// Milliseconds without an answer before a node is failed over.
const NODE_TIMEOUT_MS: &str = "1000";

/// A local Redis Cluster of `primaries` primaries with `replicas` replicas each.
pub struct RedisCluster {
    nodes: Vec<RedisServer>,
    /// Its certificates, for a cluster that speaks TLS only.
    tls: Option<ClusterTls>,
}

impl RedisCluster {
    /// Starts the nodes, creates the cluster, and waits until every node reports
    /// `cluster_state:ok` with all 16384 slots assigned.
    pub fn start(primaries: usize, replicas: usize) -> RedisCluster {
        Self::start_with(primaries, replicas, None)
    }

    /// As [`start`](Self::start), speaking TLS only (clients, cluster bus and replication),
    /// with certificates made at test time: see [`ca_pem`](Self::ca_pem) and
    /// [`client_pems`](Self::client_pems).
    pub fn start_tls(primaries: usize, replicas: usize) -> RedisCluster {
        Self::start_with(primaries, replicas, Some(ClusterTls::new()))
    }

    fn start_with(primaries: usize, replicas: usize, tls: Option<ClusterTls>) -> RedisCluster {
        let args = [
            "--cluster-enabled",
            "yes",
            "--cluster-config-file",
            "nodes.conf",
            "--cluster-node-timeout",
            NODE_TIMEOUT_MS,
            // A replica may be promoted however far behind it is: tests kill primaries.
            "--cluster-replica-validity-factor",
            "0",
        ];
        let nodes: Vec<_> = (0..primaries * (1 + replicas))
            .map(|_| match &tls {
                None => RedisServer::start_with(&args),
                Some(tls) => {
                    let dir = fresh_dir();
                    let (mut all, probe) = tls.node(&dir);
                    all.extend(args.iter().map(|a| a.to_string()));
                    let all: Vec<&str> = all.iter().map(String::as_str).collect();
                    RedisServer::start_in(dir, &all, Some(probe))
                }
            })
            .collect();
        let addrs: Vec<String> = nodes
            .iter()
            .map(|n| format!("127.0.0.1:{}", n.port()))
            .collect();
        let tls_args = match &tls {
            Some(_) => ClusterTls::cli_args(&nodes[0].dir),
            None => Vec::new(),
        };
        let out = Command::new("redis-cli")
            .args(&tls_args)
            .arg("--cluster")
            .arg("create")
            .args(&addrs)
            .args(["--cluster-replicas", &replicas.to_string(), "--cluster-yes"])
            .stdin(Stdio::null())
            .output()
            .unwrap_or_else(|e| panic!("running redis-cli (apt-get install redis-tools): {e}"));
        assert!(
            out.status.success(),
            "redis-cli --cluster create failed: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        let cluster = RedisCluster { nodes, tls };
        cluster.wait_until_ok(FORM_TIMEOUT);
        cluster
    }

    /// A TLS cluster's CA (PEM).
    pub fn ca_pem(&self) -> Vec<u8> {
        self.tls.as_ref().expect("a TLS cluster").ca_pem()
    }

    /// A TLS cluster's client certificate and key (PEM).
    pub fn client_pems(&self) -> (Vec<u8>, Vec<u8>) {
        self.tls.as_ref().expect("a TLS cluster").client_pems()
    }

    /// A cache on this cluster, in `namespace`, with a 500 ms timeout (calls on a cluster
    /// under faults wait for redirections and reconnects).
    pub fn cache(&self, namespace: &str) -> cache_aside_runtime::Cache {
        cache_aside_runtime::Cache::builder()
            .namespace(namespace)
            .timeout(std::time::Duration::from_millis(500))
            .redis_cluster(self.urls())
            .expect("a cluster cache")
    }

    /// The seed URLs, one per node.
    pub fn urls(&self) -> Vec<String> {
        self.nodes.iter().map(RedisServer::url).collect()
    }

    /// Every node, primaries and replicas.
    pub fn nodes(&self) -> &[RedisServer] {
        &self.nodes
    }

    /// One node, to kill, pause or restart.
    pub fn node_mut(&mut self, index: usize) -> &mut RedisServer {
        &mut self.nodes[index]
    }

    /// The indices of the nodes that are primaries now (by `ROLE`), skipping nodes that do
    /// not answer.
    pub fn primaries(&self) -> Vec<usize> {
        (0..self.nodes.len())
            .filter(|&i| self.role(i).as_deref() == Some("master"))
            .collect()
    }

    /// The index of the node serving `key`'s slot as primary.
    pub fn primary_of(&self, key: &str) -> usize {
        let slot = slot_of(key);
        let mut conn = self.any_conn();
        let slots: Vec<(u16, u16, Vec<redis::Value>)> = redis::cmd("CLUSTER")
            .arg("SLOTS")
            .query::<Vec<redis::Value>>(&mut conn)
            .expect("CLUSTER SLOTS")
            .into_iter()
            .map(|range| {
                let parts: Vec<redis::Value> = redis::from_redis_value(range).expect("a range");
                let start: u16 = redis::from_redis_value(parts[0].clone()).expect("start");
                let end: u16 = redis::from_redis_value(parts[1].clone()).expect("end");
                (start, end, parts[2..].to_vec())
            })
            .collect();
        let (_, _, owners) = slots
            .into_iter()
            .find(|(start, end, _)| (*start..=*end).contains(&slot))
            .expect("every slot is served");
        let owner: Vec<redis::Value> = redis::from_redis_value(owners[0].clone()).expect("a node");
        let port: u16 = redis::from_redis_value(owner[1].clone()).expect("a port");
        self.nodes
            .iter()
            .position(|n| n.port() == port)
            .expect("a node of this cluster")
    }

    /// Waits until every node that answers reports `cluster_state:ok` and one view of the
    /// slots covers all 16384 of them.
    pub fn wait_until_ok(&self, within: Duration) {
        let deadline = Instant::now() + within;
        loop {
            let states: Vec<Option<String>> = (0..self.nodes.len())
                .map(|i| self.info_field(i, "cluster_state"))
                .collect();
            let answering: Vec<_> = states.iter().flatten().collect();
            let all_ok = !answering.is_empty() && answering.iter().all(|s| s.as_str() == "ok");
            let covered = (0..self.nodes.len())
                .filter_map(|i| self.info_field(i, "cluster_slots_ok"))
                .all(|n| n == "16384");
            if all_ok && covered {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "cluster not ok within {within:?}: {states:?}"
            );
            sleep(Duration::from_millis(50));
        }
    }

    /// After killing the primary `node`: waits until another node serves the slots of
    /// `key` (which `node` served) and the cluster is ok again.
    pub fn wait_for_failover(&self, node: usize, key: &str) {
        let deadline = Instant::now() + SETTLE_TIMEOUT;
        while self.primary_of(key) == node {
            assert!(
                Instant::now() < deadline,
                "no failover of node {node} within {SETTLE_TIMEOUT:?}"
            );
            sleep(Duration::from_millis(50));
        }
        self.settle();
    }

    /// After a fault: waits until the cluster is ok again.
    pub fn settle(&self) {
        self.wait_until_ok(SETTLE_TIMEOUT);
    }

    /// Moves `slot` from its primary to the primary `to`, with `CLUSTER SETSLOT` steps and
    /// `MIGRATE` of its keys, as `redis-cli --cluster reshard` does.
    pub fn migrate_slot(&self, slot: u16, to: usize) {
        let from = self.owner_of_slot(slot);
        if from == to {
            return;
        }
        let (from_id, to_id) = (self.node_id(from), self.node_id(to));
        let mut src = self.nodes[from].conn();
        let mut dst = self.nodes[to].conn();
        let setslot = |conn: &mut redis::Connection, what: &str, id: &str| {
            redis::cmd("CLUSTER")
                .arg("SETSLOT")
                .arg(slot)
                .arg(what)
                .arg(id)
                .query::<()>(conn)
                .unwrap_or_else(|e| panic!("CLUSTER SETSLOT {slot} {what}: {e}"));
        };
        setslot(&mut dst, "IMPORTING", &from_id);
        setslot(&mut src, "MIGRATING", &to_id);
        loop {
            let keys: Vec<String> = redis::cmd("CLUSTER")
                .arg("GETKEYSINSLOT")
                .arg(slot)
                .arg(100)
                .query(&mut src)
                .expect("CLUSTER GETKEYSINSLOT");
            if keys.is_empty() {
                break;
            }
            redis::cmd("MIGRATE")
                .arg("127.0.0.1")
                .arg(self.nodes[to].port())
                .arg("")
                .arg(0)
                .arg(5000)
                .arg("KEYS")
                .arg(&keys)
                .query::<()>(&mut src)
                .expect("MIGRATE");
        }
        for node in 0..self.nodes.len() {
            if let Some(mut conn) = self.try_conn(node) {
                let _: redis::RedisResult<()> = redis::cmd("CLUSTER")
                    .arg("SETSLOT")
                    .arg(slot)
                    .arg("NODE")
                    .arg(&to_id)
                    .query(&mut conn);
            }
        }
    }

    fn owner_of_slot(&self, slot: u16) -> usize {
        // A key of that slot: the slot's own number is as good a tag as any, once found.
        let key = (0u32..)
            .map(|n| format!("{{k{n}}}"))
            .find(|k| slot_of(k) == slot)
            .expect("some key hashes to every slot");
        self.primary_of(&key)
    }

    fn node_id(&self, node: usize) -> String {
        redis::cmd("CLUSTER")
            .arg("MYID")
            .query(&mut self.nodes[node].conn())
            .expect("CLUSTER MYID")
    }

    fn role(&self, node: usize) -> Option<String> {
        let mut conn = self.try_conn(node)?;
        let role: Vec<redis::Value> = redis::cmd("ROLE").query(&mut conn).ok()?;
        redis::from_redis_value(role.first()?.clone()).ok()
    }

    fn info_field(&self, node: usize, field: &str) -> Option<String> {
        let mut conn = self.try_conn(node)?;
        let info: String = redis::cmd("CLUSTER").arg("INFO").query(&mut conn).ok()?;
        info.lines()
            .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
            .map(|v| v.trim().to_owned())
    }

    fn try_conn(&self, node: usize) -> Option<redis::Connection> {
        let url = self.nodes[node].url();
        let client = match &self.tls {
            None => redis::Client::open(url).ok()?,
            Some(tls) => redis::Client::build_with_tls(url, tls.certificates()).ok()?,
        };
        let conn = client
            .get_connection_with_timeout(Duration::from_millis(250))
            .ok()?;
        conn.set_read_timeout(Some(Duration::from_millis(500)))
            .ok()?;
        Some(conn)
    }

    fn any_conn(&self) -> redis::Connection {
        (0..self.nodes.len())
            .find_map(|i| self.try_conn(i))
            .expect("a node of the cluster answers")
    }
}

/// The cluster slot of `key`: CRC16 (XMODEM) of its hash tag, or of the whole key, mod 16384.
pub fn slot_of(key: &str) -> u16 {
    let bytes = key.as_bytes();
    let tagged = bytes.iter().position(|&b| b == b'{').and_then(|open| {
        let close = bytes[open + 1..].iter().position(|&b| b == b'}')?;
        (close > 0).then(|| &bytes[open + 1..open + 1 + close])
    });
    crc16(tagged.unwrap_or(bytes)) % 16384
}

fn crc16(data: &[u8]) -> u16 {
    let mut crc: u16 = 0;
    for &byte in data {
        crc ^= u16::from(byte) << 8;
        for _ in 0..8 {
            crc = if crc & 0x8000 != 0 {
                (crc << 1) ^ 0x1021
            } else {
                crc << 1
            };
        }
    }
    crc
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The examples of the Redis Cluster specification.
    #[test]
    fn slots_follow_the_cluster_spec() {
        assert_eq!(crc16(b"123456789"), 0x31C3);
        assert_eq!(
            slot_of("{user1000}.following"),
            slot_of("{user1000}.followers")
        );
        assert_eq!(slot_of("foo{}{bar}"), crc16(b"foo{}{bar}") % 16384);
        assert_eq!(slot_of("foo{{bar}}zap"), crc16(b"{bar") % 16384);
    }
}
