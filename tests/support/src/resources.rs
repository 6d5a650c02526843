//! Resource definitions: the built-in resources and those registered from
//! CustomResourceDefinitions, plus discovery documents.

use crate::errors::ResRef;
use serde_json::{Value, json};

/// One served version of a resource.
#[derive(Debug, Clone)]
pub(crate) struct VersionDef {
    pub name: String,
    pub storage: bool,
    /// The `openAPIV3Schema` (custom resources only).
    pub schema: Option<Value>,
    pub status_subresource: bool,
}

/// A served resource (group + plural).
#[derive(Debug, Clone)]
pub(crate) struct ResourceDef {
    pub group: String,
    pub plural: String,
    pub singular: String,
    pub kind: String,
    pub list_kind: String,
    pub namespaced: bool,
    pub short_names: Vec<String>,
    pub categories: Vec<String>,
    /// Served versions, in version-priority order (first is preferred).
    pub versions: Vec<VersionDef>,
    /// Is this a custom resource (CRD-backed)?
    pub custom: bool,
    /// Does the registry maintain `metadata.generation`?
    pub generation: bool,
    /// Does PUT of a missing object create it (`AllowCreateOnUpdate`)?
    pub create_on_update: bool,
    /// Extra supported field selectors besides metadata.name/namespace.
    pub selectable_fields: Vec<String>,
    /// Extra subresources besides `status` (e.g. `finalize` for namespaces).
    pub extra_subresources: Vec<String>,
    /// Is the owning CRD being deleted (creates forbidden)?
    pub terminating: bool,
}

impl ResourceDef {
    pub fn res_ref(&self) -> ResRef {
        ResRef {
            group: self.group.clone(),
            plural: self.plural.clone(),
            kind: self.kind.clone(),
        }
    }

    pub fn version(&self, v: &str) -> Option<&VersionDef> {
        self.versions.iter().find(|x| x.name == v)
    }

    pub fn storage_version(&self) -> &VersionDef {
        self.versions
            .iter()
            .find(|v| v.storage)
            .unwrap_or(&self.versions[0])
    }

    pub fn api_version(&self, v: &str) -> String {
        if self.group.is_empty() {
            v.to_string()
        } else {
            format!("{}/{}", self.group, v)
        }
    }

    pub fn has_status(&self, version: &str) -> bool {
        self.version(version)
            .map(|v| v.status_subresource)
            .unwrap_or(false)
    }

    pub fn supports_subresource(&self, version: &str, sub: &str) -> bool {
        (sub == "status" && self.has_status(version))
            || self.extra_subresources.iter().any(|s| s == sub)
    }

    pub fn field_selectors(&self) -> Vec<String> {
        let mut v = vec![
            "metadata.name".to_string(),
            "metadata.namespace".to_string(),
        ];
        v.extend(self.selectable_fields.iter().cloned());
        v
    }

    fn builtin(group: &str, version: &str, plural: &str, kind: &str, namespaced: bool) -> Self {
        ResourceDef {
            group: group.into(),
            plural: plural.into(),
            singular: kind.to_lowercase(),
            kind: kind.into(),
            list_kind: format!("{kind}List"),
            namespaced,
            short_names: vec![],
            categories: vec![],
            versions: vec![VersionDef {
                name: version.into(),
                storage: true,
                schema: None,
                status_subresource: false,
            }],
            custom: false,
            generation: false,
            create_on_update: false,
            selectable_fields: vec![],
            extra_subresources: vec![],
            terminating: false,
        }
    }

