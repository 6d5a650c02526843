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
use invite_mock::{MockApi, MockConfig, RunningMock, ScriptedFault};
use invite_operator::api::{
    FailureReason, InvitationEndpoint, UserInvitation, UserInvitationStatus, UserState,
};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::{
    Api, CustomResourceExt, ResourceExt,
    api::{Patch, PatchParams, PostParams},
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

fn with(mut spec: Value, path: &str, value: Value) -> Value {
    *spec.pointer_mut(path).unwrap_or_else(|| panic!("{path}")) = value;
    spec
}

fn org(usernames: Value) -> Value {
    json!({"endpointRef": {"kind": "InvitationEndpoint", "name": "org"},
           "orgInvitation": {"usernames": usernames}})
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
    use Expect::*;
    let many: Vec<String> = (0..1001).map(|i| format!("u{i}@example.com")).collect();
    let many: Vec<&str> = many.iter().map(String::as_str).collect();
    let kib = "k".repeat(1024);
    let thousand_kib: Vec<Value> = (0..1000)
        .map(|i| json!({"emailAddress": format!("k{i}@example.com"), "groups": [kib], "userGroups": []}))
        .collect();
    let long: Vec<String> = (0..1000).map(long_address).collect();
    let long: Vec<Value> = long
        .iter()
        .map(|e| json!({"emailAddress": e, "groups": [], "userGroups": []}))
        .collect();
    let mut unknown_fields = users(&["extra@example.com"]);
    unknown_fields["nickname"] = json!("hostile");
    unknown_fields["users"][0]["isAdmin"] = json!(true);
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
            with(users(&["g@example.com"]), "/users/0/groups", json!([""])),
            Refused("groups"),
        ),
        (
            "too-many-groups",
            with(
                users(&["g@example.com"]),
                "/users/0/groups",
                json!((0..65).map(|i| format!("g{i}")).collect::<Vec<_>>()),
            ),
            Refused("groups"),
        ),
        (
            "kib-group",
            with(users(&["g@example.com"]), "/users/0/groups", json!([kib])),
            Refused("groups"),
        ),
        (
            "thousand-users-kib-strings",
            json!({"users": thousand_kib}),
            Refused("groups"),
        ),
        (
            "bad-access-policy",
            {
                let mut s = users(&["p@example.com"]);
                s["accessPolicy"] = json!("Sometimes");
                s
            },
            Refused("accessPolicy"),
        ),
        (
            "bad-deletion-policy",
            {
                let mut s = users(&["p@example.com"]);
                s["deletionPolicy"] = json!("Never");
                s
            },
            Refused("deletionPolicy"),
        ),
        (
            "bad-endpoint-kind",
            with(
                users(&["p@example.com"]),
                "/endpointRef/kind",
                json!("Secret"),
            ),
            Refused("kind"),
        ),
        (
            "empty-endpoint-name",
            with(users(&["p@example.com"]), "/endpointRef/name", json!("")),
            Refused("name"),
        ),
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
            {
                let mut s = org(json!(["o@example.com"]));
                s["orgInvitation"]["customGroupsIds"] =
                    json!((0..16).map(|i| format!("g{i}")).collect::<Vec<_>>());
                s
            },
            Refused("customGroupsIds"),
        ),
        (
            "wrong-type-bool",
            {
                let mut s = users(&["t@example.com"]);
                s["reinviteExpired"] = json!("yes");
                s
            },
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
        // One mailbox in two spellings (issue 16, item 7): every address form other than a
        // plain `local@domain.tld` in ASCII is refused by the CRD's CEL rule, on the in-process
        // server and on kube-apiserver alike (their `format: email` checks differ; the rule
        // does not).
        (
            "unicode-lookalike",
            users(&["\u{0430}lice@example.com", "alice@example.com"]),
            Refused(PLAIN),
        ),
        (
            "unicode-domain",
            users(&["bob@ex\u{e4}mple.com"]),
            Refused(PLAIN),
        ),
        (
            "display-name",
            users(&["Alice <alice2@example.com>"]),
            Refused(PLAIN),
        ),
        ("no-tld", users(&["a@b"]), Refused(PLAIN)),
        (
            "zero-width",
            users(&["zero\u{200b}width@example.com"]),
            Refused(PLAIN),
        ),
        (
            "display-name-no-space",
            users(&["Alice<alice3@example.com>"]),
            Refused(PLAIN),
        ),
        (
            "angle-brackets",
            users(&["<angle@example.com>"]),
            Refused(PLAIN),
        ),
        (
            "comment-after",
            users(&["comment@example.com(work)"]),
            Refused(PLAIN),
        ),
        (
            "comment-before",
            users(&["(work)comment@example.com"]),
            Refused(PLAIN),
        ),
        (
            "quoted-local-part",
            users(&["\"quoted\"@example.com"]),
            Refused(PLAIN),
        ),
        (
            "route-address",
            users(&["@relay.example.com:route@example.com"]),
            Refused(PLAIN),
        ),
        (
            "percent-route",
            users(&["percent%example.com@relay.example.com"]),
            Refused(PLAIN),
        ),
        (
            "bang-route",
            users(&["relay!bang@example.com"]),
            Refused(PLAIN),
        ),
        (
            "backslash-escape",
            users(&["back\\slash@example.com"]),
            Refused(PLAIN),
        ),
        (
            "leading-space",
            users(&[" lead@example.com"]),
            Refused(PLAIN),
        ),
        (
            "trailing-space",
            users(&["trail@example.com "]),
            Refused(PLAIN),
        ),
        (
            "local-trailing-dot",
            users(&["dot.@example.com"]),
            Refused(PLAIN),
        ),
        (
            "local-leading-dot",
            users(&[".dot@example.com"]),
            Refused(PLAIN),
        ),
        (
            "local-double-dot",
            users(&["do..t@example.com"]),
            Refused(PLAIN),
        ),
        (
            "domain-trailing-dot",
            users(&["fqdn@example.com."]),
            Refused(PLAIN),
        ),
        (
            "domain-double-dot",
            users(&["dd@example..com"]),
            Refused(PLAIN),
        ),
        (
            "domain-literal",
            users(&["literal@[192.0.2.1]"]),
            Refused(PLAIN),
        ),
        ("ip-domain", users(&["ip@192.0.2.1"]), Refused(PLAIN)),
        (
            "two-spellings-of-one-mailbox",
            users(&["same@example.com", "Same <same@example.com>"]),
            Refused(PLAIN),
        ),
        (
            "org-display-name",
            org(json!(["Oscar <oscar@example.com>"])),
            Refused(PLAIN),
        ),
        (
            "org-comment",
            org(json!(["oscar@example.com(c)"])),
            Refused(PLAIN),
        ),
        (
            "org-quoted-local-part",
            org(json!(["\"oscar\"@example.com"])),
            Refused(PLAIN),
        ),
        (
            "org-domain-trailing-dot",
            org(json!(["oscar@example.com."])),
            Refused(PLAIN),
        ),
        (
            "org-non-ascii",
            org(json!(["\u{f8}scar@example.com"])),
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
    ]
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
    let mut admitted: Vec<(String, Value, &'static str)> = Vec::new();
    let mut left_alone: Vec<&str> = Vec::new();
    let mut refused = 0;
    for (name, spec, expect) in resource_cases() {
        let result =
            create::<UserInvitation>(&h.cluster, "UserInvitation", name, spec.clone()).await;
        match (expect, result) {
            (Expect::Refused(what), Err(message)) => {
                // A real API server checks `format: email` first, and then skips the CEL rules.
                let by_format = what == PLAIN && message.contains("must be of type email");
                assert!(message.contains(what) || by_format, "{name}: {message}");
                if what == PLAIN {
                    assert!(
                        message.contains("emailAddress") || message.contains("usernames"),
                        "{name}: the refusal names the field: {message}"
                    );
                }
                refused += 1;
            }
            (Expect::Reason(reason), Ok(())) => {
                admitted.push((name.to_string(), spec, reason));
            }
            (Expect::LeftAlone, Ok(())) => left_alone.push(name),
            (expect, result) => panic!("{name}: expected {expect:?}, got {result:?}"),
        }
    }
    for (name, spec, expect) in endpoint_cases(&h.mock.url) {
        let endpoint = format!("ep-{name}");
        let result =
            create::<InvitationEndpoint>(&h.cluster, "InvitationEndpoint", &endpoint, spec).await;
        match (expect, result) {
            (Expect::Refused(what), Err(message)) => {
                // A real API server checks `format: email` first, and then skips the CEL rules.
                let by_format = what == PLAIN && message.contains("must be of type email");
                assert!(message.contains(what) || by_format, "{name}: {message}");
                refused += 1;
            }
            (Expect::Reason(reason), Ok(())) => {
                let mut spec = users(&[&format!("{name}@example.com")]);
                spec["endpointRef"]["name"] = json!(endpoint);
                let resource = format!("use-{name}");
                h.cluster.create_invitation(&resource, spec.clone()).await;
                admitted.push((resource, spec, reason));
            }
            (expect, result) => panic!("{name}: expected {expect:?}, got {result:?}"),
        }
    }
    // A paused annotation that is not "true" pauses nothing.
    h.cluster
        .invitations()
        .patch(
            "paused-not-true",
            &kube::api::PatchParams::default(),
            &kube::api::Patch::Merge(
                json!({"metadata": {"annotations": {"invite.operators.dev/paused": "yes"}}}),
            ),
        )
        .await
        .unwrap();
    println!(
        "{refused} refused at admission, {} admitted",
        admitted.len()
    );
    assert!(refused + admitted.len() + left_alone.len() >= 40);
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
    // Specific promises.
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
    Api::<CustomResourceDefinition>::all(cluster.client.clone())
        .patch(
            &crd.name_any(),
            &PatchParams::apply("invite-operator-e2e").force(),
            &Patch::Apply(crd),
        )
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
    use Flavor::*;
    let validate = || ScriptedFault::non_json().path("/api/v2/user/validateUsers");
    let at = |f: ScriptedFault, path: &str| f.path(path);
    let org_users = "/csp/gateway/am/api/v2/orgs/";
    let org_invitations = format!("/csp/gateway/am/api/orgs/{ORG}/invitations");
    let case = |name: &str, flavor, faults| ApiCase {
        name: name.to_string(),
        flavor,
        faults,
        resend: false,
    };
    let lookup = |f: ScriptedFault| at(f, "/api/v2/user/validateUsers");
    let invite = |flavor: Flavor, f: ScriptedFault| flavor.on_invite(f);
    let list = |f: ScriptedFault| f.method("GET").path(&org_invitations);
    let mut cases = vec![
        case("lookup-non-json", UserInvite, vec![validate().times(2)]),
        case(
            "lookup-truncated",
            UserInvite,
            vec![lookup(ScriptedFault::truncated()).times(2)],
        ),
        case(
            "lookup-huge",
            UserInvite,
            vec![lookup(ScriptedFault::huge_body(9 * 1024 * 1024))],
        ),
        case(
            "lookup-error-200",
            UserInvite,
            vec![lookup(ScriptedFault::error_body_200()).times(2)],
        ),
        case(
            "lookup-unknown-users",
            UserInvite,
            vec![lookup(ScriptedFault::unknown_users()).times(2)],
        ),
        case(
            "lookup-wrong-shape",
            UserInvite,
            vec![lookup(ScriptedFault::body(200, r#"{"validUsers": 42}"#)).times(2)],
        ),
        case(
            "lookup-a-list",
            UserInvite,
            vec![lookup(ScriptedFault::body(200, "[1, 2, 3]")).times(2)],
        ),
        case(
            "lookup-redirect",
            UserInvite,
            vec![lookup(ScriptedFault::redirect(302, "http://127.0.0.1:1/")).times(2)],
        ),
        case(
            "lookup-500s",
            UserInvite,
            vec![lookup(ScriptedFault::new(500)).times(3)],
        ),
        case(
            "invite-non-json",
            UserInvite,
            vec![invite(UserInvite, ScriptedFault::non_json())],
        ),
        case(
            "invite-non-json-acted",
            UserInvite,
            vec![invite(
                UserInvite,
                ScriptedFault::non_json().after_effect(true),
            )],
        ),
        case(
            "invite-truncated-acted",
            UserInvite,
            vec![invite(
                UserInvite,
                ScriptedFault::truncated().after_effect(true),
            )],
        ),
        case(
            "invite-error-200",
            UserInvite,
            vec![invite(UserInvite, ScriptedFault::error_body_200())],
        ),
        case(
            "invite-huge-acted",
            UserInvite,
            vec![invite(
                UserInvite,
                ScriptedFault::huge_body(9 * 1024 * 1024).after_effect(true),
            )],
        ),
        case(
            "invite-unknown-users",
            UserInvite,
            vec![invite(
                UserInvite,
                ScriptedFault::unknown_users().after_effect(true),
            )],
        ),
        case(
            "invite-a-string",
            UserInvite,
            vec![invite(UserInvite, ScriptedFault::body(200, r#""ok""#))],
        ),
        case(
            "token-non-json",
            OrgInvitation,
            vec![ScriptedFault::non_json().path("/csp/gateway/am/api/auth")],
        ),
        case(
            "list-error-200",
            OrgInvitation,
            vec![list(ScriptedFault::error_body_200()).times(2)],
        ),
        case(
            "list-wrong-shape",
            OrgInvitation,
            vec![list(ScriptedFault::body(200, r#"{"unexpected": true}"#)).times(2)],
        ),
        case(
            "list-unknown-users",
            OrgInvitation,
            vec![list(ScriptedFault::unknown_users()).times(2)],
        ),
        case(
            "members-truncated",
            OrgInvitation,
            vec![at(ScriptedFault::truncated(), org_users)],
        ),
        case(
            "members-wrong-shape",
            OrgInvitation,
            vec![
                at(
                    ScriptedFault::body(200, r#"{"results": "nope"}"#),
                    org_users,
                )
                .times(2),
            ],
        ),
        case(
            "members-unknown-users",
            OrgInvitation,
            // The member listing is read once and kept (the operator's own invitations
            // never make it read the members again).
            vec![at(ScriptedFault::unknown_users(), org_users).times(1)],
        ),
        case(
            "org-invite-error-200-acted",
            OrgInvitation,
            vec![invite(
                OrgInvitation,
                ScriptedFault::error_body_200().after_effect(true),
            )],
        ),
        case(
            "org-invite-non-json",
            OrgInvitation,
            vec![invite(OrgInvitation, ScriptedFault::non_json())],
        ),
        case(
            "org-invite-huge-acted",
            OrgInvitation,
            vec![invite(
                OrgInvitation,
                ScriptedFault::huge_body(9 * 1024 * 1024).after_effect(true),
            )],
        ),
    ];
    // The UserInvite invitations that take effect whatever the answer, also against an API
    // that would accept a second invitation and send again.
    let resending: Vec<ApiCase> = cases
        .iter()
        .filter(|c| c.flavor == UserInvite && c.name.starts_with("invite-"))
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

#[tokio::test]
async fn hostile_api_answers_end_invited_once() {
    let mut h = Harness::start().await;
    h.cluster.put_secret(SECRET, TOKEN).await;
    h.start_controller();
    let cases = api_cases();
    let mut mocks: BTreeMap<&str, RunningMock> = BTreeMap::new();
    for case in &cases {
        let mock = MockApi::start(MockConfig {
            token: TOKEN.into(),
            organization_id: ORG.into(),
            resend_to_invited: case.resend,
            ..MockConfig::default()
        })
        .await
        .unwrap();
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
        let inv = h.cluster.wait_status(&case.name, "Ready", is_ready).await;
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
