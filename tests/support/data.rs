//! Data sets the tests start from.

use cartflow::model::{CartCheckoutSession, CartStatus, SessionState, SfId};
use cartflow::sample::{self, SampleCart};
use cartflow::store::DataSet;

/// The sample data with the in-stock cart in checkout and its session `session_id` at
/// `state`, locked when `processing` (as a checkout that walked there leaves it).
pub fn in_checkout_at(session_id: SfId, state: SessionState, processing: bool) -> DataSet {
    let mut data = sample::dataset();
    if let Some(cart) = data
        .carts
        .iter_mut()
        .find(|c| c.id == SampleCart::InStock.id())
    {
        cart.status = CartStatus::Checkout;
    }
    data.sessions.push(CartCheckoutSession {
        id: session_id,
        web_cart_id: SampleCart::InStock.id(),
        state: Some(state),
        next_state: None,
        is_processing: processing,
        is_error: false,
        is_archived: false,
        background_operation_id: None,
        order_id: None,
        created_date: None,
        version: 1,
    });
    data
}
