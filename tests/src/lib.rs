//! Test support for the cache-aside workspace: private `redis-server` processes.
//!
//! Every [`RedisServer::start`] spawns its own `redis-server` on a free
//! `127.0.0.1` port with persistence disabled and a fresh scratch directory.
//! The process is killed and the directory removed when the value is dropped.

mod cluster;
pub mod race;
mod sentinel;
mod tls;

pub use cluster::{RedisCluster, slot_of};
pub use sentinel::{RedisSentinels, SERVICE as SENTINEL_SERVICE};
pub use tls::{TlsCli, TlsRedis};

use std::fs::{self, OpenOptions};
use std::io::ErrorKind;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::AtomicU64;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::thread::sleep;
use std::time::{Duration, Instant};

/// How long a freshly spawned server gets to answer PING.
const READY_TIMEOUT: Duration = Duration::from_secs(10);
/// How long `restart` keeps retrying when the old port is still taken.
const REBIND_TIMEOUT: Duration = Duration::from_secs(5);
/// How many fresh ports `start` tries when the chosen one gets taken.
const START_ATTEMPTS: usize = 5;

static NEXT_DIR: AtomicUsize = AtomicUsize::new(0);

/// Is `entry` (a key's bytes as `GET` returns them) marked PENDING: a load holds its
/// lease? Byte 2 of the envelope is its flags, bit 1 PENDING (see `inspect`).
pub fn is_pending(entry: &[u8]) -> bool {
    entry.len() >= 20 && entry[0] == 0xCA && entry[2] & 0b10 != 0
}

/// The placeholder a lease with `token` leaves in an empty key: the 20-byte header, marked
/// PENDING and EMPTY, with no value.
pub fn placeholder(token: u64) -> Vec<u8> {
    let mut header = vec![0xCA, 3, 0b110, 0, 0, 0, 0, 0, 0, 0, 0, 0];
    header.extend_from_slice(&token.to_be_bytes());
    header
}

/// The tests' "database": counts its loads, and takes `delay` per load.
pub struct Db {
    /// Loads so far; a cached function's body adds one.
    pub loads: AtomicU64,
    /// How long a load takes.
    pub delay: Duration,
}

impl Db {
    /// A database whose loads take `delay`.
    pub fn new(delay: Duration) -> Arc<Db> {
        Arc::new(Db {
            loads: AtomicU64::new(0),
            delay,
        })
    }

    /// Loads so far.
    pub fn loads(&self) -> u64 {
        self.loads.load(Ordering::SeqCst)
    }

    /// One load: counted, then `delay`.
    pub async fn load(&self) {
        self.loads.fetch_add(1, Ordering::SeqCst);
        if !self.delay.is_zero() {
            tokio::time::sleep(self.delay).await;
        }
    }
}

/// A private `redis-server` child process listening on `127.0.0.1`.
pub struct RedisServer {
    child: Option<Child>,
    port: u16,
    dir: PathBuf,
    extra_args: Vec<String>,
    /// TLS only: how to check the server answers (`redis-cli --tls` with its CA); the
    /// plain port is then off and `port` is the TLS port.
    tls: Option<tls::TlsCli>,
    /// A sentinel: its configuration file, which goes first on the command line.
    sentinel: Option<PathBuf>,
}

/// Why a launch attempt did not produce a ready server.
enum LaunchError {
    /// The process exited before answering; `port_taken` if its log says so.
    Exited { status: String, port_taken: bool },
    /// The process stayed up but never answered PING in time.
    NotReady,
}

impl RedisServer {
    /// Starts a private redis-server on a free 127.0.0.1 port with
    /// `--save '' --appendonly no`, waits until it answers PING.
    pub fn start() -> RedisServer {
        Self::start_with(&[])
    }

    /// Same as [`RedisServer::start`], with extra config arguments appended to
    /// the command line, e.g. `&["--maxmemory", "1mb", "--maxmemory-policy", "noeviction"]`.
    pub fn start_with(extra_args: &[&str]) -> RedisServer {
        Self::start_in(fresh_dir(), extra_args, None)
    }

