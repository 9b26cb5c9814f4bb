//! A private `redis-server` that speaks TLS only, with certificates made at test time.
//!
//! [`TlsRedis::start`] generates (with rcgen) a self-signed CA, a server
//! certificate for `127.0.0.1` and `localhost` signed by it, a client
//! certificate signed by it, and an unrelated "wrong" CA (plus a client
//! certificate signed by that one). The PEM files go into the server's scratch
//! directory; the plain-TCP port is disabled (`--port 0`) and the server listens
//! with TLS on a free `127.0.0.1` port. Readiness and the unit tests below use
//! `redis-cli --tls`, so nothing here depends on redis-rs TLS features.
//!
//! The process is killed and the directory (keys included) removed on drop.

use std::fs;
use std::io::{ErrorKind, Read};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::thread::sleep;
use std::time::{Duration, Instant};

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};

use super::{RedisServer, fresh_dir};

/// How long one readiness probe (`redis-cli ... INFO server`) may take.
const PROBE_TIMEOUT: Duration = Duration::from_secs(1);
/// Default bound on a [`TlsCli::run`] call.
const CLI_TIMEOUT: Duration = Duration::from_secs(5);

const CA_CERT: &str = "ca.crt";
const WRONG_CA_CERT: &str = "wrong-ca.crt";
const SERVER_CERT: &str = "server.crt";
const SERVER_KEY: &str = "server.key";
const CLIENT_CERT: &str = "client.crt";
const CLIENT_KEY: &str = "client.key";
const WRONG_CLIENT_CERT: &str = "wrong-client.crt";
const WRONG_CLIENT_KEY: &str = "wrong-client.key";

/// PEM texts generated for one [`TlsRedis`].
struct Pems {
    ca_cert: String,
    wrong_ca_cert: String,
    server_cert: String,
    server_key: String,
    client_cert: String,
    client_key: String,
    wrong_client_cert: String,
    wrong_client_key: String,
}

/// A private TLS-only `redis-server` child process on `127.0.0.1`: a [`RedisServer`]
/// listening with TLS, and the certificates it was started with.
pub struct TlsRedis {
    server: RedisServer,
    client_auth: bool,
    password: Option<String>,
    pems: Pems,
}

impl TlsRedis {
    /// Starts a TLS-only redis-server (`--port 0 --tls-port <free>`) on 127.0.0.1
    /// with fresh certificates, `--save '' --appendonly no`, and
    /// `--tls-auth-clients yes` if `client_auth` (else `no`); waits until it
    /// answers over TLS. Panics if redis-server is missing or does not come up.
    pub fn start(client_auth: bool) -> TlsRedis {
        Self::start_with(client_auth, &[])
    }

    /// Same as [`TlsRedis::start`], with `--requirepass <password>`.
    pub fn start_with_password(client_auth: bool, password: &str) -> TlsRedis {
        Self::start_with(client_auth, &["--requirepass", password])
    }

    /// Same as [`TlsRedis::start`], with extra config arguments appended to the
    /// command line. A `--requirepass <pw>` among them is remembered (see
    /// [`TlsRedis::password`]) and used by readiness checks and [`TlsRedis::cli`].
    pub fn start_with(client_auth: bool, extra_args: &[&str]) -> TlsRedis {
        let password = extra_args
            .windows(2)
            .filter(|pair| pair[0] == "--requirepass")
            .map(|pair| pair[1].to_string())
            .next_back()
            .filter(|pw| !pw.is_empty());
        let dir = fresh_dir();
        let pems = generate_pems();
        let (mut args, mut probe) = node_setup(&dir, &pems, client_auth);
        args.extend(extra_args.iter().map(|a| a.to_string()));
        probe.password = password.clone();
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        TlsRedis {
            server: RedisServer::start_in(dir, &args, Some(probe)),
            client_auth,
            password,
            pems,
        }
    }

    /// The TLS port (stable across [`TlsRedis::restart`]).
    pub fn port(&self) -> u16 {
        self.server.port()
    }

