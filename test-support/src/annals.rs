//! The real `annals` binary in tests: where it is (built first when needed), running it
//! as a command, and [`AnnalsServer`], an `annals serve` child on a free port with its
//! own data directory, ready once `/readyz` answers 200, killed on `Drop`.
//!
//! A test crate cannot use `CARGO_BIN_EXE_annals` of another package, and an artifact
//! dependency is nightly-only. So [`annals_binary`] runs `cargo build --workspace
//! --all-targets` once per test process, in the same target directory and profile as the
//! test itself: the same build as `cargo test --workspace` (the same features, so nothing
//! is compiled twice), which also links `target/<profile>/annals`. It runs without the
//! variables cargo sets for the test, so it is a no-op when everything is fresh, and the
//! tests never run a stale binary. `ANNALS_BIN` points the tests at another binary
//! instead (and skips the build).

use std::ffi::OsString;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use tempfile::TempDir;

use crate::free_port;
use crate::tls::TestPki;

/// How long a server may take to start (or to recover its log) and answer `/readyz`.
const START_PATIENCE: Duration = Duration::from_secs(60);

/// The `annals` binary under test: `ANNALS_BIN` if set, else `target/<profile>/annals`
/// next to the running test, built (or found fresh) by cargo first.
pub fn annals_binary() -> &'static Path {
    static BINARY: OnceLock<PathBuf> = OnceLock::new();
    BINARY.get_or_init(|| {
        if let Some(path) = std::env::var_os("ANNALS_BIN") {
            let path = PathBuf::from(path);
            assert!(
                path.is_file(),
                "ANNALS_BIN={} is not a file; point it at an annals binary or unset it",
                path.display()
            );
            return path;
        }
        build_annals()
    })
}

/// Builds the workspace's targets, `annals` among them, with the cargo, target directory
/// and profile of the running test (`target/<profile>/deps/<test>`), and returns
/// `target/<profile>/annals`. Building the binary alone (`-p annals`) would resolve other
/// features than `cargo test --workspace` does, and compile much of the workspace again.
fn build_annals() -> PathBuf {
    let test = std::env::current_exe().expect("the test's own path");
    let profile_dir = test
        .parent()
        .and_then(Path::parent)
        .unwrap_or_else(|| panic!("{} is not under target/<profile>/deps", test.display()));
    let target_dir = profile_dir.parent().expect("a target directory");
    let profile = profile_dir
        .file_name()
        .and_then(|name| name.to_str())
        .expect("a profile directory name");
    let binary = profile_dir.join(format!("annals{}", std::env::consts::EXE_SUFFIX));
    let workspace = Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("test-support sits in the workspace root");
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| OsString::from("cargo"));
    let mut command = Command::new(&cargo);
    command
        .args(["build", "--quiet", "--workspace", "--all-targets"])
        .arg("--manifest-path")
        .arg(workspace.join("Cargo.toml"))
        .env("CARGO_TARGET_DIR", target_dir);
    // What cargo sets for the running test (its package's name, version, manifest), the
    // build must not see: build scripts that track them (ring's tracks `CARGO_PKG_NAME`
    // and the version) would find them changed from the `cargo test` that built
    // everything, run again, and recompile all that depends on them (minutes).
    for (name, _) in std::env::vars_os() {
        if name
            .to_str()
            .is_some_and(|name| name.starts_with("CARGO_PKG_") || SET_FOR_A_TEST.contains(&name))
        {
            command.env_remove(&name);
        }
    }
    match profile {
        "debug" => {}
        "release" => {
            command.arg("--release");
        }
        other => {
            command.args(["--profile", other]);
        }
    }
    let hint = format!(
        "build it with `cargo build --workspace --all-targets` (profile {profile}), or set ANNALS_BIN to an annals binary"
    );
    let output = crate::output(&mut command)
        .unwrap_or_else(|error| panic!("cannot run {cargo:?} to build annals: {error}; {hint}"));
    assert!(
        output.status.success(),
        "building annals failed ({}): {}\n{hint}",
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(
        binary.is_file(),
        "{} is missing after the build; {hint}",
        binary.display()
    );
    binary
}

