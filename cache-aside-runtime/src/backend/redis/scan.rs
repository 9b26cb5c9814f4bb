//! Deleting by pattern: `SCAN MATCH` + `UNLINK` in batches, never `KEYS` (which blocks the
//! server). On a single node, one scan. On a cluster, a scan of every primary; and since a
//! failover or a slot migration that happens during the scan can move keys from a node not
//! scanned yet to one already scanned, the scan is repeated, a few times at most, until the
//! cluster's topology (primaries, slots, migrations) is the same before and after it.

use redis::Value;
use redis::cluster_routing::{RoutingInfo, SingleNodeRoutingInfo};

use super::RedisBackend;
use super::connection::{Command, Link};
use crate::error::Error;

/// Keys asked for per `SCAN` step and deleted per `UNLINK`.
const SCAN_BATCH: usize = 500;
/// Whole-cluster scans before giving up on a topology that keeps changing.
const MAX_SCANS: usize = 5;

/// A primary: its address as the cluster announces it.
type Node = (String, u16);

/// The parts of `CLUSTER NODES` that say where keys live: per node its id, address, flags,
/// primary, config epoch and slots (with migration markers); not its ping times.
type Topology = Vec<String>;

impl RedisBackend {
    /// Deletes the keys matching `pattern` that `keep` accepts; how many. Each step is
    /// bounded by `timeout` on its own.
    pub(crate) async fn delete_matching(
        &self,
        pattern: &str,
        keep: &(dyn Fn(&[u8]) -> bool + Sync),
        timeout: std::time::Duration,
    ) -> Result<u64, Error> {
        if !self.conn.is_cluster() {
            return self.scan_node(None, pattern, keep, timeout).await;
        }
        let mut removed = 0;
        let mut before = self.topology(timeout).await?;
        for _ in 0..MAX_SCANS {
            for node in primaries(&before) {
                removed += self.scan_node(Some(&node), pattern, keep, timeout).await?;
            }
            let after = self.topology(timeout).await?;
            if after == before && !migrating(&after) {
                return Ok(removed);
            }
            before = after;
        }
        tracing::warn!(
            pattern,
            "cache-aside: the cluster's slots kept moving during invalidation; some keys may remain"
        );
        Ok(removed)
    }

    /// One node's scan: the only node, or the cluster primary `node`.
    async fn scan_node(
        &self,
        node: Option<&Node>,
        pattern: &str,
        keep: &(dyn Fn(&[u8]) -> bool + Sync),
        timeout: std::time::Duration,
    ) -> Result<u64, Error> {
        let mut cursor = 0u64;
        let mut removed = 0u64;
        loop {
            let mut scan = redis::cmd("SCAN");
            scan.arg(cursor)
                .arg("MATCH")
                .arg(pattern)
                .arg("COUNT")
                .arg(SCAN_BATCH);
            let (next, mut keys): (u64, Vec<Vec<u8>>) = match node {
                None => self.run(timeout, true, &scan).await?,
                Some(node) => self.run(timeout, true, &On { cmd: &scan, node }).await?,
            };
            keys.retain(|key| keep(key));
            if !keys.is_empty() {
                // On a cluster, redis-rs splits a multi-key UNLINK by slot.
                let unlink = redis::cmd("UNLINK").arg(&keys).to_owned();
                removed += self.run::<u64>(timeout, true, &unlink).await?;
            }
            if next == 0 {
                return Ok(removed);
            }
            cursor = next;
        }
    }

    async fn topology(&self, timeout: std::time::Duration) -> Result<Topology, Error> {
        let nodes: String = self
            .run(
                timeout,
                true,
                &Anywhere(&redis::cmd("CLUSTER").arg("NODES").to_owned()),
            )
            .await?;
        Ok(normalise(&nodes))
    }
}

/// `CLUSTER NODES` without what changes by itself: per line id, address, flags, primary,
/// config epoch and slots, not the ping and pong times nor the link state, nor the `myself`
/// flag, which marks whichever node answered (each reading asks any node).
fn normalise(nodes: &str) -> Topology {
    let mut topology: Topology = nodes
        .lines()
        .filter(|line| !line.trim().is_empty())
        .map(|line| {
            let fields = line.split_whitespace().enumerate();
            let kept = fields.filter(|(i, _)| !matches!(i, 4 | 5 | 7));
            let kept = kept.map(|(i, f)| match i {
                2 => f
                    .split(',')
                    .filter(|flag| *flag != "myself")
                    .collect::<Vec<_>>()
                    .join(","),
                _ => f.to_owned(),
            });
            kept.collect::<Vec<_>>().join(" ")
        })
        .collect();
    topology.sort();
    topology
}

