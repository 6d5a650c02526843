//! Arbitrary JSON for property tests of the decoders: any shape, with the field names the
//! APIs use (so that the decoders' paths are reached) and others.

use proptest::prelude::*;
use serde_json::{Map, Number, Value};

const KEYS: &[&str] = &[
    "status",
    "response",
    "items",
    "results",
    "invitations",
    "identifier",
    "id",
    "emailAddress",
    "groups",
    "userGroups",
    "roles",
    "name",
    "lastSuccessfulLogin",
    "customer",
    "message",
    "code",
    "result",
    "validUsers",
    "invalidIdentifiers",
    "username",
    "user",
    "userId",
    "email",
    "refLink",
    "generatedAt",
    "expirationTime",
    "totalResults",
    "nextLink",
    "error",
    "error_message",
    "error_messages",
    "error_description",
    "access_token",
    "expires_in",
];

fn key() -> impl Strategy<Value = String> {
    prop_oneof![
        4 => prop::sample::select(KEYS).prop_map(str::to_string),
        1 => ".{0,8}",
    ]
}

fn leaf() -> impl Strategy<Value = Value> {
    prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(|n| Value::Number(n.into())),
        any::<f64>().prop_map(|f| Number::from_f64(f).map_or(Value::Null, Value::Number)),
        prop::sample::select(vec![
            "AVAILABLE",
            "REDEEMED",
            "REVOKED",
            "ERROR",
            "OK",
            "Everyone"
        ])
        .prop_map(|s| Value::String(s.into())),
        "[a-z@.+]{0,20}".prop_map(Value::String),
        any::<String>().prop_map(Value::String),
    ]
}

/// Any JSON value, up to a few levels deep.
pub fn json() -> impl Strategy<Value = Value> {
    leaf().prop_recursive(4, 64, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
            prop::collection::vec((key(), inner), 0..6)
                .prop_map(|pairs| Value::Object(pairs.into_iter().collect::<Map<_, _>>())),
        ]
    })
}
