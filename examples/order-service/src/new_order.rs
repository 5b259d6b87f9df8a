//! [`NewOrder`]: the body of `POST /orders`, read and checked field by field, so that a bad
//! request gets an answer naming the field that is wrong (`items[1].quantity`) instead of a
//! parser's message.
//!
//! ```json
//! {"customer": "ada", "items": [{"sku": "tea-earl-grey", "quantity": 2, "unit_price_cents": 450}]}
//! ```
//!
//! Unknown fields are refused too: a misspelt `unit_price` must not silently become a free
//! item.

use serde_json::{Map, Value};
use sidestream_example_events::{LineItem, OrderPlaced};

/// A checked order request: a customer, 1 to 100 items, a total that fits and is not zero.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewOrder {
    customer: String,
    items: Vec<LineItem>,
    amount_cents: u64,
}

/// Why a request body is not a valid order.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}{message}", FieldPrefix(.field.as_deref()))]
pub struct InvalidOrder {
    /// The path of the offending field (`customer`, `items[0].sku`); `None` when the body as
    /// a whole is wrong.
    pub field: Option<String>,
    /// What is wrong with it.
    pub message: String,
}

impl NewOrder {
    /// Reads and checks a JSON request body.
    pub fn from_json(body: &[u8]) -> Result<Self, InvalidOrder> {
        let value: Value = serde_json::from_slice(body).map_err(|error| InvalidOrder {
            field: None,
            message: format!("body is not valid JSON: {error}"),
        })?;
        let Value::Object(fields) = value else {
            return Err(InvalidOrder {
                field: None,
                message: "body must be a JSON object".into(),
            });
        };
        reject_unknown(&fields, "", &["customer", "items"])?;
        let customer = customer(fields.get("customer"))?;
        let items = items(fields.get("items"))?;
        let amount_cents = items
            .iter()
            .try_fold(0_u64, |sum, item| sum.checked_add(item.total_cents()?))
            .ok_or_else(|| {
                invalid(
                    "items",
                    "the order's total does not fit in 64 bits of cents",
                )
            })?;
        if amount_cents == 0 {
            return Err(invalid(
                "items",
                "the order's total must be more than 0 cents",
            ));
        }
        Ok(Self {
            customer,
            items,
            amount_cents,
        })
    }

    /// Who orders (trimmed).
    pub fn customer(&self) -> &str {
        &self.customer
    }

    /// The total, in cents.
    pub fn amount_cents(&self) -> u64 {
        self.amount_cents
    }

    /// The event that places this order under `order_id`.
    pub fn into_event(self, order_id: String) -> OrderPlaced {
        OrderPlaced {
            order_id,
            customer: self.customer,
            amount_cents: self.amount_cents,
            items: self.items,
        }
    }
}

fn customer(value: Option<&Value>) -> Result<String, InvalidOrder> {
    let customer = required_str(value, "customer")?.trim();
    if customer.is_empty() {
        return Err(invalid("customer", "must not be empty"));
    }
    if customer.chars().count() > MAX_CUSTOMER_CHARS {
        return Err(invalid(
            "customer",
            format!("must be at most {MAX_CUSTOMER_CHARS} characters"),
        ));
    }
    if customer.chars().any(char::is_control) {
        return Err(invalid("customer", "must not contain control characters"));
    }
    Ok(customer.to_owned())
}

fn items(value: Option<&Value>) -> Result<Vec<LineItem>, InvalidOrder> {
    let Some(value) = value else {
        return Err(invalid("items", "is required"));
    };
    let Value::Array(items) = value else {
        return Err(invalid("items", "must be an array of items"));
    };
    if items.is_empty() {
        return Err(invalid("items", "must hold at least one item"));
    }
    if items.len() > MAX_ITEMS {
        return Err(invalid(
            "items",
            format!("must hold at most {MAX_ITEMS} items"),
        ));
    }
    items
        .iter()
        .enumerate()
        .map(|(index, item)| line_item(item, &format!("items[{index}]")))
        .collect()
}

