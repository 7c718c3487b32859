//! The SOQL subset the query endpoint accepts: its grammar, in one place.
//!
//! ```text
//! query      := SELECT selection FROM name [WHERE condition]
//!               [ORDER BY order {, order}] [LIMIT int] [OFFSET int]
//! selection  := COUNT ( ) | field {, field}
//! field      := name [. name]                  a field, or a parent's field one level up
//! condition  := operand {AND operand} | operand {OR operand}
//! operand    := NOT operand | ( condition ) | comparison
//! comparison := field op value | field [NOT] IN ( value {, value} ) | field LIKE string
//! op         := = | != | <> | < | > | <= | >=
//! value      := string | number | TRUE | FALSE | NULL | date-time | date
//! order      := field [ASC | DESC] [NULLS FIRST | NULLS LAST]
//! ```
//!
//! Keywords match without regard to case, as Salesforce's do. As in Salesforce's SOQL, `AND`
//! and `OR` do not mix without parentheses. Text is lexed first (with escapes decoded and
//! literals checked), then the tokens are parsed with winnow; a failure names its row, its
//! column and the token it did not expect, in the message Salesforce gives.

use std::fmt;

use chrono::{DateTime, NaiveDate, Utc};
use rust_decimal::Decimal;
use winnow::Parser;
use winnow::combinator::{alt, cut_err, delimited, opt, preceded, repeat};
use winnow::error::{ContextError, ErrMode};
use winnow::stream::{Stream, TokenSlice};
use winnow::token::any;

/// The longest query text accepted, in characters.
pub(crate) const MAX_QUERY_CHARS: usize = 20_000;

/// A parsed query.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Query {
    /// What each row answers.
    pub selection: Selection,
    /// The object queried, as written, and where.
    pub object: Name,
    /// The rows kept.
    pub filter: Option<Condition>,
    /// The sort keys, first to last.
    pub order_by: Vec<OrderKey>,
    /// At most this many rows.
    pub limit: Option<u64>,
    /// Rows skipped before the first one answered.
    pub offset: Option<u64>,
    /// The byte offset the `OFFSET` count is written at, for an error about it.
    pub offset_at: usize,
}

/// A name as written, with the byte offset it starts at (for error messages).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Name {
    /// The name as written.
    pub text: String,
    /// Its byte offset in the query.
    pub at: usize,
}

/// What a query selects.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Selection {
    /// `COUNT()`: the number of rows, and no records.
    Count,
    /// These fields of each row.
    Fields(Vec<FieldPath>),
}

/// A field of the queried object (`Status`) or of a parent one level up (`WebCart.Status`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct FieldPath {
    /// The relationship to the parent, when the field is the parent's.
    pub relationship: Option<Name>,
    /// The field.
    pub field: Name,
}

/// A WHERE condition.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Condition {
    /// Every operand holds.
    And(Vec<Condition>),
    /// Some operand holds.
    Or(Vec<Condition>),
    /// The operand does not hold.
    Not(Box<Condition>),
    /// `field op value`.
    Compare(FieldPath, Comparison, Literal),
    /// `field IN (...)`, or `NOT IN` when `negated`.
    In {
        /// The field compared.
        field: FieldPath,
        /// `NOT IN`.
        negated: bool,
        /// The values listed.
        values: Vec<Literal>,
    },
    /// `field LIKE pattern`.
    Like(FieldPath, Pattern),
}

/// A comparison operator.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Comparison {
    /// `=`
    Equal,
    /// `!=` or `<>`
    NotEqual,
    /// `<`
    Less,
    /// `<=`
    LessOrEqual,
    /// `>`
    Greater,
    /// `>=`
    GreaterOrEqual,
}

/// A literal value, with where it starts.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Literal {
    /// The value.
    pub value: Value,
    /// Its byte offset in the query.
    pub at: usize,
}

