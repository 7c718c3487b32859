//! `GET /services/data/vNN.N/query?q=<SOQL>`: the records of one object that a query of the
//! subset in [`super::soql`] selects, under the caller's sharing, in batches.
//!
//! A query is checked whole before anything is read: an unknown object is 400
//! `INVALID_TYPE`, an unknown field or a literal of the wrong type 400 `INVALID_FIELD`, an
//! Id literal that is no Id 400 `INVALID_QUERY_FILTER_OPERATOR`. Rows come from the carts the
//! query names (a top-level `Id`, `WebCartId`, `CartId`, `OrderId`... `=` or `IN`, served by
//! the stores' per-cart indexes) or, when it names none, from a scan of at most
//! [`MAX_SCANNED_CARTS`] carts; a row of a cart the caller cannot read is neither answered
//! nor counted. Each batch re-runs the query, so a locator names the query and a position,
//! and rows written in between may shift.

use std::cmp::Ordering;
use std::collections::HashMap;

use axum::extract::rejection::PathRejection;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode, Uri};
use axum::response::Response;
use chrono::{DateTime, Utc};
use percent_encoding::{NON_ALPHANUMERIC, percent_decode_str, utf8_percent_encode};
use rust_decimal::Decimal;
use serde_json::{Map, Value as Json, json};

use super::error::{SfError, json_response};
use super::records::{self, Object};
use super::schema::{self, Field, FieldType};
use super::soql::{
    self, Comparison, Condition, FieldPath, Literal, MAX_QUERY_CHARS, Name, Pattern, PatternPart,
    Query, Selection, Value,
};
use super::{AppState, api_version, authenticate, blocking};
use crate::error::StoreError;
use crate::model::{SfId, User, WebCart};
use crate::store::Store;

/// The most records one batch answers, and the batch size unless the caller asks for less.
pub(crate) const MAX_BATCH_SIZE: usize = 2_000;
/// The fewest records a batch answers when the caller asks for a batch size (as Salesforce).
pub(crate) const MIN_BATCH_SIZE: usize = 200;
/// The largest OFFSET accepted (as Salesforce).
pub(crate) const MAX_OFFSET: u64 = 2_000;
/// The most carts a query that names no cart examines; past this it is refused with 400
/// `OPERATION_TOO_LARGE`, and should name its carts.
pub(crate) const MAX_SCANNED_CARTS: usize = 10_000;
/// The carts read per page of a scan.
const CART_PAGE: usize = 500;
/// The header that sets the batch size: `Sforce-Query-Options: batchSize=N`.
const QUERY_OPTIONS_HEADER: &str = "sforce-query-options";

/// `GET .../query?q=`.
pub(super) async fn run(
    State(state): State<AppState>,
    headers: HeaderMap,
    uri: Uri,
    path: Result<Path<String>, PathRejection>,
) -> Result<Response, SfError> {
    let user = authenticate(&state, &headers).await?;
    let Path(version) = path.map_err(|_| SfError::not_found())?;
    let version = api_version(&version)?.number();
    let text = query_text(uri.query().unwrap_or_default())?;
    let page = Page {
        version,
        position: 0,
        batch: batch_size(&headers),
    };
    answer(&state, user, text, page).await
}

/// `GET .../query/{locator}`: the next batch of a query.
pub(super) async fn more(
    State(state): State<AppState>,
    headers: HeaderMap,
    path: Result<Path<(String, String)>, PathRejection>,
) -> Result<Response, SfError> {
    let user = authenticate(&state, &headers).await?;
    let Path((version, locator)) = path.map_err(|_| SfError::not_found())?;
    let version = api_version(&version)?.number();
    let (position, batch, text) = parse_locator(&locator).ok_or_else(|| {
        SfError::new(
            StatusCode::BAD_REQUEST,
            "INVALID_QUERY_LOCATOR",
            "invalid query locator",
        )
    })?;
    let page = Page {
        version,
        position,
        batch,
    };
    answer(&state, user, text, page).await
}

/// Which batch of a query's rows to answer.
struct Page {
    version: String,
    position: usize,
    batch: usize,
}

async fn answer(
    state: &AppState,
    user: User,
    text: String,
    page: Page,
) -> Result<Response, SfError> {
    let plan = Plan::new(&text)?;
    let engine = state.0.engine.clone();
    let version = page.version.clone();
    let rows = blocking(move || plan.run(engine.store().as_ref(), &user, &version))
        .await?
        .map_err(QueryError::into_sf)?;
    Ok(json_response(
        StatusCode::OK,
        &batch_json(rows, &text, &page),
    ))
}

/// The answer to a query: every row's count, and the page's rows.
fn batch_json(rows: Rows, text: &str, page: &Page) -> Json {
    let records = match rows {
        Rows::Count(count) => return json!({"totalSize": count, "done": true, "records": []}),
        Rows::Records(records) => records,
    };
    let total = records.len();
    let end = page.position.saturating_add(page.batch).min(total);
    let batch: Vec<Json> = records
        .into_iter()
        .skip(page.position)
        .take(end.saturating_sub(page.position))
        .collect();
    let mut body = json!({"totalSize": total, "done": end >= total, "records": batch});
    if end < total {
        let locator = format!("{end}-{}-{text}", page.batch);
        body["nextRecordsUrl"] = Json::String(format!(
            "/services/data/v{}/query/{}",
            page.version,
            utf8_percent_encode(&locator, NON_ALPHANUMERIC)
        ));
    }
    body
}

