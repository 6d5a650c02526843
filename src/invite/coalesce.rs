//! Calls coalesced per endpoint: the lookups and invitations of many resources that share an
//! endpoint go out as a few batched calls.
//!
//! [`CoalescedApi`] wraps an endpoint's client. A lookup or an invitation joins a queue, which
//! batches them as in group commit. A job on a quiet queue (no batch in flight) goes out after
//! [`BatchSettings::linger`] (by default at once), with the jobs that arrived meanwhile. While
//! earlier batches are in flight, jobs collect into the next batch, which goes out as soon as
//! they have all ended, when it reaches [`BatchSettings::max_users`] addresses, or at the
//! latest one [`BatchSettings::window`] after its first job (a ceiling, never a floor). So a
//! busy API makes batches larger, not more numerous, and nothing waits when nothing is in
//! flight. Then the batch goes out as one call (invitations: one call per group of equal
//! [`InviteApi::batch_key`], split at [`InviteApi::max_batch`]) and each job gets the answers
//! for its own addresses. Jobs already queued when a batch closes join it. A refused
//! address is isolated by the client, so it fails no other resource's users. At most
//! [`BatchSettings::max_in_flight`] batches of a queue run at once.
//!
//! Exactly-once: nothing of a batch is sent before its intent is durable. A batch of several
//! resources' jobs is recorded as one object of the intent journal ([`IntentJournal`]); a
//! batch of one resource's job (or a client without a journal) asks each caller to record its
//! own `Inviting` intent and sends only the jobs whose callers did. A job's send deadline
//! bounds the whole batch's.

use std::{
    collections::BTreeMap,
    sync::{Arc, Mutex},
    time::Duration,
};

use jiff::SignedDuration;
use tokio::{
    sync::{Semaphore, mpsc, oneshot},
    task::JoinSet,
    time::Instant,
};

use super::{
    ApiError, InviteApi, InviteOutcome, InvitePayload, InviteRequest, Lookup, Observed, SharedApi,
    UserGrants,
    intent::{self, Ask, BatchIntent, IntentJournal},
};
use crate::api::ApiFlavor;

/// How calls are coalesced.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct BatchSettings {
    /// How long a batch collects jobs at most while earlier batches are in flight (it goes
    /// out earlier when they end or when it is full).
    pub window: Duration,
    /// Most addresses in one batch (a batch closes early when it reaches this).
    pub max_users: usize,
    /// Most batches of one queue in flight at once.
    pub max_in_flight: usize,
    /// How long the first job on a quiet queue (no batch in flight) waits for company (the
    /// resources of one `kubectl apply` arrive a few milliseconds apart); by default none: a
    /// lone resource's call goes out at once.
    pub linger: Duration,
}

impl Default for BatchSettings {
    fn default() -> Self {
        BatchSettings {
            window: Duration::from_millis(200),
            max_users: 500,
            max_in_flight: 4,
            linger: Duration::ZERO,
        }
    }
}

type LookupAnswer = Result<BTreeMap<String, Observed>, ApiError>;

struct LookupJob {
    lookups: Vec<Lookup>,
    reply: oneshot::Sender<LookupAnswer>,
}

struct InviteJob {
    requests: Vec<InviteRequest>,
    send_by: Instant,
    /// The intent to record before the call, when the caller has not recorded it.
    intent: Option<(BatchIntent, Ask)>,
    reply: oneshot::Sender<BTreeMap<String, InviteOutcome>>,
}

trait Job: Send + 'static {
    fn addresses(&self) -> usize;
}

impl Job for LookupJob {
    fn addresses(&self) -> usize {
        self.lookups.len()
    }
}

impl Job for InviteJob {
    fn addresses(&self) -> usize {
        self.requests.len()
    }
}

/// An endpoint's client whose lookups and invitations are coalesced with those of every other
/// resource using it.
pub struct CoalescedApi {
    inner: SharedApi,
    lookups: mpsc::UnboundedSender<LookupJob>,
    invites: mpsc::UnboundedSender<InviteJob>,
    /// The queues; dropping this aborts them and every batch in flight, as a crash would.
    _queues: Mutex<JoinSet<()>>,
}