/// A literal's value.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Value {
    /// `NULL`.
    Null,
    /// `TRUE` or `FALSE`.
    Bool(bool),
    /// A number.
    Number(Decimal),
    /// A quoted string, escapes decoded.
    Text(String),
    /// A date-time, such as `2026-12-01T10:00:00Z`.
    DateTime(DateTime<Utc>),
    /// A date, such as `2026-12-01`.
    Date(NaiveDate),
}

/// A LIKE pattern: `%` is any run of characters, `_` any one, `\%` and `\_` themselves.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Pattern(pub Vec<PatternPart>);

/// One piece of a LIKE pattern.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum PatternPart {
    /// This character (compared without regard to case).
    Char(char),
    /// Any one character.
    AnyOne,
    /// Any run of characters, none included.
    AnyRun,
}

/// A sort key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct OrderKey {
    /// The field sorted by.
    pub field: FieldPath,
    /// `DESC`.
    pub descending: bool,
    /// Where rows without a value go: `NULLS FIRST` unless `DESC`, as in Salesforce.
    pub nulls_first: bool,
}

/// A query that is not in the subset, or not SOQL: where, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct SyntaxError {
    /// The byte offset the error is at.
    pub at: usize,
    /// What is wrong there.
    pub reason: String,
}

impl SyntaxError {
    /// The error as Salesforce words it: the query's line, a caret under the column, the row
    /// and column, and the reason.
    pub(crate) fn message(&self, query: &str) -> String {
        located(query, self.at, &self.reason)
    }
}

/// `reason`, located at byte `at` of `query` the way Salesforce's query errors are: the
/// line, a caret, `ERROR at Row:R:Column:C`, then the reason.
pub(crate) fn located(query: &str, at: usize, reason: &str) -> String {
    let at = floor_char_boundary(query, at.min(query.len()));
    let line_start = query[..at].rfind('\n').map_or(0, |i| i + 1);
    let line_end = query[at..].find('\n').map_or(query.len(), |i| at + i);
    let row = query[..at].matches('\n').count() + 1;
    let column = query[line_start..at].chars().count() + 1;
    let caret = format!("{}^", " ".repeat(column - 1));
    format!(
        "\n{}\n{caret}\nERROR at Row:{row}:Column:{column}\n{reason}",
        &query[line_start..line_end]
    )
}

fn floor_char_boundary(text: &str, mut at: usize) -> usize {
    while !text.is_char_boundary(at) {
        at -= 1;
    }
    at
}

/// Parses `text` as a query of the subset.
pub(crate) fn parse(text: &str) -> Result<Query, SyntaxError> {
    let tokens = lex(text)?;
    let mut input = TokenSlice::new(&tokens);
    match query.parse_next(&mut input) {
        Ok(query) => Ok(query),
        Err(_) => {
            let token = input.peek_token().unwrap_or(&tokens[tokens.len() - 1]);
            Err(unexpected(token))
        }
    }
}

fn unexpected(token: &Token) -> SyntaxError {
    let reason = match token.kind {
        Kind::End => "unexpected token: <EOF>".to_owned(),
        _ => format!("unexpected token: '{}'", token.raw),
    };
    SyntaxError {
        at: token.at,
        reason,
    }
}

// ---- Lexing ----

/// A lexed token: what it is, its text as written, and its byte offset.
#[derive(Debug, Clone, PartialEq)]
struct Token {
    kind: Kind,
    raw: String,
    at: usize,
}

#[derive(Debug, Clone, PartialEq)]
enum Kind {
    Word,
    Text(Vec<TextPart>),
    Number(Decimal),
    DateTime(DateTime<Utc>),
    Date(NaiveDate),
    Symbol(&'static str),
    End,
}

/// A character of a quoted string: plain, or `\%` / `\_` (wildcards written as themselves,
/// which only LIKE gives a meaning).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum TextPart {
    Plain(char),
    EscapedWildcard(char),
}

const SYMBOLS: [&str; 11] = ["<=", ">=", "!=", "<>", "=", "<", ">", "(", ")", ",", "."];