    /// The connection URL, `rediss://127.0.0.1:{port}/` (no password in it).
    pub fn url(&self) -> String {
        format!("rediss://127.0.0.1:{}/", self.port())
    }

    /// Whether the server requires client certificates (`--tls-auth-clients yes`).
    pub fn client_auth(&self) -> bool {
        self.client_auth
    }

    /// The `--requirepass` password, if any.
    pub fn password(&self) -> Option<&str> {
        self.password.as_deref()
    }

    /// PEM of the CA that signed the server and client certificates.
    pub fn ca_pem(&self) -> Vec<u8> {
        self.pems.ca_cert.clone().into_bytes()
    }

    /// PEM of an unrelated CA: verifying the server against it must fail.
    pub fn wrong_ca_pem(&self) -> Vec<u8> {
        self.pems.wrong_ca_cert.clone().into_bytes()
    }

    /// PEM of a client certificate signed by the right CA.
    pub fn client_cert_pem(&self) -> Vec<u8> {
        self.pems.client_cert.clone().into_bytes()
    }

    /// PEM (PKCS#8) of the key of [`TlsRedis::client_cert_pem`].
    pub fn client_key_pem(&self) -> Vec<u8> {
        self.pems.client_key.clone().into_bytes()
    }

    /// PEM of a client certificate signed by the wrong CA: the server rejects it
    /// when client auth is on.
    pub fn wrong_client_cert_pem(&self) -> Vec<u8> {
        self.pems.wrong_client_cert.clone().into_bytes()
    }

    /// PEM (PKCS#8) of the key of [`TlsRedis::wrong_client_cert_pem`].
    pub fn wrong_client_key_pem(&self) -> Vec<u8> {
        self.pems.wrong_client_key.clone().into_bytes()
    }

    /// Path of the file holding [`TlsRedis::ca_pem`].
    pub fn ca_path(&self) -> PathBuf {
        self.server.dir.join(CA_CERT)
    }

    /// Path of the file holding [`TlsRedis::wrong_ca_pem`].
    pub fn wrong_ca_path(&self) -> PathBuf {
        self.server.dir.join(WRONG_CA_CERT)
    }

    /// Path of the file holding [`TlsRedis::client_cert_pem`].
    pub fn client_cert_path(&self) -> PathBuf {
        self.server.dir.join(CLIENT_CERT)
    }

    /// Path of the file holding [`TlsRedis::client_key_pem`].
    pub fn client_key_path(&self) -> PathBuf {
        self.server.dir.join(CLIENT_KEY)
    }

    /// Path of the file holding [`TlsRedis::wrong_client_cert_pem`].
    pub fn wrong_client_cert_path(&self) -> PathBuf {
        self.server.dir.join(WRONG_CLIENT_CERT)
    }

    /// Path of the file holding [`TlsRedis::wrong_client_key_pem`].
    pub fn wrong_client_key_path(&self) -> PathBuf {
        self.server.dir.join(WRONG_CLIENT_KEY)
    }

    /// A `redis-cli --tls` invocation against this server. Defaults: the right
    /// CA, the right client certificate, the server's password, a 5 s bound.
    pub fn cli(&self) -> TlsCli {
        TlsCli {
            port: self.port(),
            ca: self.ca_path(),
            client: Some((self.client_cert_path(), self.client_key_path())),
            password: self.password.clone(),
            timeout: CLI_TIMEOUT,
        }
    }

    /// Kills the server with SIGKILL and reaps it. Idempotent.
    pub fn kill(&mut self) {
        self.server.kill();
    }

    /// Starts the server again on the same port with the same certificates and
    /// arguments, retrying for a few seconds while the port lingers.
    pub fn restart(&mut self) {
        self.server.restart();
    }

    /// Freezes the server process (SIGSTOP): connections stay open, handshakes
    /// and commands are not answered.
    pub fn pause(&self) {
        self.server.pause();
    }

    /// Thaws a server frozen by [`TlsRedis::pause`] (SIGCONT).
    pub fn resume(&self) {
        self.server.resume();
    }
}