impl std::fmt::Debug for CoalescedApi {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CoalescedApi")
            .field("inner", &self.inner)
            .finish()
    }
}

impl CoalescedApi {
    /// Wraps `inner`; its queues run on the current tokio runtime until this is dropped.
    /// Every caller records its own intent.
    pub fn new(inner: SharedApi, settings: BatchSettings) -> CoalescedApi {
        CoalescedApi::with_journal(inner, settings, None)
    }

    /// Wraps `inner`, recording the intents of batches of several resources in `journal`.
    pub fn with_journal(
        inner: SharedApi,
        settings: BatchSettings,
        journal: Option<Arc<dyn IntentJournal>>,
    ) -> CoalescedApi {
        let (lookups, lookup_rx) = mpsc::unbounded_channel();
        let (invites, invite_rx) = mpsc::unbounded_channel();
        let mut queues = JoinSet::new();
        let api = inner.clone();
        queues.spawn(run_queue(lookup_rx, settings, move |jobs| {
            lookup_batch(api.clone(), jobs)
        }));
        let api = inner.clone();
        queues.spawn(run_queue(invite_rx, settings, move |jobs| {
            invite_batch(api.clone(), journal.clone(), jobs)
        }));
        CoalescedApi {
            inner,
            lookups,
            invites,
            _queues: Mutex::new(queues),
        }
    }

    /// Queues an invite job; its answer once its batch went out.
    async fn queue_invite(
        &self,
        requests: &[InviteRequest],
        send_by: Instant,
        intent: Option<(BatchIntent, Ask)>,
    ) -> BTreeMap<String, InviteOutcome> {
        let not_sent = || {
            requests
                .iter()
                .map(|r| (r.email.clone(), InviteOutcome::NotDone(queue_gone())))
                .collect()
        };
        if requests.is_empty() {
            return BTreeMap::new();
        }
        let (reply, answer) = oneshot::channel();
        let job = InviteJob {
            requests: requests.to_vec(),
            send_by,
            intent,
            reply,
        };
        if self.invites.send(job).is_err() {
            return not_sent();
        }
        // A dropped reply means the batch task died (it was aborted): whether its call went
        // out is unknown.
        answer.await.unwrap_or_else(|_| {
            requests
                .iter()
                .map(|r| {
                    let error = ApiError::NoAnswer {
                        operation: "invite users",
                        status: None,
                        message: "the batch was interrupted".into(),
                        retry_after: None,
                    };
                    (r.email.clone(), InviteOutcome::Unknown(error))
                })
                .collect()
        })
    }
}

/// Collects jobs into batches and runs each batch (at most `max_in_flight` at once).
async fn run_queue<J, F, Fut>(mut rx: mpsc::UnboundedReceiver<J>, settings: BatchSettings, run: F)
where
    J: Job,
    F: Fn(Vec<J>) -> Fut,
    Fut: Future<Output = ()> + Send + 'static,
{
    let in_flight = Arc::new(Semaphore::new(settings.max_in_flight.max(1)));
    // Batches run in this set, so they end with the queue (and with the client).
    let mut running = JoinSet::new();
    while let Some(first) = rx.recv().await {
        while running.try_join_next().is_some() {}
        let mut batch = Batch::new(first, settings.max_users);
        // Group commit: on a quiet queue (no batch in flight) the batch goes out after the
        // linger (by default at once); while earlier batches are in flight it collects the
        // jobs that follow, and goes out when the last of them ends, when it is full, or at
        // the latest one window after its first job.
        let started = Instant::now();
        let (ceiling, linger_ends) = (
            started + settings.window,
            started + settings.linger.min(settings.window),
        );
        let quiet = running.is_empty();
        while !batch.full() {
            let ends = match (quiet, running.is_empty()) {
                (true, _) => linger_ends,
                // The batches it waited for have ended.
                (false, true) => break,
                (false, false) => ceiling,
            };
            tokio::select! {
                biased;
                job = rx.recv() => match job {
                    Some(job) => batch.add(job),
                    None => break,
                },
                // A batch in flight ended: with none left, this one goes out now.
                Some(_) = running.join_next(), if !quiet => {}
                _ = tokio::time::sleep_until(ends) => break,
            }
        }
        let permit = loop {
            if batch.full() {
                break in_flight.clone().acquire_owned().await;
            }
            tokio::select! {
                biased;
                permit = in_flight.clone().acquire_owned() => break permit,
                Some(job) = rx.recv() => batch.add(job),
            }
        };
        let Ok(permit) = permit else {
            return;
        };
        let work = run(batch.jobs);
        running.spawn(async move {
            work.await;
            drop(permit);
        });
    }
    while running.join_next().await.is_some() {}
}