/// A locator's position, batch size and query.
fn parse_locator(locator: &str) -> Option<(usize, usize, String)> {
    let mut parts = locator.splitn(3, '-');
    let position = parts.next()?.parse().ok()?;
    let batch: usize = parts.next()?.parse().ok()?;
    let text = parts.next()?;
    let batch_ok = (1..=MAX_BATCH_SIZE).contains(&batch);
    (batch_ok && text.len() <= MAX_QUERY_CHARS * 4).then(|| (position, batch, text.to_owned()))
}

/// The `q` parameter, decoded; missing, not UTF-8 or too long is refused.
fn query_text(query_string: &str) -> Result<String, SfError> {
    let text = query_param(query_string, "q")
        .ok_or_else(|| malformed("A query string has to be specified: ?q=SELECT ..."))?
        .map_err(|_| malformed("The query is not UTF-8 text"))?;
    if text.chars().count() > MAX_QUERY_CHARS {
        return Err(SfError::new(
            StatusCode::URI_TOO_LONG,
            "URI_TOO_LONG",
            format!("A query may have at most {MAX_QUERY_CHARS} characters"),
        ));
    }
    Ok(text)
}

/// The first parameter `name` of a query string, decoded as a form encodes it (`+` is a
/// space); `Err` when it is not UTF-8.
pub(super) fn query_param(
    query_string: &str,
    name: &str,
) -> Option<Result<String, std::str::Utf8Error>> {
    let raw = query_string.split('&').find_map(|pair| {
        let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
        (key == name).then_some(value)
    })?;
    Some(
        percent_decode_str(&raw.replace('+', " "))
            .decode_utf8()
            .map(|text| text.into_owned()),
    )
}

/// The batch size `Sforce-Query-Options: batchSize=N` asks for, within
/// [`MIN_BATCH_SIZE`]..=[`MAX_BATCH_SIZE`]; the largest when not asked.
fn batch_size(headers: &HeaderMap) -> usize {
    headers
        .get(QUERY_OPTIONS_HEADER)
        .and_then(|v| v.to_str().ok())
        .and_then(|options| {
            options.split(',').find_map(|option| {
                let (name, value) = option.split_once('=')?;
                name.trim()
                    .eq_ignore_ascii_case("batchSize")
                    .then(|| value.trim().parse().ok())?
            })
        })
        .map_or(MAX_BATCH_SIZE, |n: usize| {
            n.clamp(MIN_BATCH_SIZE, MAX_BATCH_SIZE)
        })
}

fn malformed(reason: &str) -> SfError {
    SfError::new(StatusCode::BAD_REQUEST, "MALFORMED_QUERY", reason)
}

/// The number of rows `text` answers over the sample data, as the sample buyer (for the fuzz
/// target: the handler's planning and running, without a server).
#[cfg(feature = "fuzzing")]
pub(super) fn answer_rows(text: &str) -> Result<usize, SfError> {
    use std::sync::OnceLock;

    use crate::store::MemoryStore;
    static STORE: OnceLock<MemoryStore> = OnceLock::new();
    let store = STORE.get_or_init(|| {
        MemoryStore::from_dataset(crate::sample::dataset()).expect("the sample data loads")
    });
    let buyer = store
        .user(&crate::sample::buyer_id())
        .ok()
        .flatten()
        .expect("the sample buyer");
    let plan = Plan::new(text)?;
    match plan
        .run(store, &buyer, "64.0")
        .map_err(QueryError::into_sf)?
    {
        Rows::Count(count) => Ok(count),
        Rows::Records(records) => Ok(records.len()),
    }
}

// ---- Planning: the query checked against the objects' fields ----

/// A field of the queried object, or of the parent a relationship reaches.
#[derive(Debug, Clone, Copy)]
struct Column {
    /// The relationship's name, the reference field and the parent's object.
    through: Option<(&'static str, Field, Object)>,
    field: Field,
}

/// A value as the query compares it.
#[derive(Debug, Clone, PartialEq)]
enum Cell {
    Null,
    Id(SfId),
    Text(String),
    Bool(bool),
    Number(Decimal),
    Time(DateTime<Utc>),
    /// A structure: selected, never compared.
    Other,
}

/// A WHERE condition over resolved columns and typed values.
#[derive(Debug, Clone)]
enum Test {
    And(Vec<Test>),
    Or(Vec<Test>),
    Not(Box<Test>),
    Compare(Column, Comparison, Cell),
    In(Column, bool, Vec<Cell>),
    Like(Column, Pattern),
}

/// A query, checked: what to read, keep, sort and answer.
struct Plan {
    object: Object,
    /// The selected columns, or `None` for `COUNT()`.
    columns: Option<Vec<Column>>,
    /// The rows kept.
    test: Option<Test>,
    /// The sort keys, first to last: the column, descending, nulls first.
    order: Vec<(Column, bool, bool)>,
    /// Rows skipped before the first one answered.
    offset: usize,
    /// At most this many rows.
    limit: Option<usize>,
}

/// What a query answers.
enum Rows {
    Count(usize),
    Records(Vec<Json>),
}

impl Plan {
    fn new(text: &str) -> Result<Plan, SfError> {
        let query = soql::parse(text).map_err(|e| malformed(&e.message(text)))?;
        Planner { text }.plan(query)
    }

