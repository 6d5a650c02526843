//! Who is a member of the organization, read the cheaper way and kept.
//!
//! Membership changes only when a person accepts an invitation (which the invitation listing
//! shows as `REDEEMED`, read for every lookup) or when an administrator adds or removes
//! someone (seen once the cache expires, [`MEMBER_TTL`], shorter than the slow resync). The
//! operator's own invitations never change it, so nothing here is re-read because of them.
//!
//! Addresses the cache does not know are read in one of two ways, whichever costs fewer calls:
//! the documented user search, one call per address ("contains" match, at most
//! [`SEARCH_LIMIT`] results: matched exactly on the results; a term that fills the page falls
//! back to the listing), or the paged member listing, whose cost is estimated from
//! `totalResults` on its first page (the estimate is kept). Searching stops paying once the
//! searches since the last listing would have paid for one: then the listing is read.

use std::{collections::HashMap, time::Duration};

use futures::{StreamExt, stream};
use reqwest::Method;
use tokio::time::Instant;

use super::{
    MAX_MEMBER_PAGES, MEMBER_PAGE, OrgInvitationClient, encode,
    snapshot::{items, listing, member},
};
use crate::invite::{ApiError, decode::as_i64};

/// How long what was read about membership serves lookups (below the default slow resync
/// of 10 minutes, so each resync reads membership again).
pub const MEMBER_TTL: Duration = Duration::from_secs(300);

/// How long the member count estimated from a listing is kept.
const ESTIMATE_TTL: Duration = Duration::from_secs(3600);

/// Most results the user search returns.
pub const SEARCH_LIMIT: usize = 20;

/// Searches in flight at once (the endpoint's rate limit paces them).
const SEARCHES_AT_ONCE: usize = 8;

/// Usernames (as persons) → user ids: only what decisions need.
type MemberIds = HashMap<Box<str>, Box<str>>;

/// What the client knows about membership: only what decisions need (lowercased usernames
/// and user ids), never whole member objects.
#[derive(Default)]
pub(super) struct MemberCache {
    /// Members per the listing's `totalResults`, and the page size the server returns.
    estimate: Option<Estimate>,
    /// A complete listing, username (as a person) → user id, and when its read started.
    listed: Option<(Instant, MemberIds)>,
    /// Addresses searched: the user id when a member, and when the search started.
    searched: HashMap<Box<str>, (Instant, Option<Box<str>>)>,
    /// Searches made since the listing was last read.
    searches: u64,
}

#[derive(Clone, Copy, Debug)]
struct Estimate {
    members: u64,
    page: u64,
    at: Instant,
}

impl Estimate {
    /// Calls a complete listing costs.
    fn pages(&self) -> u64 {
        self.members.div_ceil(self.page.max(1)).max(1)
    }
}

impl MemberCache {
    /// Whether `person` is a member (their user id) as far as a fresh read says; `None` when
    /// nothing fresh is known.
    pub(super) fn known(&self, person: &str, now: Instant) -> Option<Option<String>> {
        let fresh = |at: &Instant| now.saturating_duration_since(*at) < MEMBER_TTL;
        if let Some((at, members)) = &self.listed
            && fresh(at)
        {
            return Some(members.get(person).map(|id| id.to_string()));
        }
        match self.searched.get(person) {
            Some((at, id)) if fresh(at) => Some(id.as_deref().map(str::to_string)),
            _ => None,
        }
    }

    fn forget_stale(&mut self, now: Instant) {
        let fresh = |at: &Instant| now.saturating_duration_since(*at) < MEMBER_TTL;
        if self.listed.as_ref().is_some_and(|(at, _)| !fresh(at)) {
            self.listed = None;
            self.searches = 0;
        }
        self.searched.retain(|_, (at, _)| fresh(at));
        if self
            .estimate
            .is_some_and(|e| now.saturating_duration_since(e.at) >= ESTIMATE_TTL)
        {
            self.estimate = None;
        }
    }
}

