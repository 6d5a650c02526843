//! One pass over a resource whose endpoint and credentials resolved, in phases: look up →
//! decide (pure) → invite, its intent recorded first → enforce → remove → finish. The status
//! is written only when it changes. No invite call leaves before its intent is durable: in
//! the intent journal (the client records a coalesced batch of several resources there), or
//! as `Inviting` in the status, written when the client asks for it.

use std::{collections::BTreeMap, sync::Arc};

use tokio::{sync::oneshot, time::Instant};

use super::{
    Change, Holders, StatusWriter, SyncReport, WriteError,
    plan::{self, PlanContext, ReadyReason},
};
use crate::{
    api::{ApiFlavor, UserInvitationStatus, UserState, UserStatus},
    invite::{
        ApiError, ErrorCategory, InviteApi, InviteOutcome, InvitePayload, InviteRequest, Lookup,
        Observed,
        intent::{Asked, BatchIntent},
    },
};

/// The state of one pass.
struct Pass<'c, 'a> {
    ctx: &'c PlanContext<'a>,
    /// Entries of the requested (and invalid) users.
    users: Vec<UserStatus>,
    /// Entries of users no longer requested that stay (removals owed, requests settling).
    kept: Vec<UserStatus>,
    /// The status as last written.
    written: UserInvitationStatus,
    /// A blocker found on the way (the endpoint refused us).
    blocked: Option<ReadyReason>,
    /// The planned status holds intents from the intent journal that the stored status may
    /// lack: the next status write is due even when nothing else changed.
    overlay_unwritten: bool,
    report: SyncReport,
}

/// Brings the API and the status in line with the spec. `holders` is asked right before
/// each change only an owner may make.
pub async fn sync<W: StatusWriter>(
    api: &dyn InviteApi,
    ctx: &PlanContext<'_>,
    holders: &dyn Holders,
    writer: &mut W,
) -> Result<SyncReport, WriteError> {
    let mut pass = Pass {
        ctx,
        users: Vec::new(),
        kept: plan::kept_entries(ctx.requested, ctx.spec, ctx.previous, ctx.now),
        written: ctx.previous.clone(),
        blocked: None,
        overlay_unwritten: !ctx.journaled.is_empty(),
        report: SyncReport::default(),
    };
    let Some(observed) = look_up(&mut pass, api, writer).await? else {
        return Ok(pass.report);
    };
    let decided = plan::decide(ctx, &observed);
    pass.users = decided.users.clone();
    if !decided.to_invite.is_empty() {
        invite(&mut pass, api, writer, &decided).await?;
    }
    enforce(&mut pass, api, holders, &observed).await;
    remove(&mut pass, api, holders).await;
    finish(pass, api, writer).await
}

/// What each address to invite is granted, as the endpoint's flavour takes it; an address
/// the spec gives nothing for is refused here.
fn invite_requests(
    ctx: &PlanContext<'_>,
    decided: &plan::InvitePlan,
) -> (Vec<InviteRequest>, BTreeMap<String, InviteOutcome>) {
    let org = ctx.spec.org_invitation.as_deref().cloned().map(Arc::new);
    let mut requests = Vec::new();
    let mut refused = BTreeMap::new();
    for email in &decided.to_invite {
        let payload = match ctx.facts.endpoint.api {
            ApiFlavor::UserInvite => ctx.spec.user(email).cloned().map(InvitePayload::User),
            ApiFlavor::OrgInvitation => org.clone().map(InvitePayload::Org),
        };
        let Some(payload) = payload else {
            let message = match ctx.facts.endpoint.api {
                ApiFlavor::UserInvite => "the spec lists no such user",
                ApiFlavor::OrgInvitation => "spec.orgInvitation is not set",
            };
            let message = message.to_string();
            refused.insert(email.clone(), InviteOutcome::Rejected { message });
            continue;
        };
        requests.push(InviteRequest {
            email: email.clone(),
            payload,
            resend: decided.resends.contains(email),
        });
    }
    (requests, refused)
}

