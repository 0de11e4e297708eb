//! The settings of `annals serve`: flags, environment, config file and defaults.

use super::*;
use clap::Parser;
use std::path::Path;

#[derive(Debug, Parser)]
struct Cli {
    #[command(flatten)]
    serve: ServeArgs,
}

fn settings(args: &[&str]) -> anyhow::Result<Settings> {
    let cli = Cli::try_parse_from(std::iter::once("serve").chain(args.iter().copied()))?;
    cli.serve.settings()
}

// The environment is process-wide; these tests only read ANNALS_* variables that
// nothing in the test binary sets.

#[test]
fn defaults() {
    let settings = settings(&[]).unwrap();
    assert_eq!(settings.data_dir, PathBuf::from("./annals-data"));
    assert_eq!(settings.listen, "127.0.0.1:8080");
    assert_eq!(settings.max_body_bytes, ApiConfig::default().max_body_bytes);
    assert_eq!(settings.shutdown_timeout, Duration::from_secs(30));
}

#[test]
fn the_nats_url_comes_from_the_flag_or_the_file() {
    let flagged = settings(&["--nats-url", "nats://127.0.0.1:4222"]).unwrap();
    assert_eq!(flagged.nats_url.as_deref(), Some("nats://127.0.0.1:4222"));
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("annals.toml");
    std::fs::write(&file, "nats_url = \"nats://10.0.0.1:4222\"\n").unwrap();
    let config = file.to_str().unwrap();
    let overridden = settings(&["--config", config, "--nats-url", "nats://a:1"]).unwrap();
    assert_eq!(overridden.nats_url.as_deref(), Some("nats://a:1"));
    // The variable wins over the file; check the file only where it is not set.
    if std::env::var_os("ANNALS_NATS_URL").is_none() {
        let from_file = settings(&["--config", config]).unwrap();
        assert_eq!(from_file.nats_url.as_deref(), Some("nats://10.0.0.1:4222"));
    }
}

#[test]
fn flags_win_over_the_file_which_wins_over_defaults() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("annals.toml");
    std::fs::write(
        &file,
        "data_dir = \"/srv/annals\"\nlisten = \"0.0.0.0:9000\"\nmax_body_bytes = 1024\n",
    )
    .unwrap();
    let config = file.to_str().unwrap();
    let from_file = settings(&["--config", config]).unwrap();
    assert_eq!(from_file.data_dir, PathBuf::from("/srv/annals"));
    assert_eq!(from_file.listen, "0.0.0.0:9000");
    assert_eq!(from_file.max_body_bytes, 1024);
    let flagged = settings(&["--config", config, "--listen", "127.0.0.1:1"]).unwrap();
    assert_eq!(flagged.listen, "127.0.0.1:1");
    assert_eq!(flagged.data_dir, PathBuf::from("/srv/annals"));
}

#[test]
fn objectives_come_from_slo_tables_or_are_the_defaults() {
    assert_eq!(settings(&[]).unwrap().slos, slo::Objective::defaults());
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("annals.toml");
    std::fs::write(
        &file,
        "[[slo]]\nname = \"orders-fast\"\nsli = \"command_latency\"\ntarget = 0.95\nthreshold_ms = 20\n",
    )
    .unwrap();
    let configured = settings(&["--config", file.to_str().unwrap()]).unwrap();
    assert_eq!(
        configured.slos,
        [slo::Objective {
            name: "orders-fast".to_owned(),
            sli: slo::Sli::CommandLatency,
            target: 0.95,
            threshold_ms: Some(20),
        }]
    );
    std::fs::write(
        &file,
        "[[slo]]\nname = \"never\"\nsli = \"command_availability\"\ntarget = 1.5\n",
    )
    .unwrap();
    let error = settings(&["--config", file.to_str().unwrap()])
        .unwrap_err()
        .to_string();
    assert!(
        error.contains("[[slo]]") && error.contains("never"),
        "{error}"
    );
}

#[test]
fn the_hidden_store_flags_reach_the_settings() {
    let defaults = settings(&[]).unwrap();
    assert_eq!(defaults.segment_bytes, None);
    assert!(defaults.preallocate_segments);
    let small = settings(&["--segment-bytes", "1048576", "--no-preallocate"]).unwrap();
    assert_eq!(small.segment_bytes, Some(1 << 20));
    assert!(!small.preallocate_segments);
}