fn lex(text: &str) -> Result<Vec<Token>, SyntaxError> {
    let mut tokens = Vec::new();
    let mut rest = text.trim_start();
    while !rest.is_empty() {
        let at = text.len() - rest.len();
        let (kind, len) = lex_one(rest, at)?;
        tokens.push(Token {
            kind,
            raw: rest[..len].to_owned(),
            at,
        });
        rest = rest[len..].trim_start();
    }
    tokens.push(Token {
        kind: Kind::End,
        raw: String::new(),
        at: text.len(),
    });
    Ok(tokens)
}

/// The token `rest` starts with (at byte `at` of the query), and its length.
fn lex_one(rest: &str, at: usize) -> Result<(Kind, usize), SyntaxError> {
    let first = rest.chars().next().unwrap_or(' ');
    if first == '\'' {
        return quoted(rest, at);
    }
    if first.is_ascii_digit()
        || (first == '-' && rest[1..].starts_with(|c: char| c.is_ascii_digit()))
    {
        return numeric(rest, at);
    }
    if first.is_ascii_alphabetic() || first == '_' {
        let len = rest
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .unwrap_or(rest.len());
        return Ok((Kind::Word, len));
    }
    match SYMBOLS.into_iter().find(|s| rest.starts_with(s)) {
        Some(symbol) => Ok((Kind::Symbol(symbol), symbol.len())),
        None => Err(SyntaxError {
            at,
            reason: format!("unexpected token: '{first}'"),
        }),
    }
}

/// A quoted string, its escapes decoded (`\n \r \t \b \f \" \' \\ \uXXXX`, and `\% \_`).
fn quoted(rest: &str, at: usize) -> Result<(Kind, usize), SyntaxError> {
    let mut parts = Vec::new();
    let mut chars = rest.char_indices().skip(1);
    while let Some((i, c)) = chars.next() {
        match c {
            '\'' => return Ok((Kind::Text(parts), i + 1)),
            '\\' => {
                let escaped = chars.next().map(|(_, e)| e);
                parts.push(escape(rest, i, escaped, &mut chars).ok_or_else(|| {
                    let end = rest[i + 1..]
                        .char_indices()
                        .nth(if escaped == Some('u') { 5 } else { 1 })
                        .map_or(rest.len(), |(j, _)| i + 1 + j);
                    SyntaxError {
                        at: at + i,
                        reason: format!(
                            "Invalid string literal. Illegal character sequence '{}' in string \
                             literal.",
                            &rest[i..end]
                        ),
                    }
                })?);
            }
            c => parts.push(TextPart::Plain(c)),
        }
    }
    Err(SyntaxError {
        at: at + rest.len(),
        reason: "unexpected token: <EOF>: the string is not closed".to_owned(),
    })
}

fn escape(
    rest: &str,
    backslash: usize,
    escaped: Option<char>,
    chars: &mut impl Iterator<Item = (usize, char)>,
) -> Option<TextPart> {
    let plain = match escaped? {
        'n' => '\n',
        'r' => '\r',
        't' => '\t',
        'b' => '\u{8}',
        'f' => '\u{c}',
        c @ ('"' | '\'' | '\\') => c,
        c @ ('%' | '_') => return Some(TextPart::EscapedWildcard(c)),
        'u' => {
            let hex = rest.get(backslash + 2..backslash + 6)?;
            if !hex.chars().all(|c| c.is_ascii_hexdigit()) {
                return None;
            }
            let code = u32::from_str_radix(hex, 16).ok()?;
            chars.nth(3)?;
            char::from_u32(code)?
        }
        _ => return None,
    };
    Some(TextPart::Plain(plain))
}

