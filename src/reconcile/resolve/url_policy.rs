//! Where endpoints may send the controller's requests: `https://` only (plain `http://` to a
//! loopback address, or anywhere when the platform opts in), never with credentials in the
//! URL; namespaced endpoints only to the hosts the platform lists, or not at all.

use std::net::IpAddr;

use crate::{
    api::AnyEndpoint,
    reconcile::plan::{Blocked, ReadyReason},
};

/// What the platform allows endpoints to reach (controller flags).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EndpointPolicy {
    /// Allow plain `http://` to any host (`--allow-insecure-http`).
    pub allow_insecure_http: bool,
    /// Allow plain `http://` to loopback addresses for namespaced endpoints too
    /// (`--namespaced-endpoints-loopback-http`). Off: a tenant must not reach sidecars in
    /// the operator's pod. (Cluster endpoints, made by the platform, may always.)
    pub namespaced_loopback_http: bool,
    /// Whether namespaced InvitationEndpoints may be used at all.
    pub namespaced_endpoints: bool,
    /// Hosts namespaced endpoints may call (`*.example.com` matches subdomains); empty: any.
    pub namespaced_endpoint_hosts: Vec<String>,
}

impl Default for EndpointPolicy {
    fn default() -> Self {
        EndpointPolicy {
            allow_insecure_http: false,
            namespaced_loopback_http: false,
            namespaced_endpoints: true,
            namespaced_endpoint_hosts: Vec::new(),
        }
    }
}

/// Checks the endpoint's `url` and `tokenUrl` against the policy.
pub fn check_urls(endpoint: &AnyEndpoint, policy: &EndpointPolicy) -> Result<(), Blocked> {
    if endpoint.is_namespaced() && !policy.namespaced_endpoints {
        return Err(Blocked::new(
            ReadyReason::NotAllowed,
            "namespaced InvitationEndpoints are turned off by the platform; use a ClusterInvitationEndpoint",
        ));
    }
    let connection = endpoint.connection();
    let urls = std::iter::once(("url", connection.url.as_str())).chain(
        connection
            .token_url
            .as_deref()
            .filter(|u| !u.is_empty())
            .map(|u| ("tokenUrl", u)),
    );
    for (field, raw) in urls {
        check_url(field, raw, endpoint.is_namespaced(), policy)?;
    }
    Ok(())
}

fn check_url(
    field: &str,
    raw: &str,
    namespaced: bool,
    policy: &EndpointPolicy,
) -> Result<(), Blocked> {
    let invalid = |message: String| Err(Blocked::new(ReadyReason::EndpointNotReady, message));
    let Ok(url) = url::Url::parse(raw.trim()) else {
        return invalid(format!("{field} {raw:?} is not a valid URL"));
    };
    if !url.username().is_empty() || url.password().is_some() {
        return invalid(format!(
            "{field} must not carry credentials; put the token in the Secret"
        ));
    }
    let Some(host) = url.host() else {
        return invalid(format!("{field} {raw:?} has no host"));
    };
    let loopback_allowed = !namespaced || policy.namespaced_loopback_http;
    match url.scheme() {
        "https" => {}
        "http" if policy.allow_insecure_http => {}
        "http" if is_loopback(&host) && loopback_allowed => {}
        "http" if is_loopback(&host) => {
            return Err(Blocked::new(
                ReadyReason::NotAllowed,
                format!(
                    "{field}: a namespaced InvitationEndpoint may not call plain http:// on a loopback address (the operator's own pod) unless the controller runs with --namespaced-endpoints-loopback-http"
                ),
            ));
        }
        "http" => {
            return invalid(format!(
                "{field} must use https:// (plain http:// is allowed only to loopback addresses, unless the controller runs with --allow-insecure-http)"
            ));
        }
        other => return invalid(format!("{field} has scheme {other:?}; use https://")),
    }
    let host = host.to_string().to_ascii_lowercase();
    if namespaced
        && !policy.namespaced_endpoint_hosts.is_empty()
        && !policy
            .namespaced_endpoint_hosts
            .iter()
            .any(|p| host_matches(p, &host))
    {
        return Err(Blocked::new(
            ReadyReason::NotAllowed,
            format!(
                "{field} host {host:?} is not one namespaced endpoints may call (the platform allows {:?})",
                policy.namespaced_endpoint_hosts
            ),
        ));
    }
    Ok(())
}

fn is_loopback(host: &url::Host<&str>) -> bool {
    match host {
        url::Host::Domain(d) => d.eq_ignore_ascii_case("localhost"),
        url::Host::Ipv4(ip) => IpAddr::V4(*ip).is_loopback(),
        url::Host::Ipv6(ip) => IpAddr::V6(*ip).is_loopback(),
    }
}