/// Besides every `CARGO_PKG_*`, what cargo sets in a test's environment that a build must
/// not inherit (see [`build_annals`]).
const SET_FOR_A_TEST: &[&str] = &[
    "CARGO_MANIFEST_DIR",
    "CARGO_MANIFEST_PATH",
    "CARGO_MANIFEST_LINKS",
    "CARGO_CRATE_NAME",
    "CARGO_BIN_NAME",
    "CARGO_PRIMARY_PACKAGE",
    "CARGO_TARGET_TMPDIR",
    "OUT_DIR",
];

/// A command running the `annals` binary, with colours off.
pub fn annals_command() -> Command {
    let mut command = Command::new(annals_binary());
    command.env("NO_COLOR", "1");
    command
}

/// Runs `annals args` in `cwd` to the end and returns what it printed.
pub fn run_annals(args: &[&str], cwd: &Path) -> Output {
    let mut command = annals_command();
    command
        .args(args)
        .current_dir(cwd)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    crate::spawn(&mut command)
        .and_then(Child::wait_with_output)
        .unwrap_or_else(|error| panic!("annals {args:?} did not run: {error}"))
}

/// A real `annals serve`: on a free loopback port, over its own temporary data directory
/// or a given one, its log in a file of its own, ready once `/readyz` answers 200. It is
/// killed (SIGKILL) on `Drop`; [`AnnalsServer::terminate`] stops it the polite way.
#[derive(Debug)]
pub struct AnnalsServer {
    child: Option<Child>,
    port: u16,
    data_dir: PathBuf,
    args: Vec<String>,
    /// Holds the server's log (and the data directory, when the server owns it).
    scratch: TempDir,
    /// For a server that speaks HTTPS: the client configuration trusting its CA.
    tls: Option<std::sync::Arc<rustls::ClientConfig>>,
}

impl AnnalsServer {
    /// Starts `annals serve <args>` over a new data directory of its own.
    pub fn start(args: &[&str]) -> AnnalsServer {
        let scratch = tempfile::tempdir().expect("a temporary directory");
        let data_dir = scratch.path().join("data");
        Self::start_with(scratch, data_dir, args)
    }

    /// Starts `annals serve <args>` over `data_dir` (created if missing).
    pub fn start_in(data_dir: &Path, args: &[&str]) -> AnnalsServer {
        let scratch = tempfile::tempdir().expect("a temporary directory");
        Self::start_with(scratch, data_dir.to_path_buf(), args)
    }

    /// Starts `annals serve --tls-cert --tls-key <args>` with `pki`'s server
    /// certificate, over a new data directory of its own: HTTPS only, and
    /// [`url`](Self::url) is `https://127.0.0.1:<port>` (trust `pki.ca_cert()`).
    pub fn start_https(pki: &TestPki, args: &[&str]) -> AnnalsServer {
        let scratch = tempfile::tempdir().expect("a temporary directory");
        let data_dir = scratch.path().join("data");
        Self::start_https_with(pki, scratch, data_dir, args)
    }

    /// As [`start_https`](Self::start_https), over `data_dir` (created if missing).
    pub fn start_https_in(pki: &TestPki, data_dir: &Path, args: &[&str]) -> AnnalsServer {
        let scratch = tempfile::tempdir().expect("a temporary directory");
        Self::start_https_with(pki, scratch, data_dir.to_path_buf(), args)
    }

    fn start_https_with(
        pki: &TestPki,
        scratch: TempDir,
        data_dir: PathBuf,
        args: &[&str],
    ) -> AnnalsServer {
        let cert = pki.server_cert().display().to_string();
        let key = pki.server_key().display().to_string();
        let mut all = vec!["--tls-cert", &cert, "--tls-key", &key];
        all.extend_from_slice(args);
        Self::start_configured(scratch, data_dir, &all, Some(pki.client_config()))
    }

    fn start_with(scratch: TempDir, data_dir: PathBuf, args: &[&str]) -> AnnalsServer {
        Self::start_configured(scratch, data_dir, args, None)
    }

    fn start_configured(
        scratch: TempDir,
        data_dir: PathBuf,
        args: &[&str],
        tls: Option<std::sync::Arc<rustls::ClientConfig>>,
    ) -> AnnalsServer {
        let mut server = AnnalsServer {
            child: None,
            port: 0,
            data_dir,
            args: args.iter().map(|arg| (*arg).to_owned()).collect(),
            scratch,
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
            "annals serve did not start on any of 5 free ports; its log:\n{}",
            server.log()
        );
    }

