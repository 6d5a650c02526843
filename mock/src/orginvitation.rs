//! The OrgInvitation API (VMware Cloud Services Platform IAM, `/csp/gateway/am/api/*`).

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use axum::response::Response;
use serde::Deserialize;
use serde_json::{Map, Value, json};

use crate::state::{
    AccessToken, EmailApi, Invitation, InvitationStatus, State, is_valid_email, now_ms,
};
use crate::wire::{
    ApiRequest, Fail, Outcome, empty_response, json_body, json_response, mix, reason,
};

/// Maximum `customGroupsIds` per invitation request.
const MAX_CUSTOM_GROUPS: usize = 15;
/// Maximum ids per member-removal request.
const MAX_REMOVE: usize = 20;
/// Maximum results of the user search.
const SEARCH_LIMIT: usize = 20;
/// Who the mock's API token belongs to (invitedByUsername when the request has no invitedBy).
const TOKEN_OWNER: &str = "api-token-owner@mock.local";

/// The CSP error body. `moduleCode` alternates between a string (as seen in a real response)
/// and an integer (as documented) so clients must decode both.
pub(crate) fn csp_error_body(seq: u64, status: u16, message: &str) -> Value {
    let request_id = format!("{:016x}", mix(seq ^ 0xc5b0));
    let trace_id = format!("{:016x}", mix(seq ^ 0x7ace));
    let module_code = if seq.is_multiple_of(2) {
        json!("540")
    } else {
        json!(540)
    };
    json!({
        "cspErrorCode": format!("540.{status}-{:03}.000", seq % 1000),
        "errorCode": format!("{status} {}", reason(status).to_ascii_uppercase().replace(' ', "_")),
        "message": message,
        "moduleCode": module_code,
        "requestId": request_id,
        "statusCode": status,
        "traceId": trace_id,
    })
}

/// A CSP error response.
pub(crate) fn csp_error(seq: &AtomicU64, fail: &Fail) -> Response {
    let n = seq.fetch_add(1, Ordering::Relaxed);
    json_response(fail.status, &csp_error_body(n, fail.status, &fail.message))
}

/// Handles one OrgInvitation request (token exchange and authentication included).
pub(crate) fn handle(state: &mut State, req: &ApiRequest, seq: &AtomicU64) -> Response {
    match route(state, req) {
        Ok(r) => r,
        Err(f) => csp_error(seq, &f),
    }
}

fn access_token(req: &ApiRequest) -> Option<&str> {
    if let Some(t) = req.header("csp-auth-token") {
        return Some(t.trim());
    }
    let a = req.header("authorization")?.trim();
    match a.split_once(' ') {
        Some((scheme, t)) if scheme.eq_ignore_ascii_case("bearer") => Some(t.trim()),
        Some(_) => None,
        None => Some(a),
    }
}

fn authorized(state: &State, req: &ApiRequest) -> bool {
    access_token(req)
        .filter(|t| !t.is_empty())
        .is_some_and(|t| state.access_token_valid(t))
}