    /// A server in `dir` (prepared by the caller: certificates, say); with `tls`, one that
    /// listens with TLS only and whose readiness `tls` checks, on the port it is given.
    fn start_in(dir: PathBuf, extra_args: &[&str], tls: Option<tls::TlsCli>) -> RedisServer {
        let server = RedisServer {
            child: None,
            port: 0,
            dir,
            extra_args: extra_args.iter().map(|arg| arg.to_string()).collect(),
            tls,
            sentinel: None,
        };
        server.started()
    }

    /// A Redis Sentinel (`redis-server <config> --sentinel`) on a free 127.0.0.1 port, with
    /// `config` as its configuration file (which it rewrites as it learns).
    pub fn start_sentinel(config: &str) -> RedisServer {
        let dir = fresh_dir();
        let file = dir.join("sentinel.conf");
        fs::write(&file, config).expect("writing the sentinel's configuration");
        let server = RedisServer {
            child: None,
            port: 0,
            dir,
            extra_args: Vec::new(),
            tls: None,
            sentinel: Some(file),
        };
        server.started()
    }

    /// Launches on a free port, another if the one picked was taken meanwhile.
    fn started(mut self) -> RedisServer {
        for attempt in 1..=START_ATTEMPTS {
            self.port = free_port();
            match self.launch() {
                Ok(()) => return self,
                Err(LaunchError::Exited {
                    port_taken: true, ..
                }) if attempt < START_ATTEMPTS => continue,
                Err(err) => self.fail(err),
            }
        }
        unreachable!("the last start attempt either returns or panics")
    }

    /// The TCP port the server listens on (stable across [`RedisServer::restart`]).
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The connection URL, `redis://127.0.0.1:{port}/` (`rediss://` for a TLS-only server).
    pub fn url(&self) -> String {
        let scheme = if self.tls.is_some() {
            "rediss"
        } else {
            "redis"
        };
        format!("{scheme}://127.0.0.1:{}/", self.port)
    }

    /// A blocking connection for assertions from test code.
    pub fn conn(&self) -> redis::Connection {
        redis::Client::open(self.url())
            .expect("building a redis client from the test server URL")
            .get_connection()
            .unwrap_or_else(|err| {
                panic!("connecting to test redis-server at {}: {err}", self.url())
            })
    }

