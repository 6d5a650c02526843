//! The mock of both invite APIs, exercised over real HTTP.

use std::time::{Duration, Instant};

use invite_mock::{MockApi, MockConfig, RunningMock, ScriptedFault};
use reqwest::header::HeaderMap;
use reqwest::{Client, Method, RequestBuilder};
use serde_json::{Value, json};

const TOKEN: &str = "mock-token";
const CSP: &str = "/csp/gateway/am/api";

async fn start() -> RunningMock {
    start_with(MockConfig::default()).await
}

async fn start_with(cfg: MockConfig) -> RunningMock {
    MockApi::start(cfg).await.expect("mock starts")
}

struct Answer {
    status: u16,
    body: Value,
    headers: HeaderMap,
}

async fn send(req: RequestBuilder) -> Answer {
    let resp = req.send().await.expect("request sent");
    let status = resp.status().as_u16();
    let headers = resp.headers().clone();
    let text = resp.text().await.expect("body read");
    let body = if text.is_empty() {
        Value::Null
    } else {
        serde_json::from_str(&text).unwrap_or(Value::String(text))
    };
    Answer {
        status,
        body,
        headers,
    }
}

/// A UserInvite client with the right token.
struct Wf {
    base: String,
    http: Client,
}

impl Wf {
    fn new(m: &RunningMock) -> Wf {
        Wf {
            base: m.url.clone(),
            http: Client::new(),
        }
    }
    fn req(&self, method: Method, path: &str) -> RequestBuilder {
        self.http
            .request(method, format!("{}{path}", self.base))
            .bearer_auth(TOKEN)
    }
    async fn get(&self, path: &str) -> Answer {
        send(self.req(Method::GET, path)).await
    }
    async fn post(&self, path: &str, body: Value) -> Answer {
        send(self.req(Method::POST, path).json(&body)).await
    }
    async fn put(&self, path: &str, body: Value) -> Answer {
        send(self.req(Method::PUT, path).json(&body)).await
    }
    async fn invite(&self, users: Value) -> Answer {
        self.post("/api/v2/user/invite", users).await
    }
    async fn invite_one(&self, email: &str) -> Answer {
        self.invite(json!([user(email)])).await
    }
    /// A form-encoded `group`, as grant and revoke for one user take it.
    async fn form(&self, path: &str, group: &str) -> Answer {
        send(self.req(Method::POST, path).form(&[("group", group)])).await
    }
}

fn user(email: &str) -> Value {
    json!({"emailAddress": email, "groups": [], "userGroups": []})
}

fn assert_wf_error(a: &Answer, status: u16) {
    assert_eq!(a.status, status, "{:?}", a.body);
    assert_eq!(a.body["status"]["result"], "ERROR", "{:?}", a.body);
    assert_eq!(a.body["status"]["code"], status, "{:?}", a.body);
    assert!(a.body["status"]["message"].is_string(), "{:?}", a.body);
}

fn assert_csp_error(a: &Answer, status: u16) {
    assert_eq!(a.status, status, "{:?}", a.body);
    assert_eq!(a.body["statusCode"], status, "{:?}", a.body);
    for f in ["cspErrorCode", "errorCode", "message", "requestId"] {
        assert!(a.body[f].is_string(), "{f} in {:?}", a.body);
    }
    assert!(
        a.body["moduleCode"].is_string() || a.body["moduleCode"].is_i64(),
        "{:?}",
        a.body
    );
}

fn message(a: &Answer) -> String {
    a.body["status"]["message"]
        .as_str()
        .or(a.body["message"].as_str())
        .unwrap_or_default()
        .to_string()
}

// ------------------------------------------------------------------------ UserInvite

#[tokio::test]
async fn userinvite_requires_the_token() {
    let m = start().await;
    let http = Client::new();
    let url = format!("{}/api/v2/user", m.url);
    assert_wf_error(&send(http.get(&url)).await, 401);
    assert_wf_error(&send(http.get(&url).bearer_auth("wrong")).await, 401);
    assert_wf_error(
        &send(http.get(&url).header("Authorization", TOKEN)).await,
        401,
    );
    let ok = send(http.get(&url).bearer_auth(TOKEN)).await;
    assert_eq!(ok.status, 200);
    assert_eq!(ok.body, json!([]));
    let ok = send(http.get(&url).header("X-AUTH-TOKEN", TOKEN)).await;
    assert_eq!(ok.status, 200);
}

#[tokio::test]
async fn invite_creates_users_and_sends_one_email_each() {
    let m = start().await;
    let wf = Wf::new(&m);
    let a = wf
        .invite(json!([
            {"emailAddress": "Alice@Example.com", "groups": ["dashboard_management"], "userGroups": [], "roles": ["role-1"]},
            user("bob@example.com"),
        ]))
        .await;
    assert_eq!(a.status, 200, "{:?}", a.body);
    // The spec's answer: one bare UserModel (the last user).
    assert_eq!(a.body["identifier"], "bob@example.com");
    assert_eq!(a.body["customer"], "mock");
    assert!(a.body.get("lastSuccessfulLogin").is_none());
    assert_eq!(a.body["userGroups"][0]["name"], "Everyone");

    let alice = wf.get("/api/v2/user/ALICE%40example.com").await;
    assert_eq!(alice.status, 200);
    assert_eq!(alice.body["identifier"], "alice@example.com");
    assert_eq!(alice.body["groups"], json!(["dashboard_management"]));
    assert_eq!(alice.body["roles"][0]["id"], "role-1");
    let all = wf.get("/api/v2/user").await;
    assert_eq!(all.body.as_array().map(Vec::len), Some(2));

    assert_eq!(m.api.invitations_sent_to("alice@example.com"), 1);
    assert_eq!(m.api.invitations_sent_to("BOB@example.com"), 1);

    // Inviting again: "already created", no second email.
    let again = wf.invite_one("alice@example.com").await;
    assert_wf_error(&again, 400);
    assert!(
        message(&again)
            .contains("User with id alice@example.com is already created in our system."),
        "{}",
        message(&again)
    );
    assert_eq!(m.api.invitations_sent_to("alice@example.com"), 1);
    assert_wf_error(&wf.get("/api/v2/user/nobody@example.com").await, 404);
}