fn route(state: &mut State, req: &ApiRequest) -> Outcome {
    let segs: Vec<&str> = req.segments.iter().map(String::as_str).collect();
    let m = req.method.as_str();
    let rest = match segs.as_slice() {
        ["csp", "gateway", "am", "api", rest @ ..] => rest,
        _ => return Err(Fail::not_found(format!("Not found: {}", req.path))),
    };
    if let ["auth", "api-tokens", "authorize"] = rest {
        return if m == "POST" {
            authorize(state, req)
        } else {
            Err(Fail::new(
                405,
                format!("Request method '{m}' not supported"),
            ))
        };
    }
    if !authorized(state, req) {
        return Err(Fail::new(
            401,
            "The access token is missing, invalid or expired. Send a valid access token in the 'csp-auth-token' header",
        ));
    }
    match (m, rest) {
        ("POST", ["orgs", org, "invitations"]) => {
            check_org(state, org)?;
            match req.query_param("action").as_deref() {
                None => invite(state, req),
                Some("revoke") => revoke_by_usernames(state, req),
                Some(other) => Err(Fail::bad_request(format!(
                    "Invalid request: unsupported action '{other}'"
                ))),
            }
        }
        ("GET", ["orgs", org, "invitations"]) => {
            check_org(state, org)?;
            list_invitations(state, req)
        }
        ("GET", ["orgs", org, "invitations", id]) => {
            check_org(state, org)?;
            let inv = find_invitation(state, id)?;
            Ok(json_response(200, &state.invitation_json(inv, true)))
        }
        ("DELETE", ["orgs", org, "invitations", id]) => {
            check_org(state, org)?;
            revoke_by_id(state, id)
        }
        ("GET", ["v2", "orgs", org, "users"]) => {
            check_org(state, org)?;
            list_members(state, req)
        }
        ("DELETE", ["v2", "orgs", org, "users"]) => {
            check_org(state, org)?;
            remove_members(state, req)
        }
        ("GET", ["orgs", org, "users", "search"]) => {
            check_org(state, org)?;
            search_members(state, req)
        }
        ("PATCH", ["v3", "users", user_id, "orgs", org, "roles"]) => {
            check_org(state, org)?;
            patch_roles(state, req, user_id)
        }
        ("GET", ["v2", "users", user_id, "orgs", org, "roles"]) => {
            check_org(state, org)?;
            let i = member_by_id(state, user_id)?;
            let mbr = &state.members[i];
            Ok(json_response(
                200,
                &json!({
                    "organizationRoles": mbr.organization_roles,
                    "serviceRoles": mbr.service_roles,
                    "customRoles": mbr.custom_roles,
                }),
            ))
        }
        _ => Err(Fail::not_found(format!("Not found: {m} {}", req.path))),
    }
}

fn check_org(state: &State, org: &str) -> Result<(), Fail> {
    if org == state.cfg.organization_id {
        Ok(())
    } else {
        Err(Fail::not_found(
            "Organization with this identifier is not found.",
        ))
    }
}

fn authorize(state: &mut State, req: &ApiRequest) -> Outcome {
    let mut fields = req.query_pairs();
    if !req.body.is_empty() {
        if !req.is_form() {
            return Err(Fail::new(
                415,
                "Content type not supported: use application/x-www-form-urlencoded",
            ));
        }
        fields.extend(req.form_pairs());
    }
    let token = fields
        .iter()
        .find(|(k, _)| k == "api_token")
        .or_else(|| fields.iter().find(|(k, _)| k == "refresh_token"))
        .map(|(_, v)| v.clone())
        .filter(|v| !v.is_empty())
        .ok_or_else(|| Fail::bad_request("Invalid request body: api_token is required"))?;
    if token != state.cfg.token {
        return Err(Fail::bad_request("invalid_grant: Invalid API token"));
    }
    let access = state.random_hex(32);
    let ttl = state.cfg.access_token_ttl;
    state.access_tokens.insert(
        access.clone(),
        AccessToken {
            expires: Instant::now() + ttl,
        },
    );
    let id_token = state.random_hex(32);
    let refresh = state.random_hex(16);
    Ok(json_response(
        200,
        &json!({
            "access_token": access,
            "expires_in": ttl.as_secs(),
            "id_token": id_token,
            "refresh_token": refresh,
            "scope": "openid ALL_PERMISSIONS customer_number group_ids group_names",
            "token_type": "bearer",
        }),
    ))
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct ServiceRolesDto {
    service_definition_link: Option<String>,
    service_role_names: Option<Vec<String>>,
    service_roles: Option<Vec<Map<String, Value>>>,
}

/// `UsersOrganizationInvitationRequest`; type errors are refused by serde.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct InvitationRequest {
    usernames: Option<Vec<String>>,
    org_role_names: Option<Vec<String>>,
    organization_roles: Option<Vec<Map<String, Value>>>,
    service_roles_dtos: Option<Vec<ServiceRolesDto>>,
    custom_roles: Option<Vec<Map<String, Value>>>,
    custom_groups_ids: Option<Vec<String>>,
    invited_by: Option<String>,
    skip_notify: Option<bool>,
    skip_notify_registration: Option<bool>,
    #[allow(dead_code)]
    notify_users_of_org_access: Option<bool>,
    notify_users_of_registration: Option<bool>,
    invitation_expiration_in_days: Option<i64>,
}

