//! OrgInvitation membership at scale: seeding tens of thousands of members, the paged member
//! list, the user search (first 20 "contains" matches) and redeemed invitations.

mod common;

use std::collections::HashSet;
use std::time::{Duration, Instant};

use common::{access_token, control, json_of};
use invite_mock::{MockApi, MockConfig, RunningMock};
use reqwest::{Client, StatusCode};
use serde_json::{Value, json};

const CSP: &str = "/csp/gateway/am/api";
const ORG: &str = "mock-org";

struct Csp {
    base: String,
    http: Client,
    token: String,
}

impl Csp {
    async fn new(m: &RunningMock) -> Csp {
        let http = Client::new();
        let token = access_token(&http, m, "mock-token").await;
        Csp {
            base: format!("{}{CSP}", m.url),
            http,
            token,
        }
    }

    async fn get(&self, path_and_query: &str) -> (StatusCode, Value) {
        let r = self
            .http
            .get(format!("{}{path_and_query}", self.base))
            .header("csp-auth-token", &self.token)
            .send()
            .await
            .expect("answer");
        let status = r.status();
        (status, r.json().await.unwrap_or(Value::Null))
    }

    /// Invites `username`; returns the answer's status.
    async fn invite(&self, username: &str) -> StatusCode {
        let url = format!("{}/orgs/{ORG}/invitations", self.base);
        let request = self.http.post(url).header("csp-auth-token", &self.token);
        let answer = request.json(&json!({"usernames": [username]})).send().await;
        answer.expect("answer").status()
    }

    async fn search(&self, term: &str) -> Vec<Value> {
        let (status, v) = self
            .get(&format!("/orgs/{ORG}/users/search?userSearchTerm={term}"))
            .await;
        assert_eq!(status, 200, "{v}");
        v["results"].as_array().cloned().unwrap_or_default()
    }
}

fn username(entry: &Value) -> String {
    entry["user"]["username"]
        .as_str()
        .unwrap_or_default()
        .to_string()
}

#[tokio::test]
async fn an_organization_of_25000_members_pages_and_searches() {
    let m = MockApi::start(MockConfig::default()).await.expect("mock");
    let t = Instant::now();
    let added = m
        .api
        .seed_org_members((0..25_000).map(|i| format!("member-{i:05}@corp.example.com")));
    assert_eq!(added, 25_000);
    // Seeding is fast (a few ms in release; generous for debug builds on a busy machine).
    assert!(t.elapsed() < Duration::from_secs(5), "{:?}", t.elapsed());
    // Already members are skipped.
    assert_eq!(m.api.seed_org_members(["MEMBER-00000@corp.example.com"]), 0);

    // More over HTTP, as a list of usernames and objects.
    let list: Vec<Value> = (0..500)
        .map(|i| {
            if i % 2 == 0 {
                json!(format!("late-{i}@corp.example.com"))
            } else {
                json!({"username": format!("late-{i}@corp.example.com"), "organizationRoles": ["org_owner"]})
            }
        })
        .collect();
    let r = json_of(
        Client::new()
            .post(format!("{}/mock/org/members", m.url))
            .json(&list)
            .send()
            .await,
    )
    .await;
    assert_eq!(r, json!({"added": 500, "total": 25_500}));

    // Page through everything by following nextLink.
    let csp = Csp::new(&m).await;
    let mut next = Some(format!("/v2/orgs/{ORG}/users?pageStart=1&pageLimit=200"));
    let mut seen = HashSet::new();
    let mut pages = 0;
    while let Some(path) = next.take() {
        let (status, page) = csp.get(&path).await;
        assert_eq!(status, 200, "{page}");
        assert_eq!(page["totalResults"], 25_500);
        for entry in page["results"].as_array().expect("results") {
            assert!(seen.insert(username(entry)), "{entry} listed twice");
        }
        pages += 1;
        next = page["nextLink"]
            .as_str()
            .map(|l| l.trim_start_matches(CSP).to_string());
    }
    assert_eq!(pages, 128);
    assert_eq!(seen.len(), 25_500);
    let (_, last) = csp
        .get(&format!(
            "/v2/orgs/{ORG}/users?pageStart=25401&pageLimit=200"
        ))
        .await;
    assert_eq!(last["results"].as_array().map(Vec::len), Some(100));
    assert!(last.get("nextLink").is_none() && last["prevLink"].is_string());

    // The search: "contains", case-insensitive, the first 20 matches only.
    let many = csp.search("MEMBER-0").await;
    assert_eq!(many.len(), 20);
    assert_eq!(username(&many[0]), "member-00000@corp.example.com");
    let one = csp.search("member-12345@").await;
    assert_eq!(one.len(), 1);
    assert_eq!(username(&one[0]), "member-12345@corp.example.com");
    assert_eq!(one[0]["orgId"], ORG, "same shape as the member list");
    assert!(one[0]["user"]["userId"].is_string() && one[0]["organizationRoles"].is_array());
    assert_eq!(csp.search("late-499").await.len(), 1);
    assert!(csp.search("nobody-by-that-name").await.is_empty());
    let (status, _) = csp.get(&format!("/orgs/{ORG}/users/search")).await;
    assert_eq!(status, 400, "userSearchTerm is required");
}

