//! A plaintext scanner: where, if anywhere, a secret's bytes appear in a directory tree (a
//! data directory with its sled files and key store, a nats-server's JetStream store) or
//! in a blob (an export, a message), in any of the forms a careless writer could leave
//! it in: raw UTF-8, JSON-escaped (as `serde_json` writes it, and with every non-ASCII
//! character as `\uXXXX`), and base64 (standard and URL-safe alphabets, at each of the
//! three alignments it could have inside a longer base64 text).
//!
//! Every file is read as bytes: a binary file is scanned as well as a text one. A
//! finding names the file (or blob), the secret, the form and the offset, so that a
//! failing test says where the plaintext leaked.

use std::fmt;
use std::path::{Path, PathBuf};

use base64::Engine;
use base64::engine::general_purpose::{STANDARD_NO_PAD, URL_SAFE_NO_PAD};

/// A byte pattern that betrays `secret`, and the form it takes.
#[derive(Debug, Clone)]
pub struct Needle {
    /// The plaintext it stands for.
    pub secret: String,
    /// How it is written: `utf-8`, `json`, `json-ascii`, `base64+1`, ...
    pub form: String,
    /// The bytes looked for.
    pub bytes: Vec<u8>,
}

/// One place a needle was found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Finding {
    /// The file, or the name given to a scanned blob.
    pub place: String,
    /// The plaintext found.
    pub secret: String,
    /// The form it was found in.
    pub form: String,
    /// Where in the file (or blob) it starts.
    pub offset: usize,
}

impl fmt::Display for Finding {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{:?} ({}) at byte {} of {}",
            self.secret, self.form, self.offset, self.place
        )
    }
}

/// The needles of every form of every secret in `secrets`. Forms that come out the
/// same as another (the JSON escape of plain ASCII is the text itself) are kept once.
/// A base64 form shorter than 8 characters is left out: it would match by chance (and a
/// secret shorter than 6 bytes is refused, for the same reason).
pub fn needles(secrets: &[&str]) -> Vec<Needle> {
    let mut all: Vec<Needle> = Vec::new();
    for secret in secrets {
        assert!(
            secret.len() >= 6,
            "{secret:?} is too short to look for: it would match by chance"
        );
        let mut forms: Vec<(String, Vec<u8>)> = vec![("utf-8".into(), secret.as_bytes().into())];
        let json = serde_json::to_string(secret).expect("a string serializes");
        forms.push(("json".into(), json.as_bytes()[1..json.len() - 1].into()));
        forms.push(("json-ascii".into(), json_ascii(secret).into_bytes()));
        for (alphabet, engine) in [("base64", STANDARD_NO_PAD), ("base64url", URL_SAFE_NO_PAD)] {
            for shift in 0..3 {
                let text = base64_core(&engine, secret.as_bytes(), shift);
                if text.len() >= 8 {
                    forms.push((format!("{alphabet}+{shift}"), text.into_bytes()));
                }
            }
        }
        for (form, bytes) in forms {
            if !all
                .iter()
                .any(|needle| needle.secret == *secret && needle.bytes == bytes)
            {
                all.push(Needle {
                    secret: (*secret).to_owned(),
                    form,
                    bytes,
                });
            }
        }
    }
    all
}

/// `text` as a JSON string's content with every non-ASCII character escaped as
/// `\uXXXX` (UTF-16 code units), as some JSON writers do.
fn json_ascii(text: &str) -> String {
    let escaped = serde_json::to_string(text).expect("a string serializes");
    let mut out = String::new();
    for character in escaped[1..escaped.len() - 1].chars() {
        if character.is_ascii() {
            out.push(character);
        } else {
            let mut units = [0u16; 2];
            for unit in character.encode_utf16(&mut units) {
                out.push_str(&format!("\\u{unit:04x}"));
            }
        }
    }
    out
}

/// The base64 characters that depend on `bytes` alone when `bytes` starts `shift` bytes
/// (0, 1 or 2) into a longer base64-encoded text: the characters that mix in bits of the
/// bytes around it are cut off at both ends.
fn base64_core(engine: &impl Engine, bytes: &[u8], shift: usize) -> String {
    let mut padded = vec![0u8; shift];
    padded.extend_from_slice(bytes);
    let encoded = engine.encode(&padded);
    // Characters whose 6 bits come wholly from `bytes`: the first starts at bit
    // 8 * shift rounded up to a multiple of 6; the last ends at or before the last bit.
    let first = (8 * shift).div_ceil(6);
    let end = (8 * padded.len()) / 6;
    encoded[first..end].to_owned()
}

/// Every occurrence of any of `needles` in `bytes`, the blob named `place`.
pub fn scan_bytes(place: &str, bytes: &[u8], needles: &[Needle]) -> Vec<Finding> {
    let mut findings = Vec::new();
    for needle in needles {
        if needle.bytes.is_empty() {
            continue;
        }
        // memchr's searcher: the data directories scanned hold preallocated segments and
        // sled files of many megabytes, which a naive search in a debug build takes
        // minutes over.
        for at in memchr::memmem::find_iter(bytes, &needle.bytes) {
            findings.push(Finding {
                place: place.to_owned(),
                secret: needle.secret.clone(),
                form: needle.form.clone(),
                offset: at,
            });
        }
    }
    findings
}