#[tokio::test]
async fn resend_to_invited_sends_again_and_the_wire_count_sees_every_second_request() {
    let m = start_with(MockConfig {
        resend_to_invited: true,
        ..MockConfig::default()
    })
    .await;
    let wf = Wf::new(&m);
    m.api.seed_user(json!({"identifier": "seeded@example.com"}));
    assert_eq!(wf.invite_one("ann@example.com").await.status, 200);
    // Invited, never logged in: invited again, with a second email.
    assert_eq!(wf.invite_one("ANN@example.com").await.status, 200);
    assert_eq!(m.api.invitations_sent_to("ann@example.com"), 2);
    // Logged in, or never invited by email: "already created" as without the setting.
    m.api.login("ann@example.com");
    assert_wf_error(&wf.invite_one("ann@example.com").await, 400);
    assert_wf_error(&wf.invite_one("seeded@example.com").await, 400);
    assert_eq!(m.api.invitations_sent_to("ann@example.com"), 2);
    assert_eq!(m.api.invitations_sent_to("seeded@example.com"), 0);
    // A batch refused for someone else before bob was invited does not count for bob; a
    // request answered by a fault without effect neither; every other request does.
    assert_wf_error(
        &wf.invite(json!([user("bob@example.com"), user("not-an-email")]))
            .await,
        400,
    );
    m.api
        .add_fault(ScriptedFault::new(503).path("/api/v2/user/invite"));
    assert_eq!(wf.invite_one("bob@example.com").await.status, 503);
    assert_eq!(wf.invite_one("bob@example.com").await.status, 200);
    let counts = m.api.invite_requests();
    assert_eq!(counts.get("ann@example.com"), Some(&3), "{counts:?}");
    assert_eq!(counts.get("seeded@example.com"), Some(&1), "{counts:?}");
    assert_eq!(counts.get("bob@example.com"), Some(&1), "{counts:?}");
    assert_eq!(counts.get("not-an-email"), None, "{counts:?}");
}

#[tokio::test]
async fn invite_batches_are_atomic() {
    let m = start().await;
    let wf = Wf::new(&m);
    wf.invite_one("existing@example.com").await;
    let cases = [
        (
            json!([user("ok1@example.com"), user("not-an-email")]),
            "not-an-email",
        ),
        (
            json!([user("ok1@example.com"), {"emailAddress": "perm@example.com", "groups": ["root"], "userGroups": []}]),
            "perm@example.com",
        ),
        (
            json!([
                user("ok1@example.com"),
                user("dup@example.com"),
                user("DUP@example.com")
            ]),
            "DUP@example.com",
        ),
        (
            json!([user("ok1@example.com"), user("existing@example.com")]),
            "existing@example.com",
        ),
        (
            json!([user("ok1@example.com"), {"emailAddress": "nogroups@example.com", "userGroups": []}]),
            "nogroups@example.com",
        ),
    ];
    for (body, culprit) in cases {
        let a = wf.invite(body).await;
        assert_wf_error(&a, 400);
        assert!(message(&a).contains(culprit), "{} / {culprit}", message(&a));
        assert_wf_error(&wf.get("/api/v2/user/ok1@example.com").await, 404);
    }
    assert_eq!(m.api.invitations_sent_to("ok1@example.com"), 0);
    assert_wf_error(&wf.invite(json!([])).await, 400);
    assert_wf_error(&wf.invite(json!(user("x@example.com"))).await, 400);
}

#[tokio::test]
async fn unknown_user_groups_are_ignored_with_a_202_wrapper() {
    let m = start().await;
    m.api.seed_user_group("g-known", "Data team");
    let wf = Wf::new(&m);
    let a = wf
        .invite(json!([{"emailAddress": "carol@example.com", "groups": [], "userGroups": ["g-known", "g-unknown"]}]))
        .await;
    assert_eq!(a.status, 202, "{:?}", a.body);
    assert_eq!(a.body["status"]["result"], "OK");
    assert_eq!(a.body["status"]["code"], 202);
    assert_eq!(
        a.body["status"]["message"],
        "Invalid user groups found and ignored [g-unknown]"
    );
    assert_eq!(a.body["response"]["identifier"], "carol@example.com");
    let groups: Vec<&str> = a.body["response"]["userGroups"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|g| g["id"].as_str())
        .collect();
    assert_eq!(groups.len(), 2);
    assert!(groups.contains(&"g-known"));
    let listed = wf.get("/api/v2/usergroup").await;
    assert_eq!(listed.status, 200);
    assert_eq!(listed.body["response"]["totalItems"], 2);
}

#[tokio::test]
async fn expired_unaccepted_invitations_can_be_resent() {
    let m = start().await;
    let wf = Wf::new(&m);
    assert_eq!(wf.invite_one("dan@example.com").await.status, 200);
    m.api.expire_invitations();
    let again = wf.invite_one("dan@example.com").await;
    assert_eq!(again.status, 200, "{:?}", again.body);
    assert_eq!(m.api.invitations_sent_to("dan@example.com"), 2);
    // Still pending: refused again.
    assert_wf_error(&wf.invite_one("dan@example.com").await, 400);
    // Accepted users are never re-invited, even after expiry.
    m.api.login("dan@example.com");
    m.api.expire_invitations();
    assert_wf_error(&wf.invite_one("dan@example.com").await, 400);
    let u = m.api.user("DAN@example.com").expect("user exists");
    assert!(u["lastSuccessfulLogin"].is_i64());
    assert_eq!(m.api.invitations_sent_to("dan@example.com"), 2);
}

