//! The Helm chart's RBAC (deploy/charts/invite-operator/files/rbac-rules.yaml, the file the
//! chart renders its Roles from) grants exactly the Kubernetes calls the controller makes:
//! a scenario exercising every code path runs against the in-process API server, which records
//! each request with the controller's User-Agent; a missing grant or an unused one fails.

mod common;

use std::{collections::BTreeSet, time::Duration};

use common::*;
use invite_operator::controller::USER_AGENT;
use kube::api::DeleteParams;
use serde_json::{Value, json};

type Grant = (String, String, String); // (apiGroup, resource[/subresource], verb)

fn granted(lists: &[&str]) -> BTreeSet<Grant> {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/deploy/charts/invite-operator/files/rbac-rules.yaml"
    );
    let rules: Value = serde_yaml::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    let mut out = BTreeSet::new();
    for list in lists {
        for rule in rules[*list]
            .as_array()
            .unwrap_or_else(|| panic!("no list {list}"))
        {
            for group in rule["apiGroups"].as_array().unwrap() {
                for resource in rule["resources"].as_array().unwrap() {
                    for verb in rule["verbs"].as_array().unwrap() {
                        let (g, r, v) = (
                            group.as_str().unwrap(),
                            resource.as_str().unwrap(),
                            verb.as_str().unwrap(),
                        );
                        assert!(g != "*" && r != "*" && v != "*", "wildcard in {rule:?}");
                        out.insert((g.to_string(), r.to_string(), v.to_string()));
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
    cluster
        .cluster_endpoint(
            &shared,
            json!({"api": "UserInvite", "url": mock.url,
                   "credentials": {"secretRef": {"name": "api-token", "namespace": cluster.namespace}},
                   "namespaceSelector": {"matchLabels": {"invite-e2e": "true"}}}),
        )
        .await;
    // As the chart runs it: under leader election.
    let election = invite_operator::leader::LeaderElection {
        lease_name: cluster.unique("invite-operator"),
        namespace: cluster.namespace.clone(),
        identity: "rbac-test".into(),
        lease_duration: Duration::from_secs(3),
    };
    let (ready_tx, _ready_rx) =
        tokio::sync::watch::channel(invite_operator::controller::Readiness::default());
    let (stop_tx, mut stop_rx) = tokio::sync::watch::channel(false);
    let (client, settings) = (cluster.controller_client(), cluster.settings());
    let elected = tokio::spawn(invite_operator::leader::run_while_leader(
        client.clone(),
        election,
        ready_tx,
        async move {
            let _ = stop_rx.wait_for(|s| *s).await;
        },
        move |term: invite_operator::leader::Term| {
            invite_operator::controller::run(
                client.clone(),
                settings.clone(),
                invite_operator::telemetry::Metrics::new(),
                term.readiness,
                term.stop,
            )
        },
    ));
    cluster.abort_on_drop(elected.abort_handle());

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
    cluster
        .create_invitation(
            "team",
            json!({"endpointRef": {"kind": "ClusterInvitationEndpoint", "name": shared},
                   "deletionPolicy": "Delete", "users": users("c@example.com")}),
        )
        .await;
    cluster
        .wait_status("team", "PartiallyFailed", reason_is("PartiallyFailed"))
        .await;
    cluster
        .patch_spec("team", json!({"users": users("d@example.com")}))
        .await;
    cluster
        .wait_status("team", "d invited", |s| {
            s.invited == 2 && s.users.len() == 3 && s.observed_generation == Some(2)
        })
        .await;
    // Through the namespaced endpoint too.
    cluster
        .create_invitation(
            "local",
            json!({"endpointRef": {"kind": "InvitationEndpoint", "name": "wavefront"},
                   "users": [{"emailAddress": "e@example.com", "groups": [], "userGroups": []}]}),
        )
        .await;
    cluster.wait_status("local", "Ready", is_ready).await;
    cluster
        .invitations()
        .delete("team", &DeleteParams::default())
        .await
        .unwrap();
    let deadline = tokio::time::Instant::now() + WAIT;
    while cluster
        .invitations()
        .get_opt("team")
        .await
        .unwrap()
        .is_some()
    {
        assert!(tokio::time::Instant::now() < deadline);
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // Long enough for a few renewals.
    tokio::time::sleep(Duration::from_millis(1200)).await;
    stop_tx.send(true).unwrap();
    elected.await.unwrap().unwrap();

    let used: BTreeSet<Grant> = server
        .requests()
        .into_iter()
        .filter(|r| r.user_agent.as_deref() == Some(USER_AGENT) && !r.resource.is_empty())
        .map(|r| {
            let resource = match &r.subresource {
                Some(sub) => format!("{}/{sub}", r.resource),
                None => r.resource.clone(),
            };
            (r.api_group, resource, r.verb)
        })
        .collect();
    let granted = granted(&["namespaced", "cluster", "leaderElection"]);
    let missing: Vec<_> = used.difference(&granted).collect();
    let unused: Vec<_> = granted.difference(&used).collect();
    assert!(
        missing.is_empty(),
        "calls the chart does not grant: {missing:?}"
    );
    assert!(
        unused.is_empty(),
        "grants the controller never used: {unused:?}"
    );
    h.finish().await;
}
