//! Who holds which person: from every UserInvitation's status, the users it owns (invited or
//! adopted) on its API, keyed by the person an address names ([`address::person`]). A resource
//! naming a person another resource holds shows the holder and changes nothing, so two
//! resources never undo each other, and nobody invites a person whose invite request elsewhere
//! is still settling.
//!
//! The index is fed by the UserInvitation watch (complete before the first reconcile, pruned
//! on deletion and relist) and written through by the controller's own status writes, so a
//! pass that releases a person has already published that it holds them.

use std::{
    collections::{BTreeMap, HashMap, HashSet},
    sync::{Arc, Mutex},
};

use jiff::Timestamp;
use smallvec::SmallVec;

use crate::{
    api::{ApiIdentity, UserInvitationStatus, UserState, address},
    reconcile::plan::OtherHolder,
};

type ResourceKey = Arc<str>;

/// A person ([`address::person`]), shared by the index's two maps.
type Person = Arc<str>;

/// A person on an API.
type Slot = (Arc<ApiIdentity>, Person);

/// The resources holding one person. Almost always one: it is kept inline, so a held person
/// costs one entry of the index and no allocation of its own (10,000 resources of 5 users:
/// 50,000 entries).
type Holders<V> = SmallVec<[(ResourceKey, V); 1]>;

#[derive(Clone, Debug)]
struct Held {
    state: UserState,
    settles_at: Option<Timestamp>,
}

#[derive(Default)]
struct Index {
    /// Per resource: its API and the people it holds.
    by_resource: HashMap<ResourceKey, (Arc<ApiIdentity>, Box<[Person]>)>,
    /// Per API and person: the resources holding them.
    by_person: HashMap<Slot, Holders<Held>>,
    /// People whose resource is gone while an invite request it sent may still act: held
    /// (by `<namespace>/<name> (deleted)`) until the request settles, so neither another
    /// resource nor one recreated with the same name invites them meanwhile.
    tombstones: HashMap<Slot, (ResourceKey, Timestamp)>,
    /// People of intent journal entries whose outcome is not recorded yet, per holding
    /// resource (with the entry's `settlesAt`): held like `Inviting`.
    journaled: HashMap<Slot, Holders<Timestamp>>,
    /// The APIs of the entries, each kept once however many entries name it.
    apis: HashSet<Arc<ApiIdentity>>,
    /// How many APIs were in use when [`Index::apis`] was last pruned.
    apis_in_use: usize,
}

/// The index of held persons.
#[derive(Default)]
pub struct HolderIndex {
    index: Mutex<Index>,
    /// Resources seen since a relist of a scope began.
    relisting: Mutex<HashMap<Option<String>, HashSet<ResourceKey>>>,
}

impl HolderIndex {
    /// Records what `resource` (`namespace/name`) holds according to its status.
    pub fn update(&self, resource: &str, status: Option<&UserInvitationStatus>) {
        let mut index = self.index.lock().expect("lock");
        index.remove(resource);
        let Some(status) = status else {
            return;
        };
        let Some(api) = &status.api else {
            return;
        };
        let held: Vec<_> = status
            .users
            .iter()
            .filter(|u| u.ownership.is_some() && u.state.holds_person())
            .collect();
        if held.is_empty() {
            return;
        }
        let key: ResourceKey = Arc::from(resource);
        let api = index.intern(api);
        let mut people = Vec::with_capacity(held.len());
        for user in held {
            let person: Person = address::person(&user.email_address).into();
            let holders = index
                .by_person
                .entry((api.clone(), person.clone()))
                .or_default();
            let held = Held {
                state: user.state,
                settles_at: user.settles_at,
            };
            insert(holders, &key, held);
            people.push(person);
        }
        index.by_resource.insert(key, (api, people.into()));
    }

