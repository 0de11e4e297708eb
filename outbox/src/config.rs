//! [`RelayConfig`]: where the relay publishes and every limit it keeps, each with the
//! reason it exists.

use std::time::Duration;

use crate::cloudevents::JsonPayloads;
use crate::error::Error;
use crate::tls::NatsTls;

/// Where JetStream keeps the stream's messages.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Storage {
    /// On disk: the copy survives a NATS restart (the default; restore needs it).
    File,
    /// In memory: lost when NATS stops. For tests and throw-away copies.
    Memory,
}

/// The relay's configuration.
#[derive(Debug, Clone)]
pub struct RelayConfig {
    /// NATS server URL(s), comma-separated, e.g. `nats://127.0.0.1:4222`.
    pub nats_url: String,
    /// The JetStream stream that holds the copy. The relay owns it: nothing else should
    /// publish to its subjects, since the relay chains every publish to the stream's last
    /// sequence (`Nats-Expected-Last-Sequence`) to keep the copy in log order.
    pub stream: String,
    /// Subjects are `<prefix>.<category>.<event type>`; the stream covers `<prefix>.>`.
    pub subject_prefix: String,
    /// Where JetStream keeps the copy.
    pub storage: Storage,
    /// JetStream replicas of the stream (1 on a single server; 3 in a cluster).
    pub replicas: usize,
    /// The stream's `Nats-Msg-Id` deduplication window. The relay does not depend on it
    /// (it resumes after the last message in the stream, however long it was down); it
    /// catches what the chain would not, such as a publish retried by the client. NATS
    /// requires at least 100 ms.
    pub duplicate_window: Duration,
    /// The store checkpoint under which the relay saves its progress (the next position
    /// to publish). One name per relay.
    pub checkpoint_name: String,
    /// Publishes sent but not yet acknowledged. Pipelining is where throughput comes from;
    /// the bound caps memory, the work redone after a failure, and what NATS must buffer.
    pub max_acks_in_flight: usize,
    /// How long a connection attempt may take before it counts as a failure.
    pub connect_timeout: Duration,
    /// How long a JetStream API request (stream info, create, get) may take.
    pub request_timeout: Duration,
    /// How long the oldest publish may wait for its acknowledgement before the relay
    /// counts a failure, drops the pipeline and resynchronises with the stream.
    pub ack_timeout: Duration,
    /// The first retry delay after a failure; it doubles per failure (with up to 100%
    /// random jitter, so that many relays do not retry in step) up to `backoff_max`.
    pub backoff_min: Duration,
    /// The longest retry delay while the breaker is closed.
    pub backoff_max: Duration,
    /// Consecutive failures that open the circuit breaker. While open, the relay makes no
    /// attempt at all for `breaker_cool_down`, so a NATS that is down is not hammered.
    pub breaker_failure_threshold: u32,
    /// How long the breaker stays open before one trial attempt (half-open): success
    /// closes it, failure opens it again.
    pub breaker_cool_down: Duration,
    /// How often the acknowledged position is saved as the checkpoint. Saving is off the
    /// publish path; the checkpoint is only a fallback (the relay resumes after the last
    /// message in the stream), so losing the last interval costs nothing.
    pub checkpoint_interval: Duration,
    /// How often the status (connection state, log head) is refreshed while idle.
    pub status_interval: Duration,
    /// On shutdown, how long to wait for the acknowledgements of publishes already sent,
    /// so that the checkpoint covers them.
    pub shutdown_grace: Duration,
    /// TLS towards NATS: the CA to trust and a client certificate (see [`NatsTls`]).
    pub tls: NatsTls,
    /// The `relay.publish` fault point, inert unless the server runs with `--chaos`
    /// (see `relay`'s module documentation for what each effect does).
    pub chaos: chaos::Chaos,
    /// How payloads become the JSON bodies consumers read (`ce-datacontenttype:
    /// application/json`). This crate does not know the domain's types: the server
    /// passes its decoder. The default has none, and every body is the payload bytes.
    pub json_payloads: JsonPayloads,
}

impl RelayConfig {
    /// The defaults, publishing to `nats_url`.
    pub fn new(nats_url: impl Into<String>) -> Self {
        RelayConfig {
            nats_url: nats_url.into(),
            stream: "ANNALS".into(),
            subject_prefix: "annals.events".into(),
            storage: Storage::File,
            replicas: 1,
            duplicate_window: Duration::from_secs(120),
            checkpoint_name: "outbox-relay".into(),
            max_acks_in_flight: 4096,
            connect_timeout: Duration::from_secs(5),
            request_timeout: Duration::from_secs(5),
            ack_timeout: Duration::from_secs(5),
            backoff_min: Duration::from_millis(100),
            backoff_max: Duration::from_secs(10),
            breaker_failure_threshold: 5,
            breaker_cool_down: Duration::from_secs(30),
            checkpoint_interval: Duration::from_secs(1),
            status_interval: Duration::from_millis(500),
            shutdown_grace: Duration::from_secs(5),
            tls: NatsTls::default(),
            chaos: chaos::Chaos::inert(),
            json_payloads: JsonPayloads::none(),
        }
    }

