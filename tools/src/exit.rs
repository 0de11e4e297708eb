//! Exit codes that scripts can rely on, and the one line an error prints.
//!
//! Errors of the store and the outbox are mapped by their type; the command line's own
//! refusals are a [`Failure`], whose variant picks the code. Every error prints as one
//! line (`error: ` and its causes joined by `: `), never a panic or a backtrace.

use std::process::ExitCode;

use eventstore::Error;

/// Something unexpected; the message says what.
pub const UNEXPECTED: u8 = 1;
/// Bad usage: a malformed argument (a timestamp, an event id, a stream id), an unknown
/// stream category, a destination that is not empty. clap's own usage errors exit 2 too.
pub const USAGE: u8 = 2;
/// The data directory does not exist, or is not an Annals data directory (no `log/`).
pub const MISSING_DATA_DIR: u8 = 3;
/// Another process holds the data directory.
pub const LOCKED: u8 = 4;
/// The log is damaged, or verification found a bad record (or audit a divergence, repair
/// a copy that does not fit the damage, or an import a damaged export file).
pub const CORRUPT: u8 = 5;
/// NATS could not be reached or is not set up for the outbox (no JetStream, a missing or
/// incompatible stream).
pub const NATS: u8 = 6;
/// What was asked for does not exist: a stream with no events, an unknown event id, a
/// version beyond a stream's head.
pub const NOT_FOUND: u8 = 7;
/// The server given with `--server` could not be reached or answered with an error
/// (a refused token, 401, and a policy denial, 403, among them).
pub const SERVER: u8 = 8;
/// `annals chaos run`: an error budget remaining is below the experiment's threshold,
/// so it did not start.
pub const BUDGET_EXHAUSTED: u8 = 9;
/// `annals chaos run`: the steady state did not hold before any fault, so it did not
/// start.
pub const NOT_STEADY: u8 = 10;
/// `annals chaos run`: the experiment ran and refuted its hypothesis (the steady state
/// broke, or did not come back in time), or it stopped early.
pub const EXPERIMENT_FAILED: u8 = 11;
/// `annals serve`: the store's writer failed (a write or an `fdatasync` of the log
/// failed), and the server stopped so that its supervisor restarts it: only a fresh
/// process reopens the store. Check the disk, then start it again. 75 is `EX_TEMPFAIL`
/// of sysexits.h: a temporary failure, worth a retry.
pub const STORE_FAILED: u8 = 75;

/// The exit codes, as `annals --help` and the README list them.
pub const SUMMARY: &str = "\
Exit codes: 0 ok, 1 unexpected error, 2 bad usage (a malformed argument such as a
timestamp, an unknown stream category, a non-empty import destination), 3 data directory
missing or not an Annals data directory, 4 data directory locked by another process
(a server: stop it, or use --server URL), 5 corrupt log, failed verification, audit,
refused repair or damaged export file, 6 NATS unreachable or not set up for the outbox, 7 not found
(stream, event, version), 8 the --server could not be reached or answered an error
(401: a missing or refused token, 403: denied by its policy), 9 (chaos run) an error
budget below the experiment's threshold, 10 (chaos run) no steady state before the
faults, 11 (chaos run) the steady state did not hold or did not heal,
75 (serve) the store failed to write or sync its log: the server stopped to be restarted.";

/// A refusal of the command line itself; the variant is the exit code.
#[derive(Debug)]
pub enum Failure {
    /// Bad usage (exit 2).
    Usage(String),
    /// Not an Annals data directory (exit 3).
    NotADataDir(String),
    /// Damaged input (exit 5).
    Corrupt(String),
    /// Not found (exit 7).
    NotFound(String),
    /// The `--server` failed (exit 8).
    Server(String),
    /// The `--server` refused the token, or got none (401; exit 8): pass a valid one.
    Unauthenticated(String),
    /// The `--server`'s policy denies the request to the token's principal (403; exit
    /// 8): use a token with another role, or ask for the permission.
    Forbidden(String),
    /// The store's writer failed; the process must be restarted (exit 75).
    StoreFailed(String),
    /// A chaos experiment did not start: an error budget is too low (exit 9).
    BudgetExhausted(String),
    /// A chaos experiment did not start: no steady state (exit 10).
    NotSteady(String),
    /// A chaos experiment refuted its hypothesis (exit 11).
    ExperimentFailed(String),
}