    fn run(&self, store: &dyn Store, user: &User, version: &str) -> Result<Rows, QueryError> {
        let mut reader = Reader::new(store, version);
        let reached = self.relationships();
        let mut rows = Vec::new();
        for cart in self.carts(store)? {
            if cart.access_of(user).is_none() {
                continue;
            }
            for (id, fields) in rows_of(store, self.object, &cart)? {
                let row = reader.row(&reached, id, fields)?;
                if self.test.as_ref().is_none_or(|t| holds(t, &row)) {
                    rows.push(row);
                }
            }
        }
        self.sort(&mut rows);
        let kept = rows
            .into_iter()
            .skip(self.offset)
            .take(self.limit.unwrap_or(usize::MAX));
        Ok(match &self.columns {
            None => Rows::Count(kept.count()),
            Some(columns) => Rows::Records(
                kept.map(|r| reader.project(self.object, columns, &r))
                    .collect(),
            ),
        })
    }

    /// Each relationship a selected, tested or sorted column goes through, once: worked out
    /// once per query, not per row.
    fn relationships(&self) -> Vec<(&'static str, Field, Object)> {
        let tested = self.test.iter().flat_map(tested_columns);
        let used = self.columns.iter().flatten().copied();
        let sorted = self.order.iter().map(|o| o.0);
        let mut reached: Vec<(&'static str, Field, Object)> = Vec::new();
        for through in used.chain(tested).chain(sorted).filter_map(|c| c.through) {
            if !reached.iter().any(|r| r.0 == through.0) {
                reached.push(through);
            }
        }
        reached
    }

    fn sort(&self, rows: &mut [Row]) {
        if self.order.is_empty() {
            return;
        }
        rows.sort_by(|a, b| {
            self.order
                .iter()
                .map(|(column, descending, nulls_first)| {
                    order_cells(&a.cell(column), &b.cell(column), *descending, *nulls_first)
                })
                .find(|o| o.is_ne())
                .unwrap_or(Ordering::Equal)
        });
    }

    /// The carts whose rows the query reads: those a top-level `=` or `IN` on an Id or a
    /// reference names, or else every cart (up to [`MAX_SCANNED_CARTS`]).
    fn carts(&self, store: &dyn Store) -> Result<Vec<WebCart>, QueryError> {
        match self.test.as_ref().and_then(|t| self.pinned_ids(t)) {
            Some((object, ids)) => pinned_carts(store, object, &ids),
            None => scan_carts(store),
        }
    }

    /// The Ids a top-level conjunct pins, and their object.
    fn pinned_ids(&self, test: &Test) -> Option<(Object, Vec<SfId>)> {
        let conjuncts = match test {
            Test::And(parts) => parts.as_slice(),
            other => std::slice::from_ref(other),
        };
        conjuncts.iter().find_map(|t| {
            let (column, values) = match t {
                Test::Compare(column, Comparison::Equal, value) => {
                    (column, std::slice::from_ref(value))
                }
                Test::In(column, false, values) => (column, values.as_slice()),
                _ => return None,
            };
            let object = match (column.through, column.field.kind) {
                (None, FieldType::Id) => self.object,
                (None, FieldType::Reference(Some(parent))) => parent,
                _ => return None,
            };
            // `= null` names no record, so it pins no cart.
            let ids = values.iter().map(|v| match v {
                Cell::Id(id) => Some(*id),
                _ => None,
            });
            Some((object, ids.collect::<Option<Vec<SfId>>>()?))
        })
    }
}

/// The carts of the `object` records `ids` (each once, in the order first named).
fn pinned_carts(
    store: &dyn Store,
    object: Object,
    ids: &[SfId],
) -> Result<Vec<WebCart>, QueryError> {
    let mut carts: Vec<WebCart> = Vec::new();
    for id in ids {
        let Some((_, cart_id)) = records::find(store, object, id)? else {
            continue;
        };
        if carts.iter().any(|c| c.id == cart_id) {
            continue;
        }
        carts.extend(store.cart(&cart_id)?);
    }
    Ok(carts)
}

/// Every cart, page by page; more than [`MAX_SCANNED_CARTS`] is refused.
fn scan_carts(store: &dyn Store) -> Result<Vec<WebCart>, QueryError> {
    match first_carts(store, MAX_SCANNED_CARTS)? {
        (_, true) => Err(QueryError::TooLarge),
        (carts, false) => Ok(carts),
    }
}

/// The first `limit` carts in Id order, read page by page, and whether there are more.
pub(super) fn first_carts(
    store: &dyn Store,
    limit: usize,
) -> Result<(Vec<WebCart>, bool), StoreError> {
    let mut carts: Vec<WebCart> = Vec::new();
    loop {
        let page = store.carts_after(carts.last().map(|c| &c.id), CART_PAGE)?;
        let last_page = page.len() < CART_PAGE;
        carts.extend(page);
        if carts.len() > limit {
            carts.truncate(limit);
            return Ok((carts, true));
        }
        if last_page {
            return Ok((carts, false));
        }
    }
}

/// The rows of `object` that belong to `cart`, each with its Id.
fn rows_of(
    store: &dyn Store,
    object: Object,
    cart: &WebCart,
) -> Result<Vec<(SfId, Json)>, StoreError> {
    Ok(match object {
        Object::WebCart => vec![(cart.id, cart.shown())],
        Object::CartCheckoutSession => store
            .sessions_of(&cart.id)?
            .iter()
            .map(|s| (s.id, records::to_value(s)))
            .collect(),
        Object::BackgroundOperation => store
            .operations_of(&cart.id)?
            .iter()
            .map(|o| (o.id, records::to_value(o)))
            .collect(),
        Object::Order
        | Object::OrderItem
        | Object::OrderDeliveryGroup
        | Object::PaymentAuthorization => order_rows(store, object, &cart.id)?,
        child => records::children(store, Object::WebCart, &cart.id, child)?,
    })
}

/// The orders of a cart (those its sessions made), or their items, delivery groups or
/// payment authorisations.
fn order_rows(
    store: &dyn Store,
    object: Object,
    cart_id: &SfId,
) -> Result<Vec<(SfId, Json)>, StoreError> {
    let mut order_ids: Vec<SfId> = Vec::new();
    for session in store.sessions_of(cart_id)? {
        if let Some(id) = session.order_id.filter(|id| !order_ids.contains(id)) {
            order_ids.push(id);
        }
    }
    let mut rows = Vec::new();
    for id in order_ids {
        match object {
            Object::Order => rows.extend(store.order(&id)?.map(|o| (o.id, records::to_value(&o)))),
            Object::PaymentAuthorization => rows.extend(
                store
                    .order(&id)?
                    .and_then(|o| o.payment_authorization)
                    .map(|a| (a.id, records::to_value(&a))),
            ),
            child => rows.extend(records::order_children(store, &id, child)?),
        }
    }
    Ok(rows)
}

/// Why a checked query could not be answered.
enum QueryError {
    /// The query names no cart and more than [`MAX_SCANNED_CARTS`] exist.
    TooLarge,
    /// The store failed.
    Store(StoreError),
}

impl From<StoreError> for QueryError {
    fn from(e: StoreError) -> QueryError {
        QueryError::Store(e)
    }
}

impl QueryError {
    fn into_sf(self) -> SfError {
        match self {
            QueryError::TooLarge => SfError::new(
                StatusCode::BAD_REQUEST,
                "OPERATION_TOO_LARGE",
                format!(
                    "This query names no cart and would examine more than {MAX_SCANNED_CARTS} \
                     carts: filter by an Id or by WebCartId, CartId or OrderId with = or IN"
                ),
            ),
            QueryError::Store(e) => SfError::internal(&e),
        }
    }
}

/// Checks a parsed query against the objects' fields.
struct Planner<'q> {
    text: &'q str,
}

impl Planner<'_> {
    fn plan(&self, query: Query) -> Result<Plan, SfError> {
        let object =
            Object::parse(&query.object.text).ok_or_else(|| self.invalid_type(&query.object))?;
        let columns = match &query.selection {
            Selection::Count => None,
            Selection::Fields(paths) => Some(self.columns(object, paths)?),
        };
        let test = query
            .filter
            .as_ref()
            .map(|c| self.test(object, c))
            .transpose()?;
        let order = query
            .order_by
            .iter()
            .map(|key| {
                let column = self.column(object, &key.field)?;
                if column.field.kind == FieldType::Compound {
                    return Err(self.invalid_field(
                        &key.field.field,
                        &format!("field '{}' can not be sorted in a query call", key.field),
                    ));
                }
                Ok((column, key.descending, key.nulls_first))
            })
            .collect::<Result<_, _>>()?;
        let offset = query.offset.unwrap_or(0);
        if offset > MAX_OFFSET {
            return Err(SfError::new(
                StatusCode::BAD_REQUEST,
                "NUMBER_OUTSIDE_VALID_RANGE",
                soql::located(
                    self.text,
                    query.offset_at,
                    &format!("Maximum SOQL offset allowed is {MAX_OFFSET}"),
                ),
            ));
        }
        Ok(Plan {
            object,
            columns,
            test,
            order,
            offset: offset as usize,
            limit: query
                .limit
                .map(|l| usize::try_from(l).unwrap_or(usize::MAX)),
        })
    }

