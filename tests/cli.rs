//! The binary's commands as a person runs them from the README.

use std::process::Command;

fn operator() -> Command {
    Command::new(env!("CARGO_BIN_EXE_invite-operator"))
}

/// `rel` in this package's folder, found at run time: `cargo test` sets `CARGO_MANIFEST_DIR` for
/// the test process. Not `env!`: a test binary compiled in another copy of the repository that
/// shares the target folder (CI's clean-copy run) would read that copy's files, and cargo does
/// not rebuild it when only the folder differs.
fn package_path(rel: &str) -> std::path::PathBuf {
    let dir =
        std::env::var_os("CARGO_MANIFEST_DIR").unwrap_or_else(|| env!("CARGO_MANIFEST_DIR").into());
    std::path::Path::new(&dir).join(rel)
}

fn root(path: &str) -> String {
    package_path(path).display().to_string()
}

/// Runs `reconcile -f <manifest, in a file of its own> <args>`.
fn reconcile_manifest(name: &str, manifest: &str, args: &[&str]) -> std::process::Output {
    let dir = std::env::temp_dir().join(format!("invite-cli-{name}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join(format!("{name}.yaml"));
    std::fs::write(&file, manifest).unwrap();
    let out = operator()
        .args(["reconcile", "-f"])
        .arg(&file)
        .args(args)
        .output();
    let _ = std::fs::remove_dir_all(&dir);
    out.unwrap()
}

fn documents(stdout: &[u8]) -> Vec<serde_json::Value> {
    let text = String::from_utf8_lossy(stdout);
    let documents = serde_saphyr::from_multiple::<serde_json::Value>(&text).unwrap();
    documents.into_iter().filter(|v| !v.is_null()).collect()
}

/// The Ready condition's reason in the status of a resource `reconcile` printed.
fn reason(document: &serde_json::Value) -> &serde_json::Value {
    &document["status"]["conditions"][0]["reason"]
}

#[cfg(feature = "mock-api")]
#[test]
fn the_quick_start_invites_everyone_through_the_embedded_mock() {
    for (example, users) in [
        ("examples/userinvite.yaml", 3),
        ("examples/orginvitation.yaml", 2),
        ("examples/cluster-endpoint.yaml", 1),
    ] {
        let args = ["reconcile", "--mock-api", "-f", &root(example)];
        let out = operator().args(args).output().unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "{example}: {stderr}");
        let docs = documents(&out.stdout);
        assert_eq!(docs.len(), 1, "{example}");
        let status = &docs[0]["status"];
        let ready = &status["conditions"][0]["status"];
        assert_eq!(ready, "True", "{example}: {status:?}");
        assert_eq!(reason(&docs[0]), "AllInvited");
        assert_eq!(status["invited"].as_u64(), Some(users));
        for user in status["users"].as_array().unwrap() {
            assert_eq!(user["state"], "Invited");
        }
    }
}

/// The README's walkthroughs create each token Secret with `kubectl create secret`, then apply an
/// example: an example holding the Secret too would overwrite the real token with its
/// placeholder. Each example's placeholder Secret is in a file of its own,
/// `examples/<name>-secret.yaml` (for `reconcile -f` against a real API), and is the one its
/// endpoint names.
#[test]
fn the_examples_hold_no_secret_and_their_endpoints_name_the_secret_files() {
    let read = |path: &str| documents(&std::fs::read(root(path)).expect(path));
    for example in ["userinvite", "orginvitation", "cluster-endpoint"] {
        let docs = read(&format!("examples/{example}.yaml"));
        let kinds: Vec<&str> = docs.iter().filter_map(|d| d["kind"].as_str()).collect();
        let secret = kinds.contains(&"Secret");
        assert!(!secret, "{example}.yaml holds a Secret: {kinds:?}");
        let is_endpoint = |d: &&serde_json::Value| {
            d["kind"]
                .as_str()
                .is_some_and(|k| k.ends_with("InvitationEndpoint"))
        };
        let endpoints: Vec<_> = docs.iter().filter(is_endpoint).collect();
        assert_eq!(endpoints.len(), 1, "{example}.yaml");
        let endpoint = endpoints[0];
        let secret_ref = &endpoint["spec"]["credentials"]["secretRef"];
        let namespace = secret_ref["namespace"].as_str();
        let namespace = namespace.or(endpoint["metadata"]["namespace"].as_str());

        let secrets = read(&format!("examples/{example}-secret.yaml"));
        assert_eq!(secrets.len(), 1, "{example}-secret.yaml");
        let secret = &secrets[0];
        assert_eq!(secret["kind"], "Secret", "{example}-secret.yaml");
        assert_eq!(secret["metadata"]["name"], secret_ref["name"], "{example}");
        let secret_namespace = secret["metadata"]["namespace"].as_str();
        assert_eq!(secret_namespace, namespace, "{example}");
    }
}

/// Against a mock of the test's own (the example's endpoint pointed at it, its Secret as is),
/// so that the mock's journal shows what the dry run sent: the lookup, and no request that
/// invites or changes anything. Runs with and without the `mock-api` feature.
#[test]
fn dry_run_prints_the_plan_and_invites_nobody() {
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let token = "replace-with-your-api-token".into();
    let config = invite_mock::MockConfig {
        token,
        ..Default::default()
    };
    let mock = runtime
        .block_on(invite_mock::MockApi::start(config))
        .unwrap();
    let example = std::fs::read_to_string(root("examples/userinvite.yaml")).unwrap();
    let pointed = example.replace("https://example.wavefront.com", &mock.url);
    assert_ne!(pointed, example, "the example's endpoint URL was replaced");
    let secret = root("examples/userinvite-secret.yaml");
    let out = reconcile_manifest("userinvite", &pointed, &["--dry-run", "-f", &secret]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stdout}{stderr}");
    assert!(stdout.contains("would invite 3 in one call"), "{stdout}");
    let journal = mock.api.journal();
    let lookup = |e: &&invite_mock::JournalEntry| e.path == "/api/v2/user/validateUsers";
    let looked_up = journal.iter().any(|e| lookup(&e));
    assert!(looked_up, "the dry run looked the users up: {journal:#?}");
    let changing = journal.iter().filter(|e| e.method != "GET" && !lookup(e));
    let changing: Vec<_> = changing.collect();
    assert!(changing.is_empty(), "no changing request: {changing:#?}");
    assert!(mock.api.invite_requests().is_empty());
    assert!(mock.api.emails_sent().is_empty());
}

#[test]
fn a_resource_that_is_not_ready_exits_non_zero_with_the_reason() {
    let lonely = "apiVersion: invite.operators.dev/v1alpha1\nkind: UserInvitation\nmetadata: {name: lonely}\nspec:\n  users: [{emailAddress: a@example.com, groups: [], userGroups: []}]\n";
    let out = reconcile_manifest("lonely", lonely, &[]);
    assert_eq!(out.status.code(), Some(1));
    let docs = documents(&out.stdout);
    assert_eq!(reason(&docs[0]), "EndpointNotFound");
}

#[cfg(feature = "mock-api")]
#[test]
fn reconcile_refuses_other_spellings_of_a_mailbox_without_any_admission() {
    // `reconcile -f` runs no admission (no CEL, no format): the planner refuses each address
    // that is not plain, alone, and invites the person once.
    let example = std::fs::read_to_string(root("examples/userinvite.yaml")).unwrap();
    let users = example.find("  users:\n").unwrap();
    let spellings = [
        "alice@example.com",
        "'Alice <alice@example.com>'",
        "alice@example.com.",
        "'\"alice\"@example.com'",
    ];
    let user = |e: &&str| format!("    - {{emailAddress: {e}, groups: [], userGroups: []}}\n");
    let users_yaml: String = spellings.iter().map(user).collect();
    let manifest = format!("{}  users:\n{users_yaml}", &example[..users]);
    let out = reconcile_manifest("spellings", &manifest, &["--mock-api"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    let docs = documents(&out.stdout);
    let status = &docs[0]["status"];
    assert_eq!(reason(&docs[0]), "InvalidSpec", "{status:?}");
    let users = status["users"].as_array().unwrap();
    assert_eq!(users.len(), 4, "{status:?}");
    assert_eq!(users[0]["emailAddress"], "alice@example.com");
    assert_eq!(users[0]["state"], "Invited");
    for user in &users[1..] {
        assert_eq!(user["state"], "Failed", "{user:?}");
        assert_eq!(user["reason"], "InvalidSpec", "{user:?}");
        let message = user["message"].as_str().unwrap();
        let refused = message.starts_with("not a plain email address");
        assert!(refused, "{message}");
    }
}

#[test]
fn crd_prints_every_crd_and_survives_a_closed_pipe() {
    let out = operator().arg("crd").output().unwrap();
    assert!(out.status.success());
    let docs = documents(&out.stdout);
    let names: Vec<_> = docs
        .iter()
        .map(|d| d["metadata"]["name"].as_str().unwrap())
        .collect();
    let kinds = [
        "userinvitations",
        "invitationendpoints",
        "clusterinvitationendpoints",
        "inviteintents",
    ];
    let want: Vec<_> = kinds
        .iter()
        .map(|k| format!("{k}.invite.operators.dev"))
        .collect();
    assert_eq!(names, want);
    // `crd | head -1` must not panic.
    let (piped, also_piped) = (std::process::Stdio::piped(), std::process::Stdio::piped());
    let mut child = operator()
        .arg("crd")
        .stdout(piped)
        .stderr(also_piped)
        .spawn()
        .unwrap();
    drop(child.stdout.take());
    let out = child.wait_with_output().unwrap();
    assert!(!String::from_utf8_lossy(&out.stderr).contains("panicked"));
}

#[cfg(feature = "mock-api")]
#[test]
fn mock_api_serves_until_stopped() {
    use std::io::{BufRead, BufReader};
    let mut command = operator();
    command.args(["mock-api", "--listen", "127.0.0.1:0"]);
    command
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped());
    let mut child = command.spawn().unwrap();
    let mut line = String::new();
    let mut stderr = BufReader::new(child.stderr.take().unwrap());
    stderr.read_line(&mut line).unwrap();
    let _ = child.kill();
    let _ = child.wait();
    let listening = line.contains("mock API listening on http://127.0.0.1:");
    assert!(listening, "{line}");
}

#[cfg(not(feature = "mock-api"))]
#[test]
fn without_the_mock_feature_there_is_no_mock() {
    let out = operator().args(["mock-api", "--help"]).output().unwrap();
    assert!(!out.status.success());
    let example = root("examples/userinvite.yaml");
    let out = operator()
        .args(["reconcile", "--mock-api", "-f", &example])
        .output();
    let out = out.unwrap();
    assert_eq!(out.status.code(), Some(2), "clap refuses the unknown flag");
}
