//! The facade's body and query parsing without a server, for the fuzz targets in `fuzz/`: the
//! same functions the handlers call, nothing else. Only built with the `fuzzing` feature.

use super::SfError;
use super::actions::parse_inputs;
use super::records::{Object, parse_update};

/// The input objects of a `POST .../actions/standard/{name}` (or custom action) body, or
/// the facade's refusal of the body.
pub fn action_inputs(body: &[u8]) -> Result<Vec<serde_json::Value>, SfError> {
    parse_inputs(body)
}

/// The names of the objects `PATCH /sobjects/{Object}/{Id}` serves.
pub fn patch_objects() -> impl Iterator<Item = &'static str> {
    Object::ALL.into_iter().map(Object::name)
}

/// Checks a PATCH body of `object` (one of [`patch_objects`]) as the facade does: `None`
/// for an object the facade does not serve, otherwise `Ok` or the facade's refusal.
pub fn patch_body(object: &str, body: &[u8]) -> Option<Result<(), SfError>> {
    let object = Object::ALL.into_iter().find(|o| o.name() == object)?;
    Some(
        super::parse_json(body)
            .and_then(|value| parse_update(object, value))
            .map(|_| ()),
    )
}

/// Runs a SOQL query as `GET .../query` does, over the sample data as the sample buyer: the
/// number of rows it answers, or the facade's refusal of it.
pub fn query(text: &str) -> Result<usize, SfError> {
    super::query::answer_rows(text)
}
