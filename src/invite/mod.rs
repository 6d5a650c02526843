//! The invite APIs: one trait, [`InviteApi`], one module per API flavour, and [`connect`], the
//! one place that knows every flavour.
//!
//! Clients speak per email address: they report what the API knows about each address
//! ([`Observed`]), invite a batch of addresses (one [`InviteOutcome`] per address, never an
//! error for the whole batch), and run the user operations of accessPolicy Enforce and
//! deletionPolicy Delete. Failures are [`ApiError`]s classified as transient, configuration or
//! permanent, and by whether the API may have acted.
//!
//! Adding a flavour: a module implementing [`InviteApi`] with a `connect` function, a variant of
//! [`ApiFlavor`], and its line in [`connect`].

pub mod client;
pub mod coalesce;
pub(crate) mod decode;
mod error;
pub(crate) mod identity;
pub mod intent;
#[cfg(test)]
mod json_strategy;
pub(crate) mod orginvitation;
#[cfg(test)]
pub(crate) mod scripted;
pub(crate) mod transport;
pub(crate) mod userinvite;

use std::{collections::BTreeMap, sync::Arc, time::Duration};

use jiff::{SignedDuration, Timestamp};
use tokio::time::Instant;

pub use error::{ApiError, ErrorCategory, NotSentReason};
pub use identity::api_identity;
pub use transport::{LookupLimits, Transport, TransportError, TransportSettings};

use crate::api::{ApiFlavor, EndpointConnection, OrgInvitationRequest, UserToCreate, address};

/// An API token read from a Secret. Its `Debug` output never shows the value.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct ApiToken(String);

impl ApiToken {
    /// Wraps a token (surrounding whitespace, e.g. a trailing newline from `echo`, is removed).
    pub fn new(token: impl AsRef<str>) -> ApiToken {
        ApiToken(token.as_ref().trim().to_string())
    }

    /// The token itself, for the request header.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for ApiToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ApiToken(<redacted>)")
    }
}

/// Permissions, user groups and roles of a user (UserInvite), compared as sets.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct UserGrants {
    /// Permissions.
    pub groups: std::collections::BTreeSet<String>,
    /// User group ids (without the system group "Everyone").
    pub user_groups: std::collections::BTreeSet<String>,
    /// Role ids.
    pub roles: std::collections::BTreeSet<String>,
}

impl UserGrants {
    /// The grants a `UserToCreate` asks for.
    pub fn of(user: &crate::api::UserToCreate) -> UserGrants {
        UserGrants {
            groups: user.groups.iter().cloned().collect(),
            user_groups: user.user_groups.iter().cloned().collect(),
            roles: user.roles.iter().cloned().collect(),
        }
    }
}

/// One address to look up, with the API's identifier when it is known.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Lookup {
    /// The requested address, as the person it names ([`address::person`]).
    pub email: String,
    /// The identifier the API gave the user, if known.
    pub identifier: Option<String>,
}

impl Lookup {
    /// A lookup by address only.
    pub fn email(email: impl Into<String>) -> Lookup {
        Lookup {
            email: email.into(),
            identifier: None,
        }
    }

    /// Whether an identifier the API reports names this user: the identifier or the address,
    /// as the same person ([`address::same_person`]: ignoring case; `alice@x.com` and
    /// `alice+ops@x.com` are two people).
    pub fn matches(&self, reported: &str) -> bool {
        address::same_person(reported, &self.email)
            || self
                .identifier
                .as_deref()
                .is_some_and(|id| address::same_person(reported, id))
    }
}

