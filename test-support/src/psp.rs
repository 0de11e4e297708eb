//! A real `annals-psp-sim` per test: the payment provider simulator on a port of its own
//! choosing (`--listen 127.0.0.1:0`, read back from its first line of output), its log in
//! a file of its own, killed on `Drop`. The binary is the workspace's (built with
//! `annals`, see [`crate::annals_binary`]) or `PSP_SIM_BIN`.

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};

use tempfile::TempDir;

/// The simulator's binary: `PSP_SIM_BIN`, else `annals-psp-sim` beside the `annals`
/// binary under test (the same workspace build makes both).
pub fn psp_sim_binary() -> PathBuf {
    if let Some(path) = std::env::var_os("PSP_SIM_BIN") {
        let path = PathBuf::from(path);
        assert!(
            path.is_file(),
            "PSP_SIM_BIN={} is not a file; point it at an annals-psp-sim binary or unset it",
            path.display()
        );
        return path;
    }
    let binary = crate::annals_binary()
        .with_file_name(format!("annals-psp-sim{}", std::env::consts::EXE_SUFFIX));
    assert!(
        binary.is_file(),
        "{} is missing: build it with `cargo build -p psp-sim` (the workspace build makes it), or set PSP_SIM_BIN",
        binary.display()
    );
    binary
}

/// A running payment provider simulator, killed on `Drop`.
#[derive(Debug)]
pub struct PspSimulator {
    child: Option<Child>,
    url: String,
    scratch: TempDir,
}

impl PspSimulator {
    /// Starts a simulator that behaves (no latency, errors or declines).
    pub fn start() -> PspSimulator {
        Self::start_with("{}")
    }

    /// Starts a simulator with `behaviour` (the JSON of `PUT /_sim/behaviour`).
    pub fn start_with(behaviour: &str) -> PspSimulator {
        let scratch = tempfile::tempdir().expect("a temporary directory");
        let log = std::fs::File::create(scratch.path().join("psp-sim.log")).expect("a log file");
        let mut command = Command::new(psp_sim_binary());
        command
            .args(["--listen", "127.0.0.1:0", "--behaviour", behaviour])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::from(log));
        let mut child = crate::spawn(&mut command)
            .unwrap_or_else(|error| panic!("cannot start annals-psp-sim: {error}"));
        let stdout = child.stdout.take().expect("piped stdout");
        let mut line = String::new();
        BufReader::new(stdout)
            .read_line(&mut line)
            .expect("the simulator's first line");
        let Some(url) = line.trim().strip_prefix("listening on ") else {
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "annals-psp-sim did not start: {line:?}; its log:\n{}",
                std::fs::read_to_string(scratch.path().join("psp-sim.log")).unwrap_or_default()
            );
        };
        PspSimulator {
            url: url.to_owned(),
            child: Some(child),
            scratch,
        }
    }

    /// `http://127.0.0.1:<port>`.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// What the simulator logged.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.scratch.path().join("psp-sim.log")).unwrap_or_default()
    }

    /// Kills the simulator (a provider gone: connections are refused).
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for PspSimulator {
    fn drop(&mut self) {
        self.kill();
    }
}
