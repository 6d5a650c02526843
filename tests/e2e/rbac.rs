//! The Helm chart's RBAC (deploy/charts/invite-operator/files/rbac-rules.yaml, the file the
//! chart renders its Roles from) grants exactly the Kubernetes calls the controller makes:
//! - no more: a scenario exercising every code path runs against the in-process API server,
//!   which records each request with the controller's User-Agent; a missing grant or an unused
//!   one fails;
//! - enough, for real: on a real API server (which enforces RBAC) the chart's ServiceAccount and
//!   RBAC are installed, as `templates/rbac.yaml` renders them, and the controller runs as that
//!   ServiceAccount through both API flavours.

use std::{collections::BTreeSet, time::Duration};

use crate::common::*;
use invite_operator::{api::UserInvitation, controller::USER_AGENT};
use kube::api::DeleteParams;
use serde_json::{Value, json};

type Grant = (String, String, String); // (apiGroup, resource[/subresource], verb)

/// The chart's rule lists (`namespaced`, `cluster`, `leaderElection`, `journal`,
/// `endpointSecrets`).
fn rules_file() -> Value {
    chart_file("files/rbac-rules.yaml")
}

/// The chart's YAML file `rel`, as JSON.
fn chart_file(rel: &str) -> Value {
    let path = package_path("deploy/charts/invite-operator").join(rel);
    serde_saphyr::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

fn granted(lists: &[&str]) -> BTreeSet<Grant> {
    let rules = rules_file();
    let mut out = BTreeSet::new();
    let strings = |v: &Value| -> Vec<String> {
        let items = v.as_array().unwrap().iter();
        items.map(|s| s.as_str().unwrap().to_string()).collect()
    };
    for list in lists {
        let rules = rules[*list].as_array();
        for rule in rules.unwrap_or_else(|| panic!("no list {list}")) {
            for g in strings(&rule["apiGroups"]) {
                for r in strings(&rule["resources"]) {
                    for v in strings(&rule["verbs"]) {
                        assert!(g != "*" && r != "*" && v != "*", "wildcard in {rule:?}");
                        out.insert((g.clone(), r.clone(), v));
                    }
                }
            }
        }
    }
    out
}

#[tokio::test]
async fn the_chart_grants_exactly_what_the_controller_uses() {
    let h = Harness::user_invite().await;
    let Some(server) = h.cluster.server.clone() else {
        eprintln!("skipped: needs the in-process API server (request records)");
        return h.finish().await;
    };
    let (cluster, mock) = (&h.cluster, &h.mock);
    let shared = cluster.unique("shared");
    let endpoint = json!({"api": "UserInvite", "url": mock.url,
        "credentials": {"secretRef": {"name": "api-token", "namespace": cluster.namespace}},
        "namespaceSelector": {"matchLabels": {"invite-e2e": "true"}},
        "allowed": {"groups": ["*"]}});
    cluster.cluster_endpoint(&shared, endpoint).await;
    // As the chart runs it: under leader election; a collection window that surely spans two
    // resources created together (their batch is recorded in the intent journal).
    let (client, settings) = (cluster.controller_client(), cluster.batching_settings());
    let (elected, stop, _readiness) =
        run_elected(cluster, client, settings, &cluster.namespace, "rbac-test");
    every_kind_of_work(cluster, &shared).await;
    // Long enough for a few renewals.
    tokio::time::sleep(Duration::from_millis(1200)).await;
    stop.cancel();
    elected.await.unwrap().unwrap();
    assert_grants_match(&server.requests());
    h.finish().await;
}

/// Work that makes every call the controller can make: through the cluster endpoint (namespace
/// labels) and the namespaced one, a refused user, a spec change, a journaled batch of two
/// resources, and a deletion with cleanup.
async fn every_kind_of_work(cluster: &TestCluster, shared: &str) {
    // Through the cluster endpoint (namespace labels), with a finalizer, a refused user
    // (an InviteFailed event) that is retried with the same answer (the event's series is
    // patched), then deleted (cleanup, finalizer removed).
    let users = |extra: &str| {
        json!([
            {"emailAddress": "a@example.com", "groups": [], "userGroups": []},
            {"emailAddress": "bad@example.com", "groups": ["nope"], "userGroups": []},
            {"emailAddress": extra, "groups": [], "userGroups": []},
        ])
    };
    let team = json!({"endpointRef": {"kind": "ClusterInvitationEndpoint", "name": shared},
                      "deletionPolicy": "Delete", "users": users("c@example.com")});
    cluster.create_invitation("team", team).await;
    cluster.wait_for_reason("team", "PartiallyFailed").await;
    let retried = json!({"users": users("d@example.com")});
    cluster.patch_spec("team", retried).await;
    let d_invited = |s: &invite_operator::api::UserInvitationStatus| {
        s.invited == 2 && s.users.len() == 3 && s.observed_generation == Some(2)
    };
    cluster.wait_status("team", "d invited", d_invited).await;
    // Through the namespaced endpoint too.
    let local = users_spec("wavefront", &["e@example.com"], &[]);
    cluster.create_ready("local", local).await;
    // Two resources in one invite batch: the intent journal (an InviteIntent created, then
    // deleted once both outcomes are recorded).
    let pair = ["pair-a", "pair-b"].map(|name| {
        let user = format!("{name}@example.com");
        cluster.create_invitation(name, users_spec("wavefront", &[user], &[]))
    });
    futures::future::join_all(pair).await;
    for name in ["pair-a", "pair-b"] {
        cluster.wait_status(name, "Ready", is_ready).await;
    }
    cluster.delete("team").await;
    cluster.wait_gone("team").await;
}

/// The operator's calls in `requests` are exactly what the chart grants.
fn assert_grants_match(requests: &[kube_test_apiserver::RecordedRequest]) {
    let used: BTreeSet<Grant> = requests
        .iter()
        .filter(|r| r.user_agent.as_deref() == Some(USER_AGENT) && !r.resource.is_empty())
        .map(|r| {
            let resource = match &r.subresource {
                Some(sub) => format!("{}/{sub}", r.resource),
                None => r.resource.clone(),
            };
            (r.api_group.clone(), resource, r.verb.clone())
        })
        .collect();
    let granted = granted(&["namespaced", "cluster", "leaderElection", "journal"]);
    let missing: Vec<_> = used.difference(&granted).collect();
    let unused: Vec<_> = granted.difference(&used).collect();
    let (all_granted, all_used) = (missing.is_empty(), unused.is_empty());
    assert!(all_granted, "calls the chart does not grant: {missing:?}");
    assert!(all_used, "grants the controller never used: {unused:?}");
}

/// The ServiceAccount and RBAC objects `templates/rbac.yaml` renders from `rules` for a release
/// whose full name is `fullname` in namespace `release_ns`, with leader election on,
/// `watchNamespaces: watched` and no `rbac.endpointSecretNamespaces`; each carries `labels`.
/// (tests/chart pins the template to this layout: `test_rbac_all_namespaces_uses_cluster_roles`,
/// `test_rbac_watch_namespaces_uses_one_role_per_namespace`.)
fn chart_rbac(
    rules: &Value,
    fullname: &str,
    release_ns: &str,
    watched: &[String],
    labels: &Value,
) -> Vec<Value> {
    let rbac = "rbac.authorization.k8s.io";
    let mut objects = vec![json!({
        "apiVersion": "v1", "kind": "ServiceAccount",
        "metadata": {"name": fullname, "namespace": release_ns, "labels": labels},
        "automountServiceAccountToken": true,
    })];
    let mut role = |name: String, namespace: Option<&str>, rules: &Value| {
        let (role, binding) = match namespace {
            Some(_) => ("Role", "RoleBinding"),
            None => ("ClusterRole", "ClusterRoleBinding"),
        };
        let mut metadata = json!({"name": name, "labels": labels});
        if let Some(ns) = namespace {
            metadata["namespace"] = json!(ns);
        }
        objects.push(json!({
            "apiVersion": format!("{rbac}/v1"), "kind": role, "metadata": metadata, "rules": rules,
        }));
        objects.push(json!({
            "apiVersion": format!("{rbac}/v1"), "kind": binding, "metadata": metadata,
            "roleRef": {"apiGroup": rbac, "kind": role, "name": name},
            "subjects": [{"kind": "ServiceAccount", "name": fullname, "namespace": release_ns}],
        }));
    };
    role(format!("{fullname}-cluster"), None, &rules["cluster"]);
    let in_release = Some(release_ns);
    if watched.is_empty() {
        role(format!("{fullname}-namespaced"), None, &rules["namespaced"]);
    } else {
        for ns in watched {
            role(fullname.to_string(), Some(ns), &rules["namespaced"]);
        }
        if !watched.iter().any(|ns| ns == release_ns) {
            let name = format!("{fullname}-endpoint-secrets");
            role(name, in_release, &rules["endpointSecrets"]);
        }
    }
    let name = format!("{fullname}-leader-election");
    role(name, in_release, &rules["leaderElection"]);
    role(format!("{fullname}-journal"), in_release, &rules["journal"]);
    objects
}

/// The chart's ServiceAccount and RBAC ([`chart_rbac`]) for `watched`, created in a new
/// release namespace of the test; the namespace and the release's full name.
async fn install_rendered_rbac(cluster: &TestCluster, watched: &[String]) -> (String, String) {
    let release_ns = cluster.create_namespace("operator").await;
    let fullname = cluster.unique("invite-operator");
    let labels = cluster.labels();
    for object in chart_rbac(&rules_file(), &fullname, &release_ns, watched, &labels) {
        create(&cluster.client, &object).await;
    }
    (release_ns, fullname)
}

/// Creates one rendered object.
async fn create(client: &kube::Client, object: &Value) {
    use k8s_openapi::api::{
        core::v1::ServiceAccount,
        rbac::v1::{ClusterRole, ClusterRoleBinding, Role, RoleBinding},
    };
    use kube::core::{ApiResource, DynamicObject};
    let resource = match object["kind"].as_str().unwrap() {
        "ServiceAccount" => ApiResource::erase::<ServiceAccount>(&()),
        "Role" => ApiResource::erase::<Role>(&()),
        "RoleBinding" => ApiResource::erase::<RoleBinding>(&()),
        "ClusterRole" => ApiResource::erase::<ClusterRole>(&()),
        "ClusterRoleBinding" => ApiResource::erase::<ClusterRoleBinding>(&()),
        other => panic!("unexpected kind {other}"),
    };
    let api: kube::Api<DynamicObject> = match object["metadata"]["namespace"].as_str() {
        Some(ns) => kube::Api::namespaced_with(client.clone(), ns, &resource),
        None => kube::Api::all_with(client.clone(), &resource),
    };
    let dynamic = serde_json::from_value(object.clone()).unwrap();
    let created = api.create(&Default::default(), &dynamic).await;
    created.unwrap_or_else(|e| panic!("create {object}: {e}"));
}

/// The chart's `kubeVersion` floor, e.g. (1, 28) for `>=1.28.0-0`.
fn chart_kube_version_floor() -> (u32, u32) {
    let constraint = chart_file("Chart.yaml")["kubeVersion"].clone();
    let constraint = constraint.as_str().expect("kubeVersion in Chart.yaml");
    let version = constraint.strip_prefix(">=");
    let version = version.unwrap_or_else(|| panic!("a lower bound: {constraint}"));
    let mut parts = version.split(['.', '-']).map(|p| p.parse::<u32>().unwrap());
    (parts.next().unwrap(), parts.next().unwrap())
}

/// Which `watchNamespaces` the chart is rendered for.
#[derive(Clone, Copy, Debug)]
enum Watch {
    /// `[<the test's namespace>]`: namespaced Roles.
    TestNamespace,
    /// `[]`: cluster-wide ClusterRoles.
    AllNamespaces,
}

/// On a real API server: `helm install` would accept its version (the chart's `kubeVersion`),
/// and the chart's ServiceAccount and RBAC let the controller, impersonating that
/// ServiceAccount, bring a UserInvite and an OrgInvitation resource to Ready — through a
/// namespaced endpoint, and a cluster endpoint with a namespace selector and its token in the
/// release namespace — under leader election, report its endpoints Ready, publish events and
/// release its finalizers. (The cluster is shared with the rest of the suite, so the
/// controller watches only the test's namespace also when the RBAC is cluster-wide.)
async fn chart_rbac_is_enough(watch: Watch, policy: Policy) {
    let Some(h) = rbac_enforcing_harness().await else {
        return;
    };
    let (cluster, mock) = (&h.cluster, &h.mock);
    let policy_version = match policy {
        Policy::None => None,
        Policy::StatusWriter => match served_admission_policy_version(&cluster.client).await {
            Some(version) => Some(version),
            None => {
                eprintln!(
                    "skipped: this API server serves no ValidatingAdmissionPolicy (Kubernetes \
                     1.30+, or 1.28/1.29 with the feature gate and v1beta1 turned on, as \
                     tests/e2e-realkube.sh does)"
                );
                return h.finish().await;
            }
        },
    };
    assert_the_chart_accepts_the_server(&cluster.client).await;

    let (release_ns, client) = install_chart_rbac(cluster, watch, policy_version).await;
    let csp = endpoints_for_the_chart(cluster, &mock.url, &release_ns).await;
    // The controller as the chart runs it: leader election on a Lease in the release
    // namespace, Secrets of cluster endpoints read from there.
    let mut settings = cluster.settings();
    settings.operator_namespace = release_ns.clone();
    let (elected, stop, _readiness) =
        run_elected(cluster, client, settings, &release_ns, "rbac-e2e");

    let delete = json!({"deletionPolicy": "Delete"});
    let users = users_spec("wavefront", &["a@example.com"], &[]);
    let users = with(users, delete.clone());
    let org = json!({"endpointRef": {"kind": "ClusterInvitationEndpoint", "name": csp},
                     "orgInvitation": {"usernames": ["b@example.com"]}});
    let resources = [("users", users), ("org", with(org, delete))];
    for (name, spec) in resources {
        cluster.create_invitation(name, spec).await;
    }
    for (name, email) in [("users", "a@example.com"), ("org", "b@example.com")] {
        cluster.wait_ready(name).await;
        assert_eq!(mock.api.invitations_sent_to(email), 1, "{email}");
    }
    let (ready, resolved) = ("True", "CredentialsResolved");
    cluster.wait_endpoint("wavefront", ready, resolved).await;
    cluster.wait_cluster_endpoint_ready(&csp).await;
    for name in ["users", "org"] {
        cluster.wait_event(name, "Invited").await;
    }

    // Deleting runs the cleanup (the user is deleted, the invitation revoked) and releases
    // the finalizer.
    for name in ["users", "org"] {
        cluster.delete(name).await;
    }
    for name in ["users", "org"] {
        cluster.wait_gone(name).await;
    }
    let deleted = mock.api.user("a@example.com").is_none();
    assert!(deleted, "a was deleted");
    stop.cancel();
    elected.await.unwrap().unwrap();
    h.finish().await;
}

/// The chart's kubeVersion admits the server, which the suite tests.
async fn assert_the_chart_accepts_the_server(client: &kube::Client) {
    let info = client.apiserver_version().await.unwrap();
    let major = info.major.parse::<u32>().unwrap();
    let minor = info.minor.trim_end_matches('+').parse::<u32>().unwrap();
    let accepted = (major, minor) >= chart_kube_version_floor();
    assert!(
        accepted,
        "the chart's kubeVersion refuses this server ({major}.{minor}), which the suite tests"
    );
}

/// The chart's RBAC, installed into a release namespace of the test's (with the status writer
/// policy, when given); the release namespace and a client impersonating its ServiceAccount.
async fn install_chart_rbac(
    cluster: &TestCluster,
    watch: Watch,
    policy_version: Option<&'static str>,
) -> (String, kube::Client) {
    use k8s_openapi::api::core::v1::ConfigMap;
    use kube::{Api, api::ListParams};
    let watched = match watch {
        Watch::TestNamespace => vec![cluster.namespace.clone()],
        Watch::AllNamespaces => vec![],
    };
    let (release_ns, fullname) = install_rendered_rbac(cluster, &watched).await;
    if let Some(version) = policy_version {
        status_writer_policy_holds(cluster, version, &release_ns, &fullname).await;
    }
    let mut config = cluster.config.clone();
    config.auth_info.impersonate = Some(format!("system:serviceaccount:{release_ns}:{fullname}"));
    let client = invite_operator::controller::kube_client(config, KUBERNETES_REQUESTS);
    let client = client.unwrap();
    // The impersonation is real: the ServiceAccount may not read what the chart grants nothing
    // on.
    let configmaps = Api::<ConfigMap>::namespaced(client.clone(), "default");
    let refused = configmaps.list(&ListParams::default()).await;
    assert!(forbidden(&refused), "{refused:?}");
    (release_ns, client)
}

/// UserInvite through a namespaced endpoint; OrgInvitation through a cluster endpoint whose
/// token lives in the release namespace (the operator's) and whose namespace selector needs
/// the namespace's labels. Returns the cluster endpoint's name.
async fn endpoints_for_the_chart(
    cluster: &TestCluster,
    mock_url: &str,
    release_ns: &str,
) -> String {
    use k8s_openapi::api::core::v1::Secret;
    use kube::Api;
    cluster.put_secret("api-token", TOKEN).await;
    let secret = "api-token";
    cluster
        .user_invite_endpoint("wavefront", mock_url, secret)
        .await;
    let secret: Secret = serde_json::from_value(json!({
        "metadata": {"name": "csp-token", "namespace": release_ns, "labels": cluster.labels()},
        "stringData": {"token": TOKEN},
    }))
    .unwrap();
    let secrets = Api::<Secret>::namespaced(cluster.client.clone(), release_ns);
    secrets.create(&Default::default(), &secret).await.unwrap();
    let csp = cluster.unique("csp");
    let endpoint = json!({"api": "OrgInvitation", "url": mock_url, "organizationId": ORG,
                          "credentials": {"secretRef": {"name": "csp-token"}},
                          "namespaceSelector": {"matchLabels": {TEST_ID_LABEL: cluster.id}}});
    cluster.cluster_endpoint(&csp, endpoint).await;
    csp
}

/// The controller under leader election on a Lease in `namespace`, as the chart runs it.
fn run_elected(
    cluster: &TestCluster,
    client: kube::Client,
    settings: invite_operator::controller::Settings,
    namespace: &str,
    identity: &str,
) -> (
    tokio::task::JoinHandle<Result<(), impl std::fmt::Debug>>,
    tokio_util::sync::CancellationToken,
    tokio::sync::watch::Receiver<invite_operator::health::Readiness>,
) {
    let election = invite_operator::leader::LeaderElection {
        lease_name: cluster.unique("invite-operator"),
        namespace: namespace.to_string(),
        identity: identity.into(),
        lease_duration: Duration::from_secs(3),
    };
    let (ready_tx, ready_rx) = tokio::sync::watch::channel(Default::default());
    let stop = tokio_util::sync::CancellationToken::new();
    let (run_on, metrics) = (client.clone(), invite_operator::telemetry::Metrics::new);
    let run = move |term: invite_operator::leader::Term| {
        let (readiness, leadership) = (term.readiness, term.leadership);
        let (client, settings) = (run_on.clone(), settings.clone());
        let metrics = metrics();
        invite_operator::controller::run(
            client, settings, metrics, readiness, leadership, term.stop,
        )
    };
    let elected =
        invite_operator::leader::run_while_leader(client, election, ready_tx, stop.clone(), run);
    let elected = tokio::spawn(elected);
    cluster.abort_on_drop(elected.abort_handle());
    (elected, stop, ready_rx)
}

#[tokio::test]
async fn the_chart_grants_enough_on_a_real_cluster_with_watched_namespaces() {
    chart_rbac_is_enough(Watch::TestNamespace, Policy::None).await;
}

#[tokio::test]
async fn the_chart_grants_enough_on_a_real_cluster_watching_all_namespaces() {
    chart_rbac_is_enough(Watch::AllNamespaces, Policy::None).await;
}

/// With the chart's statusWriterPolicy (a ValidatingAdmissionPolicy) on a real API server that
/// serves it: a user whom RBAC lets patch `userinvitations/status` cannot forge an ownership,
/// the policy's break-glass user can, and the operator, running as the chart's ServiceAccount
/// under the policy, writes every status it needs (both flavours Ready, cleanup done).
#[tokio::test]
async fn only_the_operator_writes_invitation_status_under_the_chart_policy() {
    chart_rbac_is_enough(Watch::TestNamespace, Policy::StatusWriter).await;
}

/// Whether the chart's statusWriterPolicy is installed.
#[derive(Clone, Copy, Debug)]
enum Policy {
    None,
    StatusWriter,
}

/// Installs the chart's statusWriterPolicy (tests/chart/rendered/status-writer-policy.yaml,
/// which the chart tests keep equal to what the chart renders) for the release `fullname` in
/// `release_ns`, bound to the test's namespace, in API version `version`; then shows that it
/// holds: a user with RBAC for `userinvitations/status` is refused with the policy's message
/// (once the server has loaded the policy), and its break-glass user is not.
async fn status_writer_policy_holds(
    cluster: &TestCluster,
    version: &str,
    release_ns: &str,
    fullname: &str,
) {
    let (mallory, break_glass) = (cluster.unique("mallory"), cluster.unique("break-glass"));
    let path = package_path("tests/chart/rendered/status-writer-policy.yaml");
    let fixture = std::fs::read_to_string(path)
        .unwrap()
        .replace("admissionregistration.k8s.io/v1", version)
        .replace("release-namespace", release_ns)
        .replace("release-invite-operator", fullname)
        .replace("watched-namespace", &cluster.namespace)
        .replace("break-glass-user", &break_glass)
        .replace("break-glass-group", &cluster.unique("no-such-group"));
    let documents: Vec<Value> = serde_saphyr::from_multiple(&fixture).unwrap();
    assert_eq!(documents.len(), 2, "a policy and its binding");
    for mut document in documents {
        document["metadata"]["labels"] = cluster.labels();
        let kind = document["kind"].as_str().unwrap().to_string();
        let resource = admission_policy_resource(version, &kind);
        let client = cluster.client.clone();
        let api = kube::Api::<kube::core::DynamicObject>::all_with(client, &resource);
        let object = serde_json::from_value(document).unwrap();
        let created = api.create(&Default::default(), &object).await;
        created.unwrap_or_else(|e| panic!("create the {kind}: {e}"));
    }
    // RBAC lets both users write the status: only the policy stands in the way.
    let role = cluster.unique("status-writer");
    let object = json!({
        "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole",
        "metadata": {"name": role, "labels": cluster.labels()},
        "rules": [{"apiGroups": ["invite.operators.dev"],
                   "resources": ["userinvitations", "userinvitations/status"],
                   "verbs": ["get", "patch", "update"]}],
    });
    create(&cluster.client, &object).await;
    bind_in_namespace(cluster, &mallory, &role).await;
    bind_in_namespace(cluster, &break_glass, &role).await;
    let forged = json!({"endpointRef": {"kind": "InvitationEndpoint", "name": "none"},
                        "users": [{"emailAddress": "admin@example.com"}]});
    cluster.create_invitation("forged", forged).await;
    let as_mallory = client_as(cluster, &mallory);
    let what = "the status writer policy to take effect";
    eventually_every(Duration::from_millis(200), WAIT, what, async || {
        match forge_status(&as_mallory, &cluster.namespace, "forged").await {
            // Not loaded yet (policies take effect shortly after they are created).
            Ok(_) => Err("the status was written".to_string()),
            Err(kube::Error::Api(s)) if s.code == 403 || s.code == 422 => {
                let by_the_policy = s.message.contains("only the operator's ServiceAccount");
                assert!(by_the_policy, "refused for another reason: {s:?}");
                Ok(())
            }
            Err(e) => panic!("forging the status: {e}"),
        }
    })
    .await;
    let as_break_glass = client_as(cluster, &break_glass);
    let forged = forge_status(&as_break_glass, &cluster.namespace, "forged").await;
    forged.expect("the break-glass user may write the status");
    cluster.delete("forged").await;
}

/// Secrets are read by name only: no list of the chart's RBAC lets the controller list or
/// watch them (a list returns every token of a namespace, or of the cluster).
#[test]
fn the_chart_grants_secrets_get_only() {
    let rules = rules_file();
    let lists: Vec<String> = rules.as_object().unwrap().keys().cloned().collect();
    let lists: Vec<&str> = lists.iter().map(String::as_str).collect();
    let secrets: BTreeSet<String> = granted(&lists)
        .into_iter()
        .filter(|(group, resource, _)| group.is_empty() && resource == "secrets")
        .map(|(_, _, verb)| verb)
        .collect();
    assert_eq!(secrets, BTreeSet::from(["get".to_string()]));
}

/// On a real API server, the chart's ServiceAccount may not list or watch Secrets, cluster-wide
/// or in any namespace, with the widest RBAC the chart renders (all namespaces watched:
/// ClusterRoles): asked with a SubjectAccessReview and tried as the ServiceAccount.
#[tokio::test]
async fn the_chart_service_account_cannot_list_or_watch_secrets() {
    use k8s_openapi::api::{authorization::v1::SubjectAccessReview, core::v1::Secret};
    use kube::{Api, api::ListParams};

    let Some(h) = rbac_enforcing_harness().await else {
        return;
    };
    let cluster = &h.cluster;
    let (release_ns, fullname) = install_rendered_rbac(cluster, &[]).await;
    let user = format!("system:serviceaccount:{release_ns}:{fullname}");
    let allowed = |verb: &str, namespace: Option<&str>| {
        let review: SubjectAccessReview = serde_json::from_value(json!({
            "spec": {
                "user": user,
                "groups": ["system:serviceaccounts", format!("system:serviceaccounts:{release_ns}"),
                           "system:authenticated"],
                "resourceAttributes": {"verb": verb, "resource": "secrets", "version": "v1",
                                       "namespace": namespace.unwrap_or_default()},
            }
        }))
        .unwrap();
        let api = Api::<SubjectAccessReview>::all(cluster.client.clone());
        async move {
            let review = api.create(&Default::default(), &review).await.unwrap();
            review.status.unwrap().allowed
        }
    };
    for namespace in [
        None,
        Some(cluster.namespace.as_str()),
        Some(release_ns.as_str()),
    ] {
        for verb in ["list", "watch"] {
            let allowed = allowed(verb, namespace).await;
            assert!(!allowed, "{verb} secrets in {namespace:?} is allowed");
        }
        // The review is real: reading a Secret by name is granted.
        if namespace.is_some() {
            assert!(allowed("get", namespace).await, "get in {namespace:?}");
        }
    }
    let client = client_as(cluster, &user);
    let lp = ListParams::default();
    let everywhere = Api::<Secret>::all(client.clone()).list(&lp).await;
    assert!(forbidden(&everywhere), "{everywhere:?}");
    let here = Api::<Secret>::namespaced(client, &cluster.namespace);
    let here = here.list(&lp).await;
    assert!(forbidden(&here), "{here:?}");
    h.finish().await;
}

/// A client acting as `user` (impersonation; the real API server authorizes it as that user).
fn client_as(cluster: &TestCluster, user: &str) -> kube::Client {
    let mut config = cluster.config.clone();
    config.auth_info.impersonate = Some(user.to_string());
    kube::Client::try_from(config).unwrap()
}

/// Binds `user` to the ClusterRole `role` in the test's namespace.
async fn bind_in_namespace(cluster: &TestCluster, user: &str, role: &str) {
    let name = format!("{user}-as-{role}");
    let object = json!({
        "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding",
        "metadata": {"name": name, "namespace": cluster.namespace, "labels": cluster.labels()},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": role},
        "subjects": [{"apiGroup": "rbac.authorization.k8s.io", "kind": "User", "name": user}],
    });
    create(&cluster.client, &object).await;
}

/// Whether `result` is the API server's 403.
fn forbidden<T: std::fmt::Debug>(result: &Result<T, kube::Error>) -> bool {
    matches!(result, Err(kube::Error::Api(s)) if s.code == 403)
}

/// Writes a status to UserInvitation `name` as `client` (a merge patch of the status
/// subresource, as anyone with `patch` on `userinvitations/status` could).
async fn forge_status(
    client: &kube::Client,
    namespace: &str,
    name: &str,
) -> Result<UserInvitation, kube::Error> {
    use kube::api::{Patch, PatchParams};
    let forged = json!({"status": {"users": [{
        "emailAddress": "admin@example.com", "state": "AlreadyMember", "ownership": "Adopted"}]}});
    let invitations = kube::Api::<UserInvitation>::namespaced(client.clone(), namespace);
    let (pp, patch) = (PatchParams::default(), Patch::Merge(&forged));
    invitations.patch_status(name, &pp, &patch).await
}

/// On a real API server with a controller manager (which fills aggregated roles): the chart's
/// app-team rules (files/aggregate-rules.yaml, installed as the chart renders them, labelled
/// aggregate-to-view/edit/admin) reach the built-in roles. A user bound to `edit` in a
/// namespace creates, updates and deletes UserInvitations and InvitationEndpoints there, and
/// can neither write a UserInvitation's status, nor read ClusterInvitationEndpoints, nor read
/// or write the intent journal (InviteIntents); a user
/// bound to `view` reads them and cannot create one.
#[tokio::test]
async fn app_teams_bound_to_edit_manage_invitations_but_never_their_status() {
    use invite_operator::api::{ClusterInvitationEndpoint, InvitationEndpoint};
    use kube::{Api, api::ListParams};

    let Some(h) = rbac_enforcing_harness().await else {
        return;
    };
    let cluster = &h.cluster;
    if !roles_are_aggregated(cluster).await {
        eprintln!(
            "skipped: the built-in edit role has no rules, so no kube-controller-manager \
             aggregates roles on this server"
        );
        return h.finish().await;
    }
    install_aggregated_rules(cluster).await;
    let (alice, bob) = (cluster.unique("alice"), cluster.unique("bob"));
    bind_in_namespace(cluster, &alice, "edit").await;
    bind_in_namespace(cluster, &bob, "view").await;
    let (as_alice, as_bob) = (client_as(cluster, &alice), client_as(cluster, &bob));
    let invitation: UserInvitation = serde_json::from_value(json!({
        "metadata": {"name": "team-invite", "labels": cluster.labels()},
        "spec": {"endpointRef": {"kind": "InvitationEndpoint", "name": "team"},
                 "users": [{"emailAddress": "a@example.com"}]},
    }))
    .unwrap();
    let alices = Api::<UserInvitation>::namespaced(as_alice.clone(), &cluster.namespace);
    // The aggregation controller copies the rules into `edit` shortly after they appear.
    let what = "the app-team rules to reach the edit role";
    let poll = Duration::from_millis(200);
    eventually_every(poll, WAIT, what, async || {
        match alices.create(&Default::default(), &invitation).await {
            Ok(_) => Ok(()),
            Err(kube::Error::Api(s)) if s.code == 403 => Err(s.message),
            Err(e) => panic!("create as a user bound to edit: {e}"),
        }
    })
    .await;
    // edit: the spec is theirs to change, and the resource theirs to delete …
    let patch = kube::api::Patch::Merge(json!({"spec": {"deletionPolicy": "Delete"}}));
    let pp = Default::default();
    let patched = alices.patch("team-invite", &pp, &patch).await;
    patched.expect("edit may update a UserInvitation");
    let endpoint: InvitationEndpoint = serde_json::from_value(json!({
        "metadata": {"name": "team", "labels": cluster.labels()},
        "spec": {"api": "UserInvite", "url": "https://api.example.com",
                 "credentials": {"secretRef": {"name": "team-token"}}},
    }))
    .unwrap();
    let endpoints = Api::<InvitationEndpoint>::namespaced(as_alice.clone(), &cluster.namespace);
    let created = endpoints.create(&Default::default(), &endpoint).await;
    created.expect("edit may create an InvitationEndpoint");
    // … never its status, nor the platform's endpoints.
    let status = forge_status(&as_alice, &cluster.namespace, "team-invite").await;
    assert!(forbidden(&status), "edit wrote a status: {status:?}");
    let platform = Api::<ClusterInvitationEndpoint>::all(as_alice.clone());
    let platform = platform.list(&ListParams::default()).await;
    let refused = forbidden(&platform);
    assert!(refused, "edit lists cluster endpoints: {platform:?}");
    // … nor the operator's intent journal, even in a namespace where it is `edit`.
    journal_is_out_of_reach(cluster, &as_alice).await;
    // view: read only.
    let bobs = Api::<UserInvitation>::namespaced(as_bob.clone(), &cluster.namespace);
    let read = bobs.list(&ListParams::default()).await.unwrap().items;
    assert_eq!(read.len(), 1, "view reads UserInvitations");
    let mut other = invitation.clone();
    other.metadata.name = Some("bobs".into());
    let created = bobs.create(&Default::default(), &other).await;
    assert!(forbidden(&created), "view created one: {created:?}");
    let status = forge_status(&as_bob, &cluster.namespace, "team-invite").await;
    assert!(forbidden(&status), "view wrote a status: {status:?}");
    let deleted = alices.delete("team-invite", &DeleteParams::default()).await;
    deleted.expect("edit may delete a UserInvitation");
    h.finish().await;
}

/// A user bound to `edit` in the test namespace neither reads nor writes InviteIntents there.
async fn journal_is_out_of_reach(cluster: &TestCluster, client: &kube::Client) {
    use invite_operator::api::InviteIntent;
    use kube::{Api, api::ListParams};
    let journal = Api::<InviteIntent>::namespaced(client.clone(), &cluster.namespace);
    let read = journal.list(&ListParams::default()).await;
    assert!(forbidden(&read), "edit reads the intent journal: {read:?}");
    let intent: InviteIntent = serde_json::from_value(json!({
        "metadata": {"name": "forged", "labels": cluster.labels()},
        "spec": {"endpoint": {"api": "UserInvite", "kind": "InvitationEndpoint", "name": "team"},
                 "api": {"url": "https://api.example.com"}, "addresses": []},
    }))
    .unwrap();
    let written = journal.create(&Default::default(), &intent).await;
    let refused = forbidden(&written);
    assert!(refused, "edit writes the intent journal: {written:?}");
}

/// Whether the controller manager fills the built-in roles (it does shortly after the server
/// starts).
async fn roles_are_aggregated(cluster: &TestCluster) -> bool {
    use k8s_openapi::api::rbac::v1::ClusterRole;
    let deadline = tokio::time::Instant::now() + WAIT;
    let mut aggregated = false;
    let roles = kube::Api::<ClusterRole>::all(cluster.client.clone());
    while !aggregated && tokio::time::Instant::now() < deadline {
        let edit = roles.get("edit").await.unwrap();
        aggregated = !edit.rules.unwrap_or_default().is_empty();
        if !aggregated {
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    }
    aggregated
}

/// The chart's rules for the built-in view, edit and admin roles, as ClusterRoles that
/// aggregate into them.
async fn install_aggregated_rules(cluster: &TestCluster) {
    let rules = chart_file("files/aggregate-rules.yaml");
    for role in ["view", "edit", "admin"] {
        let mut labels = cluster.labels();
        labels[format!("rbac.authorization.k8s.io/aggregate-to-{role}")] = json!("true");
        let object = json!({
            "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole",
            "metadata": {"name": cluster.unique(&format!("invite-operator-{role}")),
                         "labels": labels},
            "rules": rules[role],
        });
        create(&cluster.client, &object).await;
    }
}

/// A harness on a real API server; `None` (the test is skipped) on the in-process one, which
/// does not enforce RBAC.
async fn rbac_enforcing_harness() -> Option<Harness> {
    let h = Harness::start().await;
    if h.cluster.is_test_server() {
        eprintln!("skipped: needs a real API server (the in-process one does not enforce RBAC)");
        h.finish().await;
        return None;
    }
    Some(h)
}