fn parse_request(req: &ApiRequest) -> Result<InvitationRequest, Fail> {
    let body = json_body(req)?;
    serde_json::from_value::<InvitationRequest>(body)
        .map_err(|e| Fail::bad_request(format!("Invalid request body: {e}")))
}

/// The usernames of a request: required, non-empty, valid emails; deduplicated ignoring case.
fn usernames(r: &InvitationRequest) -> Result<Vec<String>, Fail> {
    let names = r
        .usernames
        .as_ref()
        .filter(|u| !u.is_empty())
        .ok_or_else(|| Fail::bad_request("Invalid request body: usernames must not be empty"))?;
    let mut out: Vec<String> = Vec::new();
    for n in names {
        let n = n.trim();
        if !is_valid_email(n) {
            return Err(Fail::bad_request(format!(
                "Invalid request body: invalid username (e-mail) '{n}'"
            )));
        }
        if !out.iter().any(|o| o.eq_ignore_ascii_case(n)) {
            out.push(n.to_string());
        }
    }
    Ok(out)
}

fn role_bindings(
    state: &State,
    given: Option<&Vec<Map<String, Value>>>,
    what: &str,
) -> Result<Vec<Value>, Fail> {
    given
        .map(Vec::as_slice)
        .unwrap_or_default()
        .iter()
        .map(|b| match b.get("name") {
            Some(Value::String(n)) if !n.is_empty() => Ok(state.complete_binding(b)),
            _ => Err(Fail::bad_request(format!(
                "Invalid request body: every {what} entry needs a role name"
            ))),
        })
        .collect()
}

fn invite(state: &mut State, req: &ApiRequest) -> Outcome {
    let r = parse_request(req)?;
    let users = usernames(&r)?;
    let groups = r.custom_groups_ids.clone().unwrap_or_default();
    if groups.len() > MAX_CUSTOM_GROUPS {
        return Err(Fail::bad_request(format!(
            "Invalid request body: Can have a maximum of {MAX_CUSTOM_GROUPS} custom group IDs"
        )));
    }
    let mut org_roles = role_bindings(state, r.organization_roles.as_ref(), "organizationRoles")?;
    for name in r.org_role_names.iter().flatten() {
        if !org_roles.iter().any(|b| b["name"] == json!(name)) {
            org_roles.push(state.binding(name));
        }
    }
    if org_roles.is_empty() {
        org_roles.push(state.binding("org_member"));
    }
    let unknown: Vec<&str> = org_roles
        .iter()
        .filter_map(|b| b["name"].as_str())
        .filter(|name| !state.org_roles.contains(*name))
        .collect();
    if !unknown.is_empty() {
        // Names no user: the same answer whoever is invited.
        return Err(Fail::bad_request(format!(
            "Invalid request body: unknown organization role(s) {unknown:?}"
        )));
    }
    let operator = org_roles.iter().any(|b| {
        matches!(
            b["name"].as_str(),
            Some("platform_operator" | "read_only_operator")
        )
    });
    if operator
        && users.iter().any(|u| {
            let d = u.rsplit_once('@').map(|(_, d)| d.to_ascii_lowercase());
            !matches!(d.as_deref(), Some("vmware.com" | "csp.local"))
        })
    {
        return Err(Fail::bad_request(
            "Platform Operator and Read-only Operator roles can only be assigned to vmware.com and csp.local users",
        ));
    }
    let mut service_roles = Vec::new();
    for s in r.service_roles_dtos.iter().flatten() {
        let names = s.service_role_names.clone().unwrap_or_default();
        let mut roles = role_bindings(state, s.service_roles.as_ref(), "serviceRoles")?;
        for n in &names {
            if !roles.iter().any(|b| b["name"] == json!(n)) {
                roles.push(state.binding(n));
            }
        }
        service_roles.push(json!({
            "serviceDefinitionLink": s.service_definition_link.clone().unwrap_or_default(),
            "serviceRoleNames": names,
            "serviceRoles": roles,
        }));
    }
    let custom_roles = role_bindings(state, r.custom_roles.as_ref(), "customRoles")?;
    let days = match r.invitation_expiration_in_days {
        None => None,
        Some(d) if (1..=365).contains(&d) => Some(d),
        Some(d) => {
            return Err(Fail::bad_request(format!(
                "Invalid request body: invitationExpirationInDays {d} out of range"
            )));
        }
    };
    let ttl_ms = days
        .map(|d| d * 86_400_000)
        .unwrap_or_else(|| state.cfg.invitation_ttl_org.as_millis() as i64);
    let notify = !r.skip_notify.unwrap_or(false)
        && !r.skip_notify_registration.unwrap_or(false)
        && r.notify_users_of_registration.unwrap_or(true);
    let invited_by = r
        .invited_by
        .clone()
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| TOKEN_OWNER.to_string());
    for username in users {
        if state.member_index(&username).is_some() {
            // Already in the organization: nothing to invite.
            continue;
        }
        let now = now_ms();
        let id = state.new_uuid();
        state.invitations.push(Invitation {
            id,
            username: username.clone(),
            status: InvitationStatus::Available,
            generated_at: now,
            expiration: now + ttl_ms,
            invited_by: invited_by.clone(),
            organization_roles: org_roles.clone(),
            service_roles: service_roles.clone(),
            custom_roles: custom_roles.clone(),
            custom_groups_ids: groups.clone(),
            redeemed_at: None,
            redeemed_by: None,
            revoked_at: None,
            revoked_by: None,
        });
        if notify {
            state.send_email(&username, EmailApi::OrgInvitation);
        }
    }
    Ok(empty_response(202))
}