    /// Holds the person of `email` on `api` for `resource` (`namespace/name`): an intent
    /// journal entry whose outcome is not recorded yet.
    pub fn hold_journaled(&self, api: &ApiIdentity, resource: &str, email: &str, until: Timestamp) {
        let mut index = self.index.lock().expect("lock");
        let slot = (index.intern(api), address::person(email).into());
        let holders = index.journaled.entry(slot).or_default();
        insert(holders, &Arc::from(resource), until);
    }

    /// Releases a journal hold: its outcome is recorded in the resource's status.
    pub fn release_journaled(&self, resource: &str, email: &str) {
        let person = address::person(email);
        let mut index = self.index.lock().expect("lock");
        index.journaled.retain(|(_, p), holders| {
            if p.as_ref() == person {
                remove(holders, resource);
            }
            !holders.is_empty()
        });
    }

    /// Holds the person of `email` on `api` for the deleted `resource` until `until` (an
    /// unsettled request of the intent journal whose resource is gone).
    pub fn hold_deleted(&self, api: &ApiIdentity, resource: &str, email: &str, until: Timestamp) {
        if until <= Timestamp::now() {
            return;
        }
        let owner: ResourceKey = Arc::from(format!("{resource} (deleted)"));
        let mut index = self.index.lock().expect("lock");
        let slot = (index.intern(api), address::person(email).into());
        let kept = index.tombstones.entry(slot).or_insert((owner, until));
        if kept.1 < until {
            kept.1 = until;
        }
    }

    /// Forgets a deleted resource; the people of its unsettled invite requests stay held
    /// until those settle.
    pub fn remove(&self, resource: &str) {
        self.index.lock().expect("lock").remove_deleted(resource);
    }

    /// The holders other than `me` of `addresses` on `api`.
    pub fn others(
        &self,
        api: &ApiIdentity,
        me: &str,
        addresses: &[String],
    ) -> BTreeMap<String, OtherHolder> {
        let mut index = self.index.lock().expect("lock");
        let now = Timestamp::now();
        index.tombstones.retain(|_, (_, until)| *until > now);
        let api = index
            .apis
            .get(api)
            .cloned()
            .unwrap_or_else(|| Arc::new(api.clone()));
        addresses
            .iter()
            .filter_map(|requested| {
                let slot = (api.clone(), Person::from(address::person(requested)));
                let live = first_other(index.by_person.get(&slot), me, |held| Held {
                    state: held.state,
                    settles_at: held.settles_at,
                });
                let journaled = || {
                    first_other(index.journaled.get(&slot), me, |until| Held {
                        state: UserState::Inviting,
                        settles_at: Some(*until),
                    })
                };
                let gone = || {
                    index
                        .tombstones
                        .get(&slot)
                        .map(|(owner, until)| OtherHolder {
                            owner: owner.to_string(),
                            state: UserState::Inviting,
                            settles_at: Some(*until),
                        })
                };
                Some((requested.clone(), live.or_else(journaled).or_else(gone)?))
            })
            .collect()
    }

    /// A relist of `scope` began: resources not seen again before it ends are forgotten.
    pub fn relist_started(&self, scope: &Option<String>) {
        self.relisting
            .lock()
            .expect("lock")
            .insert(scope.clone(), HashSet::new());
    }

    /// A resource was listed during a relist of `scope`.
    pub fn relisted(&self, scope: &Option<String>, resource: &str) {
        if let Some(seen) = self.relisting.lock().expect("lock").get_mut(scope) {
            seen.insert(Arc::from(resource));
        }
    }

    /// The relist of `scope` ended: returns the resources of the scope that were not listed
    /// (they are gone), after forgetting them.
    pub fn relist_done(&self, scope: &Option<String>) -> Vec<String> {
        let Some(seen) = self.relisting.lock().expect("lock").remove(scope) else {
            return Vec::new();
        };
        let mut index = self.index.lock().expect("lock");
        let gone: Vec<String> = index
            .by_resource
            .keys()
            .filter(|k| in_scope(k, scope) && !seen.contains(*k))
            .map(|k| k.to_string())
            .collect();
        for key in &gone {
            index.remove_deleted(key);
        }
        gone
    }
}