/// Phase 1: looks up what must be known. A failed lookup ends the pass (showing the problem
/// when it matters).
async fn look_up<W: StatusWriter>(
    pass: &mut Pass<'_, '_>,
    api: &dyn InviteApi,
    writer: &mut W,
) -> Result<Option<BTreeMap<String, Observed>>, WriteError> {
    let lookups = plan::addresses_to_look_up(pass.ctx);
    if lookups.is_empty() {
        return Ok(Some(BTreeMap::new()));
    }
    match api.look_up(&lookups).await {
        Ok(observed) => Ok(Some(observed)),
        Err(error) => {
            if let Some(status) = plan::lookup_failed(pass.ctx, &lookups, &error) {
                write_if_changed(pass, writer, status).await?;
            }
            pass.report.status = pass.written.clone();
            pass.report.problem = Some(error);
            Ok(None)
        }
    }
}

/// Stamps the users about to be invited with `invitedAt` and `settlesAt` (in the planned
/// status only). Returns the send deadline (the requests must leave within one request
/// timeout of the intent) and the intent as the journal records it.
fn stamp_intent(pass: &mut Pass<'_, '_>, api: &dyn InviteApi) -> (Instant, BatchIntent) {
    let stamped = Instant::now();
    // Rounded up to the second it is stored at, so it is never earlier than the real intent.
    let invited_at = plan::to_seconds(jiff::Timestamp::now()) + jiff::SignedDuration::from_secs(1);
    let settles_at = pass.ctx.facts.settle.settles_at(invited_at);
    for user in pass
        .users
        .iter_mut()
        .filter(|u| u.state == UserState::Inviting)
    {
        user.invited_at = Some(invited_at);
        user.settles_at = Some(settles_at);
    }
    let intent = BatchIntent {
        resource: pass.ctx.resource.clone(),
        api: pass.ctx.facts.api.clone(),
        endpoint: pass.ctx.facts.endpoint.clone(),
        invited_at,
        settles_at,
    };
    (stamped + api.request_timeout(), intent)
}

/// Records `Inviting` (with `invitedAt` and `settlesAt`) in the status, when the client asks
/// for it before the call.
async fn write_intent<W: StatusWriter>(
    pass: &mut Pass<'_, '_>,
    writer: &mut W,
) -> Result<(), WriteError> {
    let mut users = pass.users.clone();
    users.extend(pass.kept.iter().cloned());
    let intent = plan::summarize(pass.ctx, users, Some("sending invitations"));
    writer.write(&intent).await?;
    pass.report.writes += 1;
    pass.written = intent;
    pass.overlay_unwritten = false;
    Ok(())
}

/// Runs the invite call, writing the `Inviting` intent to the status if the client asks for
/// it (it does unless it records the intent in the journal). A failed intent write is
/// returned after the call's answer (every request is then `NotDone`: nothing was sent).
async fn call_with_intent<W: StatusWriter>(
    pass: &mut Pass<'_, '_>,
    writer: &mut W,
    call: impl Future<Output = BTreeMap<String, InviteOutcome>>,
    mut asked: Asked,
) -> (BTreeMap<String, InviteOutcome>, Result<(), WriteError>) {
    let mut call = std::pin::pin!(call);
    let mut written = Ok(());
    let mut answered = false;
    loop {
        tokio::select! {
            outcomes = &mut call => return (outcomes, written),
            ack = &mut asked, if !answered => {
                answered = true;
                if let Ok(ack) = ack {
                    written = write_intent(pass, writer).await;
                    let _ = ack.send(written.is_ok());
                }
            }
        }
    }
}