    fn columns(&self, object: Object, paths: &[FieldPath]) -> Result<Vec<Column>, SfError> {
        let mut columns: Vec<Column> = Vec::new();
        for path in paths {
            let column = self.column(object, path)?;
            let same = |c: &Column| {
                c.field == column.field && c.through.map(|t| t.0) == column.through.map(|t| t.0)
            };
            if columns.iter().any(same) {
                return Err(
                    self.invalid_field(&path.field, &format!("duplicate field selected: {path}"))
                );
            }
            columns.push(column);
        }
        Ok(columns)
    }

    fn column(&self, object: Object, path: &FieldPath) -> Result<Column, SfError> {
        let (through, on) = match &path.relationship {
            None => (None, object),
            Some(name) => {
                let (reference, parent) =
                    schema::relationship(object, &name.text).ok_or_else(|| {
                        self.invalid_field(
                            name,
                            &format!(
                                "Didn't understand relationship '{}' in field path. If you are \
                             attempting to use a custom relationship, be sure to append the \
                             '__r' after the custom relationship name. Please reference your \
                             WSDL or the describe call for the appropriate names.",
                                name.text
                            ),
                        )
                    })?;
                let relationship = reference.name.strip_suffix("Id").unwrap_or(reference.name);
                (Some((relationship, reference, parent)), parent)
            }
        };
        let field = schema::field(on, &path.field.text).ok_or_else(|| {
            self.invalid_field(
                &path.field,
                &format!(
                    "No such column '{}' on entity '{}'. If you are attempting to use a custom \
                     field, be sure to append the '__c' after the custom field name. Please \
                     reference your WSDL or the describe call for the appropriate names.",
                    path.field.text,
                    on.name()
                ),
            )
        })?;
        Ok(Column { through, field })
    }

