//! The bad-input corpus (issue 11, point 9): malformed or hostile resources and endpoints, and
//! malformed or hostile API answers. Each ends in an admission error (the CRDs' schema and CEL,
//! evaluated by the in-process server and by a real API server alike) or in a clear condition;
//! never a panic, a hot loop (reconciles are counted over a window), unbounded memory (statuses
//! stay small; answers larger than the cap are not read) or lost status (every requested
//! address has an entry).
//!
//! No case depends on the server's own email check (`format: email` is a regular expression in
//! the in-process server, Go's `net/mail` in kube-apiserver, which admits display names,
//! comments and quoted local parts): the CRD's CEL rule refuses every address that is not a
//! plain `local@domain.tld` in ASCII on both. The planner's check of the same rule, for objects
//! admitted before it, is `objects_admitted_before_the_address_rule_fail_alone_in_the_planner`.

use std::{collections::BTreeMap, time::Duration};

use crate::common::{flavor::*, *};
use invite_mock::{MockConfig, RunningMock, ScriptedFault};
use invite_operator::api::{
    FailureReason, InvitationEndpoint, UserInvitation, UserInvitationStatus, UserState,
};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::{
    Api, CustomResourceExt,
    api::PostParams,
    core::{ApiResource, DynamicObject},
};
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

async fn create<K: kube::Resource<DynamicType = ()>>(
    cluster: &TestCluster,
    kind: &str,
    name: &str,
    spec: Value,
) -> Result<(), String> {
    let object: DynamicObject = serde_json::from_value(json!({
        "apiVersion": "invite.operators.dev/v1alpha1",
        "kind": kind,
        "metadata": cluster.metadata(name),
        "spec": spec,
    }))
    .unwrap();
    let api: Api<DynamicObject> = Api::namespaced_with(
        cluster.client.clone(),
        &cluster.namespace,
        &ApiResource::erase::<K>(&()),
    );
    match api.create(&PostParams::default(), &object).await {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(status)) => {
            assert_eq!(status.code, 422, "{name}: {status:?}");
            Err(status.message)
        }
        Err(other) => panic!("{name}: {other}"),
    }
}

fn user(email: &str) -> Value {
    json!({"emailAddress": email, "groups": [], "userGroups": []})
}

