//! The stores a test runs against, and [`delegate_store!`](crate::delegate_store) for test
//! wrappers around a store.

use std::any::Any;
use std::sync::Arc;

use cartflow::store::{DataSet, Durability, PostgresStore, SqliteStore};
use cartflow::{MemoryStore, Store};

/// What keeps a store's backing alive (a temporary directory, a test database) until dropped.
pub type Guard = Box<dyn Any>;

/// Opens a store holding `data`.
pub type Open = fn(DataSet) -> (Arc<dyn Store>, Option<Guard>);

/// A memory store of `data`.
pub fn memory(data: DataSet) -> (Arc<dyn Store>, Option<Guard>) {
    (Arc::new(MemoryStore::from_dataset(data).unwrap()), None)
}

/// A SQLite store of `data` in a temporary directory.
pub fn sqlite(data: DataSet) -> (Arc<dyn Store>, Option<Guard>) {
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteStore::open(dir.path().join("cartflow.db"), Durability::Normal).unwrap();
    store.import(&data).unwrap();
    (Arc::new(store), Some(Box::new(dir)))
}

/// A PostgreSQL store of `data` in a fresh test database; call only when
/// [`postgres_available`](super::postgres_available).
pub fn postgres(data: DataSet) -> (Arc<dyn Store>, Option<Guard>) {
    let db = super::postgres().expect("PostgreSQL was available a moment ago");
    let store = PostgresStore::connect(db.url()).unwrap();
    store.import(&data).unwrap();
    (Arc::new(store), Some(Box::new(db)))
}

