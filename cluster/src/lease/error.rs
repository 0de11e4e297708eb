//! The one error type of the lease, each variant saying who handles it.

/// What can go wrong opening or reading the lease bucket. [`Leases::run_singleton`]
/// handles NATS outages itself (it retries with backoff); only a bad role name ends it.
///
/// [`Leases::run_singleton`]: super::Leases::run_singleton
#[derive(Debug, thiserror::Error)]
pub enum LeaseError {
    /// The configuration cannot work: the operator fixes it and starts the node again.
    #[error("invalid lease configuration: {0}")]
    Config(String),

    /// A role name that cannot be a key of the bucket: a programming error of the caller.
    #[error(
        "the role `{0}` cannot be a lease key: use letters, digits, `-`, `_`, `/`, `=` and inner dots only"
    )]
    InvalidRole(String),

    /// The bucket could be neither opened nor created: the node cannot run singletons.
    #[error(
        "cannot open or create the lease bucket `{bucket}`: {source}; check that the NATS servers run JetStream (-js), that this account may create streams, and that the replicas are not more than the servers"
    )]
    Bucket {
        bucket: String,
        #[source]
        source: async_nats::Error,
    },

    /// NATS did not answer in time or refused: transient; the caller retries later.
    #[error(
        "the lease bucket `{bucket}` did not answer ({operation}): {source}; the NATS servers may be down or unreachable, try again when they are back"
    )]
    Unavailable {
        bucket: String,
        operation: &'static str,
        #[source]
        source: async_nats::Error,
    },

    /// A lease key holds something that is not a lease of this version: the operator
    /// looks at who wrote it; deleting the key (`nats kv del`) lets the nodes campaign.
    #[error(
        "the lease `{role}` in bucket `{bucket}` is not a lease this version understands ({source}); if another program wrote it, delete the key (nats kv del {bucket} {role}) and the nodes campaign again"
    )]
    Malformed {
        bucket: String,
        role: String,
        #[source]
        source: serde_json::Error,
    },
}
