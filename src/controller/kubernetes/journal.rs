//! The intent journal in Kubernetes: one `InviteIntent` object in the operator's namespace per
//! coalesced invite batch of several resources, created before the batch's call and deleted
//! once each of its addresses has its outcome in its resource's status (or the resource is
//! gone). Read first at start-up and takeover: an address it holds whose outcome is not
//! recorded is `Inviting` until it settles, and holds its person meanwhile.

use std::{
    collections::{HashMap, HashSet},
    sync::{
        Arc, Mutex,
        atomic::{AtomicU64, Ordering},
    },
    time::Duration,
};

use kube::{
    Api, Client, ResourceExt,
    api::{DeleteParams, ListParams, ObjectMeta, PostParams},
};
use tokio_util::sync::CancellationToken;

use crate::{
    api::{
        IntentAddress, IntentApi, IntentEndpoint, IntentResource, InviteIntent, InviteIntentSpec,
        MAX_INTENT_ADDRESSES, UserInvitation,
    },
    controller::state::holders::HolderIndex,
    invite::intent::{BatchIntent, IntentJournal},
};

/// One address of a journal object whose outcome is not known to be recorded.
#[derive(Clone, Debug)]
struct Open {
    email: String,
    object: String,
    intent: BatchIntent,
}

#[derive(Default)]
struct State {
    /// Per journal object: the (resource uid, address) pairs not recorded yet.
    objects: HashMap<String, HashSet<(String, String)>>,
    /// Per resource uid: its open addresses.
    by_resource: HashMap<String, Vec<Open>>,
}

/// The intent journal of this controller (one per leader term).
pub struct Journal {
    client: Client,
    namespace: String,
    holders: Arc<HolderIndex>,
    state: Mutex<State>,
    serial: AtomicU64,
}

fn key_of(resource: &IntentResource) -> String {
    format!("{}/{}", resource.namespace, resource.name)
}

impl Journal {
    /// The journal in `namespace` (the operator's), holding its people in `holders`.
    pub fn new(client: Client, namespace: String, holders: Arc<HolderIndex>) -> Journal {
        Journal {
            client,
            namespace,
            holders,
            state: Mutex::new(State::default()),
            serial: AtomicU64::new(0),
        }
    }

    fn api(&self) -> Api<InviteIntent> {
        Api::namespaced(self.client.clone(), &self.namespace)
    }

    fn add(&self, object: &str, intents: impl IntoIterator<Item = (String, BatchIntent)>) {
        let mut state = self.state.lock().expect("lock");
        for (email, intent) in intents {
            let uid = intent.resource.uid.clone();
            self.holders.hold_journaled(
                &intent.api,
                &key_of(&intent.resource),
                &email,
                intent.settles_at,
            );
            state
                .objects
                .entry(object.to_string())
                .or_default()
                .insert((uid.clone(), email.clone()));
            state.by_resource.entry(uid).or_default().push(Open {
                email,
                object: object.to_string(),
                intent,
            });
        }
    }

    /// Reads the journal (retrying until it can, or until `shutdown`): every address of an
    /// object whose resources are all in `scopes` (None: every namespace) is open until a
    /// pass of its resource records it. Addresses of resources that are gone are dropped,
    /// and objects left without open addresses are deleted. Returns false when shut down.
    pub async fn load(&self, scopes: &[Option<String>], shutdown: &CancellationToken) -> bool {
        let mut delay = Duration::from_millis(250);
        let list = loop {
            match self.api().list(&ListParams::default()).await {
                Ok(list) => break list,
                Err(error) => {
                    tracing::warn!(%error, namespace = %self.namespace, "cannot read the intent journal (InviteIntents); retrying");
                    tokio::select! {
                        _ = shutdown.cancelled() => return false,
                        _ = tokio::time::sleep(delay) => {}
                    }
                    delay = (delay * 2).min(Duration::from_secs(10));
                }
            }
        };
        let in_scope = |ns: &str| {
            scopes
                .iter()
                .any(|s| s.as_deref().is_none_or(|scope| scope == ns))
        };
        let mut uids = HashMap::new();
        for object in list.items {
            let name = object.name_any();
            let spec = &object.spec;
            if !spec
                .addresses
                .iter()
                .all(|a| in_scope(&a.resource.namespace))
            {
                continue;
            }
            let mut open = Vec::new();
            for address in &spec.addresses {
                if self.resource_exists(&mut uids, &address.resource).await {
                    let intent = BatchIntent {
                        resource: address.resource.clone(),
                        api: (&spec.api).into(),
                        endpoint: (&spec.endpoint).into(),
                        invited_at: address.invited_at,
                        settles_at: address.settles_at,
                    };
                    open.push((address.email_address.clone(), intent));
                }
            }
            tracing::info!(object = %name, open = open.len(), "read an intent journal object");
            if open.is_empty() {
                self.delete(&name).await;
            } else {
                self.add(&name, open);
            }
        }
        true
    }

