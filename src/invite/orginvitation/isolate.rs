//! Invitations in as few calls as possible, each refused username isolated: a refusal that
//! names no username is halved until each refused username was posted alone, after checking
//! that the refused call invited nobody.

use std::collections::BTreeMap;

use reqwest::Method;
use serde_json::json;
use tokio::time::Instant;

use super::{
    OrgInvitationClient,
    snapshot::{observe_all, observe_one},
};
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
            .call("invite users", Some(Some(send_by)), |t| {
                self.request(Method::POST, &path, t).json(&body)
            })
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

    /// Invites `usernames` (each with the index of the resource asking), isolating refused
    /// ones. A refused batch is first checked for usernames invited anyway (never posted
    /// again); usernames the refusal names are refused and the others posted again. Otherwise
    /// the first and the last username of each resource are tried alone: when both are
    /// refused with the batch's own message, the resource's shared roles are at fault and its
    /// other usernames are refused without more calls; the rest is halved until each refused
    /// username was posted alone. A username is never refused because of another resource's.
    pub(super) async fn invite_isolating(
        &self,
        payload: &OrgInvitationRequest,
        usernames: Vec<(String, usize)>,
        send_by: Instant,
    ) -> BTreeMap<String, InviteOutcome> {
        let mut outcomes = BTreeMap::new();
        let mut sent = Vec::new();
        let mut probed = std::collections::BTreeSet::new();
        let mut pending = vec![usernames];
        while let Some(batch) = pending.pop() {
            let names: Vec<String> = batch.iter().map(|(u, _)| u.clone()).collect();
            match self.post_invitation(payload, &names, send_by).await {
                Ok(Posted::Sent) => sent.extend(names),
                Ok(Posted::Refused(message)) if batch.len() == 1 => {
                    outcomes.insert(names[0].clone(), InviteOutcome::Rejected { message });
                }
                Ok(Posted::Refused(message)) => {
                    let rest = match self.invited_anyway(&names, &mut outcomes).await {
                        Ok(rest) => rest,
                        Err(error) => {
                            // The refusal proves nothing was sent; the usernames are retried.
                            for username in names {
                                outcomes.insert(username, InviteOutcome::NotDone(error.clone()));
                            }
                            continue;
                        }
                    };
                    let rest: Vec<(String, usize)> = batch
                        .into_iter()
                        .filter(|(u, _)| rest.contains(u))
                        .collect();
                    let (named, others): (Vec<_>, Vec<_>) = rest
                        .into_iter()
                        .partition(|(u, _)| names_address(&message, u));
                    for (username, _) in &named {
                        let message = message.clone();
                        outcomes.insert(username.clone(), InviteOutcome::Rejected { message });
                    }
                    if !named.is_empty() {
                        pending.push(others);
                        continue;
                    }
                    let ctx = Refusal {
                        payload,
                        message: &message,
                        send_by,
                    };
                    for group in self
                        .probe_resources(&ctx, others, &mut probed, &mut outcomes, &mut sent)
                        .await
                    {
                        let (a, b) = group.split_at(group.len().div_ceil(2));
                        pending.extend([b.to_vec(), a.to_vec()]);
                    }
                }
                Err(error) => {
                    for username in names {
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

    /// Tries the first and the last username of each resource not probed yet alone. When
    /// both are refused with the batch's message, the resource's other usernames are refused
    /// too. Returns what is still undecided, per resource.
    async fn probe_resources(
        &self,
        refusal: &Refusal<'_>,
        batch: Vec<(String, usize)>,
        probed: &mut std::collections::BTreeSet<usize>,
        outcomes: &mut BTreeMap<String, InviteOutcome>,
        sent: &mut Vec<String>,
    ) -> Vec<Vec<(String, usize)>> {
        let mut groups: Vec<Vec<(String, usize)>> = Vec::new();
        for entry in batch {
            match groups.iter_mut().find(|g| g[0].1 == entry.1) {
                Some(group) => group.push(entry),
                None => groups.push(vec![entry]),
            }
        }
        let mut undecided = Vec::new();
        for group in groups {
            if group.len() < 2 || !probed.insert(group[0].1) {
                undecided.push(group);
                continue;
            }
            let probes = [group[0].0.clone(), group[group.len() - 1].0.clone()];
            let mut same = 0;
            for username in &probes {
                match self
                    .post_invitation(
                        refusal.payload,
                        std::slice::from_ref(username),
                        refusal.send_by,
                    )
                    .await
                {
                    Ok(Posted::Sent) => sent.push(username.clone()),
                    Ok(Posted::Refused(message)) => {
                        same += usize::from(message == refusal.message);
                        outcomes.insert(username.clone(), InviteOutcome::Rejected { message });
                    }
                    Err(error) => {
                        // Nothing more is sent for this resource: its others are retried.
                        outcomes.insert(username.clone(), InviteOutcome::of_error(error.clone()));
                        for (other, _) in group.iter().filter(|(u, _)| !probes.contains(u)) {
                            outcomes.insert(other.clone(), InviteOutcome::NotDone(error.clone()));
                        }
                        same = usize::MAX;
                        break;
                    }
                }
            }
            let rest: Vec<(String, usize)> = group
                .into_iter()
                .filter(|(u, _)| !probes.contains(u))
                .collect();
            if same == usize::MAX || rest.is_empty() {
                continue;
            }
            if same == probes.len() {
                for (username, _) in rest {
                    let message = refusal.message.to_string();
                    outcomes.insert(username, InviteOutcome::Rejected { message });
                }
            } else {
                undecided.push(rest);
            }
        }
        undecided
    }

    /// After a refused call: the usernames that have a live invitation (or membership) now
    /// were invited anyway, by this call or meanwhile; they are recorded and never posted
    /// again. Returns the others. (The planner invites nobody who had either before.)
    /// Invitations are read after the refusal; membership is as kept (an invitation changes
    /// no membership).
    async fn invited_anyway(
        &self,
        batch: &[String],
        outcomes: &mut BTreeMap<String, InviteOutcome>,
    ) -> Result<Vec<String>, ApiError> {
        let invitations = self.invitations_since(Instant::now()).await?;
        let members = self.cached_membership(batch);
        let now = jiff::Timestamp::now();
        let mut rest = Vec::new();
        for (username, observed) in observe_all(batch, &members, &invitations) {
            match observed {
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
                    outcomes.insert(username, outcome);
                }
                Observed::Member { identifier, .. } => {
                    let outcome = InviteOutcome::Invited {
                        identifier,
                        expires_at: None,
                        warning: Some("a member of the organization now".into()),
                    };
                    outcomes.insert(username, outcome);
                }
                _ => rest.push(username),
            }
        }
        Ok(rest)
    }

    /// The call answers 202 with no body: the invitations are read back (once, after every
    /// call) for their references. Membership is not read again.
    async fn read_back(&self, sent: &[String], outcomes: &mut BTreeMap<String, InviteOutcome>) {
        let invitations = self.invitations_since(Instant::now()).await.ok();
        let members = self.cached_membership(sent);
        for username in sent {
            let observed = invitations.as_deref().map(|list| {
                let member = members.get(username).and_then(|m| m.as_deref());
                observe_one(username, member, list)
            });
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

/// A refused batch: what it asked, its answer and its send deadline.
struct Refusal<'a> {
    payload: &'a OrgInvitationRequest,
    message: &'a str,
    send_by: Instant,
}

/// Whether a refusal's `message` names `address` (ignoring case) as a whole address, not
/// inside a longer one.
fn names_address(message: &str, address: &str) -> bool {
    names(&message.to_ascii_lowercase(), &address.to_ascii_lowercase())
}

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
        use super::names_address;
        assert!(names_address("Invalid username: A@X.com.", "a@x.com"));
        assert!(!names_address("Invalid username: A@X.com.", "b@x.com"));
        assert!(!names_address(
            "unknown user xa@x.com and ab@x.com",
            "a@x.com"
        ));
        assert!(names_address(
            "unknown user xa@x.com and ab@x.com",
            "ab@x.com"
        ));
        assert!(!names_address("unknown user ab@x.com", "b@x.com"));
        assert!(!names_address("Role not found", "a@x.com"));
    }
}