/// A number, a date-time (`2026-12-01T10:00:00Z`, `...T10:00:00.000+01:00`) or a date.
fn numeric(rest: &str, at: usize) -> Result<(Kind, usize), SyntaxError> {
    let len = rest
        .char_indices()
        .skip(1)
        .find(|(_, c)| !(c.is_ascii_alphanumeric() || matches!(c, '.' | ':' | '-' | '+')))
        .map_or(rest.len(), |(i, _)| i);
    let word = &rest[..len];
    let kind = if let Ok(time) = DateTime::parse_from_rfc3339(word) {
        Kind::DateTime(time.with_timezone(&Utc))
    } else if let Ok(date) = NaiveDate::parse_from_str(word, "%Y-%m-%d") {
        Kind::Date(date)
    } else {
        let digits = word
            .char_indices()
            .skip(1)
            .find(|(_, c)| !(c.is_ascii_digit() || *c == '.'))
            .map_or(word.len(), |(i, _)| i);
        return match word[..digits].parse::<Decimal>() {
            Ok(number) => Ok((Kind::Number(number), digits)),
            Err(_) => Err(SyntaxError {
                at,
                reason: format!("unexpected token: '{word}'"),
            }),
        };
    };
    Ok((kind, len))
}

// ---- Parsing ----

type Tokens<'t> = TokenSlice<'t, Token>;
type Parsed<T> = Result<T, ErrMode<ContextError>>;

/// Words that end a field list or a condition, so never a field's name.
const RESERVED: [&str; 17] = [
    "SELECT", "FROM", "WHERE", "AND", "OR", "NOT", "IN", "LIKE", "ORDER", "BY", "ASC", "DESC",
    "NULLS", "LIMIT", "OFFSET", "TRUE", "FALSE",
];

fn word<'t>(i: &mut Tokens<'t>) -> Parsed<&'t Token> {
    any.verify(|t: &&Token| t.kind == Kind::Word).parse_next(i)
}

fn keyword(expected: &'static str) -> impl FnMut(&mut Tokens<'_>) -> Parsed<()> {
    move |i| {
        word.verify(|t: &&Token| t.raw.eq_ignore_ascii_case(expected))
            .void()
            .parse_next(i)
    }
}

fn symbol(expected: &'static str) -> impl FnMut(&mut Tokens<'_>) -> Parsed<()> {
    move |i| {
        any.verify(|t: &&Token| t.kind == Kind::Symbol(expected))
            .void()
            .parse_next(i)
    }
}

fn name(i: &mut Tokens<'_>) -> Parsed<Name> {
    word.map(|t| Name {
        text: t.raw.clone(),
        at: t.at,
    })
    .parse_next(i)
}

fn query(i: &mut Tokens<'_>) -> Parsed<Query> {
    keyword("SELECT").parse_next(i)?;
    let selection = cut_err(selection).parse_next(i)?;
    cut_err(keyword("FROM")).parse_next(i)?;
    let object = cut_err(name).parse_next(i)?;
    let filter = opt(preceded(keyword("WHERE"), cut_err(condition))).parse_next(i)?;
    let order_by = opt(preceded(
        (keyword("ORDER"), cut_err(keyword("BY"))),
        cut_err(list(order_key)),
    ))
    .parse_next(i)?;
    let limit = opt(preceded(keyword("LIMIT"), cut_err(count))).parse_next(i)?;
    let offset = opt(preceded(keyword("OFFSET"), cut_err(count_at))).parse_next(i)?;
    cut_err(any.verify(|t: &&Token| t.kind == Kind::End)).parse_next(i)?;
    Ok(Query {
        selection,
        object,
        filter,
        order_by: order_by.unwrap_or_default(),
        limit,
        offset: offset.map(|(n, _)| n),
        offset_at: offset.map_or(0, |(_, at)| at),
    })
}

fn selection(i: &mut Tokens<'_>) -> Parsed<Selection> {
    alt((
        (keyword("COUNT"), symbol("("), cut_err(symbol(")"))).map(|_| Selection::Count),
        list(field).map(Selection::Fields),
    ))
    .parse_next(i)
}

