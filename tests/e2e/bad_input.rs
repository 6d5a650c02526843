//! The bad-input corpus (issue 11, point 9): malformed or hostile resources and endpoints, and
//! malformed or hostile API answers. Each ends in an admission error (the CRDs' schema and CEL,
//! on a real API server) or in a clear condition;
//! never a panic, a hot loop (reconciles are counted over a window), unbounded memory (statuses
//! stay small; answers larger than the cap are not read) or lost status (every requested
//! address has an entry).
//!
//! No case depends on the server's own email check (`format: email` is a regular expression in
//! the in-process server, Go's `net/mail` in kube-apiserver, which admits display names,
//! comments and quoted local parts): the CRD's address pattern refuses every address that is not a
//! plain `local@domain.tld` in ASCII on both. The planner's check of the same rule, for objects
//! admitted before it, is `objects_admitted_before_the_address_rule_fail_alone_in_the_planner`.

use std::{collections::BTreeMap, time::Duration};

use crate::common::{flavor::*, tenancy_kit::admit, *};
use invite_mock::{MockConfig, RunningMock, ScriptedFault};
use invite_operator::api::{
    FailureReason, InvitationEndpoint, UserInvitation, UserInvitationStatus, UserState,
};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::{Api, CustomResourceExt};
use serde_json::{Value, json};

