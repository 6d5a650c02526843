//! The CRD YAML in `crds/` (and the Helm chart's copy) is what the Rust types generate;
//! regenerate both with
//! `cargo run -- crd --output-dir crds --output-dir deploy/charts/invite-operator/crd-files`.

use crate::common::package_path;
use invite_operator::api::{CRD_DIRS, all_crds, crd_file_name, crd_yaml};

#[test]
fn crds_directories_are_up_to_date() {
    for dir in CRD_DIRS {
        check_dir(dir);
    }
}

fn check_dir(dir: &str) {
    let dir = package_path(dir);
    let mut stale = Vec::new();
    for crd in all_crds() {
        let path = dir.join(crd_file_name(&crd));
        let on_disk = std::fs::read_to_string(&path).unwrap_or_default();
        if on_disk != crd_yaml(&crd) {
            stale.push(path.display().to_string());
        }
    }
    let expected: Vec<String> = all_crds().iter().map(crd_file_name).collect();
    let names = std::fs::read_dir(&dir).into_iter().flatten();
    let names = names.filter_map(|e| e.ok()?.file_name().into_string().ok());
    let unknown = |name: &String| name.ends_with(".yaml") && !expected.contains(name);
    let extra: Vec<String> = names.filter(unknown).collect();
    assert!(
        stale.is_empty() && extra.is_empty(),
        "{} is stale (changed: {stale:?}, unknown: {extra:?}); run `cargo run -- crd --output-dir crds --output-dir deploy/charts/invite-operator/crd-files`",
        dir.display()
    );
}

#[test]
fn crds_are_structural_and_bound_what_cel_reads() {
    for crd in all_crds() {
        let json = serde_json::to_value(&crd).unwrap();
        let schema = &json["spec"]["versions"][0]["schema"]["openAPIV3Schema"];
        assert_eq!(schema["type"], "object");
        // Every string and list under spec is bounded, so CEL cost estimates stay finite.
        let mut unbounded = Vec::new();
        check_bounds(&schema["properties"]["spec"], "spec", &mut unbounded);
        assert!(
            unbounded.is_empty(),
            "{}: unbounded fields {unbounded:?}",
            crd.metadata.name.unwrap()
        );
    }
}

fn check_bounds(schema: &serde_json::Value, path: &str, unbounded: &mut Vec<String>) {
    // The Kubernetes LabelSelector type is used as is; no CEL rule reads it.
    if path.ends_with(".namespaceSelector") {
        return;
    }
    match schema["type"].as_str() {
        Some("string") if schema.get("maxLength").is_none() && schema.get("enum").is_none() => {
            unbounded.push(path.to_string())
        }
        Some("array") => {
            if schema.get("maxItems").is_none() {
                unbounded.push(path.to_string());
            }
            check_bounds(&schema["items"], &format!("{path}[]"), unbounded);
        }
        Some("object") => {
            if let Some(props) = schema["properties"].as_object() {
                for (k, v) in props {
                    check_bounds(v, &format!("{path}.{k}"), unbounded);
                }
            }
            if let Some(additional) = schema.get("additionalProperties").filter(|a| a.is_object()) {
                check_bounds(additional, &format!("{path}.*"), unbounded);
            }
        }
        _ => {}
    }
}
