//! The `accounts` read model: the balance of each customer's account (`account-*`
//! streams), with its deposits, charges and refunds; one key per customer.

use eventstore::{Aggregate, Model, StoredEvent};
use projections::{ApplyError, Changes, Error, Projection};
use serde::{Deserialize, Serialize};

use crate::{ACCOUNTS, decode, entity, page};

/// One customer's account.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct AccountBalance {
    /// The customer.
    pub customer_id: String,
    /// The balance, in minor units.
    pub balance: u64,
    /// All deposits, in minor units.
    pub deposited: u64,
    /// All charges, in minor units (refunded ones included).
    pub charged: u64,
    /// All refunds, in minor units.
    pub refunded: u64,
}

/// Customer id -> account.
const BALANCES: &str = "accounts";

/// Account balances per customer (`account-*` streams).
#[derive(Debug, Clone, Copy, Default)]
pub struct AccountsProjection;

impl Projection for AccountsProjection {
    fn name(&self) -> &str {
        ACCOUNTS
    }

    fn version(&self) -> u32 {
        1
    }

    fn apply(&self, event: &StoredEvent<'_>, changes: &mut Changes) -> Result<(), ApplyError> {
        let Some(customer_id) = entity(event.stream_id, payments::Account::CATEGORY) else {
            return Ok(());
        };
        let event = decode::<payments::Account>(event)?;
        if let payments::Event::AccountOpened { .. } = event {
            let account = AccountBalance {
                customer_id: customer_id.to_owned(),
                balance: 0,
                deposited: 0,
                charged: 0,
                refunded: 0,
            };
            return changes.put(BALANCES, customer_id.as_bytes(), account);
        }
        let account = changes
            .entry::<AccountBalance>(BALANCES, customer_id.as_bytes())?
            .as_mut()
            .ok_or_else(|| {
                ApplyError::Inconsistent(format!("the account of {customer_id:?} is not open"))
            })?;
        match event {
            payments::Event::AccountOpened { .. } => unreachable!("handled above"),
            payments::Event::Deposited { amount } => {
                account.balance = account.balance.saturating_add(amount);
                account.deposited = account.deposited.saturating_add(amount);
            }
            payments::Event::Charged { amount, .. } => {
                account.balance = account.balance.saturating_sub(amount);
                account.charged = account.charged.saturating_add(amount);
            }
            payments::Event::Refunded { amount, .. } => {
                account.balance = account.balance.saturating_add(amount);
                account.refunded = account.refunded.saturating_add(amount);
            }
        }
        Ok(())
    }
}

/// A page of accounts, in customer order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct AccountPage {
    /// The accounts of this page.
    pub accounts: Vec<AccountBalance>,
    /// Pass as `after` for the next page; absent on the last page.
    pub next_after: Option<String>,
}

/// One customer's account, if open.
pub fn account(model: &Model, customer_id: &str) -> Result<Option<AccountBalance>, Error> {
    projections::read(model, BALANCES, customer_id.as_bytes())
}

/// Up to `limit` accounts after the customer `after`, in customer order.
pub fn accounts(model: &Model, after: Option<&str>, limit: usize) -> Result<AccountPage, Error> {
    let (accounts, next_after) = page::<AccountBalance>(model, BALANCES, after, limit)?;
    Ok(AccountPage {
        accounts,
        next_after,
    })
}

#[cfg(test)]
mod tests {
    use payments::Event;
    use projections::ApplyError;

    use super::*;
    use crate::check::{account, check, order, rows};

    fn opened(customer_id: &str) -> crate::check::Recorded {
        account(
            customer_id,
            Event::AccountOpened {
                customer_id: customer_id.into(),
            },
        )
    }

    #[test]
    fn an_opened_account_has_a_zero_balance() {
        let model = check(&AccountsProjection, &[], &[opened("alice")]).unwrap();
        assert_eq!(
            rows::<AccountBalance>(&model, BALANCES),
            vec![AccountBalance {
                customer_id: "alice".into(),
                balance: 0,
                deposited: 0,
                charged: 0,
                refunded: 0,
            }]
        );
    }

    #[test]
    fn deposits_charges_and_refunds_move_the_balance() {
        let model = check(
            &AccountsProjection,
            &[opened("alice"), opened("bob")],
            &[
                account("alice", Event::Deposited { amount: 5000 }),
                account(
                    "alice",
                    Event::Charged {
                        order_id: "o1".into(),
                        amount: 360,
                    },
                ),
                account(
                    "alice",
                    Event::Charged {
                        order_id: "o2".into(),
                        amount: 100,
                    },
                ),
                account(
                    "alice",
                    Event::Refunded {
                        order_id: "o2".into(),
                        amount: 100,
                    },
                ),
            ],
        )
        .unwrap();
        let accounts = rows::<AccountBalance>(&model, BALANCES);
        assert_eq!(
            accounts[0],
            AccountBalance {
                customer_id: "alice".into(),
                balance: 4640,
                deposited: 5000,
                charged: 460,
                refunded: 100,
            }
        );
        assert_eq!(accounts[1].balance, 0, "bob's account is untouched");
    }

    #[test]
    fn a_deposit_to_an_account_never_opened_is_inconsistent() {
        let (error, _) = check(
            &AccountsProjection,
            &[],
            &[account("alice", Event::Deposited { amount: 1 })],
        )
        .unwrap_err();
        assert!(matches!(error, ApplyError::Inconsistent(_)), "{error}");
    }

    #[test]
    fn events_of_other_streams_are_ignored() {
        let model = check(
            &AccountsProjection,
            &[],
            &[order("o1", orders::Event::OrderConfirmed { total: 1 })],
        )
        .unwrap();
        assert!(model.tables().is_empty());
    }
}
