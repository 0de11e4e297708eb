//! The spans of the write path: every append runs in an `append` span, in the caller's
//! trace, with what it wrote and where its time went; a repository counts its conflict
//! retries on the caller's command span.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use eventstore::{ExpectedVersion, Repository, StoreConfig};
use tempfile::TempDir;
use tracing::field::{Field, Visit};
use tracing::span::{Attributes, Id, Record};
use tracing_subscriber::layer::{Context, SubscriberExt};
use tracing_subscriber::registry::LookupSpan;
use uuid::Uuid;

use crate::common::{event, open, stream};
use crate::repository::{Counter, command, increment};

/// The fields of a span, as text.
type Fields = HashMap<String, String>;

/// A closed span: its id, name, parent's id and fields.
#[derive(Debug, Clone)]
struct Closed {
    id: u64,
    name: &'static str,
    parent: Option<u64>,
    fields: Fields,
}

/// Keeps every closed span.
#[derive(Clone, Default)]
struct Spans(Arc<Mutex<Vec<Closed>>>);

impl Spans {
    fn named(&self, name: &str) -> Vec<Closed> {
        let spans = self.0.lock().unwrap();
        spans
            .iter()
            .filter(|span| span.name == name)
            .cloned()
            .collect()
    }
}

struct Collect<'a>(&'a mut Fields);

impl Visit for Collect<'_> {
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        self.0.insert(field.name().to_owned(), format!("{value:?}"));
    }
}

impl<S: tracing::Subscriber + for<'a> LookupSpan<'a>> tracing_subscriber::Layer<S> for Spans {
    fn on_new_span(&self, attributes: &Attributes<'_>, id: &Id, context: Context<'_, S>) {
        let mut fields = Fields::new();
        attributes.record(&mut Collect(&mut fields));
        let span = context.span(id).unwrap();
        span.extensions_mut().insert(Mutex::new(fields));
    }

    fn on_record(&self, id: &Id, values: &Record<'_>, context: Context<'_, S>) {
        let span = context.span(id).unwrap();
        let extensions = span.extensions();
        let mut fields = extensions.get::<Mutex<Fields>>().unwrap().lock().unwrap();
        values.record(&mut Collect(&mut fields));
    }

    fn on_close(&self, id: Id, context: Context<'_, S>) {
        let span = context.span(&id).unwrap();
        let fields = span
            .extensions()
            .get::<Mutex<Fields>>()
            .unwrap()
            .lock()
            .unwrap()
            .clone();
        self.0.lock().unwrap().push(Closed {
            id: id.into_u64(),
            name: span.name(),
            parent: span.parent().map(|parent| parent.id().into_u64()),
            fields,
        });
    }
}

#[tokio::test(flavor = "current_thread")]
async fn an_append_span_records_events_bytes_queueing_and_fsync() {
    let spans = Spans::default();
    let subscriber = tracing_subscriber::registry().with(spans.clone());
    let _guard = tracing::subscriber::set_default(subscriber);
    let dir = TempDir::new().unwrap();
    let store = open(dir.path(), StoreConfig::default());
    let order = stream("order-1");
    let written = vec![event("a"), event("b")];
    let again = written.clone();
    let command = tracing::info_span!("command");
    let first = tracing::Instrument::instrument(
        store.append(&order, ExpectedVersion::NoStream, written),
        command.clone(),
    )
    .await
    .unwrap();
    let duplicate = tracing::Instrument::instrument(
        store.append(&order, ExpectedVersion::NoStream, again),
        command.clone(),
    )
    .await
    .unwrap();
    assert!(!first.duplicate && duplicate.duplicate);
    // Outside any span an append makes none: no one-span trace per bare append.
    drop(command);
    store
        .append(&order, ExpectedVersion::Any, vec![event("c")])
        .await
        .unwrap();

    let appends = spans.named("append");
    assert_eq!(
        appends.len(),
        2,
        "one span per append in a span: {appends:?}"
    );
    let command = &spans.named("command")[0];
    let fields = &appends[0].fields;
    assert_eq!(appends[0].parent, Some(command.id), "in the caller's span");
    assert_eq!(fields["events"], "2");
    assert!(
        !fields.contains_key("duplicate"),
        "recorded for a duplicate only"
    );
    let bytes: u64 = fields["bytes"].parse().unwrap();
    assert!(bytes > 2 * 32, "two records with their headers: {bytes}");
    let fsync: u64 = fields["fsync_us"].parse().unwrap();
    assert!(fsync > 0, "a written append waits for a real fdatasync");
    assert!(fields["queued_us"].parse::<u64>().is_ok());

    let fields = &appends[1].fields;
    assert_eq!(fields["duplicate"], "true");
    assert_eq!(fields["bytes"], "0", "a duplicate writes nothing");
    assert_eq!(fields["fsync_us"], "0", "and syncs nothing");
}

// One thread, so that the subscriber set for it sees every task; the tasks still race,
// interleaving while their appends wait for the writer thread.
#[tokio::test(flavor = "current_thread")]
async fn a_command_span_counts_its_conflict_retries() {
    const TASKS: u64 = 16;
    let spans = Spans::default();
    let subscriber = tracing_subscriber::registry().with(spans.clone());
    let _guard = tracing::subscriber::set_default(subscriber);
    let dir = TempDir::new().unwrap();
    let store = open(dir.path(), StoreConfig::default());
    // Racing commands on one stream, each through a repository of its own (so with a
    // queue of its own), until some of them meet conflicts.
    for round in 0..20 {
        let mut tasks = Vec::new();
        for by in 1..=TASKS {
            let counters =
                Repository::<Counter>::new(store.clone()).with_conflict_retries(TASKS as u32);
            tasks.push(tokio::spawn(async move {
                let span = tracing::info_span!("command", retries = 0u32);
                let id = format!("hot-{round}");
                tracing::Instrument::instrument(
                    async {
                        counters
                            .execute(&id, &increment(by), &command(Uuid::now_v7()))
                            .await
                    },
                    span,
                )
                .await
            }));
        }
        for task in tasks {
            task.await.unwrap().expect("every command commits");
        }
        let retried = spans
            .named("command")
            .iter()
            .any(|span| span.fields["retries"] != "0");
        if retried {
            break;
        }
    }
    // Each command appended once per attempt: its retries are its appends but one.
    let appends = spans.named("append");
    let mut retries = 0;
    for command in spans.named("command") {
        let attempts = appends
            .iter()
            .filter(|append| append.parent == Some(command.id))
            .count();
        let counted: usize = command.fields["retries"].parse().unwrap();
        assert_eq!(counted, attempts - 1, "{command:?}");
        retries += counted;
    }
    assert!(retries > 0, "no command met a conflict in 20 rounds");
}
