//! The final check of an e2e run against a real cluster: nothing the suite created is left.
//!
//! Every object the suite creates carries the label `invite-e2e=true` (see `tests/e2e/common`),
//! and every test removes what it created, whether it passes, fails or panics. This test fails
//! when anything labelled by the suite is still there: namespaces (Terminating ones are given a
//! bounded time to go away), ClusterInvitationEndpoints, cluster RBAC, admission policies, and
//! in any namespace UserInvitations, InvitationEndpoints, Secrets, ServiceAccounts, RBAC and
//! Leases (also Leases named after a test namespace, which the controllers create without
//! labels).
//!
//! It runs after the suite, on purpose only: `tests/e2e-realkube.sh` runs it as
//! `cargo test --test e2e -- --ignored leftovers::`.

use std::time::Duration;

use crate::common::*;
use invite_operator::api::{ClusterInvitationEndpoint, InvitationEndpoint, UserInvitation};
use k8s_openapi::api::{
    coordination::v1::Lease,
    core::v1::{Namespace, Secret, ServiceAccount},
    rbac::v1::{ClusterRole, ClusterRoleBinding, Role, RoleBinding},
};
use kube::{
    Api, Client, Resource, ResourceExt,
    api::{ListParams, ObjectMeta},
};
use serde::de::DeserializeOwned;

/// How long Terminating namespaces may take to go away.
const NAMESPACE_DELETION: Duration = Duration::from_secs(120);

fn describe(kind: &str, meta: &ObjectMeta) -> String {
    let name = match &meta.namespace {
        Some(ns) => format!("{ns}/{}", meta.name.as_deref().unwrap_or_default()),
        None => meta.name.clone().unwrap_or_default(),
    };
    let id = meta.labels.as_ref().and_then(|l| l.get(TEST_ID_LABEL));
    let test = id.map(|id| format!(" (test id {id})")).unwrap_or_default();
    format!("{kind} {name}{test}")
}

/// Everything of kind `K` in any namespace (or cluster-wide) labelled by the suite.
async fn labelled<K>(client: &Client, kind: &str) -> Vec<String>
where
    K: Resource<DynamicType = ()> + Clone + DeserializeOwned + std::fmt::Debug,
{
    let suite = ListParams::default().labels(&format!("{SUITE_LABEL}=true"));
    let listed = Api::<K>::all(client.clone()).list(&suite).await;
    let listed = listed.unwrap_or_else(|e| panic!("list {kind}: {e}"));
    listed
        .items
        .iter()
        .map(|o| describe(kind, o.meta()))
        .collect()
}

#[tokio::test]
#[ignore = "the final check of a run against a real cluster: tests/e2e-realkube.sh runs it"]
async fn nothing_the_suite_created_is_left() {
    let Some(path) = real_cluster_kubeconfig() else {
        eprintln!("skipped: needs {KUBECONFIG_ENV} (the in-process servers end with their tests)");
        return;
    };
    let kubeconfig = kube::config::Kubeconfig::read_from(&path).expect("kubeconfig");
    let config = kube::Config::from_custom_kubeconfig(kubeconfig, &Default::default()).await;
    let client = Client::try_from(config.expect("kubeconfig is usable")).expect("client");

    let mut problems = namespaces_left(&client).await;
    problems
        .extend(labelled::<ClusterInvitationEndpoint>(&client, "ClusterInvitationEndpoint").await);
    problems.extend(labelled::<ClusterRole>(&client, "ClusterRole").await);
    problems.extend(labelled::<ClusterRoleBinding>(&client, "ClusterRoleBinding").await);
    problems.extend(labelled::<UserInvitation>(&client, "UserInvitation").await);
    problems.extend(labelled::<InvitationEndpoint>(&client, "InvitationEndpoint").await);
    problems.extend(labelled::<Secret>(&client, "Secret").await);
    problems.extend(labelled::<ServiceAccount>(&client, "ServiceAccount").await);
    problems.extend(labelled::<Role>(&client, "Role").await);
    problems.extend(labelled::<RoleBinding>(&client, "RoleBinding").await);
    problems.extend(labelled::<Lease>(&client, "Lease").await);
    // Admission policies (cluster-scoped), in whichever version the server serves.
    if let Some(api_version) = served_admission_policy_version(&client).await {
        for kind in ADMISSION_POLICY_KINDS {
            let resource = admission_policy_resource(api_version, kind);
            let selector = ListParams::default().labels(&format!("{SUITE_LABEL}=true"));
            let names = admission_policies(&client, &resource, &selector).await;
            let names = names.unwrap_or_else(|e| panic!("list {kind}: {e}"));
            problems.extend(names.into_iter().map(|name| format!("{kind} {name}")));
        }
    }
    // The controllers' Leases carry no labels: find them by the test namespace in their name
    // or their namespace.
    let leases = Api::<Lease>::all(client.clone())
        .list(&ListParams::default())
        .await;
    for lease in leases.expect("list leases").items {
        let in_test_namespace = lease
            .namespace()
            .is_some_and(|ns| ns.starts_with("invite-e2e-"));
        if in_test_namespace || lease.name_any().contains("invite-e2e-") {
            problems.push(describe("Lease", &lease.metadata));
        }
    }
    assert!(
        problems.is_empty(),
        "the e2e suite left {} object(s) behind:\n{}",
        problems.len(),
        problems.join("\n")
    );
}

/// The suite's namespaces: the tests delete theirs; the cluster removes them (and what they
/// hold) asynchronously. Waits, boundedly, for the Terminating ones; an Active one was never
/// deleted. Each one left, described.
async fn namespaces_left(client: &Client) -> Vec<String> {
    let namespaces: Api<Namespace> = Api::all(client.clone());
    let suite = ListParams::default().labels(&format!("{SUITE_LABEL}=true"));
    let deadline = tokio::time::Instant::now() + NAMESPACE_DELETION;
    let left = loop {
        let left = namespaces
            .list(&suite)
            .await
            .expect("list namespaces")
            .items;
        let terminating = left
            .iter()
            .filter(|ns| ns.metadata.deletion_timestamp.is_some());
        let terminating = terminating.count();
        if terminating == 0 || tokio::time::Instant::now() >= deadline {
            break left;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    let mut problems: Vec<String> = Vec::new();
    for ns in &left {
        let test = ns
            .annotations()
            .get(TEST_NAME_ANNOTATION)
            .cloned()
            .unwrap_or_default();
        let state = if ns.metadata.deletion_timestamp.is_some() {
            let invitations = Api::<UserInvitation>::namespaced(client.clone(), &ns.name_any());
            let listed = invitations.list(&ListParams::default()).await;
            let describe = |i: &UserInvitation| format!("{} {:?}", i.name_any(), i.finalizers());
            let stuck = listed.map(|l| l.items.iter().map(describe).collect::<Vec<String>>());
            let stuck = stuck.unwrap_or_default();
            format!("still Terminating after {NAMESPACE_DELETION:?}; UserInvitations: {stuck:?}")
        } else {
            "never deleted".to_string()
        };
        let namespace = describe("Namespace", &ns.metadata);
        problems.push(format!("{namespace} of test {test}: {state}"));
    }
    problems
}