fn revoke(inv: &mut Invitation) {
    inv.status = InvitationStatus::Revoked;
    inv.revoked_at = Some(now_ms());
    inv.revoked_by = Some(TOKEN_OWNER.to_string());
}

fn revoke_by_usernames(state: &mut State, req: &ApiRequest) -> Outcome {
    let r = parse_request(req)?;
    let users = r
        .usernames
        .filter(|u| !u.is_empty())
        .ok_or_else(|| Fail::bad_request("Invalid request body: usernames must not be empty"))?;
    for inv in &mut state.invitations {
        if inv.status == InvitationStatus::Available
            && users
                .iter()
                .any(|u| u.trim().eq_ignore_ascii_case(&inv.username))
        {
            revoke(inv);
        }
    }
    Ok(empty_response(202))
}

fn find_invitation<'a>(state: &'a State, id: &str) -> Result<&'a Invitation, Fail> {
    state
        .invitations
        .iter()
        .find(|i| i.id == id)
        .ok_or_else(|| Fail::not_found(format!("Invitation {id} is not found.")))
}

fn revoke_by_id(state: &mut State, id: &str) -> Outcome {
    let inv = state
        .invitations
        .iter_mut()
        .find(|i| i.id == id)
        .ok_or_else(|| Fail::not_found(format!("Invitation {id} is not found.")))?;
    match inv.status {
        InvitationStatus::Available => revoke(inv),
        InvitationStatus::Revoked => {}
        InvitationStatus::Redeemed => {
            return Err(Fail::bad_request(format!(
                "Invitation {id} is already redeemed"
            )));
        }
    }
    Ok(empty_response(200))
}

fn list_invitations(state: &State, req: &ApiRequest) -> Outcome {
    let pairs = req.query_pairs();
    let expand = pairs.iter().any(|(k, _)| k == "expand");
    let group = req.query_param("customGroupId");
    let items: Vec<Value> = state
        .invitations
        .iter()
        .filter(|i| {
            group
                .as_ref()
                .is_none_or(|g| i.custom_groups_ids.contains(g))
        })
        .map(|i| state.invitation_json(i, expand))
        .collect();
    Ok(json_response(200, &Value::Array(items)))
}

fn int_param(req: &ApiRequest, name: &str, default: usize) -> Result<usize, Fail> {
    match req.query_param(name) {
        None => Ok(default),
        Some(v) => v
            .parse::<usize>()
            .map_err(|_| Fail::bad_request(format!("Invalid value '{v}' for {name}"))),
    }
}