/// Every store, by name: memory, SQLite, and PostgreSQL when the harness can provide it.
pub fn all() -> Vec<(&'static str, Open)> {
    let mut stores: Vec<(&'static str, Open)> = vec![("memory", memory), ("sqlite", sqlite)];
    if super::postgres_available() {
        stores.push(("postgres", postgres));
    }
    stores
}

/// Writes the named `Store` methods of a wrapper as calls to the same method of its field
/// `inner`, so that a wrapper writes only the methods it changes:
///
/// ```ignore
/// impl Store for Wrapper {
///     fn commit(&self, commit: &Commit) -> Result<(), StoreError> { ... }
///     delegate_store!(inner => user, load, cart);
///     // Each after `self.check()?` (or `self.count();`, written `before count`).
///     delegate_store!(inner, before check? => history, order);
///     // Each through the store `self.current()` answers.
///     delegate_store!(current() => cart_items);
/// }
/// ```
///
/// `claim_next` delegated runs the inner store's own claim, past the wrapper's `load` and
/// `commit`; left out, the trait's default claims through them.
#[macro_export]
macro_rules! delegate_store {
    ($inner:ident, before $hook:ident ? => $($method:ident),+ $(,)?) => {
        $($crate::delegate_store!(@method $method, $inner, [$hook ?]);)+
    };
    ($inner:ident, before $hook:ident => $($method:ident),+ $(,)?) => {
        $($crate::delegate_store!(@method $method, $inner, [$hook]);)+
    };
    ($inner:ident => $($method:ident),+ $(,)?) => {
        $($crate::delegate_store!(@method $method, $inner, []);)+
    };
    // Each through the store `self.getter()` answers.
    ($getter:ident() => $($method:ident),+ $(,)?) => {
        $($crate::delegate_store!(@method $method, @call $getter);)+
    };

    // Each method's signature, as the trait declares it.
    (@method user, $($with:tt)*) => {
        $crate::delegate_store!(@fn user(id: &::cartflow::model::SfId)
            -> Option<::cartflow::model::User>, $($with)*);
    };
    (@method load, $($with:tt)*) => {
        $crate::delegate_store!(@fn load(key: ::cartflow::store::LoadKey)
            -> ::cartflow::machine::Snapshot, $($with)*);
    };
    (@method commit, $($with:tt)*) => {
        $crate::delegate_store!(@fn commit(commit: &::cartflow::store::Commit) -> (), $($with)*);
    };
    (@method claimable_operations, $($with:tt)*) => {
        $crate::delegate_store!(@fn claimable_operations(limit: usize)
            -> Vec<::cartflow::model::SfId>, $($with)*);
    };
    (@method expired_operations, $($with:tt)*) => {
        $crate::delegate_store!(@fn expired_operations(
            now: ::chrono::DateTime<::chrono::Utc>,
            limit: usize
        ) -> Vec<::cartflow::model::SfId>, $($with)*);
    };
    (@method claim_next, $($with:tt)*) => {
        $crate::delegate_store!(@fn claim_next(claim: &mut ::cartflow::store::ClaimFn<'_>)
            -> Option<::cartflow::model::SfId>, $($with)*);
    };
    (@method cart, $($with:tt)*) => {
        $crate::delegate_store!(@fn cart(id: &::cartflow::model::SfId)
            -> Option<::cartflow::model::WebCart>, $($with)*);
    };
    (@method carts_after, $($with:tt)*) => {
        $crate::delegate_store!(@fn carts_after(
            after: Option<&::cartflow::model::SfId>,
            limit: usize
        ) -> Vec<::cartflow::model::WebCart>, $($with)*);
    };
    (@method cart_items, $($with:tt)*) => {
        $crate::delegate_store!(@fn cart_items(cart_id: &::cartflow::model::SfId)
            -> Vec<::cartflow::model::CartItem>, $($with)*);
    };
    (@method cart_item, $($with:tt)*) => {
        $crate::delegate_store!(@fn cart_item(id: &::cartflow::model::SfId)
            -> Option<::cartflow::model::CartItem>, $($with)*);
    };
    (@method validation_output, $($with:tt)*) => {
        $crate::delegate_store!(@fn validation_output(id: &::cartflow::model::SfId)
            -> Option<::cartflow::model::CartValidationOutput>, $($with)*);
    };
    (@method session, $($with:tt)*) => {
        $crate::delegate_store!(@fn session(id: &::cartflow::model::SfId)
            -> Option<::cartflow::model::CartCheckoutSession>, $($with)*);
    };
    (@method sessions_of, $($with:tt)*) => {
        $crate::delegate_store!(@fn sessions_of(cart_id: &::cartflow::model::SfId)
            -> Vec<::cartflow::model::CartCheckoutSession>, $($with)*);
    };
    (@method operation, $($with:tt)*) => {
        $crate::delegate_store!(@fn operation(id: &::cartflow::model::SfId)
            -> Option<::cartflow::model::BackgroundOperation>, $($with)*);
    };
    (@method operations_of, $($with:tt)*) => {
        $crate::delegate_store!(@fn operations_of(cart_id: &::cartflow::model::SfId)
            -> Vec<::cartflow::model::BackgroundOperation>, $($with)*);
    };
    (@method order, $($with:tt)*) => {
        $crate::delegate_store!(@fn order(id: &::cartflow::model::SfId)
            -> Option<::cartflow::model::Order>, $($with)*);
    };
    (@method validation_outputs, $($with:tt)*) => {
        $crate::delegate_store!(@fn validation_outputs(cart_id: &::cartflow::model::SfId)
            -> Vec<::cartflow::model::CartValidationOutput>, $($with)*);
    };
    (@method history, $($with:tt)*) => {
        $crate::delegate_store!(@fn history(cart_id: &::cartflow::model::SfId)
            -> Vec<::cartflow::store::HistoryEntry>, $($with)*);
    };
    (@method events_after, $($with:tt)*) => {
        $crate::delegate_store!(@fn events_after(
            after: Option<&::cartflow::events::EventPosition>,
            limit: usize
        ) -> Vec<::cartflow::events::PublishedEvent>, $($with)*);
    };
    (@method last_event, $($with:tt)*) => {
        $crate::delegate_store!(@fn last_event()
            -> Option<::cartflow::events::EventPosition>, $($with)*);
    };
    (@method webhook_cursor, $($with:tt)*) => {
        $crate::delegate_store!(@fn webhook_cursor(hook: &str)
            -> Option<::cartflow::events::EventPosition>, $($with)*);
    };
    (@method advance_webhook, $($with:tt)*) => {
        $crate::delegate_store!(@fn advance_webhook(
            hook: &str,
            to: Option<&::cartflow::events::EventPosition>,
            delivery: Option<&::cartflow::events::Delivery>
        ) -> (), $($with)*);
    };
    (@method deliveries, $($with:tt)*) => {
        $crate::delegate_store!(@fn deliveries(hook: &str, limit: usize)
            -> Vec<::cartflow::events::Delivery>, $($with)*);
    };
    (@method begin_keyed, $($with:tt)*) => {
        $crate::delegate_store!(@fn begin_keyed(
            request: &::cartflow::store::KeyedRequest,
            now: ::chrono::DateTime<::chrono::Utc>,
            expires_at: ::chrono::DateTime<::chrono::Utc>
        ) -> ::cartflow::store::KeyState, $($with)*);
    };
    (@method keep_answer, $($with:tt)*) => {
        $crate::delegate_store!(@fn keep_answer(
            request: &::cartflow::store::KeyedRequest,
            answer: &::cartflow::store::KeptAnswer
        ) -> (), $($with)*);
    };
    (@method release_key, $($with:tt)*) => {
        $crate::delegate_store!(@fn release_key(request: &::cartflow::store::KeyedRequest)
            -> (), $($with)*);
    };
    (@method owner_of, $($with:tt)*) => {
        $crate::delegate_store!(@fn owner_of(id: &::cartflow::model::SfId)
            -> Option<::cartflow::model::SfId>, $($with)*);
    };
    (@method operation_counts, $($with:tt)*) => {
        $crate::delegate_store!(@fn operation_counts() -> ::cartflow::store::OperationCounts,
            $($with)*);
    };
    (@method web_stores, $($with:tt)*) => {
        $crate::delegate_store!(@fn web_stores() -> Vec<::cartflow::model::WebStore>,
            $($with)*);
    };

    (@fn $name:ident($($arg:ident: $ty:ty),*) -> $ok:ty, @call $getter:ident) => {
        fn $name(&self, $($arg: $ty),*) -> ::std::result::Result<$ok, ::cartflow::StoreError> {
            self.$getter().$name($($arg),*)
        }
    };
    (@fn $name:ident($($arg:ident: $ty:ty),*) -> $ok:ty, $inner:ident,
        [$($hook:ident $($fallible:tt)?)?]) => {
        fn $name(&self, $($arg: $ty),*) -> ::std::result::Result<$ok, ::cartflow::StoreError> {
            $(self.$hook()$($fallible)?;)?
            self.$inner.$name($($arg),*)
        }
    };
}
