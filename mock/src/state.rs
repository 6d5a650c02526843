//! The mock's data: UserInvite users and user groups, OrgInvitation invitations, members and
//! access tokens, and the log of invitation emails "sent".

use std::collections::{BTreeMap, HashMap};
use std::time::Instant;

use jiff::{SignedDuration, Timestamp};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::{Map, Value, json};

use crate::MockConfig;

/// The permission names documented for `UserToCreate.groups` (api-facts A.4).
pub(crate) const PERMISSIONS: &[&str] = &[
    "log_management",
    "dashboard_management",
    "events_management",
    "alerts_management",
    "derived_metrics_management",
    "host_tag_management",
    "agent_management",
    "token_management",
    "ingestion",
    "user_management",
    "embedded_charts",
    "metrics_management",
    "external_links_management",
    "application_management",
    "batch_query_priority",
    "saml_sso_management",
    "monitored_application_service_management",
];

/// Which API sent an email.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum EmailApi {
    UserInvite,
    OrgInvitation,
}

impl EmailApi {
    fn as_str(self) -> &'static str {
        match self {
            EmailApi::UserInvite => "UserInvite",
            EmailApi::OrgInvitation => "OrgInvitation",
        }
    }
}

/// One invitation email the mock pretends to have sent.
#[derive(Debug, Clone)]
pub(crate) struct SentEmail {
    pub to: String,
    pub api: EmailApi,
    pub at: Timestamp,
}

/// A UserInvite user.
#[derive(Debug, Clone)]
pub(crate) struct User {
    pub identifier: String,
    pub sso_id: Option<String>,
    pub last_login: Option<i64>,
    pub groups: Vec<String>,
    /// Ids of user groups other than Everyone.
    pub user_groups: Vec<String>,
    pub roles: Vec<String>,
    /// Expiry of the activation link of the last invitation email, if one was sent.
    pub invitation_expires: Option<Timestamp>,
}

impl User {
    /// Never logged in and the last invitation expired: an invite re-sends the email.
    pub fn invitation_expired(&self, now: Timestamp) -> bool {
        self.last_login.is_none() && self.invitation_expires.is_some_and(|e| e <= now)
    }
}

/// A UserInvite user group.
#[derive(Debug, Clone)]
pub(crate) struct Group {
    pub id: String,
    pub name: String,
    pub description: String,
    pub created_ms: i64,
    pub system: bool,
}

/// Status of an OrgInvitation invitation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum InvitationStatus {
    Available,
    Redeemed,
    Revoked,
}

impl InvitationStatus {
    fn as_str(self) -> &'static str {
        match self {
            InvitationStatus::Available => "AVAILABLE",
            InvitationStatus::Redeemed => "REDEEMED",
            InvitationStatus::Revoked => "REVOKED",
        }
    }
}

/// An OrgInvitation invitation.
#[derive(Debug, Clone)]
pub(crate) struct Invitation {
    pub id: String,
    pub username: String,
    pub status: InvitationStatus,
    pub generated_at: i64,
    pub expiration: i64,
    pub invited_by: String,
    pub organization_roles: Vec<Value>,
    pub service_roles: Vec<Value>,
    pub custom_roles: Vec<Value>,
    pub custom_groups_ids: Vec<String>,
    pub redeemed_at: Option<i64>,
    pub redeemed_by: Option<String>,
    pub revoked_at: Option<i64>,
    pub revoked_by: Option<String>,
}

impl Invitation {
    /// AVAILABLE and not expired.
    pub fn is_pending(&self, now_ms: i64) -> bool {
        self.status == InvitationStatus::Available && self.expiration > now_ms
    }
}

/// A member of the OrgInvitation organization.
#[derive(Debug, Clone)]
pub(crate) struct Member {
    pub user_id: String,
    pub username: String,
    pub first_name: String,
    pub last_name: String,
    /// Username, first name, last name and email, lowercased, for the user search.
    pub search_text: String,
    pub organization_roles: Vec<Value>,
    /// `[{serviceDefinitionLink, serviceRoleNames, serviceRoles}]`.
    pub service_roles: Vec<Value>,
    pub custom_roles: Vec<Value>,
}

/// An OrgInvitation access token issued by the token exchange.
#[derive(Debug, Clone, Copy)]
pub(crate) struct AccessToken {
    pub expires: Instant,
}

