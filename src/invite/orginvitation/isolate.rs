//! Invitations in as few calls as possible, each refused username isolated: a refusal that
//! names no username is halved until each refused username was posted alone, after checking
//! that the refused call invited nobody.

use std::collections::BTreeMap;

use reqwest::Method;
use serde_json::json;
use tokio::time::Instant;

use super::{OrgInvitationClient, snapshot::observe_one};
use crate::{
    api::OrgInvitationRequest,
    invite::{ApiError, InviteOutcome, Observed},
};

/// What one invite call answered.
enum Posted {
    Sent,
    Refused(String),
}

impl OrgInvitationClient {
    /// One invite call for `usernames` with `payload`'s roles.
    async fn post_invitation(
        &self,
        payload: &OrgInvitationRequest,
        usernames: &[String],
        send_by: Instant,
    ) -> Result<Posted, ApiError> {
        let mut body = serde_json::to_value(payload).map_err(|e| ApiError::Decode {
            operation: "invite users",
            message: e.to_string(),
        })?;
        body["usernames"] = json!(usernames);
        let path = format!("{}/invitations", self.org_path());
        let result = self
            .changing(self.call("invite users", Some(Some(send_by)), |t| {
                self.request(Method::POST, &path, t).json(&body)
            }))
            .await;
        match result {
            Ok(answer) => match crate::invite::decode::untrusted_success(&answer.body) {
                // A 2xx that is not JSON or carries an error: whether the API acted is unknown.
                Some(message) => Err(ApiError::Decode {
                    operation: "invite users",
                    message,
                }),
                None => Ok(Posted::Sent),
            },
            Err(ApiError::Rejected { message, .. }) => Ok(Posted::Refused(message)),
            Err(e) => Err(e),
        }
    }

    /// Invites `usernames`, isolating refused ones. A refused batch is first checked for
    /// usernames invited anyway (never posted again); usernames the refusal names are
    /// refused and the others posted again; otherwise the batch is halved until each refused
    /// username was posted alone. A username is refused only by an answer to a call that
    /// carried it alone, or that names it.
    pub(super) async fn invite_isolating(
        &self,
        payload: &OrgInvitationRequest,
        usernames: Vec<String>,
        send_by: Instant,
    ) -> BTreeMap<String, InviteOutcome> {
        let mut outcomes = BTreeMap::new();
        let mut sent = Vec::new();
        let mut pending = vec![usernames];
        while let Some(batch) = pending.pop() {
            match self.post_invitation(payload, &batch, send_by).await {
                Ok(Posted::Sent) => sent.extend(batch),
                Ok(Posted::Refused(message)) if batch.len() == 1 => {
                    outcomes.insert(batch[0].clone(), InviteOutcome::Rejected { message });
                }
                Ok(Posted::Refused(message)) => {
                    let rest = match self.invited_anyway(&batch, &mut outcomes).await {
                        Ok(rest) => rest,
                        Err(error) => {
                            // The refusal proves nothing was sent; the usernames are retried.
                            for username in batch {
                                outcomes.insert(username, InviteOutcome::NotDone(error.clone()));
                            }
                            continue;
                        }
                    };
                    let (named, others) = named_in(&message, rest);
                    for username in &named {
                        let message = message.clone();
                        outcomes.insert(username.clone(), InviteOutcome::Rejected { message });
                    }
                    if !named.is_empty() {
                        pending.push(others);
                    } else if !others.is_empty() {
                        let (a, b) = others.split_at(others.len().div_ceil(2));
                        pending.extend([b.to_vec(), a.to_vec()]);
                    }
                }
                Err(error) => {
                    for username in batch {
                        outcomes.insert(username, InviteOutcome::of_error(error.clone()));
                    }
                }
            }
        }
        if !sent.is_empty() {
            self.read_back(&sent, &mut outcomes).await;
        }
        outcomes
    }

    /// After a refused call: the usernames that have a live invitation (or membership) now
    /// were invited anyway, by this call or meanwhile; they are recorded and never posted
    /// again. Returns the others. (The planner invites nobody who had either before.)
    async fn invited_anyway(
        &self,
        batch: &[String],
        outcomes: &mut BTreeMap<String, InviteOutcome>,
    ) -> Result<Vec<String>, ApiError> {
        let snapshot = self.snapshot().await?;
        let now = jiff::Timestamp::now();
        let mut rest = Vec::new();
        for username in batch {
            match observe_one(username, &snapshot) {
                Observed::PendingInvitation {
                    reference,
                    expires_at,
                    ..
                } if expires_at.is_none_or(|t| t > now) => {
                    let outcome = InviteOutcome::Invited {
                        identifier: reference,
                        expires_at,
                        warning: None,
                    };
                    outcomes.insert(username.clone(), outcome);
                }
                Observed::Member { identifier, .. } => {
                    let outcome = InviteOutcome::Invited {
                        identifier,
                        expires_at: None,
                        warning: Some("a member of the organization now".into()),
                    };
                    outcomes.insert(username.clone(), outcome);
                }
                _ => rest.push(username.clone()),
            }
        }
        Ok(rest)
    }

    /// The call answers 202 with no body: read the invitations back for their references.
    async fn read_back(&self, sent: &[String], outcomes: &mut BTreeMap<String, InviteOutcome>) {
        let snapshot = self.snapshot().await.ok();
        for username in sent {
            let observed = snapshot.as_deref().map(|s| observe_one(username, s));
            let outcome = match observed {
                Some(Observed::PendingInvitation {
                    reference,
                    expires_at,
                    ..
                }) => InviteOutcome::Invited {
                    identifier: reference,
                    expires_at,
                    warning: None,
                },
                Some(Observed::Member { identifier, .. }) => InviteOutcome::Invited {
                    identifier,
                    expires_at: None,
                    warning: Some("added to the organization directly".into()),
                },
                _ => InviteOutcome::Invited {
                    identifier: username.clone(),
                    expires_at: None,
                    warning: Some("the invitation is not listed yet".into()),
                },
            };
            outcomes.insert(username.clone(), outcome);
        }
    }
}

/// The usernames of `batch` that a refusal's message names (ignoring case), and the others.
fn named_in(message: &str, batch: Vec<String>) -> (Vec<String>, Vec<String>) {
    let message = message.to_ascii_lowercase();
    batch
        .into_iter()
        .partition(|username| names(&message, &username.to_ascii_lowercase()))
}

/// Whether `message` contains `address` as a whole address (not inside a longer one).
fn names(message: &str, address: &str) -> bool {
    let part_of_address = |c: char| c.is_ascii_alphanumeric() || "._%+-@".contains(c);
    message.match_indices(address).any(|(at, _)| {
        let before = message[..at].chars().next_back();
        let after = message[at + address.len()..].chars().next();
        !before.is_some_and(part_of_address)
            && !after.is_some_and(|c| part_of_address(c) && c != '.')
    })
}

#[cfg(test)]
mod tests {
    #[test]
    fn only_usernames_a_refusal_names_are_named() {
        let batch = vec!["a@x.com".to_string(), "b@x.com".into(), "ab@x.com".into()];
        let (named, others) = super::named_in("Invalid username: A@X.com.", batch.clone());
        assert_eq!(named, vec!["a@x.com"]);
        assert_eq!(others, vec!["b@x.com", "ab@x.com"]);
        let (named, _) = super::named_in("unknown user xa@x.com and ab@x.com", batch.clone());
        assert_eq!(named, vec!["ab@x.com"]);
        let (named, others) = super::named_in("Role not found", batch.clone());
        assert!(named.is_empty());
        assert_eq!(others, batch);
    }
}
