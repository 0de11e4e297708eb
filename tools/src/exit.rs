//! Exit codes that scripts can rely on, and the one line an error prints.

use std::process::ExitCode;

use eventstore::Error;

/// Something unexpected; the message says what.
pub const UNEXPECTED: u8 = 1;
/// The data directory does not exist.
pub const MISSING_DATA_DIR: u8 = 3;
/// Another process holds the data directory.
pub const LOCKED: u8 = 4;
/// The log is damaged, or verification found a bad record (or audit a divergence).
pub const CORRUPT: u8 = 5;
/// NATS could not be reached or is not set up for the outbox (no JetStream, a missing or
/// incompatible stream).
pub const NATS: u8 = 6;

/// Prints `error` as one line (with its causes) and picks the exit code.
pub fn report(error: &anyhow::Error) -> ExitCode {
    let store_error = error
        .chain()
        .find_map(|cause| cause.downcast_ref::<Error>());
    let outbox_error = error
        .chain()
        .find_map(|cause| cause.downcast_ref::<outbox::Error>());
    let code = match (outbox_error, store_error) {
        (Some(outbox_error), _) => outbox_code(outbox_error),
        (None, Some(store_error)) => store_code(store_error),
        (None, None) => UNEXPECTED,
    };
    let message: Vec<String> = error.chain().map(ToString::to_string).collect();
    eprintln!("error: {}", message.join(": "));
    ExitCode::from(code)
}

fn store_code(error: &Error) -> u8 {
    match error {
        Error::MissingDataDir(_) => MISSING_DATA_DIR,
        Error::Locked { .. } => LOCKED,
        Error::Corrupt { .. } => CORRUPT,
        _ => UNEXPECTED,
    }
}

fn outbox_code(error: &outbox::Error) -> u8 {
    use outbox::Error as Outbox;
    match error {
        Outbox::Store(inner) => store_code(inner),
        Outbox::CopyDiverged { .. }
        | Outbox::NotContiguous { .. }
        | Outbox::MalformedMessage { .. } => CORRUPT,
        Outbox::StoreClosed => UNEXPECTED,
        _ => NATS,
    }
}