/// Records `value` for `key` among `holders`, replacing what `key` had.
fn insert<V>(holders: &mut Holders<V>, key: &ResourceKey, value: V) {
    match holders.iter_mut().find(|(owner, _)| owner == key) {
        Some((_, kept)) => *kept = value,
        None => holders.push((key.clone(), value)),
    }
}

/// Takes what `key` had among `holders` out.
fn remove<V>(holders: &mut Holders<V>, key: &str) -> Option<V> {
    let at = holders
        .iter()
        .position(|(owner, _)| owner.as_ref() == key)?;
    Some(holders.remove(at).1)
}

/// The first holder (by name) other than `me`, as `held` describes it.
fn first_other<V>(
    holders: Option<&Holders<V>>,
    me: &str,
    held: impl Fn(&V) -> Held,
) -> Option<OtherHolder> {
    holders?
        .iter()
        .filter(|(owner, _)| owner.as_ref() != me)
        .min_by_key(|(owner, _)| owner.to_string())
        .map(|(owner, value)| {
            let Held { state, settles_at } = held(value);
            OtherHolder {
                owner: owner.to_string(),
                state,
                settles_at,
            }
        })
}

fn in_scope(resource: &str, scope: &Option<String>) -> bool {
    match scope {
        None => true,
        Some(ns) => resource.split_once('/').is_some_and(|(n, _)| n == ns),
    }
}

impl Index {
    /// The index's shared copy of `api`. APIs no entry names any more are dropped once the
    /// set has grown to twice what was in use at the last pruning.
    fn intern(&mut self, api: &ApiIdentity) -> Arc<ApiIdentity> {
        if let Some(kept) = self.apis.get(api) {
            return kept.clone();
        }
        if self.apis.len() >= 2 * self.apis_in_use + 8 {
            self.apis.retain(|kept| Arc::strong_count(kept) > 1);
            self.apis_in_use = self.apis.len();
        }
        let kept = Arc::new(api.clone());
        self.apis.insert(kept.clone());
        kept
    }

    fn remove(&mut self, resource: &str) {
        self.take(resource);
    }

    /// Removes a resource that no longer exists, keeping its unsettled requests' people held.
    fn remove_deleted(&mut self, resource: &str) {
        let now = Timestamp::now();
        let tombstone: ResourceKey = Arc::from(format!("{resource} (deleted)"));
        for (slot, held) in self.take(resource) {
            if held.state == UserState::Inviting
                && let Some(until) = held.settles_at.filter(|t| *t > now)
            {
                let kept = self
                    .tombstones
                    .entry(slot)
                    .or_insert((tombstone.clone(), until));
                if kept.1 < until {
                    *kept = (tombstone.clone(), until);
                }
            }
        }
    }

    /// Removes a resource's holds; returns them.
    fn take(&mut self, resource: &str) -> Vec<(Slot, Held)> {
        let Some((key, (api, people))) = self.by_resource.remove_entry(resource) else {
            return Vec::new();
        };
        let mut taken = Vec::new();
        for person in people {
            let slot = (api.clone(), person);
            if let Some(holders) = self.by_person.get_mut(&slot) {
                if let Some(held) = remove(holders, &key) {
                    taken.push((slot.clone(), held));
                }
                if holders.is_empty() {
                    self.by_person.remove(&slot);
                }
            }
        }
        taken
    }
}

/// The holder index, asked for one resource on one API.
pub struct HolderLookup<'a> {
    /// The index.
    pub index: &'a HolderIndex,
    /// The API.
    pub api: &'a ApiIdentity,
    /// The resource asking (`namespace/name`).
    pub me: &'a str,
}

impl crate::reconcile::Holders for HolderLookup<'_> {
    fn other_holder(&self, email: &str) -> Option<String> {
        self.index
            .others(self.api, self.me, &[email.to_string()])
            .remove(email)
            .map(|h| h.owner)
    }
}

#[cfg(test)]
#[path = "holders_tests.rs"]
mod tests;