/// One page of the member listing.
struct MemberPage {
    members: Vec<(Box<str>, Box<str>)>,
    /// `totalResults`, if the page says.
    total: Option<u64>,
    has_next: bool,
    bytes: usize,
    started: Instant,
}

/// What one search says about one address.
enum Searched {
    Member(Box<str>),
    NotMember,
    /// The page was full and does not name the address: the search cannot tell.
    Undecided,
}

impl OrgInvitationClient {
    /// Membership of `persons` (addresses as persons): member → their user id. Read (single
    /// flight) only for addresses the cache does not know.
    pub(super) async fn membership(
        &self,
        persons: &[String],
    ) -> Result<HashMap<String, Option<String>>, ApiError> {
        let _single_flight = self.member_fetch.lock().await;
        let unknown: Vec<String> = {
            let mut cache = self.members.lock().expect("lock");
            let now = Instant::now();
            cache.forget_stale(now);
            let mut unknown: Vec<String> = persons
                .iter()
                .filter(|p| cache.known(p, now).is_none())
                .cloned()
                .collect();
            unknown.sort();
            unknown.dedup();
            unknown
        };
        if !unknown.is_empty() {
            self.read_members(&unknown).await?;
        }
        Ok(self.cached_membership(persons))
    }

    /// Membership of `persons` as the cache knows it, without a call (unknown: not a member).
    pub(super) fn cached_membership(&self, persons: &[String]) -> HashMap<String, Option<String>> {
        let cache = self.members.lock().expect("lock");
        let now = Instant::now();
        persons
            .iter()
            .map(|p| (p.clone(), cache.known(p, now).flatten()))
            .collect()
    }

    /// Reads the membership of `unknown` the cheaper way: a search per address, or the listing.
    async fn read_members(&self, unknown: &[String]) -> Result<(), ApiError> {
        let limits = self.transport.limits();
        let (estimate, searches) = {
            let cache = self.members.lock().expect("lock");
            (cache.estimate, cache.searches)
        };
        let (estimate, first) = match estimate {
            Some(estimate) => (estimate, None),
            None => {
                let page = self.member_page(1).await?;
                // No `totalResults`: the size is unknown, so the listing is read.
                let estimate = Estimate {
                    members: page.total.unwrap_or(page.members.len() as u64),
                    page: (page.members.len() as u64).max(1),
                    at: page.started,
                };
                (estimate, Some(page))
            }
        };
        if estimate.members > limits.max_members as u64 {
            return Err(too_many_members(limits.max_members));
        }
        self.members.lock().expect("lock").estimate = Some(estimate);
        if first.as_ref().is_some_and(|p| !p.has_next) {
            return self.list_members(first).await;
        }
        let wanted = unknown.len() as u64;
        let pages_left = estimate.pages() - u64::from(first.is_some());
        let search = wanted < pages_left && searches + wanted < estimate.pages();
        if search && self.search_members(unknown).await? {
            return Ok(());
        }
        self.list_members(first).await
    }

    /// Searches each address; false when a search could not tell (the listing decides).
    async fn search_members(&self, persons: &[String]) -> Result<bool, ApiError> {
        let answers: Vec<Result<(String, Instant, Searched), ApiError>> =
            stream::iter(persons.to_vec())
                .map(|person: String| async move {
                    let started = Instant::now();
                    let searched = self.search(&person).await?;
                    Ok((person, started, searched))
                })
                .buffer_unordered(SEARCHES_AT_ONCE)
                .collect()
                .await;
        let mut decided = true;
        let mut cache = self.members.lock().expect("lock");
        for answer in answers {
            let (person, started, searched) = answer?;
            cache.searches += 1;
            let id = match searched {
                Searched::Member(id) => Some(id),
                Searched::NotMember => None,
                Searched::Undecided => {
                    decided = false;
                    continue;
                }
            };
            cache.searched.insert(person.into(), (started, id));
        }
        Ok(decided)
    }