/// What a case must end in.
#[derive(Clone, Copy, Debug)]
enum Expect {
    /// Refused at admission (422), the message naming this.
    Refused(&'static str),
    /// Admitted; the Ready condition's reason ends as this.
    Reason(&'static str),
    /// Admitted, and left alone: its endpoint is not one the controller serves (it serves
    /// only the test's ClusterInvitationEndpoints), so it gets no status at all.
    LeftAlone,
}
use Expect::*;

/// A case: its name, the spec of the object, what it must end in.
type Case = (&'static str, Value, Expect);

fn user(email: &str) -> Value {
    json!({"emailAddress": email, "groups": [], "userGroups": []})
}

fn users(emails: &[impl AsRef<str>]) -> Value {
    json!({"endpointRef": {"kind": "InvitationEndpoint", "name": ENDPOINT},
           "users": emails.iter().map(|e| user(e.as_ref())).collect::<Vec<_>>()})
}

/// `spec` with `value` at `path` (`/users/0/groups`; missing object fields are added).
fn with(mut spec: Value, path: &str, value: Value) -> Value {
    let mut at = &mut spec;
    for key in path.split('/').skip(1) {
        at = match key.parse::<usize>() {
            Ok(i) if at.is_array() => &mut at[i],
            _ => &mut at[key],
        };
    }
    *at = value;
    spec
}

fn org(usernames: Value) -> Value {
    json!({"endpointRef": {"kind": "InvitationEndpoint", "name": "org"},
           "orgInvitation": {"usernames": usernames}})
}

/// `spec` with `value` at `path`, refused at admission with a message naming the path's last
/// field.
fn refused_at(name: &'static str, spec: Value, path: &'static str, value: Value) -> Case {
    let field = path.rsplit('/').next().unwrap();
    (name, with(spec, path, value), Refused(field))
}

/// One user, `p@example.com`, with `value` at `path`: refused, naming the field.
fn user_refused_at(name: &'static str, path: &'static str, value: Value) -> Case {
    refused_at(name, users(&["p@example.com"]), path, value)
}

/// A long but valid address (120 characters): a local part of 40, two 37-character labels.
fn long_address(i: usize) -> String {
    let local = format!("{i:0>40}");
    let label = |c: char| c.to_string().repeat(37);
    format!("{local}@{}.{}.com", label('a'), label('b'))
}

/// What kube-apiserver says when the CRD's address pattern refuses an address.
const PLAIN: &str = "should match";

fn resource_cases() -> Vec<Case> {
    [
        refused_user_cases(),
        refused_org_and_type_cases(),
        admitted_cases(),
        spelling_cases(),
    ]
    .concat()
}

/// Refused at admission, the message naming `what`.
fn refused(name: &'static str, spec: Value, what: &'static str) -> Case {
    (name, spec, Refused(what))
}

/// Admitted, the Ready condition's reason ending as `reason`.
fn ends(name: &'static str, spec: Value, reason: &'static str) -> Case {
    (name, spec, Reason(reason))
}

/// UserInvite specs the CRD's schema and CEL refuse, with words of the refusal.
fn refused_user_cases() -> Vec<Case> {
    let many: Vec<String> = (0..1001).map(|i| format!("u{i}@example.com")).collect();
    let kib = "k".repeat(1024);
    let kib_users: Vec<Value> = (0..1000)
        .map(|i| json!({"emailAddress": format!("k{i}@example.com"), "groups": [kib], "userGroups": []}))
        .collect();
    let thousand_kib = json!({"users": kib_users});
    let too_long = format!("{}@example.com", "x".repeat(250));
    let groups_65: Vec<String> = (0..65).map(|i| format!("g{i}")).collect();
    let both = json!({"users": [user("a@example.com")], "orgInvitation": {"usernames": ["b@example.com"]}});
    let neither = json!({"accessPolicy": "InviteOnly"});
    let mut cases = vec![
        refused("exact-duplicate", users(&["d@example.com"; 2]), "Duplicate"),
        refused("both-apis", both, "exactly one"),
        refused("neither-api", neither, "exactly one"),
        refused("no-users", json!({"users": []}), "users"),
        refused("too-many-users", users(&many), "1000"),
        refused("thousand-users-kib-strings", thousand_kib, "groups"),
        user_refused_at("empty-group", "/users/0/groups", json!([""])),
        user_refused_at("too-many-groups", "/users/0/groups", json!(groups_65)),
        user_refused_at("kib-group", "/users/0/groups", json!([kib])),
        user_refused_at("bad-access-policy", "/accessPolicy", json!("Sometimes")),
        user_refused_at("bad-deletion-policy", "/deletionPolicy", json!("Never")),
        user_refused_at("bad-endpoint-kind", "/endpointRef/kind", json!("Secret")),
        user_refused_at("empty-endpoint-name", "/endpointRef/name", json!("")),
    ];
    let addresses = [
        ("bad-email", "not an email"),
        ("no-at", "example.com"),
        ("space-in-email", "a b@example.com"),
        ("too-long-email", too_long.as_str()),
    ];
    cases.extend(addresses.map(|(name, a)| refused(name, users(&[a]), "emailAddress")));
    cases
}

/// OrgInvitation specs and fields of the wrong type the CRD refuses.
fn refused_org_and_type_cases() -> Vec<Case> {
    let groups_16: Vec<String> = (0..16).map(|i| format!("g{i}")).collect();
    let one = org(json!(["o@example.com"]));
    let twice = org(json!(["o@example.com", "o@example.com"]));
    let bad_username = org(json!(["not-an-email"]));
    let custom_groups = "/orgInvitation/customGroupsIds";
    let not_a_list = json!({"users": {"emailAddress": "a@example.com"}});
    let not_a_string = json!({"users": [{"emailAddress": 42}]});
    vec![
        refused("org-bad-username", bad_username, "usernames"),
        refused("org-duplicate-username", twice, "Duplicate"),
        refused("org-no-usernames", org(json!([])), "usernames"),
        refused_at("org-too-many-groups", one, custom_groups, json!(groups_16)),
        user_refused_at("wrong-type-bool", "/reinviteExpired", json!("yes")),
        refused("users-not-a-list", not_a_list, "users"),
        refused("email-not-a-string", not_a_string, "emailAddress"),
    ]
}

/// Specs admitted, and ending in a clear condition.
fn admitted_cases() -> Vec<Case> {
    let long: Vec<Value> = (0..1000).map(|i| user(&long_address(i))).collect();
    let mut unknown_fields = users(&["extra@example.com"]);
    unknown_fields["nickname"] = json!("hostile");
    unknown_fields["users"][0]["isAdmin"] = json!(true);
    let endpoint = "/endpointRef/name";
    let wrong_api = with(org(json!(["w@example.com"])), endpoint, json!(ENDPOINT));
    let missing = with(users(&["m@example.com"]), endpoint, json!("nowhere"));
    let default_endpoint = json!({"users": [user("c@example.com")]});
    let case_duplicate = users(&["Case@example.com", "case@example.com"]);
    let not_paused = users(&["notpaused@example.com"]);
    let thousand_long =
        json!({"endpointRef": {"kind": "InvitationEndpoint", "name": ENDPOINT}, "users": long});
    vec![
        ends("unknown-fields", unknown_fields, "AllInvited"),
        ends("case-duplicate", case_duplicate, "InvalidSpec"),
        ends("paused-not-true", not_paused, "AllInvited"),
        ends("wrong-api", wrong_api, "EndpointMismatch"),
        ends("missing-endpoint", missing, "EndpointNotFound"),
        ("default-cluster-endpoint", default_endpoint, LeftAlone),
        ends("thousand-long-users", thousand_long, "AllInvited"),
    ]
}

/// One mailbox in two spellings (issue 16, item 7): every address form other than a plain
/// `local@domain.tld` in ASCII is refused by the CRD's address pattern, whatever the server's
/// `format: email` check admits. Case is
/// folded and plus-addressing is another person: both admitted.
fn spelling_cases() -> Vec<Case> {
    let one_user = [
        ("unicode-domain", "bob@ex\u{e4}mple.com"),
        ("display-name", "Alice <alice2@example.com>"),
        ("no-tld", "a@b"),
        ("zero-width", "zero\u{200b}width@example.com"),
        ("display-name-no-space", "Alice<alice3@example.com>"),
        ("angle-brackets", "<angle@example.com>"),
        ("comment-after", "comment@example.com(work)"),
        ("comment-before", "(work)comment@example.com"),
        ("quoted-local-part", "\"quoted\"@example.com"),
        ("route-address", "@relay.example.com:route@example.com"),
        ("percent-route", "percent%example.com@relay.example.com"),
        ("bang-route", "relay!bang@example.com"),
        ("backslash-escape", "back\\slash@example.com"),
        ("leading-space", " lead@example.com"),
        ("trailing-space", "trail@example.com "),
        ("local-trailing-dot", "dot.@example.com"),
        ("local-leading-dot", ".dot@example.com"),
        ("local-double-dot", "do..t@example.com"),
        ("domain-trailing-dot", "fqdn@example.com."),
        ("domain-double-dot", "dd@example..com"),
        ("domain-literal", "literal@[192.0.2.1]"),
        ("ip-domain", "ip@192.0.2.1"),
    ];
    let one_org = [
        ("org-display-name", "Oscar <oscar@example.com>"),
        ("org-comment", "oscar@example.com(c)"),
        ("org-quoted-local-part", "\"oscar\"@example.com"),
        ("org-domain-trailing-dot", "oscar@example.com."),
        ("org-non-ascii", "\u{f8}scar@example.com"),
    ];
    let lookalike = users(&["\u{0430}lice@example.com", "alice@example.com"]);
    let two_spellings = users(&["same@example.com", "Same <same@example.com>"]);
    let upper_case = users(&["Plain.Upper@Example.COM"]);
    let plus = users(&["plus@example.com", "plus+ops@example.com"]);
    let mut cases = vec![
        refused("unicode-lookalike", lookalike, PLAIN),
        refused("two-spellings-of-one-mailbox", two_spellings, PLAIN),
        // Case is folded and plus-addressing is another person: both admitted.
        ends("upper-case-is-plain", upper_case, "AllInvited"),
        ends("plus-address-is-another-person", plus, "AllInvited"),
    ];
    cases.extend(one_user.map(|(name, address)| refused(name, users(&[address]), PLAIN)));
    cases.extend(one_org.map(|(name, username)| refused(name, org(json!([username])), PLAIN)));
    cases
}

/// Endpoint specs; admitted ones get a resource `use-<name>` that must end with the reason.
fn endpoint_cases(mock: &str) -> Vec<Case> {
    let base = |url: &str| Flavor::UserInvite.endpoint(url, 5, 100);
    let with_credentials = base(&mock.replace("http://", "http://admin:hunter2@"));
    let secret = |name: &str| with(base(mock), "/credentials/secretRef/name", json!(name));
    let remote = base("http://example.com");
    let no_org = with(base(mock), "/api", json!("OrgInvitation"));
    let (timeout, not_ready) = ("/timeoutSeconds", "EndpointNotReady");
    vec![
        ends("url-credentials", with_credentials, not_ready),
        refused("url-ftp", base("ftp://127.0.0.1/"), "url"),
        refused("url-not-a-url", base("not a url"), "url"),
        ends("url-plain-http-remote", remote, not_ready),
        refused_at("timeout-zero", base(mock), timeout, json!(0)),
        refused_at("timeout-too-long", base(mock), timeout, json!(121)),
        refused_at("rate-zero", base(mock), "/requestsPerSecond", json!(0)),
        refused_at("api-unknown", base(mock), "/api", json!("Foo")),
        ends("secret-missing", secret("nope"), not_ready),
        ends("secret-empty", secret("empty-token"), not_ready),
        refused("org-without-organization", no_org, "organizationId"),
    ]
}

/// The UserInvite harness ([`ENDPOINT`]) with an OrgInvitation endpoint `org` too.
async fn both_flavours() -> Harness {
    let h = Flavor::UserInvite.harness(5, 100).await;
    let url = &h.mock.url;
    Flavor::OrgInvitation
        .apply_endpoint(&h.cluster, "org", url, 5, 100)
        .await;
    h
}

fn requested(spec: &Value) -> usize {
    spec["users"]
        .as_array()
        .or_else(|| spec["orgInvitation"]["usernames"].as_array())
        .map_or(0, Vec::len)
}

fn clear(status: &UserInvitationStatus, spec: &Value, want: &str, name: &str) -> bool {
    let reason = ready(status).1;
    if reason != want {
        return false;
    }
    // No lost status: an entry per requested address, and a bounded size.
    let entries = status.users.len() >= requested(spec);
    assert!(entries, "{name}: entries missing: {status:#?}");
    let size = serde_json::to_vec(status).unwrap().len();
    assert!(size < 1024 * 1024, "{name}: status of {size} bytes");
    true
}

#[tokio::test]
async fn hostile_resources_end_in_an_admission_error_or_a_clear_condition() {
    let mut h = both_flavours().await;
    h.cluster.put_secret("empty-token", "  ").await;
    h.start_controller();
    let mut outcomes = Outcomes::default();
    create_hostile_resources(&h, &mut outcomes).await;
    create_hostile_endpoints(&h, &mut outcomes).await;
    let c = &h.cluster;
    // A paused annotation that is not "true" pauses nothing.
    let paused = "invite.operators.dev/paused";
    c.annotate("paused-not-true", paused, json!("yes")).await;
    let (admitted, left_alone) = (outcomes.admitted, outcomes.left_alone);
    let (refused, not_created) = (outcomes.refused, outcomes.not_created);
    println!(
        "{refused} refused at admission, {} admitted, {not_created} left to a real API server",
        admitted.len()
    );
    assert!(refused + not_created + admitted.len() + left_alone.len() >= 40);
    for (name, spec, reason) in &admitted {
        let clear = |s: &UserInvitationStatus| clear(s, spec, reason, name);
        c.wait_status(name, reason, clear).await;
    }
    // Created before the others ended: the controller has seen them, and wrote nothing.
    for name in left_alone {
        let inv = c.invitations().get(name).await.unwrap();
        assert_eq!(inv.status, None, "{name} is left alone");
        assert!(inv.metadata.finalizers.is_none(), "{name}");
    }
    assert_specific_promises(&h).await;
    // No hot loop: blocked resources are retried with backoff (at most every 200 ms with the
    // tests' retry delays), settled ones not at all.
    let controller = h.controller.as_ref().unwrap();
    let blocked = admitted
        .iter()
        .filter(|(_, _, r)| !["AllInvited", "InvalidSpec", "Failed", "PartiallyFailed"].contains(r))
        .count() as u64;
    let before = controller.reconciles();
    tokio::time::sleep(Duration::from_secs(3)).await;
    let during = controller.reconciles() - before;
    println!("{during} reconciles in 3 s for {blocked} blocked resources");
    let hot_loop = during > 15 * blocked + 5;
    assert!(!hot_loop, "{during} reconciles in 3 s: a hot loop");
    assert!(!controller.is_finished(), "the controller is still running");
    h.finish().await;
}

/// What became of the hostile objects: refused at admission, admitted (a resource and the
/// reason it must end with), or admitted and left alone.
#[derive(Default)]
struct Outcomes {
    admitted: Vec<(String, Value, &'static str)>,
    left_alone: Vec<&'static str>,
    refused: usize,
    /// Cases admission must refuse, not created in process: the in-process server evaluates
    /// no CRD schema or CEL (tests/support/README.md); a real API server is the judge.
    not_created: usize,
}

impl Outcomes {
    /// Creates case `name`'s object `K` (named `object`), unless it is left to a real API
    /// server, and records what became of it; the reason it must end with when admitted.
    async fn create<K: kube::Resource<DynamicType = ()>>(
        &mut self,
        h: &Harness,
        (name, object): (&'static str, &str),
        spec: Value,
        expect: Expect,
    ) -> Option<&'static str> {
        if h.cluster.is_test_server() && matches!(expect, Refused(_)) {
            self.not_created += 1;
            return None;
        }
        match (expect, admit::<K>(&h.cluster, object, spec).await.map(drop)) {
            (Refused(what), Err(message)) => {
                assert_refusal(name, what, &message);
                self.refused += 1;
            }
            (Reason(reason), Ok(())) => return Some(reason),
            (LeftAlone, Ok(())) => self.left_alone.push(name),
            (expect, result) => panic!("{name}: expected {expect:?}, got {result:?}"),
        }
        None
    }
}

/// A refusal at admission says `what` (a real API server may refuse by `format: email` as well),
/// and an address's refusal names its field.
fn assert_refusal(name: &str, what: &str, message: &str) {
    let by_format = what == PLAIN && message.contains("must be of type email");
    assert!(message.contains(what) || by_format, "{name}: {message}");
    if what == PLAIN {
        assert!(
            message.contains("emailAddress") || message.contains("usernames"),
            "{name}: the refusal names the field: {message}"
        );
    }
}

async fn create_hostile_resources(h: &Harness, outcomes: &mut Outcomes) {
    for (name, spec, expect) in resource_cases() {
        let created = outcomes.create::<UserInvitation>(h, (name, name), spec.clone(), expect);
        if let Some(reason) = created.await {
            outcomes.admitted.push((name.to_string(), spec, reason));
        }
    }
}

/// Each admitted endpoint gets a resource `use-<name>`.
async fn create_hostile_endpoints(h: &Harness, outcomes: &mut Outcomes) {
    for (name, spec, expect) in endpoint_cases(&h.mock.url) {
        let endpoint = format!("ep-{name}");
        let created = outcomes.create::<InvitationEndpoint>(h, (name, &endpoint), spec, expect);
        if let Some(reason) = created.await {
            let mut spec = users(&[&format!("{name}@example.com")]);
            spec["endpointRef"]["name"] = json!(endpoint);
            let resource = format!("use-{name}");
            h.cluster.create_invitation(&resource, spec.clone()).await;
            outcomes.admitted.push((resource, spec, reason));
        }
    }
}

/// What some cases promise beyond their condition.
async fn assert_specific_promises(h: &Harness) {
    let get = |name: &'static str| {
        let api = h.cluster.invitations();
        async move { api.get(name).await.unwrap() }
    };
    let unknown = get("unknown-fields").await;
    let raw = serde_json::to_value(&unknown).unwrap();
    let pruned = raw["spec"].get("nickname").is_none();
    assert!(pruned, "unknown fields are pruned");
    let dup = get("case-duplicate").await;
    assert_eq!(status_of(&dup).users.len(), 2);
    let upper = get("upper-case-is-plain").await;
    let folded = &status_of(&upper).users[0].email_address;
    assert_eq!(folded, "plain.upper@example.com", "the person, case folded");
    let once = ["case", "plain.upper", "plus", "plus+ops"].map(|p| format!("{p}@example.com"));
    assert_sent(&h.mock, &once, 1);
    assert_invite_requests_once(&h.mock.api, &once, "one person, one request");
    let credentials = get("use-url-credentials").await;
    let message = &status_of(&credentials).conditions[0].message;
    let no_password = message.contains("credentials") && !message.contains("hunter2");
    assert!(no_password, "{message}");
    let long = get("thousand-long-users").await;
    assert_eq!(status_of(&long).invited, 1000);
}

/// The UserInvitation CRD as it was before the address rule: no pattern on the addresses, and
/// no `format: email` either (kube-apiserver's `format: email` is Go's `net/mail`, which admits
/// display names, comments and quoted local parts; the in-process server's is stricter).
fn crd_before_the_address_rule() -> CustomResourceDefinition {
    let mut crd = serde_json::to_value(UserInvitation::crd()).unwrap();
    let spec = "/spec/versions/0/schema/openAPIV3Schema/properties/spec/properties";
    for field in [
        "/users/items/properties/emailAddress",
        "/orgInvitation/properties/usernames/items",
    ] {
        let schema = crd
            .pointer_mut(&format!("{spec}{field}"))
            .and_then(Value::as_object_mut)
            .unwrap_or_else(|| panic!("{field}"));
        let pattern = schema.remove("pattern");
        assert!(pattern.is_some(), "{field}");
        schema.remove("format");
    }
    serde_json::from_value(crd).unwrap()
}

async fn apply_crd(cluster: &TestCluster, crd: &CustomResourceDefinition) {
    let crds = Api::<CustomResourceDefinition>::all(cluster.client.clone());
    kube_test_apiserver::create_or_replace(&crds, crd)
        .await
        .unwrap();
}

/// Objects admitted before the address rule (or by a server that does not validate) still
/// name one mailbox in two spellings: the planner refuses each such entry alone (Failed,
/// InvalidSpec, a message saying why), invites every plain address once, and never sends the
/// other spelling to the API. In-process only: a shared real cluster's CRD is not swapped.
#[tokio::test]
async fn objects_admitted_before_the_address_rule_fail_alone_in_the_planner() {
    let mut h = both_flavours().await;
    if !h.cluster.is_test_server() {
        eprintln!("skipped: needs the in-process API server (swaps the CRD for an older one)");
        return h.finish().await;
    }
    apply_crd(&h.cluster, &crd_before_the_address_rule()).await;
    // Each resource lists one person, then the same mailbox in other spellings.
    let other_spellings = |p: &str| {
        vec![
            format!("{} <{p}@example.com>", p.to_uppercase()),
            format!("(work){p}@example.com"),
            format!("\"{p}\"@example.com"),
            format!("{p}@example.com."),
            format!("@relay.example.com:{p}@example.com"),
            format!(" {p}@example.com"),
            format!("{p}\u{e4}@example.com"),
        ]
    };
    let listed = |p: &str| {
        let mut all = vec![format!("{p}@example.com")];
        all.extend(other_spellings(p));
        all
    };
    let omega = org_spec("org", &listed("omega"), "org_member");
    let cases = [
        ("old-users", "alpha", users(&listed("alpha"))),
        ("old-org", "omega", omega),
    ];
    for (name, _, spec) in &cases {
        admit::<UserInvitation>(&h.cluster, name, spec.clone())
            .await
            .unwrap_or_else(|e| panic!("{name}: the old CRD admits it: {e}"));
    }
    // The rule arrives (the CRDs are upgraded) with the objects in place.
    apply_crd(&h.cluster, &UserInvitation::crd()).await;
    h.start_controller();
    let api = &h.mock.api;
    for (name, person, _) in &cases {
        let plain = format!("{person}@example.com");
        let settled = |s: &UserInvitationStatus| {
            ready(s).1 == "InvalidSpec" && state(s, &plain).is_some_and(|st| st.is_invited())
        };
        let inv = h.cluster.wait_status(name, "InvalidSpec", settled).await;
        let status = status_of(&inv);
        let listed = listed(person).len();
        assert_eq!(status.users.len(), listed, "{name}: {status:#?}");
        for written in other_spellings(person) {
            let entry = entry(status, &written).unwrap_or_else(|| panic!("{name}: {written:?}"));
            assert_eq!(entry.state, UserState::Failed, "{name}: {entry:?}");
            assert_eq!(entry.reason, Some(FailureReason::InvalidSpec));
            let message = entry.message.as_deref().unwrap_or_default();
            let why = message.starts_with("not a plain email address");
            assert!(why, "{name}: {message}");
            assert_eq!(api.invitations_sent_to(&written), 0, "{written:?}");
        }
        // One person, one invitation; no other spelling reached the API.
        assert_eq!(api.invitations_sent_to(&plain), 1, "{plain}");
        assert_invite_requests_once(api, std::slice::from_ref(&plain), name);
    }
    h.finish().await;
}

/// One API-answer case: its own mock, endpoint and resource.
#[derive(Clone)]
struct ApiCase {
    name: String,
    flavor: Flavor,
    fault: ScriptedFault,
    /// The mock sends again to invited users ([`resending`]).
    resend: bool,
}

fn api_cases() -> Vec<ApiCase> {
    let case = |flavor: Flavor| {
        move |(name, fault): (&str, ScriptedFault)| ApiCase {
            name: name.to_string(),
            flavor,
            fault,
            resend: false,
        }
    };
    let mut cases: Vec<ApiCase> = userinvite_answers()
        .into_iter()
        .map(case(Flavor::UserInvite))
        .chain(org_answers().into_iter().map(case(Flavor::OrgInvitation)))
        .collect();
    // The UserInvite invitations that take effect whatever the answer, also against an API
    // that would accept a second invitation and send again.
    let resending: Vec<ApiCase> = cases
        .iter()
        .filter(|c| c.flavor == Flavor::UserInvite && c.name.starts_with("invite-"))
        .filter(|c| c.fault.after_effect)
        .map(|c| ApiCase {
            name: format!("{}-resending", c.name),
            resend: true,
            ..c.clone()
        })
        .collect();
    cases.extend(resending);
    cases
}

/// Hostile answers of the UserInvite API, by name.
fn userinvite_answers() -> Vec<(&'static str, ScriptedFault)> {
    use ScriptedFault as F;
    let lookup = |f: F| f.path("/api/v2/user/validateUsers");
    let invite = |f: F| Flavor::UserInvite.on_invite(f);
    let acted = |f: F| invite(f.after_effect(true));
    let body = |json: &str| F::body(200, json);
    let redirect = F::redirect(302, "http://127.0.0.1:1/");
    vec![
        ("lookup-non-json", lookup(F::non_json()).times(2)),
        ("lookup-truncated", lookup(F::truncated()).times(2)),
        ("lookup-huge", lookup(F::huge_body(9 * 1024 * 1024))),
        ("lookup-error-200", lookup(F::error_body_200()).times(2)),
        ("lookup-unknown-users", lookup(F::unknown_users()).times(2)),
        (
            "lookup-wrong-shape",
            lookup(body(r#"{"validUsers": 42}"#)).times(2),
        ),
        ("lookup-a-list", lookup(body("[1, 2, 3]")).times(2)),
        ("lookup-redirect", lookup(redirect).times(2)),
        ("lookup-500s", lookup(F::new(500)).times(3)),
        ("invite-non-json", invite(F::non_json())),
        ("invite-non-json-acted", acted(F::non_json())),
        ("invite-truncated-acted", acted(F::truncated())),
        ("invite-error-200", invite(F::error_body_200())),
        ("invite-huge-acted", acted(F::huge_body(9 * 1024 * 1024))),
        ("invite-unknown-users", acted(F::unknown_users())),
        ("invite-a-string", invite(body(r#""ok""#))),
    ]
}

/// Hostile answers of the OrgInvitation API, by name.
fn org_answers() -> Vec<(&'static str, ScriptedFault)> {
    use ScriptedFault as F;
    let org_invitations = format!("/csp/gateway/am/api/orgs/{ORG}/invitations");
    let list = |f: F| f.method("GET").path(&org_invitations);
    let members = |f: F| f.path("/csp/gateway/am/api/v2/orgs/");
    let invite = |f: F| Flavor::OrgInvitation.on_invite(f);
    let acted = |f: F| invite(f.after_effect(true));
    let body = |json: &str| F::body(200, json);
    let token = F::non_json().path("/csp/gateway/am/api/auth");
    vec![
        ("token-non-json", token),
        ("list-error-200", list(F::error_body_200()).times(2)),
        (
            "list-wrong-shape",
            list(body(r#"{"unexpected": true}"#)).times(2),
        ),
        ("list-unknown-users", list(F::unknown_users()).times(2)),
        ("members-truncated", members(F::truncated())),
        (
            "members-wrong-shape",
            members(body(r#"{"results": "nope"}"#)).times(2),
        ),
        // The member listing is read once and kept (the operator's own invitations never
        // make it read the members again).
        (
            "members-unknown-users",
            members(F::unknown_users()).times(1),
        ),
        ("org-invite-error-200-acted", acted(F::error_body_200())),
        ("org-invite-non-json", invite(F::non_json())),
        (
            "org-invite-huge-acted",
            acted(F::huge_body(9 * 1024 * 1024)),
        ),
    ]
}

#[tokio::test]
async fn hostile_api_answers_end_invited_once() {
    let mut h = Harness::start().await;
    h.cluster.put_secret(SECRET, TOKEN).await;
    h.start_controller();
    let cases = api_cases();
    let mut mocks: BTreeMap<&str, RunningMock> = BTreeMap::new();
    for ApiCase {
        name,
        flavor,
        fault,
        resend,
    } in &cases
    {
        let config = MockConfig {
            resend_to_invited: *resend,
            ..MockConfig::default()
        };
        let mock = start_mock(config).await;
        mock.api.add_fault(fault.clone());
        // Short timeouts: an unknown outcome settles within about 3 s.
        flavor
            .apply_endpoint(&h.cluster, name, &mock.url, 1, 100)
            .await;
        let emails: Vec<String> = (1..=2).map(|i| format!("{name}-{i}@example.com")).collect();
        let mut spec = flavor.spec(&emails);
        spec["endpointRef"]["name"] = json!(name);
        h.cluster.create_invitation(name, spec).await;
        mocks.insert(name, mock);
    }
    for ApiCase { name, .. } in &cases {
        let inv = h.cluster.wait_ready(name).await;
        let status = status_of(&inv);
        let api = &mocks[name.as_str()].api;
        let asked = "no entry for users never asked for";
        assert_eq!(status.users.len(), 2, "{name}: {asked}: {status:#?}");
        let emails: Vec<String> = status
            .users
            .iter()
            .map(|u| u.email_address.clone())
            .collect();
        for email in &emails {
            assert!(email.starts_with(name.as_str()), "{name}: {email}");
            assert_eq!(api.invitations_sent_to(email), 1, "{name}: {email}");
        }
        assert_invite_requests_once(api, &emails, name);
        let met = api.pending_faults().is_empty();
        assert!(met, "{name}: every fault was met");
    }
    println!(
        "{} hostile API answers, each ended invited once",
        cases.len()
    );
    for (_, mock) in mocks {
        mock.shutdown().await;
    }
    h.finish().await;
}