    fn test(&self, object: Object, condition: &Condition) -> Result<Test, SfError> {
        let all = |parts: &[Condition]| {
            parts
                .iter()
                .map(|c| self.test(object, c))
                .collect::<Result<Vec<_>, _>>()
        };
        Ok(match condition {
            Condition::And(parts) => Test::And(all(parts)?),
            Condition::Or(parts) => Test::Or(all(parts)?),
            Condition::Not(inner) => Test::Not(Box::new(self.test(object, inner)?)),
            Condition::Compare(path, op, literal) => {
                let column = self.filterable(object, path)?;
                if column.field.kind == FieldType::Boolean
                    && !matches!(op, Comparison::Equal | Comparison::NotEqual)
                {
                    return Err(self.bad_operator(literal.at, "invalid operator on boolean field"));
                }
                Test::Compare(column, *op, self.cell(&column, path, literal)?)
            }
            Condition::In {
                field,
                negated,
                values,
            } => {
                let column = self.filterable(object, field)?;
                let cells = values
                    .iter()
                    .map(|v| self.cell(&column, field, v))
                    .collect::<Result<_, _>>()?;
                Test::In(column, *negated, cells)
            }
            Condition::Like(path, pattern) => {
                let column = self.filterable(object, path)?;
                if !matches!(column.field.kind, FieldType::Text | FieldType::Picklist) {
                    return Err(self.bad_operator(
                        path.field.at,
                        &format!("invalid operator LIKE on field '{path}': LIKE compares text"),
                    ));
                }
                Test::Like(column, pattern.clone())
            }
        })
    }

    fn filterable(&self, object: Object, path: &FieldPath) -> Result<Column, SfError> {
        let column = self.column(object, path)?;
        if column.field.kind == FieldType::Compound {
            return Err(self.invalid_field(
                &path.field,
                &format!("field '{path}' can not be filtered in a query call"),
            ));
        }
        Ok(column)
    }

    /// `literal` as `column` compares it; a literal of another type is refused.
    fn cell(&self, column: &Column, path: &FieldPath, literal: &Literal) -> Result<Cell, SfError> {
        let kind = column.field.kind;
        let cell = match (&literal.value, kind) {
            (Value::Null, _) => Some(Cell::Null),
            (Value::Text(text), FieldType::Id | FieldType::Reference(_)) => {
                let id = SfId::parse(text).map_err(|_| {
                    self.bad_operator(literal.at, &format!("invalid ID field: {text}"))
                })?;
                Some(Cell::Id(id))
            }
            (Value::Text(text), FieldType::Text | FieldType::Picklist) => {
                Some(Cell::Text(text.clone()))
            }
            (Value::Bool(b), FieldType::Boolean) => Some(Cell::Bool(*b)),
            (Value::Number(n), FieldType::Number | FieldType::Currency | FieldType::Int) => {
                Some(Cell::Number(*n))
            }
            (Value::DateTime(t), FieldType::DateTime) => Some(Cell::Time(*t)),
            _ => None,
        };
        cell.ok_or_else(|| {
            let quoting = if matches!(
                kind,
                FieldType::Text | FieldType::Picklist | FieldType::Id | FieldType::Reference(_)
            ) {
                "should be enclosed in quotes"
            } else {
                "should not be enclosed in quotes"
            };
            let reason = format!(
                "value of filter criterion for field '{path}' must be of type {} and {quoting}",
                kind.soql_name()
            );
            SfError::new(
                StatusCode::BAD_REQUEST,
                "INVALID_FIELD",
                soql::located(self.text, literal.at, &reason),
            )
        })
    }

    fn invalid_type(&self, object: &Name) -> SfError {
        let reason = format!(
            "sObject type '{}' is not supported. If you are attempting to use a custom object, be \
             sure to append the '__c' after the entity name. Please reference your WSDL or the \
             describe call for the appropriate names.",
            object.text
        );
        SfError::new(
            StatusCode::BAD_REQUEST,
            "INVALID_TYPE",
            soql::located(self.text, object.at, &reason),
        )
    }

    fn invalid_field(&self, at: &Name, reason: &str) -> SfError {
        SfError::new(
            StatusCode::BAD_REQUEST,
            "INVALID_FIELD",
            soql::located(self.text, at.at, reason),
        )
    }

    fn bad_operator(&self, at: usize, reason: &str) -> SfError {
        SfError::new(
            StatusCode::BAD_REQUEST,
            "INVALID_QUERY_FILTER_OPERATOR",
            soql::located(self.text, at, reason),
        )
    }
}

// ---- Running: rows, their parents, tests and order ----

/// A row: its Id, its fields, and the parents the query reaches, by relationship.
struct Row {
    id: SfId,
    fields: Json,
    parents: HashMap<&'static str, Option<(SfId, Json)>>,
}

impl Row {
    fn value(&self, column: &Column) -> Option<&Json> {
        match column.through {
            None => self.fields.get(column.field.name),
            Some((relationship, ..)) => {
                let (_, parent) = self.parents.get(relationship)?.as_ref()?;
                parent.get(column.field.name)
            }
        }
    }

