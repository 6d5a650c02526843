//! `allowed` on a ClusterInvitationEndpoint bounds everything a UserInvitation may grant. Deny
//! by default: on a restricted endpoint, a field that grants access may only carry values its
//! list names, and a field whose list is empty may not be used at all.

use crate::{
    api::{ANY_VALUE, AllowedGrants, RoleBinding, UserInvitationSpec},
    reconcile::plan::{Blocked, ReadyReason},
};

/// One access-granting field of the spec: where it is, which `allowed` list covers it, and the
/// values the spec uses.
struct Use<'a> {
    field: &'static str,
    list_name: &'static str,
    list: &'a [String],
    values: Vec<&'a str>,
}

/// Checks every access-granting field of `spec` against `allowed`.
pub fn check(
    spec: &UserInvitationSpec,
    allowed: &AllowedGrants,
    endpoint: &str,
) -> Result<(), Blocked> {
    for used in uses(spec, allowed) {
        let permits = |v: &str| used.list.iter().any(|a| a == ANY_VALUE || a == v);
        if let Some(value) = used.values.iter().find(|v| !permits(v)) {
            let why = if used.list.is_empty() {
                format!(
                    "its allowed.{} is empty, so the field may not be used",
                    used.list_name
                )
            } else {
                format!("allowed.{} is {:?}", used.list_name, used.list)
            };
            return Err(Blocked::new(
                ReadyReason::NotAllowed,
                format!(
                    "{} {value:?} is not allowed by {endpoint}: {why}",
                    used.field
                ),
            ));
        }
    }
    Ok(())
}

fn uses<'a>(spec: &'a UserInvitationSpec, allowed: &'a AllowedGrants) -> Vec<Use<'a>> {
    let mut uses = Vec::new();
    let mut add = |field, list_name, list: &'a [String], values: Vec<&'a str>| {
        if !values.is_empty() {
            uses.push(Use {
                field,
                list_name,
                list,
                values,
            });
        }
    };
    let users = spec.users.iter().flatten();
    add(
        "spec.users[].groups",
        "groups",
        &allowed.groups,
        users
            .clone()
            .flat_map(|u| u.groups.iter().map(String::as_str))
            .collect(),
    );
    add(
        "spec.users[].userGroups",
        "userGroups",
        &allowed.user_groups,
        users
            .clone()
            .flat_map(|u| u.user_groups.iter().map(String::as_str))
            .collect(),
    );
    add(
        "spec.users[].roles",
        "roles",
        &allowed.roles,
        users
            .flat_map(|u| u.roles.iter().map(String::as_str))
            .collect(),
    );
    let Some(org) = &spec.org_invitation else {
        return uses;
    };
    let names = |b: &'a [RoleBinding]| b.iter().map(|r| r.name.as_str());
    add(
        "spec.orgInvitation.organizationRoles[].name",
        "organizationRoles",
        &allowed.organization_roles,
        names(&org.organization_roles).collect(),
    );
    add(
        "spec.orgInvitation.orgRoleNames",
        "organizationRoles",
        &allowed.organization_roles,
        org.org_role_names.iter().map(String::as_str).collect(),
    );
    add(
        "spec.orgInvitation.serviceRolesDtos[].serviceDefinitionLink",
        "serviceDefinitionLinks",
        &allowed.service_definition_links,
        org.service_roles_dtos
            .iter()
            .map(|s| s.service_definition_link.as_str())
            .collect(),
    );
    add(
        "spec.orgInvitation.serviceRolesDtos[] role names",
        "serviceRoleNames",
        &allowed.service_role_names,
        org.service_roles_dtos
            .iter()
            .flat_map(|s| {
                s.service_role_names
                    .iter()
                    .map(String::as_str)
                    .chain(names(&s.service_roles))
            })
            .collect(),
    );
    add(
        "spec.orgInvitation.customRoles[].name",
        "customRoles",
        &allowed.custom_roles,
        names(&org.custom_roles).collect(),
    );
    add(
        "spec.orgInvitation.customGroupsIds",
        "customGroupsIds",
        &allowed.custom_groups_ids,
        org.custom_groups_ids.iter().map(String::as_str).collect(),
    );
    let bindings = org
        .organization_roles
        .iter()
        .chain(&org.custom_roles)
        .chain(org.service_roles_dtos.iter().flat_map(|s| &s.service_roles));
    add(
        "role binding resource",
        "resources",
        &allowed.resources,
        bindings.filter_map(|b| b.resource.as_deref()).collect(),
    );
    uses
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn spec(v: serde_json::Value) -> UserInvitationSpec {
        serde_json::from_value(v).unwrap()
    }

    fn allowed(v: serde_json::Value) -> AllowedGrants {
        serde_json::from_value(v).unwrap()
    }

    fn refused(s: &UserInvitationSpec, a: &AllowedGrants) -> Option<String> {
        check(s, a, "ClusterInvitationEndpoint \"shared\"")
            .err()
            .map(|b| {
                assert_eq!(b.reason, ReadyReason::NotAllowed);
                b.message
            })
    }

    #[test]
    fn every_org_invitation_field_that_grants_access_is_covered() {
        let a = allowed(
            json!({"organizationRoles": ["org_member"], "serviceDefinitionLinks": ["/paid/x"]}),
        );
        for (field, extra) in [
            ("customRoles", json!({"customRoles": [{"name": "admin"}]})),
            ("customGroupsIds", json!({"customGroupsIds": ["admins"]})),
            (
                "serviceDefinitionLink",
                json!({"serviceRolesDtos": [{"serviceDefinitionLink": "/paid/admin"}]}),
            ),
            (
                "serviceRolesDtos[] role names",
                json!({"serviceRolesDtos": [{"serviceDefinitionLink": "/paid/x", "serviceRoleNames": ["ops"]}]}),
            ),
            (
                "resource",
                json!({"organizationRoles": [{"name": "org_member", "resource": "/orgs/other"}]}),
            ),
        ] {
            let mut org =
                json!({"usernames": ["a@x.com"], "organizationRoles": [{"name": "org_member"}]});
            for (k, v) in extra.as_object().unwrap() {
                org[k] = v.clone();
            }
            let message = refused(&spec(json!({"orgInvitation": org})), &a)
                .unwrap_or_else(|| panic!("{field} was not checked"));
            assert!(message.contains(field), "{field}: {message}");
        }
        let ok = spec(
            json!({"orgInvitation": {"usernames": ["a@x.com"], "organizationRoles": [{"name": "org_member"}]}}),
        );
        assert_eq!(refused(&ok, &a), None);
        let admin = spec(
            json!({"orgInvitation": {"usernames": ["a@x.com"], "organizationRoles": [{"name": "org_owner"}]}}),
        );
        assert!(refused(&admin, &a).unwrap().contains("\"org_owner\""));
    }

    #[test]
    fn user_invite_fields_are_covered_and_a_wildcard_allows_any_value() {
        let s = spec(
            json!({"users": [{"emailAddress": "a@x.com", "groups": ["dashboard_management"],
            "userGroups": ["g1"], "roles": ["r1"]}]}),
        );
        let message = refused(&s, &allowed(json!({"groups": ["dashboard_management"]}))).unwrap();
        assert!(message.contains("spec.users[].userGroups"), "{message}");
        let all = allowed(
            json!({"groups": ["dashboard_management"], "userGroups": ["*"], "roles": ["r1"]}),
        );
        assert_eq!(refused(&s, &all), None);
        let none_used =
            spec(json!({"users": [{"emailAddress": "a@x.com", "groups": [], "userGroups": []}]}));
        assert_eq!(refused(&none_used, &allowed(json!({}))), None);
    }
}