/// What a directory scan went through: the findings, and how many files and bytes it
/// read (so a test can check that it scanned something at all).
#[derive(Debug, Default)]
pub struct Scan {
    /// Every needle found, with its file.
    pub findings: Vec<Finding>,
    /// The files read.
    pub files: Vec<PathBuf>,
    /// Their bytes, in all.
    pub bytes: u64,
}

impl Scan {
    /// Fails the test (naming every finding, `what` says what was scanned) if anything
    /// was found, or if nothing was read.
    pub fn assert_clean(&self, what: &str) {
        assert!(
            !self.files.is_empty() && self.bytes > 0,
            "{what}: the scan read no file"
        );
        assert!(
            self.findings.is_empty(),
            "{what}: plaintext found in {} place(s):\n{}",
            self.findings.len(),
            self.findings
                .iter()
                .map(|finding| format!("  {finding}"))
                .collect::<Vec<_>>()
                .join("\n")
        );
    }
}

/// Reads every regular file under `dir`, recursively (symbolic links are not followed),
/// and looks for `needles` in it. A file that disappears between listing and reading (a
/// running server renames its temporary files) is skipped; any other error fails.
pub fn scan_dir(dir: &Path, needles: &[Needle]) -> Scan {
    let mut scan = Scan::default();
    let mut pending = vec![dir.to_path_buf()];
    while let Some(current) = pending.pop() {
        let entries = match std::fs::read_dir(&current) {
            Ok(entries) => entries,
            Err(error) if error.kind() == std::io::ErrorKind::NotFound && current != dir => {
                continue;
            }
            Err(error) => panic!("cannot list {}: {error}", current.display()),
        };
        for entry in entries {
            let entry = entry.unwrap_or_else(|error| panic!("{}: {error}", current.display()));
            let path = entry.path();
            let Ok(kind) = entry.file_type() else {
                continue;
            };
            if kind.is_dir() {
                pending.push(path);
            } else if kind.is_file() {
                let bytes = match std::fs::read(&path) {
                    Ok(bytes) => bytes,
                    Err(error) if error.kind() == std::io::ErrorKind::NotFound => continue,
                    Err(error) => panic!("cannot read {}: {error}", path.display()),
                };
                scan.bytes += bytes.len() as u64;
                scan.findings
                    .extend(scan_bytes(&path.display().to_string(), &bytes, needles));
                scan.files.push(path);
            }
        }
    }
    scan
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECRET: &str = "Zebediah Quellwörth";

    fn found_forms(bytes: &[u8]) -> Vec<String> {
        scan_bytes("blob", bytes, &needles(&[SECRET]))
            .into_iter()
            .map(|finding| finding.form)
            .collect()
    }

    #[test]
    fn finds_the_raw_bytes_at_their_offset() {
        let blob = format!("xx{SECRET}yy");
        let findings = scan_bytes("blob", blob.as_bytes(), &needles(&[SECRET]));
        assert_eq!(findings.len(), 1, "{findings:?}");
        assert_eq!(findings[0].offset, 2);
        assert_eq!(findings[0].form, "utf-8");
    }

    #[test]
    fn finds_the_ascii_json_escape() {
        let escaped = serde_json::to_string(&serde_json::json!({ "name": SECRET }))
            .unwrap()
            .replace('ö', "\\u00f6");
        assert_eq!(found_forms(escaped.as_bytes()), ["json-ascii"]);
    }

    #[test]
    fn finds_base64_at_every_alignment_in_either_alphabet() {
        for prefix in ["", "a", "ab", "abc"] {
            for engine in [STANDARD_NO_PAD, URL_SAFE_NO_PAD] {
                let blob = engine.encode(format!("{prefix}{SECRET}, and more after it"));
                let forms = found_forms(blob.as_bytes());
                assert!(
                    forms.iter().any(|form| form.starts_with("base64")),
                    "prefix {prefix:?}: {blob} not found ({forms:?})"
                );
            }
        }
    }

    #[test]
    fn finds_nothing_in_other_text() {
        let blob = STANDARD_NO_PAD.encode("Zebediah Quellworth, almost");
        assert!(found_forms(blob.as_bytes()).is_empty());
        assert!(found_forms(b"Zebediah Quell").is_empty());
    }

    #[test]
    fn a_directory_scan_names_the_file_in_a_subdirectory() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("a/b")).unwrap();
        std::fs::write(dir.path().join("a/clean"), b"nothing here").unwrap();
        let mut binary = vec![0u8, 1, 2, 255];
        binary.extend_from_slice(SECRET.as_bytes());
        std::fs::write(dir.path().join("a/b/leaky"), &binary).unwrap();
        let scan = scan_dir(dir.path(), &needles(&[SECRET]));
        assert_eq!(scan.files.len(), 2);
        assert_eq!(scan.findings.len(), 1, "{:?}", scan.findings);
        assert!(scan.findings[0].place.ends_with("a/b/leaky"));
        assert_eq!(scan.findings[0].offset, 4);
        let failure = std::panic::catch_unwind(|| scan.assert_clean("the test dir"));
        let message = *failure.unwrap_err().downcast::<String>().unwrap();
        assert!(message.contains("a/b/leaky"), "{message}");
    }
}