/// A page of an organization whose listing never ends: new members, and a next page.
fn endless_members_page(state: &State, start: usize, limit: usize) -> Value {
    let results: Vec<Value> = (start..start + limit)
        .map(|i| {
            let username = format!("endless-{i}@example.com");
            json!({"user": {"username": username, "email": username,
                            "userId": format!("endless:{i}")},
                   "orgId": state.cfg.organization_id})
        })
        .collect();
    let base = format!(
        "/csp/gateway/am/api/v2/orgs/{}/users",
        state.cfg.organization_id
    );
    json!({
        "results": results,
        "totalResults": i64::MAX,
        "nextLink": format!("{base}?pageStart={}&pageLimit={limit}", start + limit),
    })
}

fn list_members(state: &State, req: &ApiRequest) -> Outcome {
    let start = int_param(req, "pageStart", 1)?.max(1);
    let limit = int_param(req, "pageLimit", 20)?.clamp(1, state.cfg.max_member_page.clamp(1, 200));
    if state.cfg.endless_members {
        return Ok(json_response(
            200,
            &endless_members_page(state, start, limit),
        ));
    }
    let total = state.members.len();
    let results: Vec<Value> = state
        .members
        .iter()
        .skip(start - 1)
        .take(limit)
        .map(|m| state.member_json(m))
        .collect();
    let base = format!(
        "/csp/gateway/am/api/v2/orgs/{}/users",
        state.cfg.organization_id
    );
    let mut page = json!({"results": results, "totalResults": total});
    if start - 1 + limit < total {
        page["nextLink"] = json!(format!(
            "{base}?pageStart={}&pageLimit={limit}",
            start + limit
        ));
    }
    if start > 1 {
        let prev = start.saturating_sub(limit).max(1);
        page["prevLink"] = json!(format!("{base}?pageStart={prev}&pageLimit={limit}"));
    }
    Ok(json_response(200, &page))
}

fn search_members(state: &State, req: &ApiRequest) -> Outcome {
    let term = req
        .query_param("userSearchTerm")
        .filter(|t| !t.trim().is_empty())
        .ok_or_else(|| Fail::bad_request("userSearchTerm is required"))?
        .trim()
        .to_lowercase();
    let results: Vec<Value> = state
        .members
        .iter()
        .filter(|m| m.search_text.contains(&term))
        .take(SEARCH_LIMIT)
        .map(|m| state.member_json(m))
        .collect();
    Ok(json_response(200, &json!({"results": results})))
}

fn member_by_id(state: &State, user_id: &str) -> Result<usize, Fail> {
    state
        .members
        .iter()
        .position(|m| m.user_id == user_id)
        .ok_or_else(|| Fail::not_found(format!("User {user_id} is not found in the organization.")))
}

fn is_owner(roles: &[Value]) -> bool {
    roles.iter().any(|r| r["name"] == json!("org_owner"))
}

fn remove_members(state: &mut State, req: &ApiRequest) -> Outcome {
    let body = json_body(req)?;
    let ids = body
        .get("ids")
        .and_then(Value::as_array)
        .filter(|a| !a.is_empty())
        .ok_or_else(|| Fail::bad_request("Invalid request body: ids must not be empty"))?;
    let ids: Vec<String> = ids
        .iter()
        .map(|v| {
            v.as_str()
                .map(str::to_string)
                .ok_or_else(|| Fail::bad_request("Invalid request body: ids must be strings"))
        })
        .collect::<Result<_, _>>()?;
    if ids.len() > MAX_REMOVE {
        return Err(Fail::bad_request(format!(
            "Cannot remove more than {MAX_REMOVE} users at the same time"
        )));
    }
    let (found, missing): (Vec<String>, Vec<String>) = ids
        .into_iter()
        .partition(|id| state.members.iter().any(|m| &m.user_id == id));
    if found.is_empty() {
        return Err(Fail::not_found(format!(
            "Users [{}] not found",
            missing.join(", ")
        )));
    }
    let owners = state
        .members
        .iter()
        .filter(|m| is_owner(&m.organization_roles))
        .count();
    let removed_owners = state
        .members
        .iter()
        .filter(|m| found.contains(&m.user_id) && is_owner(&m.organization_roles))
        .count();
    if owners > 0 && removed_owners == owners {
        return Err(Fail::bad_request("Cannot remove the last org owner"));
    }
    state.remove_members(&found);
    Ok(json_response(
        200,
        &json!({"succeeded": found, "failed": missing}),
    ))
}

