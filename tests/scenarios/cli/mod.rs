//! The `annals` command line from outside: one module per command, each running the real
//! binary on real data directories (and, in `server`, through a real `annals serve`).

mod bench;
mod cluster;
mod errors;
mod export;
mod inspect;
mod keys;
mod repair;
mod replay;
mod server;
mod verify;

use crate::support::{annals, stdout};

#[test]
fn help_lists_every_command_with_a_summary() {
    let temp = tempfile::tempdir().unwrap();
    let output = annals(&["--help"], temp.path());
    assert!(output.status.success());
    let help = stdout(&output);
    for command in [
        "serve",
        "inspect",
        "replay",
        "export",
        "import",
        "verify",
        "projections",
        "restore",
        "audit",
        "repair",
        "bench",
    ] {
        assert!(help.contains(command), "--help lacks {command}:\n{help}");
    }
    assert!(help.contains("Exit codes"));
    assert!(help.contains("7 not found"), "{help}");
    assert!(
        help.contains("annals replay stream order-42 --as-of"),
        "{help}"
    );
    for (command, summary) in [
        (&["inspect", "--help"][..], "tail"),
        (&["replay", "--help"][..], "all"),
        (&["replay", "stream", "--help"][..], "Examples:"),
        (&["export", "--help"][..], "docs/EXPORT.md"),
    ] {
        let output = annals(command, temp.path());
        assert!(output.status.success());
        assert!(
            stdout(&output).contains(summary),
            "{command:?}: {}",
            stdout(&output)
        );
    }
}

#[test]
fn bad_usage_exits_2() {
    let temp = tempfile::tempdir().unwrap();
    let output = annals(&["bench", "append", "--writers", "lots"], temp.path());
    assert_eq!(output.status.code(), Some(2));
}
