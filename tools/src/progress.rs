//! Progress bars for long work, on stderr, hidden when stderr is not a terminal.

use indicatif::{ProgressBar, ProgressStyle};

/// A bar counting `unit`s up to `total`, with rate and ETA.
pub fn bar(total: u64, unit: &str) -> ProgressBar {
    let bar = ProgressBar::new(total);
    let template = format!(
        "{{spinner}} {{msg}} [{{bar:30}}] {{human_pos}}/{{human_len}} {unit} ({{per_sec}}, ETA {{eta}})"
    );
    bar.set_style(
        ProgressStyle::with_template(&template)
            .expect("a valid template")
            .progress_chars("=> "),
    );
    bar
}

/// A bar counting bytes up to `total` (set later with `set_length` if unknown), with
/// rate and ETA.
pub fn bytes_bar() -> ProgressBar {
    let bar = ProgressBar::new(0);
    bar.set_style(
        ProgressStyle::with_template(
            "{spinner} {msg} [{bar:30}] {bytes}/{total_bytes} ({bytes_per_sec}, ETA {eta})",
        )
        .expect("a valid template")
        .progress_chars("=> "),
    );
    bar
}

/// A counter of `unit`s for work whose total is not known, with its rate.
pub fn counter(unit: &str) -> ProgressBar {
    let bar = ProgressBar::new_spinner();
    let template = format!("{{spinner}} {{msg}}: {{human_pos}} {unit} ({{per_sec}})");
    bar.set_style(ProgressStyle::with_template(&template).expect("a valid template"));
    bar
}