#[tokio::test]
async fn user_operations() {
    const EVE: &str = "eve@example.com";
    const FAY: &str = "fay@example.com";
    const GHOST: &str = "ghost@example.com";
    let m = start().await;
    m.api.seed_user_group("g1", "One");
    m.api.seed_user_group("g2", "Two");
    let wf = Wf::new(&m);
    wf.invite(json!([user(EVE), user(FAY)])).await;

    // validateUsers
    let v = wf
        .post("/api/v2/user/validateUsers", json!([EVE, GHOST]))
        .await;
    assert_eq!(v.status, 200);
    assert_eq!(v.body["status"]["result"], "OK");
    assert_eq!(v.body["response"]["validUsers"][0]["identifier"], EVE);
    assert_eq!(v.body["response"]["invalidIdentifiers"], json!([GHOST]));

    // PUT: full replacement, wrapped answer.
    let p = wf
        .put(
            "/api/v2/user/eve@example.com",
            json!({"identifier": EVE, "groups": ["alerts_management"], "userGroups": ["g1"], "roles": []}),
        )
        .await;
    assert_eq!(p.status, 200, "{:?}", p.body);
    assert_eq!(p.body["status"]["code"], 200);
    assert_eq!(p.body["response"]["groups"], json!(["alerts_management"]));
    assert_eq!(p.body["response"]["userGroups"][1]["id"], "g1");
    assert_wf_error(
        &wf.put("/api/v2/user/eve@example.com", json!({"groups": ["nope"]}))
            .await,
        400,
    );
    assert_wf_error(
        &wf.put("/api/v2/user/ghost@example.com", json!({})).await,
        404,
    );

    // add/remove user groups (bare UserModel)
    let a = wf
        .post("/api/v2/user/eve@example.com/addUserGroups", json!(["g2"]))
        .await;
    assert_eq!(a.status, 200);
    assert_eq!(a.body["userGroups"].as_array().map(Vec::len), Some(3));
    assert_wf_error(
        &wf.post("/api/v2/user/eve@example.com/addUserGroups", json!(["zz"]))
            .await,
        400,
    );
    let r = wf
        .post(
            "/api/v2/user/eve@example.com/removeUserGroups",
            json!(["g1", "g2"]),
        )
        .await;
    assert_eq!(r.body["userGroups"].as_array().map(Vec::len), Some(1));

    // grant / revoke one user: form-encoded `group`.
    let g = wf
        .form("/api/v2/user/eve@example.com/grant", "user_management")
        .await;
    assert_eq!(g.status, 200, "{:?}", g.body);
    assert!(
        g.body["groups"]
            .as_array()
            .is_some_and(|a| a.contains(&json!("user_management")))
    );
    let wrong_type = wf
        .post(
            "/api/v2/user/eve@example.com/grant",
            json!({"group": "user_management"}),
        )
        .await;
    assert_wf_error(&wrong_type, 415);
    let bad_perm = wf
        .form("/api/v2/user/eve@example.com/grant", "superpowers")
        .await;
    assert_wf_error(&bad_perm, 400);
    let rv = wf
        .form("/api/v2/user/eve@example.com/revoke", "user_management")
        .await;
    assert_eq!(rv.body["groups"], json!(["alerts_management"]));

    // grant / revoke a permission to many users.
    let gm = wf
        .post("/api/v2/user/grant/ingestion", json!([EVE, FAY]))
        .await;
    assert_eq!(gm.status, 200);
    assert_eq!(gm.body["identifier"], FAY);
    assert_eq!(
        m.api.user(EVE).map(|u| u["groups"].clone()),
        Some(json!(["alerts_management", "ingestion"]))
    );
    let rm = wf.post("/api/v2/user/revoke/ingestion", json!([FAY])).await;
    assert_eq!(rm.body["groups"], json!([]));
    assert_wf_error(
        &wf.post("/api/v2/user/grant/ingestion", json!([GHOST]))
            .await,
        404,
    );

    // business functions
    let bf = wf
        .get("/api/v2/user/eve@example.com/businessFunctions")
        .await;
    assert_eq!(bf.status, 200);
    assert!(
        bf.body["response"]
            .as_array()
            .is_some_and(|a| a.contains(&json!("MODIFY_ALERTS")))
    );

    // delete one, delete many
    let d = send(wf.req(Method::DELETE, "/api/v2/user/eve@example.com")).await;
    assert_eq!(d.status, 200);
    assert_eq!(d.body, Value::Null);
    assert_wf_error(
        &send(wf.req(Method::DELETE, "/api/v2/user/eve@example.com")).await,
        404,
    );
    let dm = wf
        .post("/api/v2/user/deleteUsers", json!([FAY, GHOST]))
        .await;
    assert_eq!(dm.status, 200);
    assert_eq!(dm.body["response"], json!([FAY]));
    assert_eq!(wf.get("/api/v2/user").await.body, json!([]));
}

#[tokio::test]
async fn create_user_sends_email_only_when_asked() {
    let m = start().await;
    let wf = Wf::new(&m);
    let quiet = wf.post("/api/v2/user", user("quiet@example.com")).await;
    assert_eq!(quiet.status, 200, "{:?}", quiet.body);
    assert_eq!(quiet.body["response"]["identifier"], "quiet@example.com");
    assert_eq!(m.api.invitations_sent_to("quiet@example.com"), 0);
    let loud = wf
        .post("/api/v2/user?sendEmail=true", user("loud@example.com"))
        .await;
    assert_eq!(loud.status, 200);
    assert_eq!(m.api.invitations_sent_to("loud@example.com"), 1);
    // Exists already: returned unchanged, no email.
    let again = wf
        .post("/api/v2/user?sendEmail=true", user("loud@example.com"))
        .await;
    assert_eq!(again.status, 200);
    assert_eq!(m.api.invitations_sent_to("loud@example.com"), 1);
}

#[tokio::test]
async fn multi_tenant_identifiers() {
    let m = start_with(MockConfig {
        multi_tenant_identifiers: true,
        customer: "acme".into(),
        ..MockConfig::default()
    })
    .await;
    let wf = Wf::new(&m);
    let a = wf.invite_one("Gus@Example.com").await;
    assert_eq!(a.body["identifier"], "gus+acme@example.com");
    assert_eq!(
        wf.get("/api/v2/user/gus%2Bacme%40example.com").await.status,
        200
    );
    assert_eq!(
        wf.get("/api/v2/user/gus+acme@example.com").await.status,
        200
    );
    assert_eq!(wf.get("/api/v2/user/gus@example.com").await.status, 404);
    assert_eq!(m.api.invitations_sent_to("gus@example.com"), 1);
}

#[tokio::test]
async fn malformed_bodies_get_the_api_error_shape() {
    let m = start().await;
    let wf = Wf::new(&m);
    let bad = send(
        wf.req(Method::POST, "/api/v2/user/invite")
            .header("content-type", "application/json")
            .body("[{not json"),
    )
    .await;
    assert_wf_error(&bad, 400);
    let no_type = send(wf.req(Method::POST, "/api/v2/user/invite").body("[]")).await;
    assert_wf_error(&no_type, 415);
    assert_wf_error(&wf.get("/api/v2/nothing-here").await, 404);
    let token = csp_token(&m).await;
    let bad_csp = send(
        Client::new()
            .post(format!("{}{CSP}/orgs/mock-org/invitations", m.url))
            .header("csp-auth-token", token)
            .header("content-type", "application/json")
            .body("{"),
    )
    .await;
    assert_csp_error(&bad_csp, 400);
}

// ------------------------------------------------------------------------ OrgInvitation

/// The token exchange's answer to the right API token.
async fn exchange(m: &RunningMock) -> Answer {
    let url = format!("{}{CSP}/auth/api-tokens/authorize", m.url);
    send(Client::new().post(url).form(&[("api_token", TOKEN)])).await
}

async fn csp_token(m: &RunningMock) -> String {
    let a = exchange(m).await;
    assert_eq!(a.status, 200, "{:?}", a.body);
    a.body["access_token"]
        .as_str()
        .expect("access_token")
        .to_string()
}

/// An OrgInvitation client holding an access token.
struct Csp {
    base: String,
    token: String,
    http: Client,
}

