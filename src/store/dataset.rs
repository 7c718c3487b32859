//! The data-directory format: every record of a store as one JSON document.
//!
//! See `docs/data-format.md` for the format with an example.

use std::collections::BTreeSet;

use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};

use crate::model::{
    Account, BackgroundOperation, CartCheckoutSession, CartItem, CartValidationOutput, Order, SfId,
    User, WebCart, WebStore,
};
use crate::store::HistoryEntry;

/// How many units of a SKU a store has in stock.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase", deny_unknown_fields)]
pub struct StockLevel {
    /// The store.
    pub store_id: SfId,
    /// The SKU.
    pub sku: String,
    /// Units available.
    pub quantity: Decimal,
}

/// Every record a store holds, in the data-directory JSON format.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct DataSet {
    /// Stores.
    #[serde(default)]
    pub stores: Vec<WebStore>,
    /// Buyer accounts.
    #[serde(default)]
    pub accounts: Vec<Account>,
    /// Users.
    #[serde(default)]
    pub users: Vec<User>,
    /// Carts.
    #[serde(default)]
    pub carts: Vec<WebCart>,
    /// Cart lines.
    #[serde(default)]
    pub items: Vec<CartItem>,
    /// Stock for the built-in stock-table inventory provider.
    #[serde(default)]
    pub stock: Vec<StockLevel>,
    /// Checkout sessions.
    #[serde(default)]
    pub sessions: Vec<CartCheckoutSession>,
    /// Background operations.
    #[serde(default)]
    pub operations: Vec<BackgroundOperation>,
    /// Validation outputs.
    #[serde(default)]
    pub validation_outputs: Vec<CartValidationOutput>,
    /// Orders.
    #[serde(default)]
    pub orders: Vec<Order>,
    /// Transition history.
    #[serde(default)]
    pub history: Vec<HistoryEntry>,
}

/// Why a data set cannot be loaded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DataSetError {
    /// Two records share an ID.
    #[error("duplicate ID {0}")]
    Duplicate(SfId),
    /// A record refers to a record that must exist but does not.
    #[error("{record} refers to {field} {target}, which does not exist")]
    Dangling {
        /// The referring record.
        record: SfId,
        /// The field.
        field: &'static str,
        /// The missing record.
        target: SfId,
    },
    /// A cart has two active sessions or two New or Running operations.
    #[error("cart {0} has more than one {1}")]
    Invariant(SfId, &'static str),
}

impl DataSet {
    /// Checks IDs are unique (those of the records held inside carts, lines and orders
    /// included), lines, sessions and operations belong to existing records, and
    /// no cart has two active sessions or two active operations. Carts may name stores,
    /// accounts or owners that do not exist: requirements report those.
    pub fn validate(&self) -> Result<(), DataSetError> {
        let mut ids = BTreeSet::new();
        let all = self
            .stores
            .iter()
            .map(|r| r.id)
            .chain(self.accounts.iter().map(|r| r.id))
            .chain(self.users.iter().map(|r| r.id))
            .chain(self.carts.iter().map(|r| r.id))
            .chain(self.items.iter().map(|r| r.id))
            .chain(self.sessions.iter().map(|r| r.id))
            .chain(self.operations.iter().map(|r| r.id))
            .chain(self.validation_outputs.iter().map(|r| r.id))
            .chain(self.orders.iter().map(|r| r.id))
            .chain(
                crate::store::held_in_dataset(self)
                    .into_iter()
                    .flat_map(|(_, held)| held),
            );
        for id in all {
            if !ids.insert(id) {
                return Err(DataSetError::Duplicate(id));
            }
        }
        let carts: BTreeSet<SfId> = self.carts.iter().map(|c| c.id).collect();
        let sessions: BTreeSet<SfId> = self.sessions.iter().map(|s| s.id).collect();
        let dangling = |record: SfId, field: &'static str, target: SfId| DataSetError::Dangling {
            record,
            field,
            target,
        };
        for item in &self.items {
            if !carts.contains(&item.cart_id) {
                return Err(dangling(item.id, "CartId", item.cart_id));
            }
        }
        let mut active_sessions = BTreeSet::new();
        for session in &self.sessions {
            if !carts.contains(&session.web_cart_id) {
                return Err(dangling(session.id, "WebCartId", session.web_cart_id));
            }
            if !session.is_archived && !active_sessions.insert(session.web_cart_id) {
                return Err(DataSetError::Invariant(
                    session.web_cart_id,
                    "active session",
                ));
            }
        }
        let mut active_operations = BTreeSet::new();
        for op in &self.operations {
            if !carts.contains(&op.cart_id) {
                return Err(dangling(op.id, "CartId", op.cart_id));
            }
            if !sessions.contains(&op.checkout_session_id) {
                return Err(dangling(op.id, "CheckoutSessionId", op.checkout_session_id));
            }
            if op.status.is_active() && !active_operations.insert(op.cart_id) {
                return Err(DataSetError::Invariant(
                    op.cart_id,
                    "New or Running operation",
                ));
            }
        }
        for order in &self.orders {
            if !carts.contains(&order.cart_id) {
                return Err(dangling(order.id, "CartId", order.cart_id));
            }
        }
        for output in &self.validation_outputs {
            if !carts.contains(&output.cart_id) {
                return Err(dangling(output.id, "CartId", output.cart_id));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{CartTax, TaxType};

    #[test]
    fn a_held_record_may_not_take_another_records_id() {
        let mut data = crate::sample::dataset();
        assert_eq!(data.validate(), Ok(()));
        let taken = data.carts[0].id;
        let line = &mut data.items[0];
        line.taxes.push(CartTax {
            id: taken,
            cart_item_id: line.id,
            amount: rust_decimal::Decimal::ONE,
            tax_rate: None,
            name: "Tax".into(),
            tax_type: TaxType::Estimated,
            tax_calculation_date: chrono::DateTime::UNIX_EPOCH,
        });
        assert_eq!(data.validate(), Err(DataSetError::Duplicate(taken)));
    }
}
