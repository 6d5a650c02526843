//! The UserInvite API (Wavefront REST API v2, `/api/v2/user*` and `/api/v2/usergroup*`).

use std::collections::HashSet;

use axum::response::Response;
use jiff::Timestamp;
use serde_json::{Map, Value, json};

use crate::state::{EmailApi, PERMISSIONS, State, User, is_valid_email};
use crate::wire::{
    ApiRequest, Fail, Outcome, empty_response, json_body, json_response, opt_string,
    opt_string_list, string_list, wf_error, wf_wrapped,
};

/// Handles one UserInvite request (authentication included).
pub(crate) fn handle(state: &mut State, req: &ApiRequest) -> Response {
    match route(state, req) {
        Ok(r) => r,
        Err(f) => wf_error(&f),
    }
}

fn authorized(state: &State, req: &ApiRequest) -> bool {
    let token = match (req.header("authorization"), req.header("x-auth-token")) {
        (Some(a), _) => {
            let a = a.trim();
            match a.split_once(' ') {
                Some((scheme, t)) if scheme.eq_ignore_ascii_case("bearer") => t.trim(),
                _ => return false,
            }
        }
        (None, Some(t)) => t.trim(),
        (None, None) => return false,
    };
    if token.is_empty() {
        return false;
    }
    token == state.cfg.token || state.access_token_valid(token)
}

fn route(state: &mut State, req: &ApiRequest) -> Outcome {
    if !authorized(state, req) {
        return Err(Fail::new(
            401,
            "Authorization failed: missing or invalid API token (send 'Authorization: Bearer <token>')",
        ));
    }
    let segs: Vec<&str> = req.segments.iter().map(String::as_str).collect();
    let m = req.method.as_str();
    match (m, segs.as_slice()) {
        ("POST", ["api", "v2", "user", "invite"]) => invite(state, req),
        ("GET", ["api", "v2", "user"]) => Ok(json_response(200, &json!(state.users_json()))),
        ("POST", ["api", "v2", "user"]) => create_user(state, req),
        ("POST", ["api", "v2", "user", "deleteUsers"]) => delete_users(state, req),
        ("POST", ["api", "v2", "user", "validateUsers"]) => validate_users(state, req),
        ("POST", ["api", "v2", "user", "grant", perm]) => grant_many(state, req, perm, true),
        ("POST", ["api", "v2", "user", "revoke", perm]) => grant_many(state, req, perm, false),
        ("GET", ["api", "v2", "user", id]) => {
            let u = find(state, id)?;
            Ok(json_response(200, &state.user_json(u)))
        }
        ("PUT", ["api", "v2", "user", id]) => update_user(state, req, id),
        ("DELETE", ["api", "v2", "user", id]) => {
            let key = key_of(state, id)?;
            state.users.remove(&key);
            Ok(empty_response(200))
        }
        ("POST", ["api", "v2", "user", id, "addUserGroups"]) => add_groups(state, req, id),
        ("POST", ["api", "v2", "user", id, "removeUserGroups"]) => remove_groups(state, req, id),
        ("POST", ["api", "v2", "user", id, "grant"]) => grant_one(state, req, id, true),
        ("POST", ["api", "v2", "user", id, "revoke"]) => grant_one(state, req, id, false),
        ("GET", ["api", "v2", "user", id, "businessFunctions"]) => business_functions(state, id),
        ("GET", ["api", "v2", "usergroup"]) => list_groups(state, req),
        ("GET", ["api", "v2", "usergroup", id]) => {
            let g = state
                .groups
                .get(*id)
                .ok_or_else(|| Fail::not_found(format!("User group {id} not found")))?;
            Ok(json_response(
                200,
                &wf_wrapped(200, None, state.group_model_json(g)),
            ))
        }
        (_, ["api", "v2", "user" | "usergroup", ..]) => Err(Fail::new(
            405,
            format!("HTTP 405 Method Not Allowed: {m} {}", req.path),
        )),
        _ => Err(Fail::not_found(format!("HTTP 404 Not Found: {}", req.path))),
    }
}

fn key_of(state: &State, id: &str) -> Result<String, Fail> {
    state
        .user_key(id)
        .ok_or_else(|| Fail::not_found(format!("User {id} not found")))
}

