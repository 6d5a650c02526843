//! Pure checks of a UserInvitation against its endpoint: existence, API flavour, the
//! platform's endpoint policy (URL scheme and hosts), namespace selector, size limit and
//! allowed grants.

use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;

use super::{EndpointPolicy, allowed, check_urls};
use crate::{
    api::{AnyEndpoint, ApiFlavor, MEMBERSHIP_ONLY, UserInvitation},
    reconcile::plan::{Blocked, ReadyReason},
};

/// A human name of the endpoint a UserInvitation references, e.g.
/// `ClusterInvitationEndpoint "default"`.
pub fn endpoint_display(invitation: &UserInvitation) -> String {
    let r = &invitation.spec.endpoint_ref;
    format!("{} {:?}", r.kind, r.name)
}

/// The API flavour a spec needs: `users` → UserInvite, `orgInvitation` → OrgInvitation.
pub fn required_flavor(invitation: &UserInvitation) -> Option<ApiFlavor> {
    match (&invitation.spec.users, &invitation.spec.org_invitation) {
        (Some(_), None) => Some(ApiFlavor::UserInvite),
        (None, Some(_)) => Some(ApiFlavor::OrgInvitation),
        _ => None,
    }
}

/// What a resource is checked against besides its endpoint.
#[derive(Clone, Copy, Debug)]
pub struct CheckContext<'a> {
    /// Labels of the resource's namespace (for a ClusterInvitationEndpoint's namespaceSelector).
    pub namespace_labels: &'a BTreeMap<String, String>,
    /// How many users the resource requests.
    pub requested_users: usize,
    /// What the platform allows endpoints to reach.
    pub policy: &'a EndpointPolicy,
}

/// Checks that `endpoint` may serve `invitation`: it exists and speaks the right API, the
/// platform allows its URLs, and (cluster endpoints) it admits the namespace, the number of
/// users and every grant the spec asks for.
pub fn check_endpoint(
    invitation: &UserInvitation,
    endpoint: Option<&AnyEndpoint>,
    check: CheckContext<'_>,
) -> Result<(), Blocked> {
    let name = endpoint_display(invitation);
    let Some(endpoint) = endpoint else {
        return Err(Blocked::new(
            ReadyReason::EndpointNotFound,
            format!("{name} not found"),
        ));
    };
    let flavor = endpoint.connection().api;
    if let Some(required) = required_flavor(invitation)
        && required != flavor
    {
        let field = match required {
            ApiFlavor::UserInvite => "spec.users",
            ApiFlavor::OrgInvitation => "spec.orgInvitation",
        };
        return Err(Blocked::new(
            ReadyReason::EndpointMismatch,
            format!("{field} needs an endpoint with api {required}, but {name} has api {flavor}"),
        ));
    }
    check_urls(endpoint, check.policy)?;
    let AnyEndpoint::Cluster(cluster) = endpoint else {
        return Ok(());
    };
    let namespace = invitation.metadata.namespace.as_deref().unwrap_or_default();
    if let Some(selector) = &cluster.spec.namespace_selector
        && !selector_matches(selector, check.namespace_labels)
    {
        return Err(Blocked::new(
            ReadyReason::NotAllowed,
            format!("{name} does not allow namespace {namespace:?} (namespaceSelector)"),
        ));
    }
    let max = cluster.spec.max_users_per_invitation as usize;
    if check.requested_users > max {
        return Err(Blocked::new(
            ReadyReason::NotAllowed,
            format!(
                "{} users requested; {name} allows at most {max} per UserInvitation",
                check.requested_users
            ),
        ));
    }
    let permitted = allowed::Permitted {
        allowed: endpoint.allowed().unwrap_or(&MEMBERSHIP_ONLY),
        explicit: cluster.spec.allowed.is_some(),
    };
    allowed::check(&invitation.spec, permitted, &name)
}

/// Whether a label selector selects an object with these labels. An empty selector selects
/// everything; an unknown operator selects nothing.
pub fn selector_matches(selector: &LabelSelector, labels: &BTreeMap<String, String>) -> bool {
    let labels_ok = selector
        .match_labels
        .iter()
        .flatten()
        .all(|(k, v)| labels.get(k) == Some(v));
    let expressions_ok = selector.match_expressions.iter().flatten().all(|e| {
        let values = e.values.as_deref().unwrap_or_default();
        let value = labels.get(&e.key);
        match e.operator.as_str() {
            "In" => value.is_some_and(|v| values.contains(v)),
            "NotIn" => value.is_none_or(|v| !values.contains(v)),
            "Exists" => value.is_some(),
            "DoesNotExist" => value.is_none(),
            _ => false,
        }
    });
    labels_ok && expressions_ok
}