fn field(i: &mut Tokens<'_>) -> Parsed<FieldPath> {
    let start = i.checkpoint();
    let first = name.parse_next(i)?;
    if let Some(field) = opt(preceded(symbol("."), cut_err(name))).parse_next(i)? {
        return Ok(FieldPath {
            relationship: Some(first),
            field,
        });
    }
    if RESERVED.iter().any(|r| r.eq_ignore_ascii_case(&first.text)) {
        // Back to the reserved word, so that the error names it.
        i.reset(&start);
        return Err(ErrMode::Backtrack(ContextError::new()));
    }
    Ok(FieldPath {
        relationship: None,
        field: first,
    })
}

/// One `item` or more, separated by commas; an item must follow each comma.
fn list<'t, T>(
    mut item: impl FnMut(&mut Tokens<'t>) -> Parsed<T>,
) -> impl FnMut(&mut Tokens<'t>) -> Parsed<Vec<T>> {
    move |i| {
        let mut items = vec![item(i)?];
        while opt(symbol(",")).parse_next(i)?.is_some() {
            items.push(cut_err(&mut item).parse_next(i)?);
        }
        Ok(items)
    }
}

fn condition(i: &mut Tokens<'_>) -> Parsed<Condition> {
    let first = operand.parse_next(i)?;
    let ands: Vec<Condition> =
        repeat(0.., preceded(keyword("AND"), cut_err(operand))).parse_next(i)?;
    if !ands.is_empty() {
        return Ok(Condition::And(std::iter::once(first).chain(ands).collect()));
    }
    let ors: Vec<Condition> =
        repeat(0.., preceded(keyword("OR"), cut_err(operand))).parse_next(i)?;
    if !ors.is_empty() {
        return Ok(Condition::Or(std::iter::once(first).chain(ors).collect()));
    }
    Ok(first)
}

fn operand(i: &mut Tokens<'_>) -> Parsed<Condition> {
    alt((
        preceded(keyword("NOT"), cut_err(operand)).map(|c| Condition::Not(Box::new(c))),
        delimited(symbol("("), cut_err(condition), cut_err(symbol(")"))),
        comparison,
    ))
    .parse_next(i)
}

fn comparison(i: &mut Tokens<'_>) -> Parsed<Condition> {
    let field = field.parse_next(i)?;
    cut_err(alt((
        (operator, cut_err(literal))
            .map(|(op, value)| Condition::Compare(field.clone(), op, value)),
        (opt(keyword("NOT")), keyword("IN"), cut_err(values)).map(|(not, _, values)| {
            Condition::In {
                field: field.clone(),
                negated: not.is_some(),
                values,
            }
        }),
        preceded(keyword("LIKE"), cut_err(pattern)).map(|p| Condition::Like(field.clone(), p)),
    )))
    .parse_next(i)
}

fn operator(i: &mut Tokens<'_>) -> Parsed<Comparison> {
    any.verify_map(|t: &Token| match t.kind {
        Kind::Symbol("=") => Some(Comparison::Equal),
        Kind::Symbol("!=" | "<>") => Some(Comparison::NotEqual),
        Kind::Symbol("<") => Some(Comparison::Less),
        Kind::Symbol("<=") => Some(Comparison::LessOrEqual),
        Kind::Symbol(">") => Some(Comparison::Greater),
        Kind::Symbol(">=") => Some(Comparison::GreaterOrEqual),
        _ => None,
    })
    .parse_next(i)
}

fn values(i: &mut Tokens<'_>) -> Parsed<Vec<Literal>> {
    delimited(symbol("("), cut_err(list(literal)), cut_err(symbol(")"))).parse_next(i)
}

