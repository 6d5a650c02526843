//! Throughput and memory of the real controller: N UserInvitations of M users each, applied at
//! once against the in-process Kubernetes API server and the mock invite API (with latency),
//! until every resource is Ready; then a resync pass of the unchanged resources.
//!
//! `cargo bench --bench throughput -- [RESOURCES] [USERS] [LATENCY_MS]` (defaults 300 5 10).
//! Prints figures; asserts only correctness (one invitation per address).

use std::time::{Duration, Instant};

use invite_mock::{MockApi, MockConfig};
use invite_operator::{
    api::{UserInvitation, all_crds},
    controller::{self, Settings},
    health::Readiness,
    leader::Leadership,
    telemetry::Metrics,
};
use k8s_openapi::{
    api::core::v1::Secret,
    apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition,
};
use kube::{
    Api, ResourceExt,
    api::{Patch, PatchParams, PostParams},
};
use kube_test_apiserver::TestApiServer;
use serde_json::json;

fn peak_rss_mib() -> Option<f64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kib: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib / 1024.0)
}

#[tokio::main]
async fn main() {
    let args: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with("--"))
        .collect();
    let arg = |i: usize, default: u64| args.get(i).and_then(|a| a.parse().ok()).unwrap_or(default);
    let (resources, users, latency_ms) = (arg(0, 300), arg(1, 5), arg(2, 10));
    println!(
        "invite-operator throughput: {resources} UserInvitations x {users} users, API latency {latency_ms} ms"
    );

    let server = TestApiServer::start().await;
    let client = server.client();
    for crd in all_crds() {
        Api::<CustomResourceDefinition>::all(client.clone())
            .patch(
                &crd.name_any(),
                &PatchParams::apply("bench").force(),
                &Patch::Apply(&crd),
            )
            .await
            .unwrap();
    }
    let mock = MockApi::start(MockConfig {
        token: "bench".into(),
        latency: Duration::from_millis(latency_ms),
        ..Default::default()
    })
    .await
    .unwrap();
    let ns = "default";
    let secret: Secret = serde_json::from_value(
        json!({"metadata": {"name": "token", "namespace": ns}, "stringData": {"token": "bench"}}),
    )
    .unwrap();
    Api::<Secret>::namespaced(client.clone(), ns)
        .create(&PostParams::default(), &secret)
        .await
        .unwrap();
    let endpoint = json!({
        "apiVersion": "invite.operators.dev/v1alpha1", "kind": "InvitationEndpoint",
        "metadata": {"name": "bench", "namespace": ns},
        "spec": {"api": "UserInvite", "url": mock.url, "credentials": {"secretRef": {"name": "token"}},
                 "requestsPerSecond": 1000}
    });
    Api::<invite_operator::api::InvitationEndpoint>::namespaced(client.clone(), ns)
        .create(
            &PostParams::default(),
            &serde_json::from_value(endpoint).unwrap(),
        )
        .await
        .unwrap();

    let metrics = Metrics::new();
    let (ready_tx, mut ready_rx) = tokio::sync::watch::channel(Readiness::default());
    let stop = tokio_util::sync::CancellationToken::new();
    let settings = Settings {
        operator_namespace: ns.into(),
        resync_interval: Duration::from_secs(3600),
        retry_base_delay: Duration::from_millis(100),
        retry_max_delay: Duration::from_secs(2),
        concurrency: 16,
        ..Default::default()
    };
    let run = tokio::spawn(controller::run(
        controller::kube_client(server.config()).unwrap(),
        settings,
        metrics.clone(),
        ready_tx,
        Leadership::unconditional(),
        stop.clone(),
    ));
    let _ = ready_rx.wait_for(|r| *r == Readiness::Ready).await;

    let api: Api<UserInvitation> = Api::namespaced(client.clone(), ns);
    let started = Instant::now();
    for r in 0..resources {
        let spec = json!({
            "endpointRef": {"kind": "InvitationEndpoint", "name": "bench"},
            "users": (0..users).map(|u| json!({"emailAddress": format!("u{u}-r{r}@example.com"), "groups": [], "userGroups": []})).collect::<Vec<_>>()
        });
        let inv: UserInvitation = serde_json::from_value(json!({
            "apiVersion": "invite.operators.dev/v1alpha1", "kind": "UserInvitation",
            "metadata": {"name": format!("r{r}"), "namespace": ns}, "spec": spec
        }))
        .unwrap();
        api.create(&PostParams::default(), &inv).await.unwrap();
    }
    let created = started.elapsed();
    println!(
        "created {resources} resources in {:.2} s",
        created.as_secs_f64()
    );
    let mut last_report = Instant::now();
    loop {
        let list = api.list(&Default::default()).await.unwrap();
        let ready = list
            .items
            .iter()
            .filter(|i| {
                i.status.as_ref().is_some_and(|s| {
                    s.conditions
                        .iter()
                        .any(|c| c.type_ == "Ready" && c.status == "True")
                })
            })
            .count();
        if ready == resources as usize {
            break;
        }
        if last_report.elapsed() > Duration::from_secs(2) {
            println!(
                "  … {ready}/{resources} Ready after {:.1} s",
                started.elapsed().as_secs_f64()
            );
            last_report = Instant::now();
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let converged = started.elapsed();
    let journal = mock.api.journal();
    let invite_calls = journal
        .iter()
        .filter(|e| e.path == "/api/v2/user/invite")
        .count();
    let sent: usize = mock.api.emails_sent().values().sum();
    let duplicates = mock.api.emails_sent().values().filter(|n| **n > 1).count();
    let k8s_requests = server.requests().len();
    println!("all Ready after        {:.2} s", converged.as_secs_f64());
    println!(
        "users invited          {sent} ({:.0} users/s)",
        sent as f64 / converged.as_secs_f64()
    );
    println!("invite calls           {invite_calls} (one per resource)");
    println!("API calls in total     {}", journal.len());
    println!("Kubernetes requests    {k8s_requests}");

    // A restart: every resource is checked again, nothing is written.
    stop.cancel();
    let _ = run.await;
    server.clear_requests();
    mock.api.clear_journal();
    let metrics = Metrics::new();
    let (ready_tx, _ready_rx) = tokio::sync::watch::channel(Readiness::default());
    let stop = tokio_util::sync::CancellationToken::new();
    let restarted = Instant::now();
    let run = tokio::spawn(controller::run(
        controller::kube_client(server.config()).unwrap(),
        Settings {
            operator_namespace: ns.into(),
            concurrency: 16,
            ..Default::default()
        },
        metrics.clone(),
        ready_tx,
        Leadership::unconditional(),
        stop.clone(),
    ));
    loop {
        let done: f64 = metrics
            .encode()
            .lines()
            .filter(|l| l.starts_with("invite_operator_reconciles_total{"))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum();
        if done as u64 >= resources {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let resync = restarted.elapsed();
    let writes = server
        .requests()
        .iter()
        .filter(|r| r.verb == "patch" || r.verb == "update" || r.verb == "create")
        .filter(|r| r.resource == "userinvitations")
        .count();
    println!(
        "restart pass over all  {:.2} s, {} API calls, {writes} UserInvitation writes",
        resync.as_secs_f64(),
        mock.api.journal().len()
    );
    if let Some(rss) = peak_rss_mib() {
        println!("peak RSS (whole bench) {rss:.1} MiB");
    }
    stop.cancel();
    let _ = run.await;
    assert_eq!(duplicates, 0, "an address got two invitations");
    assert_eq!(
        sent as u64,
        resources * users,
        "every address got its invitation"
    );
    assert_eq!(writes, 0, "a restart over settled resources writes nothing");
}
