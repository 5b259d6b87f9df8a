//! From a checked struct to its `impl Event`.

use proc_macro2::TokenStream;
use quote::quote;
use syn::{Data, DeriveInput, Fields, FieldsNamed, parse_quote};

use crate::attr::EventAttr;
use crate::key::key_field;
use crate::name::{check_topic, check_type_name};

/// The `impl Event` for `input`, or every error found in it.
pub(crate) fn derive(input: &DeriveInput) -> syn::Result<TokenStream> {
    let fields = named_fields(input)?;
    let attr = EventAttr::from_input(input)?;

    let mut errors = Errors::default();
    errors.check(check_topic(&attr.topic.value()), &attr.topic);
    errors.check(check_type_name(&attr.type_name.value()), &attr.type_name);
    let key = match &attr.key {
        Some(key) => errors.keep(key_field(&input.ident, fields, key)),
        None => None,
    };
    errors.finish()?;

    let krate = attr.krate.unwrap_or_else(|| parse_quote!(::sidestream));
    let (topic, type_name) = (&attr.topic, &attr.type_name);
    let key_body = key.and_then(|field| field.ident.as_ref()).map_or_else(
        || quote!(::core::option::Option::None),
        |field| quote!(#krate::__private::KeyField::event_key(&self.#field)),
    );
    let name = &input.ident;
    let (impl_generics, type_generics, where_clause) = input.generics.split_for_impl();
    Ok(quote! {
        #[automatically_derived]
        impl #impl_generics #krate::Event for #name #type_generics #where_clause {
            const TOPIC: &'static str = #topic;
            const TYPE_NAME: &'static str = #type_name;

            #[inline]
            fn key(&self) -> ::core::option::Option<#krate::EventKey<'_>> {
                #key_body
            }
        }
    })
}

/// The fields of a struct with named fields; an error for anything else.
fn named_fields(input: &DeriveInput) -> syn::Result<&FieldsNamed> {
    let name = &input.ident;
    let (tokens, kind) = match &input.data {
        Data::Struct(data) => match &data.fields {
            Fields::Named(fields) => return Ok(fields),
            Fields::Unnamed(fields) => (quote!(#fields), "a tuple struct"),
            Fields::Unit => (quote!(#name), "a unit struct"),
        },
        Data::Enum(data) => {
            let token = data.enum_token;
            (quote!(#token #name), "an enum")
        }
        Data::Union(data) => {
            let token = data.union_token;
            (quote!(#token #name), "a union")
        }
    };
    Err(syn::Error::new_spanned(
        tokens,
        format!(
            "#[derive(Event)] is for prost messages, structs with named fields; `{name}` is \
             {kind}"
        ),
    ))
}

/// Errors gathered so that one compile reports all of them.
#[derive(Default)]
struct Errors(Option<syn::Error>);

impl Errors {
    fn check(&mut self, result: Result<(), String>, at: &impl quote::ToTokens) {
        if let Err(message) = result {
            self.push(syn::Error::new_spanned(at, message));
        }
    }

    fn keep<T>(&mut self, result: syn::Result<T>) -> Option<T> {
        result.map_err(|error| self.push(error)).ok()
    }

    fn push(&mut self, error: syn::Error) {
        match &mut self.0 {
            Some(errors) => errors.combine(error),
            None => self.0 = Some(error),
        }
    }

    fn finish(self) -> syn::Result<()> {
        self.0.map_or(Ok(()), Err)
    }
}