impl Csp {
    async fn new(m: &RunningMock) -> Csp {
        Csp {
            base: format!("{}{CSP}", m.url),
            token: csp_token(m).await,
            http: Client::new(),
        }
    }
    fn req(&self, method: Method, path: &str) -> RequestBuilder {
        self.http
            .request(method, format!("{}{path}", self.base))
            .header("csp-auth-token", &self.token)
    }
    async fn get(&self, path: &str) -> Answer {
        send(self.req(Method::GET, path)).await
    }
    async fn post(&self, path: &str, body: Value) -> Answer {
        send(self.req(Method::POST, path).json(&body)).await
    }
    async fn invite(&self, body: Value) -> Answer {
        self.post("/orgs/mock-org/invitations", body).await
    }
    /// Removes these member ids from the organization.
    async fn remove_members(&self, ids: Value) -> Answer {
        let body = json!({"ids": ids});
        let request = self.req(Method::DELETE, "/v2/orgs/mock-org/users");
        send(request.json(&body)).await
    }
    async fn invitations(&self) -> Vec<Value> {
        let a = self.get("/orgs/mock-org/invitations?expand").await;
        assert_eq!(a.status, 200);
        a.body.as_array().cloned().unwrap_or_default()
    }
}

#[tokio::test]
async fn csp_token_exchange_and_expiry() {
    let m = start_with(MockConfig {
        access_token_ttl: Duration::from_millis(300),
        ..MockConfig::default()
    })
    .await;
    let http = Client::new();
    let url = format!("{}{CSP}/auth/api-tokens/authorize", m.url);
    assert_csp_error(
        &send(http.post(&url).form(&[("api_token", "wrong")])).await,
        400,
    );
    assert_csp_error(&send(http.post(&url).form(&[("other", "x")])).await, 400);
    let ok = send(http.post(&url).form(&[("api_token", TOKEN)])).await;
    assert_eq!(ok.status, 200);
    for f in ["access_token", "id_token", "refresh_token", "scope"] {
        assert!(ok.body[f].is_string(), "{f}");
    }
    assert_eq!(ok.body["token_type"], "bearer");
    assert!(ok.body["expires_in"].is_u64());
    let token = ok.body["access_token"].as_str().unwrap_or_default();
    let list = format!("{}{CSP}/orgs/mock-org/invitations", m.url);
    assert_eq!(
        send(http.get(&list).header("csp-auth-token", token))
            .await
            .status,
        200
    );
    assert_eq!(send(http.get(&list).bearer_auth(token)).await.status, 200);
    // The API token itself is not an access token.
    assert_csp_error(
        &send(http.get(&list).header("csp-auth-token", TOKEN)).await,
        401,
    );
    assert_csp_error(&send(http.get(&list)).await, 401);
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert_csp_error(
        &send(http.get(&list).header("csp-auth-token", token)).await,
        401,
    );
    // The deprecated refresh_token form field still works.
    let old = send(http.post(&url).form(&[("refresh_token", TOKEN)])).await;
    assert_eq!(old.status, 200);
}

#[tokio::test]
async fn csp_invitation_lifecycle() {
    let m = start().await;
    let csp = Csp::new(&m).await;
    let a = csp
        .invite(json!({
            "usernames": ["Hana@example.com", "ivan@example.com"],
            "organizationRoles": [{"name": "org_member"}],
            "serviceRolesDtos": [{"serviceDefinitionLink": "/csp/gateway/slc/api/definitions/paid/abc", "serviceRoleNames": ["viewer"]}],
            "customGroupsIds": ["cg1"],
            "invitedBy": "admin@example.com",
        }))
        .await;
    assert_eq!(a.status, 202, "{:?}", a.body);
    assert_eq!(a.body, Value::Null);
    assert_eq!(m.api.invitations_sent_to("hana@example.com"), 1);

    let all = csp.invitations().await;
    assert_eq!(all.len(), 2);
    let hana = &all[0];
    assert_eq!(hana["username"], "Hana@example.com");
    assert_eq!(hana["status"], "AVAILABLE");
    assert_eq!(hana["invitedByUsername"], "admin@example.com");
    assert_eq!(hana["organizationRoles"][0]["name"], "org_member");
    assert_eq!(
        hana["serviceRolesDtos"][0]["serviceRoleNames"],
        json!(["viewer"])
    );
    let week = 7 * 24 * 3600 * 1000;
    let span =
        hana["expirationTime"].as_i64().unwrap_or(0) - hana["generatedAt"].as_i64().unwrap_or(0);
    assert!((week - 1000..=week + 1000).contains(&span), "{span}");
    let ref_link = hana["refLink"].as_str().unwrap_or_default().to_string();
    assert!(ref_link.starts_with("/csp/gateway/am/api/orgs/mock-org/invitations/"));
    // Without expand there are no role details.
    let plain = csp.get("/orgs/mock-org/invitations").await;
    assert!(plain.body[0].get("organizationRoles").is_none());
    // GET by the id in refLink.
    let id = ref_link.rsplit('/').next().unwrap_or_default().to_string();
    let one = csp.get(&format!("/orgs/mock-org/invitations/{id}")).await;
    assert_eq!(one.body["username"], "Hana@example.com");
    assert_csp_error(&csp.get("/orgs/mock-org/invitations/nope").await, 404);

    // The invited person accepts.
    assert!(m.api.redeem_invitation("hana@example.com"));
    let all = csp.invitations().await;
    assert_eq!(all[0]["status"], "REDEEMED");
    assert!(all[0]["redeemedAt"].is_i64());
    let members = csp.get("/v2/orgs/mock-org/users").await;
    assert_eq!(members.body["totalResults"], 1);
    let member = &members.body["results"][0];
    assert_eq!(member["user"]["username"], "Hana@example.com");
    assert_eq!(member["organizationRoles"][0]["name"], "org_member");
    assert_eq!(
        member["serviceRoles"][0]["serviceRoleNames"],
        json!(["viewer"])
    );
    let found = csp
        .get("/orgs/mock-org/users/search?userSearchTerm=hana")
        .await;
    assert_eq!(found.body["results"].as_array().map(Vec::len), Some(1));

    // A member is not invited again (no email); a pending one gets another invitation.
    csp.invite(json!({"usernames": ["hana@example.com", "ivan@example.com"]}))
        .await;
    assert_eq!(m.api.invitations_sent_to("hana@example.com"), 1);
    assert_eq!(m.api.invitations_sent_to("ivan@example.com"), 2);
    assert_eq!(csp.invitations().await.len(), 3);

    // Revoke by usernames, then by id.
    let r = csp
        .post(
            "/orgs/mock-org/invitations?action=revoke",
            json!({"usernames": ["IVAN@example.com"]}),
        )
        .await;
    assert_eq!(r.status, 202);
    let all = csp.invitations().await;
    assert!(all[1..].iter().all(|i| i["status"] == "REVOKED"), "{all:?}");
    assert!(!m.api.redeem_invitation("ivan@example.com"));
    csp.invite(json!({"usernames": ["jo@example.com"], "skipNotify": true}))
        .await;
    assert_eq!(m.api.invitations_sent_to("jo@example.com"), 0);
    let jo = m.api.org_invitations().pop().unwrap_or_default();
    let jo_id = jo["refLink"]
        .as_str()
        .unwrap_or_default()
        .rsplit('/')
        .next()
        .unwrap_or_default()
        .to_string();
    let d = send(csp.req(
        Method::DELETE,
        &format!("/orgs/mock-org/invitations/{jo_id}"),
    ))
    .await;
    assert_eq!(d.status, 200);
    assert_eq!(m.api.org_invitations()[3]["status"], "REVOKED");
    assert_csp_error(
        &send(csp.req(Method::DELETE, "/orgs/mock-org/invitations/unknown")).await,
        404,
    );
}