#[test]
fn tls_takes_a_certificate_and_its_key_from_flags_or_the_file() {
    assert_eq!(settings(&[]).unwrap().tls, None);
    let both = settings(&["--tls-cert", "c.pem", "--tls-key", "k.pem"]).unwrap();
    assert_eq!(
        both.tls,
        Some(crate::tls::ServerFiles {
            cert: PathBuf::from("c.pem"),
            key: PathBuf::from("k.pem"),
        })
    );
    // The variables would complete a half pair; check only where they are not set.
    if std::env::var_os("ANNALS_TLS_KEY").is_none() {
        let error = settings(&["--tls-cert", "c.pem"]).unwrap_err();
        assert!(
            format!("{error:#}").contains("needs --tls-key"),
            "{error:#}"
        );
    }
    if std::env::var_os("ANNALS_TLS_CERT").is_none() {
        let error = settings(&["--tls-key", "k.pem"]).unwrap_err();
        assert!(
            format!("{error:#}").contains("needs --tls-cert"),
            "{error:#}"
        );
    }
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("annals.toml");
    std::fs::write(
        &file,
        "tls_cert = \"/etc/a.pem\"\ntls_key = \"/etc/a-key.pem\"\n",
    )
    .unwrap();
    let from_file = settings(&["--config", file.to_str().unwrap()]).unwrap();
    assert_eq!(
        from_file.tls.map(|tls| tls.key),
        Some(PathBuf::from("/etc/a-key.pem"))
    );
}

#[test]
fn the_nats_tls_files_are_checked_at_start() {
    let dir = tempfile::tempdir().unwrap();
    let ca = dir.path().join("ca.pem");
    std::fs::write(
        &ca,
        "-----BEGIN CERTIFICATE-----\nAA==\n-----END CERTIFICATE-----\n",
    )
    .unwrap();
    let flagged = settings(&["--nats-tls-ca", ca.to_str().unwrap()]).unwrap();
    assert_eq!(flagged.nats_tls.ca.as_deref(), Some(ca.as_path()));
    let missing = dir.path().join("missing.pem");
    let error = settings(&["--nats-tls-ca", missing.to_str().unwrap()]).unwrap_err();
    assert!(
        format!("{error:#}").contains(&missing.display().to_string()),
        "{error:#}"
    );
}

#[test]
fn the_security_keys_come_from_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("annals.toml");
    std::fs::write(
        &file,
        "listen = \"0.0.0.0:9000\"\nauth_jwt_secret_file = \"/etc/annals/secret\"\n\
         auth_issuer = \"https://idp\"\nrate_limit = 20\n\
         [rate_limit_roles]\nadmin = 100\n",
    )
    .unwrap();
    let settings = settings(&["--config", file.to_str().unwrap()]).unwrap();
    let security = &settings.security;
    assert_eq!(
        security.auth.jwt_secret_file.as_deref(),
        Some(Path::new("/etc/annals/secret"))
    );
    assert_eq!(security.auth.issuer.as_deref(), Some("https://idp"));
    assert_eq!(
        security.rate_limits.default_per_second.map(|n| n.get()),
        Some(20)
    );
    assert_eq!(
        security
            .rate_limits
            .per_role
            .get(&::security::Role::Admin)
            .map(|n| n.get()),
        Some(100)
    );
    assert_eq!(settings.listen, "0.0.0.0:9000");
}

#[test]
fn the_log_format_comes_from_the_flag_or_the_file() {
    if std::env::var_os("ANNALS_LOG_FORMAT").is_some() {
        return;
    }
    assert_eq!(settings(&[]).unwrap().log_format, LogFormat::Text);
    let json = settings(&["--log-format", "json"]).unwrap();
    assert_eq!(json.log_format, LogFormat::Json);
    assert!(settings(&["--log-format", "xml"]).is_err());
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("annals.toml");
    std::fs::write(&file, "log_format = \"json\"\n").unwrap();
    let config = file.to_str().unwrap();
    assert_eq!(
        settings(&["--config", config]).unwrap().log_format,
        LogFormat::Json
    );
    let flagged = settings(&["--config", config, "--log-format", "text"]).unwrap();
    assert_eq!(flagged.log_format, LogFormat::Text);
}

#[test]
fn metrics_are_on_unless_the_flag_or_the_file_turns_them_off() {
    assert!(settings(&[]).unwrap().metrics);
    assert!(!settings(&["--no-metrics"]).unwrap().metrics);
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("annals.toml");
    std::fs::write(&file, "metrics = false\n").unwrap();
    assert!(
        !settings(&["--config", file.to_str().unwrap()])
            .unwrap()
            .metrics
    );
    std::fs::write(&file, "metrics = true\n").unwrap();
    assert!(
        settings(&["--config", file.to_str().unwrap()])
            .unwrap()
            .metrics
    );
    assert!(
        !settings(&["--config", file.to_str().unwrap(), "--no-metrics"])
            .unwrap()
            .metrics
    );
}

