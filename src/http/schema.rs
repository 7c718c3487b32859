//! The fields of every object the facade serves, with their types: what a query may select,
//! filter and sort by, and what a record read shows.

use super::records::Object;

/// What a field holds, and so which literals it is compared with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum FieldType {
    /// The record's own Id.
    Id,
    /// The Id of another record: of a served object (whose fields a query reaches through
    /// the relationship, the field's name without `Id`), or of one the facade does not serve.
    Reference(Option<Object>),
    /// Free text.
    Text,
    /// One of a fixed set of values.
    Picklist,
    /// True or false.
    Boolean,
    /// A decimal number.
    Number,
    /// An amount of money.
    Currency,
    /// A whole number.
    Int,
    /// An instant.
    DateTime,
    /// A structure or list (an address, the cart's shares): selected, never compared.
    Compound,
}

impl FieldType {
    /// The name Salesforce's SOQL errors give the type.
    pub(super) fn soql_name(self) -> &'static str {
        match self {
            FieldType::Id | FieldType::Reference(_) => "id",
            FieldType::Text | FieldType::Picklist => "string",
            FieldType::Boolean => "boolean",
            FieldType::Number | FieldType::Currency => "double",
            FieldType::Int => "int",
            FieldType::DateTime => "dateTime",
            FieldType::Compound => "anyType",
        }
    }
}

/// A field of an object.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Field {
    /// Its name, as records show it.
    pub(super) name: &'static str,
    /// What it holds.
    pub(super) kind: FieldType,
    /// Whether a record may have no value for it.
    pub(super) nillable: bool,
}

/// A field every record has a value for.
const fn f(name: &'static str, kind: FieldType) -> Field {
    Field {
        name,
        kind,
        nillable: false,
    }
}

/// A field a record may leave empty.
const fn o(name: &'static str, kind: FieldType) -> Field {
    Field {
        name,
        kind,
        nillable: true,
    }
}

use FieldType::{
    Boolean, Compound, Currency, DateTime, Id, Int, Number, Picklist, Reference, Text,
};

const fn to(object: Object) -> FieldType {
    Reference(Some(object))
}

/// A reference to an object the facade does not serve (a store, an account, a user).
const UNSERVED: FieldType = Reference(None);

const WEB_CART: [Field; 18] = [
    f("Id", Id),
    f("WebStoreId", UNSERVED),
    f("AccountId", UNSERVED),
    f("OwnerId", UNSERVED),
    f("Status", Picklist),
    f("Shares", Compound),
    o("DeliverTo", Compound),
    f("DeliveryOptions", Compound),
    o("DeliveryMethodId", Text),
    f("PaymentTokenSet", Boolean),
    o("PaymentAuthorizationId", Text),
    o("AuthorizedAmount", Currency),
    o("TotalProductAmount", Currency),
    o("TotalAdjustmentAmount", Currency),
    o("TotalChargeAmount", Currency),
    o("TotalTaxAmount", Currency),
    o("GrandTotalAmount", Currency),
    f("Version", Int),
];

const CART_ITEM: [Field; 11] = [
    f("Id", Id),
    f("CartId", to(Object::WebCart)),
    o("Sku", Text),
    o("Product2Id", Text),
    f("Quantity", Number),
    f("Type", Picklist),
    o("SalesPrice", Currency),
    o("ListPrice", Currency),
    o("TotalPrice", Currency),
    o("AdjustmentAmount", Currency),
    o("TaxAmount", Currency),
];

const SESSION: [Field; 11] = [
    f("Id", Id),
    f("WebCartId", to(Object::WebCart)),
    o("State", Picklist),
    o("NextState", Picklist),
    f("IsProcessing", Boolean),
    f("IsError", Boolean),
    f("IsArchived", Boolean),
    o("BackgroundOperationId", to(Object::BackgroundOperation)),
    o("OrderId", to(Object::Order)),
    o("CreatedDate", DateTime),
    f("Version", Int),
];

const OPERATION: [Field; 16] = [
    f("Id", Id),
    f("Name", Text),
    f("CartId", to(Object::WebCart)),
    f("CheckoutSessionId", to(Object::CartCheckoutSession)),
    o("ProviderKind", Picklist),
    f("Status", Picklist),
    o("Error", Text),
    f("SubmittedAt", DateTime),
    o("StartedAt", DateTime),
    o("FinishedAt", DateTime),
    o("ExpiresAt", DateTime),
    f("RetryCount", Int),
    f("RetryLimit", Int),
    f("Timeout", Int),
    o("OrderLifeCycleType", Picklist),
    f("Version", Int),
];