#[tokio::test]
async fn csp_invitation_validation() {
    let m = start().await;
    let csp = Csp::new(&m).await;
    let nf = csp
        .post(
            "/orgs/other-org/invitations",
            json!({"usernames": ["a@example.com"]}),
        )
        .await;
    assert_csp_error(&nf, 404);
    assert_eq!(
        nf.body["message"],
        "Organization with this identifier is not found."
    );
    assert_csp_error(&csp.invite(json!({"usernames": []})).await, 400);
    assert_csp_error(&csp.invite(json!({})).await, 400);
    assert_csp_error(
        &csp.invite(json!({"usernames": ["not-an-email"]})).await,
        400,
    );
    let groups: Vec<String> = (0..16).map(|i| format!("g{i}")).collect();
    assert_csp_error(
        &csp.invite(json!({"usernames": ["a@example.com"], "customGroupsIds": groups}))
            .await,
        400,
    );
    assert_csp_error(
        &csp.invite(json!({"usernames": ["a@example.com"], "organizationRoles": [{"name": "platform_operator"}]}))
            .await,
        400,
    );
    assert!(csp.invitations().await.is_empty());
    assert_eq!(m.api.invitations_sent_to("a@example.com"), 0);
    // Expired invitations stay AVAILABLE with a past expirationTime and cannot be redeemed.
    csp.invite(json!({"usernames": ["late@example.com"]})).await;
    m.api.expire_invitations();
    let inv = &csp.invitations().await[0];
    assert_eq!(inv["status"], "AVAILABLE");
    assert!(
        inv["expirationTime"].as_i64().unwrap_or(i64::MAX)
            < jiff::Timestamp::now().as_millisecond()
    );
    assert!(!m.api.redeem_invitation("late@example.com"));
}

#[tokio::test]
async fn csp_org_members() {
    let m = start().await;
    for i in 0..5 {
        m.api.seed_org_member(&format!("member{i}@example.com"));
    }
    let csp = Csp::new(&m).await;
    let p1 = csp
        .get("/v2/orgs/mock-org/users?pageStart=1&pageLimit=2")
        .await;
    assert_eq!(p1.body["results"].as_array().map(Vec::len), Some(2));
    assert_eq!(p1.body["totalResults"], 5);
    assert!(p1.body["nextLink"].is_string());
    let p3 = csp
        .get("/v2/orgs/mock-org/users?pageStart=5&pageLimit=2")
        .await;
    assert_eq!(p3.body["results"].as_array().map(Vec::len), Some(1));
    assert!(p3.body.get("nextLink").is_none());
    let ids: Vec<String> = csp.get("/v2/orgs/mock-org/users?pageLimit=200").await.body["results"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|r| r["user"]["userId"].as_str().map(str::to_string))
        .collect();
    assert_eq!(ids.len(), 5);

    // PATCH roles of a member.
    let patch = send(
        csp.req(Method::PATCH, &format!("/v3/users/{}/orgs/mock-org/roles", ids[0]))
            .json(&json!({"organizationRoles": {"roleNamesToAdd": ["org_owner"], "roleNamesToRemove": ["org_member"]}})),
    )
    .await;
    assert_eq!(patch.status, 200, "{:?}", patch.body);
    let roles = &m.api.org_members()[0]["organizationRoles"];
    assert_eq!(roles.as_array().map(Vec::len), Some(1));
    assert_eq!(roles[0]["name"], "org_owner");

    // Remove: partial success; the last owner cannot be removed.
    let rm = csp.remove_members(json!([ids[1], "nobody:1"])).await;
    assert_eq!(rm.status, 200);
    assert_eq!(rm.body["succeeded"], json!([ids[1]]));
    assert_eq!(rm.body["failed"], json!(["nobody:1"]));
    let last_owner = csp.remove_members(json!([ids[0]])).await;
    assert_csp_error(&last_owner, 400);
    let none = csp.remove_members(json!(["nobody:1"])).await;
    assert_csp_error(&none, 404);
    let search = csp
        .get("/orgs/mock-org/users/search?userSearchTerm=MEMBER")
        .await;
    assert_eq!(search.body["results"].as_array().map(Vec::len), Some(4));
}

// ------------------------------------------------------------------------ faults, journal

#[tokio::test]
async fn scripted_faults_with_retry_after() {
    let m = start().await;
    m.api.add_fault(
        ScriptedFault::new(429)
            .method("POST")
            .path("/api/v2/user/invite")
            .retry_after(3)
            .times(2),
    );
    let wf = Wf::new(&m);
    for _ in 0..2 {
        let a = wf.invite_one("kim@example.com").await;
        assert_wf_error(&a, 429);
        assert_eq!(
            a.headers.get("retry-after").and_then(|v| v.to_str().ok()),
            Some("3")
        );
    }
    assert_eq!(m.api.invitations_sent_to("kim@example.com"), 0);
    assert_eq!(wf.invite_one("kim@example.com").await.status, 200);
    assert_eq!(m.api.invitations_sent_to("kim@example.com"), 1);

    // CSP paths answer in the CSP error shape.
    m.api.add_fault(ScriptedFault::new(503).path("/csp/"));
    assert_csp_error(&exchange(&m).await, 503);
    let journal = m.api.journal();
    assert_eq!(journal.iter().filter(|e| e.fault).count(), 3);
}

#[tokio::test]
async fn after_effect_faults_lose_the_response_but_keep_the_effect() {
    let m = start().await;
    m.api.add_fault(
        ScriptedFault::new(503)
            .path("/api/v2/user/invite")
            .after_effect(true),
    );
    let wf = Wf::new(&m);
    let lost = wf.invite_one("lee@example.com").await;
    assert_wf_error(&lost, 503);
    assert_eq!(m.api.invitations_sent_to("lee@example.com"), 1);
    assert!(m.api.user("lee@example.com").is_some());
    // A naive retry finds the user already created.
    assert_wf_error(&wf.invite_one("lee@example.com").await, 400);
    assert_eq!(m.api.invitations_sent_to("lee@example.com"), 1);

    // CSP: the invitation is created although the client saw a 500.
    m.api.add_fault(
        ScriptedFault::new(500)
            .path("/csp/gateway/am/api/orgs/")
            .method("POST")
            .after_effect(true),
    );
    let csp = Csp::new(&m).await;
    let a = csp.invite(json!({"usernames": ["lost@example.com"]})).await;
    assert_csp_error(&a, 500);
    assert_eq!(m.api.org_invitations().len(), 1);
}

