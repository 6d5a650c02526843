//! The intent journal (issue 19, item 2): a coalesced invite batch of several resources is
//! recorded as one `InviteIntent` object in the operator's namespace before its call, the
//! outcomes land in each resource's status with one write, and the object is deleted once they
//! all did. A controller killed with a journaled batch in flight, or a new leader, reads the
//! journal first and never sends its addresses again.

use std::time::Duration;

use crate::common::{flavor::*, *};
use invite_mock::ScriptedFault;
use invite_operator::api::{InviteIntent, UserState};
use kube::{Api, api::ListParams};

/// The endpoint's request timeout: a journaled request settles after two of them (plus the
/// tolerated clock skew).
pub(crate) const TIMEOUT_SECONDS: u64 = 2;

fn intents(h: &Harness) -> Api<InviteIntent> {
    Api::namespaced(h.cluster.client.clone(), &h.cluster.namespace)
}

async fn journal_objects(h: &Harness) -> Vec<InviteIntent> {
    let list = intents(h).list(&ListParams::default()).await;
    list.expect("list InviteIntents").items
}

async fn create_all(h: &Harness, all: &[(String, Vec<String>)]) {
    let spec = |users| Flavor::UserInvite.spec(users);
    let create = all
        .iter()
        .map(|(name, users)| h.cluster.create_invitation(name, spec(users)));
    futures::future::join_all(create).await;
}

/// Every resource Ready with its users Invited, one invite request per address at the wire,
/// and no journal object left.
pub(crate) async fn assert_converged_once(h: &Harness, all: &[(String, Vec<String>)]) {
    for (name, users) in all {
        let inv = h.cluster.wait_status(name, "Ready", is_ready).await;
        let invited = all_in(status_of(&inv), users, UserState::Invited);
        assert!(invited, "{name}: every user Invited: {:#?}", inv.status);
    }
    let everyone: Vec<String> = all.iter().flat_map(|(_, u)| u.clone()).collect();
    assert_invite_requests_once(&h.mock.api, &everyone, "journaled batch");
    eventually("no journal object left", async || {
        let left = journal_objects(h).await;
        left.is_empty().then_some(()).ok_or(format!("{left:#?}"))
    })
    .await;
}

/// The API performs invite requests and then holds their answers (for 30 s).
pub(crate) fn hold_invite_answers(h: &Harness) {
    let held = ScriptedFault::new(503).delay(Duration::from_secs(30));
    h.mock
        .api
        .add_fault(Flavor::UserInvite.on_invite(held.after_effect(true)));
}

/// Creates the resources (UserInvite) together and waits until their one invite request is in
/// flight (the API holds its answer: [`hold_invite_answers`]); checks that its intent is one
/// journal object and no `Inviting` status write.
pub(crate) async fn journaled_batch_in_flight(h: &Harness, all: &[(String, Vec<String>)]) {
    let flavor = Flavor::UserInvite;
    create_all(h, all).await;
    let mock = &h.mock;
    eventually("the batched invite request in flight", async || {
        let posts = flavor.invite_posts(mock);
        match posts.as_slice() {
            [one] if flavor.invited_in(one).len() == all.len() * all[0].1.len() => Ok(()),
            _ => Err(format!("{posts:#?}")),
        }
    })
    .await;
    let objects = journal_objects(h).await;
    let one = objects.len() == 1;
    assert!(one, "one journal object per batch: {objects:#?}");
    let addresses = objects[0].spec.addresses.len();
    let every = all.len() * all[0].1.len();
    assert_eq!(addresses, every, "every address of the batch is in it");
    for (name, _) in all {
        let inv = h.cluster.invitations().get(name).await.unwrap();
        let mut users = inv.status.iter().flat_map(|s| &s.users);
        let none = !users.any(|u| u.state == UserState::Inviting);
        assert!(
            none,
            "{name}: no Inviting status write for a journaled batch"
        );
    }
}

#[tokio::test]
async fn a_controller_killed_with_a_journaled_batch_in_flight_never_sends_it_again() {
    let mut h = Flavor::UserInvite.harness(TIMEOUT_SECONDS, 100).await;
    let all = resources(4, 2);
    hold_invite_answers(&h);
    h.start_controller_with(h.cluster.batching_settings());
    journaled_batch_in_flight(&h, &all).await;
    h.controller.take().expect("running").kill().await;
    h.mock.api.clear_faults();
    h.start_controller_with(h.cluster.batching_settings());
    assert_converged_once(&h, &all).await;
    h.finish().await;
}

#[tokio::test]
async fn a_rollout_writes_each_status_once_and_the_journal_per_batch() {
    let h = Flavor::UserInvite.harness(TIMEOUT_SECONDS, 100).await;
    // The shipped reconcile slots (the test default of 16 caps a batch at 8 resources).
    let defaults = invite_operator::controller::Settings::default();
    let mut settings = h.cluster.batching_settings();
    settings.concurrency = defaults.concurrency;
    settings.fair_share = defaults.fair_share;
    let (controller, log) = h.cluster.start_recorded_controller(settings);
    let controller = Some(controller);
    let h = Harness { controller, ..h };
    let all = resources(60, 2);
    create_all(&h, &all).await;
    assert_converged_once(&h, &all).await;
    let writes = log.writes_to_all("inviteintents");
    let (invitation_writes, status) = (log.writes_to_all("userinvitations"), |w: &&String| {
        w.ends_with("/status")
    });
    let status_writes = invitation_writes.iter().filter(status).count();
    let (n, journal_writes) = (all.len(), writes.len());
    let per_resource = status_writes as f64 / n as f64;
    let journal_per_resource = journal_writes as f64 / n as f64;
    eprintln!(
        "rollout of {n}: {status_writes} status writes ({per_resource:.2}/resource), {journal_writes} journal writes ({journal_per_resource:.2}/resource)"
    );
    let about_one = per_resource <= 1.1;
    assert!(
        about_one,
        "about one status write per resource: {status_writes} for {n}"
    );
    let few = journal_per_resource <= 0.1;
    assert!(few, "at most 0.1 journal writes per resource: {writes:?}");
    h.finish().await;
}