    /// `http://127.0.0.1:<port>`, or `https://...` for a server started with
    /// [`start_https`](Self::start_https).
    pub fn url(&self) -> String {
        let scheme = if self.tls.is_some() { "https" } else { "http" };
        format!("{scheme}://127.0.0.1:{}", self.port)
    }

    /// The port it listens on (the same across restarts).
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The data directory it serves.
    pub fn data_dir(&self) -> &Path {
        &self.data_dir
    }

    /// The running server's pid.
    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("the server is running").id()
    }

    /// Everything the server (and its earlier runs) logged.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.log_path()).unwrap_or_default()
    }

    /// Kills the server with SIGKILL (a crash: nothing is flushed) and waits for it.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts the server again (killing it first if it runs) on the same port, over the
    /// same data directory, and waits until it is ready.
    pub fn restart(&mut self) {
        self.kill();
        let deadline = Instant::now() + START_PATIENCE;
        while !self.spawn() {
            assert!(
                Instant::now() < deadline,
                "annals serve did not come back on port {}; its log:\n{}",
                self.port,
                self.log()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Stops the server with SIGTERM and checks that it drained and exited with success.
    pub fn terminate(&mut self) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        let status = crate::output(Command::new("kill").args(["-TERM", &child.id().to_string()]))
            .expect("kill -TERM runs")
            .status;
        assert!(status.success(), "kill -TERM {} failed", child.id());
        let deadline = Instant::now() + START_PATIENCE;
        loop {
            if let Some(status) = child.try_wait().expect("wait for annals serve") {
                assert!(
                    status.success(),
                    "annals serve exited with {status} after SIGTERM; its log:\n{}",
                    self.log()
                );
                return;
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                panic!("annals serve did not stop within {START_PATIENCE:?} of SIGTERM");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn log_path(&self) -> PathBuf {
        self.scratch.path().join("annals-serve.log")
    }

    /// Spawns the server and waits until `/readyz` answers 200; false if it exited first
    /// (its port taken, say). A server that neither exits nor gets ready fails the test.
    fn spawn(&mut self) -> bool {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.log_path())
            .expect("a log file");
        let mut command = annals_command();
        command
            .args(["serve", "--listen", &format!("127.0.0.1:{}", self.port)])
            .arg("--data-dir")
            .arg(&self.data_dir)
            .args(&self.args)
            .env(
                "RUST_LOG",
                std::env::var("RUST_LOG").unwrap_or_else(|_| "warn".into()),
            )
            .stdin(Stdio::null())
            .stdout(Stdio::from(log.try_clone().expect("a log file")))
            .stderr(Stdio::from(log));
        let child = crate::spawn(&mut command)
            .unwrap_or_else(|error| panic!("cannot start annals serve: {error}"));
        self.child = Some(child);
        let address = SocketAddr::from(([127, 0, 0, 1], self.port));
        let deadline = Instant::now() + START_PATIENCE;
        loop {
            let status = match &self.tls {
                Some(config) => crate::tls::https_status(config, address, "/readyz"),
                None => http_status(address, "/readyz"),
            };
            if status == Some(200) {
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
            if exited {
                self.child = None;
                return false;
            }
            if Instant::now() > deadline {
                self.kill();
                panic!(
                    "annals serve was not ready within {START_PATIENCE:?}; its log:\n{}",
                    self.log()
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for AnnalsServer {
    fn drop(&mut self) {
        self.kill();
    }
}

/// The status code of `GET path` at `address`, or `None` if nothing answered properly:
/// a few lines of HTTP/1.1, so that waiting for a server needs no async runtime.
fn http_status(address: SocketAddr, path: &str) -> Option<u16> {
    let mut stream = TcpStream::connect_timeout(&address, Duration::from_secs(1)).ok()?;
    stream.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: {address}\r\nConnection: close\r\n\r\n"
    )
    .ok()?;
    let mut head = [0u8; 12];
    stream.read_exact(&mut head).ok()?;
    // "HTTP/1.1 200"
    std::str::from_utf8(&head[9..12]).ok()?.parse().ok()
}