/// The primaries of a topology that are not failed, by address.
fn primaries(topology: &Topology) -> Vec<Node> {
    topology
        .iter()
        .filter_map(|line| {
            let mut fields = line.split(' ');
            let (_, addr, flags) = (fields.next()?, fields.next()?, fields.next()?);
            let flags: Vec<&str> = flags.split(',').collect();
            if !flags.contains(&"master") || flags.iter().any(|f| *f == "fail" || *f == "noaddr") {
                return None;
            }
            // `ip:port@cport[,hostname]`
            let addr = addr.split(['@', ',']).next()?;
            let (host, port) = addr.rsplit_once(':')?;
            Some((host.to_owned(), port.parse().ok()?))
        })
        .collect()
}

/// Is a slot being migrated (`[slot->-id]` or `[slot-<-id]` in a node's slots)?
fn migrating(topology: &Topology) -> bool {
    topology
        .iter()
        .any(|line| line.contains("->-") || line.contains("-<-"))
}

/// A command for one cluster node, by address.
struct On<'a> {
    cmd: &'a redis::Cmd,
    node: &'a Node,
}

/// A command any cluster node can answer.
struct Anywhere<'a>(&'a redis::Cmd);

impl Command for On<'_> {
    async fn send<T: redis::FromRedisValue + Send + 'static>(
        &self,
        conn: &mut Link,
    ) -> redis::RedisResult<T> {
        let (host, port) = self.node;
        let to = SingleNodeRoutingInfo::ByAddress {
            host: host.clone(),
            port: *port,
        };
        routed(conn, self.cmd, RoutingInfo::SingleNode(to)).await
    }
}

impl Command for Anywhere<'_> {
    async fn send<T: redis::FromRedisValue + Send + 'static>(
        &self,
        conn: &mut Link,
    ) -> redis::RedisResult<T> {
        routed(
            conn,
            self.0,
            RoutingInfo::SingleNode(SingleNodeRoutingInfo::Random),
        )
        .await
    }
}

async fn routed<T: redis::FromRedisValue>(
    conn: &mut Link,
    cmd: &redis::Cmd,
    routing: RoutingInfo,
) -> redis::RedisResult<T> {
    let reply: Value = match conn {
        Link::Cluster(cluster) => cluster.route_command(cmd.clone(), routing).await?,
        Link::Single(manager) => manager.send_packed_command(cmd).await?,
    };
    Ok(redis::from_redis_value(reply)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_primaries_and_migrations_from_cluster_nodes() {
        let nodes = "\
a1 127.0.0.1:7001@17001 myself,master - 0 0 1 connected 0-5460
b2 127.0.0.1:7002@17002 master - 0 1700000000000 2 connected 5461-10922 [5461->-c3]
c3 127.0.0.1:7003@17003 master,fail - 0 0 3 disconnected
d4 127.0.0.1:7004@17004,host4 slave a1 0 0 1 connected
e5 127.0.0.1:7005@17005 master - 0 0 5 connected 10923-16383";
        let topology = normalise(nodes);
        assert_eq!(
            primaries(&topology),
            vec![
                ("127.0.0.1".to_owned(), 7001),
                ("127.0.0.1".to_owned(), 7002),
                ("127.0.0.1".to_owned(), 7005)
            ]
        );
        assert!(migrating(&topology));
        assert!(!migrating(&topology[..1].to_vec()));
    }

    /// Two nodes describe one topology alike but for `myself` and their ping times: the
    /// same reading (it differed, so an idle cluster looked as if it moved).
    #[test]
    fn any_node_gives_the_same_reading() {
        let from_a = "\
a1 127.0.0.1:7001@17001 myself,master - 0 0 1 connected 0-8191
b2 127.0.0.1:7002@17002 master - 0 1700000000000 2 connected 8192-16383";
        let from_b = "\
a1 127.0.0.1:7001@17001 master - 0 1700000000500 1 connected 0-8191
b2 127.0.0.1:7002@17002 myself,master - 0 0 2 connected 8192-16383";
        assert_eq!(normalise(from_a), normalise(from_b));
        assert_eq!(primaries(&normalise(from_a)).len(), 2);
    }
}
