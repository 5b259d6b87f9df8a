//! Parsing `#[event(topic = "…", type_name = "…", key = "…", crate = "…")]`.

use syn::meta::ParseNestedMeta;
use syn::{Attribute, DeriveInput, Expr, ExprLit, Lit, LitStr, Path};

/// The parsed `#[event(…)]` attributes of one struct (several are merged, as serde does).
///
/// Values are kept as the literals the user wrote, so that later checks can point at them.
pub(crate) struct EventAttr {
    /// `topic = "…"`.
    pub(crate) topic: LitStr,
    /// `type_name = "…"`.
    pub(crate) type_name: LitStr,
    /// `key = "…"`: the name of the key field, if the event is keyed.
    pub(crate) key: Option<LitStr>,
    /// `crate = "…"`: the path of the SDK in generated code; `::sidestream` if absent.
    pub(crate) krate: Option<Path>,
}

impl EventAttr {
    /// Parses and merges the `#[event(…)]` attributes of `input`.
    ///
    /// Fails on a missing attribute or a missing `topic` or `type_name` (pointing at the
    /// struct name or the attribute), an unknown or repeated key, or a value that is not a
    /// string literal (pointing at that key or value).
    pub(crate) fn from_input(input: &DeriveInput) -> syn::Result<Self> {
        let mut slots = Slots::default();
        let mut first = None;
        for attr in input
            .attrs
            .iter()
            .filter(|attr| attr.path().is_ident("event"))
        {
            first.get_or_insert(attr);
            attr.parse_nested_meta(|meta| slots.parse(&meta))?;
        }
        let Some(first) = first else {
            return Err(syn::Error::new_spanned(
                &input.ident,
                format!(
                    "#[derive(Event)] needs an #[event(topic = \"…\", type_name = \"…\")] \
                     attribute on `{}`, naming its topic and versioned type name",
                    input.ident
                ),
            ));
        };
        let topic = slots
            .topic
            .ok_or_else(|| missing(first, "topic", MISSING_TOPIC));
        let type_name = slots
            .type_name
            .ok_or_else(|| missing(first, "type_name", MISSING_TYPE_NAME));
        let (topic, type_name) = match (topic, type_name) {
            (Ok(topic), Ok(type_name)) => (topic, type_name),
            (Err(mut error), Err(other)) => {
                error.combine(other);
                return Err(error);
            }
            (Err(error), _) | (_, Err(error)) => return Err(error),
        };
        let krate = slots.krate.map(|lit| lit.parse::<Path>()).transpose()?;
        Ok(Self {
            topic,
            type_name,
            key: slots.key,
            krate,
        })
    }
}

/// The values seen so far, to catch repeated keys across attributes.
#[derive(Default)]
struct Slots {
    topic: Option<LitStr>,
    type_name: Option<LitStr>,
    key: Option<LitStr>,
    krate: Option<LitStr>,
}

impl Slots {
    fn parse(&mut self, meta: &ParseNestedMeta<'_>) -> syn::Result<()> {
        let (name, slot, example) = if meta.path.is_ident("topic") {
            ("topic", &mut self.topic, "topic = \"orders\"")
        } else if meta.path.is_ident("type_name") {
            (
                "type_name",
                &mut self.type_name,
                "type_name = \"shop.OrderPlaced.v1\"",
            )
        } else if meta.path.is_ident("key") {
            ("key", &mut self.key, "key = \"order_id\"")
        } else if meta.path.is_ident("crate") {
            ("crate", &mut self.krate, "crate = \"::sidestream\"")
        } else {
            let unknown = quote::ToTokens::to_token_stream(&meta.path).to_string();
            return Err(syn::Error::new_spanned(
                &meta.path,
                format!(
                    "unknown #[event] key `{}`; expected `topic`, `type_name`, `key` or `crate`",
                    unknown.replace(' ', "")
                ),
            ));
        };
        if slot.is_some() {
            return Err(syn::Error::new_spanned(
                &meta.path,
                format!("duplicate `{name}` in #[event]; give it once"),
            ));
        }
        *slot = Some(string_value(meta, name, example)?);
        Ok(())
    }
}

/// The string literal after `name =`.
fn string_value(meta: &ParseNestedMeta<'_>, name: &str, example: &str) -> syn::Result<LitStr> {
    let mut value: Expr = meta.value()?.parse()?;
    while let Expr::Group(group) = value {
        value = *group.expr;
    }
    match value {
        Expr::Lit(ExprLit {
            lit: Lit::Str(lit), ..
        }) => Ok(lit),
        other => Err(syn::Error::new_spanned(
            other,
            format!("`{name}` takes a string literal, e.g. {example}"),
        )),
    }
}

fn missing(attr: &Attribute, name: &str, explanation: &str) -> syn::Error {
    syn::Error::new_spanned(attr, format!("#[event] is missing `{name}`: {explanation}"))
}

const MISSING_TOPIC: &str = "the topic the event is published to, e.g. topic = \"orders\"";

const MISSING_TYPE_NAME: &str = "the event's versioned type name, carried in its `type` \
                                 header, e.g. type_name = \"shop.OrderPlaced.v1\"";