const OUTPUT: [Field; 8] = [
    f("Id", Id),
    f("CartId", to(Object::WebCart)),
    o("BackgroundOperationId", to(Object::BackgroundOperation)),
    f("Level", Picklist),
    f("Type", Picklist),
    f("Message", Text),
    o("RelatedEntityId", UNSERVED),
    f("IsDismissed", Boolean),
];

const ORDER: [Field; 19] = [
    f("Id", Id),
    f("CartId", to(Object::WebCart)),
    f("WebStoreId", UNSERVED),
    f("AccountId", UNSERVED),
    f("OwnerId", UNSERVED),
    f("Status", Picklist),
    f("Items", Compound),
    o("DeliverTo", Compound),
    o("DeliveryMethodId", Text),
    o("DeliveryGroup", Compound),
    o("PaymentAuthorization", Compound),
    o("PaymentAuthorizationId", Text),
    o("AuthorizedAmount", Currency),
    o("GrandTotalAmount", Currency),
    f("CreatedDate", DateTime),
    o("ActivatedDate", DateTime),
    o("OrderSummaryId", UNSERVED),
    f("OrderLifeCycleType", Picklist),
    f("Version", Int),
];

const DELIVERY_GROUP: [Field; 9] = [
    f("Id", Id),
    f("CartId", to(Object::WebCart)),
    f("Name", Text),
    o("DeliverToStreet", Text),
    o("DeliverToCity", Text),
    o("DeliverToState", Text),
    o("DeliverToPostalCode", Text),
    o("DeliverToCountry", Text),
    o("DeliveryMethodId", Text),
];

const DELIVERY_METHOD: [Field; 6] = [
    f("Id", Id),
    f("CartDeliveryGroupId", to(Object::CartDeliveryGroup)),
    f("WebCartId", to(Object::WebCart)),
    f("DeliveryMethodId", Text),
    f("Name", Text),
    f("ShippingFee", Currency),
];

const CART_TAX: [Field; 7] = [
    f("Id", Id),
    f("CartItemId", to(Object::CartItem)),
    f("Amount", Currency),
    o("TaxRate", Number),
    f("Name", Text),
    f("TaxType", Picklist),
    f("TaxCalculationDate", DateTime),
];

const ORDER_ITEM: [Field; 11] = [
    f("Id", Id),
    f("OrderId", to(Object::Order)),
    f("CartItemId", to(Object::CartItem)),
    o("Sku", Text),
    o("Product2Id", Text),
    f("Quantity", Number),
    f("Type", Picklist),
    o("UnitPrice", Currency),
    o("TotalPrice", Currency),
    o("AdjustmentAmount", Currency),
    o("TaxAmount", Currency),
];

const ORDER_DELIVERY_GROUP: [Field; 8] = [
    f("Id", Id),
    f("OrderId", to(Object::Order)),
    o("DeliverToStreet", Text),
    o("DeliverToCity", Text),
    o("DeliverToState", Text),
    o("DeliverToPostalCode", Text),
    o("DeliverToCountry", Text),
    o("OrderDeliveryMethodId", Text),
];

const PAYMENT_AUTHORIZATION: [Field; 6] = [
    f("Id", Id),
    f("AccountId", UNSERVED),
    f("Amount", Currency),
    f("Status", Picklist),
    f("GatewayRefNumber", Text),
    f("Date", DateTime),
];

/// Every field of `object`, in the order records show them.
pub(super) fn fields(object: Object) -> &'static [Field] {
    match object {
        Object::WebCart => &WEB_CART,
        Object::CartItem => &CART_ITEM,
        Object::CartCheckoutSession => &SESSION,
        Object::BackgroundOperation => &OPERATION,
        Object::CartValidationOutput => &OUTPUT,
        Object::Order => &ORDER,
        Object::CartDeliveryGroup => &DELIVERY_GROUP,
        Object::CartDeliveryGroupMethod => &DELIVERY_METHOD,
        Object::CartTax => &CART_TAX,
        Object::OrderItem => &ORDER_ITEM,
        Object::OrderDeliveryGroup => &ORDER_DELIVERY_GROUP,
        Object::PaymentAuthorization => &PAYMENT_AUTHORIZATION,
    }
}

