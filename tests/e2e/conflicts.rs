//! Guarded writes: the controller writes status and finalizers with a JSON patch whose first
//! operation `test`s what it read (the resourceVersion, the finalizer). When the resource
//! changed meanwhile the API server refuses the patch — with `422 Invalid` (a failed `test`),
//! not `409` — and the controller treats it as the conflict it is: no failure, its new version
//! is reconciled. Both tests run against the in-process server and a real cluster alike.

use std::time::Duration;

use crate::common::*;
use invite_operator::{
    api::{UserInvitation, UserState},
    controller::is_guard_failure,
};
use kube::api::{Patch, PatchParams, PostParams};
use kube_test_apiserver::Fault;
use serde_json::json;

fn json_patch(ops: serde_json::Value) -> Patch<()> {
    Patch::Json(serde_json::from_value(ops).unwrap())
}

/// The answers the controller must recognise, from this API server: a failed `test` of the
/// resourceVersion (status and main resource) or of a finalizer, and a stale replace, are
/// guard failures; a value the schema refuses is not.
#[tokio::test]
async fn a_failed_guard_is_told_apart_from_a_refused_write() {
    let cluster = TestCluster::start().await;
    let api = cluster.invitations();
    let spec =
        json!({"users": [{"emailAddress": "a@example.com", "groups": [], "userGroups": []}]});
    let created = cluster.create_invitation("guarded", spec).await;
    let stale = "1";
    assert_ne!(created.metadata.resource_version.as_deref(), Some(stale));
    let pp = PatchParams::default();

    let write = json_patch(json!([
        {"op": "test", "path": "/metadata/resourceVersion", "value": stale},
        {"op": "add", "path": "/status", "value": {"invited": 0}},
    ]));
    let status_write = api.patch_status("guarded", &pp, &write).await;
    let status_write = status_write.expect_err("the resourceVersion test fails");
    // Exactly kube-apiserver's answer to a failed JSON patch test.
    let kube::Error::Api(status) = &status_write else {
        panic!("{status_write:?}");
    };
    let answer = (status.code, status.reason.as_str(), status.message.as_str());
    let rejected = "the server rejected our request due to an error in our request";
    assert_eq!(answer, (422, "Invalid", rejected), "{status:?}");
    let no_causes = status.details.as_ref().is_none_or(|d| d.causes.is_empty());
    assert!(no_causes, "{status:?}");
    assert!(is_guard_failure(&status_write), "{status_write:?}");

    let removal = json_patch(json!([
        {"op": "test", "path": "/metadata/finalizers/0", "value": "invite.operators.dev/cleanup"},
        {"op": "remove", "path": "/metadata/finalizers/0"},
    ]));
    let removal = api.patch("guarded", &pp, &removal).await;
    let finalizer_removal = removal.expect_err("there is no finalizer");
    let guard = is_guard_failure(&finalizer_removal);
    assert!(guard, "{finalizer_removal:?}");

    let mut old = created.clone();
    old.metadata.resource_version = Some(stale.into());
    let replace = api.replace("guarded", &PostParams::default(), &old).await;
    let replace = replace.expect_err("a stale replace");
    assert!(is_guard_failure(&replace), "a 409 Conflict: {replace:?}");

    // The in-process server evaluates no CRD schema (tests/support/README.md): there the
    // refusal is injected, worded as the API server's (422 Invalid, with its causes).
    if let Some(server) = &cluster.server {
        server.inject_fault(Fault::new(422).verb("patch").name("guarded"));
    }
    let invalid = json_patch(json!([
        {"op": "test", "path": "/metadata/resourceVersion", "value": created.metadata.resource_version},
        {"op": "replace", "path": "/spec/users/0/emailAddress", "value": "not an email"},
    ]));
    let refused = api.patch("guarded", &pp, &invalid).await;
    let refused = refused.expect_err("the schema refuses the address");
    let invalid = matches!(&refused, kube::Error::Api(s) if s.code == 422);
    assert!(invalid, "{refused:?}");
    assert!(!is_guard_failure(&refused), "{refused:?}");
    cluster.cleanup().await;
}

/// The resource changes while the controller looks its users up (the mock API is slow), so
/// the intent it then writes is refused (its resourceVersion `test` fails: a 422). That is no
/// failure: the controller reconciles the new version and invites everyone once.
#[tokio::test]
async fn a_status_write_that_loses_a_race_is_no_failure() {
    let h = Harness::user_invite_running().await;
    h.mock.api.set_latency(Duration::from_millis(1500));
    let users = ["a@example.com", "b@example.com"];
    h.cluster
        .create_invitation("team", users_spec("wavefront", &users, &[]))
        .await;
    // The lookup is in flight: the controller has read the resource, and writes the intent
    // when the answer comes.
    let lookup = |e: &invite_mock::JournalEntry| e.path == "/api/v2/user/validateUsers";
    let in_flight = async || h.mock.api.journal().iter().any(lookup);
    eventually_every(Duration::from_millis(5), WAIT, "a lookup", in_flight).await;
    let touch = Patch::Merge(json!({"metadata": {"annotations": {"example.com/touched": "yes"}}}));
    let (invitations, params) = (h.cluster.invitations(), PatchParams::default());
    let changed: UserInvitation = invitations.patch("team", &params, &touch).await.unwrap();
    let journal = h.mock.api.journal();
    assert!(
        journal.iter().filter(|e| lookup(e)).all(|e| e.status == 0),
        "window missed: the lookup was answered before the resource changed: {journal:?}"
    );
    let missed = "window missed: the intent was written before the resource changed";
    assert!(changed.status.is_none(), "{missed}");
    h.mock.api.set_latency(Duration::ZERO);

    let inv = h.cluster.wait_ready("team").await;
    for user in users {
        assert_eq!(state_of(&inv, user), UserState::Invited);
        assert_eq!(h.mock.api.invitations_sent_to(user), 1, "{user}");
    }
    if let Some(server) = &h.cluster.server {
        let refused: Vec<_> = server
            .requests()
            .into_iter()
            .filter(|r| {
                r.resource == "userinvitations" && r.subresource.as_deref() == Some("status")
            })
            .filter(|r| r.status == 422)
            .collect();
        assert_eq!(refused.len(), 1, "the intent write lost: {refused:?}");
    }
    let transient = h.controller.as_ref().unwrap().reconciles_with("transient");
    assert_eq!(transient, 0, "a lost race is not a failure");
    h.finish().await;
}