/// Writes the certificates into `dir`; returns the server arguments for them and the
/// readiness probe (the right CA and client certificate).
fn node_setup(dir: &Path, pems: &Pems, client_auth: bool) -> (Vec<String>, TlsCli) {
    write_pems(dir, pems);
    let mut args: Vec<String> = [
        ("--tls-cert-file", SERVER_CERT),
        ("--tls-key-file", SERVER_KEY),
        ("--tls-ca-cert-file", CA_CERT),
    ]
    .iter()
    .flat_map(|(flag, file)| [flag.to_string(), dir.join(file).display().to_string()])
    .collect();
    let auth_clients = if client_auth { "yes" } else { "no" };
    args.extend(["--tls-auth-clients".to_owned(), auth_clients.to_owned()]);
    let probe = TlsCli {
        port: 0,
        ca: dir.join(CA_CERT),
        client: Some((dir.join(CLIENT_CERT), dir.join(CLIENT_KEY))),
        password: None,
        timeout: PROBE_TIMEOUT,
    };
    (args, probe)
}

/// The certificates of a TLS cluster: one CA, one server certificate for 127.0.0.1 that
/// every node presents (to clients and to each other), one client certificate.
pub(crate) struct ClusterTls {
    pems: Pems,
}

impl ClusterTls {
    pub(crate) fn new() -> Self {
        ClusterTls {
            pems: generate_pems(),
        }
    }

    /// The files of one node, written into its `dir`, its TLS arguments (the cluster bus
    /// and replication over TLS too) and its readiness probe.
    pub(crate) fn node(&self, dir: &Path) -> (Vec<String>, TlsCli) {
        let (mut args, probe) = node_setup(dir, &self.pems, false);
        args.extend(["--tls-cluster", "yes", "--tls-replication", "yes"].map(str::to_owned));
        (args, probe)
    }

    /// `redis-cli` arguments to reach a node whose files are in `dir`.
    pub(crate) fn cli_args(dir: &Path) -> Vec<String> {
        let path = |file: &str| dir.join(file).display().to_string();
        vec![
            "--tls".to_owned(),
            "--cacert".to_owned(),
            path(CA_CERT),
            "--cert".to_owned(),
            path(CLIENT_CERT),
            "--key".to_owned(),
            path(CLIENT_KEY),
        ]
    }

    /// What a redis-rs client needs: the CA and the client certificate.
    pub(crate) fn certificates(&self) -> redis::TlsCertificates {
        let (client_cert, client_key) = self.client_pems();
        redis::TlsCertificates {
            client_tls: Some(redis::ClientTlsConfig {
                client_cert,
                client_key,
            }),
            root_cert: Some(self.ca_pem()),
        }
    }

    /// PEM of the CA.
    pub(crate) fn ca_pem(&self) -> Vec<u8> {
        self.pems.ca_cert.clone().into_bytes()
    }

    /// PEM of the client certificate and of its key.
    pub(crate) fn client_pems(&self) -> (Vec<u8>, Vec<u8>) {
        (
            self.pems.client_cert.clone().into_bytes(),
            self.pems.client_key.clone().into_bytes(),
        )
    }
}

/// Writes every certificate and key of `pems` into `dir`.
fn write_pems(dir: &Path, p: &Pems) {
    for (name, text) in [
        (CA_CERT, &p.ca_cert),
        (WRONG_CA_CERT, &p.wrong_ca_cert),
        (SERVER_CERT, &p.server_cert),
        (SERVER_KEY, &p.server_key),
        (CLIENT_CERT, &p.client_cert),
        (CLIENT_KEY, &p.client_key),
        (WRONG_CLIENT_CERT, &p.wrong_client_cert),
        (WRONG_CLIENT_KEY, &p.wrong_client_key),
    ] {
        let path = dir.join(name);
        fs::write(&path, text).unwrap_or_else(|err| panic!("writing {}: {err}", path.display()));
    }
}