/// The field of `object` named `name`, matched without regard to case.
pub(super) fn field(object: Object, name: &str) -> Option<Field> {
    fields(object)
        .iter()
        .find(|f| f.name.eq_ignore_ascii_case(name))
        .copied()
}

/// The reference field behind the relationship `name` of `object` (`WebCart` on a session
/// is `WebCartId`), and the object it reaches; only references to served objects have one.
pub(super) fn relationship(object: Object, name: &str) -> Option<(Field, Object)> {
    fields(object).iter().find_map(|f| match f.kind {
        Reference(Some(parent)) => {
            let relationship = f.name.strip_suffix("Id")?;
            relationship
                .eq_ignore_ascii_case(name)
                .then_some((*f, parent))
        }
        _ => None,
    })
}

/// A related list: its parent, its name, the child object, and the child's field naming the
/// parent (`None` when the child reaches it through another record, as a cart's taxes do
/// through its lines).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct ChildRelationship {
    pub(super) parent: Object,
    pub(super) name: &'static str,
    pub(super) child: Object,
    pub(super) field: Option<&'static str>,
}

const fn child(
    parent: Object,
    name: &'static str,
    child: Object,
    field: Option<&'static str>,
) -> ChildRelationship {
    ChildRelationship {
        parent,
        name,
        child,
        field,
    }
}

/// Every related list served.
pub(super) const CHILD_RELATIONSHIPS: [ChildRelationship; 9] = [
    child(
        Object::WebCart,
        "CartItems",
        Object::CartItem,
        Some("CartId"),
    ),
    child(
        Object::WebCart,
        "CartValidationOutputs",
        Object::CartValidationOutput,
        Some("CartId"),
    ),
    child(
        Object::WebCart,
        "CartDeliveryGroups",
        Object::CartDeliveryGroup,
        Some("CartId"),
    ),
    child(
        Object::WebCart,
        "CartDeliveryGroupMethods",
        Object::CartDeliveryGroupMethod,
        Some("WebCartId"),
    ),
    child(Object::WebCart, "CartTaxes", Object::CartTax, None),
    child(
        Object::CartDeliveryGroup,
        "CartDeliveryGroupMethods",
        Object::CartDeliveryGroupMethod,
        Some("CartDeliveryGroupId"),
    ),
    child(
        Object::CartItem,
        "CartTaxes",
        Object::CartTax,
        Some("CartItemId"),
    ),
    child(
        Object::Order,
        "OrderItems",
        Object::OrderItem,
        Some("OrderId"),
    ),
    child(
        Object::Order,
        "OrderDeliveryGroups",
        Object::OrderDeliveryGroup,
        Some("OrderId"),
    ),
];

/// The child object of `parent`'s related list `name` (matched without regard to case).
pub(super) fn child_relationship(parent: Object, name: &str) -> Option<Object> {
    CHILD_RELATIONSHIPS
        .iter()
        .find(|r| r.parent == parent && r.name.eq_ignore_ascii_case(name))
        .map(|r| r.child)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_object_has_an_id_first_and_no_field_twice() {
        for object in Object::ALL {
            let fields = fields(object);
            assert_eq!(fields[0], f("Id", Id), "{object:?}");
            for (i, field) in fields.iter().enumerate() {
                assert!(
                    fields[..i]
                        .iter()
                        .all(|other| !other.name.eq_ignore_ascii_case(field.name)),
                    "{object:?}.{} twice",
                    field.name
                );
            }
        }
    }

    #[test]
    fn relationships_are_the_served_references_without_id() {
        assert_eq!(
            relationship(Object::CartCheckoutSession, "webcart").map(|(f, o)| (f.name, o)),
            Some(("WebCartId", Object::WebCart))
        );
        assert_eq!(
            relationship(Object::CartItem, "Cart").map(|(f, o)| (f.name, o)),
            Some(("CartId", Object::WebCart))
        );
        assert_eq!(relationship(Object::WebCart, "Owner"), None);
        assert_eq!(relationship(Object::WebCart, "Status"), None);
        assert_eq!(
            field(Object::WebCart, "status").map(|f| f.kind),
            Some(Picklist)
        );
    }
}
