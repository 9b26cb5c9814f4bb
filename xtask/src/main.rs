//! `cargo xtask test`: every test of the workspace, on a fresh machine too. It installs
//! `redis-server` and `redis-cli` when they are missing (through apt-get, where there is
//! one and we may use it; elsewhere it says what to install and stops), then runs
//! `cargo test --workspace`, passing on any further arguments.
//!
//! The integration tests start their own private `redis-server` processes on free loopback
//! ports; they need only the binaries.

use std::process::{Command, ExitCode};

const TOOLS: [&str; 2] = ["redis-server", "redis-cli"];

fn main() -> ExitCode {
    let mut args = std::env::args().skip(1);
    match args.next().as_deref() {
        Some("test") => {
            if let Err(message) = ensure_redis() {
                eprintln!("xtask: {message}");
                return ExitCode::FAILURE;
            }
            let rest: Vec<String> = args.collect();
            run(cargo().args(["test", "--workspace"]).args(&rest))
        }
        other => {
            if let Some(other) = other {
                eprintln!("xtask: unknown task `{other}`");
            }
            eprintln!("usage: cargo xtask test [cargo test arguments]");
            ExitCode::FAILURE
        }
    }
}

fn cargo() -> Command {
    Command::new(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()))
}

fn run(command: &mut Command) -> ExitCode {
    match command.status() {
        Ok(status) if status.success() => ExitCode::SUCCESS,
        Ok(status) => ExitCode::from(u8::try_from(status.code().unwrap_or(1)).unwrap_or(1)),
        Err(error) => {
            eprintln!("xtask: could not run {command:?}: {error}");
            ExitCode::FAILURE
        }
    }
}

/// Is `tool` on `PATH` (and runnable)?
fn found(tool: &str) -> bool {
    Command::new(tool)
        .arg("--version")
        .output()
        .is_ok_and(|out| out.status.success())
}

fn ensure_redis() -> Result<(), String> {
    let missing: Vec<&str> = TOOLS.into_iter().filter(|t| !found(t)).collect();
    if missing.is_empty() {
        return Ok(());
    }
    let instruction = "install Redis 7 or later so that `redis-server` and `redis-cli` are on \
                       PATH (Debian/Ubuntu: `apt-get install redis-server redis-tools`; macOS: \
                       `brew install redis`), then run `cargo xtask test` again";
    if !found("apt-get") || !is_root() {
        return Err(format!(
            "{} not found: {instruction}",
            missing.join(" and ")
        ));
    }
    eprintln!(
        "xtask: {} not found; installing with apt-get",
        missing.join(" and ")
    );
    let apt = |args: &[&str]| {
        Command::new("apt-get")
            .args(args)
            .env("DEBIAN_FRONTEND", "noninteractive")
            .status()
            .is_ok_and(|s| s.success())
    };
    let installed =
        apt(&["update", "-qq"]) && apt(&["install", "-y", "-qq", "redis-server", "redis-tools"]);
    match installed && TOOLS.into_iter().all(found) {
        true => Ok(()),
        false => Err(format!("apt-get could not install Redis: {instruction}")),
    }
}

/// apt-get needs root; `id -u` answers without a dependency.
fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|out| String::from_utf8_lossy(&out.stdout).trim() == "0")
}