/// True if the server on `port` answers `INFO server` over TLS, checked with `probe`, and
/// is our process `pid` (not some foreign server that grabbed the port).
pub(crate) fn answers(probe: &TlsCli, port: u16, pid: u32) -> bool {
    let want = format!("process_id:{pid}");
    let probe = TlsCli {
        port,
        ..probe.clone()
    };
    probe
        .run(&["INFO", "server"])
        .is_ok_and(|out| out.lines().any(|line| line.trim() == want))
}

/// A bounded `redis-cli --tls` call, built by [`TlsRedis::cli`].
#[derive(Clone, Debug)]
pub struct TlsCli {
    port: u16,
    ca: PathBuf,
    client: Option<(PathBuf, PathBuf)>,
    password: Option<String>,
    timeout: Duration,
}

impl TlsCli {
    /// Verifies the server against the CA in `path` instead.
    pub fn ca(mut self, path: impl Into<PathBuf>) -> TlsCli {
        self.ca = path.into();
        self
    }

    /// Presents this client certificate and key instead.
    pub fn client_cert(mut self, cert: impl Into<PathBuf>, key: impl Into<PathBuf>) -> TlsCli {
        self.client = Some((cert.into(), key.into()));
        self
    }

    /// Presents no client certificate.
    pub fn no_client_cert(mut self) -> TlsCli {
        self.client = None;
        self
    }

    /// Authenticates with `password` (passed via `REDISCLI_AUTH`), or not at all.
    pub fn password(mut self, password: Option<&str>) -> TlsCli {
        self.password = password.map(str::to_string);
        self
    }

    /// Bounds the call (default 5 s); a slower redis-cli is killed.
    pub fn timeout(mut self, timeout: Duration) -> TlsCli {
        self.timeout = timeout;
        self
    }

    /// Runs `redis-cli --tls ... <args>`. `Ok(stdout)` if it exited with status 0
    /// within the bound; otherwise `Err` describing the status and output.
    /// Note that a Redis error reply may still exit 0: check the text.
    pub fn run(&self, args: &[&str]) -> Result<String, String> {
        let mut cmd = Command::new("redis-cli");
        cmd.args(["--tls", "-h", "127.0.0.1", "-p", &self.port.to_string()])
            .arg("--cacert")
            .arg(&self.ca);
        if let Some((cert, key)) = &self.client {
            cmd.arg("--cert").arg(cert).arg("--key").arg(key);
        }
        cmd.env_remove("REDISCLI_AUTH");
        if let Some(password) = &self.password {
            cmd.env("REDISCLI_AUTH", password);
        }
        let mut child = match cmd
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
        {
            Ok(child) => child,
            Err(err) if err.kind() == ErrorKind::NotFound => panic!(
                "redis-cli not found on PATH: install it (apt-get install redis-tools); \
                 the TLS test harness drives the server with `redis-cli --tls`"
            ),
            Err(err) => panic!("spawning redis-cli: {err}"),
        };
        let deadline = Instant::now() + self.timeout;
        let status = loop {
            if let Some(status) = child.try_wait().expect("polling redis-cli") {
                break Some(status);
            }
            if Instant::now() >= deadline {
                let _ = child.kill();
                let _ = child.wait();
                break None;
            }
            sleep(Duration::from_millis(5));
        };
        let mut stdout = String::new();
        let mut stderr = String::new();
        if let Some(mut out) = child.stdout.take() {
            let _ = out.read_to_string(&mut stdout);
        }
        if let Some(mut err) = child.stderr.take() {
            let _ = err.read_to_string(&mut stderr);
        }
        match status {
            Some(status) if status.success() => Ok(stdout),
            Some(status) => Err(format!(
                "redis-cli {args:?} exited with {status}: {}{}",
                stdout.trim(),
                stderr.trim()
            )),
            None => Err(format!(
                "redis-cli {args:?} timed out after {:?}: {}{}",
                self.timeout,
                stdout.trim(),
                stderr.trim()
            )),
        }
    }
}