    /// Whether the resource still exists, from one list of its namespace's UserInvitations
    /// (the controller's own `list` permission; a failed list counts as existing).
    async fn resource_exists(
        &self,
        uids: &mut HashMap<String, Option<HashSet<String>>>,
        resource: &IntentResource,
    ) -> bool {
        if !uids.contains_key(&resource.namespace) {
            let api: Api<UserInvitation> =
                Api::namespaced(self.client.clone(), &resource.namespace);
            let listed = api.list(&ListParams::default()).await.ok().map(|list| {
                list.items
                    .into_iter()
                    .filter_map(|inv| inv.metadata.uid)
                    .collect()
            });
            uids.insert(resource.namespace.clone(), listed);
        }
        match &uids[&resource.namespace] {
            Some(listed) => listed.contains(&resource.uid),
            None => true,
        }
    }

    async fn delete(&self, name: &str) {
        match self.api().delete(name, &DeleteParams::default()).await {
            Ok(_) => tracing::debug!(object = %name, "intent journal object deleted"),
            Err(kube::Error::Api(e)) if e.code == 404 => {}
            Err(error) => {
                tracing::warn!(%error, object = %name, "cannot delete an intent journal object; it is deleted at the next start")
            }
        }
    }

    /// The open addresses of the resource with `uid`, each with its intent.
    pub fn open_for(&self, uid: &str) -> Vec<(String, BatchIntent)> {
        let state = self.state.lock().expect("lock");
        state
            .by_resource
            .get(uid)
            .map(|open| {
                open.iter()
                    .map(|o| (o.email.clone(), o.intent.clone()))
                    .collect()
            })
            .unwrap_or_default()
    }

    /// A pass of the resource with `uid` ended with its status written: every address the
    /// journal held for it is recorded there. Objects with nothing open left are deleted.
    pub async fn recorded(&self, uid: &str) {
        self.close(uid, false).await;
    }

    /// The resource with `uid` is gone: its addresses need no outcome any more, but their
    /// people stay held (by the deleted resource) until their requests settle.
    pub async fn gone(&self, uid: &str) {
        self.close(uid, true).await;
    }

    async fn close(&self, uid: &str, deleted: bool) {
        let done: Vec<String> = {
            let mut state = self.state.lock().expect("lock");
            let Some(open) = state.by_resource.remove(uid) else {
                return;
            };
            let mut done = Vec::new();
            for o in open {
                let key = key_of(&o.intent.resource);
                self.holders.release_journaled(&key, &o.email);
                if deleted {
                    self.holders
                        .hold_deleted(&o.intent.api, &key, &o.email, o.intent.settles_at);
                }
                if let Some(left) = state.objects.get_mut(&o.object) {
                    left.remove(&(uid.to_string(), o.email.clone()));
                    if left.is_empty() {
                        state.objects.remove(&o.object);
                        done.push(o.object);
                    }
                }
            }
            done
        };
        for object in done {
            self.delete(&object).await;
        }
    }

    fn object_name(&self) -> String {
        let serial = self.serial.fetch_add(1, Ordering::Relaxed);
        let now = jiff::Timestamp::now().as_millisecond();
        format!("intent-{now:x}-{serial:x}")
    }
}

#[async_trait::async_trait]
impl IntentJournal for Journal {
    /// One object for the batch (or one per [`MAX_INTENT_ADDRESSES`] addresses of a larger
    /// one), all created before the call.
    async fn open(&self, batch: Vec<(BatchIntent, Vec<String>)>) -> Result<(), String> {
        let Some((first, _)) = batch.first() else {
            return Ok(());
        };
        let (endpoint, api) = ((&first.endpoint).into(), (&first.api).into());
        let entries: Vec<(String, BatchIntent)> = batch
            .iter()
            .flat_map(|(intent, emails)| emails.iter().map(|e| (e.clone(), intent.clone())))
            .collect();
        for chunk in entries.chunks(MAX_INTENT_ADDRESSES) {
            let name = self.object_name();
            let addresses = chunk
                .iter()
                .map(|(email, intent)| IntentAddress {
                    email_address: email.clone(),
                    resource: intent.resource.clone(),
                    invited_at: intent.invited_at,
                    settles_at: intent.settles_at,
                })
                .collect();
            let object = InviteIntent {
                metadata: ObjectMeta {
                    name: Some(name.clone()),
                    namespace: Some(self.namespace.clone()),
                    ..ObjectMeta::default()
                },
                spec: InviteIntentSpec {
                    endpoint: IntentEndpoint::clone(&endpoint),
                    api: IntentApi::clone(&api),
                    addresses,
                },
            };
            self.api()
                .create(&PostParams::default(), &object)
                .await
                .map_err(|e| format!("cannot create the intent journal object {name}: {e}"))?;
            self.add(&name, chunk.iter().cloned());
        }
        Ok(())
    }
}