    /// Checks every setting, so that a bad one is reported at start, not at first use.
    pub fn validate(&self) -> Result<(), Error> {
        validate_url(&self.nats_url)?;
        self.tls.validate()?;
        validate_stream_name(&self.stream)?;
        validate_subject_prefix(&self.subject_prefix)?;
        let invalid = |what: &str| Err(Error::InvalidConfig(what.to_owned()));
        if self.checkpoint_name.is_empty() {
            return invalid("the checkpoint name is empty");
        }
        if self.replicas == 0 || self.replicas > 5 {
            return invalid("replicas must be between 1 and 5");
        }
        if self.max_acks_in_flight == 0 || self.max_acks_in_flight > 1 << 20 {
            return invalid("max_acks_in_flight must be between 1 and 1048576");
        }
        if self.breaker_failure_threshold == 0 {
            return invalid("breaker_failure_threshold must be at least 1");
        }
        for (name, value) in [
            ("connect_timeout", self.connect_timeout),
            ("request_timeout", self.request_timeout),
            ("ack_timeout", self.ack_timeout),
            ("backoff_min", self.backoff_min),
            ("checkpoint_interval", self.checkpoint_interval),
            ("status_interval", self.status_interval),
        ] {
            if value.is_zero() {
                return Err(Error::InvalidConfig(format!("{name} must not be zero")));
            }
        }
        if self.duplicate_window < Duration::from_millis(100) {
            return invalid("duplicate_window must be at least 100 ms (the NATS minimum)");
        }
        if self.backoff_max < self.backoff_min {
            return invalid("backoff_max must not be below backoff_min");
        }
        Ok(())
    }
}

/// `url` with any user name, password or token replaced by `***`, for messages and logs.
pub fn redact(url: &str) -> String {
    url.split(',')
        .map(|part| match (part.find("://"), part.rfind('@')) {
            (Some(scheme), Some(at)) if at > scheme => {
                format!("{}***{}", &part[..scheme + 3], &part[at..])
            }
            (None, Some(at)) => format!("***{}", &part[at..]),
            _ => part.to_owned(),
        })
        .collect::<Vec<_>>()
        .join(",")
}

/// Checks that `url` is a list of NATS server addresses.
pub fn validate_url(url: &str) -> Result<(), Error> {
    let invalid = |reason: String| Error::InvalidUrl {
        url: redact(url),
        reason,
    };
    if url.trim().is_empty() {
        return Err(invalid("it is empty".into()));
    }
    for part in url.split(',') {
        part.trim()
            .parse::<async_nats::ServerAddr>()
            .map_err(|error| invalid(error.to_string()))?;
    }
    Ok(())
}

/// Checks a JetStream stream name: non-empty, at most 255 bytes, printable ASCII
/// without `.`, `*`, `>`, `/`, `\` or white space.
pub fn validate_stream_name(name: &str) -> Result<(), Error> {
    let valid = !name.is_empty()
        && name.len() <= 255
        && name
            .chars()
            .all(|c| c.is_ascii_graphic() && !matches!(c, '.' | '*' | '>' | '/' | '\\'));
    if valid {
        Ok(())
    } else {
        Err(Error::InvalidConfig(format!(
            "{name:?} is not a valid JetStream stream name (printable ASCII without '.', '*', '>', '/', '\\' or spaces)"
        )))
    }
}

/// Checks a subject prefix: dot-separated non-empty tokens without wildcards or white
/// space.
pub fn validate_subject_prefix(prefix: &str) -> Result<(), Error> {
    let valid = !prefix.is_empty()
        && prefix.split('.').all(|token| {
            !token.is_empty()
                && token
                    .chars()
                    .all(|c| c.is_ascii_graphic() && c != '*' && c != '>')
        });
    if valid {
        Ok(())
    } else {
        Err(Error::InvalidConfig(format!(
            "{prefix:?} is not a valid subject prefix (dot-separated tokens of printable ASCII, no '*' or '>')"
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn credentials_are_redacted() {
        assert_eq!(redact("nats://127.0.0.1:4222"), "nats://127.0.0.1:4222");
        assert_eq!(redact("nats://me:secret@host:4222"), "nats://***@host:4222");
        assert_eq!(redact("token@host,nats://a:b@c"), "***@host,nats://***@c");
    }

    #[test]
    fn defaults_are_valid_and_bad_settings_are_named() {
        assert!(RelayConfig::new("nats://127.0.0.1:4222").validate().is_ok());
        assert!(
            RelayConfig::new("127.0.0.1:4222,nats://other:4223")
                .validate()
                .is_ok()
        );
        assert!(matches!(
            RelayConfig::new("http://x").validate(),
            Err(Error::InvalidUrl { .. })
        ));
        assert!(matches!(
            RelayConfig::new("nats://[::1").validate(),
            Err(Error::InvalidUrl { .. })
        ));
        assert!(matches!(
            RelayConfig::new("").validate(),
            Err(Error::InvalidUrl { .. })
        ));
        for stream in ["", "a.b", "a b", "a*", "a>"] {
            let config = RelayConfig {
                stream: stream.into(),
                ..RelayConfig::new("nats://127.0.0.1")
            };
            assert!(
                matches!(config.validate(), Err(Error::InvalidConfig(_))),
                "{stream:?}"
            );
        }
        for prefix in ["", "a..b", "a.*", "a.>", ".a", "a b"] {
            let config = RelayConfig {
                subject_prefix: prefix.into(),
                ..RelayConfig::new("nats://127.0.0.1")
            };
            assert!(
                matches!(config.validate(), Err(Error::InvalidConfig(_))),
                "{prefix:?}"
            );
        }
        let config = RelayConfig {
            max_acks_in_flight: 0,
            ..RelayConfig::new("nats://127.0.0.1")
        };
        assert!(config.validate().is_err());
    }
}