/// A CA's self-signed certificate and the issuer that signs with its key.
fn new_ca(common_name: &str) -> (String, Issuer<'static, KeyPair>) {
    let mut params = CertificateParams::new(Vec::new()).expect("no SANs for a CA");
    params
        .distinguished_name
        .push(DnType::CommonName, common_name);
    params
        .distinguished_name
        .push(DnType::OrganizationName, "cache-aside tests");
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.key_usages = vec![
        KeyUsagePurpose::DigitalSignature,
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
    ];
    let key = KeyPair::generate().expect("generating a CA key");
    let cert = params.self_signed(&key).expect("self-signing the test CA");
    (cert.pem(), Issuer::new(params, key))
}

/// A leaf certificate (cert PEM, key PEM) signed by `issuer`.
fn new_leaf(
    issuer: &Issuer<'_, KeyPair>,
    common_name: &str,
    sans: &[&str],
    usages: &[ExtendedKeyUsagePurpose],
) -> (String, String) {
    let sans: Vec<String> = sans.iter().map(|san| san.to_string()).collect();
    let mut params = CertificateParams::new(sans).expect("valid test SANs");
    params
        .distinguished_name
        .push(DnType::CommonName, common_name);
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    params.extended_key_usages = usages.to_vec();
    params.use_authority_key_identifier_extension = true;
    let key = KeyPair::generate().expect("generating a leaf key");
    let cert = params
        .signed_by(&key, issuer)
        .expect("signing a test leaf certificate");
    (cert.pem(), key.serialize_pem())
}