fn find<'a>(state: &'a State, id: &str) -> Result<&'a User, Fail> {
    let key = key_of(state, id)?;
    state
        .users
        .get(&key)
        .ok_or_else(|| Fail::not_found(format!("User {id} not found")))
}

/// A parsed and type-checked `UserToCreate`.
struct UserToCreate {
    email: String,
    groups: Vec<String>,
    user_groups: Vec<String>,
    roles: Vec<String>,
}

/// Checks a `UserToCreate` against the spec: `emailAddress`, `groups`, `userGroups` required,
/// `roles` optional, all strings / arrays of strings.
fn parse_user_to_create(v: &Value) -> Result<UserToCreate, Fail> {
    let Value::Object(obj) = v else {
        return Err(Fail::bad_request(
            "Each user must be a UserToCreate object {emailAddress, groups, userGroups, roles}",
        ));
    };
    let email = opt_string(obj, "emailAddress", "")?
        .ok_or_else(|| Fail::bad_request("emailAddress is required"))?;
    let ctx = format!(" (user {email})");
    let required = |field: &str| -> Result<Vec<String>, Fail> {
        opt_string_list(obj, field, &ctx)?.ok_or_else(|| {
            Fail::bad_request(format!("{field} is required{ctx}; send [] when empty"))
        })
    };
    let groups = required("groups")?;
    let user_groups = required("userGroups")?;
    let roles = opt_string_list(obj, "roles", &ctx)?.unwrap_or_default();
    Ok(UserToCreate {
        email,
        groups,
        user_groups,
        roles,
    })
}

fn dedup(v: &[String]) -> Vec<String> {
    let mut seen = HashSet::new();
    v.iter()
        .filter(|x| seen.insert(x.as_str()))
        .cloned()
        .collect()
}

fn invalid_permissions(groups: &[String]) -> Vec<String> {
    groups
        .iter()
        .filter(|g| !PERMISSIONS.contains(&g.as_str()))
        .cloned()
        .collect()
}

/// Splits user group ids into known ones (Everyone excluded) and unknown ones.
fn split_groups(state: &State, ids: &[String]) -> (Vec<String>, Vec<String>) {
    let mut known = Vec::new();
    let mut unknown = Vec::new();
    for id in dedup(ids) {
        if id == state.everyone_id {
            continue;
        }
        if state.groups.contains_key(&id) {
            known.push(id);
        } else {
            unknown.push(id);
        }
    }
    (known, unknown)
}

/// The response when some user groups were ignored: wrapped, code 202 (HTTP and body).
fn maybe_ignored(user: Value, ignored: &[String], wrap_always: bool) -> Response {
    if ignored.is_empty() {
        if wrap_always {
            json_response(200, &wf_wrapped(200, None, user))
        } else {
            json_response(200, &user)
        }
    } else {
        let msg = format!(
            "Invalid user groups found and ignored [{}]",
            ignored.join(", ")
        );
        json_response(202, &wf_wrapped(202, Some(&msg), user))
    }
}

enum InvitePlan {
    Create(UserToCreate, Vec<String>),
    Resend(String, UserToCreate, Vec<String>),
}

