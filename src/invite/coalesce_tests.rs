//! The coalescing queue in virtual time: when a batch goes out, and what it carries.

use super::*;

use crate::invite::scripted::{ScriptedApi, invited};

const WINDOW: Duration = Duration::from_millis(200);
const LINGER: Duration = Duration::from_millis(20);

/// An API answering after `latency` (inviting the addresses of the journal tests), and the
/// settings the tests coalesce it with.
fn timed(latency: Duration) -> (Arc<ScriptedApi>, BatchSettings) {
    let invite = ["a1@x.com", "a2@x.com", "b1@x.com"]
        .map(|e| (e.to_string(), invited(e)))
        .into();
    let api = Arc::new(ScriptedApi {
        invite,
        latency,
        ..ScriptedApi::default()
    });
    let settings = BatchSettings {
        window: WINDOW,
        linger: LINGER,
        ..BatchSettings::default()
    };
    (api, settings)
}

fn coalesced(latency: Duration) -> (Arc<ScriptedApi>, Arc<CoalescedApi>) {
    let (api, settings) = timed(latency);
    (api.clone(), Arc::new(CoalescedApi::new(api, settings)))
}

/// Looks `email` up through `api` after `delay`, returning when the answer came (virtual
/// time since `api`'s test began).
fn look_up(
    api: &Arc<CoalescedApi>,
    timed: &Arc<ScriptedApi>,
    email: &str,
    delay: Duration,
) -> tokio::task::JoinHandle<Duration> {
    let (api, timed, email) = (api.clone(), timed.clone(), email.to_string());
    tokio::spawn(async move {
        tokio::time::sleep(delay).await;
        api.look_up(&[Lookup::email(email)]).await.unwrap();
        timed.started.elapsed()
    })
}

#[tokio::test(start_paused = true)]
async fn a_lookup_on_a_quiet_endpoint_waits_for_no_window() {
    let (timed, api) = coalesced(Duration::from_millis(50));
    let answered = look_up(&api, &timed, "a@x.com", Duration::ZERO)
        .await
        .unwrap();
    let latency = Duration::from_millis(50);
    assert_eq!(
        answered,
        LINGER + latency,
        "only the linger and the API's latency"
    );
    // Quiet again more than a window later (at 470 ms): again without a window.
    let again = look_up(&api, &timed, "b@x.com", Duration::from_millis(400));
    assert_eq!(
        again.await.unwrap(),
        answered + Duration::from_millis(400) + LINGER + latency
    );
    let starts: Vec<Duration> = timed.timed_calls().iter().map(|c| c.0).collect();
    assert_eq!(
        starts,
        [LINGER, answered + Duration::from_millis(400) + LINGER]
    );
}

/// With the shipped settings, a lone resource's lookup leaves at once: it pays the API's
/// latency and nothing else.
#[tokio::test(start_paused = true)]
async fn by_default_a_lone_lookup_goes_out_at_once() {
    let (timed, _) = timed(Duration::from_millis(50));
    let api = Arc::new(CoalescedApi::new(timed.clone(), BatchSettings::default()));
    let answered = look_up(&api, &timed, "a@x.com", Duration::ZERO);
    assert_eq!(answered.await.unwrap(), Duration::from_millis(50));
}

/// Group commit: what arrives while a call is in flight waits for that call only, and goes
/// out as one call the moment it ends (not a window after it).
#[tokio::test(start_paused = true)]
async fn lookups_that_arrive_while_a_call_is_in_flight_share_the_next_one_sent_when_it_ends() {
    let latency = Duration::from_millis(50);
    let (timed, api) = coalesced(latency);
    let first = look_up(&api, &timed, "a@x.com", Duration::ZERO);
    // The first call is in flight from LINGER (20 ms) to 70 ms.
    let followers: Vec<_> = (3..=6)
        .map(|i| {
            look_up(
                &api,
                &timed,
                &format!("{i}@x.com"),
                Duration::from_millis(10 * i),
            )
        })
        .collect();
    let first_answered = first.await.unwrap();
    assert_eq!(first_answered, LINGER + latency);
    for follower in followers {
        assert_eq!(follower.await.unwrap(), first_answered + latency);
    }
    let calls = timed.timed_calls();
    assert_eq!(calls.len(), 2, "{calls:?}");
    assert_eq!(calls[1].0, first_answered, "sent when the first call ended");
    assert_eq!(calls[1].1.len(), 4);
}