/// Jobs collected for one batch.
struct Batch<J> {
    jobs: Vec<J>,
    addresses: usize,
    max: usize,
}

impl<J: Job> Batch<J> {
    fn new(first: J, max: usize) -> Batch<J> {
        Batch {
            addresses: first.addresses(),
            jobs: vec![first],
            max,
        }
    }

    fn add(&mut self, job: J) {
        self.addresses += job.addresses();
        self.jobs.push(job);
    }

    fn full(&self) -> bool {
        self.addresses >= self.max
    }
}

/// One lookup call for every address of the batch; each job gets its own addresses.
async fn lookup_batch(api: SharedApi, jobs: Vec<LookupJob>) {
    let mut all: Vec<Lookup> = jobs
        .iter()
        .flat_map(|j| j.lookups.iter().cloned())
        .collect();
    all.sort();
    all.dedup();
    let answer = api.look_up(&all).await;
    for job in jobs {
        let reply = match &answer {
            Ok(found) => Ok(job
                .lookups
                .iter()
                .filter_map(|l| found.get(&l.email).map(|o| (l.email.clone(), o.clone())))
                .collect()),
            Err(e) => Err(e.clone()),
        };
        let _ = job.reply.send(reply);
    }
}

/// Records the intents of the batch's jobs that carry one: in the journal when several do
/// (one object for the batch), else by asking each caller. Returns the jobs that may be sent;
/// the others are answered `NotDone` (nothing was sent).
async fn record_intents(
    journal: Option<&dyn IntentJournal>,
    mut jobs: Vec<InviteJob>,
) -> Vec<InviteJob> {
    let with_intent = jobs.iter().filter(|j| j.intent.is_some()).count();
    if let Some(journal) = journal
        && with_intent >= 2
    {
        // The callers' asks are dropped unanswered: they record nothing themselves.
        let batch: Vec<_> = jobs
            .iter_mut()
            .filter_map(|job| {
                let (intent, _ask) = job.intent.take()?;
                let emails = job.requests.iter().map(|r| r.email.clone()).collect();
                Some((intent, emails))
            })
            .collect();
        return match journal.open(batch).await {
            Ok(()) => jobs,
            Err(error) => {
                tracing::warn!(%error, "the intent journal could not be written; the invite batch is not sent");
                for job in jobs {
                    let _ = job.reply.send(intent::not_sent(&job.requests));
                }
                Vec::new()
            }
        };
    }
    let recorded = futures::future::join_all(jobs.iter_mut().map(|job| {
        let ask = job.intent.take().map(|(_, ask)| ask);
        async move {
            match ask {
                Some(ask) => intent::ask_caller(ask).await,
                None => true,
            }
        }
    }))
    .await;
    let mut ready = Vec::with_capacity(jobs.len());
    for (job, recorded) in jobs.into_iter().zip(recorded) {
        if recorded {
            ready.push(job);
        } else {
            let _ = job.reply.send(intent::not_sent(&job.requests));
        }
    }
    ready
}

