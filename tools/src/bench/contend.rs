//! `annals bench contend`: writers racing on one stream with exact expected versions;
//! commits/s, conflicts/s, and a check that no version was assigned twice.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::bail;
use eventstore::{Direction, ExpectedVersion, NewEvent, StreamId, Version};
use serde::Serialize;

use super::BenchDir;

#[derive(Debug, clap::Args)]
pub struct ContendArgs {
    /// Writers racing on the one stream.
    #[arg(long, default_value_t = 8)]
    writers: usize,
    /// Seconds to run.
    #[arg(long, default_value_t = 5.0)]
    duration: f64,
    /// Data directory (default: a fresh temporary directory, removed afterwards).
    #[arg(long)]
    data_dir: Option<PathBuf>,
    /// Print one JSON object instead of text.
    #[arg(long)]
    json: bool,
}

#[derive(Debug, Serialize)]
struct ContendReport {
    bench: &'static str,
    writers: usize,
    seconds: f64,
    commits: u64,
    conflicts: u64,
    commits_per_second: f64,
    conflicts_per_second: f64,
    versions_unique_and_contiguous: bool,
}

pub(super) async fn run(args: ContendArgs) -> anyhow::Result<()> {
    let report = measure(&args).await?;
    let unique = report.versions_unique_and_contiguous;
    if args.json {
        println!("{}", serde_json::to_string(&report)?);
    } else {
        println!(
            "contend: {} writers on one stream for {:.1} s: {} commits ({:.0}/s), {} conflicts ({:.0}/s); versions unique and contiguous: {}",
            report.writers,
            report.seconds,
            report.commits,
            report.commits_per_second,
            report.conflicts,
            report.conflicts_per_second,
            if unique { "yes" } else { "NO" }
        );
    }
    if !unique {
        bail!("a version was assigned twice or skipped");
    }
    Ok(())
}

async fn measure(args: &ContendArgs) -> anyhow::Result<ContendReport> {
    let dir = BenchDir::new(args.data_dir.clone())?;
    let store = dir.open()?;
    let stream = StreamId::new("contended-1")?;
    // A data directory given with --data-dir may hold the stream from an earlier run:
    // this run's commits start after its head.
    let head_before = store.stream_head(&stream)?;
    let first_version = head_before.map_or(0, |head| head.0 + 1);
    let commits = Arc::new(AtomicU64::new(0));
    let conflicts = Arc::new(AtomicU64::new(0));
    let deadline = Instant::now() + Duration::from_secs_f64(args.duration);
    let started = Instant::now();
    let mut tasks = Vec::new();
    for writer in 0..args.writers {
        let (store, stream) = (store.clone(), stream.clone());
        let (commits, conflicts) = (commits.clone(), conflicts.clone());
        tasks.push(tokio::spawn(async move {
            let mut believed: Option<Version> = head_before;
            let mut sequence = 0u64;
            while Instant::now() < deadline {
                let expected = believed.map_or(ExpectedVersion::NoStream, ExpectedVersion::Exact);
                let event = NewEvent::new("Claimed", format!("{writer}:{sequence}").into_bytes());
                match store.append(&stream, expected, vec![event]).await {
                    Ok(outcome) => {
                        believed = Some(outcome.last_version);
                        commits.fetch_add(1, Ordering::Relaxed);
                        sequence += 1;
                    }
                    Err(eventstore::Error::VersionConflict { actual, .. }) => {
                        believed = actual;
                        conflicts.fetch_add(1, Ordering::Relaxed);
                    }
                    Err(error) => return Err(anyhow::Error::from(error)),
                }
            }
            anyhow::Ok(())
        }));
    }
    for task in tasks {
        task.await??;
    }
    let seconds = started.elapsed().as_secs_f64();
    let (commits, conflicts) = (
        commits.load(Ordering::Relaxed),
        conflicts.load(Ordering::Relaxed),
    );
    // Read this run's part of the stream back: every version exactly once, one event
    // each, from the first this run could take to one before the head.
    let reader = store.clone();
    let events = tokio::task::spawn_blocking(move || {
        reader.read_stream(
            &stream,
            Version(first_version),
            Direction::Forward,
            usize::MAX,
        )
    })
    .await??;
    let unique = events.len() as u64 == commits
        && events
            .iter()
            .enumerate()
            .all(|(i, event)| event.version.0 == first_version + i as u64)
        && events
            .iter()
            .map(|event| &event.payload)
            .collect::<std::collections::HashSet<_>>()
            .len() as u64
            == commits;
    store.close().await;
    Ok(ContendReport {
        bench: "contend",
        writers: args.writers,
        seconds,
        commits,
        conflicts,
        commits_per_second: commits as f64 / seconds,
        conflicts_per_second: conflicts as f64 / seconds,
        versions_unique_and_contiguous: unique,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn checks_only_its_own_versions_on_a_reused_directory() {
        let temp = tempfile::tempdir().unwrap();
        let args = ContendArgs {
            writers: 4,
            duration: 0.2,
            data_dir: Some(temp.path().to_path_buf()),
            json: true,
        };
        for run in 0..2 {
            let report = measure(&args).await.unwrap();
            assert!(report.commits > 0, "run {run}");
            assert!(report.versions_unique_and_contiguous, "run {run}");
        }
    }
}