/// Phase 3: one invite call for the resource's new users (coalesced with other resources'
/// by the controller's client), its intent recorded first; each user's outcome decides its
/// state.
async fn invite<W: StatusWriter>(
    pass: &mut Pass<'_, '_>,
    api: &dyn InviteApi,
    writer: &mut W,
    decided: &plan::InvitePlan,
) -> Result<(), WriteError> {
    let (send_by, intent) = stamp_intent(pass, api);
    let (requests, mut outcomes) = invite_requests(pass.ctx, decided);
    let mut written = Ok(());
    if !requests.is_empty() {
        let (ask, asked) = oneshot::channel();
        let call = api.invite_with_intent(&requests, send_by, intent, ask);
        let (answered, intent_written) = call_with_intent(pass, writer, call, asked).await;
        outcomes.extend(answered);
        written = intent_written;
    }
    plan::apply_outcomes(pass.ctx, &mut pass.users, &outcomes);
    let invited: Vec<String> = outcomes
        .iter()
        .filter(|(_, outcome)| matches!(outcome, InviteOutcome::Invited { .. }))
        .map(|(email, _)| email.clone())
        .collect();
    if !invited.is_empty() {
        pass.report.changes.push(Change::Invited(invited));
    }
    for (email, outcome) in &outcomes {
        match outcome {
            InviteOutcome::Invited { .. } => {}
            InviteOutcome::Rejected { message } => pass.report.changes.push(Change::InviteFailed {
                email: email.clone(),
                message: message.clone(),
            }),
            InviteOutcome::NotDone(error) => {
                if error.category() == ErrorCategory::Configuration {
                    pass.blocked = Some(ReadyReason::EndpointNotReady);
                }
                pass.report.problem.get_or_insert_with(|| error.clone());
            }
            InviteOutcome::AlreadyMember { .. } | InviteOutcome::Unknown(_) => {}
        }
    }
    written
}

/// Phase 5 (accessPolicy Enforce): brings owned users' grants to the spec, within `allowed`.
async fn enforce(
    pass: &mut Pass<'_, '_>,
    api: &dyn InviteApi,
    holders: &dyn Holders,
    observed: &BTreeMap<String, Observed>,
) {
    if pass.report.problem.is_some() {
        return;
    }
    for drift in plan::grant_drift(pass.ctx, &pass.users, observed) {
        if let Some(holder) = holders.other_holder(&drift.email) {
            leave_alone(pass, &drift.email, holder);
            continue;
        }
        match api
            .enforce(&drift.identifier, &drift.target, &drift.actual)
            .await
        {
            Ok(changes) if !changes.is_empty() => {
                pass.report.changes.push(Change::Updated {
                    email: drift.email.clone(),
                    changes: changes.join(", "),
                });
            }
            Ok(_) => {}
            Err(error) => {
                if let Some(user) = pass
                    .users
                    .iter_mut()
                    .find(|u| u.email_address == drift.email)
                {
                    user.message = Some(plan::truncate_message(&format!(
                        "could not apply the spec's grants: {error}"
                    )));
                }
                if error.category() != ErrorCategory::Permanent {
                    pass.report.problem = Some(error);
                    return;
                }
            }
        }
    }
}

/// Phase 6 (deletionPolicy Delete): removes what this resource owns for users no longer
/// listed. An entry whose removal fails stays, with the reason.
async fn remove(pass: &mut Pass<'_, '_>, api: &dyn InviteApi, holders: &dyn Holders) {
    for entry in plan::removals(pass.ctx) {
        if pass.report.problem.is_some() {
            return;
        }
        if let Some(holder) = holders.other_holder(&entry.email_address) {
            pass.kept.retain(|k| k.email_address != entry.email_address);
            pass.report.changes.push(Change::LeftAlone {
                email: entry.email_address.clone(),
                holder,
            });
            continue;
        }
        match api
            .remove(&entry.email_address, entry.identifier.as_deref())
            .await
        {
            Ok(done) => {
                pass.kept.retain(|k| k.email_address != entry.email_address);
                pass.report.changes.push(Change::Removed {
                    email: entry.email_address.clone(),
                    done,
                });
            }
            Err(error) => {
                if let Some(kept) = pass
                    .kept
                    .iter_mut()
                    .find(|k| k.email_address == entry.email_address)
                {
                    kept.message =
                        Some(plan::truncate_message(&format!("removal pending: {error}")));
                }
                pass.report.problem = Some(error);
            }
        }
    }
}

/// Another resource holds a person this resource owned: it owns them no more and changes
/// nothing.
fn leave_alone(pass: &mut Pass<'_, '_>, email: &str, holder: String) {
    if let Some(user) = pass.users.iter_mut().find(|u| u.email_address == email) {
        user.ownership = None;
        user.message = Some(plan::truncate_message(&format!(
            "managed by UserInvitation {holder}; left alone here"
        )));
    }
    pass.report.changes.push(Change::LeftAlone {
        email: email.to_string(),
        holder,
    });
}