/// All mutable state of the mock.
#[derive(Debug, Clone)]
pub(crate) struct State {
    pub cfg: MockConfig,
    /// Keyed by lowercased identifier.
    pub users: BTreeMap<String, User>,
    /// Keyed by id.
    pub groups: BTreeMap<String, Group>,
    pub everyone_id: String,
    pub invitations: Vec<Invitation>,
    /// In the order they joined; `member_by_name` indexes them by lowercased username.
    pub members: Vec<Member>,
    member_by_name: HashMap<String, usize>,
    /// CSP access tokens issued (expired ones included, so that they stay recognisable).
    pub access_tokens: HashMap<String, AccessToken>,
    pub emails: Vec<SentEmail>,
    /// The organization roles the CSP API knows; an invitation naming another is refused.
    pub org_roles: std::collections::BTreeSet<String>,
    rng: StdRng,
}

/// The organization roles of a CSP organization.
pub(crate) const ORG_ROLES: [&str; 6] = [
    "org_owner",
    "org_member",
    "org_admin",
    "platform_operator",
    "read_only_operator",
    "billing_read_only",
];

/// Milliseconds since the epoch.
pub(crate) fn now_ms() -> i64 {
    Timestamp::now().as_millisecond()
}

/// A pragmatic email syntax check (the dot-atom form of RFC 5322, no quoted local parts,
/// a domain of at least two DNS labels).
pub(crate) fn is_valid_email(s: &str) -> bool {
    if s.len() > 254 || s.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return false;
    }
    let Some((local, domain)) = s.rsplit_once('@') else {
        return false;
    };
    if local.is_empty()
        || local.len() > 64
        || local.starts_with('.')
        || local.ends_with('.')
        || local.contains("..")
        || !local
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "!#$%&'*+/=?^_`{|}~.-".contains(c))
    {
        return false;
    }
    let labels: Vec<&str> = domain.split('.').collect();
    labels.len() >= 2
        && labels.iter().all(|l| {
            !l.is_empty()
                && l.len() <= 63
                && !l.starts_with('-')
                && !l.ends_with('-')
                && l.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
        })
        && labels
            .last()
            .is_some_and(|tld| tld.chars().any(|c| c.is_ascii_alphabetic()))
}

fn uuid(rng: &mut StdRng) -> String {
    let a: u128 = rng.random();
    let mut b = a.to_be_bytes();
    b[6] = (b[6] & 0x0f) | 0x40;
    b[8] = (b[8] & 0x3f) | 0x80;
    let h: String = b.iter().map(|x| format!("{x:02x}")).collect();
    format!(
        "{}-{}-{}-{}-{}",
        &h[0..8],
        &h[8..12],
        &h[12..16],
        &h[16..20],
        &h[20..32]
    )
}

/// Facts about group membership computed once per response.
struct GroupIndex {
    members: HashMap<String, Vec<String>>,
}

/// How many member identifiers a rendered `UserGroup.users` list carries ("maybe incomplete").
const GROUP_USERS_SAMPLE: usize = 10;

impl State {
    /// Fresh state: no users, the system group "Everyone", no invitations or members.
    pub fn new(cfg: MockConfig) -> State {
        let mut rng = StdRng::seed_from_u64(mix_seed(cfg.seed));
        let everyone_id = uuid(&mut rng);
        let mut groups = BTreeMap::new();
        groups.insert(
            everyone_id.clone(),
            Group {
                id: everyone_id.clone(),
                name: "Everyone".to_string(),
                description: "System group which contains all users".to_string(),
                created_ms: now_ms(),
                system: true,
            },
        );
        State {
            cfg,
            users: BTreeMap::new(),
            groups,
            everyone_id,
            invitations: Vec::new(),
            members: Vec::new(),
            member_by_name: HashMap::new(),
            access_tokens: HashMap::new(),
            emails: Vec::new(),
            org_roles: ORG_ROLES.iter().map(|r| r.to_string()).collect(),
            rng,
        }
    }

    /// A new random (seeded) UUID.
    pub fn new_uuid(&mut self) -> String {
        uuid(&mut self.rng)
    }

    /// `n` random bytes as hex.
    pub fn random_hex(&mut self, n: usize) -> String {
        (0..n)
            .map(|_| format!("{:02x}", self.rng.random::<u8>()))
            .collect()
    }