/// Applies `{roleNamesToAdd, roleNamesToRemove, rolesToAdd, rolesToRemove, rolesToUpdate}`.
fn apply_role_update(state: &State, roles: &mut Vec<Value>, update: &Value) -> Result<(), Fail> {
    let Some(u) = update.as_object() else {
        return Err(Fail::bad_request(
            "Invalid request body: role updates must be objects",
        ));
    };
    let names = |field: &str| -> Result<Vec<String>, Fail> {
        let mut out: Vec<String> = Vec::new();
        match u.get(field) {
            None | Some(Value::Null) => {}
            Some(Value::Array(a)) => {
                for x in a {
                    match x {
                        Value::String(s) => out.push(s.clone()),
                        Value::Object(o) => match o.get("name").and_then(Value::as_str) {
                            Some(n) => out.push(n.to_string()),
                            None => {
                                return Err(Fail::bad_request(format!(
                                    "Invalid request body: {field} entries need a name"
                                )));
                            }
                        },
                        _ => {
                            return Err(Fail::bad_request(format!(
                                "Invalid request body: {field} must be an array"
                            )));
                        }
                    }
                }
            }
            Some(_) => {
                return Err(Fail::bad_request(format!(
                    "Invalid request body: {field} must be an array"
                )));
            }
        }
        Ok(out)
    };
    let mut remove = names("roleNamesToRemove")?;
    remove.extend(names("rolesToRemove")?);
    let mut add = names("roleNamesToAdd")?;
    add.extend(names("rolesToAdd")?);
    add.extend(names("rolesToUpdate")?);
    roles.retain(|r| {
        !remove
            .iter()
            .any(|n| r["name"].as_str() == Some(n.as_str()))
    });
    for n in add {
        if !roles.iter().any(|r| r["name"].as_str() == Some(n.as_str())) {
            roles.push(state.binding(&n));
        }
    }
    Ok(())
}

fn patch_roles(state: &mut State, req: &ApiRequest, user_id: &str) -> Outcome {
    let i = member_by_id(state, user_id)?;
    let body = json_body(req)?;
    if !body.is_object() {
        return Err(Fail::bad_request(
            "Invalid request body: expected NotifiableUpdateMemberRolesRequest",
        ));
    }
    let mut member = state.members[i].clone();
    if let Some(u) = body.get("organizationRoles").filter(|v| !v.is_null()) {
        apply_role_update(state, &mut member.organization_roles, u)?;
    }
    if let Some(u) = body.get("customRoles").filter(|v| !v.is_null()) {
        apply_role_update(state, &mut member.custom_roles, u)?;
    }
    if let Some(svc) = body.get("serviceRoles").filter(|v| !v.is_null()) {
        let Some(list) = svc.as_array() else {
            return Err(Fail::bad_request(
                "Invalid request body: serviceRoles must be an array",
            ));
        };
        for s in list {
            let link = s
                .get("serviceDefinitionLink")
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_string();
            let pos = member
                .service_roles
                .iter()
                .position(|x| x["serviceDefinitionLink"] == json!(link));
            let mut entry = match pos {
                Some(p) => member.service_roles.remove(p),
                None => json!({
                    "serviceDefinitionLink": link,
                    "serviceDefinitionId": link.rsplit('/').next().unwrap_or_default(),
                    "serviceRoleNames": [],
                    "serviceRoles": [],
                }),
            };
            let mut roles: Vec<Value> = entry["serviceRoles"]
                .as_array()
                .cloned()
                .unwrap_or_default();
            apply_role_update(state, &mut roles, s)?;
            entry["serviceRoleNames"] = json!(
                roles
                    .iter()
                    .filter_map(|r| r["name"].as_str())
                    .collect::<Vec<_>>()
            );
            entry["serviceRoles"] = json!(roles);
            member.service_roles.push(entry);
        }
    }
    state.members[i] = member;
    Ok(empty_response(200))
}
