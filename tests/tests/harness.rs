//! Tests of the `RedisServer` harness itself.

use std::time::Duration;

use cache_aside_tests::RedisServer;

fn ping(conn: &mut redis::Connection) -> redis::RedisResult<String> {
    redis::cmd("PING").query(conn)
}

fn connect(url: &str) -> redis::RedisResult<redis::Connection> {
    redis::Client::open(url)?.get_connection_with_timeout(Duration::from_secs(1))
}

#[test]
fn start_serves_set_and_get() {
    let server = RedisServer::start();
    assert_eq!(
        server.url(),
        format!("redis://127.0.0.1:{}/", server.port())
    );
    let mut conn = server.conn();
    let _: () = redis::cmd("SET")
        .arg("k")
        .arg("v")
        .query(&mut conn)
        .expect("SET");
    let got: Option<String> = redis::cmd("GET").arg("k").query(&mut conn).expect("GET");
    assert_eq!(got.as_deref(), Some("v"));
}

#[test]
fn start_with_applies_extra_args() {
    let server =
        RedisServer::start_with(&["--maxmemory", "1mb", "--maxmemory-policy", "noeviction"]);
    let mut conn = server.conn();
    let policy: Vec<String> = redis::cmd("CONFIG")
        .arg("GET")
        .arg("maxmemory-policy")
        .query(&mut conn)
        .expect("CONFIG GET maxmemory-policy");
    assert_eq!(policy, ["maxmemory-policy", "noeviction"]);
    let save: Vec<String> = redis::cmd("CONFIG")
        .arg("GET")
        .arg("save")
        .query(&mut conn)
        .expect("CONFIG GET save");
    assert_eq!(save, ["save", ""]);
}

#[test]
fn servers_are_private() {
    let a = RedisServer::start();
    let b = RedisServer::start();
    assert_ne!(a.port(), b.port());
    let _: () = redis::cmd("SET")
        .arg("only-in-a")
        .arg("1")
        .query(&mut a.conn())
        .expect("SET on a");
    let in_b: Option<String> = redis::cmd("GET")
        .arg("only-in-a")
        .query(&mut b.conn())
        .expect("GET on b");
    assert_eq!(in_b, None);
    let in_a: Option<String> = redis::cmd("GET")
        .arg("only-in-a")
        .query(&mut a.conn())
        .expect("GET on a");
    assert_eq!(in_a.as_deref(), Some("1"));
}

#[test]
fn kill_stops_the_server_and_is_idempotent() {
    let mut server = RedisServer::start();
    assert_eq!(ping(&mut server.conn()).expect("PING before kill"), "PONG");
    server.kill();
    assert!(
        connect(&server.url()).is_err(),
        "connecting after kill must fail"
    );
    server.kill();
}

#[test]
fn restart_comes_back_on_the_same_port() {
    let mut server = RedisServer::start();
    let port = server.port();
    server.kill();
    assert!(
        connect(&server.url()).is_err(),
        "connecting after kill must fail"
    );
    server.restart();
    assert_eq!(server.port(), port);
    assert_eq!(
        ping(&mut server.conn()).expect("PING after restart"),
        "PONG"
    );
    // Restarting a running server also works.
    server.restart();
    assert_eq!(server.port(), port);
    assert_eq!(
        ping(&mut server.conn()).expect("PING after second restart"),
        "PONG"
    );
}

#[test]
fn pause_blocks_replies_until_resume() {
    let server = RedisServer::start();
    let mut conn = server.conn();
    conn.set_read_timeout(Some(Duration::from_millis(200)))
        .expect("set_read_timeout");
    assert_eq!(ping(&mut conn).expect("PING before pause"), "PONG");
    server.pause();
    let err = ping(&mut conn).expect_err("PING on a paused server must time out");
    assert!(err.is_timeout(), "expected a timeout, got {err}");
    server.resume();
    let mut fresh = server.conn();
    fresh
        .set_read_timeout(Some(Duration::from_secs(2)))
        .expect("set_read_timeout");
    assert_eq!(ping(&mut fresh).expect("PING after resume"), "PONG");
}

#[test]
fn drop_kills_the_server() {
    let server = RedisServer::start();
    let url = server.url();
    drop(server);
    assert!(connect(&url).is_err(), "connecting after drop must fail");
}