    fn cell(&self, column: &Column) -> Cell {
        cell_of(self.value(column), column.field.kind)
    }
}

/// A record's field as the query compares it.
fn cell_of(value: Option<&Json>, kind: FieldType) -> Cell {
    let Some(value) = value.filter(|v| !v.is_null()) else {
        return Cell::Null;
    };
    let text = value.as_str();
    let parsed = match kind {
        FieldType::Id | FieldType::Reference(_) => {
            text.and_then(|t| SfId::parse(t).ok()).map(Cell::Id)
        }
        FieldType::Text | FieldType::Picklist => text.map(|t| Cell::Text(t.to_owned())),
        FieldType::Boolean => value.as_bool().map(Cell::Bool),
        FieldType::Number | FieldType::Currency | FieldType::Int => match value {
            Json::Number(n) => n.to_string().parse().ok(),
            Json::String(s) => s.parse().ok(),
            _ => None,
        }
        .map(Cell::Number),
        FieldType::DateTime => text
            .and_then(|t| DateTime::parse_from_rfc3339(t).ok())
            .map(|t| Cell::Time(t.with_timezone(&Utc))),
        FieldType::Compound => None,
    };
    parsed.unwrap_or(Cell::Other)
}

/// Reads the parents rows reach, once each, and shapes the records answered.
struct Reader<'s> {
    store: &'s dyn Store,
    version: &'s str,
    parents: HashMap<SfId, Option<Json>>,
}