/// What the API knows about one email address.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Observed {
    /// No user and no pending invitation.
    Absent,
    /// The user exists.
    Member {
        /// The API's identifier of the user.
        identifier: String,
        /// Whether the user has logged in / accepted.
        accepted: bool,
        /// The user's grants, where the API reports them (UserInvite).
        grants: Option<UserGrants>,
    },
    /// An invitation is pending (OrgInvitation).
    PendingInvitation {
        /// Invitation reference.
        reference: String,
        /// When it expires.
        expires_at: Option<Timestamp>,
        /// When it was sent.
        invited_at: Option<Timestamp>,
    },
    /// The newest invitation was redeemed: the person accepted (OrgInvitation).
    RedeemedInvitation {
        /// Invitation reference.
        reference: String,
    },
    /// The newest invitation was revoked and the user is not a member (OrgInvitation).
    RevokedInvitation {
        /// Invitation reference.
        reference: String,
    },
}

/// What an invitation grants, as the API flavour takes it.
#[derive(Clone, Debug, PartialEq)]
pub enum InvitePayload {
    /// UserInvite: the spec's entry of the user (permissions, user groups, roles).
    User(UserToCreate),
    /// OrgInvitation: the spec's `orgInvitation`, one `Arc` shared by every address of one
    /// resource (which is how a batch's addresses are told apart by resource).
    Org(Arc<OrgInvitationRequest>),
}

/// One address to invite, with what to grant.
#[derive(Clone, Debug, PartialEq)]
pub struct InviteRequest {
    /// The requested address, as the person it names ([`address::person`]).
    pub email: String,
    /// What the invitation grants.
    pub payload: InvitePayload,
    /// Whether the person is invited again (`reinviteExpired`): the API already shows them
    /// (or their expired invitation), so finding them after a refused call proves nothing.
    pub resend: bool,
}

/// The outcome of inviting one address.
#[derive(Clone, Debug, PartialEq)]
pub enum InviteOutcome {
    /// The invitation was sent.
    Invited {
        /// The API's identifier of the user or invitation.
        identifier: String,
        /// When the invitation expires, if the API says.
        expires_at: Option<Timestamp>,
        /// A warning the API returned (e.g. ignored user groups).
        warning: Option<String>,
    },
    /// The user already existed; no invitation was sent.
    AlreadyMember {
        /// The API's identifier of the user.
        identifier: String,
    },
    /// The API refused this user; nothing was done.
    Rejected {
        /// The API's message.
        message: String,
    },
    /// Nothing was done for this user: the request was not sent, or the answer proves the API
    /// did nothing (429, 503, 401, …). The error says what to do.
    NotDone(ApiError),
    /// The request went out but its outcome is unknown: the API may have acted.
    Unknown(ApiError),
}

impl InviteOutcome {
    /// The outcome for an address whose request failed as a whole with `error`.
    pub fn of_error(error: ApiError) -> InviteOutcome {
        if error.may_have_acted() {
            InviteOutcome::Unknown(error)
        } else {
            InviteOutcome::NotDone(error)
        }
    }
}

/// An invite API, as one endpoint reaches it. Object-safe: the controller holds
/// `Arc<dyn InviteApi>`.
#[async_trait::async_trait]
pub trait InviteApi: Send + Sync + std::fmt::Debug {
    /// The flavour of API this client speaks.
    fn flavor(&self) -> ApiFlavor;

    /// How long an invitation of this API stays valid.
    fn invitation_lifetime(&self) -> SignedDuration;

    /// The timeout of one request: how long an unanswered invite request may still act.
    fn request_timeout(&self) -> Duration;

    /// Invite requests with equal keys may go out in one call (OrgInvitation: one request
    /// carries one set of roles for all its usernames).
    fn batch_key(&self, _payload: &InvitePayload) -> String {
        String::new()
    }

    /// How many addresses one invite call may carry.
    fn max_batch(&self) -> usize {
        200
    }

    /// Whether an invited user's identifier is read back after the outcome is written: the
    /// invite answer does not say it, so the address stands in until a lookup does (it may
    /// differ, as `local+customer@domain` on multi-tenant UserInvite clusters).
    fn reads_back_identifiers(&self) -> bool {
        false
    }

    /// Checks that the credentials work without changing anything.
    async fn verify_credentials(&self) -> Result<(), ApiError>;