/// Invite calls for the batch, once its intents are recorded: grouped by batch key, split at
/// the client's largest batch, with the earliest send deadline of the jobs in each call.
async fn invite_batch(
    api: SharedApi,
    journal: Option<Arc<dyn IntentJournal>>,
    jobs: Vec<InviteJob>,
) {
    let jobs = record_intents(journal.as_deref(), jobs).await;
    if jobs.is_empty() {
        return;
    }
    let mut groups: BTreeMap<String, Vec<(usize, InviteRequest)>> = BTreeMap::new();
    for (index, job) in jobs.iter().enumerate() {
        for request in &job.requests {
            groups
                .entry(api.batch_key(&request.payload))
                .or_default()
                .push((index, request.clone()));
        }
    }
    let mut outcomes: Vec<BTreeMap<String, InviteOutcome>> = vec![BTreeMap::new(); jobs.len()];
    for group in groups.into_values() {
        for chunk in group.chunks(api.max_batch().max(1)) {
            let send_by = chunk
                .iter()
                .map(|(index, _)| jobs[*index].send_by)
                .min()
                .expect("a chunk is never empty");
            let requests: Vec<InviteRequest> = chunk.iter().map(|(_, r)| r.clone()).collect();
            let mut answered = api.invite(&requests, send_by).await;
            for (index, request) in chunk {
                if let Some(outcome) = answered.remove(&request.email) {
                    outcomes[*index].insert(request.email.clone(), outcome);
                }
            }
        }
    }
    for (job, outcome) in jobs.into_iter().zip(outcomes) {
        let _ = job.reply.send(outcome);
    }
}

/// The answer of a queue that is gone (the client was replaced while the job waited).
fn queue_gone() -> ApiError {
    ApiError::NotSent {
        operation: "queue",
        reason: super::NotSentReason::Deadline,
    }
}

#[async_trait::async_trait]
impl InviteApi for CoalescedApi {
    fn flavor(&self) -> ApiFlavor {
        self.inner.flavor()
    }

    fn invitation_lifetime(&self) -> SignedDuration {
        self.inner.invitation_lifetime()
    }

    fn request_timeout(&self) -> Duration {
        self.inner.request_timeout()
    }

    fn batch_key(&self, payload: &InvitePayload) -> String {
        self.inner.batch_key(payload)
    }

    fn max_batch(&self) -> usize {
        self.inner.max_batch()
    }

    fn reads_back_identifiers(&self) -> bool {
        self.inner.reads_back_identifiers()
    }

    async fn verify_credentials(&self) -> Result<(), ApiError> {
        self.inner.verify_credentials().await
    }

    fn limit_exceeded(&self) -> Option<String> {
        self.inner.limit_exceeded()
    }

    async fn look_up(&self, lookups: &[Lookup]) -> Result<BTreeMap<String, Observed>, ApiError> {
        if lookups.is_empty() {
            return Ok(BTreeMap::new());
        }
        let (reply, answer) = oneshot::channel();
        let job = LookupJob {
            lookups: lookups.to_vec(),
            reply,
        };
        if self.lookups.send(job).is_err() {
            return Err(queue_gone());
        }
        answer.await.unwrap_or_else(|_| Err(queue_gone()))
    }

    async fn invite(
        &self,
        requests: &[InviteRequest],
        send_by: Instant,
    ) -> BTreeMap<String, InviteOutcome> {
        self.queue_invite(requests, send_by, None).await
    }

    async fn invite_with_intent(
        &self,
        requests: &[InviteRequest],
        send_by: Instant,
        intent: BatchIntent,
        ask: Ask,
    ) -> BTreeMap<String, InviteOutcome> {
        self.queue_invite(requests, send_by, Some((intent, ask)))
            .await
    }

    async fn enforce(
        &self,
        identifier: &str,
        target: &UserGrants,
        actual: &UserGrants,
    ) -> Result<Vec<String>, ApiError> {
        self.inner.enforce(identifier, target, actual).await
    }

    async fn remove(
        &self,
        email: &str,
        identifier: Option<&str>,
    ) -> Result<Option<String>, ApiError> {
        self.inner.remove(email, identifier).await
    }
}

#[cfg(test)]
#[path = "coalesce_tests.rs"]
mod tests;