fn invite(state: &mut State, req: &ApiRequest) -> Outcome {
    let body = json_body(req)?;
    let Value::Array(items) = body else {
        return Err(Fail::bad_request(
            "Request body must be a JSON array of UserToCreate",
        ));
    };
    if items.is_empty() {
        return Err(Fail::bad_request("At least one user must be given"));
    }
    let now = Timestamp::now();
    let mut errors = Vec::new();
    let mut plans = Vec::new();
    let mut seen = HashSet::new();
    let mut ignored: Vec<String> = Vec::new();
    for item in &items {
        let u = match parse_user_to_create(item) {
            Ok(u) => u,
            Err(f) => {
                errors.push(f.message);
                continue;
            }
        };
        if !is_valid_email(&u.email) {
            errors.push(format!("Invalid email address: {}", u.email));
            continue;
        }
        let bad = invalid_permissions(&u.groups);
        if !bad.is_empty() {
            errors.push(format!(
                "Invalid permission(s) [{}] for user {}",
                bad.join(", "),
                u.email
            ));
            continue;
        }
        let id = state.identifier_for(&u.email);
        if !seen.insert(id.clone()) {
            errors.push(format!("Duplicate email address {} in request", u.email));
            continue;
        }
        let (known, unknown) = split_groups(state, &u.user_groups);
        for g in unknown {
            if !ignored.contains(&g) {
                ignored.push(g);
            }
        }
        match state.users.get(&id) {
            Some(existing)
                if existing.invitation_expired(now)
                    || (state.cfg.resend_to_invited
                        && existing.last_login.is_none()
                        && existing.invitation_expires.is_some()) =>
            {
                plans.push(InvitePlan::Resend(id, u, known));
            }
            Some(_) => errors.push(format!(
                "User with id {} is already created in our system.",
                u.email
            )),
            None => plans.push(InvitePlan::Create(u, known)),
        }
    }
    if !errors.is_empty() {
        return Err(Fail::bad_request(errors.join("; ")));
    }
    let expires = now + state.cfg.invitation_ttl_userinvite;
    let mut last = String::new();
    for plan in plans {
        let (id, u, known) = match plan {
            InvitePlan::Create(u, known) => (state.identifier_for(&u.email), u, known),
            InvitePlan::Resend(id, u, known) => (id, u, known),
        };
        let user = User {
            identifier: id.clone(),
            sso_id: state.users.get(&id).and_then(|x| x.sso_id.clone()),
            last_login: None,
            groups: dedup(&u.groups),
            user_groups: known,
            roles: dedup(&u.roles),
            invitation_expires: Some(expires),
        };
        state.users.insert(id.clone(), user);
        state.send_email(&u.email, EmailApi::UserInvite);
        last = id;
    }
    Ok(maybe_ignored(user_or_null(state, &last), &ignored, false))
}

/// The user `id` as the API shows it, or `null`.
fn user_or_null(state: &State, id: &str) -> Value {
    state
        .users
        .get(id)
        .map_or(Value::Null, |u| state.user_json(u))
}

fn create_user(state: &mut State, req: &ApiRequest) -> Outcome {
    let body = json_body(req)?;
    let u = parse_user_to_create(&body)?;
    if !is_valid_email(&u.email) {
        return Err(Fail::bad_request(format!(
            "Invalid email address: {}",
            u.email
        )));
    }
    let bad = invalid_permissions(&u.groups);
    if !bad.is_empty() {
        return Err(Fail::bad_request(format!(
            "Invalid permission(s) [{}] for user {}",
            bad.join(", "),
            u.email
        )));
    }
    let send_email = req
        .query_param("sendEmail")
        .is_some_and(|v| v.eq_ignore_ascii_case("true"));
    let id = state.identifier_for(&u.email);
    if let Some(existing) = state.users.get(&id) {
        // "Creates an user if the user doesn't already exist": existing users are returned as is.
        return Ok(json_response(
            200,
            &wf_wrapped(200, None, state.user_json(existing)),
        ));
    }
    let (known, unknown) = split_groups(state, &u.user_groups);
    let invitation_expires =
        send_email.then(|| Timestamp::now() + state.cfg.invitation_ttl_userinvite);
    state.users.insert(
        id.clone(),
        User {
            identifier: id.clone(),
            sso_id: None,
            last_login: None,
            groups: dedup(&u.groups),
            user_groups: known,
            roles: dedup(&u.roles),
            invitation_expires,
        },
    );
    if send_email {
        state.send_email(&u.email, EmailApi::UserInvite);
    }
    Ok(maybe_ignored(user_or_null(state, &id), &unknown, true))
}

