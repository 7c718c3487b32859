//! The built-in payment provider: a token gateway that authorises or declines.

use std::collections::{BTreeMap, BTreeSet};

use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};

use crate::integrations::price_book::{config_error, problem};
use crate::integrations::{IntegrationRequest, PaymentProvider, ProviderError, Verdict};
use crate::model::SfId;

/// A payment gateway for tokenized payment methods. Authorises the order's GrandTotalAmount
/// (what the buyer pays for, never the cart's) against the cart's PaymentToken and sets PaymentAuthorizationId to `AUTH-<operation id>` (a
/// retried attempt of one operation reports the same reference).
///
/// Each token is bound to the buyer account it was issued to, as a saved payment method
/// belongs to an account: the gateway authorises a token only on a cart of that account.
/// Fails, one message per problem, when the cart has no payment token, when the token is one
/// the gateway declines, when the gateway did not issue the token to the cart's account (a
/// token it never issued and another account's token get the same message, which names no
/// account), when there is no order with a grand total yet or its total is negative, and
/// when the total is above the gateway's limit.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase", deny_unknown_fields)]
pub struct TokenGateway {
    /// The tokens the gateway issued, each with the buyer account it was issued to (compared
    /// after trimming blanks). A token not listed here is authorised on no cart.
    #[serde(default)]
    pub issued_tokens: BTreeMap<String, SfId>,
    /// Tokens the gateway declines (compared after trimming blanks).
    #[serde(default)]
    pub declined_tokens: BTreeSet<String>,
    /// The largest grand total one authorisation may cover; no limit when absent.
    #[serde(default)]
    pub limit: Option<Decimal>,
}

impl TokenGateway {
    /// A gateway that has issued no token yet (so it authorises none), of any amount.
    pub fn new() -> TokenGateway {
        TokenGateway::default()
    }

    /// Issues `token` to the buyer account `account_id`: it authorises on that account's
    /// carts only.
    pub fn issue(mut self, token: &str, account_id: SfId) -> TokenGateway {
        self.issued_tokens.insert(token.to_owned(), account_id);
        self
    }

    /// Whether the gateway issued `token` (already trimmed) to `account_id`.
    fn issued_to(&self, token: &str, account_id: &SfId) -> bool {
        self.issued_tokens
            .iter()
            .any(|(issued, account)| issued.trim() == token && account == account_id)
    }

    /// Declines `token`.
    pub fn decline(mut self, token: &str) -> TokenGateway {
        self.declined_tokens.insert(token.to_owned());
        self
    }

    /// Refuses grand totals above `limit`.
    pub fn limit(mut self, limit: Decimal) -> TokenGateway {
        self.limit = Some(limit);
        self
    }

    /// The authorisation reference of an operation.
    pub fn authorization_id(operation_id: &SfId) -> String {
        format!("AUTH-{operation_id}")
    }

    /// Checks the configuration: no issued token is blank, and the limit is not negative.
    pub fn validate(&self) -> Result<(), ProviderError> {
        if self.issued_tokens.keys().any(|t| t.trim().is_empty()) {
            return Err(config_error(
                "TokenGateway",
                "an issued token is blank".into(),
            ));
        }
        match self.limit {
            Some(limit) if limit < Decimal::ZERO => Err(config_error(
                "TokenGateway",
                format!("the limit {limit} is negative"),
            )),
            _ => Ok(()),
        }
    }
}

impl PaymentProvider for TokenGateway {
    /// A table lookup in memory: run on the worker's own thread.
    fn computes_in_memory(&self) -> bool {
        true
    }