    /// The budget the last lookup went past, if it did (cleared by a lookup within them).
    fn limit_exceeded(&self) -> Option<String> {
        None
    }

    /// Looks the addresses up, in as few calls as the API allows. Every address asked for is
    /// in the answer (keyed by its email).
    async fn look_up(&self, lookups: &[Lookup]) -> Result<BTreeMap<String, Observed>, ApiError>;

    /// Invites the addresses, in as few calls as the API allows, isolating the ones the API
    /// refuses. Every address gets an outcome. No request leaves after `send_by`.
    async fn invite(
        &self,
        requests: &[InviteRequest],
        send_by: Instant,
    ) -> BTreeMap<String, InviteOutcome>;

    /// Invites like [`InviteApi::invite`] for a resource whose intent is not recorded yet.
    /// The client either records it in the intent journal (a coalesced batch of several
    /// resources), or asks the caller through `ask` to record it itself (as `Inviting` in
    /// its status) and sends only once the caller answered `true`. Nothing is sent before the
    /// intent is durable; an address whose intent could not be recorded is `NotDone`.
    async fn invite_with_intent(
        &self,
        requests: &[InviteRequest],
        send_by: Instant,
        _intent: intent::BatchIntent,
        ask: intent::Ask,
    ) -> BTreeMap<String, InviteOutcome> {
        if intent::ask_caller(ask).await {
            self.invite(requests, send_by).await
        } else {
            intent::not_sent(requests)
        }
    }

    /// Brings an existing user's grants from `actual` to `target` (accessPolicy Enforce).
    /// Returns a description of each change made; APIs without such operations make none.
    async fn enforce(
        &self,
        identifier: &str,
        target: &UserGrants,
        actual: &UserGrants,
    ) -> Result<Vec<String>, ApiError>;

    /// Removes what a resource created for one user (deletionPolicy Delete): deletes the user
    /// (UserInvite) or revokes the pending invitation (OrgInvitation). Something already gone
    /// counts as removed. Returns what was done, or `None` when there was nothing to do.
    async fn remove(
        &self,
        email: &str,
        identifier: Option<&str>,
    ) -> Result<Option<String>, ApiError>;
}

/// A shared client of one endpoint.
pub type SharedApi = Arc<dyn InviteApi>;

/// Why a client cannot be built from an endpoint's settings.
#[derive(thiserror::Error, Debug, Clone, PartialEq, Eq)]
pub enum ConnectError {
    /// The HTTP transport cannot be built.
    #[error(transparent)]
    Transport(#[from] TransportError),
    /// A setting the flavour needs is missing or wrong.
    #[error("{0}")]
    Setting(String),
    /// A URL of the endpoint cannot name an API.
    #[error(transparent)]
    Url(#[from] identity::InvalidUrl),
}

/// Builds the client of an endpoint: the registry of API flavours.
pub fn connect(
    connection: &EndpointConnection,
    token: ApiToken,
    transport: Transport,
) -> Result<SharedApi, ConnectError> {
    let url = identity::canonical_url(&connection.url)?;
    match connection.api {
        ApiFlavor::UserInvite => Ok(Arc::new(userinvite::connect(&url, token, transport))),
        ApiFlavor::OrgInvitation => Ok(Arc::new(orginvitation::connect(
            &url, connection, token, transport,
        )?)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_address_matches_only_its_own_identifier_or_email_ignoring_case() {
        let alice = Lookup::email("alice@x.com");
        assert!(alice.matches("alice@x.com"));
        assert!(alice.matches("Alice@X.com"));
        // Two people, never one.
        assert!(!alice.matches("alice+ops@x.com"));
        assert!(!alice.matches("ops+alice@x.com"));
        assert!(!alice.matches("alice@x.com.evil"));
        assert!(!alice.matches("alice"));
        let known = Lookup {
            email: "alice@x.com".into(),
            identifier: Some("alice+acme@x.com".into()),
        };
        assert!(known.matches("ALICE+ACME@x.com"));
        assert!(!known.matches("alice+ops@x.com"));
    }
}