    /// One user search for `person`, matched exactly on its results.
    async fn search(&self, person: &str) -> Result<Searched, ApiError> {
        const OPERATION: &str = "search organization users";
        let path = format!(
            "{}/users/search?userSearchTerm={}",
            self.org_path(),
            encode(person)
        );
        let answer = self
            .call(OPERATION, None, |t| self.request(Method::GET, &path, t))
            .await?;
        let value = listing(OPERATION, &answer.body)?;
        let results = items(&value);
        if let Some((_, id)) = results
            .iter()
            .filter_map(member)
            .find(|(name, _)| name == person)
        {
            return Ok(Searched::Member(id.into()));
        }
        Ok(if results.len() >= SEARCH_LIMIT {
            Searched::Undecided
        } else {
            Searched::NotMember
        })
    }

    /// Reads the whole member listing (after `first`, its first page, when already read) within
    /// the budgets, and keeps it with the member count it reports.
    async fn list_members(&self, first: Option<MemberPage>) -> Result<(), ApiError> {
        let limits = self.transport.limits();
        let mut members = MemberIds::new();
        let mut bytes = 0usize;
        // 1-based; advanced by what each page returned (a server may return fewer than asked).
        let mut start: u64 = 1;
        let mut page = match first {
            Some(page) => page,
            None => self.member_page(start).await?,
        };
        let started = page.started;
        let mut page_size = 1;
        for _ in 0..MAX_MEMBER_PAGES {
            bytes = bytes.saturating_add(page.bytes);
            if bytes > limits.max_bytes {
                return Err(ApiError::LimitExceeded {
                    operation: "list organization users",
                    message: format!(
                        "the organization's member listing is larger than {} MiB (--org-snapshot-max-bytes)",
                        limits.max_bytes / (1024 * 1024)
                    ),
                });
            }
            let returned = page.members.len() as u64;
            page_size = page_size.max(returned);
            let before = members.len();
            members.extend(page.members);
            if members.len() > limits.max_members {
                return Err(too_many_members(limits.max_members));
            }
            let total = page.total.unwrap_or(0);
            if returned == 0
                || members.len() == before
                || (!page.has_next && start + returned > total)
            {
                self.keep_listing(members, started, page_size);
                return Ok(());
            }
            start += returned;
            page = self.member_page(start).await?;
        }
        Err(ApiError::Decode {
            operation: "list organization users",
            message: format!("the member listing did not end after {MAX_MEMBER_PAGES} pages"),
        })
    }

    fn keep_listing(&self, members: MemberIds, started: Instant, page: u64) {
        let mut cache = self.members.lock().expect("lock");
        cache.estimate = Some(Estimate {
            members: members.len() as u64,
            page,
            at: started,
        });
        cache.listed = Some((started, members));
        cache.searched.clear();
        cache.searches = 0;
    }

    /// One page of the member listing, from `start` (1-based).
    async fn member_page(&self, start: u64) -> Result<MemberPage, ApiError> {
        const OPERATION: &str = "list organization users";
        let path = format!(
            "/csp/gateway/am/api/v2/orgs/{}/users?pageStart={start}&pageLimit={MEMBER_PAGE}",
            encode(&self.organization_id)
        );
        let started = Instant::now();
        let answer = self
            .call(OPERATION, None, |t| self.request(Method::GET, &path, t))
            .await?;
        let value = listing(OPERATION, &answer.body)?;
        Ok(MemberPage {
            members: items(&value)
                .iter()
                .filter_map(member)
                .map(|(name, id)| (name.into(), id.into()))
                .collect(),
            total: value
                .get("totalResults")
                .and_then(as_i64)
                .map(|t| t.max(0) as u64),
            has_next: value.get("nextLink").is_some_and(|l| !l.is_null()),
            bytes: answer.body.len(),
            started,
        })
    }
}

fn too_many_members(max: usize) -> ApiError {
    ApiError::LimitExceeded {
        operation: "list organization users",
        message: format!(
            "the organization has more than {max} members (--org-snapshot-max-members)"
        ),
    }
}
