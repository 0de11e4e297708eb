//! `annals keys`: the key store of personal data (`<data-dir>/keys`, docs/PRIVACY.md):
//! its counts and master key fingerprints (`status`, which reads the files without the
//! lock, so it works beside a running server), and the rotation of its master key
//! (`rotate-master`, the server stopped).

use std::path::{Path, PathBuf};

use anyhow::Context;
use privacy::MasterKey;
use serde::Serialize;

use crate::exit::Failure;
use crate::progress;

#[derive(Debug, clap::Subcommand)]
pub enum KeysCommand {
    /// Count the key store's subjects, active and destroyed keys and bucket files, and
    /// show which master key wraps them. Works while the server runs.
    #[command(after_help = "\
Examples:
  annals keys status --data-dir ./annals-data
  annals keys status --data-dir ./annals-data --master-key-file /etc/annals/master.key
  annals keys status --json")]
    Status(StatusArgs),
    /// Rewrap every key of the key store under a new master key (the server stopped).
    #[command(after_help = "\
Example:
  annals keys rotate-master --data-dir ./annals-data \\
      --master-key-file /etc/annals/master.key --new-master-key-file /etc/annals/master.key.new

NEW is created (mode 0600) if it does not exist. Safe to run again after an interruption,
with the same two keys. Then start the server with the new key, take a backup
(`annals export --with-keys`), and destroy the old key.")]
    RotateMaster(RotateArgs),
}

/// The master key as `annals serve` takes it: a file, or the environment.
#[derive(Debug, Clone, clap::Args)]
pub struct MasterKeyArgs {
    /// The master key file (64 hex digits). `ANNALS_MASTER_KEY` (the 64 hex digits
    /// themselves) may stand in for it.
    #[arg(long, value_name = "FILE")]
    pub master_key_file: Option<PathBuf>,
}

impl MasterKeyArgs {
    /// The master key given, if any: the file, else `ANNALS_MASTER_KEY`.
    pub fn key(&self) -> anyhow::Result<Option<MasterKey>> {
        master_key(self.master_key_file.as_deref())
    }
}

/// The master key from `file`, else from `ANNALS_MASTER_KEY`; `None` if neither. The
/// file is never created here: a typo would make a key that opens nothing.
pub fn master_key(file: Option<&Path>) -> anyhow::Result<Option<MasterKey>> {
    let key = match file {
        Some(file) => MasterKey::from_file(file),
        None => match std::env::var(privacy::MASTER_KEY_ENV) {
            Ok(hex) => MasterKey::from_hex(&hex),
            Err(_) => return Ok(None),
        },
    };
    key.map(Some)
        .map_err(|error| Failure::Usage(error.to_string()).into())
}

#[derive(Debug, clap::Args)]
pub struct StatusArgs {
    /// The data directory (a running server may hold it).
    #[arg(
        long,
        env = "ANNALS_DATA_DIR",
        default_value = "./annals-data",
        value_name = "DIR"
    )]
    data_dir: PathBuf,
    #[command(flatten)]
    master: MasterKeyArgs,
    /// Print one JSON object.
    #[arg(long)]
    json: bool,
}

#[derive(Debug, clap::Args)]
pub struct RotateArgs {
    /// The data directory (not held by a running server).
    #[arg(
        long,
        env = "ANNALS_DATA_DIR",
        default_value = "./annals-data",
        value_name = "DIR"
    )]
    data_dir: PathBuf,
    /// The master key the store is wrapped by now.
    #[command(flatten)]
    master: MasterKeyArgs,
    /// The new master key's file; created (mode 0600) if it does not exist.
    #[arg(long, value_name = "FILE")]
    new_master_key_file: PathBuf,
    /// Draw no progress bar.
    #[arg(long)]
    no_progress: bool,
    /// Print the report as JSON.
    #[arg(long)]
    json: bool,
}

pub fn run(command: KeysCommand) -> anyhow::Result<()> {
    match command {
        KeysCommand::Status(args) => status(args),
        KeysCommand::RotateMaster(args) => rotate(args),
    }
}

/// What `keys status --json` prints.
#[derive(Debug, Serialize)]
struct StatusReport {
    dir: PathBuf,
    bucket_files: usize,
    subjects: usize,
    active_keys: usize,
    destroyed_keys: usize,
    erased_subjects: usize,
    /// Each master key fingerprint with the bucket files it wraps (more than one: a
    /// rotation was interrupted).
    master_fingerprints: Vec<Fingerprint>,
    /// The fingerprint of `--master-key-file` (or `ANNALS_MASTER_KEY`), if given.
    #[serde(skip_serializing_if = "Option::is_none")]
    given_fingerprint: Option<String>,
    /// Whether that key opens this key store; absent when no key was given.
    #[serde(skip_serializing_if = "Option::is_none")]
    master_key_opens: Option<bool>,
}

#[derive(Debug, Serialize)]
struct Fingerprint {
    fingerprint: String,
    bucket_files: usize,
}