fn literal(i: &mut Tokens<'_>) -> Parsed<Literal> {
    any.verify_map(|t: &Token| {
        let value = match &t.kind {
            Kind::Text(parts) => Value::Text(plain_text(parts)),
            Kind::Number(n) => Value::Number(*n),
            Kind::DateTime(time) => Value::DateTime(*time),
            Kind::Date(date) => Value::Date(*date),
            Kind::Word if t.raw.eq_ignore_ascii_case("null") => Value::Null,
            Kind::Word if t.raw.eq_ignore_ascii_case("true") => Value::Bool(true),
            Kind::Word if t.raw.eq_ignore_ascii_case("false") => Value::Bool(false),
            _ => return None,
        };
        Some(Literal { value, at: t.at })
    })
    .parse_next(i)
}

/// A string's text outside LIKE: `\%` and `\_` stand for themselves, backslash included.
fn plain_text(parts: &[TextPart]) -> String {
    let mut text = String::new();
    for part in parts {
        match part {
            TextPart::Plain(c) => text.push(*c),
            TextPart::EscapedWildcard(c) => {
                text.push('\\');
                text.push(*c);
            }
        }
    }
    text
}

fn pattern(i: &mut Tokens<'_>) -> Parsed<Pattern> {
    any.verify_map(|t: &Token| match &t.kind {
        Kind::Text(parts) => Some(Pattern(
            parts
                .iter()
                .map(|part| match part {
                    TextPart::Plain('%') => PatternPart::AnyRun,
                    TextPart::Plain('_') => PatternPart::AnyOne,
                    TextPart::Plain(c) | TextPart::EscapedWildcard(c) => PatternPart::Char(*c),
                })
                .collect(),
        )),
        _ => None,
    })
    .parse_next(i)
}

fn order_key(i: &mut Tokens<'_>) -> Parsed<OrderKey> {
    let field = field.parse_next(i)?;
    let descending = opt(alt((
        keyword("ASC").value(false),
        keyword("DESC").value(true),
    )))
    .parse_next(i)?
    .unwrap_or(false);
    let nulls = opt(preceded(
        keyword("NULLS"),
        cut_err(alt((
            keyword("FIRST").value(true),
            keyword("LAST").value(false),
        ))),
    ))
    .parse_next(i)?;
    Ok(OrderKey {
        field,
        descending,
        nulls_first: nulls.unwrap_or(!descending),
    })
}

fn count(i: &mut Tokens<'_>) -> Parsed<u64> {
    count_at.map(|(n, _)| n).parse_next(i)
}

/// A count, and the byte offset it is written at.
fn count_at(i: &mut Tokens<'_>) -> Parsed<(u64, usize)> {
    any.verify_map(|t: &Token| match t.kind {
        Kind::Number(n) if n.scale() == 0 && !n.is_sign_negative() => {
            u64::try_from(n).ok().map(|n| (n, t.at))
        }
        _ => None,
    })
    .parse_next(i)
}

impl fmt::Display for FieldPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.relationship {
            Some(relationship) => write!(f, "{}.{}", relationship.text, self.field.text),
            None => f.write_str(&self.field.text),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fields(query: &Query) -> Vec<String> {
        match &query.selection {
            Selection::Count => vec!["COUNT()".into()],
            Selection::Fields(fields) => fields.iter().map(ToString::to_string).collect(),
        }
    }

    #[test]
    fn accepts_the_subset() {
        let accepted = [
            "SELECT Id FROM WebCart",
            "select id, state from cartcheckoutsession where webcartid = '0a6000000000001AAA'",
            "SELECT Id, WebCart.Status FROM CartCheckoutSession WHERE IsArchived = false",
            "SELECT COUNT() FROM CartItem WHERE Quantity >= 2 AND Quantity < 10.5",
            "SELECT Id FROM Order WHERE Status IN ('Draft', 'Activated') ORDER BY CreatedDate DESC",
            "SELECT Id FROM CartItem WHERE Sku NOT IN ('A') OR (Sku LIKE 'B%' AND NOT Quantity = 1)",
            "SELECT Id FROM CartValidationOutput WHERE Message != null LIMIT 10 OFFSET 5",
            "SELECT Id FROM Order WHERE CreatedDate > 2026-12-01T10:00:00Z ORDER BY Id ASC NULLS LAST",
            "SELECT Id FROM Order WHERE CreatedDate >= 2026-12-01T10:00:00.250+01:00",
            "SELECT Id FROM CartItem WHERE Quantity <> -3",
            "SELECT Id\nFROM WebCart\nWHERE Status = 'Active'",
        ];
        for text in accepted {
            assert!(parse(text).is_ok(), "{text}: {:?}", parse(text).err());
        }
    }