#[tokio::test]
async fn search_matches_first_and_last_names_and_redeemed_people() {
    let m = MockApi::start(MockConfig::default()).await.expect("mock");
    m.api
        .seed_org_members(["ada.lovelace@example.com", "alan_turing@example.com"]);
    let csp = Csp::new(&m).await;
    // First and last names are derived from the username (`ada.lovelace` → Ada Lovelace).
    let by_last = csp.search("Lovelace").await;
    assert_eq!(by_last.len(), 1);
    assert_eq!(by_last[0]["user"]["lastName"], "Lovelace");
    assert_eq!(csp.search("alan").await.len(), 1);

    // An invitation that is redeemed shows REDEEMED, and the person is a member.
    assert_eq!(csp.invite("grace.hopper@example.com").await, 202);
    assert!(
        csp.search("hopper").await.is_empty(),
        "invited, not a member yet"
    );
    let redeem = Client::new()
        .post(format!(
            "{}/mock/org/invitations/grace.hopper@example.com/redeem",
            m.url
        ))
        .send()
        .await
        .expect("answer");
    assert_eq!(redeem.status(), 200);
    let (_, invitations) = csp.get(&format!("/orgs/{ORG}/invitations")).await;
    assert_eq!(invitations[0]["status"], "REDEEMED");
    let found = csp.search("hopper").await;
    assert_eq!(found.len(), 1);
    assert_eq!(username(&found[0]), "grace.hopper@example.com");
    let (_, page) = csp.get(&format!("/v2/orgs/{ORG}/users")).await;
    assert_eq!(page["totalResults"], 3);
}

#[tokio::test]
async fn calls_are_counted_per_operation() {
    let m = MockApi::start(MockConfig::default()).await.expect("mock");
    m.api
        .seed_org_members((0..30).map(|i| format!("p{i}@example.com")));
    let csp = Csp::new(&m).await;
    csp.get(&format!("/v2/orgs/{ORG}/users?pageStart=1&pageLimit=20"))
        .await;
    csp.get(&format!("/v2/orgs/{ORG}/users?pageStart=21&pageLimit=20"))
        .await;
    // An address with `+` and `@`, encoded: found by "contains".
    assert_eq!(csp.search("p1%40example.com").await.len(), 1);
    assert_eq!(csp.search("p").await.len(), 20, "the first 20 only");
    csp.get(&format!("/orgs/{ORG}/invitations")).await;
    assert_eq!(csp.invite("new@example.com").await, 202);
    let expected = [
        ("exchange token", 1),
        ("invite users", 1),
        ("list invitations", 1),
        ("list members", 2),
        ("search members", 2),
    ];
    let counted = m.api.calls_by_operation();
    assert_eq!(
        counted,
        expected
            .iter()
            .map(|(k, v)| (k.to_string(), *v))
            .collect::<std::collections::BTreeMap<_, _>>()
    );
    // The same over the control endpoint; clearing the journal starts again.
    let over_http = control(&m, "calls").await;
    assert_eq!(over_http["list members"], 2);
    assert_eq!(over_http["search members"], 2);
    m.api.clear_journal();
    assert!(m.api.calls_by_operation().is_empty());
}