fn status(args: StatusArgs) -> anyhow::Result<()> {
    crate::data_dir::check_existing(&args.data_dir)?;
    let given = args.master.key()?;
    let status = privacy::status(&args.data_dir).context("cannot read the key store")?;
    let opens = given.as_ref().map(|key| {
        let mine = key.fingerprint();
        status
            .master_fingerprints
            .iter()
            .all(|(fingerprint, _)| *fingerprint == mine)
    });
    let report = StatusReport {
        dir: status.dir.clone(),
        bucket_files: status.bucket_files,
        subjects: status.subjects,
        active_keys: status.active_keys,
        destroyed_keys: status.destroyed_keys,
        erased_subjects: status.erased_subjects,
        master_fingerprints: status
            .master_fingerprints
            .iter()
            .map(|(fingerprint, files)| Fingerprint {
                fingerprint: fingerprint.clone(),
                bucket_files: *files,
            })
            .collect(),
        given_fingerprint: given.as_ref().map(MasterKey::fingerprint),
        master_key_opens: opens,
    };
    if args.json {
        println!("{}", serde_json::to_string(&report)?);
    } else {
        println!("key store {}", report.dir.display());
        println!("  bucket files     {}", report.bucket_files);
        println!("  subjects         {}", report.subjects);
        println!("  active keys      {}", report.active_keys);
        println!("  destroyed keys   {}", report.destroyed_keys);
        println!("  erased subjects  {}", report.erased_subjects);
        if report.master_fingerprints.is_empty() {
            println!("  master key       none yet (no bucket file)");
        }
        for fingerprint in &report.master_fingerprints {
            println!(
                "  master key       {} ({} bucket files)",
                fingerprint.fingerprint, fingerprint.bucket_files
            );
        }
        if report.master_fingerprints.len() > 1 {
            println!(
                "  a master key rotation was interrupted: run `annals keys rotate-master` again with the same keys"
            );
        }
        if let (Some(fingerprint), Some(opens)) = (&report.given_fingerprint, opens) {
            if opens {
                println!("the master key given ({fingerprint}) opens this key store");
            } else {
                println!("the master key given ({fingerprint}) does NOT open this key store");
            }
        }
    }
    match opens {
        Some(false) => Err(Failure::Usage(format!(
            "the master key given ({}) does not open the key store {} (wrapped by {})",
            report.given_fingerprint.unwrap_or_default(),
            report.dir.display(),
            report
                .master_fingerprints
                .iter()
                .map(|f| f.fingerprint.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        ))
        .into()),
        _ => Ok(()),
    }
}

fn locked(error: privacy::Error) -> anyhow::Error {
    anyhow::Error::new(error).context(
        "cannot rotate the master key while a server holds the key store: stop `annals serve`, run this again, then start the server with the new key",
    )
}

/// What `keys rotate-master --json` prints.
#[derive(Debug, Serialize)]
struct RotateReport {
    rewritten: usize,
    old_fingerprint: String,
    new_fingerprint: String,
    new_master_key_file: PathBuf,
    created: bool,
}

fn rotate(args: RotateArgs) -> anyhow::Result<()> {
    crate::data_dir::check_existing(&args.data_dir)?;
    let old = args.master.key()?.ok_or_else(|| {
        Failure::Usage(format!(
            "give the current master key: --master-key-file FILE or {}",
            privacy::MASTER_KEY_ENV
        ))
    })?;
    // A server holding the store: refused before a new key file is made for nothing.
    if let Err(error @ privacy::Error::Locked { .. }) =
        privacy::KeyStore::open(&args.data_dir, old.clone())
    {
        return Err(locked(error));
    }
    let (new, created) = MasterKey::from_file_or_create(&args.new_master_key_file)
        .map_err(|error| Failure::Usage(error.to_string()))?;
    if new.fingerprint() == old.fingerprint() {
        return Err(Failure::Usage(format!(
            "{} holds the current master key ({}): give a new key's file",
            args.new_master_key_file.display(),
            old.fingerprint()
        ))
        .into());
    }
    let bar = if args.no_progress || args.json {
        indicatif::ProgressBar::hidden()
    } else {
        let bar = progress::bar(0, "bucket files");
        bar.set_message("rewrapping");
        bar
    };
    let rotated =
        privacy::rotate_master_with_progress(&args.data_dir, &old, &new, &mut |done, total| {
            bar.set_length(total as u64);
            bar.set_position(done as u64);
        });
    bar.finish_and_clear();
    let rewritten = rotated.map_err(|error| match error {
        privacy::Error::Locked { .. } => locked(error),
        other => anyhow::Error::new(other).context("the master key rotation stopped"),
    })?;
    let report = RotateReport {
        rewritten,
        old_fingerprint: old.fingerprint(),
        new_fingerprint: new.fingerprint(),
        new_master_key_file: args.new_master_key_file.clone(),
        created,
    };
    if args.json {
        println!("{}", serde_json::to_string(&report)?);
    } else {
        if created {
            println!(
                "created the new master key {} (mode 0600)",
                args.new_master_key_file.display()
            );
        }
        println!(
            "rewrapped {rewritten} bucket files from master key {} to {}",
            report.old_fingerprint, report.new_fingerprint
        );
        println!(
            "next: start the server with --master-key-file {}; keep that key (and a copy apart from the data directory); take a backup with `annals export --with-keys`; then destroy the old key ({}), whose copies could open older backups of the key store",
            args.new_master_key_file.display(),
            report.old_fingerprint
        );
    }
    Ok(())
}
