//! [`Exposition`]: the text of one scrape in the Prometheus text format (version 0.0.4),
//! the recorder's rendering first, then families written at scrape time.

use std::fmt::Write;

/// One scrape's text. Families written here are gauges and counters read at scrape time;
/// each gets its `# HELP` and `# TYPE` lines once, then its samples.
#[derive(Debug)]
pub struct Exposition {
    text: String,
}

/// The kind of a family written at scrape time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// A value that goes up and down.
    Gauge,
    /// A value that only goes up (from the process's or the part's start).
    Counter,
}

impl Exposition {
    /// Starts from `rendered`, the recorder's text.
    pub(crate) fn new(mut rendered: String) -> Exposition {
        if !rendered.is_empty() && !rendered.ends_with('\n') {
            rendered.push('\n');
        }
        Exposition { text: rendered }
    }

    /// Starts the family `name`: its help and type lines. Write its samples next with
    /// [`Exposition::sample`]; a family is started once per scrape.
    pub fn family(&mut self, name: &str, kind: Kind, help: &str) {
        let kind = match kind {
            Kind::Gauge => "gauge",
            Kind::Counter => "counter",
        };
        let help = help.replace('\\', "\\\\").replace('\n', "\\n");
        let _ = writeln!(self.text, "# HELP {name} {help}");
        let _ = writeln!(self.text, "# TYPE {name} {kind}");
    }

    /// One sample of the family `name`, with its labels (values escaped here).
    pub fn sample(&mut self, name: &str, labels: &[(&str, &str)], value: f64) {
        self.text.push_str(name);
        if !labels.is_empty() {
            self.text.push('{');
            for (index, (label, value)) in labels.iter().enumerate() {
                if index > 0 {
                    self.text.push(',');
                }
                self.text.push_str(label);
                self.text.push_str("=\"");
                for character in value.chars() {
                    match character {
                        '\\' => self.text.push_str("\\\\"),
                        '"' => self.text.push_str("\\\""),
                        '\n' => self.text.push_str("\\n"),
                        other => self.text.push(other),
                    }
                }
                self.text.push('"');
            }
            self.text.push('}');
        }
        let _ = writeln!(self.text, " {}", format_value(value));
    }

    /// A family of one unlabelled sample.
    pub fn single(&mut self, name: &str, kind: Kind, help: &str, value: f64) {
        self.family(name, kind, help);
        self.sample(name, &[], value);
    }

    /// The text.
    pub(crate) fn finish(self) -> String {
        self.text
    }
}

/// A value as Prometheus writes it: integers without a fraction, `+Inf`, `-Inf`, `NaN`.
fn format_value(value: f64) -> String {
    if value.is_nan() {
        "NaN".to_owned()
    } else if value.is_infinite() {
        if value > 0.0 { "+Inf" } else { "-Inf" }.to_owned()
    } else if value.fract() == 0.0 && value.abs() < 1e15 {
        format!("{}", value as i64)
    } else {
        format!("{value}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn families_and_samples_are_written_in_the_text_format() {
        let mut exposition = Exposition::new("# TYPE a counter\na 1".to_owned());
        exposition.family("annals_x", Kind::Gauge, "An x.\nTwo lines.");
        exposition.sample("annals_x", &[("projection", "a\"b\\c\nd")], 2.0);
        exposition.sample("annals_x", &[], 0.25);
        exposition.single("annals_y", Kind::Counter, "A y.", f64::INFINITY);
        assert_eq!(
            exposition.finish(),
            "# TYPE a counter\na 1\n\
             # HELP annals_x An x.\\nTwo lines.\n\
             # TYPE annals_x gauge\n\
             annals_x{projection=\"a\\\"b\\\\c\\nd\"} 2\n\
             annals_x 0.25\n\
             # HELP annals_y A y.\n\
             # TYPE annals_y counter\n\
             annals_y +Inf\n"
        );
    }
}