    /// The resources a fresh server serves.
    pub fn builtins() -> Vec<ResourceDef> {
        let mut ns = Self::builtin("", "v1", "namespaces", "Namespace", false);
        ns.short_names = vec!["ns".into()];
        ns.versions[0].status_subresource = true;
        ns.extra_subresources = vec!["finalize".into()];
        ns.selectable_fields = vec!["status.phase".into()];

        let mut secrets = Self::builtin("", "v1", "secrets", "Secret", true);
        secrets.selectable_fields = vec!["type".into()];

        let mut cms = Self::builtin("", "v1", "configmaps", "ConfigMap", true);
        cms.short_names = vec!["cm".into()];

        let mut events = Self::builtin("", "v1", "events", "Event", true);
        events.short_names = vec!["ev".into()];
        events.create_on_update = true;
        events.selectable_fields = [
            "involvedObject.kind",
            "involvedObject.namespace",
            "involvedObject.name",
            "involvedObject.uid",
            "involvedObject.apiVersion",
            "involvedObject.resourceVersion",
            "involvedObject.fieldPath",
            "reason",
            "reportingComponent",
            "source",
            "type",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();

        let mut ev2 = Self::builtin("events.k8s.io", "v1", "events", "Event", true);
        ev2.short_names = vec!["ev".into()];
        ev2.create_on_update = true;

        let mut leases = Self::builtin("coordination.k8s.io", "v1", "leases", "Lease", true);
        leases.create_on_update = true;

        let mut crds = Self::builtin(
            "apiextensions.k8s.io",
            "v1",
            "customresourcedefinitions",
            "CustomResourceDefinition",
            false,
        );
        crds.short_names = vec!["crd".into(), "crds".into()];
        crds.categories = vec!["api-extensions".into()];
        crds.versions[0].status_subresource = true;
        crds.generation = true;

        vec![ns, secrets, cms, events, ev2, leases, crds]
    }

    /// Builds the definition served for a CRD object (None if it serves nothing).
    pub fn from_crd(crd: &Value) -> Option<ResourceDef> {
        let spec = crd.get("spec")?;
        let group = spec.get("group")?.as_str()?.to_string();
        let names = spec.get("names")?;
        let plural = names.get("plural")?.as_str()?.to_string();
        let kind = names.get("kind")?.as_str()?.to_string();
        let strs = |v: Option<&Value>| -> Vec<String> {
            v.and_then(|v| v.as_array())
                .map(|a| {
                    a.iter()
                        .filter_map(|s| s.as_str().map(String::from))
                        .collect()
                })
                .unwrap_or_default()
        };
        let mut versions: Vec<VersionDef> = Vec::new();
        let mut selectable = Vec::new();
        for v in spec.get("versions")?.as_array()? {
            if v.get("served").and_then(|s| s.as_bool()) != Some(true) {
                continue;
            }
            let schema = v.pointer("/schema/openAPIV3Schema").cloned();
            for sf in v
                .get("selectableFields")
                .and_then(|s| s.as_array())
                .into_iter()
                .flatten()
            {
                if let Some(p) = sf.get("jsonPath").and_then(|p| p.as_str()) {
                    let p = p.trim_start_matches('.').to_string();
                    if !selectable.contains(&p) {
                        selectable.push(p);
                    }
                }
            }
            versions.push(VersionDef {
                name: v.get("name")?.as_str()?.to_string(),
                storage: v.get("storage").and_then(|s| s.as_bool()).unwrap_or(false),
                schema,
                status_subresource: v.pointer("/subresources/status").is_some(),
            });
        }
        if versions.is_empty() {
            return None;
        }
        versions.sort_by_key(|a| version_priority(&a.name));
        let singular = names
            .get("singular")
            .and_then(|s| s.as_str())
            .filter(|s| !s.is_empty())
            .map(String::from)
            .unwrap_or_else(|| kind.to_lowercase());
        Some(ResourceDef {
            group,
            plural,
            singular,
            list_kind: names
                .get("listKind")
                .and_then(|s| s.as_str())
                .map(String::from)
                .unwrap_or_else(|| format!("{kind}List")),
            kind,
            namespaced: spec.get("scope").and_then(|s| s.as_str()) == Some("Namespaced"),
            short_names: strs(names.get("shortNames")),
            categories: strs(names.get("categories")),
            versions,
            custom: true,
            generation: true,
            create_on_update: false,
            selectable_fields: selectable,
            extra_subresources: vec![],
            terminating: false,
        })
    }

    /// One entry of an `APIResourceList`.
    pub fn discovery_entries(&self, version: &str) -> Vec<Value> {
        let verbs = json!([
            "create",
            "delete",
            "deletecollection",
            "get",
            "list",
            "patch",
            "update",
            "watch"
        ]);
        let mut main = json!({
            "name": self.plural,
            "singularName": self.singular,
            "namespaced": self.namespaced,
            "kind": self.kind,
            "verbs": verbs,
        });
        if !self.short_names.is_empty() {
            main["shortNames"] = json!(self.short_names);
        }
        if !self.categories.is_empty() {
            main["categories"] = json!(self.categories);
        }
        let mut out = vec![main];
        if self.has_status(version) {
            out.push(json!({
                "name": format!("{}/status", self.plural),
                "singularName": "",
                "namespaced": self.namespaced,
                "kind": self.kind,
                "verbs": ["get", "patch", "update"],
            }));
        }
        for s in &self.extra_subresources {
            out.push(json!({
                "name": format!("{}/{}", self.plural, s),
                "singularName": "",
                "namespaced": self.namespaced,
                "kind": self.kind,
                "verbs": ["update"],
            }));
        }
        out
    }

    /// One resource of an aggregated (`apidiscovery.k8s.io/v2`) version entry.
    pub fn aggregated_entry(&self, version: &str) -> Value {
        let mut r = json!({
            "resource": self.plural,
            "responseKind": {"group": self.group, "version": version, "kind": self.kind},
            "scope": if self.namespaced { "Namespaced" } else { "Cluster" },
            "singularResource": self.singular,
            "verbs": ["create", "delete", "deletecollection", "get", "list", "patch", "update", "watch"],
        });
        if !self.short_names.is_empty() {
            r["shortNames"] = json!(self.short_names);
        }
        if !self.categories.is_empty() {
            r["categories"] = json!(self.categories);
        }
        let mut subs = Vec::new();
        if self.has_status(version) {
            subs.push(json!({
                "subresource": "status",
                "responseKind": {"group": self.group, "version": version, "kind": self.kind},
                "verbs": ["get", "patch", "update"],
            }));
        }
        if !subs.is_empty() {
            r["subresources"] = Value::Array(subs);
        }
        r
    }
}

/// Kubernetes version priority: GA > beta > alpha > other; higher numbers first.
pub(crate) fn version_priority(v: &str) -> (u8, i64, i64, String) {
    let re = regex::Regex::new(r"^v(\d+)(?:(alpha|beta)(\d+))?$").expect("valid regex");
    match re.captures(v) {
        Some(c) => {
            let major: i64 = c[1].parse().unwrap_or(0);
            let minor: i64 = c.get(3).and_then(|m| m.as_str().parse().ok()).unwrap_or(0);
            let tier = match c.get(2).map(|m| m.as_str()) {
                None => 0,
                Some("beta") => 1,
                _ => 2,
            };
            (tier, -major, -minor, String::new())
        }
        None => (3, 0, 0, v.to_string()),
    }
}
