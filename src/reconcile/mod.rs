//! Reconciling one UserInvitation against its invite API.
//!
//! `pass` is the one driver of a pass over a resource, for the controller and the one-shot
//! `reconcile` command alike: requested addresses → paused → [`resolve`] (the endpoint, its
//! policy and its token, from a [`resolve::Source`]) → plan context → [`sync`]. `plan` holds
//! the pure decisions; [`sync`] executes them in phases (look up, record the intent, invite,
//! enforce, remove, finish). The two modes differ only in their `pass::Driver`: where the
//! objects come from, where the status is written ([`StatusWriter`]) and the API client (the
//! controller coalesces calls across resources).

pub(crate) mod pass;
pub(crate) mod plan;
pub mod resolve;
mod sync;
#[cfg(test)]
mod sync_tests;

use std::time::Duration;

pub use sync::sync;

use crate::{
    api::{UserInvitationStatus, UserState},
    invite::ApiError,
};

/// Where a pass writes the status.
pub trait StatusWriter: Send {
    /// Writes the whole status. Fails (e.g. with a conflict) if the resource changed since
    /// it was read; nothing may be sent to the API after a failed intent write.
    fn write(
        &mut self,
        status: &UserInvitationStatus,
    ) -> impl Future<Output = Result<(), WriteError>> + Send;
}

/// Who else holds a person on the pass's API: asked right before every change only an owner
/// may make (an Enforce correction, a removal), not only when the pass was planned.
pub trait Holders: Sync {
    /// The `namespace/name` of another resource holding `email`, if any.
    fn other_holder(&self, email: &str) -> Option<String>;
}

/// Nobody else holds anyone (the one-shot mode works on one resource at a time).
pub struct NoOtherHolders;

impl Holders for NoOtherHolders {
    fn other_holder(&self, _email: &str) -> Option<String> {
        None
    }
}

/// A failed status write.
#[derive(thiserror::Error, Debug)]
pub enum WriteError {
    /// The resource changed since it was read (a failed resourceVersion guard: 409, or 422
    /// from a JSON-patch `test`); the pass ends and runs again on the new version.
    #[error("the resource changed while it was worked on; looking again")]
    Conflict,
    /// The write failed otherwise.
    #[error("writing the status failed: {0}")]
    Failed(String),
}

impl From<std::convert::Infallible> for WriteError {
    fn from(never: std::convert::Infallible) -> WriteError {
        match never {}
    }
}

/// One change a pass made in the API, or one state a user reached: each is one event.
#[derive(Clone, Debug, PartialEq)]
pub enum Change {
    /// Addresses invited (in one call).
    Invited(Vec<String>),
    /// An address the API refused, with its message.
    InviteFailed {
        /// The address.
        email: String,
        /// The API's message.
        message: String,
    },
    /// A user whose grants were corrected (accessPolicy Enforce), with what changed.
    Updated {
        /// The address.
        email: String,
        /// What changed.
        changes: String,
    },
    /// A user removed from the spec whose external state was removed (deletionPolicy
    /// Delete), with what was done.
    Removed {
        /// The address.
        email: String,
        /// What was done (`None`: nothing was left to remove).
        done: Option<String>,
    },
    /// A user this resource owned but left alone because another resource holds them now
    /// (no removal, no correction).
    LeftAlone {
        /// The address.
        email: String,
        /// The resource holding them (`namespace/name`).
        holder: String,
    },
    /// A user whose state changed.
    Reached {
        /// The address.
        email: String,
        /// The new state.
        state: UserState,
    },
}

/// What a pass did, for events, logs and the next pass.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct SyncReport {
    /// The status after the pass.
    pub status: UserInvitationStatus,
    /// What changed, in the order it happened.
    pub changes: Vec<Change>,
    /// Number of status writes made.
    pub writes: usize,
    /// Why the pass could not finish its work (retried with backoff), if it could not.
    pub problem: Option<ApiError>,
    /// When to look again at users waiting for an earlier request to settle or for another
    /// resource.
    pub next_look: Option<Duration>,
    /// Whether the pass ended with its status written (or unchanged and already stored):
    /// every intent of the pass (journaled ones included) is then in the status.
    pub finished: bool,
}
