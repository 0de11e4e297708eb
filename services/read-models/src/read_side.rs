//! [`ReadSide`]: the domain's read models as the HTTP handlers and the CLI use them: the
//! runner over the read models a server keeps (`correlations` only on request), typed
//! queries, status, rebuilds and read-your-writes.

use std::time::Duration;

use eventstore::{EventStore, Position};
use projections::{Error, Handle, ParkedEvent, Rebuild, Retried, Runner, RunnerConfig, Status};

use privacy::KeyId;

use crate::{
    ACCOUNTS, AccountBalance, AccountPage, CORRELATIONS, CUSTOMERS, CustomerOrders,
    CustomerProfile, INVENTORY, ORDERS, PERSONAL_DATA, PersonalDataField, SALES, SalesReport,
    SkuLevel, SkuPage, account, accounts, correlated_positions, customer, customer_orders,
    fields_of, sales, sku, skus,
};

/// The domain's read models, as the HTTP handlers and the CLI use them: a cheap-to-clone
/// handle over the runner of the read models it was started with.
#[derive(Debug, Clone)]
pub struct ReadSide {
    handle: Handle,
    correlations: bool,
}

impl ReadSide {
    /// Prepares the runner of the read models every server keeps
    /// ([`crate::projections`], not `correlations`) over `store` (spawn
    /// `runner.run(shutdown)`) and the handle to query them.
    pub fn start(store: &EventStore, config: RunnerConfig) -> Result<(ReadSide, Runner), Error> {
        let (runner, handle) = Runner::new(store, crate::projections(), config)?;
        Ok((
            ReadSide {
                handle,
                correlations: false,
            },
            runner,
        ))
    }

    /// [`ReadSide::start`], keeping `correlations` too ([`crate::all_projections`];
    /// `annals serve --correlations`). A store that does not hold it yet builds it from
    /// the start of the log.
    pub fn start_with_correlations(
        store: &EventStore,
        config: RunnerConfig,
    ) -> Result<(ReadSide, Runner), Error> {
        let (runner, handle) = Runner::new(store, crate::all_projections(), config)?;
        Ok((
            ReadSide {
                handle,
                correlations: true,
            },
            runner,
        ))
    }

    /// Whether `correlations` is kept (started by [`ReadSide::start_with_correlations`]).
    pub fn keeps_correlations(&self) -> bool {
        self.correlations
    }

    /// The runner's handle, for what this type does not wrap.
    pub fn handle(&self) -> &Handle {
        &self.handle
    }

    /// The status of every projection (`GET /api/v1/projections`).
    pub fn status(&self) -> Vec<Status> {
        self.handle.status()
    }

    /// Starts a blue-green rebuild of `name`
    /// (`POST /api/v1/projections/{name}/rebuild`).
    pub async fn rebuild(&self, name: &str) -> Result<Rebuild, Error> {
        self.handle.rebuild(name).await
    }

    /// Retries `name`: its parked events, then (if faulted) the projection from the
    /// event it failed on (`POST /api/v1/projections/{name}/retry`).
    pub async fn retry(&self, name: &str) -> Result<Retried, Error> {
        self.handle.retry(name).await
    }

    /// The events `name` has parked (`GET /api/v1/projections/{name}/parked`).
    pub fn parked(&self, name: &str) -> Result<Vec<ParkedEvent>, Error> {
        self.handle.parked(name)
    }

    /// Read-your-writes across every read model: resolves once all have applied the
    /// event at `min_position`, or fails with [`Error::Timeout`] (503 and the checkpoint)
    /// or [`Error::Faulted`].
    pub async fn wait_for(&self, min_position: Position, timeout: Duration) -> Result<(), Error> {
        self.handle.wait_for_all(min_position, timeout).await
    }

    /// Read-your-writes for one read model (the one a query reads).
    pub async fn wait_for_model(
        &self,
        name: &str,
        min_position: Position,
        timeout: Duration,
    ) -> Result<Position, Error> {
        self.handle.wait_for(name, min_position, timeout).await
    }

    /// `GET /api/v1/customers/{customer_id}/orders`: see [`crate::customer_orders`].
    pub fn customer_orders(
        &self,
        customer_id: &str,
        after: Option<u64>,
        limit: usize,
    ) -> Result<CustomerOrders, Error> {
        self.handle.read(ORDERS, |model| {
            customer_orders(model, customer_id, after, limit)
        })
    }

    /// `GET /api/v1/inventory/skus`: see [`crate::skus`].
    pub fn skus(&self, after: Option<&str>, limit: usize) -> Result<SkuPage, Error> {
        self.handle
            .read(INVENTORY, |model| skus(model, after, limit))
    }

    /// The stock of one sku, see [`crate::sku`].
    pub fn sku(&self, sku_id: &str) -> Result<Option<SkuLevel>, Error> {
        self.handle.read(INVENTORY, |model| sku(model, sku_id))
    }

    /// One customer's account, see [`crate::account`].
    pub fn account(&self, customer_id: &str) -> Result<Option<AccountBalance>, Error> {
        self.handle
            .read(ACCOUNTS, |model| account(model, customer_id))
    }

    /// A page of accounts, see [`crate::accounts`].
    pub fn accounts(&self, after: Option<&str>, limit: usize) -> Result<AccountPage, Error> {
        self.handle
            .read(ACCOUNTS, |model| accounts(model, after, limit))
    }

    /// `GET /api/v1/customers/{customer_id}`: the sealed profile, see
    /// [`crate::customer`]. Wait for `min_position` with
    /// `wait_for_model(CUSTOMERS, ..)` first.
    pub fn customer(&self, customer_id: &str) -> Result<Option<CustomerProfile>, Error> {
        self.handle
            .read(CUSTOMERS, |model| customer(model, customer_id))
    }

    /// `GET /api/v1/customers/{customer_id}/personal-data`: every sealed field under
    /// `key_ids`, in log order; see [`crate::fields_of`].
    pub fn personal_data(&self, key_ids: &[KeyId]) -> Result<Vec<PersonalDataField>, Error> {
        self.handle
            .read(PERSONAL_DATA, |model| fields_of(model, key_ids))
    }

    /// `GET /api/v1/reports/sales`: see [`crate::sales`].
    pub fn sales(&self, after: Option<&str>, limit: usize) -> Result<SalesReport, Error> {
        self.handle.read(SALES, |model| sales(model, after, limit))
    }

    /// `GET /api/v1/correlations/{correlation_id}`: up to `limit` log positions of the
    /// events of `correlation_id`, and whether more follow; see
    /// [`crate::correlated_positions`]. Without `correlations` kept
    /// ([`ReadSide::keeps_correlations`]), [`Error::UnknownProjection`].
    pub fn correlated(
        &self,
        correlation_id: &[u8; 16],
        limit: usize,
    ) -> Result<(Vec<u64>, bool), Error> {
        self.handle.read(CORRELATIONS, |model| {
            correlated_positions(model, correlation_id, limit)
        })
    }

    /// A digest of the active model of `name` (tables only, not the checkpoint), to
    /// compare two builds byte for byte.
    pub fn digest(&self, name: &str) -> Result<String, Error> {
        self.handle.read(name, |model| Ok(model.digest()?))
    }
}
