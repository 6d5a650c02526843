//! The coalescing queue in virtual time: when a batch goes out, and what it carries.

use super::*;

/// An API whose lookups take `latency` and which records when each call started (virtual
/// time since the test began) and for which addresses.
#[derive(Debug)]
struct TimedApi {
    started: Instant,
    latency: Duration,
    calls: Mutex<Vec<(Duration, Vec<String>)>>,
}

#[async_trait::async_trait]
impl InviteApi for TimedApi {
    fn flavor(&self) -> ApiFlavor {
        ApiFlavor::UserInvite
    }
    fn invitation_lifetime(&self) -> SignedDuration {
        SignedDuration::from_hours(24)
    }
    fn request_timeout(&self) -> Duration {
        Duration::from_secs(30)
    }
    async fn verify_credentials(&self) -> Result<(), ApiError> {
        Ok(())
    }
    async fn look_up(&self, lookups: &[Lookup]) -> Result<BTreeMap<String, Observed>, ApiError> {
        let emails = lookups.iter().map(|l| l.email.clone()).collect();
        let at = self.started.elapsed();
        self.calls.lock().unwrap().push((at, emails));
        tokio::time::sleep(self.latency).await;
        Ok(lookups
            .iter()
            .map(|l| (l.email.clone(), Observed::Absent))
            .collect())
    }
    async fn invite(&self, _: &[InviteRequest], _: Instant) -> BTreeMap<String, InviteOutcome> {
        unreachable!("lookups only")
    }
    async fn enforce(
        &self,
        _: &str,
        _: &UserGrants,
        _: &UserGrants,
    ) -> Result<Vec<String>, ApiError> {
        unreachable!("lookups only")
    }
    async fn remove(&self, _: &str, _: Option<&str>) -> Result<Option<String>, ApiError> {
        unreachable!("lookups only")
    }
}

const WINDOW: Duration = Duration::from_millis(200);
const LINGER: Duration = Duration::from_millis(20);

fn coalesced(latency: Duration) -> (Arc<TimedApi>, Arc<CoalescedApi>) {
    let api = Arc::new(TimedApi {
        started: Instant::now(),
        latency,
        calls: Mutex::default(),
    });
    let settings = BatchSettings {
        window: WINDOW,
        linger: LINGER,
        ..BatchSettings::default()
    };
    (api.clone(), Arc::new(CoalescedApi::new(api, settings)))
}

/// Looks `email` up through `api` after `delay`, returning when the answer came (virtual
/// time since `api`'s test began).
fn look_up(
    api: &Arc<CoalescedApi>,
    timed: &Arc<TimedApi>,
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
    let starts: Vec<Duration> = timed.calls.lock().unwrap().iter().map(|c| c.0).collect();
    assert_eq!(
        starts,
        [LINGER, answered + Duration::from_millis(400) + LINGER]
    );
}

#[tokio::test(start_paused = true)]
async fn lookups_that_follow_a_call_share_the_next_one_a_window_after_it() {
    let (timed, api) = coalesced(Duration::from_millis(50));
    let first = look_up(&api, &timed, "a@x.com", Duration::ZERO);
    // Past the first one's linger, within its window.
    let followers: Vec<_> = (3..=7)
        .map(|i| {
            look_up(
                &api,
                &timed,
                &format!("{i}@x.com"),
                Duration::from_millis(10 * i),
            )
        })
        .collect();
    assert_eq!(first.await.unwrap(), LINGER + Duration::from_millis(50));
    for follower in followers {
        // Collected until one window after the first call, then one call.
        let answered = follower.await.unwrap();
        assert_eq!(answered, LINGER + WINDOW + Duration::from_millis(50));
    }
    let calls = timed.calls.lock().unwrap().clone();
    assert_eq!(calls.len(), 2, "{calls:?}");
    assert_eq!(calls[1].0, LINGER + WINDOW);
    assert_eq!(calls[1].1.len(), 5);
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
    let calls = timed.calls.lock().unwrap().clone();
    // All arrived within the linger.
    assert_eq!(calls.len(), 1, "{calls:?}");
    assert_eq!(calls[0].1.len(), 20);
}
