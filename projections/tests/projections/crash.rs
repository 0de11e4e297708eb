//! Crash test: a child process (`projection-crash`) writes sale events while its runner
//! projects them live, or rebuilds the tally under that write load, and is killed with
//! SIGKILL at a random moment, round after round on the same data directory. After each
//! kill every stored tally model (the active one, and a build the kill interrupted) must
//! hold exactly the tally of the log before its checkpoint: never doubled, never short.
//! Finally a restarted child catches up, and the totals equal the whole log's.

use std::io::{BufRead, BufReader};
use std::os::unix::process::ExitStatusExt;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::{PoisonError, mpsc};
use std::time::Duration;

use eventstore::Position;

use crate::common::{Random, SPAWNING, assert_exact, open, read_log};
use crate::tally;

const ROUNDS: usize = 12;

fn child(dir: &Path, version: u32, mode: &str) -> std::process::Child {
    let _spawning = SPAWNING.write().unwrap_or_else(PoisonError::into_inner);
    Command::new(env!("CARGO_BIN_EXE_projection-crash"))
        .arg(dir)
        .arg(version.to_string())
        .arg(mode)
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("start projection-crash")
}

/// The first line the child prints, within 60 s.
fn first_line(child: &mut std::process::Child) -> String {
    let stdout = child.stdout.take().expect("piped stdout");
    let (lines_tx, lines) = mpsc::channel();
    std::thread::spawn(move || {
        let mut line = String::new();
        let _ = BufReader::new(stdout).read_line(&mut line);
        let _ = lines_tx.send(line);
    });
    match lines.recv_timeout(Duration::from_secs(60)) {
        Ok(line) if !line.is_empty() => line.trim_end().to_owned(),
        _ => {
            let _ = child.kill();
            let status = child.wait().expect("wait for the child");
            panic!("projection-crash said nothing within 60 s (status {status})");
        }
    }
}

/// Runs the child in `mode` until a random moment, then kills it with SIGKILL.
fn run_and_kill(dir: &Path, version: u32, mode: &str, delay: Duration) {
    let mut process = child(dir, version, mode);
    let said = first_line(&mut process);
    assert!(
        said == "started" || said == "rebuilding",
        "unexpected {said:?}"
    );
    // The crash moment: a sleep is the point here, not a way to wait for something.
    std::thread::sleep(delay);
    process.kill().expect("SIGKILL projection-crash");
    let status = process.wait().expect("wait for projection-crash");
    assert_eq!(
        status.signal(),
        Some(9),
        "the child must die by SIGKILL ({status})"
    );
}

/// Checks every stored tally model against the log; returns whether a build beside the
/// active model was found (a rebuild interrupted by the kill).
async fn check_models(dir: &Path, round: usize) -> bool {
    let store = open(dir);
    let log = read_log(&store);
    let models = store.read_models().unwrap();
    let active = models.active_version(tally::NAME).unwrap();
    let mut interrupted = false;
    for (name, version) in models.stored_models() {
        assert_eq!(name, tally::NAME);
        let model = models.model(&name, version).unwrap();
        let role = if Some(version) == active {
            "the active model"
        } else {
            interrupted = true;
            "an interrupted build"
        };
        let checkpoint = assert_exact(&model, &log, &format!("round {round}: {role} ({version})"));
        eprintln!(
            "round {round}: {role} v{version} exact at {checkpoint} of {}",
            log.len()
        );
    }
    store.close().await;
    interrupted
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn counters_are_exact_after_kills_during_live_projection_and_rebuilds() {
    let mut random = Random::seeded("crash");
    let dir = tempfile::tempdir().unwrap();
    let mut version = 1;
    let mut interrupted_rebuilds = 0;
    // Some history first, so that rebuilds take a while.
    run_and_kill(dir.path(), version, "live", Duration::from_millis(3_000));
    for round in 0..ROUNDS {
        let mode = if round % 2 == 0 { "rebuild" } else { "live" };
        if mode == "rebuild" {
            version += 1;
        }
        // A rebuild starts at once and takes a few hundred milliseconds: kill early.
        let delay = match mode {
            "rebuild" => Duration::from_millis(20 + random.below(200)),
            _ => Duration::from_millis(50 + random.below(500)),
        };
        let dir_path = dir.path().to_path_buf();
        tokio::task::spawn_blocking(move || run_and_kill(&dir_path, version, mode, delay))
            .await
            .unwrap();
        if check_models(dir.path(), round).await && mode == "rebuild" {
            interrupted_rebuilds += 1;
        }
    }
    assert!(
        interrupted_rebuilds > 0,
        "no kill landed during a rebuild: the test did not test that"
    );

    // Restart: the child catches up (finishing any interrupted rebuild) and stops cleanly.
    let mut settling = child(dir.path(), version, "settle");
    assert_eq!(first_line(&mut settling), "settled");
    let status = settling.wait().expect("wait for the settling child");
    assert!(status.success(), "the settling child failed ({status})");
    let store = open(dir.path());
    let log = read_log(&store);
    let models = store.read_models().unwrap();
    let active = models
        .active_version(tally::NAME)
        .unwrap()
        .expect("an active model");
    assert_eq!(active / 1000, version);
    assert_eq!(
        models.stored_models().len(),
        1,
        "only the active model is left"
    );
    let model = models.model(tally::NAME, active).unwrap();
    let checkpoint = assert_exact(&model, &log, "after the restart");
    assert_eq!(
        checkpoint,
        Position(log.len() as u64),
        "caught up with the whole log"
    );
    store.close().await;
}
