//! Derive macros for [meshbus](https://docs.rs/meshbus): `#[derive(Event)]` and
//! `#[derive(Command)]`. Use them through the `meshbus` crate (feature `derive`, on by default).
//!
//! ```
//! use meshbus::prelude::*;
//! use serde::{Deserialize, Serialize};
//!
//! #[derive(Serialize, Deserialize, Event)]
//! struct OrderPlaced { order_id: u64 }
//!
//! #[derive(Serialize, Deserialize, Command)]
//! #[meshbus(name = "orders.place", reply = u64)]
//! struct PlaceOrder { sku: String }
//!
//! assert_eq!(<OrderPlaced as Event>::NAME, "OrderPlaced");
//! assert_eq!(<PlaceOrder as Command>::NAME, "orders.place");
//! ```
//!
//! Attributes, all optional, in `#[meshbus(...)]`:
//!
//! - `name = "..."`: the wire name (default: the type's name). Give every message a stable,
//!   namespaced name (`"orders.place"`) when it crosses processes.
//! - `reply = Type` (commands only): the reply type (default `()`).
//! - `crate = "path"`: where the traits live (default `::meshbus`), for crates that depend on
//!   `meshbus-core` directly (`crate = "::meshbus_core"`).

#![doc(test(attr(deny(warnings))))]

use proc_macro::TokenStream;
use quote::quote;
use syn::{parse_macro_input, DeriveInput, LitStr, Path, Type};

/// Implements `Event`. See the [crate docs](crate).
#[proc_macro_derive(Event, attributes(meshbus))]
pub fn derive_event(input: TokenStream) -> TokenStream {
    let input = parse_macro_input!(input as DeriveInput);
    expand(input, Kind::Event)
        .unwrap_or_else(syn::Error::into_compile_error)
        .into()
}

/// Implements `Command`. See the [crate docs](crate).
#[proc_macro_derive(Command, attributes(meshbus))]
pub fn derive_command(input: TokenStream) -> TokenStream {
    let input = parse_macro_input!(input as DeriveInput);
    expand(input, Kind::Command)
        .unwrap_or_else(syn::Error::into_compile_error)
        .into()
}

#[derive(PartialEq)]
enum Kind {
    Event,
    Command,
}

struct Attrs {
    name: Option<LitStr>,
    reply: Option<Type>,
    krate: Option<Path>,
}

fn parse_attrs(input: &DeriveInput, kind: &Kind) -> syn::Result<Attrs> {
    let mut attrs = Attrs {
        name: None,
        reply: None,
        krate: None,
    };
    for attr in input.attrs.iter().filter(|a| a.path().is_ident("meshbus")) {
        attr.parse_nested_meta(|meta| {
            if meta.path.is_ident("name") {
                let lit: LitStr = meta.value()?.parse()?;
                if lit.value().is_empty() {
                    return Err(meta.error("a message name must not be empty"));
                }
                attrs.name = Some(lit);
            } else if meta.path.is_ident("reply") {
                if *kind == Kind::Event {
                    return Err(meta.error("`reply` applies to commands only"));
                }
                attrs.reply = Some(meta.value()?.parse()?);
            } else if meta.path.is_ident("crate") {
                let lit: LitStr = meta.value()?.parse()?;
                attrs.krate = Some(lit.parse()?);
            } else {
                return Err(meta.error("expected `name`, `reply` or `crate`"));
            }
            Ok(())
        })?;
    }
    Ok(attrs)
}

fn expand(input: DeriveInput, kind: Kind) -> syn::Result<proc_macro2::TokenStream> {
    if !input.generics.params.is_empty() {
        return Err(syn::Error::new_spanned(
            &input.generics,
            "a message type cannot be generic: every instantiation would share one wire name",
        ));
    }
    let attrs = parse_attrs(&input, &kind)?;
    let ident = &input.ident;
    let name = attrs
        .name
        .unwrap_or_else(|| LitStr::new(&ident.to_string(), ident.span()));
    let krate = attrs.krate.unwrap_or_else(|| syn::parse_quote!(::meshbus));
    Ok(match kind {
        Kind::Event => quote! {
            impl #krate::Event for #ident {
                const NAME: &'static str = #name;
            }
        },
        Kind::Command => {
            let reply = attrs.reply.unwrap_or_else(|| syn::parse_quote!(()));
            quote! {
                impl #krate::Command for #ident {
                    const NAME: &'static str = #name;
                    type Reply = #reply;
                }
            }
        }
    })
}
