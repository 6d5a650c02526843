//! Invitations in as few calls as possible, each refused username isolated: a refusal names
//! nobody, so a refused batch is halved until each refused username is found, after two
//! probes that tell shared roles at fault from a bad username.

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

    /// Invites `usernames`, isolating refused ones. A refusal names nobody, so the batch is
    /// halved until each refused username is found; but first two usernames of a refused batch
    /// are tried alone: when both are refused with the batch's own message, the shared roles
    /// are at fault and every username is refused without more calls.
    pub(super) async fn invite_isolating(
        &self,
        payload: &OrgInvitationRequest,
        usernames: Vec<String>,
        send_by: Instant,
    ) -> BTreeMap<String, InviteOutcome> {
        let mut outcomes = BTreeMap::new();
        let mut sent = Vec::new();
        let mut pending = vec![usernames];
        let mut probed = false;
        while let Some(batch) = pending.pop() {
            match self.post_invitation(payload, &batch, send_by).await {
                Ok(Posted::Sent) => sent.extend(batch),
                Ok(Posted::Refused(message)) if batch.len() == 1 => {
                    outcomes.insert(batch[0].clone(), InviteOutcome::Rejected { message });
                }
                Ok(Posted::Refused(message)) if !probed => {
                    probed = true;
                    let rest = self
                        .probe(payload, batch, &message, send_by, &mut outcomes, &mut sent)
                        .await;
                    if !rest.is_empty() {
                        let (a, b) = rest.split_at(rest.len().div_ceil(2));
                        pending.extend([b.to_vec(), a.to_vec()]);
                    }
                }
                Ok(Posted::Refused(_)) => {
                    let (a, b) = batch.split_at(batch.len().div_ceil(2));
                    pending.extend([b.to_vec(), a.to_vec()]);
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

    /// Tries the first and the last username of a refused batch alone. Returns the usernames
    /// still to decide (none when both probes were refused like the batch: the roles are at
    /// fault).
    async fn probe(
        &self,
        payload: &OrgInvitationRequest,
        batch: Vec<String>,
        batch_message: &str,
        send_by: Instant,
        outcomes: &mut BTreeMap<String, InviteOutcome>,
        sent: &mut Vec<String>,
    ) -> Vec<String> {
        let probes = [batch[0].clone(), batch[batch.len() - 1].clone()];
        let mut same_refusals = 0;
        for username in &probes {
            match self
                .post_invitation(payload, std::slice::from_ref(username), send_by)
                .await
            {
                Ok(Posted::Sent) => sent.push(username.clone()),
                Ok(Posted::Refused(message)) => {
                    same_refusals += usize::from(message == batch_message);
                    outcomes.insert(username.clone(), InviteOutcome::Rejected { message });
                }
                Err(error) => {
                    // Nothing more is sent: the others were not, so they are retried.
                    outcomes.insert(username.clone(), InviteOutcome::of_error(error.clone()));
                    for other in batch.iter().filter(|u| !probes.contains(u)) {
                        outcomes.insert(other.clone(), InviteOutcome::NotDone(error.clone()));
                    }
                    return Vec::new();
                }
            }
        }
        let rest: Vec<String> = batch.into_iter().filter(|u| !probes.contains(u)).collect();
        if same_refusals == probes.len() {
            for username in rest {
                outcomes.insert(
                    username,
                    InviteOutcome::Rejected {
                        message: batch_message.to_string(),
                    },
                );
            }
            return Vec::new();
        }
        rest
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
