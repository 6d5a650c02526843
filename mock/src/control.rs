//! The `/mock/` control endpoints (no auth, not journaled): journal, faults, settings, seeding,
//! playing the invited person, state dump.

use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::response::Response;
use axum::routing::{get, post, put};
use serde::Deserialize;
use serde_json::{Value, json};

use crate::wire::{empty_response, json_response};
use crate::{FaultMix, MockApi, ScriptedFault, lock};

/// The control routes.
pub(crate) fn routes() -> Router<MockApi> {
    Router::new()
        .route("/mock/requests", get(journal).delete(clear_journal))
        .route("/mock/calls", get(calls))
        .route("/mock/retry-after-violations", get(retry_after_violations))
        .route(
            "/mock/faults",
            get(list_faults).post(add_fault).delete(clear_faults),
        )
        .route("/mock/settings", put(put_settings).get(get_settings))
        .route("/mock/users", post(seed_user))
        .route("/mock/usergroups", post(seed_group))
        .route("/mock/org/members", post(seed_member))
        .route("/mock/users/{id}/login", post(login))
        .route("/mock/org/invitations/{username}/redeem", post(redeem))
        .route("/mock/expire", post(expire))
        .route("/mock/state", get(dump_state))
}

fn bad(message: impl Into<String>) -> Response {
    json_response(400, &json!({"error": message.into()}))
}

fn parse<T: for<'de> Deserialize<'de>>(body: &Bytes) -> Result<T, String> {
    serde_json::from_slice(body).map_err(|e| format!("invalid JSON body: {e}"))
}

async fn journal(State(api): State<MockApi>) -> Response {
    json_response(200, &json!(api.journal()))
}

async fn calls(State(api): State<MockApi>) -> Response {
    json_response(200, &json!(api.calls_by_operation()))
}

async fn retry_after_violations(State(api): State<MockApi>) -> Response {
    json_response(200, &json!(api.retry_after_violations()))
}

async fn clear_journal(State(api): State<MockApi>) -> Response {
    api.clear_journal();
    empty_response(204)
}

async fn list_faults(State(api): State<MockApi>) -> Response {
    json_response(200, &json!(api.pending_faults()))
}

async fn add_fault(State(api): State<MockApi>, body: Bytes) -> Response {
    let fault: ScriptedFault = match parse(&body) {
        Ok(f) => f,
        Err(e) => return bad(e),
    };
    api.add_fault(fault.clone());
    json_response(201, &json!(fault))
}

