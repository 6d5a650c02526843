//! The invite APIs: one trait, [`InviteApi`], and a client per API flavour.
//!
//! Clients speak per email address: they report what the API knows about each address
//! ([`Observed`]) and invite a batch of addresses from a `UserInvitation`'s spec
//! ([`InviteResult`] per address). Whole-request failures are [`ApiError`]s classified as
//! transient, configuration or permanent.

pub mod decode;
mod error;
pub mod orginvitation;
pub mod transport;
pub mod userinvite;

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};

pub use error::{ApiError, ErrorCategory};
pub use orginvitation::OrgInvitationClient;
pub use transport::{Transport, TransportSettings};
pub use userinvite::UserInviteClient;

use crate::api::{ApiFlavor, UserInvitationSpec};

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
        expires_at: Option<DateTime<Utc>>,
        /// When it was sent.
        invited_at: Option<DateTime<Utc>>,
    },
    /// The newest invitation was revoked and the user is not a member (OrgInvitation).
    RevokedInvitation {
        /// Invitation reference.
        reference: String,
    },
}

/// The outcome of inviting one address.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum InviteResult {
    /// The invitation was sent.
    Invited {
        /// The API's identifier of the user or invitation.
        identifier: String,
        /// When the invitation expires, if the API says.
        expires_at: Option<DateTime<Utc>>,
        /// A warning the API returned (e.g. ignored user groups).
        warning: Option<String>,
    },
    /// The user already existed; no invitation was sent.
    AlreadyMember {
        /// The API's identifier of the user.
        identifier: String,
    },
    /// The API refused this user.
    Rejected {
        /// The API's message.
        message: String,
    },
}

/// An invite API.
pub trait InviteApi {
    /// The flavour of API this client speaks.
    fn flavor(&self) -> ApiFlavor;

    /// How long an invitation of this API stays valid.
    fn invitation_lifetime(&self) -> chrono::Duration;

    /// Looks the addresses up. Every address asked for is in the answer.
    fn observe(
        &self,
        emails: &[String],
    ) -> impl Future<Output = Result<BTreeMap<String, Observed>, ApiError>> + Send;

    /// Invites the given addresses, with what `spec` requests for them, in as few calls as the
    /// API allows. Per-address refusals are [`InviteResult::Rejected`]; an error means nothing
    /// is known about the addresses without a result, except [`ApiError::NotSent`]: nothing was
    /// sent. No invite request leaves after `send_by`.
    fn invite(
        &self,
        spec: &UserInvitationSpec,
        emails: &[String],
        send_by: std::time::Instant,
    ) -> impl Future<Output = Result<BTreeMap<String, InviteResult>, ApiError>> + Send;

    /// Brings an existing user's grants from `actual` to `desired` (accessPolicy Enforce).
    /// Returns a description of each change made; APIs without such operations make none.
    fn enforce(
        &self,
        identifier: &str,
        desired: &UserGrants,
        actual: &UserGrants,
    ) -> impl Future<Output = Result<Vec<String>, ApiError>> + Send;

    /// Removes what a resource created for one user (deletionPolicy Delete): deletes the user
    /// (UserInvite) or revokes the pending invitation (OrgInvitation). Something already gone
    /// counts as removed. Returns what was done, or `None` when there was nothing to do.
    fn remove(
        &self,
        email: &str,
        identifier: Option<&str>,
    ) -> impl Future<Output = Result<Option<String>, ApiError>> + Send;
}

/// A client for either API flavour.
#[derive(Clone, Debug)]
pub enum InviteClient {
    /// Invite Users API.
    UserInvite(UserInviteClient),
    /// Organization invitations API.
    OrgInvitation(OrgInvitationClient),
}

impl InviteClient {
    /// The timeout of one request to this endpoint.
    pub fn request_timeout(&self) -> std::time::Duration {
        match self {
            InviteClient::UserInvite(c) => c.transport().timeout(),
            InviteClient::OrgInvitation(c) => c.transport().timeout(),
        }
    }

    /// Checks that the credentials work without changing anything: the OrgInvitation API
    /// exchanges the API token (or reuses a valid cached access token); the UserInvite API has
    /// no side-effect-free check, so nothing is called.
    pub async fn verify_credentials(&self) -> Result<(), ApiError> {
        match self {
            InviteClient::UserInvite(_) => Ok(()),
            InviteClient::OrgInvitation(c) => c.verify_credentials().await,
        }
    }
}

impl InviteApi for InviteClient {
    fn flavor(&self) -> ApiFlavor {
        match self {
            InviteClient::UserInvite(c) => c.flavor(),
            InviteClient::OrgInvitation(c) => c.flavor(),
        }
    }

    fn invitation_lifetime(&self) -> chrono::Duration {
        match self {
            InviteClient::UserInvite(c) => c.invitation_lifetime(),
            InviteClient::OrgInvitation(c) => c.invitation_lifetime(),
        }
    }

    async fn observe(&self, emails: &[String]) -> Result<BTreeMap<String, Observed>, ApiError> {
        match self {
            InviteClient::UserInvite(c) => c.observe(emails).await,
            InviteClient::OrgInvitation(c) => c.observe(emails).await,
        }
    }

    async fn invite(
        &self,
        spec: &UserInvitationSpec,
        emails: &[String],
        send_by: std::time::Instant,
    ) -> Result<BTreeMap<String, InviteResult>, ApiError> {
        match self {
            InviteClient::UserInvite(c) => c.invite(spec, emails, send_by).await,
            InviteClient::OrgInvitation(c) => c.invite(spec, emails, send_by).await,
        }
    }

    async fn enforce(
        &self,
        identifier: &str,
        desired: &UserGrants,
        actual: &UserGrants,
    ) -> Result<Vec<String>, ApiError> {
        match self {
            InviteClient::UserInvite(c) => c.enforce(identifier, desired, actual).await,
            InviteClient::OrgInvitation(c) => c.enforce(identifier, desired, actual).await,
        }
    }

    async fn remove(
        &self,
        email: &str,
        identifier: Option<&str>,
    ) -> Result<Option<String>, ApiError> {
        match self {
            InviteClient::UserInvite(c) => c.remove(email, identifier).await,
            InviteClient::OrgInvitation(c) => c.remove(email, identifier).await,
        }
    }
}