impl std::fmt::Display for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Failure::Usage(message)
            | Failure::NotADataDir(message)
            | Failure::Corrupt(message)
            | Failure::NotFound(message)
            | Failure::Server(message)
            | Failure::Unauthenticated(message)
            | Failure::Forbidden(message)
            | Failure::StoreFailed(message)
            | Failure::BudgetExhausted(message)
            | Failure::NotSteady(message)
            | Failure::ExperimentFailed(message) => f.write_str(message),
        }
    }
}

impl std::error::Error for Failure {}

impl Failure {
    fn code(&self) -> u8 {
        match self {
            Failure::Usage(_) => USAGE,
            Failure::NotADataDir(_) => MISSING_DATA_DIR,
            Failure::Corrupt(_) => CORRUPT,
            Failure::NotFound(_) => NOT_FOUND,
            Failure::Server(_) | Failure::Unauthenticated(_) | Failure::Forbidden(_) => SERVER,
            Failure::StoreFailed(_) => STORE_FAILED,
            Failure::BudgetExhausted(_) => BUDGET_EXHAUSTED,
            Failure::NotSteady(_) => NOT_STEADY,
            Failure::ExperimentFailed(_) => EXPERIMENT_FAILED,
        }
    }
}

/// What to do about a locked data directory, appended to its message.
const LOCKED_HINT: &str = "the read-only commands (inspect, replay stream) can go through \
     the running server instead: pass --server URL (e.g. --server http://127.0.0.1:8080)";

/// Prints `error` as one line (with its causes) and picks the exit code.
pub fn report(error: &anyhow::Error) -> ExitCode {
    let failure = error
        .chain()
        .find_map(|cause| cause.downcast_ref::<Failure>());
    let store_error = error
        .chain()
        .find_map(|cause| cause.downcast_ref::<Error>());
    let outbox_error = error
        .chain()
        .find_map(|cause| cause.downcast_ref::<outbox::Error>());
    let key_store_error = error
        .chain()
        .find_map(|cause| cause.downcast_ref::<privacy::Error>());
    let code = match (failure, outbox_error, store_error, key_store_error) {
        (Some(failure), _, _, _) => failure.code(),
        (None, Some(outbox_error), _, _) => outbox_code(outbox_error),
        (None, None, Some(store_error), _) => store_code(store_error),
        (None, None, None, Some(key_store_error)) => key_store_code(key_store_error),
        (None, None, None, None) => UNEXPECTED,
    };
    let message: Vec<String> = error.chain().map(ToString::to_string).collect();
    let mut line = message.join(": ");
    if code == LOCKED && key_store_error.is_none() {
        line.push_str("; ");
        line.push_str(LOCKED_HINT);
    }
    // One line, whatever the causes hold.
    let line = line.replace(['\n', '\r'], " ");
    eprintln!("error: {line}");
    ExitCode::from(code)
}

fn store_code(error: &Error) -> u8 {
    match error {
        Error::MissingDataDir(_) => MISSING_DATA_DIR,
        Error::Locked { .. } => LOCKED,
        Error::Corrupt { .. } => CORRUPT,
        Error::RestartRequired { .. } => STORE_FAILED,
        Error::InvalidStreamId { .. } | Error::InvalidEventId { .. } => USAGE,
        _ => UNEXPECTED,
    }
}

/// The key store's errors: held by a server (4), damaged (5), a wrong or unreadable
/// master key, or keys exported under another one (2: the operator gives the right key).
fn key_store_code(error: &privacy::Error) -> u8 {
    use privacy::Error as Keys;
    match error {
        Keys::Locked { .. } => LOCKED,
        Keys::Corrupt { .. } => CORRUPT,
        Keys::WrongMasterKey { .. }
        | Keys::BadMasterKey { .. }
        | Keys::MasterKeyFile { .. }
        | Keys::ExportedUnderOtherMaster { .. } => USAGE,
        _ => UNEXPECTED,
    }
}

fn outbox_code(error: &outbox::Error) -> u8 {
    use outbox::Error as Outbox;
    match error {
        Outbox::Store(inner) => store_code(inner),
        Outbox::CopyDiverged { .. }
        | Outbox::NotContiguous { .. }
        | Outbox::ChainBroken { .. }
        | Outbox::ExpectedHeadNotMet { .. }
        | Outbox::MalformedMessage { .. } => CORRUPT,
        Outbox::StoreClosed => UNEXPECTED,
        _ => NATS,
    }
}