#[tokio::test]
async fn delayed_faults_provoke_client_timeouts() {
    let m = start().await;
    m.api.add_fault(
        ScriptedFault::new(504)
            .path("/api/v2/user/invite")
            .delay(Duration::from_millis(600))
            .after_effect(true),
    );
    let client = Client::builder()
        .timeout(Duration::from_millis(150))
        .build()
        .expect("client");
    let err = client
        .post(format!("{}/api/v2/user/invite", m.url))
        .bearer_auth(TOKEN)
        .json(&json!([user("max@example.com")]))
        .send()
        .await;
    assert!(err.is_err_and(|e| e.is_timeout()));
    // The operation happened even though the client gave up.
    assert_eq!(m.api.invitations_sent_to("max@example.com"), 1);
    tokio::time::sleep(Duration::from_millis(700)).await;
    let j = m.api.journal();
    assert_eq!(j.last().map(|e| e.status), Some(504));
}

#[tokio::test]
async fn random_faults_and_latency() {
    let m = start_with(MockConfig {
        fault_rate: 1.0,
        ..MockConfig::default()
    })
    .await;
    let wf = Wf::new(&m);
    assert_wf_error(&wf.get("/api/v2/user").await, 503);
    // Control endpoints are never faulted.
    let st = send(Client::new().get(format!("{}/mock/state", m.url))).await;
    assert_eq!(st.status, 200);
    m.api.set_fault_rate(0.0);
    assert_eq!(wf.get("/api/v2/user").await.status, 200);
    m.api.set_latency(Duration::from_millis(150));
    let t = Instant::now();
    assert_eq!(wf.get("/api/v2/user").await.status, 200);
    assert!(t.elapsed() >= Duration::from_millis(150));
    m.shutdown().await;

    // Half the requests fail, deterministically for a seed.
    let mut outcomes = Vec::new();
    for _ in 0..2 {
        let m = start_with(MockConfig {
            fault_rate: 0.5,
            seed: 7,
            ..MockConfig::default()
        })
        .await;
        let wf = Wf::new(&m);
        let mut statuses = Vec::new();
        for _ in 0..20 {
            statuses.push(wf.get("/api/v2/user").await.status);
        }
        outcomes.push(statuses);
        m.shutdown().await;
    }
    assert_eq!(outcomes[0], outcomes[1]);
    let fails = outcomes[0].iter().filter(|s| **s == 503).count();
    assert!((3..=17).contains(&fails), "{fails}");
}

#[tokio::test]
async fn journal_records_requests_but_never_credentials() {
    let m = start().await;
    let wf = Wf::new(&m);
    wf.invite_one("ned@example.com").await;
    wf.get("/api/v2/user?x=1").await;
    let token = csp_token(&m).await;
    let j = m.api.journal();
    assert_eq!(j.len(), 3);
    assert_eq!(j[0].method, "POST");
    assert_eq!(j[0].path, "/api/v2/user/invite");
    assert_eq!(j[0].body[0]["emailAddress"], "ned@example.com");
    assert_eq!(j[0].status, 200);
    assert_eq!(j[0].auth.as_deref(), Some("authorization"));
    assert_eq!(j[1].query.as_deref(), Some("x=1"));
    assert_eq!(j[1].body, Value::Null);
    assert_eq!(j[2].body["api_token"], "***");
    let dump = serde_json::to_string(&j).unwrap_or_default();
    assert!(!dump.contains(TOKEN) && !dump.contains(&token), "{dump}");
    // Over HTTP too; control requests are not journaled.
    let http = Client::new();
    let over_http = send(http.get(format!("{}/mock/requests", m.url))).await;
    assert_eq!(over_http.body.as_array().map(Vec::len), Some(3));
    assert_eq!(over_http.body[0]["path"], "/api/v2/user/invite");
    assert_eq!(
        send(http.delete(format!("{}/mock/requests", m.url)))
            .await
            .status,
        204
    );
    assert!(m.api.journal().is_empty());
    m.api.clear_journal();
}

#[tokio::test]
async fn control_endpoints_over_http() {
    let m = start().await;
    let http = Client::new();
    let url = |p: &str| format!("{}/mock/{p}", m.url);
    let post = async |p: &str, body: Value| send(http.post(url(p)).json(&body)).await;
    let put = async |p: &str, body: Value| send(http.put(url(p)).json(&body)).await;
    let status_of_post = async |p: &str| send(http.post(url(p))).await.status;
    let g = post("usergroups", json!({"id": "g9", "name": "Nine"})).await;
    assert_eq!(g.status, 201);
    let u = post("users", json!({
        "identifier": "old@example.com", "groups": ["ingestion"], "userGroups": [{"id": "g9"}], "lastSuccessfulLogin": 1
    })).await;
    assert_eq!(u.status, 201, "{:?}", u.body);
    assert_eq!(u.body["userGroups"][1]["id"], "g9");
    assert_eq!(m.api.invitations_sent_to("old@example.com"), 0);
    let login = send(http.post(url("users/old@example.com/login"))).await;
    assert_eq!(login.status, 200);
    assert!(login.body["lastSuccessfulLogin"].as_i64().unwrap_or(0) > 1);
    assert_eq!(status_of_post("users/ghost@example.com/login").await, 404);
    let mem = post(
        "org/members",
        json!({"username": "boss@example.com", "organizationRoles": ["org_owner"]}),
    )
    .await;
    assert_eq!(mem.status, 201);
    assert_eq!(mem.body["organizationRoles"][0]["name"], "org_owner");

    let f = post("faults", json!({
        "method": "GET", "pathPrefix": "/api/v2/user", "status": 429, "retryAfter": 1, "times": 1
    })).await;
    assert_eq!(f.status, 201, "{:?}", f.body);
    let wf = Wf::new(&m);
    let faulted = wf.get("/api/v2/user").await;
    assert_wf_error(&faulted, 429);
    assert_eq!(wf.get("/api/v2/user").await.status, 200);
    let s = put("settings", json!({"latencyMs": 0, "faultRate": 0.0})).await;
    assert_eq!(s.status, 200);
    assert_eq!(put("settings", json!({"faultRate": 2.0})).await.status, 400);

    let csp = Csp::new(&m).await;
    csp.invite(json!({"usernames": ["pat@example.com"]})).await;
    assert_eq!(
        status_of_post("org/invitations/pat@example.com/redeem").await,
        200
    );
    assert_eq!(
        status_of_post("org/invitations/pat@example.com/redeem").await,
        404
    );
    csp.invite(json!({"usernames": ["quinn@example.com"]}))
        .await;
    assert_eq!(status_of_post("expire").await, 204);
    assert!(!m.api.redeem_invitation("quinn@example.com"));

    let state = send(http.get(url("state"))).await;
    assert_eq!(state.status, 200);
    assert_eq!(state.body["emailsSent"]["pat@example.com"], 1);
    assert_eq!(state.body["orgMembers"].as_array().map(Vec::len), Some(2));
    assert_eq!(
        state.body["orgInvitations"].as_array().map(Vec::len),
        Some(2)
    );
    assert_eq!(state.body["users"][0]["identifier"], "old@example.com");
}

