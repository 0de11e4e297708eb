//! The scenario suite: black-box tests of Annals from outside, driving the real `annals`
//! binary (built by `test-support` when needed), a real HTTP server and real files
//! together. One test binary, one module per scenario:
//!
//! - `cli`: every command of the `annals` binary (a module per command) on a known
//!   history, against golden outputs in `tests/golden/` (`UPDATE_GOLDEN=1` rewrites them),
//!   offline and through a running `annals serve`; every operator error's exit code; the
//!   benchmarks' smoke tests.
//! - `saga`: the fulfilment saga's invariants over 500 orders against a real server, with
//!   and without kill -9; every acknowledged cancel checked against the order's outcome.
//! - `security`: a server that demands tokens: minted tokens, the principal in the
//!   order's events, the saga's commands and NATS, the CLI's 401/403, and the refusal to
//!   serve a network address without authentication.
//! - `writer_failure`: a server whose disk fails (a file-size limit): commands and probes
//!   answer 503 `store-failed`, it exits with code 75, and a new process holds every
//!   acknowledged event.
//!
//! - `tls`: HTTPS serving and the CLI over HTTPS, the relay and `annals audit` over TLS
//!   to a nats-server (with and without client certificates), certificates made at run
//!   time.
//!
//! - `chaos`: `annals chaos inject|list|clear` against a real `annals serve --chaos`, and
//!   every experiment of `experiments/` run by `annals chaos run` (the fsync one with the
//!   test restarting the server as a supervisor would); a spent budget refuses a run.
//!
//! - `deploy`: the Prometheus rules of `deploy/` checked and unit-tested with promtool.
//!
//! - `payments`: card payments through two real payment provider simulators
//!   (`annals-psp-sim`) and the chain of circuit breakers: fall-through to the fallback,
//!   half-open and close, timeouts and slowness without a double charge, both failing
//!   (the deadline cancels and compensates).
//!
//! - `bounds`: bounded work: commands refused while the index lags a write burst do not
//!   delay other requests; an order of too many lines is a 422; 10,000 orders placed at
//!   once run at most `--saga-max-instances` saga instances.
//!
//! - `contracts`: the consumer-driven contracts of `tests/contracts/` (an HTTP client's
//!   interactions, a Python consumer of the JetStream stream) against a real server,
//!   relay and nats-server; each also broken on purpose, to see it fail.
//!
//! - `privacy`: personal data end to end: the plaintext of customers' profiles and
//!   shipping addresses nowhere on disk, in exports or on NATS, before and after
//!   erasure; the access endpoint, the views, the log routes, `inspect` and `replay`
//!   after erasure; `verify`, `audit`, a rebuild and a restart unchanged by it; a moved
//!   or altered ciphertext reported, never shown; erasure across kill -9.
//!
//! - `cluster`: many `annals serve --store nats://...` nodes on one log in a real 3-node
//!   JetStream cluster: two nodes writing one stream at once, a whole-cluster restart.
//!
//! `support` holds the known history, golden-file comparison and the `annals` runners.

mod bounds;
mod chaos;
mod cli;
mod cluster;
mod contracts;
mod deploy;
mod payments;
mod privacy;
mod saga;
mod security;
mod support;
mod tls;
mod writer_failure;