#[test]
fn correlations_are_kept_only_when_the_flag_or_the_file_asks() {
    if std::env::var_os("ANNALS_CORRELATIONS").is_some() {
        return;
    }
    assert!(!settings(&[]).unwrap().correlations);
    assert!(settings(&["--correlations"]).unwrap().correlations);
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("annals.toml");
    let config = file.to_str().unwrap();
    std::fs::write(&file, "correlations = true\n").unwrap();
    assert!(settings(&["--config", config]).unwrap().correlations);
    std::fs::write(&file, "correlations = false\n").unwrap();
    assert!(!settings(&["--config", config]).unwrap().correlations);
    assert!(
        settings(&["--config", config, "--correlations"])
            .unwrap()
            .correlations
    );
}

#[test]
fn the_otlp_endpoint_comes_from_the_flag_or_the_file() {
    if std::env::var_os("OTEL_EXPORTER_OTLP_ENDPOINT").is_some() {
        return;
    }
    assert_eq!(settings(&[]).unwrap().otlp_endpoint, None);
    let flagged = settings(&["--otlp-endpoint", "http://127.0.0.1:4318"]).unwrap();
    assert_eq!(
        flagged.otlp_endpoint.as_deref(),
        Some("http://127.0.0.1:4318")
    );
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("annals.toml");
    std::fs::write(&file, "otlp_endpoint = \"http://collector:4318\"\n").unwrap();
    let from_file = settings(&["--config", file.to_str().unwrap()]).unwrap();
    assert_eq!(
        from_file.otlp_endpoint.as_deref(),
        Some("http://collector:4318")
    );
    assert_eq!(
        crate::telemetry::traces_url("http://collector:4318/"),
        "http://collector:4318/v1/traces"
    );
}

#[test]
fn the_traces_budget_comes_from_the_flag_or_the_file() {
    if std::env::var_os("ANNALS_TRACES_PER_SECOND").is_some() {
        return;
    }
    assert_eq!(
        settings(&[]).unwrap().traces_per_second,
        crate::telemetry::sampler::DEFAULT_TRACES_PER_SECOND
    );
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("annals.toml");
    std::fs::write(&file, "traces_per_second = 5\n").unwrap();
    let path = file.to_str().unwrap();
    assert_eq!(settings(&["--config", path]).unwrap().traces_per_second, 5);
    assert_eq!(
        settings(&["--config", path, "--traces-per-second", "0"])
            .unwrap()
            .traces_per_second,
        0
    );
}

#[test]
fn unknown_keys_in_the_file_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("annals.toml");
    std::fs::write(&file, "listen_on = \"x\"\n").unwrap();
    let error = settings(&["--config", file.to_str().unwrap()]).unwrap_err();
    assert!(format!("{error:#}").contains("listen_on"), "{error:#}");
}

#[test]
fn the_worker_restart_budget_comes_from_the_flags_or_the_file() {
    let defaults = settings(&[]).unwrap();
    assert_eq!(defaults.workers, supervisor::SupervisorConfig::default());
    assert_eq!(defaults.workers.max_restarts, 5);
    assert_eq!(defaults.workers.window, Duration::from_secs(60));
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("annals.toml");
    std::fs::write(
        &file,
        "worker_max_restarts = 3\nworker_restart_window_secs = 10\n",
    )
    .unwrap();
    let config = file.to_str().unwrap();
    if std::env::var_os("ANNALS_WORKER_MAX_RESTARTS").is_none()
        && std::env::var_os("ANNALS_WORKER_RESTART_WINDOW_SECS").is_none()
    {
        let from_file = settings(&["--config", config]).unwrap();
        assert_eq!(from_file.workers.max_restarts, 3);
        assert_eq!(from_file.workers.window, Duration::from_secs(10));
    }
    let flagged = settings(&[
        "--config",
        config,
        "--worker-max-restarts",
        "7",
        "--worker-restart-window",
        "120",
    ])
    .unwrap();
    assert_eq!(flagged.workers.max_restarts, 7);
    assert_eq!(flagged.workers.window, Duration::from_secs(120));
}