/// Phase 7: the outcome, written if it changed; then the identifiers of the users invited
/// in this pass, read back when the client asks for it, written only if one differs.
async fn finish<W: StatusWriter>(
    mut pass: Pass<'_, '_>,
    api: &dyn InviteApi,
    writer: &mut W,
) -> Result<SyncReport, WriteError> {
    let mut users = std::mem::take(&mut pass.users);
    users.extend(std::mem::take(&mut pass.kept));
    let status = outcome_status(&pass, users);
    pass.report.next_look = plan::settle_wait(pass.ctx, &status.users);
    record_transitions(&mut pass.report, pass.ctx.previous, &status);
    let users = status.users.clone();
    write_if_changed(&mut pass, writer, status).await?;
    if let Some(users) = read_back_identifiers(&pass, api, users).await {
        let status = outcome_status(&pass, users);
        write_if_changed(&mut pass, writer, status).await?;
    }
    pass.report.status = pass.written.clone();
    pass.report.finished = true;
    Ok(pass.report)
}

/// The status the pass ends with, for these entries.
fn outcome_status(pass: &Pass<'_, '_>, users: Vec<UserStatus>) -> UserInvitationStatus {
    let problem_text = pass.report.problem.as_ref().map(ApiError::to_string);
    let mut status = plan::summarize(pass.ctx, users, problem_text.as_deref());
    if let (Some(reason), Some(text)) = (pass.blocked, problem_text) {
        status.conditions = plan::conditions_for(
            pass.ctx.previous,
            reason,
            text,
            pass.ctx.generation,
            pass.ctx.now,
        );
    }
    status
}

/// Phase 8: the identifiers the API gave the users this pass invited, when the client does
/// not know them from the invite answer (UserInvite). Read after the outcome is written, so
/// Ready does not wait for this lookup; `users` with each identifier the lookup found, or
/// `None` when there is nothing to change (or the lookup failed: the addresses stay, and the
/// next check of invited users reads the identifiers again).
async fn read_back_identifiers(
    pass: &Pass<'_, '_>,
    api: &dyn InviteApi,
    mut users: Vec<UserStatus>,
) -> Option<Vec<UserStatus>> {
    let invited = pass.report.changes.iter().find_map(|change| match change {
        Change::Invited(emails) => Some(emails),
        _ => None,
    })?;
    if !api.reads_back_identifiers() {
        return None;
    }
    let lookups: Vec<Lookup> = invited.iter().map(Lookup::email).collect();
    let found = api.look_up(&lookups).await.ok()?;
    let mut changed = false;
    let just_invited =
        |u: &&mut UserStatus| u.state == UserState::Invited && invited.contains(&u.email_address);
    for user in users.iter_mut().filter(just_invited) {
        if let Some(Observed::Member { identifier, .. }) = found.get(&user.email_address)
            && user.identifier.as_ref() != Some(identifier)
        {
            user.identifier = Some(identifier.clone());
            changed = true;
        }
    }
    changed.then_some(users)
}

fn record_transitions(
    report: &mut SyncReport,
    previous: &UserInvitationStatus,
    status: &UserInvitationStatus,
) {
    for user in &status.users {
        let before = previous
            .users
            .iter()
            .find(|u| u.email_address == user.email_address)
            .map(|u| u.state);
        if before != Some(user.state) {
            report.changes.push(Change::Reached {
                email: user.email_address.clone(),
                state: user.state,
            });
        }
    }
}

async fn write_if_changed<W: StatusWriter>(
    pass: &mut Pass<'_, '_>,
    writer: &mut W,
    next: UserInvitationStatus,
) -> Result<(), WriteError> {
    if next != pass.written || pass.overlay_unwritten {
        writer.write(&next).await?;
        pass.report.writes += 1;
        pass.written = next;
        pass.overlay_unwritten = false;
    }
    Ok(())
}