// ------------------------------------------------------------------------ spec conformance

/// A spec file in `mock/tests/specs/` (copies of the API descriptions, origins and licences in
/// its `ORIGINS.md`). The folder is found at run time: `cargo test` sets `CARGO_MANIFEST_DIR` for
/// the test process. Not `env!`: a test binary compiled in another copy of the repository that
/// shares the target folder (CI's clean-copy run) would read that copy's files, and cargo does
/// not rebuild it when only the folder differs.
fn spec_path(rel: &str) -> String {
    let dir =
        std::env::var_os("CARGO_MANIFEST_DIR").unwrap_or_else(|| env!("CARGO_MANIFEST_DIR").into());
    format!("{}/tests/specs/{rel}", std::path::Path::new(&dir).display())
}

/// A tiny checker for the parts of Swagger 2.0 / OpenAPI 3 schemas these specs use:
/// `$ref`, `type`, `required`, `properties`, `items`, scalar `enum`.
struct SchemaChecker {
    doc: Value,
}

impl SchemaChecker {
    fn load_json(rel: &str) -> SchemaChecker {
        let path = spec_path(rel);
        let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
        SchemaChecker {
            doc: serde_json::from_str(&text).expect("spec is JSON"),
        }
    }

    fn load_yaml(rel: &str) -> SchemaChecker {
        let path = spec_path(rel);
        let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
        SchemaChecker {
            doc: serde_saphyr::from_str(&text).expect("spec is YAML"),
        }
    }

    fn definition(&self, name: &str) -> Value {
        let d = self.doc["definitions"]
            .get(name)
            .or_else(|| self.doc["components"]["schemas"].get(name))
            .cloned();
        d.unwrap_or_else(|| panic!("no definition {name}"))
    }

    fn resolve<'a>(&'a self, schema: &'a Value) -> &'a Value {
        match schema.get("$ref").and_then(Value::as_str) {
            Some(r) => {
                let ptr = r.trim_start_matches('#');
                self.doc
                    .pointer(ptr)
                    .unwrap_or_else(|| panic!("unresolved {r}"))
            }
            None => schema,
        }
    }

    fn errors(&self, name: &str, v: &Value) -> Vec<String> {
        let mut errs = Vec::new();
        self.check(&self.definition(name), v, name, &mut errs);
        errs
    }

    fn check(&self, schema: &Value, v: &Value, at: &str, errs: &mut Vec<String>) {
        let schema = self.resolve(schema);
        let ty = schema
            .get("type")
            .and_then(Value::as_str)
            .or_else(|| schema.get("properties").map(|_| "object"));
        match ty {
            Some("object") => {
                let Some(obj) = v.as_object() else {
                    errs.push(format!("{at}: expected object, got {v}"));
                    return;
                };
                for r in schema["required"].as_array().into_iter().flatten() {
                    let r = r.as_str().unwrap_or_default();
                    if obj.get(r).is_none_or(Value::is_null) {
                        errs.push(format!("{at}: missing required {r}"));
                    }
                }
                if let Some(props) = schema["properties"].as_object() {
                    for (k, val) in obj {
                        if let Some(ps) = props.get(k)
                            && !val.is_null()
                        {
                            self.check(ps, val, &format!("{at}.{k}"), errs);
                        }
                    }
                }
            }
            Some("array") => {
                let Some(items) = v.as_array() else {
                    errs.push(format!("{at}: expected array, got {v}"));
                    return;
                };
                if let Some(is) = schema.get("items") {
                    for (i, item) in items.iter().enumerate() {
                        self.check(is, item, &format!("{at}[{i}]"), errs);
                    }
                }
            }
            Some("string") => {
                if !v.is_string() {
                    errs.push(format!("{at}: expected string, got {v}"));
                } else if let Some(e) = schema["enum"].as_array()
                    && !e.contains(v)
                {
                    errs.push(format!("{at}: {v} not in enum"));
                }
            }
            Some("integer") if !(v.is_i64() || v.is_u64()) => {
                errs.push(format!("{at}: expected integer, got {v}"));
            }
            Some("number") if !v.is_number() => {
                errs.push(format!("{at}: expected number, got {v}"));
            }
            Some("boolean") if !v.is_boolean() => {
                errs.push(format!("{at}: expected boolean, got {v}"));
            }
            _ => {}
        }
    }

    fn assert_conforms(&self, name: &str, v: &Value) {
        let errs = self.errors(name, v);
        assert!(errs.is_empty(), "{name}: {errs:?} in {v}");
    }

    /// The body schema of an operation (Swagger 2.0 `in: body` parameter).
    fn body_schema(&self, path: &str, method: &str) -> Value {
        self.doc["paths"][path][method]["parameters"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|p| p["in"] == "body")
            .map(|p| p["schema"].clone())
            .unwrap_or_else(|| panic!("no body for {method} {path}"))
    }

    fn schema_errors(&self, schema: &Value, v: &Value) -> Vec<String> {
        let mut errs = Vec::new();
        self.check(schema, v, "body", &mut errs);
        errs
    }
}

const WAVEFRONT_SPEC: &str =
    "userinvite-api/wavefront-user-account-subset-RECONSTRUCTED-v2.223.1.json";
const CSP_SPEC: &str = "org-invitation-api/csp-iam-invitations-subset-HANDWRITTEN.openapi.yaml";