fn update_user(state: &mut State, req: &ApiRequest, id: &str) -> Outcome {
    let key = key_of(state, id)?;
    let body = json_body(req)?;
    let Value::Object(obj) = body else {
        return Err(Fail::bad_request(
            "Request body must be a UserRequestDTO object",
        ));
    };
    let ctx = format!(" (user {id})");
    if let Some(ident) = opt_string(&obj, "identifier", &ctx)?
        && !ident.eq_ignore_ascii_case(id)
    {
        return Err(Fail::bad_request(format!(
            "identifier {ident} in the body does not match the user {id} in the path"
        )));
    }
    opt_string(&obj, "customer", &ctx)?;
    opt_string(&obj, "credential", &ctx)?;
    let sso_id = opt_string(&obj, "ssoId", &ctx)?;
    let groups = opt_string_list(&obj, "groups", &ctx)?.unwrap_or_default();
    let user_groups = opt_string_list(&obj, "userGroups", &ctx)?.unwrap_or_default();
    let roles = opt_string_list(&obj, "roles", &ctx)?.unwrap_or_default();
    let bad = invalid_permissions(&groups);
    if !bad.is_empty() {
        return Err(Fail::bad_request(format!(
            "Invalid permission(s) [{}] for user {id}",
            bad.join(", ")
        )));
    }
    let (known, unknown) = split_groups(state, &user_groups);
    if let Some(u) = state.users.get_mut(&key) {
        u.groups = dedup(&groups);
        u.user_groups = known;
        u.roles = dedup(&roles);
        if sso_id.is_some() {
            u.sso_id = sso_id;
        }
    }
    let user = find(state, &key).map(|u| state.user_json(u))?;
    Ok(maybe_ignored(user, &unknown, true))
}

fn body_ids(req: &ApiRequest, what: &str) -> Result<Vec<String>, Fail> {
    let body = json_body(req)?;
    string_list(&body, what)
}

fn delete_users(state: &mut State, req: &ApiRequest) -> Outcome {
    let ids = body_ids(req, "The list of user identifiers")?;
    let mut deleted = Vec::new();
    for id in ids {
        if let Some(k) = state.user_key(&id)
            && let Some(u) = state.users.remove(&k)
        {
            deleted.push(u.identifier);
        }
    }
    Ok(json_response(200, &wf_wrapped(200, None, json!(deleted))))
}

fn validate_users(state: &mut State, req: &ApiRequest) -> Outcome {
    let ids = body_ids(req, "The list of user identifiers")?;
    let mut valid = Vec::new();
    let mut invalid = Vec::new();
    for id in ids {
        match state.user_key(&id).and_then(|k| state.users.get(&k)) {
            Some(u) => valid.push(u),
            None => invalid.push(id),
        }
    }
    let valid = state.some_users_json(valid);
    Ok(json_response(
        200,
        &wf_wrapped(
            200,
            None,
            json!({"validUsers": valid, "invalidIdentifiers": invalid}),
        ),
    ))
}

fn add_groups(state: &mut State, req: &ApiRequest, id: &str) -> Outcome {
    let key = key_of(state, id)?;
    let ids = body_ids(req, "The list of user group ids")?;
    let (known, unknown) = split_groups(state, &ids);
    if !unknown.is_empty() {
        return Err(Fail::bad_request(format!(
            "Invalid user groups [{}]",
            unknown.join(", ")
        )));
    }
    if let Some(u) = state.users.get_mut(&key) {
        for g in known {
            if !u.user_groups.contains(&g) {
                u.user_groups.push(g);
            }
        }
    }
    let user = find(state, &key).map(|u| state.user_json(u))?;
    Ok(json_response(200, &user))
}

fn remove_groups(state: &mut State, req: &ApiRequest, id: &str) -> Outcome {
    let key = key_of(state, id)?;
    let ids = body_ids(req, "The list of user group ids")?;
    if let Some(u) = state.users.get_mut(&key) {
        u.user_groups.retain(|g| !ids.contains(g));
    }
    let user = find(state, &key).map(|u| state.user_json(u))?;
    Ok(json_response(200, &user))
}

fn set_permission(u: &mut User, perm: &str, grant: bool) {
    if grant {
        if !u.groups.iter().any(|g| g == perm) {
            u.groups.push(perm.to_string());
        }
    } else {
        u.groups.retain(|g| g != perm);
    }
}

fn check_permission(perm: &str) -> Result<(), Fail> {
    if PERMISSIONS.contains(&perm) {
        Ok(())
    } else {
        Err(Fail::bad_request(format!("Invalid permission: {perm}")))
    }
}