fn generate_pems() -> Pems {
    let (ca_cert, ca) = new_ca("cache-aside test CA");
    let (wrong_ca_cert, wrong_ca) = new_ca("cache-aside wrong CA");
    let (server_cert, server_key) = new_leaf(
        &ca,
        "localhost",
        &["127.0.0.1", "localhost"],
        // A cluster node also presents it to the other nodes, as a client, on the bus.
        &[
            ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsagePurpose::ClientAuth,
        ],
    );
    let (client_cert, client_key) = new_leaf(
        &ca,
        "cache-aside test client",
        &[],
        &[ExtendedKeyUsagePurpose::ClientAuth],
    );
    let (wrong_client_cert, wrong_client_key) = new_leaf(
        &wrong_ca,
        "cache-aside wrong client",
        &[],
        &[ExtendedKeyUsagePurpose::ClientAuth],
    );
    Pems {
        ca_cert,
        wrong_ca_cert,
        server_cert,
        server_key,
        client_cert,
        client_key,
        wrong_client_cert,
        wrong_client_key,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pong(result: Result<String, String>) {
        match result {
            Ok(out) => assert_eq!(out.trim(), "PONG", "unexpected PING reply"),
            Err(err) => panic!("expected PONG: {err}"),
        }
    }

    fn refused(result: Result<String, String>) {
        match result {
            Ok(out) => panic!("expected the TLS connection to fail, got {out:?}"),
            Err(err) => eprintln!("refused as expected: {err}"),
        }
    }

    /// The client rejects the server's certificate (it is not from `--cacert`).
    fn unverified(result: Result<String, String>) {
        match result {
            Ok(out) => panic!("expected certificate verification to fail, got {out:?}"),
            Err(err) => assert!(
                err.contains("certificate verify failed"),
                "expected a certificate verification failure: {err}"
            ),
        }
    }

    #[test]
    fn without_client_auth_the_right_ca_answers_and_the_wrong_ca_fails() {
        let started = Instant::now();
        let server = TlsRedis::start(false);
        eprintln!("TlsRedis::start(false) took {:?}", started.elapsed());
        assert_eq!(
            server.url(),
            format!("rediss://127.0.0.1:{}/", server.port())
        );
        assert!(!server.client_auth());

        pong(server.cli().run(&["PING"]));
        pong(server.cli().no_client_cert().run(&["PING"]));
        unverified(server.cli().ca(server.wrong_ca_path()).run(&["PING"]));
        unverified(
            server
                .cli()
                .ca(server.wrong_ca_path())
                .no_client_cert()
                .run(&["PING"]),
        );
    }

    #[test]
    fn with_client_auth_a_client_cert_from_the_ca_is_required() {
        let started = Instant::now();
        let server = TlsRedis::start(true);
        eprintln!("TlsRedis::start(true) took {:?}", started.elapsed());
        assert!(server.client_auth());

        pong(server.cli().run(&["PING"]));
        refused(server.cli().no_client_cert().run(&["PING"]));
        refused(
            server
                .cli()
                .client_cert(
                    server.wrong_client_cert_path(),
                    server.wrong_client_key_path(),
                )
                .run(&["PING"]),
        );
        unverified(server.cli().ca(server.wrong_ca_path()).run(&["PING"]));
    }

    #[test]
    fn the_plain_tcp_port_is_off() {
        let server = TlsRedis::start(false);
        // The TLS port does not speak plain RESP.
        let plain = Command::new("redis-cli")
            .args(["-h", "127.0.0.1", "-p", &server.port().to_string(), "PING"])
            .stdin(Stdio::null())
            .output()
            .expect("running redis-cli");
        assert_ne!(String::from_utf8_lossy(&plain.stdout).trim(), "PONG");
        let config = server
            .cli()
            .run(&["CONFIG", "GET", "port"])
            .expect("CONFIG GET port");
        assert_eq!(config.lines().nth(1).map(str::trim), Some("0"), "{config}");
    }

    #[test]
    fn a_password_is_required_when_set() {
        let server = TlsRedis::start_with_password(false, "s3cret-pw");
        assert_eq!(server.password(), Some("s3cret-pw"));
        assert!(!server.url().contains("s3cret-pw"));

        pong(server.cli().run(&["PING"]));
        let anonymous = server.cli().password(None).run(&["PING"]);
        assert!(
            !anonymous.as_deref().is_ok_and(|out| out.trim() == "PONG"),
            "PING without the password must not answer PONG: {anonymous:?}"
        );
        let wrong = server.cli().password(Some("nope")).run(&["PING"]);
        assert!(
            !wrong.as_deref().is_ok_and(|out| out.trim() == "PONG"),
            "PING with a wrong password must not answer PONG: {wrong:?}"
        );
    }

    #[test]
    fn pems_match_the_files_and_look_like_pem() {
        let server = TlsRedis::start(true);
        for (pem, path) in [
            (server.ca_pem(), server.ca_path()),
            (server.wrong_ca_pem(), server.wrong_ca_path()),
            (server.client_cert_pem(), server.client_cert_path()),
            (server.client_key_pem(), server.client_key_path()),
        ] {
            assert_eq!(fs::read(&path).expect("reading a PEM file"), pem);
        }
        assert!(server.ca_pem().starts_with(b"-----BEGIN CERTIFICATE-----"));
        assert!(
            server
                .client_key_pem()
                .starts_with(b"-----BEGIN PRIVATE KEY-----")
        );
        assert_ne!(server.ca_pem(), server.wrong_ca_pem());
    }

    #[test]
    fn pause_resume_kill_restart_and_drop() {
        let mut server = TlsRedis::start(false);
        let port = server.port();

        server.pause();
        let paused = server
            .cli()
            .timeout(Duration::from_millis(500))
            .run(&["PING"]);
        assert!(paused.is_err(), "a paused server answered: {paused:?}");
        server.resume();
        pong(server.cli().run(&["PING"]));

        server.kill();
        refused(server.cli().run(&["PING"]));
        server.restart();
        assert_eq!(server.port(), port);
        pong(server.cli().run(&["PING"]));

        let dir = server.server.dir.clone();
        let pid = server
            .server
            .child
            .as_ref()
            .map(std::process::Child::id)
            .expect("running");
        drop(server);
        assert!(!dir.exists(), "scratch dir {} left behind", dir.display());
        // SAFETY: signal 0 only checks existence; the pid was our reaped child.
        let alive = unsafe { libc::kill(pid as libc::pid_t, 0) } == 0;
        assert!(!alive, "redis-server {pid} survived drop");
    }
}
