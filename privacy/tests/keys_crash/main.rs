//! `kill -9` during creations and erasures leaves every key whole or gone, never half.
//!
//! A test binary of its own: its children, forked while another test's store is open,
//! would hold that store's lock for a moment.
//!
//! The test binary runs itself again as the child (`child`, which does nothing
//! unless `KEYS_CRASH_DIR` is set): it creates keys for subjects packed into a few
//! buckets (so that every write rewrites a bucket full of other subjects' keys), seals a
//! known value per subject, and erases earlier subjects, printing each step once the
//! store acknowledged it. The parent kills it with SIGKILL at a random moment, reopens
//! the store and checks it against what was acknowledged; many rounds on one store.

use std::collections::{HashMap, HashSet};
use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use privacy::{Binding, KeyStore, MasterKey, Sealed, Unreadable};

/// The bucket of `subject` (as the store computes it).
fn bucket_of(subject: &str) -> u8 {
    blake3::derive_key("annals key store bucket v1", subject.as_bytes())[0]
}

fn binding_for(subject: &str) -> (String, uuid::Uuid) {
    (
        format!("customer-{subject}"),
        uuid::Uuid::new_v5(&uuid::Uuid::NAMESPACE_OID, subject.as_bytes()),
    )
}

fn seal(store: &KeyStore, subject: &str, value: &str) -> Sealed {
    let key = store.create_key(subject).unwrap();
    let (stream, event_id) = binding_for(subject);
    let at = Binding {
        stream: &stream,
        event_id,
        field: "name",
    };
    store.seal(key, &at, value).unwrap()
}

fn open(store: &KeyStore, subject: &str, sealed: &Sealed) -> Result<String, Unreadable> {
    let (stream, event_id) = binding_for(subject);
    let at = Binding {
        stream: &stream,
        event_id,
        field: "name",
    };
    store.open_sealed(sealed, &at)
}

const DIR_ENV: &str = "KEYS_CRASH_DIR";
const ROUND_ENV: &str = "KEYS_CRASH_ROUND";
const SEED_ENV: &str = "KEYS_CRASH_SEED";
/// Subjects go to these buckets only.
const BUCKETS: [u8; 3] = [0x11, 0x7f, 0xe0];

/// xorshift64*: enough randomness for a test, reproducible from its seed.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
}

/// The `n`th subject of `round` that falls in one of [`BUCKETS`].
fn subjects(round: u64) -> impl Iterator<Item = String> {
    (0u64..)
        .map(move |i| format!("r{round}-s{i}"))
        .filter(|subject| BUCKETS.contains(&bucket_of(subject)))
}

fn value_of(subject: &str) -> String {
    format!("the name of {subject}")
}

/// The child: runs until killed (or for a bounded number of steps).
#[test]
fn child() {
    let Ok(dir) = std::env::var(DIR_ENV) else {
        return;
    };
    let round: u64 = std::env::var(ROUND_ENV).unwrap().parse().unwrap();
    let seed: u64 = std::env::var(SEED_ENV).unwrap().parse().unwrap();
    let master = MasterKey::from_hex(&std::env::var(privacy::MASTER_KEY_ENV).unwrap()).unwrap();
    let store = KeyStore::open(Path::new(&dir), master).unwrap();
    let mut rng = Rng(seed | 1);
    let mut out = std::io::stdout().lock();
    let mut created: Vec<String> = Vec::new();
    for subject in subjects(round).take(2000) {
        let key = store.create_key(&subject).unwrap();
        writeln!(out, "CREATED {subject} {key}").unwrap();
        out.flush().unwrap();
        let sealed = seal(&store, &subject, &value_of(&subject));
        writeln!(
            out,
            "SEALED {subject} {}",
            serde_json::to_string(&sealed).unwrap()
        )
        .unwrap();
        out.flush().unwrap();
        created.push(subject);
        if rng.below(2) == 0 {
            let victim = created[rng.below(created.len() as u64) as usize].clone();
            writeln!(out, "ERASING {victim}").unwrap();
            out.flush().unwrap();
            store.erase(&victim).unwrap();
            writeln!(out, "ERASED {victim}").unwrap();
            out.flush().unwrap();
        }
    }
}

/// What the children acknowledged, over every round.
#[derive(Default)]
struct Acknowledged {
    created: HashMap<String, privacy::KeyId>,
    sealed: HashMap<String, Sealed>,
    erased: HashSet<String>,
    /// Erasures begun and not acknowledged (one per round at most): they may or may not
    /// have happened.
    in_flight: HashSet<String>,
}

impl Acknowledged {
    fn read(&mut self, line: &str) {
        let mut words = line.splitn(3, ' ');
        let (Some(what), Some(subject)) = (words.next(), words.next()) else {
            return;
        };
        let subject = subject.to_owned();
        match what {
            "CREATED" => {
                let key = uuid::Uuid::parse_str(words.next().unwrap()).unwrap();
                self.created.insert(subject, privacy::KeyId(key));
            }
            "SEALED" => {
                let sealed = serde_json::from_str(words.next().unwrap()).unwrap();
                self.sealed.insert(subject, sealed);
            }
            "ERASING" => {
                self.in_flight.insert(subject);
            }
            "ERASED" => {
                self.in_flight.remove(&subject);
                self.erased.insert(subject);
            }
            _ => {}
        }
    }
}

