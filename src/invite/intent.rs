//! The exactly-once intent of an invite call: recorded durably before the call, either in the
//! intent journal (one object per coalesced batch of several resources) or, for a call that is
//! one resource's alone, as `Inviting` in the resource's status.

use std::collections::BTreeMap;

use jiff::Timestamp;
use tokio::sync::oneshot;

use super::{ApiError, InviteOutcome, InviteRequest, NotSentReason};
use crate::api::{ApiIdentity, EndpointBinding, IntentResource};

/// The intent of one resource's invite requests, as the journal records it.
#[derive(Clone, Debug, PartialEq)]
pub struct BatchIntent {
    /// The resource the addresses are invited for.
    pub resource: IntentResource,
    /// The API the requests act on.
    pub api: ApiIdentity,
    /// The endpoint they go through.
    pub endpoint: EndpointBinding,
    /// When the intent was taken (the status's `invitedAt`).
    pub invited_at: Timestamp,
    /// When the requests can no longer act.
    pub settles_at: Timestamp,
}

/// How a client asks the caller to record its own intent: it sends a channel, the caller
/// answers on it whether the intent is durable.
pub type Ask = oneshot::Sender<oneshot::Sender<bool>>;

/// What the caller receives: the client's request to record the intent itself.
pub type Asked = oneshot::Receiver<oneshot::Sender<bool>>;

/// Where the intents of coalesced batches are recorded.
#[async_trait::async_trait]
pub trait IntentJournal: Send + Sync {
    /// Records the intents of one batch (each resource's intent and the addresses it sends)
    /// durably; the batch is sent only after `Ok`.
    async fn open(&self, batch: Vec<(BatchIntent, Vec<String>)>) -> Result<(), String>;
}

/// Asks the caller to record its intent; true once it answered that the intent is durable.
pub async fn ask_caller(ask: Ask) -> bool {
    let (ack, acked) = oneshot::channel();
    if ask.send(ack).is_err() {
        return false;
    }
    acked.await.unwrap_or(false)
}

/// Every request `NotDone`: not sent, its intent could not be recorded.
pub fn not_sent(requests: &[InviteRequest]) -> BTreeMap<String, InviteOutcome> {
    requests
        .iter()
        .map(|r| {
            let error = ApiError::NotSent {
                operation: "invite users",
                reason: NotSentReason::NoIntent,
            };
            (r.email.clone(), InviteOutcome::NotDone(error))
        })
        .collect()
}