fn line_item(value: &Value, path: &str) -> Result<LineItem, InvalidOrder> {
    let Value::Object(fields) = value else {
        return Err(invalid(
            path,
            "must be an object with sku, quantity and unit_price_cents",
        ));
    };
    reject_unknown(fields, path, &["sku", "quantity", "unit_price_cents"])?;
    let sku_path = format!("{path}.sku");
    let sku = required_str(fields.get("sku"), &sku_path)?.trim();
    if sku.is_empty() || sku.len() > MAX_SKU_BYTES || !sku.chars().all(is_sku_char) {
        return Err(invalid(
            &sku_path,
            format!("must be 1 to {MAX_SKU_BYTES} ASCII letters, digits, '-', '_' or '.'"),
        ));
    }
    let quantity_path = format!("{path}.quantity");
    let quantity = required_u64(fields.get("quantity"), &quantity_path)?;
    let quantity = u32::try_from(quantity)
        .ok()
        .filter(|quantity| (1..=MAX_QUANTITY).contains(quantity))
        .ok_or_else(|| invalid(&quantity_path, format!("must be from 1 to {MAX_QUANTITY}")))?;
    let unit_price_cents = required_u64(
        fields.get("unit_price_cents"),
        &format!("{path}.unit_price_cents"),
    )?;
    Ok(LineItem {
        sku: sku.to_owned(),
        quantity,
        unit_price_cents,
    })
}

fn required_str<'a>(value: Option<&'a Value>, path: &str) -> Result<&'a str, InvalidOrder> {
    match value {
        Some(Value::String(text)) => Ok(text),
        Some(_) => Err(invalid(path, "must be a string")),
        None => Err(invalid(path, "is required")),
    }
}

fn required_u64(value: Option<&Value>, path: &str) -> Result<u64, InvalidOrder> {
    match value {
        Some(Value::Number(number)) => number
            .as_u64()
            .ok_or_else(|| invalid(path, "must be a whole number from 0 to 2^64 - 1")),
        Some(_) => Err(invalid(path, "must be a number")),
        None => Err(invalid(path, "is required")),
    }
}

fn reject_unknown(
    fields: &Map<String, Value>,
    path: &str,
    known: &[&str],
) -> Result<(), InvalidOrder> {
    match fields.keys().find(|key| !known.contains(&key.as_str())) {
        Some(unknown) => {
            let field = if path.is_empty() {
                unknown.clone()
            } else {
                format!("{path}.{unknown}")
            };
            Err(invalid(
                &field,
                format!("unknown field; expected {}", known.join(", ")),
            ))
        }
        None => Ok(()),
    }
}

fn invalid(field: &str, message: impl Into<String>) -> InvalidOrder {
    InvalidOrder {
        field: Some(field.to_owned()),
        message: message.into(),
    }
}

fn is_sku_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.')
}

/// Writes `field: ` when a field is named.
struct FieldPrefix<'a>(Option<&'a str>);

impl std::fmt::Display for FieldPrefix<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.0 {
            Some(field) => write!(f, "{field}: "),
            None => Ok(()),
        }
    }
}