/// The window is a ceiling: behind a call that takes longer than the window, what follows
/// goes out one window after it arrived, on another of the queue's slots.
#[tokio::test(start_paused = true)]
async fn behind_a_slow_call_followers_wait_one_window_at_most() {
    let latency = Duration::from_secs(1);
    let (timed, api) = coalesced(latency);
    let first = look_up(&api, &timed, "a@x.com", Duration::ZERO);
    let arrives = Duration::from_millis(30);
    let followers: Vec<_> = ["b@x.com", "c@x.com"]
        .iter()
        .map(|email| look_up(&api, &timed, email, arrives))
        .collect();
    for follower in followers {
        assert_eq!(follower.await.unwrap(), arrives + WINDOW + latency);
    }
    assert_eq!(first.await.unwrap(), LINGER + latency);
    let starts: Vec<Duration> = timed.timed_calls().iter().map(|c| c.0).collect();
    assert_eq!(starts, [LINGER, arrives + WINDOW]);
}

#[tokio::test(start_paused = true)]
async fn lookups_that_arrive_together_go_out_as_one_call() {
    let (timed, api) = coalesced(Duration::from_millis(50));
    let all: Vec<_> = (0..20)
        .map(|i| look_up(&api, &timed, &format!("{i}@x.com"), Duration::ZERO))
        .collect();
    for one in all {
        one.await.unwrap();
    }
    let calls = timed.timed_calls();
    // All arrived within the linger.
    assert_eq!(calls.len(), 1, "{calls:?}");
    assert_eq!(calls[0].1.len(), 20);
}

// ------------------------------------------------------------------------- the intent journal

/// A batch as the fake journal saw it: each resource's name and addresses.
type Opened = Vec<(String, Vec<String>)>;

/// A journal that records each batch it is asked to open (virtual time, the resources'
/// names and addresses) and takes `latency` to do it, failing when `fails`.
struct FakeJournal {
    started: Instant,
    latency: Duration,
    fails: bool,
    opened: Mutex<Vec<(Duration, Opened)>>,
}

#[async_trait::async_trait]
impl IntentJournal for FakeJournal {
    async fn open(&self, batch: Vec<(BatchIntent, Vec<String>)>) -> Result<(), String> {
        let at = self.started.elapsed();
        tokio::time::sleep(self.latency).await;
        let batch = batch
            .into_iter()
            .map(|(intent, emails)| (intent.resource.name, emails))
            .collect();
        self.opened.lock().unwrap().push((at, batch));
        if self.fails {
            Err("refused".into())
        } else {
            Ok(())
        }
    }
}

fn journaled(fails: bool) -> (Arc<ScriptedApi>, Arc<FakeJournal>, Arc<CoalescedApi>) {
    let (api, settings) = timed(Duration::from_millis(50));
    let journal = Arc::new(FakeJournal {
        started: api.started,
        latency: Duration::from_millis(10),
        fails,
        opened: Mutex::default(),
    });
    let coalesced = CoalescedApi::with_journal(api.clone(), settings, Some(journal.clone()));
    (api, journal, Arc::new(coalesced))
}

fn intent_of(resource: &str) -> BatchIntent {
    let now = jiff::Timestamp::now();
    BatchIntent {
        resource: crate::api::IntentResource {
            namespace: "team".into(),
            name: resource.into(),
            uid: format!("uid-{resource}"),
        },
        api: crate::api::ApiIdentity {
            url: "https://api.example.com".into(),
            organization_id: None,
        },
        endpoint: crate::api::EndpointBinding {
            api: ApiFlavor::UserInvite,
            kind: crate::api::EndpointKind::InvitationEndpoint,
            name: "api".into(),
            uid: None,
        },
        invited_at: now,
        settles_at: now + SignedDuration::from_secs(60),
    }
}

fn request(email: &str) -> InviteRequest {
    InviteRequest {
        email: email.into(),
        payload: InvitePayload::User(
            serde_json::from_value(serde_json::json!({"emailAddress": email})).unwrap(),
        ),
        resend: false,
    }
}