/// `pattern` is a host name, or `*.domain` for any subdomain of `domain`.
fn host_matches(pattern: &str, host: &str) -> bool {
    let pattern = pattern.trim().to_ascii_lowercase();
    match pattern.strip_prefix("*.") {
        Some(domain) => host.ends_with(&format!(".{domain}")),
        None => pattern == host,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn endpoint(namespaced: bool, url: &str) -> AnyEndpoint {
        let spec =
            json!({"api": "UserInvite", "url": url, "credentials": {"secretRef": {"name": "t"}}});
        if namespaced {
            AnyEndpoint::Namespaced(
                serde_json::from_value(json!({"apiVersion": "invite.operators.dev/v1alpha1",
                    "kind": "InvitationEndpoint", "metadata": {"name": "e", "namespace": "team"}, "spec": spec}))
                .unwrap(),
            )
        } else {
            AnyEndpoint::Cluster(
                serde_json::from_value(json!({"apiVersion": "invite.operators.dev/v1alpha1",
                    "kind": "ClusterInvitationEndpoint", "metadata": {"name": "e"}, "spec": spec}))
                .unwrap(),
            )
        }
    }

    const CLUSTER: bool = false;
    const NAMESPACED: bool = true;
    const OK: Option<ReadyReason> = None;
    const NOT_READY: Option<ReadyReason> = Some(ReadyReason::EndpointNotReady);
    const NOT_ALLOWED: Option<ReadyReason> = Some(ReadyReason::NotAllowed);

    /// Checks that each of `urls`, in a namespaced or a cluster endpoint, gets `expected`
    /// under `policy`.
    fn assert_verdict(
        policy: &EndpointPolicy,
        namespaced: bool,
        expected: Option<ReadyReason>,
        urls: &[&str],
    ) {
        for url in urls {
            let got = check_urls(&endpoint(namespaced, url), policy)
                .err()
                .map(|b| b.reason);
            assert_eq!(got, expected, "{url} (namespaced: {namespaced})");
        }
    }

    #[test]
    fn https_only_but_loopback_http_and_an_explicit_opt_in() {
        let strict = EndpointPolicy::default();
        let https_or_loopback = [
            "https://wf.example.com",
            "http://127.0.0.1:8090",
            "http://[::1]:8090",
            "http://localhost:8090",
        ];
        assert_verdict(&strict, CLUSTER, OK, &https_or_loopback);
        let refused = [
            "http://wf.example.com",
            "http://10.0.0.7:8080",
            "http://kubernetes.default.svc",
            "ftp://wf.example.com",
            "https://user:secret@wf.example.com",
        ];
        assert_verdict(&strict, NAMESPACED, NOT_READY, &refused);
        let lax = EndpointPolicy {
            allow_insecure_http: true,
            ..Default::default()
        };
        assert_verdict(&lax, NAMESPACED, OK, &["http://wf.example.com"]);
    }

    #[test]
    fn namespaced_endpoints_reach_loopback_over_http_only_when_the_platform_opts_in() {
        let loopback = [
            "http://127.0.0.1:8090",
            "http://localhost:9090",
            "http://[::1]:1",
        ];
        let strict = EndpointPolicy::default();
        assert_verdict(&strict, NAMESPACED, NOT_ALLOWED, &loopback);
        assert_verdict(&strict, CLUSTER, OK, &loopback);
        let opted_in = EndpointPolicy {
            namespaced_loopback_http: true,
            ..Default::default()
        };
        assert_verdict(&opted_in, NAMESPACED, OK, &["http://127.0.0.1:8090"]);
        // Opting in to loopback opens nothing else.
        assert_verdict(&opted_in, NAMESPACED, NOT_READY, &["http://10.0.0.7:8090"]);
    }

    #[test]
    fn namespaced_endpoints_can_be_limited_to_hosts_or_turned_off() {
        let hosts = EndpointPolicy {
            namespaced_endpoint_hosts: vec![
                "*.wavefront.com".into(),
                "console.cloud.vmware.com".into(),
            ],
            ..Default::default()
        };
        let listed = [
            "https://acme.wavefront.com",
            "https://console.cloud.vmware.com",
        ];
        let unlisted = [
            "https://internal.svc.cluster.local",
            "https://wavefront.com.evil.io",
        ];
        assert_verdict(&hosts, NAMESPACED, OK, &listed);
        assert_verdict(&hosts, NAMESPACED, NOT_ALLOWED, &unlisted);
        // Cluster endpoints are the platform's own: the host list does not apply.
        assert_verdict(&hosts, CLUSTER, OK, &unlisted[..1]);
        let off = EndpointPolicy {
            namespaced_endpoints: false,
            ..Default::default()
        };
        assert_verdict(&off, NAMESPACED, NOT_ALLOWED, &listed[..1]);
        assert_verdict(&off, CLUSTER, OK, &listed[..1]);
    }
}