const MAX_CUSTOMER_CHARS: usize = 100;
const MAX_ITEMS: usize = 100;
const MAX_QUANTITY: u32 = 1_000;
const MAX_SKU_BYTES: usize = 64;

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn parse(body: &Value) -> Result<NewOrder, InvalidOrder> {
        NewOrder::from_json(body.to_string().as_bytes())
    }

    fn field_of(body: &Value) -> Option<String> {
        parse(body).unwrap_err().field
    }

    fn tea(quantity: u64) -> Value {
        json!({"sku": "tea-earl-grey", "quantity": quantity, "unit_price_cents": 450})
    }

    #[test]
    fn a_valid_order_gets_its_total() {
        let order = parse(&json!({
            "customer": "  ada ",
            "items": [tea(2), {"sku": "mug", "quantity": 1, "unit_price_cents": 1299}]
        }))
        .unwrap();
        assert_eq!(order.customer(), "ada");
        assert_eq!(order.amount_cents(), 2 * 450 + 1299);
        let event = order.into_event("o-1".into());
        assert_eq!(event.order_id, "o-1");
        assert_eq!(event.items.len(), 2);
        assert_eq!(event.items_total_cents(), Some(event.amount_cents));
    }

    #[test]
    fn bodies_that_are_not_an_object_name_no_field() {
        let not_json = NewOrder::from_json(b"{\"customer\":").unwrap_err();
        assert_eq!(not_json.field, None);
        assert!(not_json.message.starts_with("body is not valid JSON"));
        assert_eq!(parse(&json!([1, 2])).unwrap_err().field, None);
    }

    #[test]
    fn the_customer_is_checked() {
        assert_eq!(
            field_of(&json!({"items": [tea(1)]})).as_deref(),
            Some("customer")
        );
        for customer in [
            json!(7),
            json!("   "),
            json!("a".repeat(101)),
            json!("a\u{7}b"),
        ] {
            let body = json!({"customer": customer, "items": [tea(1)]});
            assert_eq!(field_of(&body).as_deref(), Some("customer"), "{body}");
        }
    }

    #[test]
    fn items_are_checked_one_by_one() {
        let cases = [
            (json!(null), "items"),
            (json!([]), "items"),
            (json!([tea(1), "tea"]), "items[1]"),
            (json!([tea(1), tea(0)]), "items[1].quantity"),
            (json!([tea(1_001)]), "items[0].quantity"),
            (
                json!([{"sku": "tea", "quantity": -1, "unit_price_cents": 1}]),
                "items[0].quantity",
            ),
            (
                json!([{"sku": "tea", "quantity": 1.5, "unit_price_cents": 1}]),
                "items[0].quantity",
            ),
            (
                json!([{"sku": "", "quantity": 1, "unit_price_cents": 1}]),
                "items[0].sku",
            ),
            (
                json!([{"sku": "a b", "quantity": 1, "unit_price_cents": 1}]),
                "items[0].sku",
            ),
            (
                json!([{"quantity": 1, "unit_price_cents": 1}]),
                "items[0].sku",
            ),
            (
                json!([{"sku": "tea", "quantity": 1, "unit_price_cents": "1"}]),
                "items[0].unit_price_cents",
            ),
            (
                json!([{"sku": "tea", "quantity": 1, "unit_price": 1}]),
                "items[0].unit_price",
            ),
        ];
        for (items, field) in cases {
            let body = json!({"customer": "ada", "items": items});
            assert_eq!(field_of(&body).as_deref(), Some(field), "{body}");
        }
        let too_many: Vec<Value> = (0..101).map(|_| tea(1)).collect();
        let body = json!({"customer": "ada", "items": too_many});
        assert_eq!(field_of(&body).as_deref(), Some("items"));
    }

    #[test]
    fn the_total_must_fit_and_not_be_zero() {
        let free = json!({"customer": "ada", "items": [{"sku": "tea", "quantity": 1, "unit_price_cents": 0}]});
        let error = parse(&free).unwrap_err();
        assert_eq!(error.field.as_deref(), Some("items"));
        assert_eq!(
            error.to_string(),
            "items: the order's total must be more than 0 cents"
        );

        let huge = json!({"customer": "ada", "items": [
            {"sku": "gold", "quantity": 1000, "unit_price_cents": u64::MAX}
        ]});
        assert_eq!(parse(&huge).unwrap_err().field.as_deref(), Some("items"));
    }

    #[test]
    fn unknown_top_level_fields_are_refused() {
        let body = json!({"customer": "ada", "items": [tea(1)], "amount_cents": 1});
        let error = parse(&body).unwrap_err();
        assert_eq!(error.field.as_deref(), Some("amount_cents"));
        assert_eq!(error.message, "unknown field; expected customer, items");
    }
}
