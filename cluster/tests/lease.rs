//! The singleton lease against a real nats-server: two nodes (two clients, two node ids)
//! campaign for one role; every test records when each node's worker acted and checks
//! that no two nodes ever acted at once, besides what it tests (takeover after a death,
//! a clean handover, a NATS outage, a conflicting write).

#[path = "lease/proxy.rs"]
mod proxy;

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use cluster::lease::{DEFAULT_BUCKET, Holder, LeaseConfig, Leases, Tenure};
use test_support::{NatsServer, within};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use proxy::CuttableProxy;

const ROLE: &str = "saga";

/// One stretch of a node's worker acting: from its first act to its last, each act made
/// right after `Tenure::is_held` said yes.
#[derive(Debug, Clone)]
struct Interval {
    node: String,
    start: Instant,
    end: Instant,
}

/// Every interval of every node, shared with the workers.
#[derive(Debug, Clone, Default)]
struct Acts {
    intervals: Arc<Mutex<Vec<Interval>>>,
}

impl Acts {
    /// The worker of `node`: acts every 5 ms while the tenure holds, recording each act.
    fn worker(
        &self,
        node: &str,
    ) -> impl FnMut(Tenure) -> std::pin::Pin<Box<dyn Future<Output = ()> + Send>> + use<> {
        let acts = self.clone();
        let node = node.to_owned();
        move |tenure: Tenure| {
            let acts = acts.clone();
            let node = node.clone();
            Box::pin(async move {
                let mut index = None;
                while tenure.is_held() {
                    let now = Instant::now();
                    {
                        let mut intervals = acts.intervals.lock().unwrap();
                        match index {
                            None => {
                                index = Some(intervals.len());
                                intervals.push(Interval {
                                    node: node.clone(),
                                    start: now,
                                    end: now,
                                });
                            }
                            Some(index) => intervals[index].end = now,
                        }
                    }
                    tokio::select! {
                        () = tenure.lost() => break,
                        () = tokio::time::sleep(Duration::from_millis(5)) => {}
                    }
                }
            })
        }
    }

    fn all(&self) -> Vec<Interval> {
        let mut intervals = self.intervals.lock().unwrap().clone();
        intervals.sort_by_key(|interval| interval.start);
        intervals
    }

    /// The node whose worker acted in the last 100 ms, if any.
    fn acting_now(&self) -> Option<String> {
        self.all()
            .into_iter()
            .rev()
            .find(|interval| interval.end.elapsed() < Duration::from_millis(100))
            .map(|interval| interval.node)
    }

    /// The first act of `node` after `after`.
    fn first_start_after(&self, node: &str, after: Instant) -> Option<Instant> {
        self.all()
            .into_iter()
            .find(|interval| interval.node == node && interval.start > after)
            .map(|interval| interval.start)
    }

    /// Fails unless every interval ends before the next one starts; returns the smallest
    /// gap between one node's last act and another node's first.
    fn assert_never_at_once(&self) -> Option<Duration> {
        let intervals = self.all();
        let mut smallest_gap: Option<Duration> = None;
        for pair in intervals.windows(2) {
            assert!(
                pair[0].end < pair[1].start,
                "{} acted until {:?} after {} started at {:?}: two nodes acted at once ({intervals:#?})",
                pair[0].node,
                pair[0].end,
                pair[1].node,
                pair[1].start
            );
            if pair[0].node != pair[1].node {
                let gap = pair[1].start - pair[0].end;
                smallest_gap = Some(smallest_gap.map_or(gap, |smallest| smallest.min(gap)));
            }
        }
        smallest_gap
    }
}

/// A client that reconnects every 100 ms (the default backs off to 4 s).
async fn connect(url: &str) -> async_nats::Client {
    async_nats::ConnectOptions::new()
        .reconnect_delay_callback(|_| Duration::from_millis(100))
        .connect(url)
        .await
        .expect("a connection to the test's nats-server")
}

async fn open(url: &str, node: &str, ttl: Duration) -> Leases {
    let client = connect(url).await;
    let config = LeaseConfig {
        ttl,
        http_address: Some(format!("http://{node}.test:8080")),
        ..LeaseConfig::new(node)
    };
    Leases::open(&async_nats::jetstream::new(client), config)
        .await
        .expect("the lease bucket")
}

/// A node campaigning for `ROLE` until its token is cancelled.
struct Node {
    shutdown: CancellationToken,
    task: JoinHandle<()>,
}