    /// Kills the server with SIGKILL and reaps it. Idempotent.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            // A stopped process still dies on SIGKILL; SIGCONT just keeps it tidy.
            signal(&child, libc::SIGCONT);
            signal(&child, libc::SIGKILL);
            let _ = child.wait();
        }
    }

    /// Starts the server again on the same port with the same arguments and
    /// waits until it is ready, retrying for a few seconds while the port lingers.
    pub fn restart(&mut self) {
        self.kill();
        let deadline = Instant::now() + REBIND_TIMEOUT;
        loop {
            match self.launch() {
                Ok(()) => return,
                Err(LaunchError::Exited {
                    port_taken: true, ..
                }) if Instant::now() < deadline => sleep(Duration::from_millis(100)),
                Err(err) => self.fail(err),
            }
        }
    }

    /// Freezes the server process (SIGSTOP): connections stay open but nothing is answered.
    pub fn pause(&self) {
        if let Some(child) = &self.child {
            signal(child, libc::SIGSTOP);
        }
    }

    /// Thaws a server frozen by [`RedisServer::pause`] (SIGCONT).
    pub fn resume(&self) {
        if let Some(child) = &self.child {
            signal(child, libc::SIGCONT);
        }
    }

    /// Spawns redis-server on `self.port` and waits until it answers PING.
    fn launch(&mut self) -> Result<(), LaunchError> {
        let log_start = fs::metadata(self.log_path()).map_or(0, |meta| meta.len() as usize);
        let log = OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.log_path())
            .expect("opening the redis-server log file in its temp dir");
        let port = self.port.to_string();
        let listen = match &self.tls {
            None => ["--port", &port, "--bind", "127.0.0.1"].to_vec(),
            Some(_) => ["--port", "0", "--tls-port", &port, "--bind", "127.0.0.1"].to_vec(),
        };
        let mut command = Command::new("redis-server");
        if let Some(config) = &self.sentinel {
            command.arg(config).arg("--sentinel");
        }
        let child = command
            .args(listen)
            .args(["--save", "", "--appendonly", "no", "--daemonize", "no"])
            .args(["--protected-mode", "yes", "--dir"])
            .arg(&self.dir)
            .args(&self.extra_args)
            .stdin(Stdio::null())
            .stdout(
                log.try_clone()
                    .expect("duplicating the redis-server log file handle"),
            )
            .stderr(log)
            .spawn();
        let child = match child {
            Ok(child) => self.child.insert(child),
            Err(err) if err.kind() == ErrorKind::NotFound => panic!(
                "redis-server not found on PATH: install it (apt-get install redis-server); \
                 the integration tests need a real Redis"
            ),
            Err(err) => panic!("spawning redis-server: {err}"),
        };
        let pid = child.id();
        let deadline = Instant::now() + READY_TIMEOUT;
        loop {
            if let Some(status) = child.try_wait().expect("polling the redis-server process") {
                self.child = None;
                let log = fs::read(self.log_path()).unwrap_or_default();
                let output = String::from_utf8_lossy(log.get(log_start..).unwrap_or_default());
                return Err(LaunchError::Exited {
                    status: status.to_string(),
                    // A cluster node also needs its port + 10000 for the cluster bus: a port
                    // above 55535 is refused ("port number too high"), and so is a bus port
                    // someone holds. Either way another port does.
                    port_taken: output.contains("Address already in use")
                        || output.contains("port number too high"),
                });
            }
            let ready = match &self.tls {
                None => answers_ping(self.port, pid),
                Some(cli) => tls::answers(cli, self.port, pid),
            };
            if ready {
                return Ok(());
            }
            if Instant::now() >= deadline {
                self.kill();
                return Err(LaunchError::NotReady);
            }
            sleep(Duration::from_millis(10));
        }
    }

    /// Panics with a message describing why the server did not come up.
    fn fail(&self, err: LaunchError) -> ! {
        let why = match err {
            LaunchError::Exited { status, .. } => format!("exited early ({status})"),
            LaunchError::NotReady => format!("did not answer within {READY_TIMEOUT:?}"),
        };
        panic!(
            "redis-server on 127.0.0.1:{} {why}; log tail ({}):\n{}",
            self.port,
            self.log_path().display(),
            log_tail(&self.log_path()),
        )
    }

    fn log_path(&self) -> PathBuf {
        self.dir.join("redis-server.log")
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.kill();
        let _ = fs::remove_dir_all(&self.dir);
    }
}

/// Sends `sig` to the child; errors (e.g. already gone) are ignored.
fn signal(child: &Child, sig: libc::c_int) {
    // SAFETY: kill(2) has no memory-safety preconditions; the pid belongs to
    // our own un-reaped child, so it cannot have been recycled.
    unsafe {
        libc::kill(child.id() as libc::pid_t, sig);
    }
}

/// Asks the OS for a currently free port on 127.0.0.1.
fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .expect("binding 127.0.0.1:0 to find a free port")
        .port()
}

/// Creates a fresh, empty scratch directory for one server.
fn fresh_dir() -> PathBuf {
    let n = NEXT_DIR.fetch_add(1, Ordering::Relaxed);
    let dir = std::env::temp_dir().join(format!("cache-aside-redis-{}-{n}", std::process::id()));
    let _ = fs::remove_dir_all(&dir);
    fs::create_dir_all(&dir)
        .unwrap_or_else(|err| panic!("creating redis temp dir {}: {err}", dir.display()));
    dir
}

/// True if the server on `port` answers PING and is our process `pid`
/// (not some foreign server that grabbed the port first).
fn answers_ping(port: u16, pid: u32) -> bool {
    let check = || -> redis::RedisResult<bool> {
        let client = redis::Client::open(format!("redis://127.0.0.1:{port}/"))?;
        let mut conn = client.get_connection_with_timeout(Duration::from_millis(250))?;
        conn.set_read_timeout(Some(Duration::from_millis(250)))?;
        let pong: String = redis::cmd("PING").query(&mut conn)?;
        let info: String = redis::cmd("INFO").arg("server").query(&mut conn)?;
        Ok(pong == "PONG"
            && info
                .lines()
                .any(|l| l.trim() == format!("process_id:{pid}")))
    };
    check().unwrap_or(false)
}

/// The last lines of the server log, for panic messages.
fn log_tail(path: &Path) -> String {
    let bytes = fs::read(path).unwrap_or_default();
    let text = String::from_utf8_lossy(&bytes);
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(40)..].join("\n")
}