#[cfg(test)]
pub(super) mod tests {
    use super::*;
    use serde_json::json;

    fn invitation(spec: serde_json::Value) -> UserInvitation {
        serde_json::from_value(json!({
            "apiVersion": "invite.operators.dev/v1alpha1", "kind": "UserInvitation",
            "metadata": {"name": "x", "namespace": "team"}, "spec": spec
        }))
        .unwrap()
    }

    pub(in crate::reconcile::resolve) fn cluster(spec: serde_json::Value) -> AnyEndpoint {
        AnyEndpoint::Cluster(
            serde_json::from_value(json!({
                "apiVersion": "invite.operators.dev/v1alpha1", "kind": "ClusterInvitationEndpoint",
                "metadata": {"name": "default"}, "spec": spec
            }))
            .unwrap(),
        )
    }

    fn users(groups: &[&str]) -> UserInvitation {
        invitation(
            json!({"users": [{"emailAddress": "a@example.com", "groups": groups, "userGroups": []}]}),
        )
    }

    pub(in crate::reconcile::resolve) fn base() -> serde_json::Value {
        json!({"api": "UserInvite", "url": "https://api.example.com",
               "credentials": {"secretRef": {"name": "tok"}}})
    }

    fn ctx(labels: &BTreeMap<String, String>, requested_users: usize) -> CheckContext<'_> {
        static POLICY: std::sync::LazyLock<EndpointPolicy> =
            std::sync::LazyLock::new(EndpointPolicy::default);
        CheckContext {
            namespace_labels: labels,
            requested_users,
            policy: &POLICY,
        }
    }

    fn reason(r: Result<(), Blocked>) -> Option<ReadyReason> {
        r.err().map(|b| b.reason)
    }

    #[test]
    fn missing_and_mismatched_endpoints() {
        let inv = users(&[]);
        let labels = BTreeMap::new();
        assert_eq!(
            reason(check_endpoint(&inv, None, ctx(&labels, 1))),
            Some(ReadyReason::EndpointNotFound)
        );
        let mut org = base();
        org["api"] = json!("OrgInvitation");
        org["organizationId"] = json!("o");
        let err = check_endpoint(&inv, Some(&cluster(org)), ctx(&labels, 1)).unwrap_err();
        assert_eq!(err.reason, ReadyReason::EndpointMismatch);
        assert!(
            err.message
                .contains("spec.users needs an endpoint with api UserInvite"),
            "{}",
            err.message
        );
        assert_eq!(
            reason(check_endpoint(
                &inv,
                Some(&cluster(base())),
                ctx(&labels, 1)
            )),
            None
        );
    }

    #[test]
    fn namespace_selector_allowed_grants_and_size() {
        let mut spec = base();
        spec["namespaceSelector"] =
            json!({"matchExpressions": [{"key": "tier", "operator": "In", "values": ["prod"]}]});
        spec["allowed"] = json!({"groups": ["dashboard_management"]});
        spec["maxUsersPerInvitation"] = json!(2);
        let ep = cluster(spec);
        let prod = BTreeMap::from([("tier".to_string(), "prod".to_string())]);
        let dev = BTreeMap::from([("tier".to_string(), "dev".to_string())]);
        let ok = users(&["dashboard_management"]);
        assert_eq!(reason(check_endpoint(&ok, Some(&ep), ctx(&prod, 1))), None);
        assert_eq!(
            reason(check_endpoint(&ok, Some(&ep), ctx(&dev, 1))),
            Some(ReadyReason::NotAllowed)
        );
        let greedy = users(&["user_management"]);
        let err = check_endpoint(&greedy, Some(&ep), ctx(&prod, 1)).unwrap_err();
        assert!(
            err.message.contains("\"user_management\""),
            "{}",
            err.message
        );
        assert_eq!(
            reason(check_endpoint(&ok, Some(&ep), ctx(&prod, 3))),
            Some(ReadyReason::NotAllowed)
        );
    }

    #[test]
    fn a_cluster_endpoint_without_allowed_grants_plain_membership_only() {
        let labels = BTreeMap::new();
        let ep = cluster(base());
        let plain = users(&[]);
        assert_eq!(
            reason(check_endpoint(&plain, Some(&ep), ctx(&labels, 1))),
            None
        );
        for (field, user) in [
            ("spec.users[].groups", json!({"groups": ["admin"]})),
            ("spec.users[].userGroups", json!({"userGroups": ["admins"]})),
            ("spec.users[].roles", json!({"roles": ["admin-role"]})),
        ] {
            let mut u = json!({"emailAddress": "a@example.com"});
            for (k, v) in user.as_object().unwrap() {
                u[k] = v.clone();
            }
            let err = check_endpoint(
                &invitation(json!({"users": [u]})),
                Some(&ep),
                ctx(&labels, 1),
            )
            .unwrap_err();
            assert_eq!(err.reason, ReadyReason::NotAllowed, "{field}");
            assert!(err.message.contains(field), "{field}: {}", err.message);
            assert!(err.message.contains("spec.allowed."), "{}", err.message);
        }
        // Opening is explicit: `allowed` lists, or "*" for anything in a field.
        let mut open = base();
        open["allowed"] = json!({"groups": ["*"]});
        let admin = users(&["admin"]);
        assert_eq!(
            reason(check_endpoint(
                &admin,
                Some(&cluster(open)),
                ctx(&labels, 1)
            )),
            None
        );
        // A namespaced endpoint carries the team's own token: unrestricted.
        let namespaced = AnyEndpoint::Namespaced(
            serde_json::from_value(json!({
                "apiVersion": "invite.operators.dev/v1alpha1", "kind": "InvitationEndpoint",
                "metadata": {"name": "e", "namespace": "team"}, "spec": base()
            }))
            .unwrap(),
        );
        assert_eq!(
            reason(check_endpoint(&admin, Some(&namespaced), ctx(&labels, 1))),
            None
        );
    }

    #[test]
    fn a_cluster_org_invitation_endpoint_without_allowed_grants_plain_membership_only() {
        let labels = BTreeMap::new();
        let mut org_spec = base();
        org_spec["api"] = json!("OrgInvitation");
        org_spec["organizationId"] = json!("o");
        let org_ep = cluster(org_spec);
        let org = |extra: serde_json::Value| {
            let mut o = json!({"usernames": ["a@example.com"]});
            for (k, v) in extra.as_object().unwrap() {
                o[k] = v.clone();
            }
            invitation(json!({"orgInvitation": o}))
        };
        let member = org(json!({"organizationRoles": [{"name": "org_member"}]}));
        assert_eq!(
            reason(check_endpoint(&member, Some(&org_ep), ctx(&labels, 1))),
            None
        );
        for extra in [
            json!({"organizationRoles": [{"name": "org_owner"}]}),
            json!({"orgRoleNames": ["org_owner"]}),
            json!({"serviceRolesDtos": [{"serviceDefinitionLink": "/paid/x"}]}),
            json!({"customRoles": [{"name": "admin"}]}),
            json!({"customGroupsIds": ["admins"]}),
            json!({"invitedBy": "ceo@example.com"}),
            json!({"organizationRoles": [{"name": "org_member", "resource": "/orgs/other"}]}),
        ] {
            assert_eq!(
                reason(check_endpoint(
                    &org(extra.clone()),
                    Some(&org_ep),
                    ctx(&labels, 1)
                )),
                Some(ReadyReason::NotAllowed),
                "{extra}"
            );
        }
    }

    #[test]
    fn label_selector_operators() {
        let labels = BTreeMap::from([("a".to_string(), "1".to_string())]);
        let sel = |v: serde_json::Value| -> LabelSelector { serde_json::from_value(v).unwrap() };
        assert!(selector_matches(&sel(json!({})), &labels));
        assert!(selector_matches(
            &sel(json!({"matchLabels": {"a": "1"}})),
            &labels
        ));
        assert!(!selector_matches(
            &sel(json!({"matchLabels": {"a": "2"}})),
            &labels
        ));
        assert!(selector_matches(
            &sel(json!({"matchExpressions": [{"key": "a", "operator": "Exists"}]})),
            &labels
        ));
        assert!(selector_matches(
            &sel(json!({"matchExpressions": [{"key": "b", "operator": "DoesNotExist"}]})),
            &labels
        ));
        assert!(selector_matches(
            &sel(json!({"matchExpressions": [{"key": "a", "operator": "NotIn", "values": ["2"]}]})),
            &labels
        ));
        assert!(!selector_matches(
            &sel(json!({"matchExpressions": [{"key": "a", "operator": "Bogus"}]})),
            &labels
        ));
    }
}