    #[test]
    fn parses_what_it_accepts_into_its_parts() {
        let query = parse(
            "SELECT Id, WebCart.Status FROM CartCheckoutSession \
             WHERE WebCartId = 'x' AND IsArchived = false ORDER BY CreatedDate DESC LIMIT 5",
        )
        .unwrap();
        assert_eq!(fields(&query), ["Id", "WebCart.Status"]);
        assert_eq!(query.object.text, "CartCheckoutSession");
        let Some(Condition::And(parts)) = &query.filter else {
            panic!("{:?}", query.filter)
        };
        assert_eq!(parts.len(), 2);
        assert!(matches!(
            &parts[1],
            Condition::Compare(f, Comparison::Equal, Literal { value: Value::Bool(false), .. })
                if f.field.text == "IsArchived"
        ));
        assert_eq!(query.order_by.len(), 1);
        assert!(query.order_by[0].descending && !query.order_by[0].nulls_first);
        assert_eq!((query.limit, query.offset), (Some(5), None));
        assert_eq!(
            fields(&parse("SELECT count() FROM CartItem").unwrap()),
            ["COUNT()"]
        );
    }

    #[test]
    fn decodes_literals_as_soql_writes_them() {
        let value = |text: &str| {
            let query = parse(&format!("SELECT Id FROM CartItem WHERE Sku = {text}")).unwrap();
            match query.filter {
                Some(Condition::Compare(_, _, literal)) => literal.value,
                other => panic!("{other:?}"),
            }
        };
        assert_eq!(
            value(r"'it\'s \\ \n \u00e9'"),
            Value::Text("it's \\ \n é".into())
        );
        assert_eq!(value(r"'50\%'"), Value::Text(r"50\%".into()));
        assert_eq!(value("12.50"), Value::Number(Decimal::new(1250, 2)));
        assert_eq!(value("-1"), Value::Number(Decimal::from(-1)));
        assert_eq!(value("NULL"), Value::Null);
        assert_eq!(value("True"), Value::Bool(true));
        assert_eq!(
            value("2026-12-01T11:00:00+01:00"),
            Value::DateTime("2026-12-01T10:00:00Z".parse().unwrap())
        );
        assert_eq!(
            value("2026-12-01"),
            Value::Date(NaiveDate::from_ymd_opt(2026, 12, 1).unwrap())
        );
        let query = parse(r"SELECT Id FROM CartItem WHERE Sku LIKE 'a_\_%'").unwrap();
        let Some(Condition::Like(_, Pattern(parts))) = query.filter else {
            panic!()
        };
        use PatternPart::*;
        assert_eq!(parts, [Char('a'), AnyOne, Char('_'), AnyRun]);
    }