fn grant_one(state: &mut State, req: &ApiRequest, id: &str, grant: bool) -> Outcome {
    let key = key_of(state, id)?;
    if !req.is_form() {
        return Err(Fail::new(
            415,
            "HTTP 415 Unsupported Media Type: the body must be application/x-www-form-urlencoded",
        ));
    }
    let perm = req
        .form_pairs()
        .into_iter()
        .find(|(k, _)| k == "group")
        .map(|(_, v)| v)
        .ok_or_else(|| Fail::bad_request("Form field 'group' (the permission) is required"))?;
    check_permission(&perm)?;
    if let Some(u) = state.users.get_mut(&key) {
        set_permission(u, &perm, grant);
    }
    let user = find(state, &key).map(|u| state.user_json(u))?;
    Ok(json_response(200, &user))
}

fn grant_many(state: &mut State, req: &ApiRequest, perm: &str, grant: bool) -> Outcome {
    check_permission(perm)?;
    let ids = body_ids(req, "The list of user identifiers")?;
    if ids.is_empty() {
        return Err(Fail::bad_request(
            "At least one user identifier is required",
        ));
    }
    let mut keys = Vec::new();
    let mut missing = Vec::new();
    for id in &ids {
        match state.user_key(id) {
            Some(k) => keys.push(k),
            None => missing.push(id.clone()),
        }
    }
    if !missing.is_empty() {
        return Err(Fail::not_found(format!(
            "Users not found: [{}]",
            missing.join(", ")
        )));
    }
    for k in &keys {
        if let Some(u) = state.users.get_mut(k) {
            set_permission(u, perm, grant);
        }
    }
    let last = keys.last().cloned().unwrap_or_default();
    let user = find(state, &last).map(|u| state.user_json(u))?;
    Ok(json_response(200, &user))
}

fn business_functions(state: &State, id: &str) -> Outcome {
    let u = find(state, id)?;
    let mut fns = vec![
        "VIEW_DASHBOARDS",
        "VIEW_ALERTS",
        "VIEW_EVENTS",
        "VIEW_METRIC_TIMESERIES",
        "LOGIN",
        "LOGOUT",
        "CHANGE_PASSWORD",
        "CHANGE_USER_PREFERENCE",
    ];
    for g in &u.groups {
        fns.extend_from_slice(match g.as_str() {
            "dashboard_management" => &["MODIFY_DASHBOARDS", "MODIFY_DASHBOARD_TAGS"][..],
            "alerts_management" => &["MODIFY_ALERTS", "MODIFY_ALERT_TAGS"],
            "events_management" => &["MODIFY_EVENTS", "MODIFY_EVENT_TAGS"],
            "user_management" => &["INVITE_USER", "GET_ALL_USERS", "ADMINISTER_USER_GROUPS"],
            "token_management" => &["ADMINISTER_ALL_TOKENS"],
            "ingestion" => &["METRIC_INGESTION"],
            "embedded_charts" => &["CREATE_EMBEDDED_CHARTS"],
            "external_links_management" => &["MODIFY_EXTERNAL_LINKS"],
            "host_tag_management" => &["MODIFY_HOST_TAGS"],
            "saml_sso_management" => &["MODIFY_SAML_SSO_SETTINGS"],
            "application_management" => &["MODIFY_APPLICATIONS"],
            _ => &[],
        });
    }
    Ok(json_response(
        200,
        &wf_wrapped(
            200,
            None,
            json!(dedup(
                &fns.iter().map(|s| s.to_string()).collect::<Vec<_>>()
            )),
        ),
    ))
}

fn list_groups(state: &State, req: &ApiRequest) -> Outcome {
    let parse = |name: &str, default: usize| -> Result<usize, Fail> {
        match req.query_param(name) {
            None => Ok(default),
            Some(v) => v
                .parse::<usize>()
                .map_err(|_| Fail::bad_request(format!("Invalid {name}: {v}"))),
        }
    };
    let offset = parse("offset", 0)?;
    let limit = parse("limit", 100)?.clamp(1, 1000);
    let all = state.groups_json();
    let total = all.len();
    let items: Vec<Value> = all.into_iter().skip(offset).take(limit).collect();
    let more = offset + items.len() < total;
    let mut page = Map::new();
    page.insert("items".into(), json!(items));
    page.insert("offset".into(), json!(offset));
    page.insert("limit".into(), json!(limit));
    page.insert("totalItems".into(), json!(total));
    page.insert("moreItems".into(), json!(more));
    Ok(json_response(
        200,
        &wf_wrapped(200, None, Value::Object(page)),
    ))
}
