//! TLS end to end, with certificates made at run time ([`TestPki`]): `annals serve
//! --tls-cert --tls-key` answers HTTPS to a client that trusts the CA (the CLI with
//! `--ca-cert`), refuses plain HTTP, and will not start with a bad key file, naming it;
//! the relay publishes to a TLS nats-server with `--nats-tls-ca` (and a client
//! certificate where the server verifies clients), the copy checked with `annals audit`
//! over TLS; without the CA the relay is degraded, and the server keeps serving.

use std::path::Path;
use std::time::Duration;

use test_support::tls::TestPki;
use test_support::{AnnalsServer, NatsServer, within};

use crate::support::{annals, annals_fails, annals_ok, seed, seeded, stderr, wait_for_outbox};

fn path(file: &Path) -> String {
    file.display().to_string()
}

#[test]
fn https_round_trip_with_a_generated_certificate() {
    let pki = TestPki::new(&["localhost", "127.0.0.1"]);
    let (scratch, data) = seeded();
    // Ready means /readyz answered 200 over HTTPS, verified against the generated CA.
    let server = AnnalsServer::start_https_in(&pki, &data, &[]);
    let url = server.url();
    assert!(url.starts_with("https://"), "{url}");
    let ca = path(&pki.ca_cert());

    let through_https = annals_ok(
        &[
            "inspect",
            "log",
            "--server",
            &url,
            "--ca-cert",
            &ca,
            "--json",
        ],
        scratch.path(),
    );
    assert!(!through_https.trim().is_empty(), "no events over HTTPS");
    assert!(
        through_https.contains("\"stream\":\"order-o1\""),
        "{through_https}"
    );

    // A client that does not trust the CA refuses the server's certificate.
    annals_fails(
        &["inspect", "log", "--server", &url],
        scratch.path(),
        8,
        &["cannot reach the server", "certificate"],
    );

    // Plain HTTP to the TLS port gets no HTTP answer.
    let plain = url.replacen("https://", "http://", 1);
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let answer = runtime.block_on(within("a plain HTTP request to the TLS port", async {
        reqwest::Client::new()
            .get(format!("{plain}/readyz"))
            .timeout(Duration::from_secs(15))
            .send()
            .await
    }));
    assert!(answer.is_err(), "plain HTTP was answered: {answer:?}");
}

#[test]
fn a_bad_certificate_or_key_stops_the_start_naming_the_file() {
    let pki = TestPki::new(&["127.0.0.1"]);
    let scratch = tempfile::tempdir().unwrap();
    let data = path(&scratch.path().join("data"));
    let cert = path(&pki.server_cert());
    let garbage = scratch.path().join("garbage-key.pem");
    std::fs::write(&garbage, "not a key\n").unwrap();
    let garbage = path(&garbage);
    let serve = |extra: &[&str]| {
        let mut args = vec!["serve", "--data-dir", &data, "--listen", "127.0.0.1:0"];
        args.extend_from_slice(extra);
        args.into_iter().map(str::to_owned).collect::<Vec<_>>()
    };
    let run = |args: Vec<String>, needles: &[&str]| {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        annals_fails(&args, scratch.path(), 2, needles);
    };
    run(
        serve(&["--tls-cert", &cert, "--tls-key", &garbage]),
        &["TLS key", &garbage],
    );
    let missing = path(&scratch.path().join("missing.pem"));
    run(
        serve(&[
            "--tls-cert",
            &missing,
            "--tls-key",
            &path(&pki.server_key()),
        ]),
        &["cannot read the TLS certificate", &missing],
    );
    // The client's key does not fit the server's certificate.
    run(
        serve(&["--tls-cert", &cert, "--tls-key", &path(&pki.client_key())]),
        &["does not fit", &cert],
    );
    run(serve(&["--tls-cert", &cert]), &["needs --tls-key"]);
}

/// Runs the relay of `annals serve --nats-url <nats> <tls>` over a seeded log until the
/// copy is complete, then checks the copy with `annals audit` over TLS.
fn relay_over_tls(nats: &NatsServer, tls: &[&str]) {
    const EVENTS: u64 = 40;
    let scratch = tempfile::tempdir().unwrap();
    let data = scratch.path().join("data");
    seed(&data, EVENTS);
    let url = nats.url();
    assert!(url.starts_with("tls://"), "{url}");
    let mut args = vec!["--nats-url", url.as_str()];
    args.extend_from_slice(tls);
    let mut server = AnnalsServer::start_in(&data, &args);
    wait_for_outbox(&server, "the relay copying the log over TLS", |status| {
        status["relay"]["checkpoint"] == EVENTS && status["relay"]["backlog"] == 0
    });
    server.terminate();
    let data = path(&data);
    let mut audit = vec!["audit", "--nats-url", url.as_str(), "--data-dir", &data];
    audit.extend_from_slice(tls);
    annals_ok(&audit, scratch.path());
}

#[test]
fn the_relay_publishes_to_a_tls_nats_server() {
    let pki = TestPki::new(&["localhost", "127.0.0.1"]);
    let nats = NatsServer::start_tls(&pki);
    relay_over_tls(&nats, &["--nats-tls-ca", &path(&pki.ca_cert())]);
}

#[test]
fn the_relay_presents_a_client_certificate_where_nats_verifies_clients() {
    let pki = TestPki::new(&["localhost", "127.0.0.1"]);
    let nats = NatsServer::start_tls_verifying_clients(&pki);
    relay_over_tls(
        &nats,
        &[
            "--nats-tls-ca",
            &path(&pki.ca_cert()),
            "--nats-tls-cert",
            &path(&pki.client_cert()),
            "--nats-tls-key",
            &path(&pki.client_key()),
        ],
    );
}

#[test]
fn without_the_ca_the_relay_is_degraded_and_the_server_serves() {
    let pki = TestPki::new(&["localhost", "127.0.0.1"]);
    let nats = NatsServer::start_tls(&pki);
    let scratch = tempfile::tempdir().unwrap();
    let data = scratch.path().join("data");
    seed(&data, 5);
    let mut server = AnnalsServer::start_in(&data, &["--nats-url", &nats.url()]);
    wait_for_outbox(
        &server,
        "the relay reporting the failed handshake",
        |status| {
            status["health"]["status"] == "degraded"
                && status["relay"]["last_error"].is_string()
                && status["relay"]["checkpoint"] == 0
        },
    );
    // Still serving: the relay's trouble is reported, not fatal.
    annals_ok(
        &["inspect", "log", "--server", &server.url()],
        scratch.path(),
    );
    server.terminate();

    // A one-shot command without the CA fails with the NATS exit code.
    let output = annals(
        &[
            "audit",
            "--nats-url",
            &nats.url(),
            "--data-dir",
            &path(&data),
        ],
        scratch.path(),
    );
    assert_eq!(output.status.code(), Some(6), "{}", stderr(&output));
}