fn users(emails: &[&str]) -> Value {
    json!({"endpointRef": {"kind": "InvitationEndpoint", "name": ENDPOINT},
           "users": emails.iter().map(|e| user(e)).collect::<Vec<_>>()})
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

/// One user, `p@example.com`, with `value` at `path`.
fn one_with(path: &str, value: Value) -> Value {
    with(users(&["p@example.com"]), path, value)
}

/// A long but valid address (120 characters): a local part of 40, two 37-character labels.
fn long_address(i: usize) -> String {
    let local = format!("{i:0>40}");
    let label = |c: char| c.to_string().repeat(37);
    format!("{local}@{}.{}.com", label('a'), label('b'))
}

/// What the CRD's address rule says when it refuses an address.
const PLAIN: &str = "must be a plain email address";

fn resource_cases() -> Vec<(&'static str, Value, Expect)> {
    [
        refused_user_cases(),
        refused_org_and_type_cases(),
        admitted_cases(),
        spelling_cases(),
    ]
    .concat()
}

/// UserInvite specs the CRD's schema and CEL refuse, with words of the refusal.
fn refused_user_cases() -> Vec<(&'static str, Value, Expect)> {
    use Expect::*;
    let many: Vec<String> = (0..1001).map(|i| format!("u{i}@example.com")).collect();
    let many: Vec<&str> = many.iter().map(String::as_str).collect();
    let kib = "k".repeat(1024);
    let thousand_kib: Vec<Value> = (0..1000)
        .map(|i| json!({"emailAddress": format!("k{i}@example.com"), "groups": [kib], "userGroups": []}))
        .collect();
    vec![
        (
            "bad-email",
            users(&["not an email"]),
            Refused("emailAddress"),
        ),
        ("no-at", users(&["example.com"]), Refused("emailAddress")),
        (
            "space-in-email",
            users(&["a b@example.com"]),
            Refused("emailAddress"),
        ),
        (
            "exact-duplicate",
            users(&["d@example.com", "d@example.com"]),
            Refused("Duplicate"),
        ),
        (
            "both-apis",
            json!({"users": [user("a@example.com")], "orgInvitation": {"usernames": ["b@example.com"]}}),
            Refused("exactly one"),
        ),
        (
            "neither-api",
            json!({"accessPolicy": "InviteOnly"}),
            Refused("exactly one"),
        ),
        ("no-users", json!({"users": []}), Refused("users")),
        ("too-many-users", users(&many), Refused("1000")),
        (
            "too-long-email",
            users(&[&format!("{}@example.com", "x".repeat(250))]),
            Refused("emailAddress"),
        ),
        (
            "empty-group",
            one_with("/users/0/groups", json!([""])),
            Refused("groups"),
        ),
        (
            "too-many-groups",
            one_with(
                "/users/0/groups",
                json!((0..65).map(|i| format!("g{i}")).collect::<Vec<_>>()),
            ),
            Refused("groups"),
        ),
        (
            "kib-group",
            one_with("/users/0/groups", json!([kib])),
            Refused("groups"),
        ),
        (
            "thousand-users-kib-strings",
            json!({"users": thousand_kib}),
            Refused("groups"),
        ),
        (
            "bad-access-policy",
            one_with("/accessPolicy", json!("Sometimes")),
            Refused("accessPolicy"),
        ),
        (
            "bad-deletion-policy",
            one_with("/deletionPolicy", json!("Never")),
            Refused("deletionPolicy"),
        ),
        (
            "bad-endpoint-kind",
            one_with("/endpointRef/kind", json!("Secret")),
            Refused("kind"),
        ),
        (
            "empty-endpoint-name",
            one_with("/endpointRef/name", json!("")),
            Refused("name"),
        ),
    ]
}

/// OrgInvitation specs and fields of the wrong type the CRD refuses.
fn refused_org_and_type_cases() -> Vec<(&'static str, Value, Expect)> {
    use Expect::*;
    vec![
        (
            "org-bad-username",
            org(json!(["not-an-email"])),
            Refused("usernames"),
        ),
        (
            "org-duplicate-username",
            org(json!(["o@example.com", "o@example.com"])),
            Refused("Duplicate"),
        ),
        ("org-no-usernames", org(json!([])), Refused("usernames")),
        (
            "org-too-many-groups",
            with(
                org(json!(["o@example.com"])),
                "/orgInvitation/customGroupsIds",
                json!((0..16).map(|i| format!("g{i}")).collect::<Vec<_>>()),
            ),
            Refused("customGroupsIds"),
        ),
        (
            "wrong-type-bool",
            one_with("/reinviteExpired", json!("yes")),
            Refused("reinviteExpired"),
        ),
        (
            "users-not-a-list",
            json!({"users": {"emailAddress": "a@example.com"}}),
            Refused("users"),
        ),
        (
            "email-not-a-string",
            json!({"users": [{"emailAddress": 42}]}),
            Refused("emailAddress"),
        ),
    ]
}

/// Specs admitted, and ending in a clear condition.
fn admitted_cases() -> Vec<(&'static str, Value, Expect)> {
    use Expect::*;
    let long: Vec<String> = (0..1000).map(long_address).collect();
    let long: Vec<Value> = long
        .iter()
        .map(|e| json!({"emailAddress": e, "groups": [], "userGroups": []}))
        .collect();
    let mut unknown_fields = users(&["extra@example.com"]);
    unknown_fields["nickname"] = json!("hostile");
    unknown_fields["users"][0]["isAdmin"] = json!(true);
    vec![
        // Admitted, and ending in a clear condition.
        ("unknown-fields", unknown_fields, Reason("AllInvited")),
        (
            "case-duplicate",
            users(&["Case@example.com", "case@example.com"]),
            Reason("InvalidSpec"),
        ),
        (
            "paused-not-true",
            users(&["notpaused@example.com"]),
            Reason("AllInvited"),
        ),
        (
            "wrong-api",
            with(
                org(json!(["w@example.com"])),
                "/endpointRef/name",
                json!(ENDPOINT),
            ),
            Reason("EndpointMismatch"),
        ),
        (
            "missing-endpoint",
            with(
                users(&["m@example.com"]),
                "/endpointRef/name",
                json!("nowhere"),
            ),
            Reason("EndpointNotFound"),
        ),
        (
            "default-cluster-endpoint",
            json!({"users": [user("c@example.com")]}),
            LeftAlone,
        ),
        (
            "thousand-long-users",
            json!({"endpointRef": {"kind": "InvitationEndpoint", "name": ENDPOINT}, "users": long}),
            Reason("AllInvited"),
        ),
    ]
}

/// One mailbox in two spellings (issue 16, item 7): every address form other than a plain
/// `local@domain.tld` in ASCII is refused by the CRD's CEL rule, on the in-process server and
/// on kube-apiserver alike (their `format: email` checks differ; the rule does not). Case is
/// folded and plus-addressing is another person: both admitted.
fn spelling_cases() -> Vec<(&'static str, Value, Expect)> {
    use Expect::*;
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
    let mut cases = vec![
        (
            "unicode-lookalike",
            users(&["\u{0430}lice@example.com", "alice@example.com"]),
            Refused(PLAIN),
        ),
        (
            "two-spellings-of-one-mailbox",
            users(&["same@example.com", "Same <same@example.com>"]),
            Refused(PLAIN),
        ),
        // Case is folded and plus-addressing is another person: both admitted.
        (
            "upper-case-is-plain",
            users(&["Plain.Upper@Example.COM"]),
            Reason("AllInvited"),
        ),
        (
            "plus-address-is-another-person",
            users(&["plus@example.com", "plus+ops@example.com"]),
            Reason("AllInvited"),
        ),
    ];
    cases.extend(one_user.map(|(name, address)| (name, users(&[address]), Refused(PLAIN))));
    cases.extend(one_org.map(|(name, username)| (name, org(json!([username])), Refused(PLAIN))));
    cases
}

/// Endpoint specs; admitted ones get a resource `use-<name>` that must end with the reason.
fn endpoint_cases(mock: &str) -> Vec<(&'static str, Value, Expect)> {
    use Expect::*;
    let base = |url: &str| {
        json!({"api": "UserInvite", "url": url, "credentials": {"secretRef": {"name": SECRET}},
               "requestsPerSecond": 100, "timeoutSeconds": 5})
    };
    let with_credentials = mock.replace("http://", "http://admin:hunter2@");
    vec![
        (
            "url-credentials",
            base(&with_credentials),
            Reason("EndpointNotReady"),
        ),
        ("url-ftp", base("ftp://127.0.0.1/"), Refused("url")),
        ("url-not-a-url", base("not a url"), Refused("url")),
        (
            "url-plain-http-remote",
            base("http://example.com"),
            Reason("EndpointNotReady"),
        ),
        (
            "timeout-zero",
            with(base(mock), "/timeoutSeconds", json!(0)),
            Refused("timeoutSeconds"),
        ),
        (
            "timeout-too-long",
            with(base(mock), "/timeoutSeconds", json!(121)),
            Refused("timeoutSeconds"),
        ),
        (
            "rate-zero",
            with(base(mock), "/requestsPerSecond", json!(0)),
            Refused("requestsPerSecond"),
        ),
        (
            "api-unknown",
            with(base(mock), "/api", json!("Foo")),
            Refused("api"),
        ),
        (
            "secret-missing",
            with(base(mock), "/credentials/secretRef/name", json!("nope")),
            Reason("EndpointNotReady"),
        ),
        (
            "secret-empty",
            with(
                base(mock),
                "/credentials/secretRef/name",
                json!("empty-token"),
            ),
            Reason("EndpointNotReady"),
        ),
        (
            "org-without-organization",
            with(base(mock), "/api", json!("OrgInvitation")),
            Refused("organizationId"),
        ),
    ]
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
    assert!(
        status.users.len() >= requested(spec),
        "{name}: entries missing: {status:#?}"
    );
    let size = serde_json::to_vec(status).unwrap().len();
    assert!(size < 1024 * 1024, "{name}: status of {size} bytes");
    true
}

#[tokio::test]
async fn hostile_resources_end_in_an_admission_error_or_a_clear_condition() {
    let mut h = Flavor::UserInvite.harness(5, 100).await;
    Flavor::OrgInvitation
        .apply_endpoint(&h.cluster, "org", &h.mock.url, 5, 100)
        .await;
    h.cluster.put_secret("empty-token", "  ").await;
    h.start_controller();
    let mut outcomes = Outcomes::default();
    create_hostile_resources(&h, &mut outcomes).await;
    create_hostile_endpoints(&h, &mut outcomes).await;
    // A paused annotation that is not "true" pauses nothing.
    let paused = "invite.operators.dev/paused";
    h.cluster
        .annotate("paused-not-true", paused, json!("yes"))
        .await;
    let Outcomes {
        admitted,
        left_alone,
        refused,
        not_created,
    } = outcomes;
    println!(
        "{refused} refused at admission, {} admitted, {not_created} left to a real API server",
        admitted.len()
    );
    assert!(refused + not_created + admitted.len() + left_alone.len() >= 40);
    for (name, spec, reason) in &admitted {
        h.cluster
            .wait_status(name, reason, |s| clear(s, spec, reason, name))
            .await;
    }
    // Created before the others ended: the controller has seen them, and wrote nothing.
    for name in left_alone {
        let inv = h.cluster.invitations().get(name).await.unwrap();
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
    assert!(
        during <= 15 * blocked + 5,
        "{during} reconciles in 3 s: a hot loop"
    );
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
    /// Whether a case is left to a real API server (counted).
    fn left_to_a_real_server(&mut self, h: &Harness, expect: &Expect) -> bool {
        let skip = h.cluster.is_test_server() && matches!(expect, Expect::Refused(_));
        self.not_created += usize::from(skip);
        skip
    }
}

/// A refusal at admission says `what` (a real API server checks `format: email` first, and
/// then skips the CEL rules).
fn assert_refusal(name: &str, what: &str, message: &str) {
    let by_format = what == PLAIN && message.contains("must be of type email");
    assert!(message.contains(what) || by_format, "{name}: {message}");
}

async fn create_hostile_resources(h: &Harness, outcomes: &mut Outcomes) {
    for (name, spec, expect) in resource_cases() {
        if outcomes.left_to_a_real_server(h, &expect) {
            continue;
        }
        let result =
            create::<UserInvitation>(&h.cluster, "UserInvitation", name, spec.clone()).await;
        match (expect, result) {
            (Expect::Refused(what), Err(message)) => {
                assert_refusal(name, what, &message);
                if what == PLAIN {
                    assert!(
                        message.contains("emailAddress") || message.contains("usernames"),
                        "{name}: the refusal names the field: {message}"
                    );
                }
                outcomes.refused += 1;
            }
            (Expect::Reason(reason), Ok(())) => {
                outcomes.admitted.push((name.to_string(), spec, reason));
            }
            (Expect::LeftAlone, Ok(())) => outcomes.left_alone.push(name),
            (expect, result) => panic!("{name}: expected {expect:?}, got {result:?}"),
        }
    }
}

/// Each admitted endpoint gets a resource `use-<name>`.
async fn create_hostile_endpoints(h: &Harness, outcomes: &mut Outcomes) {
    for (name, spec, expect) in endpoint_cases(&h.mock.url) {
        if outcomes.left_to_a_real_server(h, &expect) {
            continue;
        }
        let endpoint = format!("ep-{name}");
        let result =
            create::<InvitationEndpoint>(&h.cluster, "InvitationEndpoint", &endpoint, spec).await;
        match (expect, result) {
            (Expect::Refused(what), Err(message)) => {
                assert_refusal(name, what, &message);
                outcomes.refused += 1;
            }
            (Expect::Reason(reason), Ok(())) => {
                let mut spec = users(&[&format!("{name}@example.com")]);
                spec["endpointRef"]["name"] = json!(endpoint);
                let resource = format!("use-{name}");
                h.cluster.create_invitation(&resource, spec.clone()).await;
                outcomes.admitted.push((resource, spec, reason));
            }
            (expect, result) => panic!("{name}: expected {expect:?}, got {result:?}"),
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
    assert!(
        raw["spec"].get("nickname").is_none(),
        "unknown fields are pruned"
    );
    let dup = get("case-duplicate").await;
    assert_eq!(h.mock.api.invitations_sent_to("case@example.com"), 1);
    assert_eq!(status_of(&dup).users.len(), 2);
    let upper = get("upper-case-is-plain").await;
    assert_eq!(
        status_of(&upper).users[0].email_address,
        "plain.upper@example.com",
        "the person, case folded"
    );
    assert_eq!(h.mock.api.invitations_sent_to("plain.upper@example.com"), 1);
    for person in ["plus@example.com", "plus+ops@example.com"] {
        assert_eq!(h.mock.api.invitations_sent_to(person), 1, "{person}");
    }
    let once = ["case", "plain.upper", "plus", "plus+ops"].map(|p| format!("{p}@example.com"));
    assert_invite_requests_once(&h.mock.api, &once, "one person, one request");
    let credentials = get("use-url-credentials").await;
    let message = &status_of(&credentials).conditions[0].message;
    assert!(
        message.contains("credentials") && !message.contains("hunter2"),
        "{message}"
    );
    let long = get("thousand-long-users").await;
    assert_eq!(status_of(&long).invited, 1000);
}

/// The UserInvitation CRD as it was before the address rule: no CEL rule on the addresses, and
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
        assert!(
            schema.remove("x-kubernetes-validations").is_some(),
            "{field}"
        );
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

/// Objects admitted before the address rule (or by a server that does not evaluate CEL) still
/// name one mailbox in two spellings: the planner refuses each such entry alone (Failed,
/// InvalidSpec, a message saying why), invites every plain address once, and never sends the
/// other spelling to the API. In-process only: a shared real cluster's CRD is not swapped.
#[tokio::test]
async fn objects_admitted_before_the_address_rule_fail_alone_in_the_planner() {
    let mut h = Flavor::UserInvite.harness(5, 100).await;
    if !h.cluster.is_test_server() {
        eprintln!("skipped: needs the in-process API server (swaps the CRD for an older one)");
        h.finish().await;
        return;
    }
    Flavor::OrgInvitation
        .apply_endpoint(&h.cluster, "org", &h.mock.url, 5, 100)
        .await;
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
    let cases = [
        (
            "old-users",
            "alpha",
            users(
                &listed("alpha")
                    .iter()
                    .map(String::as_str)
                    .collect::<Vec<_>>(),
            ),
        ),
        (
            "old-org",
            "omega",
            json!({"endpointRef": {"kind": "InvitationEndpoint", "name": "org"},
                   "orgInvitation": {"usernames": listed("omega"),
                                     "organizationRoles": [{"name": "org_member"}]}}),
        ),
    ];
    for (name, _, spec) in &cases {
        create::<UserInvitation>(&h.cluster, "UserInvitation", name, spec.clone())
            .await
            .unwrap_or_else(|e| panic!("{name}: the old CRD admits it: {e}"));
    }
    // The rule arrives (the CRDs are upgraded) with the objects in place.
    apply_crd(&h.cluster, &UserInvitation::crd()).await;
    h.start_controller();
    for (name, person, _) in &cases {
        let plain = format!("{person}@example.com");
        let inv = h
            .cluster
            .wait_status(name, "InvalidSpec", |s| {
                ready(s).1 == "InvalidSpec" && state(s, &plain).is_some_and(|st| st.is_invited())
            })
            .await;
        let status = status_of(&inv);
        assert_eq!(
            status.users.len(),
            listed(person).len(),
            "{name}: {status:#?}"
        );
        for written in other_spellings(person) {
            let entry = entry(status, &written).unwrap_or_else(|| panic!("{name}: {written:?}"));
            assert_eq!(entry.state, UserState::Failed, "{name}: {entry:?}");
            assert_eq!(entry.reason, Some(FailureReason::InvalidSpec));
            let message = entry.message.as_deref().unwrap_or_default();
            assert!(
                message.starts_with("not a plain email address"),
                "{name}: {message}"
            );
            assert_eq!(h.mock.api.invitations_sent_to(&written), 0, "{written:?}");
        }
        // One person, one invitation; no other spelling reached the API.
        assert_eq!(h.mock.api.invitations_sent_to(&plain), 1, "{plain}");
        assert_invite_requests_once(&h.mock.api, std::slice::from_ref(&plain), name);
    }
    h.finish().await;
}

/// One API-answer case: its own mock, endpoint and resource.
struct ApiCase {
    name: String,
    flavor: Flavor,
    faults: Vec<ScriptedFault>,
    /// The mock sends again to invited users ([`resending`]).
    resend: bool,
}

fn api_cases() -> Vec<ApiCase> {
    let case = |flavor: Flavor| {
        move |(name, fault): (&str, ScriptedFault)| ApiCase {
            name: name.to_string(),
            flavor,
            faults: vec![fault],
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
        .filter(|c| c.faults.iter().any(|f| f.after_effect))
        .map(|c| ApiCase {
            name: format!("{}-resending", c.name),
            flavor: c.flavor,
            faults: c.faults.clone(),
            resend: true,
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
    vec![
        ("lookup-non-json", lookup(F::non_json()).times(2)),
        ("lookup-truncated", lookup(F::truncated()).times(2)),
        ("lookup-huge", lookup(F::huge_body(9 * 1024 * 1024))),
        ("lookup-error-200", lookup(F::error_body_200()).times(2)),
        ("lookup-unknown-users", lookup(F::unknown_users()).times(2)),
        (
            "lookup-wrong-shape",
            lookup(F::body(200, r#"{"validUsers": 42}"#)).times(2),
        ),
        ("lookup-a-list", lookup(F::body(200, "[1, 2, 3]")).times(2)),
        (
            "lookup-redirect",
            lookup(F::redirect(302, "http://127.0.0.1:1/")).times(2),
        ),
        ("lookup-500s", lookup(F::new(500)).times(3)),
        ("invite-non-json", invite(F::non_json())),
        ("invite-non-json-acted", acted(F::non_json())),
        ("invite-truncated-acted", acted(F::truncated())),
        ("invite-error-200", invite(F::error_body_200())),
        ("invite-huge-acted", acted(F::huge_body(9 * 1024 * 1024))),
        ("invite-unknown-users", acted(F::unknown_users())),
        ("invite-a-string", invite(F::body(200, r#""ok""#))),
    ]
}

/// Hostile answers of the OrgInvitation API, by name.
fn org_answers() -> Vec<(&'static str, ScriptedFault)> {
    use ScriptedFault as F;
    let org_invitations = format!("/csp/gateway/am/api/orgs/{ORG}/invitations");
    let list = |f: F| f.method("GET").path(&org_invitations);
    let members = |f: F| f.path("/csp/gateway/am/api/v2/orgs/");
    let invite = |f: F| Flavor::OrgInvitation.on_invite(f);
    vec![
        (
            "token-non-json",
            F::non_json().path("/csp/gateway/am/api/auth"),
        ),
        ("list-error-200", list(F::error_body_200()).times(2)),
        (
            "list-wrong-shape",
            list(F::body(200, r#"{"unexpected": true}"#)).times(2),
        ),
        ("list-unknown-users", list(F::unknown_users()).times(2)),
        ("members-truncated", members(F::truncated())),
        (
            "members-wrong-shape",
            members(F::body(200, r#"{"results": "nope"}"#)).times(2),
        ),
        // The member listing is read once and kept (the operator's own invitations never
        // make it read the members again).
        (
            "members-unknown-users",
            members(F::unknown_users()).times(1),
        ),
        (
            "org-invite-error-200-acted",
            invite(F::error_body_200().after_effect(true)),
        ),
        ("org-invite-non-json", invite(F::non_json())),
        (
            "org-invite-huge-acted",
            invite(F::huge_body(9 * 1024 * 1024).after_effect(true)),
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
    for case in &cases {
        let mock = start_mock(MockConfig {
            resend_to_invited: case.resend,
            ..MockConfig::default()
        })
        .await;
        for fault in &case.faults {
            mock.api.add_fault(fault.clone());
        }
        // Short timeouts: an unknown outcome settles within about 3 s.
        case.flavor
            .apply_endpoint(&h.cluster, &case.name, &mock.url, 1, 100)
            .await;
        let emails = vec![
            format!("{}-1@example.com", case.name),
            format!("{}-2@example.com", case.name),
        ];
        let mut spec = case.flavor.spec(&emails);
        spec["endpointRef"]["name"] = json!(case.name);
        h.cluster.create_invitation(&case.name, spec).await;
        mocks.insert(&case.name, mock);
    }
    for case in &cases {
        let inv = h.cluster.wait_ready(&case.name).await;
        let status = status_of(&inv);
        let mock = &mocks[case.name.as_str()];
        assert_eq!(
            status.users.len(),
            2,
            "{}: no entry for users never asked for: {status:#?}",
            case.name
        );
        for u in &status.users {
            assert!(
                u.email_address.starts_with(&case.name),
                "{}: {u:?}",
                case.name
            );
            assert_eq!(
                mock.api.invitations_sent_to(&u.email_address),
                1,
                "{}: {u:?}",
                case.name
            );
        }
        let emails: Vec<String> = status
            .users
            .iter()
            .map(|u| u.email_address.clone())
            .collect();
        assert_invite_requests_once(&mock.api, &emails, &case.name);
        assert!(
            mock.api.pending_faults().is_empty(),
            "{}: every fault was met",
            case.name
        );
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