/// Runs one child on `dir` and kills it `kill_after` after its first acknowledged step
/// (or, for `None`, `early` after its start, perhaps while it opens the store); returns
/// its lines.
fn run_child(
    dir: &Path,
    master: &MasterKey,
    round: u64,
    seed: u64,
    kill_after: Option<Duration>,
    early: Duration,
) -> Vec<String> {
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args(["child", "--exact", "--nocapture", "--test-threads=1", "-q"])
        .env(DIR_ENV, dir)
        .env(ROUND_ENV, round.to_string())
        .env(SEED_ENV, seed.to_string())
        .env(privacy::MASTER_KEY_ENV, master.to_hex())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let (sender, lines) = std::sync::mpsc::channel();
    let reader = std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if sender.send(line).is_err() {
                break;
            }
        }
    });
    let mut seen = Vec::new();
    match kill_after {
        Some(after) => {
            // The first step: the store is open and working.
            if let Ok(line) = lines.recv_timeout(Duration::from_secs(10)) {
                seen.push(line);
            }
            std::thread::sleep(after);
        }
        None => std::thread::sleep(early),
    }
    // SIGKILL: no destructor, no flush, as `kill -9`.
    let _ = child.kill();
    let status = child.wait().unwrap();
    reader.join().unwrap();
    seen.extend(lines.try_iter());
    assert!(
        !status.success(),
        "round {round}: the child ended by itself before being killed ({} lines)",
        seen.len()
    );
    seen
}

/// Opens the store and checks it against what was acknowledged.
fn check(dir: &Path, master: &MasterKey, acked: &Acknowledged, context: &str) {
    let store = KeyStore::open(dir, master.clone())
        .unwrap_or_else(|error| panic!("{context}: the store does not open: {error}"));
    for (subject, key) in &acked.created {
        let keys = store.keys_of(subject);
        assert!(
            keys.iter().any(|info| info.key_id == *key),
            "{context}: the acknowledged key of {subject} is gone"
        );
        assert_eq!(keys.len(), 1, "{context}: {subject} has one key");
    }
    for subject in &acked.erased {
        for info in store.keys_of(subject) {
            assert!(
                info.destroyed_at.is_some(),
                "{context}: {subject} was erased (acknowledged) but its key is active"
            );
        }
    }
    for (subject, sealed) in &acked.sealed {
        match open(&store, subject, sealed) {
            Ok(value) => {
                assert_eq!(value, value_of(subject), "{context}: {subject}");
                assert!(
                    !acked.erased.contains(subject),
                    "{context}: {subject} opens after its erasure"
                );
            }
            Err(Unreadable::Erased { .. }) => assert!(
                acked.erased.contains(subject) || acked.in_flight.contains(subject),
                "{context}: {subject} is erased though no erasure of it began"
            ),
            Err(other) => panic!("{context}: {subject}'s value: {other:?} (half a key?)"),
        }
    }
    let status = store.status();
    assert!(status.bucket_files <= BUCKETS.len(), "{status:?}");
}

/// `rounds` kills on one store; how many creations and erasures were acknowledged.
fn rounds(seed: u64, rounds: u64) -> (usize, usize) {
    let dir = tempfile::tempdir().unwrap();
    let master = MasterKey::generate().unwrap();
    let mut rng = Rng(seed | 1);
    let mut acked = Acknowledged::default();
    for round in 0..rounds {
        // Mostly while it works; one round in five perhaps while it starts.
        let (kill_after, early) = if rng.below(5) == 0 {
            (None, Duration::from_micros(rng.below(8_000)))
        } else {
            (
                Some(Duration::from_micros(rng.below(150_000))),
                Duration::ZERO,
            )
        };
        let lines = run_child(dir.path(), &master, round, rng.next(), kill_after, early);
        for line in &lines {
            acked.read(line);
        }
        check(
            dir.path(),
            &master,
            &acked,
            &format!(
                "seed {seed} round {round} (killed after {kill_after:?} / {early:?}, {} lines)",
                lines.len()
            ),
        );
    }
    (acked.created.len(), acked.erased.len())
}

#[test]
fn kill_9_during_erasures_leaves_every_key_whole_or_gone() {
    let started = Instant::now();
    let (mut created, mut erased) = rounds(0x5eed_0019, 30);
    // A few seeds of this run's own, printed so that a failure can be replayed.
    let mut random = [0u8; 8];
    getrandom::fill(&mut random).unwrap();
    for offset in 0..3 {
        let seed = u64::from_le_bytes(random).wrapping_add(offset);
        eprintln!("kill -9 rounds with seed {seed}");
        let (c, e) = rounds(seed, 10);
        created += c;
        erased += e;
    }
    assert!(
        created > 60 && erased > 20,
        "the children did too little to test anything: {created} created, {erased} erased"
    );
    eprintln!(
        "kill -9 rounds took {:?}: {created} creations and {erased} erasures acknowledged",
        started.elapsed()
    );
}