/// One resource's invitation with its intent not recorded: whether its caller was asked to
/// record it (answering `records`), and the outcomes.
fn invite_with_intent(
    api: &Arc<CoalescedApi>,
    resource: &str,
    emails: &[&str],
    records: bool,
) -> tokio::task::JoinHandle<(bool, BTreeMap<String, InviteOutcome>)> {
    let api = api.clone();
    let intent = intent_of(resource);
    let requests: Vec<InviteRequest> = emails.iter().map(|e| request(e)).collect();
    tokio::spawn(async move {
        let (ask, asked) = tokio::sync::oneshot::channel();
        let send_by = Instant::now() + Duration::from_secs(30);
        let call = api.invite_with_intent(&requests, send_by, intent, ask);
        let caller = async move {
            match asked.await {
                Ok(ack) => {
                    let _ = ack.send(records);
                    true
                }
                Err(_) => false,
            }
        };
        let (outcomes, asked) = tokio::join!(call, caller);
        (asked, outcomes)
    })
}

fn all_invited(outcomes: &BTreeMap<String, InviteOutcome>) -> bool {
    outcomes
        .values()
        .all(|o| matches!(o, InviteOutcome::Invited { .. }))
}

#[tokio::test(start_paused = true)]
async fn a_batch_of_several_resources_is_one_journal_object_written_before_its_call() {
    let (timed, journal, api) = journaled(false);
    let a = invite_with_intent(&api, "a", &["a1@x.com", "a2@x.com"], true);
    let b = invite_with_intent(&api, "b", &["b1@x.com"], true);
    let (a, b) = (a.await.unwrap(), b.await.unwrap());
    assert!(!a.0 && !b.0, "no caller is asked to write its own intent");
    assert!(all_invited(&a.1) && all_invited(&b.1), "{a:?} {b:?}");
    let opened = journal.opened.lock().unwrap().clone();
    assert_eq!(
        opened,
        vec![(
            LINGER,
            vec![
                (
                    "a".to_string(),
                    vec!["a1@x.com".to_string(), "a2@x.com".to_string()]
                ),
                ("b".to_string(), vec!["b1@x.com".to_string()]),
            ]
        )]
    );
    let calls = timed.timed_calls();
    assert_eq!(calls.len(), 1, "{calls:?}");
    assert_eq!(
        calls[0].0,
        LINGER + journal.latency,
        "the call leaves once the journal object is written"
    );
}

#[tokio::test(start_paused = true)]
async fn a_batch_of_one_resource_asks_its_caller_and_sends_only_once_it_recorded() {
    let (timed, journal, api) = journaled(false);
    let (asked, outcomes) = invite_with_intent(&api, "a", &["a1@x.com"], true)
        .await
        .unwrap();
    assert!(
        asked,
        "the caller records its own intent (Inviting in its status)"
    );
    assert!(all_invited(&outcomes), "{outcomes:?}");
    assert!(
        journal.opened.lock().unwrap().is_empty(),
        "no journal object"
    );
    assert_eq!(timed.timed_calls().len(), 1);

    let (asked, outcomes) = invite_with_intent(&api, "b", &["b1@x.com"], false)
        .await
        .unwrap();
    assert!(asked);
    assert!(
        matches!(outcomes["b1@x.com"], InviteOutcome::NotDone(_)),
        "not recorded, not sent: {outcomes:?}"
    );
    assert_eq!(timed.timed_calls().len(), 1, "nothing sent for b");
}

#[tokio::test(start_paused = true)]
async fn a_batch_whose_journal_object_cannot_be_written_is_not_sent() {
    let (timed, journal, api) = journaled(true);
    let a = invite_with_intent(&api, "a", &["a1@x.com"], true);
    let b = invite_with_intent(&api, "b", &["b1@x.com"], true);
    for (asked, outcomes) in [a.await.unwrap(), b.await.unwrap()] {
        assert!(!asked);
        assert!(
            outcomes
                .values()
                .all(|o| matches!(o, InviteOutcome::NotDone(_))),
            "{outcomes:?}"
        );
    }
    assert_eq!(journal.opened.lock().unwrap().len(), 1);
    assert!(timed.timed_calls().is_empty(), "nothing sent");
}