#[test]
fn the_poison_event_policy_comes_from_the_flags_or_the_file() {
    let defaults = settings(&[]).unwrap();
    assert_eq!(defaults.projections, projections::RunnerConfig::default());
    assert_eq!(
        defaults.projections.poison_policy,
        projections::PoisonPolicy::Fault
    );
    let flagged = settings(&["--poison-events", "park", "--projection-retries", "5"]).unwrap();
    assert_eq!(
        flagged.projections.poison_policy,
        projections::PoisonPolicy::Park
    );
    assert_eq!(flagged.projections.poison_retries, 5);
    assert!(settings(&["--poison-events", "skip"]).is_err());
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("annals.toml");
    std::fs::write(&file, "poison_events = \"park\"\nprojection_retries = 0\n").unwrap();
    let config = file.to_str().unwrap();
    if std::env::var_os("ANNALS_POISON_EVENTS").is_none()
        && std::env::var_os("ANNALS_PROJECTION_RETRIES").is_none()
    {
        let filed = settings(&["--config", config]).unwrap();
        assert_eq!(
            filed.projections.poison_policy,
            projections::PoisonPolicy::Park
        );
        assert_eq!(filed.projections.poison_retries, 0);
    }
    let overridden = settings(&["--config", config, "--poison-events", "fault"]).unwrap();
    assert_eq!(
        overridden.projections.poison_policy,
        projections::PoisonPolicy::Fault
    );
}

#[test]
fn the_master_key_comes_from_the_flag_or_the_file() {
    let flagged = settings(&["--master-key-file", "/etc/annals/master.key"]).unwrap();
    assert_eq!(
        flagged.master_key,
        Some(MasterKeySource::File(PathBuf::from(
            "/etc/annals/master.key"
        )))
    );
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("annals.toml");
    std::fs::write(&file, "master_key_file = \"/srv/master.key\"\n").unwrap();
    let from_file = settings(&["--config", file.to_str().unwrap()]).unwrap();
    assert_eq!(
        from_file.master_key,
        Some(MasterKeySource::File(PathBuf::from("/srv/master.key")))
    );
    if std::env::var_os(privacy::MASTER_KEY_ENV).is_none()
        && std::env::var_os("ANNALS_MASTER_KEY_FILE").is_none()
    {
        assert_eq!(settings(&[]).unwrap().master_key, None);
    }
}

/// `annals serve` runs the erasure enforcer: an erasure recorded in the log whose keys
/// were never destroyed (a crash between the two, or an imported log) ends, once the
/// server is up, with the keys destroyed. A wrong master key stops the start.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_server_destroys_the_keys_of_erasures_in_its_log() {
    use eventstore::Aggregate;
    let dir = tempfile::tempdir().unwrap();
    let data_dir = dir.path().join("data");
    let master_file = dir.path().join("master.key");
    let (master, created) = privacy::MasterKey::from_file_or_create(&master_file).unwrap();
    assert!(created);
    let key = {
        let key_store = privacy::KeyStore::open(&data_dir, master).unwrap();
        key_store.create_key("alice").unwrap()
    };
    let store = EventStore::open(&data_dir, StoreConfig::default()).unwrap();
    let erased = customers::Event::PersonalDataErased {
        customer_id: "alice".into(),
        reason: "imported".into(),
        erased_by: "ops".into(),
        key_ids: vec![key],
    };
    store
        .append(
            &eventstore::StreamId::new("customer-alice").unwrap(),
            eventstore::ExpectedVersion::Any,
            vec![eventstore::NewEvent::new(
                customers::Customer::event_type(&erased),
                postcard::to_allocvec(&erased).unwrap(),
            )],
        )
        .await
        .unwrap();
    store.close().await;
    drop(store);
    assert!(privacy::destroyed_keys(&data_dir).unwrap().is_empty());

    let mut settings = settings(&[
        "--data-dir",
        data_dir.to_str().unwrap(),
        "--listen",
        "127.0.0.1:0",
        "--no-saga",
        "--master-key-file",
        master_file.to_str().unwrap(),
    ])
    .unwrap();
    settings.metrics = false;
    let shutdown = CancellationToken::new();
    let server = tokio::spawn(serve(settings.clone(), shutdown.clone()));
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while !privacy::destroyed_keys(&data_dir)
        .unwrap()
        .contains_key(&key)
    {
        assert!(
            std::time::Instant::now() < deadline && !server.is_finished(),
            "the server did not destroy the key"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    shutdown.cancel();
    server.await.unwrap().unwrap();

    // Another master key: the start stops, naming the problem.
    let other = dir.path().join("other.key");
    settings.master_key = Some(MasterKeySource::File(other));
    let error = serve(settings, CancellationToken::new()).await.unwrap_err();
    let message = format!("{error:#}");
    assert!(message.contains("wrapped by master key"), "{message}");
}
