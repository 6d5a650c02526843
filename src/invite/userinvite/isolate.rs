//! Invitations in as few calls as possible, each refused user isolated: a refusal names
//! nobody, so a refused batch is halved until each refused user is found (after checking
//! that the refused call created nobody).

use std::collections::{BTreeMap, BTreeSet};

use reqwest::Method;
use serde_json::Value;
use tokio::time::Instant;

use super::{UserInviteClient, invite_body, looks_like_already_exists, normalized};
use crate::{
    api::UserToCreate,
    invite::{ApiError, InviteApi, InviteOutcome, Lookup, Observed, decode},
};

/// What one invite call answered.
enum Posted {
    /// Accepted, with the API's warning if any.
    Sent(Option<String>),
    /// Refused because of the request's content, with the API's message.
    Refused(String),
}

impl UserInviteClient {
    /// One invite call for `users`.
    async fn post_invite(
        &self,
        users: &[&UserToCreate],
        send_by: Instant,
    ) -> Result<Posted, ApiError> {
        let body: Vec<Value> = users.iter().map(|u| invite_body(u)).collect();
        let request = self
            .request(Method::POST, "/api/v2/user/invite")
            .json(&body);
        match self
            .transport
            .send_mutation("invite users", request, Some(send_by))
            .await
        {
            Ok(answer) => {
                if let Some(error) = decode::untrusted_success(&answer.body) {
                    // A 2xx that is not JSON or says ERROR: nothing to trust (the API may or
                    // may not have acted); the users are looked up once it settled.
                    return Err(ApiError::Decode {
                        operation: "invite users",
                        message: error,
                    });
                }
                let value = serde_json::from_slice::<Value>(&answer.body).ok();
                Ok(Posted::Sent(
                    value.as_ref().and_then(decode::wrapper_warning),
                ))
            }
            Err(ApiError::Rejected { status, .. }) if matches!(status, 404 | 405) => {
                Err(ApiError::Configuration {
                    operation: "invite users",
                    status,
                    message: format!(
                        "{}/api/v2/user/invite: check the endpoint's url",
                        self.base_url
                    ),
                })
            }
            Err(ApiError::Rejected { message, .. }) => Ok(Posted::Refused(message)),
            Err(other) => Err(other),
        }
    }

    /// Invites `batch`, isolating refused users by halving the batch: a refusal names no
    /// user, so each half gets its own verdict (after checking that the refused call created
    /// nobody).
    pub(super) async fn invite_isolating(
        &self,
        batch: Vec<&UserToCreate>,
        resends: &BTreeSet<String>,
        send_by: Instant,
        outcomes: &mut BTreeMap<String, InviteOutcome>,
    ) {
        let mut pending = vec![batch];
        while let Some(batch) = pending.pop() {
            let emails: Vec<String> = batch.iter().map(|u| normalized(&u.email_address)).collect();
            match self.post_invite(&batch, send_by).await {
                Ok(Posted::Sent(warning)) => record_invited(&emails, warning, outcomes),
                Ok(Posted::Refused(message)) if batch.len() == 1 => {
                    outcomes.insert(emails[0].clone(), self.refused(&emails[0], message).await);
                }
                Ok(Posted::Refused(_)) => {
                    let rest = match self.created_anyway(&batch, resends, outcomes).await {
                        Ok(rest) => rest,
                        Err(error) => {
                            // The refusal proves nothing was created; the users are retried.
                            for email in emails {
                                outcomes.insert(email, InviteOutcome::NotDone(error.clone()));
                            }
                            continue;
                        }
                    };
                    if !rest.is_empty() {
                        let (a, b) = rest.split_at(rest.len().div_ceil(2));
                        pending.push(b.to_vec());
                        pending.push(a.to_vec());
                    }
                }
                Err(error) => {
                    for email in emails {
                        outcomes.insert(email, InviteOutcome::of_error(error.clone()));
                    }
                }
            }
        }
    }

    /// After a refused call: the users it created anyway are recorded as invited; returns the
    /// others. A re-send (`resends`: the user existed before the call) found afterwards proves
    /// nothing, so it is never recorded as sent here: it stays among the others.
    async fn created_anyway<'a>(
        &self,
        batch: &[&'a UserToCreate],
        resends: &BTreeSet<String>,
        outcomes: &mut BTreeMap<String, InviteOutcome>,
    ) -> Result<Vec<&'a UserToCreate>, ApiError> {
        let lookups: Vec<Lookup> = batch
            .iter()
            .map(|u| Lookup::email(normalized(&u.email_address)))
            .collect();
        let now = self.look_up(&lookups).await?;
        let mut rest = Vec::new();
        for user in batch {
            let email = normalized(&user.email_address);
            match now.get(&email) {
                Some(Observed::Member { identifier, .. }) if !resends.contains(&email) => {
                    outcomes.insert(
                        email,
                        InviteOutcome::Invited {
                            identifier: identifier.clone(),
                            expires_at: None,
                            warning: None,
                        },
                    );
                }
                _ => rest.push(*user),
            }
        }
        Ok(rest)
    }

    /// The verdict for one refused user: `AlreadyMember` when the user turns out to exist,
    /// otherwise `Rejected` with the API's message.
    async fn refused(&self, email: &str, message: String) -> InviteOutcome {
        if looks_like_already_exists(&message) {
            return match self.get_user(email).await {
                Ok(user) => InviteOutcome::AlreadyMember {
                    identifier: user.map_or_else(|| email.to_string(), |u| u.identifier),
                },
                Err(error) => InviteOutcome::Unknown(error),
            };
        }
        InviteOutcome::Rejected { message }
    }
}

/// After a successful invite call, each address stands in for its identifier: the invite
/// answer names at most one user, and the pass reads the identifiers back once the outcome is
/// written ([`crate::invite::InviteApi::reads_back_identifiers`]), so that the person waiting
/// on Ready does not wait for that lookup too.
fn record_invited(
    emails: &[String],
    warning: Option<String>,
    outcomes: &mut BTreeMap<String, InviteOutcome>,
) {
    for email in emails {
        outcomes.insert(
            email.clone(),
            InviteOutcome::Invited {
                identifier: email.clone(),
                expires_at: None,
                warning: warning.clone(),
            },
        );
    }
}