#[tokio::test]
async fn userinvite_bodies_conform_to_the_official_spec() {
    let spec = SchemaChecker::load_json(WAVEFRONT_SPEC);
    let m = start().await;
    m.api.seed_user_group("g1", "One");
    let wf = Wf::new(&m);

    // UserToCreate inside the invite array: what the spec accepts, the mock accepts.
    let invite_schema = spec.body_schema("/api/v2/user/invite", "post");
    let valid = [
        json!({"emailAddress": "v1@example.com", "groups": ["user_management"], "userGroups": ["g1"], "roles": ["Role"]}),
        json!({"emailAddress": "v2@example.com", "groups": [], "userGroups": []}),
    ];
    for (i, u) in valid.iter().enumerate() {
        assert!(spec.schema_errors(&invite_schema, &json!([u])).is_empty());
        let a = wf.invite(json!([u])).await;
        assert_eq!(a.status, 200, "valid #{i}: {:?}", a.body);
        spec.assert_conforms("UserModel", &a.body);
    }
    // What the spec refuses, the mock refuses (400, nothing created).
    let invalid = [
        json!({"groups": [], "userGroups": []}),
        json!({"emailAddress": "i1@example.com", "userGroups": []}),
        json!({"emailAddress": "i2@example.com", "groups": []}),
        json!({"emailAddress": 42, "groups": [], "userGroups": []}),
        json!({"emailAddress": "i3@example.com", "groups": "user_management", "userGroups": []}),
        json!({"emailAddress": "i4@example.com", "groups": [], "userGroups": [1]}),
        json!({"emailAddress": "i5@example.com", "groups": [], "userGroups": [], "roles": "r"}),
        json!({"emailAddress": "i6@example.com", "groups": [], "userGroups": null}),
        json!("i7@example.com"),
    ];
    for u in &invalid {
        assert!(
            !spec.schema_errors(&invite_schema, &json!([u])).is_empty(),
            "checker accepts {u}"
        );
        let a = wf.invite(json!([u])).await;
        assert_wf_error(&a, 400);
        spec.assert_conforms("ResponseStatus", &a.body["status"]);
        // Single UserToCreate for createUser.
        if u.is_object() {
            assert!(!spec.errors("UserToCreate", u).is_empty());
            assert_wf_error(&wf.post("/api/v2/user", u.clone()).await, 400);
        }
    }
    assert_eq!(
        wf.get("/api/v2/user").await.body.as_array().map(Vec::len),
        Some(2)
    );

    // UserRequestDTO (PUT): all optional, typed.
    for body in [
        json!({"identifier": "v2@example.com", "groups": ["ingestion"], "userGroups": ["g1"], "roles": []}),
        json!({"groups": []}),
        json!({}),
    ] {
        spec.assert_conforms("UserRequestDTO", &body);
        let a = wf.put("/api/v2/user/v2@example.com", body).await;
        assert_eq!(a.status, 200, "{:?}", a.body);
        spec.assert_conforms("UserModel", &a.body["response"]);
        spec.assert_conforms("ResponseStatus", &a.body["status"]);
    }
    for body in [
        json!({"groups": "ingestion"}),
        json!({"identifier": 5}),
        json!({"roles": [1]}),
        json!({"ssoId": true}),
        json!({"userGroups": {"id": "g1"}}),
        json!([]),
    ] {
        assert!(!spec.errors("UserRequestDTO", &body).is_empty(), "{body}");
        assert_wf_error(&wf.put("/api/v2/user/v2@example.com", body).await, 400);
    }

    // Lists of ids.
    let ids_schema = spec.body_schema("/api/v2/user/validateUsers", "post");
    assert!(!spec.schema_errors(&ids_schema, &json!([1])).is_empty());
    assert_wf_error(
        &wf.post("/api/v2/user/validateUsers", json!([1])).await,
        400,
    );
    assert_wf_error(
        &wf.post("/api/v2/user/deleteUsers", json!("v1@example.com"))
            .await,
        400,
    );

    // Responses.
    for u in wf
        .get("/api/v2/user")
        .await
        .body
        .as_array()
        .into_iter()
        .flatten()
    {
        spec.assert_conforms("UserModel", u);
    }
    let v = wf
        .post(
            "/api/v2/user/validateUsers",
            json!(["v1@example.com", "x@example.com"]),
        )
        .await;
    spec.assert_conforms("ResponseContainerValidatedUsersDTO", &v.body);
    let g = wf.get("/api/v2/usergroup").await;
    spec.assert_conforms("ResponseContainerPagedUserGroupModel", &g.body);
    let d = wf
        .post("/api/v2/user/deleteUsers", json!(["v1@example.com"]))
        .await;
    spec.assert_conforms("ResponseContainerListString", &d.body);
}

#[tokio::test]
async fn orginvitation_bodies_conform_to_the_spec() {
    let spec = SchemaChecker::load_yaml(CSP_SPEC);
    let m = start().await;
    // The example names the organization role "string".
    m.api.seed_org_role("string");
    let csp = Csp::new(&m).await;
    // The full example of seed 002 (with real usernames).
    let example = json!({
        "customGroupsIds": ["string"],
        "customRoles": [{"createdBy": "string", "createdDate": "string", "expiresAt": 3609941597u64, "lastUpdatedBy": "string", "lastUpdatedDate": "string", "membershipType": "string", "name": "string", "resource": "string"}],
        "invitedBy": "string",
        "orgRoleNames": ["string"],
        "organizationRoles": [{"createdBy": "string", "createdDate": "string", "expiresAt": 3609941597u64, "lastUpdatedBy": "string", "lastUpdatedDate": "string", "membershipType": "string", "name": "string", "resource": "string"}],
        "serviceRolesDtos": [{"serviceDefinitionLink": "string", "serviceRoleNames": ["string"], "serviceRoles": [{"createdBy": "string", "createdDate": "string", "expiresAt": 3609941597u64, "lastUpdatedBy": "string", "lastUpdatedDate": "string", "membershipType": "string", "name": "string", "resource": "string"}]}],
        "skipNotify": false,
        "skipNotifyRegistration": false,
        "usernames": ["seed@example.com"]
    });
    for body in [example, json!({"usernames": ["min@example.com"]})] {
        spec.assert_conforms("UsersOrganizationInvitationRequest", &body);
        let a = csp.invite(body).await;
        assert_eq!(a.status, 202, "{:?}", a.body);
    }
    for body in [
        json!({}),
        json!({"usernames": "x@example.com"}),
        json!({"usernames": [1]}),
        json!({"usernames": ["x@example.com"], "skipNotify": "yes"}),
        json!({"usernames": ["x@example.com"], "organizationRoles": {"name": "org_member"}}),
        json!({"usernames": ["x@example.com"], "customGroupsIds": [true]}),
        json!({"usernames": ["x@example.com"], "serviceRolesDtos": [{"serviceRoleNames": "viewer"}]}),
        json!(["x@example.com"]),
    ] {
        assert!(
            !spec
                .errors("UsersOrganizationInvitationRequest", &body)
                .is_empty(),
            "{body}"
        );
        let a = csp.invite(body).await;
        assert_csp_error(&a, 400);
    }
    assert_eq!(m.api.invitations_sent_to("x@example.com"), 0);
    for inv in csp.invitations().await {
        spec.assert_conforms("UserOrganizationInvitationResponse", &inv);
    }
    let tok = exchange(&m).await;
    spec.assert_conforms("AccessTokenDto", &tok.body);
    // CspErrorResponse, except moduleCode which real servers also send as a string.
    let mut err = csp.get("/orgs/nope/invitations").await.body;
    if let Some(o) = err.as_object_mut() {
        o.remove("moduleCode");
    }
    spec.assert_conforms("CspErrorResponse", &err);
    m.api.seed_org_member("gone@example.com");
    let id = m.api.org_members()[0]["user"]["userId"].clone();
    let body = json!({"ids": [id]});
    spec.assert_conforms("RemoveUsersFromOrganizationRequestV2", &body);
    let rm = csp.remove_members(body["ids"].clone()).await;
    spec.assert_conforms("PartialSuccessResponseString", &rm.body);
}
