//! The service example, driven over HTTP as a client would: the binary is started on a free
//! loopback port, on the embedded cache and on a private `redis-server`, and every figure it
//! reports is checked against what the requests did.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use cache_aside_tests::RedisServer;
use serde_json::{Value, json};

/// The running binary and its address.
struct Service {
    child: Child,
    base: String,
    lines: mpsc::Receiver<String>,
}

impl Service {
    /// Starts the binary (`REDIS_URL` given or removed) and waits, at most 60 s, for its
    /// "listening on" line.
    fn start(redis_url: Option<&str>) -> Service {
        let mut command = Command::new(env!("CARGO_BIN_EXE_service"));
        command
            .env("ADDR", "127.0.0.1:0")
            .env_remove("REDIS_URL")
            .stdout(Stdio::piped());
        if let Some(url) = redis_url {
            command.env("REDIS_URL", url);
        }
        let mut child = command.spawn().expect("the service binary");
        let stdout = child.stdout.take().unwrap();
        let (send, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if send.send(line).is_err() {
                    break;
                }
            }
        });
        let line = lines
            .recv_timeout(Duration::from_secs(60))
            .expect("the service said where it listens");
        let base = line
            .strip_prefix("listening on ")
            .and_then(|rest| rest.split_whitespace().next())
            .unwrap_or_else(|| panic!("unexpected first line {line:?}"))
            .to_owned();
        Service { child, base, lines }
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// SIGINT, as Ctrl-C sends: the service must finish and exit 0 within 10 s.
    fn interrupt(mut self) {
        let pid = self.child.id().to_string();
        assert!(
            Command::new("kill")
                .args(["-INT", &pid])
                .status()
                .unwrap()
                .success()
        );
        for _ in 0..100 {
            if let Some(status) = self.child.try_wait().unwrap() {
                assert!(status.success(), "exit status {status}");
                let last = self.lines.recv_timeout(Duration::from_secs(1));
                assert_eq!(last.as_deref(), Ok("shut down"));
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        panic!("the service did not shut down within 10 s of SIGINT");
    }
}

impl Drop for Service {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

async fn stats(client: &reqwest::Client, service: &Service) -> Value {
    let response = client
        .get(service.url("/cache/stats"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    response.json().await.unwrap()
}

fn figure(stats: &Value, name: &str) -> u64 {
    stats[name]
        .as_u64()
        .unwrap_or_else(|| panic!("{name} in {stats}"))
}

async fn drive(service: &Service, backend: &str) {
    let client = reqwest::Client::new();
    let get = |id: u64| client.get(service.url(&format!("/users/{id}"))).send();
    let queries = |s: &Value| figure(s, "db_queries");
    let before = stats(&client, service).await;
    assert_eq!(before["backend"], backend);

    // A miss, then a hit: the database is asked once.
    let first: Value = get(7).await.unwrap().json().await.unwrap();
    assert_eq!(
        first,
        json!({"id": 7, "name": "user 7", "email": "user7@example.com"})
    );
    let again: Value = get(7).await.unwrap().json().await.unwrap();
    assert_eq!(again, first);
    let after = stats(&client, service).await;
    assert_eq!(queries(&after), queries(&before) + 1);
    assert_eq!(figure(&after, "hits"), figure(&before, "hits") + 1);

    // A missing user: a 404, cached (the database is asked once for two requests).
    assert_eq!(get(5000).await.unwrap().status(), 404);
    assert_eq!(get(5000).await.unwrap().status(), 404);
    let absent = stats(&client, service).await;
    assert_eq!(queries(&absent), queries(&after) + 1);

    // An update: the response and the next read carry the new name, and that read is a hit
    // on the put value (the only query is the update).
    let put = client
        .put(service.url("/users/7"))
        .json(&json!({"name": "Ada"}))
        .send()
        .await
        .unwrap();
    assert_eq!(put.status(), 200);
    let read: Value = get(7).await.unwrap().json().await.unwrap();
    assert_eq!(read["name"], "Ada");
    let updated = stats(&client, service).await;
    assert_eq!(queries(&updated), queries(&absent) + 1, "the update only");
    assert_eq!(figure(&updated, "puts"), figure(&absent, "puts") + 1);

    // A delete: evicted, and the next read is a 404 from the database.
    let deleted = client.delete(service.url("/users/7")).send().await.unwrap();
    assert_eq!(deleted.status(), 204);
    assert_eq!(get(7).await.unwrap().status(), 404);
    let gone = stats(&client, service).await;
    assert_eq!(
        queries(&gone),
        queries(&updated) + 2,
        "the delete and the reload"
    );
    assert_eq!(
        figure(&gone, "evictions"),
        figure(&updated, "evictions") + 1
    );

    // Load: 10,000 reads of a hot set of 20 users from 64 concurrent clients.
    let mut tasks = tokio::task::JoinSet::new();
    for worker in 0..64u64 {
        let (client, base) = (client.clone(), service.base.clone());
        tasks.spawn(async move {
            let mut errors = 0;
            for i in 0..157u64 {
                if worker * 157 + i >= 10_000 {
                    break;
                }
                let id = 20 + (worker + i) % 20;
                match client.get(format!("{base}/users/{id}")).send().await {
                    Ok(response) if response.status() == 200 => {}
                    _ => errors += 1,
                }
            }
            errors
        });
    }
    let errors: u64 = tasks.join_all().await.into_iter().sum();
    assert_eq!(errors, 0);
    let loaded = stats(&client, service).await;
    let hits = figure(&loaded, "hits") - figure(&gone, "hits");
    let misses = figure(&loaded, "misses") - figure(&gone, "misses");
    assert_eq!(hits + misses, 10_000);
    let ratio = hits as f64 / 10_000.0;
    assert!(ratio > 0.95, "hit ratio {ratio} ({misses} misses)");
    assert!(queries(&loaded) - queries(&gone) <= misses);
    let rate = loaded["hit_rate"].as_f64().unwrap();
    let expected = figure(&loaded, "hits") as f64
        / (figure(&loaded, "hits") + figure(&loaded, "misses")) as f64;
    assert!((rate - expected).abs() < 1e-9, "{rate} vs {expected}");
    // One function reads, and the writes count under it: its figures are the cache's.
    let functions = loaded["functions"].as_array().unwrap();
    assert_eq!(functions.len(), 1, "{loaded}");
    let get_user = &functions[0];
    assert_eq!(get_user["function"], "get_user");
    assert_eq!(get_user["prefix"], "user");
    for name in ["hits", "misses", "puts", "evictions"] {
        assert_eq!(get_user[name], loaded[name], "{name} in {loaded}");
    }
    // And the Prometheus text says the same.
    let text = client.get(service.url("/metrics")).send().await.unwrap();
    assert_eq!(text.status(), 200);
    let text = text.text().await.unwrap();
    let after = stats(&client, service).await;
    for name in ["hits", "misses", "loads", "puts", "evictions", "errors"] {
        let metric = format!("cache_aside_{name}_total");
        assert_eq!(
            sample(&text, &metric, "get_user"),
            Some(figure(&after, name) as f64),
            "{metric} in\n{text}"
        );
    }
    let loads = sample(&text, "cache_aside_load_seconds_count", "get_user");
    assert_eq!(loads, Some(figure(&after, "loads") as f64), "{text}");
    // Every call's time, by outcome: as many as the hits and misses counted.
    for (outcome, counted) in [("hit", "hits"), ("miss", "misses")] {
        let label = format!("outcome=\"{outcome}\"");
        let calls = text
            .lines()
            .filter(|l| l.starts_with("cache_aside_call_seconds_count{"))
            .find(|l| l.contains("function=\"get_user\"") && l.contains(&label))
            .and_then(|l| l.rsplit(' ').next()?.parse::<f64>().ok());
        assert_eq!(
            calls,
            Some(figure(&after, counted) as f64),
            "{outcome} in\n{text}"
        );
    }
    // Body time, and what the hits saved: the hits at the recent load time.
    let load_us = sample(&text, "cache_aside_load_time_us_total", "get_user").unwrap();
    assert!(load_us > 0.0, "{text}");
    let saved = sample(&text, "cache_aside_time_saved_us_total", "get_user").unwrap();
    assert_eq!(saved, figure(&after, "time_saved_us") as f64);
    assert!(saved > 0.0, "hits saved body time: {after}");
    assert!(figure(&after, "mean_load_us") > 0, "{after}");
}

/// The value of `metric`'s sample labelled `function="{function}"` in Prometheus text.
fn sample(text: &str, metric: &str, function: &str) -> Option<f64> {
    let label = format!("function=\"{function}\"");
    text.lines()
        .filter(|line| !line.starts_with('#'))
        .filter(|line| line.split(['{', ' ']).next() == Some(metric))
        .find(|line| line.contains(&label))
        .and_then(|line| line.rsplit(' ').next())
        .and_then(|value| value.parse().ok())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_the_embedded_cache() {
    let service = Service::start(None);
    drive(&service, "memory").await;
    service.interrupt();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_redis() {
    let redis = RedisServer::start();
    let service = Service::start(Some(&redis.url()));
    drive(&service, "redis").await;
    service.interrupt();
}