    // ---------------------------------------------------------------- emails

    /// Records one invitation email.
    pub fn send_email(&mut self, to: &str, api: EmailApi) {
        self.emails.push(SentEmail {
            to: to.to_ascii_lowercase(),
            api,
            at: Timestamp::now(),
        });
    }

    /// Number of emails sent to an address (case-insensitive).
    pub fn emails_to(&self, addr: &str) -> usize {
        let addr = addr.to_ascii_lowercase();
        self.emails.iter().filter(|e| e.to == addr).count()
    }

    /// Emails per address.
    pub fn email_counts(&self) -> BTreeMap<String, usize> {
        let mut m = BTreeMap::new();
        for e in &self.emails {
            *m.entry(e.to.clone()).or_insert(0) += 1;
        }
        m
    }

    /// The email log as JSON.
    pub fn emails_json(&self) -> Value {
        Value::Array(
            self.emails
                .iter()
                .map(|e| json!({"to": e.to, "api": e.api.as_str(), "at": e.at.to_string()}))
                .collect(),
        )
    }

    // ---------------------------------------------------------------- UserInvite

    /// The identifier the server assigns to an email address.
    pub fn identifier_for(&self, email: &str) -> String {
        let email = email.to_ascii_lowercase();
        if self.cfg.multi_tenant_identifiers
            && let Some((local, domain)) = email.rsplit_once('@')
        {
            return format!(
                "{local}+{}@{domain}",
                self.cfg.customer.to_ascii_lowercase()
            );
        }
        email
    }

    /// The key of a user by identifier (case-insensitive).
    pub fn user_key(&self, id: &str) -> Option<String> {
        let k = id.to_ascii_lowercase();
        self.users.contains_key(&k).then_some(k)
    }

    fn group_index(&self) -> GroupIndex {
        let mut members: HashMap<String, Vec<String>> = HashMap::new();
        for u in self.users.values() {
            members
                .entry(self.everyone_id.clone())
                .or_default()
                .push(u.identifier.clone());
            for g in &u.user_groups {
                members
                    .entry(g.clone())
                    .or_default()
                    .push(u.identifier.clone());
            }
        }
        GroupIndex { members }
    }

    fn group_json_with(&self, g: &Group, idx: &GroupIndex, model: bool) -> Value {
        let members = idx.members.get(&g.id).map(Vec::as_slice).unwrap_or(&[]);
        let mut v = json!({
            "id": g.id,
            "name": g.name,
            "customer": self.cfg.customer,
            "users": members.iter().take(GROUP_USERS_SAMPLE).collect::<Vec<_>>(),
            "userCount": members.len(),
            "properties": {
                "nameEditable": !g.system,
                "usersEditable": !g.system,
                "rolesEditable": true,
            },
            "description": g.description,
            "roles": [],
        });
        if model {
            v["createdEpochMillis"] = json!(g.created_ms);
            v["roleCount"] = json!(0);
        }
        v
    }

    /// A `UserGroupModel`.
    pub fn group_model_json(&self, g: &Group) -> Value {
        self.group_json_with(g, &self.group_index(), true)
    }

    /// A `RoleDTO` for a role id (the mock does not model roles: any id is a role of that name).
    fn role_json(&self, id: &str) -> Value {
        json!({
            "id": id,
            "name": id,
            "description": "",
            "customer": self.cfg.customer,
            "permissions": [],
            "linkedGroupsCount": 0,
            "linkedAccountsCount": 1,
            "sampleLinkedGroups": [],
            "sampleLinkedAccounts": [],
        })
    }

    fn user_json_with(&self, u: &User, idx: &GroupIndex) -> Value {
        let mut groups = Vec::with_capacity(u.user_groups.len() + 1);
        if let Some(e) = self.groups.get(&self.everyone_id) {
            groups.push(self.group_json_with(e, idx, false));
        }
        for id in &u.user_groups {
            if let Some(g) = self.groups.get(id) {
                groups.push(self.group_json_with(g, idx, false));
            }
        }
        let mut v = json!({
            "identifier": u.identifier,
            "customer": self.cfg.customer,
            "groups": u.groups,
            "userGroups": groups,
            "roles": u.roles.iter().map(|r| self.role_json(r)).collect::<Vec<_>>(),
        });
        if let Some(s) = &u.sso_id {
            v["ssoId"] = json!(s);
        }
        if let Some(l) = u.last_login {
            v["lastSuccessfulLogin"] = json!(l);
        }
        v
    }

