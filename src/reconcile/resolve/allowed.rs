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

/// The grants a ClusterInvitationEndpoint permits: its own `allowed`, or (`explicit` false)
/// the plain membership an endpoint without `allowed` grants.
pub struct Permitted<'a> {
    /// The lists.
    pub allowed: &'a AllowedGrants,
    /// Whether the endpoint sets `allowed` itself.
    pub explicit: bool,
}

/// Checks every access-granting field of `spec` against what the endpoint permits.
pub fn check(
    spec: &UserInvitationSpec,
    permitted: Permitted<'_>,
    endpoint: &str,
) -> Result<(), Blocked> {
    for used in uses(spec, permitted.allowed) {
        let permits = |v: &str| used.list.iter().any(|a| a == ANY_VALUE || a == v);
        if let Some(value) = used.values.iter().find(|v| !permits(v)) {
            let list = used.list_name;
            let why = if !permitted.explicit {
                format!(
                    "the endpoint has no spec.allowed, so it grants plain membership only; the platform can open the field with spec.allowed.{list} (the values to permit, or \"*\" for any)"
                )
            } else if used.list.is_empty() {
                format!(
                    "its spec.allowed.{list} is empty, so the field may not be used; the platform can list the values to permit there (or \"*\" for any)"
                )
            } else {
                format!(
                    "spec.allowed.{list} is {:?}; the platform can add the value there",
                    used.list
                )
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
    let mut uses = user_invite_uses(spec, allowed);
    uses.extend(org_invitation_uses(spec, allowed));
    uses.retain(|u| !u.values.is_empty());
    uses
}

fn user_invite_uses<'a>(spec: &'a UserInvitationSpec, allowed: &'a AllowedGrants) -> Vec<Use<'a>> {
    let users = spec.users.iter().flatten();
    let values = |f: fn(&'a crate::api::UserToCreate) -> &'a Vec<String>| -> Vec<&'a str> {
        users
            .clone()
            .flat_map(|u| f(u).iter().map(String::as_str))
            .collect()
    };
    vec![
        Use {
            field: "spec.users[].groups",
            list_name: "groups",
            list: &allowed.groups,
            values: values(|u| &u.groups),
        },
        Use {
            field: "spec.users[].userGroups",
            list_name: "userGroups",
            list: &allowed.user_groups,
            values: values(|u| &u.user_groups),
        },
        Use {
            field: "spec.users[].roles",
            list_name: "roles",
            list: &allowed.roles,
            values: values(|u| &u.roles),
        },
    ]
}

fn org_invitation_uses<'a>(
    spec: &'a UserInvitationSpec,
    allowed: &'a AllowedGrants,
) -> Vec<Use<'a>> {
    let Some(org) = &spec.org_invitation else {
        return Vec::new();
    };
    let names = |b: &'a [RoleBinding]| b.iter().map(|r| r.name.as_str());
    let strings = |v: &'a [String]| v.iter().map(String::as_str);
    let services = || org.service_roles_dtos.iter();
    let bindings = org
        .organization_roles
        .iter()
        .chain(&org.custom_roles)
        .chain(services().flat_map(|s| &s.service_roles));
    vec![
        Use {
            field: "spec.orgInvitation.organizationRoles[].name",
            list_name: "organizationRoles",
            list: &allowed.organization_roles,
            values: names(&org.organization_roles).collect(),
        },
        Use {
            field: "spec.orgInvitation.orgRoleNames",
            list_name: "organizationRoles",
            list: &allowed.organization_roles,
            values: strings(&org.org_role_names).collect(),
        },
        Use {
            field: "spec.orgInvitation.serviceRolesDtos[].serviceDefinitionLink",
            list_name: "serviceDefinitionLinks",
            list: &allowed.service_definition_links,
            values: services()
                .map(|s| s.service_definition_link.as_str())
                .collect(),
        },
        Use {
            field: "spec.orgInvitation.serviceRolesDtos[] role names",
            list_name: "serviceRoleNames",
            list: &allowed.service_role_names,
            values: services()
                .flat_map(|s| strings(&s.service_role_names).chain(names(&s.service_roles)))
                .collect(),
        },
        Use {
            field: "spec.orgInvitation.customRoles[].name",
            list_name: "customRoles",
            list: &allowed.custom_roles,
            values: names(&org.custom_roles).collect(),
        },
        Use {
            field: "spec.orgInvitation.customGroupsIds",
            list_name: "customGroupsIds",
            list: &allowed.custom_groups_ids,
            values: strings(&org.custom_groups_ids).collect(),
        },
        Use {
            field: "spec.orgInvitation.invitedBy",
            list_name: "invitedBy",
            list: &allowed.invited_by,
            values: org.invited_by.iter().map(String::as_str).collect(),
        },
        Use {
            field: "role binding resource",
            list_name: "resources",
            list: &allowed.resources,
            values: bindings.filter_map(|b| b.resource.as_deref()).collect(),
        },
    ]
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
        let permitted = Permitted {
            allowed: a,
            explicit: true,
        };
        check(s, permitted, "ClusterInvitationEndpoint \"shared\"")
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
