//! The specs of the resources the tests create.

use serde_json::{Value, json};

/// A UserInvite resource's spec: `emails`, each with `groups`, through the InvitationEndpoint
/// `endpoint`.
pub fn users_spec(endpoint: &str, emails: &[impl AsRef<str>], groups: &[&str]) -> Value {
    json!({
        "endpointRef": {"kind": "InvitationEndpoint", "name": endpoint},
        "users": emails.iter().map(|e| json!({"emailAddress": e.as_ref(), "groups": groups, "userGroups": []})).collect::<Vec<_>>(),
    })
}

/// An OrgInvitation resource's spec: `usernames`, with the organization role `role`, through
/// the InvitationEndpoint `endpoint`.
pub fn org_spec(endpoint: &str, usernames: &[impl AsRef<str>], role: &str) -> Value {
    let usernames: Vec<&str> = usernames.iter().map(AsRef::as_ref).collect();
    json!({
        "endpointRef": {"kind": "InvitationEndpoint", "name": endpoint},
        "orgInvitation": {"usernames": usernames, "organizationRoles": [{"name": role}]},
    })
}

/// `spec` with the fields of `extra` (objects merged, anything else replaced).
pub fn with(mut spec: Value, extra: Value) -> Value {
    merge(&mut spec, extra);
    spec
}

fn merge(into: &mut Value, from: Value) {
    match (into, from) {
        (Value::Object(into), Value::Object(from)) => {
            for (k, v) in from {
                merge(into.entry(k).or_insert(Value::Null), v);
            }
        }
        (into, from) => *into = from,
    }
}
