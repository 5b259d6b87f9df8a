//! The key field: finding it by name and checking that its type can be a key.
//!
//! The check is by the type as written (the SDK's `KeyField` trait then checks it again by
//! the type itself), so that an unsupported type is reported at the field with the list of
//! supported ones.

use syn::ext::IdentExt;
use syn::{Field, FieldsNamed, GenericArgument, Ident, LitStr, PathArguments, Type};

/// The field named by `key = "…"`, if its type can be a key.
///
/// Fails pointing at the `"…"` if no field has that name (listing the fields), or at the
/// field's type if it is not a supported key type (listing those).
pub(crate) fn key_field<'a>(
    struct_name: &Ident,
    fields: &'a FieldsNamed,
    key: &LitStr,
) -> syn::Result<&'a Field> {
    let wanted = key.value();
    let field = fields
        .named
        .iter()
        .find(|field| {
            field
                .ident
                .as_ref()
                .is_some_and(|ident| ident.unraw() == wanted)
        })
        .ok_or_else(|| no_such_field(struct_name, fields, key, &wanted))?;
    if !is_key_type(&field.ty, true) {
        return Err(syn::Error::new_spanned(
            &field.ty,
            format!(
                "key field `{wanted}` has a type that cannot be a key; a key field is a proto \
                 `string`, `bytes` or integer field, or an `optional` one: {SUPPORTED}"
            ),
        ));
    }
    Ok(field)
}

fn no_such_field(
    struct_name: &Ident,
    fields: &FieldsNamed,
    key: &LitStr,
    wanted: &str,
) -> syn::Error {
    let names: Vec<String> = fields
        .named
        .iter()
        .filter_map(|field| field.ident.as_ref())
        .map(|ident| format!("`{}`", ident.unraw()))
        .collect();
    let message = if names.is_empty() {
        format!("no field `{wanted}` in `{struct_name}`, which has no fields")
    } else {
        format!(
            "no field `{wanted}` in `{struct_name}`; `key` names one of its fields: {}",
            names.join(", ")
        )
    };
    syn::Error::new_spanned(key, message)
}

/// Whether `ty` is written as a supported key type; `Option<_>` only at the top.
fn is_key_type(ty: &Type, option_allowed: bool) -> bool {
    let ty = ungroup(ty);
    let Type::Path(path) = ty else {
        return false;
    };
    if path.qself.is_some() {
        return false;
    }
    let Some(last) = path.path.segments.last() else {
        return false;
    };
    match (last.ident.to_string().as_str(), &last.arguments) {
        ("String" | "Bytes" | "u32" | "u64" | "i32" | "i64", PathArguments::None) => true,
        ("Vec", arguments) => only_type_argument(arguments).is_some_and(is_u8),
        ("Option", arguments) if option_allowed => {
            only_type_argument(arguments).is_some_and(|inner| is_key_type(inner, false))
        }
        _ => false,
    }
}

/// `T` of `<T>`.
fn only_type_argument(arguments: &PathArguments) -> Option<&Type> {
    let PathArguments::AngleBracketed(arguments) = arguments else {
        return None;
    };
    match arguments.args.first() {
        Some(GenericArgument::Type(ty)) if arguments.args.len() == 1 => Some(ty),
        _ => None,
    }
}

fn is_u8(ty: &Type) -> bool {
    matches!(ungroup(ty), Type::Path(path) if path.qself.is_none() && path.path.is_ident("u8"))
}

/// The type inside invisible groups (from `macro_rules!`) and parentheses.
fn ungroup(mut ty: &Type) -> &Type {
    loop {
        match ty {
            Type::Group(group) => ty = &group.elem,
            Type::Paren(paren) => ty = &paren.elem,
            _ => return ty,
        }
    }
}

const SUPPORTED: &str = "`String`, `Vec<u8>`, `bytes::Bytes`, `u32`, `u64`, `i32`, `i64`, \
                         or an `Option` of one of these";

#[cfg(test)]
mod tests {
    use syn::parse_quote;

    use super::*;

    #[test]
    fn supported_types() {
        let types: [Type; 9] = [
            parse_quote!(String),
            parse_quote!(::prost::alloc::string::String),
            parse_quote!(Vec<u8>),
            parse_quote!(::prost::alloc::vec::Vec<u8>),
            parse_quote!(::prost::bytes::Bytes),
            parse_quote!(u64),
            parse_quote!(i32),
            parse_quote!(Option<String>),
            parse_quote!(::core::option::Option<u32>),
        ];
        for ty in types {
            assert!(is_key_type(&ty, true), "{}", quote::quote!(#ty));
        }
    }

    #[test]
    fn unsupported_types() {
        let types: [Type; 9] = [
            parse_quote!(f64),
            parse_quote!(bool),
            parse_quote!(u8),
            parse_quote!(Customer),
            parse_quote!(Option<Customer>),
            parse_quote!(Option<Option<u64>>),
            parse_quote!(Vec<String>),
            parse_quote!(&'static str),
            parse_quote!(<T as Trait>::String),
        ];
        for ty in types {
            assert!(!is_key_type(&ty, true), "{}", quote::quote!(#ty));
        }
    }
}