    #[test]
    fn refuses_with_the_token_and_its_position() {
        // (query, row, column, reason)
        let refused = [
            ("SELEKT Id", 1, 1, "unexpected token: 'SELEKT'"),
            ("SELECT Id", 1, 10, "unexpected token: <EOF>"),
            ("SELECT * FROM WebCart", 1, 8, "unexpected token: '*'"),
            ("SELECT Id, FROM WebCart", 1, 12, "unexpected token: 'FROM'"),
            ("SELECT FROM WebCart", 1, 8, "unexpected token: 'FROM'"),
            (
                "SELECT Id FROM WebCart WHERE",
                1,
                29,
                "unexpected token: <EOF>",
            ),
            (
                "SELECT Id FROM WebCart WHERE A = 1 AND B = 2 OR C = 3",
                1,
                46,
                "unexpected token: 'OR'",
            ),
            (
                "SELECT Id FROM WebCart WHERE A = FROM",
                1,
                34,
                "unexpected token: 'FROM'",
            ),
            (
                "SELECT Id FROM WebCart WHERE A LIKER 'x'",
                1,
                32,
                "unexpected token: 'LIKER'",
            ),
            (
                "SELECT Id FROM WebCart WHERE A LIKE 5",
                1,
                37,
                "unexpected token: '5'",
            ),
            (
                "SELECT Id FROM WebCart WHERE A IN ()",
                1,
                36,
                "unexpected token: ')'",
            ),
            (
                "SELECT Id FROM WebCart WHERE (A = 1",
                1,
                36,
                "unexpected token: <EOF>",
            ),
            (
                "SELECT Id FROM WebCart LIMIT -1",
                1,
                30,
                "unexpected token: '-1'",
            ),
            (
                "SELECT Id FROM WebCart LIMIT 1.5",
                1,
                30,
                "unexpected token: '1.5'",
            ),
            (
                "SELECT Id FROM WebCart ORDER Id",
                1,
                30,
                "unexpected token: 'Id'",
            ),
            (
                "SELECT Id FROM WebCart ORDER BY Id NULLS",
                1,
                41,
                "unexpected token: <EOF>",
            ),
            (
                "SELECT COUNT(Id) FROM WebCart",
                1,
                14,
                "unexpected token: 'Id'",
            ),
            ("SELECT Id FROM WebCart;", 1, 23, "unexpected token: ';'"),
            (
                "SELECT Id\nFROM WebCart\nWHERE Id ==",
                3,
                11,
                "unexpected token: '='",
            ),
            (
                r"SELECT Id FROM WebCart WHERE A = 'x\qy'",
                1,
                36,
                r"Invalid string literal. Illegal character sequence '\q' in string literal.",
            ),
            (
                r"SELECT Id FROM WebCart WHERE A = 'x\u12'",
                1,
                36,
                r"Invalid string literal. Illegal character sequence '\u12'' in string literal.",
            ),
        ];
        for (text, row, column, reason) in refused {
            let error = parse(text).expect_err(text);
            let message = error.message(text);
            let located = format!("ERROR at Row:{row}:Column:{column}\n{reason}");
            assert!(
                message.ends_with(&located),
                "{text}:\n{message}\nwanted {located}"
            );
        }
        let error = parse("SELECT Id FROM WebCart WHERE A = 'open").unwrap_err();
        assert!(
            error.reason.starts_with("unexpected token: <EOF>"),
            "{error:?}"
        );
    }

    #[test]
    fn a_message_shows_the_line_and_a_caret_under_the_column() {
        let text = "SELECT Id\nFROM WebCart WHERE ?";
        let error = parse(text).unwrap_err();
        assert_eq!(
            error.message(text),
            "\nFROM WebCart WHERE ?\n                   ^\nERROR at Row:2:Column:20\nunexpected token: '?'"
        );
    }

    #[test]
    fn never_panics_on_cut_or_odd_text() {
        let text = "SELECT Id, WebCart.Status FROM CartCheckoutSession WHERE WebCartId = 'é\\u00e9' \
                    AND (IsArchived = false OR NOT State IN ('A', 'B')) ORDER BY Id DESC NULLS \
                    FIRST LIMIT 5 OFFSET 1";
        for end in (0..=text.len()).filter(|&end| text.is_char_boundary(end)) {
            let cut = &text[..end];
            if let Err(error) = parse(cut) {
                assert!(error.at <= cut.len());
                let _ = error.message(cut);
            }
        }
        for odd in [
            "",
            " ",
            "'",
            "\\",
            "-",
            "1.",
            "2026-13-01",
            "SELECT Id FROM X WHERE A = '\\u",
        ] {
            if let Err(error) = parse(odd) {
                let _ = error.message(odd);
            }
        }
    }
}
