//! What operations read from a running controller: the metrics the alerts and the dashboard use
//! (build information, leadership, endpoint readiness, snake_case label values), every metric
//! the chart's alerts (`files/prometheus-rules.yaml`) and dashboard (`dashboards/*.json`) name,
//! and the pod named in events as `reportingInstance`.

use std::collections::BTreeSet;

use crate::common::*;
use invite_operator::{api::InvitationEndpoint, controller::CONTROLLER_NAME};
use kube::{Api, api::DeleteParams};
use serde_json::json;

const POD: &str = "invite-operator-5d8c7f9b4-x2x9q";

/// The sample names the exposition has or would have: a counter `c` as `c_total`, a histogram
/// `h` as `h_bucket`, `h_sum` and `h_count`, a gauge by its name (from the `# TYPE` lines, so
/// a family without series yet counts too).
fn exported_names(exposition: &str) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    for line in exposition.lines() {
        let Some(rest) = line.strip_prefix("# TYPE ") else {
            continue;
        };
        let (name, kind) = rest.split_once(' ').expect("# TYPE name type");
        let suffixes: &[&str] = match kind {
            "counter" => &["_total"],
            "histogram" => &["_bucket", "_sum", "_count"],
            _ => &[""],
        };
        names.extend(suffixes.iter().map(|suffix| format!("{name}{suffix}")));
    }
    names
}

/// The `invite_operator_*` names a text mentions.
fn referenced_names(text: &str) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    let mut rest = text;
    while let Some(at) = rest.find("invite_operator_") {
        let tail = &rest[at..];
        let in_name = |c: char| c.is_ascii_alphanumeric() || c == '_';
        let end = tail.find(|c: char| !in_name(c)).unwrap_or(tail.len());
        names.insert(tail[..end].to_string());
        rest = &tail[end..];
    }
    names
}

/// The label values of `label` in the exposition's samples.
fn label_values(exposition: &str, label: &str) -> BTreeSet<String> {
    let key = format!("{label}=\"");
    let (after_comma, first) = (format!(",{key}"), format!("{{{key}"));
    let value = |l: &str| {
        let start = l.find(&after_comma).or_else(|| l.find(&first))? + 1;
        let value = &l[start + key.len()..];
        Some(value[..value.find('"')?].to_string())
    };
    let samples = exposition.lines().filter(|l| !l.starts_with('#'));
    samples.filter_map(value).collect()
}

fn has_line(exposition: &str, line: &str) -> bool {
    exposition.lines().any(|l| l == line)
}

#[tokio::test]
async fn the_metrics_alerts_and_dashboards_read_are_exported() {
    let mut h = Harness::user_invite().await;
    let mut settings = h.cluster.settings();
    settings.instance = Some(POD.to_string());
    h.start_controller_with(settings);
    let cluster = &h.cluster;
    let ns = cluster.namespace.clone();
    let (url, secret) = (&h.mock.url, "not-written");
    cluster.user_invite_endpoint("no-secret", url, secret).await;
    let team = json!({"endpointRef": {"kind": "InvitationEndpoint", "name": "wavefront"},
                      "users": [{"emailAddress": "a@example.com"},
                                {"emailAddress": "b@example.com", "groups": ["no-such-group"]}]});
    cluster.create_invitation("team", team).await;
    cluster.wait_for_reason("team", "PartiallyFailed").await;
    let metrics = h.controller.as_ref().unwrap().metrics.clone();
    let ready = |name: &str, value: u8| {
        format!(
            "invite_operator_endpoint_ready{{kind=\"InvitationEndpoint\",namespace=\"{ns}\",name=\"{name}\"}} {value}"
        )
    };
    // The users are counted once the pass ends, a moment after its status write is seen.
    eventually("both endpoints checked and the users counted", async || {
        let text = metrics.encode();
        let states = label_values(&text, "state");
        let counted = states.contains("invited") && states.contains("failed");
        counted
            && has_line(&text, &ready("wavefront", 1))
            && has_line(&text, &ready("no-secret", 0))
    })
    .await;

    let text = metrics.encode();
    assert!(has_line(&text, "invite_operator_leader 1"), "{text}");
    let revision = option_env!("GIT_SHA")
        .filter(|s| !s.is_empty())
        .unwrap_or("unknown");
    let version = env!("CARGO_PKG_VERSION");
    let build =
        format!("invite_operator_build_info{{version=\"{version}\",revision=\"{revision}\"}} 1");
    assert!(has_line(&text, &build), "{text}");
    assert_labels_are_snake_case(&text);
    assert_the_chart_names_only_exported_metrics(&text);
    // Events name the pod that reported them.
    // Events follow the status write they tell of.
    let events = eventually("the pass's events", async || {
        let events = cluster.events_of("team").await;
        (!events.is_empty())
            .then_some(events)
            .ok_or("none yet".to_string())
    })
    .await;
    for event in &events {
        assert_eq!(event.reporting_instance.as_deref(), Some(POD), "{event:?}");
        let (controller, name) = (event.reporting_controller.as_deref(), CONTROLLER_NAME);
        assert_eq!(controller, Some(name));
    }

    // A deleted endpoint leaves the readiness gauge.
    let endpoints = Api::<InvitationEndpoint>::namespaced(cluster.client.clone(), &ns);
    let deleted = endpoints
        .delete("no-secret", &DeleteParams::default())
        .await;
    deleted.unwrap();
    let gone = async || !metrics.encode().contains("name=\"no-secret\"");
    eventually("the deleted endpoint's series is gone", gone).await;

    // A controller that stops (lost leadership, shutdown) leads no more and reports no endpoint.
    h.controller.take().unwrap().stop().await;
    let text = metrics.encode();
    assert!(has_line(&text, "invite_operator_leader 0"), "{text}");
    assert!(!text.contains("invite_operator_endpoint_ready{"), "{text}");
    h.finish().await;
}

/// Label values that name a kind of thing are snake_case.
fn assert_labels_are_snake_case(text: &str) {
    for label in ["operation", "state", "result", "code", "share"] {
        for value in label_values(text, label) {
            let snake = |c: char| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_';
            let snake_case = !value.is_empty() && value.chars().all(snake);
            assert!(snake_case, "{label}={value:?} is not snake_case:\n{text}");
        }
    }
    let operations = label_values(text, "operation");
    assert!(operations.contains("invite_users"), "{text}");
    let states = label_values(text, "state");
    let both = states.contains("invited") && states.contains("failed");
    assert!(both, "{text}");
}

/// Every metric the chart's alerts and dashboard name is exported.
fn assert_the_chart_names_only_exported_metrics(text: &str) {
    let exported = exported_names(text);
    let chart = package_path("deploy/charts/invite-operator");
    for file in [
        chart.join("files/prometheus-rules.yaml"),
        chart.join("dashboards/invite-operator.json"),
    ] {
        let referenced = referenced_names(&std::fs::read_to_string(&file).unwrap());
        assert!(referenced.len() >= 3, "{}: {referenced:?}", file.display());
        let unknown: Vec<_> = referenced.difference(&exported).collect();
        let file = file.display();
        assert!(
            unknown.is_empty(),
            "{file} names metrics the operator does not export: {unknown:?}\nexported: {exported:?}"
        );
    }
}