impl<'s> Reader<'s> {
    fn new(store: &'s dyn Store, version: &'s str) -> Reader<'s> {
        Reader {
            store,
            version,
            parents: HashMap::new(),
        }
    }

    /// A row, with each parent in `reached` (the plan's relationships).
    fn row(
        &mut self,
        reached: &[(&'static str, Field, Object)],
        id: SfId,
        fields: Json,
    ) -> Result<Row, StoreError> {
        let mut row = Row {
            id,
            fields,
            parents: HashMap::new(),
        };
        for &(relationship, reference, parent) in reached {
            let parent_id = row
                .fields
                .get(reference.name)
                .and_then(Json::as_str)
                .and_then(|t| SfId::parse(t).ok());
            let record = match parent_id {
                Some(parent_id) => self.parent(parent, parent_id)?.map(|r| (parent_id, r)),
                None => None,
            };
            row.parents.insert(relationship, record);
        }
        Ok(row)
    }

    fn parent(&mut self, object: Object, id: SfId) -> Result<Option<Json>, StoreError> {
        if let Some(known) = self.parents.get(&id) {
            return Ok(known.clone());
        }
        let record = records::find(self.store, object, &id)?.map(|(r, _)| r);
        self.parents.insert(id, record.clone());
        Ok(record)
    }

    /// The record answered for `row`: its attributes and the selected columns, a parent's
    /// under its relationship.
    fn project(&self, object: Object, columns: &[Column], row: &Row) -> Json {
        let mut record = Map::new();
        record.insert("attributes".into(), self.attributes(object, &row.id));
        for column in columns {
            let value = row.value(column).cloned().unwrap_or(Json::Null);
            let Some((relationship, _, parent)) = column.through else {
                record.insert(column.field.name.into(), value);
                continue;
            };
            let Some(Some((parent_id, _))) = row.parents.get(relationship) else {
                record.insert(relationship.into(), Json::Null);
                continue;
            };
            let entry = record
                .entry(relationship)
                .or_insert_with(|| json!({"attributes": self.attributes(parent, parent_id)}));
            entry[column.field.name] = value;
        }
        Json::Object(record)
    }

    fn attributes(&self, object: Object, id: &SfId) -> Json {
        json!({
            "type": object.name(),
            "url": format!("/services/data/v{}/sobjects/{}/{id}", self.version, object.name()),
        })
    }
}

/// Every column a test reads.
fn tested_columns(test: &Test) -> Vec<Column> {
    match test {
        Test::And(parts) | Test::Or(parts) => parts.iter().flat_map(tested_columns).collect(),
        Test::Not(inner) => tested_columns(inner),
        Test::Compare(column, ..) | Test::In(column, ..) | Test::Like(column, _) => vec![*column],
    }
}

fn holds(test: &Test, row: &Row) -> bool {
    match test {
        Test::And(parts) => parts.iter().all(|t| holds(t, row)),
        Test::Or(parts) => parts.iter().any(|t| holds(t, row)),
        Test::Not(inner) => !holds(inner, row),
        Test::Compare(column, op, value) => compares(&row.cell(column), *op, value),
        Test::In(column, negated, values) => {
            let cell = row.cell(column);
            let found = values.iter().any(|v| compares(&cell, Comparison::Equal, v));
            found != *negated
        }
        Test::Like(column, pattern) => match row.cell(column) {
            Cell::Text(text) => like(&text, &pattern.0),
            _ => false,
        },
    }
}

/// SOQL's comparison: `= null` and `!= null` test for a value; otherwise a row without a
/// value is only `!=`. Text compares without regard to case.
fn compares(cell: &Cell, op: Comparison, value: &Cell) -> bool {
    match (cell, value) {
        (Cell::Null, Cell::Null) => op == Comparison::Equal,
        (_, Cell::Null) => op == Comparison::NotEqual,
        (Cell::Null, _) => op == Comparison::NotEqual,
        _ => match compare(cell, value) {
            None => op == Comparison::NotEqual,
            Some(order) => match op {
                Comparison::Equal => order.is_eq(),
                Comparison::NotEqual => order.is_ne(),
                Comparison::Less => order.is_lt(),
                Comparison::LessOrEqual => order.is_le(),
                Comparison::Greater => order.is_gt(),
                Comparison::GreaterOrEqual => order.is_ge(),
            },
        },
    }
}

/// How two values of one type compare; `None` for values that do not.
fn compare(a: &Cell, b: &Cell) -> Option<Ordering> {
    Some(match (a, b) {
        (Cell::Id(a), Cell::Id(b)) => a.as_str().cmp(b.as_str()),
        (Cell::Text(a), Cell::Text(b)) => a.to_lowercase().cmp(&b.to_lowercase()),
        (Cell::Bool(a), Cell::Bool(b)) => a.cmp(b),
        (Cell::Number(a), Cell::Number(b)) => a.cmp(b),
        (Cell::Time(a), Cell::Time(b)) => a.cmp(b),
        _ => return None,
    })
}

/// The order of two rows by one key: rows without a value first or last as asked.
fn order_cells(a: &Cell, b: &Cell, descending: bool, nulls_first: bool) -> Ordering {
    let null = |c: &Cell| matches!(c, Cell::Null | Cell::Other);
    match (null(a), null(b)) {
        (true, true) => Ordering::Equal,
        (true, false) if nulls_first => Ordering::Less,
        (true, false) => Ordering::Greater,
        (false, true) if nulls_first => Ordering::Greater,
        (false, true) => Ordering::Less,
        (false, false) => {
            let order = compare(a, b).unwrap_or(Ordering::Equal);
            if descending { order.reverse() } else { order }
        }
    }
}

/// Whether `text` matches a LIKE pattern, without regard to case.
fn like(text: &str, pattern: &[PatternPart]) -> bool {
    let text: Vec<char> = text.to_lowercase().chars().collect();
    let pattern: Vec<PatternPart> = pattern
        .iter()
        .map(|p| match p {
            PatternPart::Char(c) => PatternPart::Char(c.to_lowercase().next().unwrap_or(*c)),
            other => *other,
        })
        .collect();
    // Greedy matching with one backtrack point: the last `%` seen.
    let (mut t, mut p) = (0, 0);
    let mut resume: Option<(usize, usize)> = None;
    while t < text.len() {
        match pattern.get(p) {
            Some(PatternPart::AnyRun) => {
                resume = Some((p, t));
                p += 1;
            }
            Some(PatternPart::AnyOne) => (t, p) = (t + 1, p + 1),
            Some(PatternPart::Char(c)) if *c == text[t] => (t, p) = (t + 1, p + 1),
            _ => match resume {
                Some((star, at)) => {
                    resume = Some((star, at + 1));
                    (t, p) = (at + 1, star + 1);
                }
                None => return false,
            },
        }
    }
    pattern[p..].iter().all(|part| *part == PatternPart::AnyRun)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pattern(text: &str) -> Vec<PatternPart> {
        let query =
            soql::parse(&format!("SELECT Id FROM CartItem WHERE Sku LIKE '{text}'")).unwrap();
        match query.filter {
            Some(Condition::Like(_, Pattern(parts))) => parts,
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn like_matches_runs_single_characters_and_escapes_without_regard_to_case() {
        let cases = [
            ("SKU-1", "sku%", true),
            ("SKU-1", "%-1", true),
            ("SKU-1", "%K_-%", true),
            ("SKU-1", "SKU", false),
            ("SKU-1", "S_U-1", true),
            ("SKU-1", "S_U-12", false),
            ("a_b", r"a\_b", true),
            ("axb", r"a\_b", false),
            ("50%", r"50\%", true),
            ("500", r"50\%", false),
            ("", "%", true),
            ("", "_", false),
            ("aaa", "%a%a%a%", true),
            ("aa", "%a%a%a%", false),
        ];
        for (text, p, expected) in cases {
            assert_eq!(like(text, &pattern(p)), expected, "{text:?} LIKE {p:?}");
        }
    }

    #[test]
    fn a_missing_value_is_only_unequal() {
        let one = Cell::Number(Decimal::ONE);
        assert!(compares(&Cell::Null, Comparison::Equal, &Cell::Null));
        assert!(!compares(&one, Comparison::Equal, &Cell::Null));
        assert!(compares(&one, Comparison::NotEqual, &Cell::Null));
        assert!(compares(&Cell::Null, Comparison::NotEqual, &one));
        assert!(!compares(&Cell::Null, Comparison::Less, &one));
        assert!(!compares(&Cell::Null, Comparison::GreaterOrEqual, &one));
        assert!(compares(
            &Cell::Number(Decimal::new(10, 1)),
            Comparison::Equal,
            &one
        ));
        assert!(compares(
            &Cell::Text("Active".into()),
            Comparison::Equal,
            &Cell::Text("ACTIVE".into())
        ));
    }

    #[test]
    fn rows_without_a_value_sort_where_asked() {
        let one = Cell::Number(Decimal::ONE);
        let two = Cell::Number(Decimal::TWO);
        assert_eq!(order_cells(&one, &two, false, true), Ordering::Less);
        assert_eq!(order_cells(&one, &two, true, false), Ordering::Greater);
        assert_eq!(order_cells(&Cell::Null, &one, false, true), Ordering::Less);
        assert_eq!(
            order_cells(&Cell::Null, &one, true, false),
            Ordering::Greater
        );
        assert_eq!(
            order_cells(&Cell::Null, &Cell::Null, false, true),
            Ordering::Equal
        );
    }

    #[test]
    fn a_locator_carries_its_position_batch_and_query() {
        assert_eq!(
            parse_locator("2000-500-SELECT Id FROM WebCart WHERE Name = 'a-b'"),
            Some((
                2000,
                500,
                "SELECT Id FROM WebCart WHERE Name = 'a-b'".into()
            ))
        );
        assert_eq!(parse_locator("x-500-SELECT Id FROM WebCart"), None);
        assert_eq!(parse_locator("0-0-SELECT Id FROM WebCart"), None);
        assert_eq!(parse_locator("0-2001-SELECT Id FROM WebCart"), None);
        assert_eq!(parse_locator("10"), None);
    }

    #[test]
    fn the_batch_size_is_clamped_to_salesforces_range() {
        let with = |value: &str| {
            let mut headers = HeaderMap::new();
            headers.insert(QUERY_OPTIONS_HEADER, value.parse().unwrap());
            batch_size(&headers)
        };
        assert_eq!(batch_size(&HeaderMap::new()), MAX_BATCH_SIZE);
        assert_eq!(with("batchSize=500"), 500);
        assert_eq!(with("batchSize=5"), MIN_BATCH_SIZE);
        assert_eq!(with("batchSize=100000"), MAX_BATCH_SIZE);
        assert_eq!(with("other=1, batchsize = 300"), 300);
        assert_eq!(with("batchSize=many"), MAX_BATCH_SIZE);
    }

    #[test]
    fn the_query_text_is_decoded_and_bounded() {
        assert_eq!(
            query_text("q=SELECT+Id+FROM+WebCart").unwrap(),
            "SELECT Id FROM WebCart"
        );
        assert_eq!(query_text("x=1&q=a%2Bb%27").unwrap(), "a+b'");
        assert_eq!(query_text("").unwrap_err().code, "MALFORMED_QUERY");
        assert_eq!(query_text("q=%FF").unwrap_err().code, "MALFORMED_QUERY");
        let long = format!("q={}", "a".repeat(MAX_QUERY_CHARS + 1));
        assert_eq!(
            query_text(&long).unwrap_err().status,
            StatusCode::URI_TOO_LONG
        );
    }

    #[test]
    fn planning_refuses_what_the_objects_do_not_have() {
        let code = |text: &str| Plan::new(text).err().map(|e| e.code);
        assert_eq!(code("SELECT Id FROM WebCart"), None);
        assert_eq!(
            code("SELECT Id FROM Nothing").as_deref(),
            Some("INVALID_TYPE")
        );
        assert_eq!(
            code("SELECT Foo FROM WebCart").as_deref(),
            Some("INVALID_FIELD")
        );
        assert_eq!(
            code("SELECT Id, id FROM WebCart").as_deref(),
            Some("INVALID_FIELD")
        );
        assert_eq!(
            code("SELECT Owner.Name FROM WebCart").as_deref(),
            Some("INVALID_FIELD")
        );
        assert_eq!(code("SELECT WebCart.Status FROM CartCheckoutSession"), None);
        assert_eq!(
            code("SELECT WebCart.Nope FROM CartCheckoutSession").as_deref(),
            Some("INVALID_FIELD")
        );
        assert_eq!(
            code("SELECT Id FROM WebCart WHERE Status = 5").as_deref(),
            Some("INVALID_FIELD")
        );
        assert_eq!(
            code("SELECT Id FROM CartItem WHERE Quantity = '5'").as_deref(),
            Some("INVALID_FIELD")
        );
        assert_eq!(
            code("SELECT Id FROM WebCart WHERE DeliverTo = null").as_deref(),
            Some("INVALID_FIELD")
        );
        assert_eq!(
            code("SELECT Id FROM WebCart ORDER BY Shares").as_deref(),
            Some("INVALID_FIELD")
        );
        assert_eq!(
            code("SELECT Id FROM WebCart WHERE Id = 'nope'").as_deref(),
            Some("INVALID_QUERY_FILTER_OPERATOR")
        );
        assert_eq!(
            code("SELECT Id FROM CartItem WHERE Quantity LIKE '1%'").as_deref(),
            Some("INVALID_QUERY_FILTER_OPERATOR")
        );
        assert_eq!(
            code("SELECT Id FROM CartCheckoutSession WHERE IsArchived > true").as_deref(),
            Some("INVALID_QUERY_FILTER_OPERATOR")
        );
        assert_eq!(
            code("SELECT Id FROM WebCart OFFSET 2001").as_deref(),
            Some("NUMBER_OUTSIDE_VALID_RANGE")
        );
        assert_eq!(code("SELEKT Id").as_deref(), Some("MALFORMED_QUERY"));
        let error = Plan::new("SELECT Id FROM WebCart OFFSET 2001")
            .err()
            .unwrap();
        assert!(
            error
                .message
                .ends_with("\nERROR at Row:1:Column:31\nMaximum SOQL offset allowed is 2000"),
            "{}",
            error.message
        );
        let error = Plan::new("SELECT Id FROM Nothing").err().unwrap();
        assert!(error.message.starts_with("\nSELECT Id FROM Nothing\n               ^\nERROR at Row:1:Column:16\nsObject type 'Nothing' is not supported."), "{}", error.message);
    }
}