fn campaign(leases: &Leases, acts: &Acts, node: &str) -> Node {
    let shutdown = CancellationToken::new();
    let task = tokio::spawn({
        let leases = leases.clone();
        let shutdown = shutdown.clone();
        let worker = acts.worker(node);
        async move {
            leases
                .run_singleton(ROLE, shutdown, worker)
                .await
                .expect("a valid role");
        }
    });
    Node { shutdown, task }
}

impl Node {
    async fn stop(self) {
        self.shutdown.cancel();
        within("run_singleton's return on shutdown", self.task)
            .await
            .expect("run_singleton does not panic");
    }
}

/// Polls `condition` every 10 ms until it holds; fails naming `what` after `limit`.
async fn wait_until(limit: Duration, what: &str, mut condition: impl FnMut() -> bool) -> Instant {
    let started = Instant::now();
    loop {
        if condition() {
            return Instant::now();
        }
        assert!(
            started.elapsed() < limit,
            "{what} did not happen within {limit:?}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

fn server_address(server: &NatsServer) -> SocketAddr {
    server
        .url()
        .trim_start_matches("nats://")
        .parse()
        .expect("a loopback address")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_contenders_never_act_at_once_through_repeated_partitions() {
    let server = NatsServer::start();
    let ttl = Duration::from_secs(1);
    let proxies = [
        CuttableProxy::start(server_address(&server)).await,
        CuttableProxy::start(server_address(&server)).await,
    ];
    let names = ["a", "b"];
    let leases = [
        open(&proxies[0].url(), names[0], ttl).await,
        open(&proxies[1].url(), names[1], ttl).await,
    ];
    let acts = Acts::default();
    let nodes = [
        campaign(&leases[0], &acts, names[0]),
        campaign(&leases[1], &acts, names[1]),
    ];

    let rounds = 5;
    for round in 0..rounds {
        // Let the holder act a while, then take whoever acts now (a loss under load may
        // have moved the role meanwhile).
        tokio::time::sleep(Duration::from_millis(200)).await;
        let mut holder = None;
        wait_until(Duration::from_secs(10), "a node acting", || {
            holder = acts.acting_now();
            holder.is_some()
        })
        .await;
        let holder = holder.expect("a node acting");
        let index = names.iter().position(|name| **name == holder).unwrap();
        let other = names[1 - index];
        // Partition the holder from NATS: it must stop before the other takes over.
        proxies[index].cut();
        let cut_at = Instant::now();
        wait_until(
            Duration::from_secs(10),
            "the other node taking over",
            || acts.first_start_after(other, cut_at).is_some(),
        )
        .await;
        let took = acts.first_start_after(other, cut_at).unwrap() - cut_at;
        eprintln!("round {round}: {holder} cut off, {other} acted {took:?} later");
        proxies[index].heal();
    }
    for node in nodes {
        node.stop().await;
    }

    let smallest_gap = acts.assert_never_at_once().expect("handovers happened");
    let handovers = acts
        .all()
        .windows(2)
        .filter(|pair| pair[0].node != pair[1].node)
        .count();
    assert!(
        handovers >= rounds,
        "{handovers} handovers in {rounds} partitions"
    );
    // The holder stops at TTL - margin after its last renewal was sent; the other writes
    // no earlier than a TTL after it saw that renewal: at least the margin (TTL/4) apart.
    assert!(
        smallest_gap >= ttl / 8,
        "the smallest gap between two nodes' acts was {smallest_gap:?}, less than TTL/8"
    );
    eprintln!("{handovers} handovers, smallest gap between nodes {smallest_gap:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_holder_is_replaced_within_ten_seconds_with_the_default_ttl() {
    let server = NatsServer::start();
    let ttl = LeaseConfig::new("any").ttl;
    assert_eq!(ttl, Duration::from_secs(6));
    let acts = Acts::default();
    let leases_a = open(&server.url(), "a", ttl).await;
    let a = campaign(&leases_a, &acts, "a");
    wait_until(Duration::from_secs(10), "a acting", || {
        acts.acting_now().is_some()
    })
    .await;
    let leases_b = open(&server.url(), "b", ttl).await;
    let b = campaign(&leases_b, &acts, "b");
    // Let b see a renew a few times, then kill a without a release: its task and its
    // connection go.
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(acts.acting_now().as_deref(), Some("a"));
    a.task.abort();
    let _ = a.task.await;
    drop(leases_a);
    let died_at = Instant::now();

    wait_until(Duration::from_secs(15), "b taking over", || {
        acts.first_start_after("b", died_at).is_some()
    })
    .await;
    let took = acts.first_start_after("b", died_at).unwrap() - died_at;
    eprintln!("b took over {took:?} after a died");
    assert!(
        took < Duration::from_secs(10),
        "b took over {took:?} after a died, not within 10 s"
    );
    // a's last renewal was at most TTL/3 before its death (and some scheduling delay);
    // b waits a TTL from seeing it.
    assert!(
        took >= ttl - ttl / 3 - Duration::from_millis(500),
        "b took over {took:?} after a died: before a's lease could have expired"
    );
    assert_eq!(leases_b.roles().held(), vec![ROLE.to_owned()]);
    b.stop().await;
    acts.assert_never_at_once();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_clean_release_hands_the_role_over_at_once() {
    let server = NatsServer::start();
    let ttl = Duration::from_secs(6);
    let acts = Acts::default();
    let leases_a = open(&server.url(), "a", ttl).await;
    let leases_b = open(&server.url(), "b", ttl).await;
    let a = campaign(&leases_a, &acts, "a");
    wait_until(Duration::from_secs(10), "a acting", || {
        acts.acting_now().is_some()
    })
    .await;
    let b = campaign(&leases_b, &acts, "b");

    assert_eq!(leases_a.roles().held(), vec![ROLE.to_owned()]);
    assert!(leases_b.roles().held().is_empty());
    let holders = leases_b.holders().await.expect("the holders");
    assert_eq!(holders.len(), 1, "{holders:?}");
    let (role, holder): &(String, Holder) = &holders[0];
    assert_eq!(role, ROLE);
    assert_eq!(holder.holder, "a");
    assert_eq!(holder.http.as_deref(), Some("http://a.test:8080"));

    tokio::time::sleep(Duration::from_secs(1)).await;
    a.stop().await;
    let released_at = Instant::now();
    assert!(leases_a.roles().held().is_empty());
    wait_until(Duration::from_secs(5), "b taking over", || {
        acts.first_start_after("b", released_at).is_some()
    })
    .await;
    let took = acts.first_start_after("b", released_at).unwrap() - released_at;
    eprintln!("b took over {took:?} after a released (TTL {ttl:?})");
    assert!(
        took < Duration::from_secs(1),
        "b took over {took:?} after a released"
    );
    let holders = leases_a.holders().await.expect("the holders");
    assert_eq!(holders[0].1.holder, "b");
    b.stop().await;
    acts.assert_never_at_once();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_holder_stops_within_the_ttl_when_nats_dies_and_a_node_holds_after_restart() {
    let mut server = NatsServer::start();
    let ttl = Duration::from_secs(2);
    let acts = Acts::default();
    let leases = [
        open(&server.url(), "a", ttl).await,
        open(&server.url(), "b", ttl).await,
    ];
    let nodes = [
        campaign(&leases[0], &acts, "a"),
        campaign(&leases[1], &acts, "b"),
    ];
    wait_until(Duration::from_secs(10), "a node acting", || {
        acts.acting_now().is_some()
    })
    .await;
    tokio::time::sleep(Duration::from_millis(500)).await;

    server.stop();
    let stopped_at = Instant::now();
    let stopped = wait_until(
        ttl + Duration::from_secs(1),
        "the holder's work stopping",
        || {
            acts.acting_now().is_none()
                && leases.iter().all(|leases| leases.roles().held().is_empty())
        },
    )
    .await;
    let last_act = acts.all().last().expect("an interval").end;
    eprintln!(
        "NATS killed; last act {:?} later, roles empty after {:?}",
        last_act - stopped_at,
        stopped - stopped_at
    );
    assert!(
        last_act - stopped_at < ttl,
        "the holder acted {:?} after NATS died",
        last_act - stopped_at
    );

    server.restart();
    let restarted_at = Instant::now();
    wait_until(
        Duration::from_secs(30),
        "a node holding after the restart",
        || {
            acts.all()
                .iter()
                .any(|interval| interval.start > restarted_at)
        },
    )
    .await;
    eprintln!(
        "a node acted {:?} after the restart",
        restarted_at.elapsed()
    );
    for node in nodes {
        node.stop().await;
    }
    acts.assert_never_at_once();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_conflicting_write_stops_the_holder_at_its_next_renewal() {
    let server = NatsServer::start();
    let ttl = Duration::from_secs(3);
    let acts = Acts::default();
    let leases = open(&server.url(), "a", ttl).await;
    let node = campaign(&leases, &acts, "a");
    wait_until(Duration::from_secs(10), "a acting", || {
        acts.acting_now().is_some()
    })
    .await;

    // Another writer takes the key over, as a node that won a takeover would, right after
    // one of a's renewals: a's next renewal is a TTL/3 later, its deadline 3/4 TTL later.
    let client = connect(&server.url()).await;
    let bucket = async_nats::jetstream::new(client)
        .get_key_value(DEFAULT_BUCKET)
        .await
        .expect("the lease bucket");
    let revision =
        |entry: Option<async_nats::jetstream::kv::Entry>| entry.expect("a's lease").revision;
    let before = revision(bucket.entry(ROLE).await.expect("a's lease"));
    let renewed = async {
        loop {
            let now = revision(bucket.entry(ROLE).await.expect("a's lease"));
            if now != before {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    };
    within("a's next renewal", renewed).await;
    let intruder = Holder {
        holder: "intruder".to_owned(),
        http: None,
        acquired_at: chrono::Utc::now(),
        renewed_at: chrono::Utc::now(),
        write_id: 1,
    };
    bucket
        .put(ROLE, serde_json::to_vec(&intruder).unwrap().into())
        .await
        .expect("the intruder's write");
    let written_at = Instant::now();

    let stopped = wait_until(Duration::from_secs(3), "a stopping", || {
        acts.acting_now().is_none() && leases.roles().held().is_empty()
    })
    .await;
    let last_act = acts.all().last().expect("an interval").end;
    eprintln!(
        "a's last act {:?} after the conflicting write (noticed by {:?})",
        last_act.saturating_duration_since(written_at),
        stopped - written_at
    );
    // The conflict shows at the next renewal (TTL/3 later), and cancels the work at once.
    assert!(
        last_act.saturating_duration_since(written_at) < ttl / 3 + Duration::from_millis(600),
        "a acted {:?} after another node's write",
        last_act - written_at
    );

    // The intruder's lease is live until it has been seen unchanged for a TTL.
    let again = wait_until(ttl * 3, "a taking the abandoned lease over", || {
        acts.first_start_after("a", written_at).is_some()
    })
    .await;
    eprintln!(
        "a took over again {:?} after the intruder's write",
        again - written_at
    );
    assert!(
        acts.first_start_after("a", written_at).unwrap() - written_at >= ttl,
        "a took the intruder's lease over before a TTL had passed"
    );
    node.stop().await;
    acts.assert_never_at_once();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_holder_back_from_a_partition_takes_its_unchanged_lease_back_at_once() {
    let server = NatsServer::start();
    let ttl = Duration::from_secs(3);
    let proxy = CuttableProxy::start(server_address(&server)).await;
    let acts = Acts::default();
    let leases = open(&proxy.url(), "a", ttl).await;
    let node = campaign(&leases, &acts, "a");
    wait_until(Duration::from_secs(10), "a acting", || {
        acts.acting_now().is_some()
    })
    .await;

    proxy.cut();
    let stopped = wait_until(ttl, "a stopping without NATS", || {
        acts.acting_now().is_none() && leases.roles().held().is_empty()
    })
    .await;
    proxy.heal();
    // Nobody wrote the key since a's last renewal: a may take it back without waiting out
    // a TTL, as any other contender would have to (after its first read, which may wait
    // for the reconnection and the campaign's backoff).
    let again = wait_until(ttl * 3, "a acting again", || {
        acts.first_start_after("a", stopped).is_some()
    })
    .await;
    eprintln!("a acted again {:?} after NATS came back", again - stopped);
    assert!(
        again - stopped < ttl,
        "a took {:?} to take its own lease back",
        again - stopped
    );
    node.stop().await;
    acts.assert_never_at_once();
}

#[tokio::test]
async fn a_bad_configuration_or_role_is_refused_with_what_to_fix() {
    let server = NatsServer::start();
    let jetstream = async_nats::jetstream::new(connect(&server.url()).await);
    let too_short = LeaseConfig {
        ttl: Duration::from_millis(100),
        ..LeaseConfig::new("a")
    };
    let error = Leases::open(&jetstream, too_short).await.unwrap_err();
    assert!(error.to_string().contains("TTL"), "{error}");
    let no_id = LeaseConfig::new(" ");
    let error = Leases::open(&jetstream, no_id).await.unwrap_err();
    assert!(error.to_string().contains("unique id"), "{error}");

    let leases = Leases::open(&jetstream, LeaseConfig::new("a"))
        .await
        .expect("the bucket");
    for role in ["", ".saga", "saga.", "sa ga", "saga*"] {
        let error = leases
            .run_singleton(role, CancellationToken::new(), |_tenure| async {})
            .await
            .unwrap_err();
        assert!(
            matches!(error, cluster::lease::LeaseError::InvalidRole(_)),
            "{role:?}: {error}"
        );
    }
    // A second open finds the bucket the first created.
    Leases::open(&jetstream, LeaseConfig::new("b"))
        .await
        .expect("the same bucket");
}
