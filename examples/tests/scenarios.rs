//! The scenarios example runs its six scenarios and checks each; here it runs on the
//! embedded cache and on a private `redis-server`, and must pass all six on both.

use std::process::Command;

use cache_aside_tests::RedisServer;

fn run(redis_url: Option<&str>) -> String {
    let mut command = Command::new(env!("CARGO_BIN_EXE_scenarios"));
    command.env_remove("REDIS_URL");
    if let Some(url) = redis_url {
        command.env("REDIS_URL", url);
    }
    let out = command.output().expect("the scenarios binary");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

fn assert_all_ok(stdout: &str, backend: &str) {
    assert!(
        stdout.starts_with(&format!("cache: {backend}\n")),
        "{stdout}"
    );
    for n in 1..=6 {
        let line = format!("   scenario {n} (");
        let verdict = stdout
            .lines()
            .find(|l| l.starts_with(&line))
            .unwrap_or_else(|| panic!("no scenario {n} in\n{stdout}"));
        assert!(verdict.contains("): ok in "), "{verdict}");
    }
    assert!(!stdout.contains("FAILED"), "{stdout}");
}

#[test]
fn every_scenario_holds_on_the_embedded_cache() {
    assert_all_ok(&run(None), "memory");
}

#[test]
fn every_scenario_holds_on_redis() {
    let redis = RedisServer::start();
    assert_all_ok(&run(Some(&redis.url())), "redis");
}