    /// A `UserModel`.
    pub fn user_json(&self, u: &User) -> Value {
        self.user_json_with(u, &self.group_index())
    }

    /// `users` as `UserModel`s, the group index built once for all of them (it is a pass over
    /// every user: once per user, a lookup of hundreds of addresses took the mock 0.5 s).
    pub fn some_users_json<'a>(&self, users: impl IntoIterator<Item = &'a User>) -> Vec<Value> {
        let idx = self.group_index();
        users
            .into_iter()
            .map(|u| self.user_json_with(u, &idx))
            .collect()
    }

    /// Every user as `UserModel`s.
    pub fn users_json(&self) -> Vec<Value> {
        let idx = self.group_index();
        self.users
            .values()
            .map(|u| self.user_json_with(u, &idx))
            .collect()
    }

    /// Every user group as `UserGroupModel`s.
    pub fn groups_json(&self) -> Vec<Value> {
        let idx = self.group_index();
        self.groups
            .values()
            .map(|g| self.group_json_with(g, &idx, true))
            .collect()
    }

    /// Seeds a user from UserModel-ish JSON (`identifier` or `emailAddress`; `groups`;
    /// `userGroups` as ids or objects with `id`; `roles` as ids or objects; `ssoId`;
    /// `lastSuccessfulLogin`). Unknown user groups are dropped. Returns the identifier.
    pub fn seed_user(&mut self, v: &Value) -> Option<String> {
        let obj = v.as_object()?;
        let email = obj
            .get("emailAddress")
            .or_else(|| obj.get("identifier"))
            .and_then(Value::as_str)?
            .to_string();
        let identifier = match obj.get("identifier").and_then(Value::as_str) {
            Some(id) => id.to_ascii_lowercase(),
            None => self.identifier_for(&email),
        };
        let ids = |field: &str| -> Vec<String> {
            obj.get(field)
                .and_then(Value::as_array)
                .map(|a| {
                    a.iter()
                        .filter_map(|x| match x {
                            Value::String(s) => Some(s.clone()),
                            Value::Object(o) => {
                                o.get("id").and_then(Value::as_str).map(str::to_string)
                            }
                            _ => None,
                        })
                        .collect()
                })
                .unwrap_or_default()
        };
        let user_groups = ids("userGroups")
            .into_iter()
            .filter(|g| *g != self.everyone_id && self.groups.contains_key(g))
            .collect();
        let user = User {
            identifier: identifier.clone(),
            sso_id: obj.get("ssoId").and_then(Value::as_str).map(str::to_string),
            last_login: obj.get("lastSuccessfulLogin").and_then(Value::as_i64),
            groups: ids("groups"),
            user_groups,
            roles: ids("roles"),
            invitation_expires: None,
        };
        self.users.insert(identifier.to_ascii_lowercase(), user);
        Some(identifier)
    }

    /// Seeds (or renames) a user group.
    pub fn seed_group(&mut self, id: &str, name: &str) {
        self.groups.insert(
            id.to_string(),
            Group {
                id: id.to_string(),
                name: name.to_string(),
                description: String::new(),
                created_ms: now_ms(),
                system: false,
            },
        );
    }

    /// Plays the user's first (or next) login. False when unknown.
    pub fn login(&mut self, id: &str) -> bool {
        let Some(k) = self.user_key(id) else {
            return false;
        };
        if let Some(u) = self.users.get_mut(&k) {
            u.last_login = Some(now_ms());
        }
        true
    }

    // ---------------------------------------------------------------- OrgInvitation

    /// The resource string of org-scoped role bindings.
    pub fn org_resource(&self) -> String {
        format!("/csp/gateway/am/api/orgs/{}", self.cfg.organization_id)
    }

    /// A role binding for a role name.
    pub fn binding(&self, name: &str) -> Value {
        json!({
            "name": name,
            "resource": self.org_resource(),
            "membershipType": "DIRECT",
            "createdBy": "mock",
            "createdDate": Timestamp::now().to_string(),
        })
    }

    /// Completes a role binding given by a client.
    pub fn complete_binding(&self, b: &Map<String, Value>) -> Value {
        let mut b = b.clone();
        b.entry("membershipType")
            .or_insert_with(|| Value::String("DIRECT".to_string()));
        if b.get("resource").is_none_or(Value::is_null) {
            b.insert("resource".to_string(), Value::String(self.org_resource()));
        }
        Value::Object(b)
    }

    /// The member with this username (case-insensitive).
    pub fn member_index(&self, username: &str) -> Option<usize> {
        self.member_by_name
            .get(&username.to_ascii_lowercase())
            .copied()
    }

    /// Removes the members with these user ids; returns how many went.
    pub fn remove_members(&mut self, user_ids: &[String]) -> usize {
        let before = self.members.len();
        self.members.retain(|m| !user_ids.contains(&m.user_id));
        self.member_by_name = self
            .members
            .iter()
            .enumerate()
            .map(|(i, m)| (m.username.to_ascii_lowercase(), i))
            .collect();
        before - self.members.len()
    }

    /// True when the access token was issued and has not expired.
    pub fn access_token_valid(&self, token: &str) -> bool {
        self.access_tokens
            .get(token)
            .is_some_and(|t| t.expires > Instant::now())
    }

    /// Adds a member (or returns the existing one's index).
    pub fn add_member(
        &mut self,
        username: &str,
        organization_roles: Vec<Value>,
        service_roles: Vec<Value>,
        custom_roles: Vec<Value>,
    ) -> usize {
        if let Some(i) = self.member_index(username) {
            return i;
        }
        let domain = username
            .rsplit_once('@')
            .map(|(_, d)| d.to_ascii_lowercase())
            .unwrap_or_else(|| "mock.local".to_string());
        let local = username.split('@').next().unwrap_or(username);
        let mut parts = local.splitn(2, ['.', '_', '-']);
        let first = capitalize(parts.next().unwrap_or(local));
        let last = capitalize(parts.next().unwrap_or("User"));
        let user_id = format!("{domain}:{}", self.new_uuid());
        let search_text = [username, &first, &last, username]
            .join("\u{0}")
            .to_lowercase();
        self.member_by_name
            .insert(username.to_ascii_lowercase(), self.members.len());
        self.members.push(Member {
            user_id,
            username: username.to_string(),
            first_name: first,
            last_name: last,
            search_text,
            organization_roles,
            service_roles,
            custom_roles,
        });
        self.members.len() - 1
    }

    /// An `ExpandedTypedUserDto`.
    pub fn member_json(&self, m: &Member) -> Value {
        let domain = m
            .user_id
            .split_once(':')
            .map(|(d, _)| d)
            .unwrap_or("mock.local");
        json!({
            "user": {
                "username": m.username,
                "firstName": m.first_name,
                "lastName": m.last_name,
                "domain": domain,
                "idpId": domain,
                "accessible": true,
                "acct": m.username,
                "email": m.username,
                "userId": m.user_id,
            },
            "orgId": self.cfg.organization_id,
            "organizationRoles": m.organization_roles,
            "serviceRoles": m.service_roles,
            "customRoles": m.custom_roles,
        })
    }

    /// A `UserOrganizationInvitationResponse`; role details only with `expand`.
    pub fn invitation_json(&self, inv: &Invitation, expand: bool) -> Value {
        let names: Vec<&str> = inv
            .organization_roles
            .iter()
            .filter_map(|r| r.get("name").and_then(Value::as_str))
            .collect();
        let mut v = json!({
            "username": inv.username,
            "status": inv.status.as_str(),
            "refLink": format!(
                "/csp/gateway/am/api/orgs/{}/invitations/{}",
                self.cfg.organization_id, inv.id
            ),
            "generatedAt": inv.generated_at,
            "expirationTime": inv.expiration,
            "generatedBy": "mock-api-token-client",
            "invitedByUsername": inv.invited_by,
            "orgRoleNames": names,
            "customGroupsIds": inv.custom_groups_ids,
        });
        if expand {
            v["organizationRoles"] = json!(inv.organization_roles);
            v["serviceRolesDtos"] = json!(inv.service_roles);
            v["customRoles"] = json!(inv.custom_roles);
            v["customGroups"] = json!(
                inv.custom_groups_ids
                    .iter()
                    .map(|id| json!({"id": id}))
                    .collect::<Vec<_>>()
            );
        }
        if let Some(t) = inv.redeemed_at {
            v["redeemedAt"] = json!(t);
        }
        if let Some(b) = &inv.redeemed_by {
            v["redeemedBy"] = json!(b);
        }
        if let Some(t) = inv.revoked_at {
            v["revokedAt"] = json!(t);
        }
        if let Some(b) = &inv.revoked_by {
            v["revokedBy"] = json!(b);
        }
        v
    }

    /// The invited person accepts their newest pending invitation: it becomes REDEEMED and
    /// they become a member with its roles. False when there is no pending invitation.
    pub fn redeem(&mut self, username: &str) -> bool {
        let now = now_ms();
        let Some(i) = self
            .invitations
            .iter()
            .rposition(|inv| inv.username.eq_ignore_ascii_case(username) && inv.is_pending(now))
        else {
            return false;
        };
        let inv = &mut self.invitations[i];
        inv.status = InvitationStatus::Redeemed;
        inv.redeemed_at = Some(now);
        inv.redeemed_by = Some(inv.username.clone());
        let (name, org, svc, custom) = (
            inv.username.clone(),
            inv.organization_roles.clone(),
            inv.service_roles.clone(),
            inv.custom_roles.clone(),
        );
        let svc = svc
            .iter()
            .map(|s| {
                let link = s
                    .get("serviceDefinitionLink")
                    .and_then(Value::as_str)
                    .unwrap_or_default();
                let names: Vec<String> = s
                    .get("serviceRoleNames")
                    .and_then(Value::as_array)
                    .map(|a| {
                        a.iter()
                            .filter_map(Value::as_str)
                            .map(str::to_string)
                            .collect()
                    })
                    .unwrap_or_default();
                let roles: Vec<Value> = names.iter().map(|n| self.binding(n)).collect();
                json!({
                    "serviceDefinitionLink": link,
                    "serviceDefinitionId": link.rsplit('/').next().unwrap_or_default(),
                    "serviceRoleNames": names,
                    "serviceRoles": roles,
                })
            })
            .collect();
        match self.member_index(&name) {
            Some(_) => {}
            None => {
                self.add_member(&name, org, svc, custom);
            }
        }
        true
    }

    /// Moves every pending invitation's expiry into the past (both APIs).
    pub fn expire_all(&mut self) {
        let past = Timestamp::now() - SignedDuration::from_secs(1);
        for u in self.users.values_mut() {
            if u.last_login.is_none()
                && let Some(e) = u.invitation_expires.as_mut()
                && *e > past
            {
                *e = past;
            }
        }
        let past_ms = now_ms() - 1000;
        for inv in &mut self.invitations {
            if inv.status == InvitationStatus::Available && inv.expiration > past_ms {
                inv.expiration = past_ms;
            }
        }
    }
}