    fn authorize_payment(&self, request: &IntegrationRequest) -> Result<Verdict, ProviderError> {
        self.validate()?;
        let cart = &request.cart;
        let mut problems = Vec::new();
        let token = cart
            .payment_token
            .as_deref()
            .map(str::trim)
            .filter(|t| !t.is_empty());
        match token {
            None => problems.push(problem(
                "No payment method was given: enter one before placing the order.".into(),
                cart.id,
            )),
            Some(token) if self.declined_tokens.iter().any(|d| d.trim() == token) => {
                problems.push(problem(
                    "The payment method was declined: use another one.".into(),
                    cart.id,
                ));
            }
            // Unknown and foreign tokens read alike: the answer names no one's account.
            Some(token) if !self.issued_to(token, &cart.account_id) => problems.push(problem(
                "The payment method is not one of this account's: use another one.".into(),
                cart.id,
            )),
            Some(_) => {}
        }
        let total = request
            .order
            .as_ref()
            .and_then(|order| order.grand_total_amount);
        match total {
            None => problems.push(problem(
                "There is no order with a total yet, so the payment cannot be authorised.".into(),
                cart.id,
            )),
            Some(total) if total < Decimal::ZERO => problems.push(problem(
                format!("The order's total {total} is negative, so it cannot be charged."),
                cart.id,
            )),
            Some(total) => {
                if let Some(limit) = self.limit.filter(|limit| total > *limit) {
                    problems.push(problem(
                        format!(
                            "The order total {total} is above the payment limit of {limit}: the payment was declined."
                        ),
                        cart.id,
                    ));
                }
            }
        }
        Ok(if problems.is_empty() {
            Verdict::authorized(
                TokenGateway::authorization_id(&request.operation_id),
                request,
            )
        } else {
            Verdict::Failed(problems)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::integrations::price_book::testing::*;
    use crate::model::{Level, WebCart};

    /// A request for `cart`, whose session's order totals what the cart does.
    fn request(cart: WebCart, items: Vec<crate::model::CartItem>) -> IntegrationRequest {
        let order = crate::model::Order {
            grand_total_amount: cart.grand_total_amount,
            ..crate::model::Order::draft(
                SfId::from_number(crate::model::KeyPrefix::Order, 1),
                &cart,
                cart.owner_id,
                chrono::DateTime::UNIX_EPOCH,
            )
        };
        IntegrationRequest {
            order: Some(order),
            ..crate::integrations::price_book::testing::request(cart, items)
        }
    }

    #[test]
    fn the_order_total_is_authorised_and_never_the_carts() {
        let mut req = request(paying(Some("tok_visa"), Some("10.00")), vec![]);
        req.cart.grand_total_amount = Some(d("999.00"));
        let authorised = patch(gateway().authorize_payment(&req).unwrap());
        assert_eq!(authorised.authorized_amount, Some(d("10.00")));
        req.order = None;
        let found: Vec<String> = failures(gateway().authorize_payment(&req).unwrap())
            .into_iter()
            .map(|m| m.message)
            .collect();
        assert_eq!(
            found,
            ["There is no order with a total yet, so the payment cannot be authorised."]
        );
    }

    fn paying(token: Option<&str>, total: Option<&str>) -> WebCart {
        WebCart {
            payment_token: token.map(str::to_owned),
            grand_total_amount: total.map(d),
            ..cart()
        }
    }

    fn gateway() -> TokenGateway {
        TokenGateway::new()
            .issue("tok_visa", account())
            .decline("tok_declined")
            .limit(d("1000.00"))
    }

    fn other_account() -> SfId {
        SfId::from_number(crate::model::KeyPrefix::Account, 2)
    }

    fn messages(cart: WebCart) -> Vec<String> {
        let found = failures(gateway().authorize_payment(&request(cart, vec![])).unwrap());
        assert!(found.iter().all(|m| m.level == Level::Error));
        assert!(found.iter().all(|m| m.related_entity_id == Some(cart_id())));
        found.into_iter().map(|m| m.message).collect()
    }

    fn cart_id() -> SfId {
        cart().id
    }

    #[test]
    fn a_good_token_within_the_limit_is_authorised_deterministically() {
        let req = request(paying(Some("tok_visa"), Some("1000.00")), vec![]);
        let first = patch(gateway().authorize_payment(&req).unwrap());
        let expected = format!("AUTH-{}", req.operation_id);
        assert_eq!(
            first.payment_authorization_id.as_deref(),
            Some(expected.as_str())
        );
        assert!(first.items.is_empty() && first.delivery_options.is_none());
        assert_eq!(first.authorized_amount, Some(d("1000.00")));
        let again = patch(gateway().authorize_payment(&req).unwrap());
        assert_eq!(again, first);
        // No limit: any amount goes.
        let big = request(paying(Some(" tok_visa "), Some("99999999.99")), vec![]);
        assert!(matches!(
            TokenGateway::new()
                .issue("tok_visa", account())
                .authorize_payment(&big)
                .unwrap(),
            Verdict::Updated(_)
        ));
    }

    #[test]
    fn a_token_authorises_only_on_a_cart_of_the_account_it_was_issued_to() {
        let foreign = TokenGateway::new()
            .issue("tok_visa", other_account())
            .issue("tok_mine", account());
        let unknown = TokenGateway::new().issue("tok_mine", account());
        for gateway in [foreign, unknown] {
            let req = request(paying(Some("tok_visa"), Some("10.00")), vec![]);
            let found = failures(gateway.authorize_payment(&req).unwrap());
            let texts: Vec<&str> = found.iter().map(|m| m.message.as_str()).collect();
            assert_eq!(
                texts,
                ["The payment method is not one of this account's: use another one."]
            );
            // Whose token it is never shows.
            assert!(!texts[0].contains(&other_account().to_string()));
        }
    }

    #[test]
    fn a_blank_issued_token_is_a_configuration_error() {
        let err = TokenGateway::new()
            .issue("  ", account())
            .validate()
            .unwrap_err();
        assert!(err.0.contains("blank"), "{err}");
    }

    #[test]
    fn a_missing_or_blank_token_fails() {
        for token in [None, Some(""), Some("   ")] {
            let found = messages(paying(token, Some("10.00")));
            assert_eq!(found.len(), 1);
            assert!(found[0].contains("No payment method"));
        }
    }

    #[test]
    fn a_declined_token_fails() {
        let found = messages(paying(Some(" tok_declined "), Some("10.00")));
        assert_eq!(found, ["The payment method was declined: use another one."]);
        // Declined even when it was issued to the cart's account.
        let issued = gateway().issue("tok_declined", account());
        let req = request(paying(Some("tok_declined"), Some("10.00")), vec![]);
        assert_eq!(failures(issued.authorize_payment(&req).unwrap()).len(), 1);
    }

    #[test]
    fn an_amount_above_the_limit_is_declined() {
        let found = messages(paying(Some("tok_visa"), Some("1000.01")));
        assert_eq!(found.len(), 1);
        assert!(found[0].contains("1000.01 is above the payment limit of 1000.00"));
    }

    #[test]
    fn every_problem_gets_its_own_message() {
        assert_eq!(
            messages(paying(Some("tok_declined"), Some("5000"))).len(),
            2
        );
        assert_eq!(messages(paying(None, None)).len(), 2);
        let negative = messages(paying(Some("tok_visa"), Some("-1")));
        assert!(negative[0].contains("negative"));
    }

    #[test]
    fn a_negative_limit_is_a_provider_error() {
        let err = TokenGateway::new()
            .limit(d("-1"))
            .authorize_payment(&request(paying(Some("t"), Some("1")), vec![]))
            .unwrap_err();
        assert!(err.0.starts_with("TokenGateway configuration"), "{err}");
    }

    #[test]
    fn the_gateway_round_trips_through_json() {
        let json = serde_json::json!({
            "IssuedTokens": {"tok_visa": account()},
            "DeclinedTokens": ["tok_declined"],
            "Limit": "1000.00"
        });
        let parsed: TokenGateway = serde_json::from_value(json.clone()).unwrap();
        assert_eq!(parsed, gateway());
        assert_eq!(serde_json::to_value(&parsed).unwrap(), json);
        assert!(serde_json::from_value::<TokenGateway>(serde_json::json!({"Limt": "1"})).is_err());
    }
}