async fn clear_faults(State(api): State<MockApi>) -> Response {
    api.clear_faults();
    empty_response(204)
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct SettingsBody {
    latency_ms: Option<u64>,
    fault_rate: Option<f64>,
    /// `null` turns the mix off; absent leaves it.
    #[serde(default, deserialize_with = "present")]
    fault_mix: Option<Value>,
    /// Rotates the accepted API token.
    token: Option<String>,
}

/// A field that is present, `null` included.
fn present<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<Value>, D::Error> {
    Value::deserialize(d).map(Some)
}

fn settings_json(api: &MockApi) -> Value {
    let s = *lock(&api.inner.settings);
    json!({
        "latencyMs": s.latency.as_millis() as u64,
        "faultRate": s.fault_rate,
        "faultMix": s.fault_mix,
    })
}

async fn get_settings(State(api): State<MockApi>) -> Response {
    json_response(200, &settings_json(&api))
}

async fn put_settings(State(api): State<MockApi>, body: Bytes) -> Response {
    let s: SettingsBody = match parse(&body) {
        Ok(s) => s,
        Err(e) => return bad(e),
    };
    if s.fault_rate.is_some_and(|r| !(0.0..=1.0).contains(&r)) {
        return bad("faultRate must be between 0 and 1");
    }
    if s.token.as_deref().is_some_and(|t| t.trim().is_empty()) {
        return bad("token must not be empty");
    }
    let mix = match s.fault_mix {
        None => None,
        Some(Value::Null) => Some(FaultMix::default()),
        Some(v) => match serde_json::from_value::<FaultMix>(v) {
            Ok(m) => match m.validate() {
                Ok(()) => Some(m),
                Err(e) => return bad(e),
            },
            Err(e) => return bad(format!("invalid faultMix: {e}")),
        },
    };
    if let Some(ms) = s.latency_ms {
        api.set_latency(Duration::from_millis(ms));
    }
    if let Some(r) = s.fault_rate {
        api.set_fault_rate(r);
    }
    if let Some(token) = &s.token {
        api.set_token(token);
    }
    if let Some(m) = mix
        && let Err(e) = api.set_fault_mix(m)
    {
        return bad(e);
    }
    json_response(200, &settings_json(&api))
}

async fn seed_user(State(api): State<MockApi>, body: Bytes) -> Response {
    let v: Value = match parse(&body) {
        Ok(v) => v,
        Err(e) => return bad(e),
    };
    let id = api.state().seed_user(&v);
    match id.and_then(|id| api.user(&id)) {
        Some(u) => json_response(201, &u),
        None => bad("a user needs an identifier or emailAddress"),
    }
}

#[derive(Deserialize)]
struct GroupBody {
    id: Option<String>,
    name: String,
}

async fn seed_group(State(api): State<MockApi>, body: Bytes) -> Response {
    let g: GroupBody = match parse(&body) {
        Ok(g) => g,
        Err(e) => return bad(e),
    };
    let mut st = api.state();
    let id = g.id.unwrap_or_else(|| st.new_uuid());
    st.seed_group(&id, &g.name);
    let v = st.groups.get(&id).map(|g| st.group_model_json(g));
    json_response(201, &v.unwrap_or(Value::Null))
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct MemberBody {
    username: String,
    /// Role names; default `["org_member"]`.
    organization_roles: Option<Vec<String>>,
}

/// One member to seed: an object, or just a username.
#[derive(Deserialize)]
#[serde(untagged)]
enum MemberItem {
    Name(String),
    Full(MemberBody),
}

/// One member, or a list of them.
#[derive(Deserialize)]
#[serde(untagged)]
enum MembersBody {
    One(MemberBody),
    Many(Vec<MemberItem>),
}

fn add_member(st: &mut crate::state::State, m: MemberBody) -> usize {
    let names = m
        .organization_roles
        .unwrap_or_else(|| vec!["org_member".to_string()]);
    let roles = names.iter().map(|n| st.binding(n)).collect();
    st.add_member(&m.username, roles, Vec::new(), Vec::new())
}

async fn seed_member(State(api): State<MockApi>, body: Bytes) -> Response {
    let m: MembersBody = match parse(&body) {
        Ok(m) => m,
        Err(e) => return bad(e),
    };
    let mut st = api.state();
    match m {
        MembersBody::One(m) => {
            let i = add_member(&mut st, m);
            let v = st.member_json(&st.members[i]);
            json_response(201, &v)
        }
        MembersBody::Many(items) => {
            let before = st.members.len();
            for item in items {
                let m = match item {
                    MemberItem::Name(username) => MemberBody {
                        username,
                        organization_roles: None,
                    },
                    MemberItem::Full(m) => m,
                };
                add_member(&mut st, m);
            }
            let total = st.members.len();
            json_response(201, &json!({"added": total - before, "total": total}))
        }
    }
}

async fn login(State(api): State<MockApi>, Path(id): Path<String>) -> Response {
    if api.state().login(&id) {
        json_response(200, &api.user(&id).unwrap_or(Value::Null))
    } else {
        json_response(404, &json!({"error": format!("no user {id}")}))
    }
}

async fn redeem(State(api): State<MockApi>, Path(username): Path<String>) -> Response {
    if api.redeem_invitation(&username) {
        json_response(200, &json!({"redeemed": true, "username": username}))
    } else {
        json_response(
            404,
            &json!({"redeemed": false, "error": format!("no pending invitation for {username}")}),
        )
    }
}

async fn expire(State(api): State<MockApi>) -> Response {
    api.expire_invitations();
    empty_response(204)
}

async fn dump_state(State(api): State<MockApi>) -> Response {
    let st = api.state();
    let invitations: Vec<Value> = st
        .invitations
        .iter()
        .map(|i| st.invitation_json(i, true))
        .collect();
    let members: Vec<Value> = st.members.iter().map(|m| st.member_json(m)).collect();
    let body = json!({
        "users": st.users_json(),
        "userGroups": st.groups_json(),
        "orgInvitations": invitations,
        "orgMembers": members,
        "emailsSent": st.email_counts(),
        "emails": st.emails_json(),
        "liveAccessTokens": st.access_tokens.keys().filter(|t| st.access_token_valid(t)).count(),
    });
    drop(st);
    json_response(200, &body)
}