fn mix_seed(seed: u64) -> u64 {
    crate::wire::mix(seed ^ 0x0001_d50f_5eed)
}

fn capitalize(s: &str) -> String {
    let mut c = s.chars();
    match c.next() {
        Some(f) => f.to_uppercase().chain(c).collect(),
        None => String::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn email_syntax() {
        for ok in [
            "a@b.co",
            "alice.smith+tag@example.com",
            "x_y@sub.example.org",
        ] {
            assert!(is_valid_email(ok), "{ok}");
        }
        for bad in [
            "",
            "a",
            "a@",
            "@b.com",
            "a@b",
            "a b@c.com",
            "a@@b.com",
            ".a@b.com",
            "a..b@c.com",
            "a@-b.com",
            "a@b..com",
            "a@b.123",
        ] {
            assert!(!is_valid_email(bad), "{bad}");
        }
    }

    #[test]
    fn uuids_are_seeded_and_well_formed() {
        let a = State::new(MockConfig::default()).everyone_id;
        let b = State::new(MockConfig::default()).everyone_id;
        assert_eq!(a, b);
        assert_eq!(a.len(), 36);
        assert_eq!(&a[14..15], "4");
    }

    #[test]
    fn multi_tenant_identifier() {
        let cfg = MockConfig {
            multi_tenant_identifiers: true,
            customer: "Acme".into(),
            ..MockConfig::default()
        };
        let s = State::new(cfg);
        assert_eq!(
            s.identifier_for("Alice@Example.com"),
            "alice+acme@example.com"
        );
    }
}
