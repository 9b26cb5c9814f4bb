//! `rediss://` on a real `redis-server --tls-port` with certificates made at test time
//! (`cache_aside_tests::TlsRedis`): hits and misses over TLS with a private CA, a wrong CA
//! (calls still succeed, the failure is counted and logged), mutual TLS, and passwords that
//! never reach a log line, an error or `Debug` output.

use std::io::Write;
use std::sync::atomic::{AtomicU64, Ordering::SeqCst};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use cache_aside_runtime::{Cache, CacheBuilder, cached};
use cache_aside_tests::{RedisCluster, TlsRedis};

static LOADS: AtomicU64 = AtomicU64::new(0);

#[cached(ttl = 60, prefix = "tls", cache = cache, skip(cache))]
async fn fetch(cache: &Cache, id: u64) -> String {
    LOADS.fetch_add(1, SeqCst);
    format!("row-{id}")
}

fn builder(namespace: &str) -> CacheBuilder {
    Cache::builder()
        .namespace(namespace)
        .timeout(Duration::from_millis(500))
        .breaker(1_000, Duration::from_secs(1))
}

/// Runs `calls` on a current-thread runtime under a subscriber that writes every log line
/// of every level into the returned text.
fn logged(calls: impl Future<Output = ()>) -> String {
    #[derive(Clone, Default)]
    struct Lines(Arc<Mutex<Vec<u8>>>);
    impl Write for Lines {
        fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(bytes);
            Ok(bytes.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let lines = Lines::default();
    let writer = lines.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_max_level(tracing::Level::TRACE)
        .with_ansi(false)
        .with_writer(move || writer.clone())
        .finish();
    tracing::subscriber::with_default(subscriber, || {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap()
            .block_on(calls)
    });
    String::from_utf8(lines.0.lock().unwrap().clone()).unwrap()
}

#[tokio::test]
async fn rediss_with_a_private_ca_hits_and_misses() {
    let server = TlsRedis::start(false);
    let cache = builder("tls-ok")
        .tls_root_ca(server.ca_pem())
        .redis(&server.url())
        .unwrap();
    assert_eq!(fetch(&cache, 1).await, "row-1");
    assert_eq!(fetch(&cache, 1).await, "row-1");
    let stats = cache.stats();
    assert_eq!(
        (stats.hits, stats.misses, stats.errors),
        (1, 1, 0),
        "{stats:?}"
    );
    // The entry is on the server, read over TLS by another client.
    let key = fetch_cache_key(&cache, 1).unwrap();
    assert!(cache.ttl_of(&key).await.unwrap().is_some());
    assert!(server.cli().run(&["EXISTS", &key]).unwrap().contains('1'));
}

#[test]
fn a_wrong_ca_fails_open_counted_and_logged() {
    let server = TlsRedis::start(false);
    let cache = builder("tls-wrong")
        .tls_root_ca(server.wrong_ca_pem())
        .redis(&server.url())
        .unwrap();
    let log = logged(async {
        for _ in 0..3 {
            assert_eq!(
                fetch(&cache, 2).await,
                "row-2",
                "the body's value, uncached"
            );
        }
    });
    let stats = cache.stats();
    assert_eq!((stats.hits, stats.misses), (0, 3), "{stats:?}");
    assert!(stats.errors >= 3, "{stats:?}");
    assert!(
        log.contains("cache operation failed") && log.to_lowercase().contains("certificate"),
        "the TLS failure is logged with its cause: {log}"
    );
}

#[tokio::test]
async fn mutual_tls_is_required_by_the_server_and_given_by_the_client() {
    let server = TlsRedis::start(true);
    let with = builder("tls-mutual")
        .tls_root_ca(server.ca_pem())
        .tls_client_cert(server.client_cert_pem(), server.client_key_pem())
        .redis(&server.url())
        .unwrap();
    assert_eq!(fetch(&with, 3).await, "row-3");
    assert_eq!(fetch(&with, 3).await, "row-3");
    assert_eq!((with.stats().hits, with.stats().errors), (1, 0));
    // Without a client certificate the server refuses the connection: fail open.
    let without = builder("tls-mutual")
        .tls_root_ca(server.ca_pem())
        .redis(&server.url())
        .unwrap();
    assert_eq!(fetch(&without, 3).await, "row-3");
    assert_eq!(without.stats().hits, 0);
    assert!(without.stats().errors >= 1);
    // A certificate from another CA is refused too.
    let foreign = builder("tls-mutual")
        .tls_root_ca(server.ca_pem())
        .tls_client_cert(
            server.wrong_client_cert_pem(),
            server.wrong_client_key_pem(),
        )
        .redis(&server.url())
        .unwrap();
    assert_eq!(fetch(&foreign, 3).await, "row-3");
    assert_eq!(foreign.stats().hits, 0);
}

#[test]
fn passwords_never_reach_logs_errors_or_debug_output() {
    let secret = "s3cret-Pa55word";
    let wrong = "wr0ng-Pa55word";
    let server = TlsRedis::start_with_password(false, secret);
    let port = server.port();
    // Right password in the URL: hits.
    let good = builder("tls-pw")
        .tls_root_ca(server.ca_pem())
        .redis(&format!("rediss://:{secret}@127.0.0.1:{port}/"))
        .unwrap();
    // Right password on the builder, with an ACL user.
    let on_builder = builder("tls-pw")
        .tls_root_ca(server.ca_pem())
        .username("default")
        .password(secret)
        .redis(&server.url())
        .unwrap();
    // Wrong password: refused by the server, the calls fail open.
    let bad = builder("tls-pw")
        .tls_root_ca(server.ca_pem())
        .redis(&format!("rediss://:{wrong}@127.0.0.1:{port}/"))
        .unwrap();
    let debug = format!("{:?} {:?} {:?}", builder("x").password(secret), good, bad);
    let mut errors = String::new();
    let log = logged(async {
        assert_eq!(fetch(&good, 4).await, "row-4");
        assert_eq!(fetch(&good, 4).await, "row-4");
        assert_eq!(fetch(&on_builder, 4).await, "row-4");
        assert_eq!(fetch(&bad, 4).await, "row-4");
        let key = fetch_cache_key(&bad, 4).unwrap();
        let error = bad.invalidate(&key).await.unwrap_err();
        errors = format!("{error} {error:?}");
    });
    assert_eq!((good.stats().hits, on_builder.stats().hits), (1, 1));
    assert_eq!(bad.stats().hits, 0);
    assert!(bad.stats().errors >= 1);
    assert!(
        log.contains("cache operation failed"),
        "the refusal is logged: {log}"
    );
    // URLs the client cannot use: their errors never quote the password.
    let unparsable: String = [
        format!("redis://:{secret}@127.0.0.1:notaport/"),
        format!("redis://:{secret}@127.0.0.1:99999/"),
        format!("redis://u:{secret}@127.0.0.1:6379/notadb"),
        format!("redis://:{secret}@127.0.0.1:6379/?protocol=bogus"),
        format!("foo://:{secret}@127.0.0.1/"),
        format!("rediss://:{secret}@[127.0.0.1/"),
    ]
    .iter()
    .map(|url| {
        let error = Cache::builder().redis(url).unwrap_err();
        format!("{error} {error:?} {:?}", std::error::Error::source(&error))
    })
    .collect();
    for text in [&debug, &errors, &log, &unparsable] {
        assert!(
            !text.contains(secret) && !text.contains(wrong),
            "a password leaked: {text}"
        );
    }
}

#[test]
fn rediss_urls_need_the_tls_feature_and_tls_files_need_rediss() {
    let error = Cache::builder()
        .tls_root_ca(b"-----BEGIN CERTIFICATE-----".to_vec())
        .redis("redis://127.0.0.1:6379/")
        .unwrap_err();
    assert!(error.to_string().contains("rediss://"), "{error}");
}

/// A cluster that speaks TLS only (clients, cluster bus, replication): hits over
/// `rediss://` seeds on every primary, and invalidation across them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cluster_over_tls_hits_and_invalidates() {
    let cluster = RedisCluster::start_tls(3, 0);
    let (cert, key) = cluster.client_pems();
    let cache = builder("tls-cluster")
        .tls_root_ca(cluster.ca_pem())
        .tls_client_cert(cert, key)
        .redis_cluster(cluster.urls())
        .unwrap();
    assert!(
        cluster
            .urls()
            .iter()
            .all(|url| url.starts_with("rediss://"))
    );
    for id in 0..30 {
        assert_eq!(fetch(&cache, id).await, format!("row-{id}"));
    }
    for id in 0..30 {
        assert_eq!(fetch(&cache, id).await, format!("row-{id}"));
    }
    let stats = cache.stats();
    assert_eq!(
        (stats.hits, stats.misses, stats.errors),
        (30, 30, 0),
        "{stats:?}"
    );
    let owners: std::collections::BTreeSet<usize> = (0..30)
        .map(|id| cluster.primary_of(&fetch_cache_key(&cache, id).unwrap()))
        .collect();
    assert_eq!(owners.len(), 3, "keys on every primary");
    assert_eq!(fetch_invalidate_all(&cache).await.unwrap(), 30);
}
