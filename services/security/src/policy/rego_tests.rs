//! A runner for policy tests written in Rego, OPA style.
//!
//! A test file is a `*_test.rego` module whose `test_*` rules must each be true, usually
//! with `with input as {...}`. [`run_dir`] loads every `.rego` file of a directory (the
//! policy and its tests), finds every `test_*` rule of every test file and evaluates it;
//! a rule that is false, undefined or fails is a failing test. `cargo test -p security`
//! runs it over `policy/`.

use std::path::{Path, PathBuf};

use regorus::{Engine, Value};

/// The outcome of one `test_*` rule.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RegoTest {
    /// The rule's full path, e.g. `data.annals_test.test_admin_may_do_everything`.
    pub rule: String,
    /// The file that defines it.
    pub file: PathBuf,
    /// `None` when it passed; otherwise what it evaluated to, or its error.
    pub failure: Option<String>,
}

/// Why the tests could not be run at all.
#[derive(Debug, thiserror::Error)]
pub enum RegoTestError {
    /// The directory or a file in it could not be read.
    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// A module does not parse; the message names the file and line.
    #[error("{message}")]
    Parse { message: String },
    /// A test file has no `package` line.
    #[error("{path} has no package line")]
    NoPackage { path: PathBuf },
}

/// Run every `test_*` rule of every `*_test.rego` file in `dir`, with every `.rego`
/// file of `dir` loaded. The outcomes come in file order, then rule order.
pub fn run_dir(dir: &Path) -> Result<Vec<RegoTest>, RegoTestError> {
    let read_error = |path: &Path| {
        let path = path.to_owned();
        move |source| RegoTestError::Read { path, source }
    };
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .map_err(read_error(dir))?
        .filter_map(|entry| entry.ok().map(|entry| entry.path()))
        .filter(|path| {
            path.extension()
                .is_some_and(|extension| extension == "rego")
        })
        .collect();
    files.sort();

    let mut engine = Engine::new();
    let mut tests = Vec::new();
    for file in &files {
        let text = std::fs::read_to_string(file).map_err(read_error(file))?;
        engine
            .add_policy(file.display().to_string(), text.clone())
            .map_err(|error| RegoTestError::Parse {
                message: format!("{error:#}"),
            })?;
        let is_test_file = file
            .file_name()
            .and_then(|name| name.to_str())
            .is_some_and(|name| name.ends_with("_test.rego"));
        if is_test_file {
            let package =
                package_of(&text).ok_or_else(|| RegoTestError::NoPackage { path: file.clone() })?;
            for name in test_rules(&text) {
                tests.push((format!("data.{package}.{name}"), file.clone()));
            }
        }
    }

    Ok(tests
        .into_iter()
        .map(|(rule, file)| {
            let failure = match engine.eval_rule(rule.clone()) {
                Ok(Value::Bool(true)) => None,
                Ok(Value::Undefined) => Some("undefined (a condition failed)".to_owned()),
                Ok(other) => Some(format!("evaluated to {other}")),
                Err(error) => Some(format!("failed: {error:#}")),
            };
            RegoTest {
                rule,
                file,
                failure,
            }
        })
        .collect())
}

/// The package a module declares, from its `package` line.
fn package_of(text: &str) -> Option<String> {
    text.lines().find_map(|line| {
        let rest = line.trim().strip_prefix("package ")?;
        Some(rest.trim().to_owned())
    })
}

/// The names of the `test_*` rules a module defines at the start of a line, each once.
fn test_rules(text: &str) -> Vec<String> {
    let mut names: Vec<String> = Vec::new();
    for line in text.lines() {
        if !line.starts_with("test_") {
            continue;
        }
        let name: String = line
            .chars()
            .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
            .collect();
        if !names.contains(&name) {
            names.push(name);
        }
    }
    names
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_test_rules_and_package() {
        let text = "package a.b_test\n\nimport rego.v1\n\ntest_one if { true }\n\
                    helper := 1\n  test_indented if { true }\ntest_two if {\n}\ntest_one if { false }\n";
        assert_eq!(package_of(text).as_deref(), Some("a.b_test"));
        assert_eq!(test_rules(text), vec!["test_one", "test_two"]);
    }
}
