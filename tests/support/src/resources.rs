//! Resource definitions: the built-in resources and those served from CustomResourceDefinitions.

use serde_json::Value;

/// A served resource (group + plural).
#[derive(Debug, Clone)]
pub(crate) struct ResourceDef {
    pub group: String,
    pub plural: String,
    pub kind: String,
    pub list_kind: String,
    pub namespaced: bool,
    /// Served versions; the storage version first.
    pub versions: Vec<String>,
    /// Does the resource have a status subresource?
    pub status: bool,
    /// Is this a custom resource (CRD-backed)? Custom resources carry `metadata.generation`.
    pub custom: bool,
    /// Does PUT of a missing object create it (`AllowCreateOnUpdate`: Leases, Events)?
    pub create_on_update: bool,
}

impl ResourceDef {
    fn builtin(group: &str, plural: &str, kind: &str, namespaced: bool) -> Self {
        ResourceDef {
            group: group.into(),
            plural: plural.into(),
            kind: kind.into(),
            list_kind: format!("{kind}List"),
            namespaced,
            versions: vec!["v1".into()],
            status: false,
            custom: false,
            create_on_update: false,
        }
    }

    /// The resources a fresh server serves.
    pub fn builtins() -> Vec<ResourceDef> {
        let mut namespaces = Self::builtin("", "namespaces", "Namespace", false);
        namespaces.status = true;
        let mut events = Self::builtin("events.k8s.io", "events", "Event", true);
        events.create_on_update = true;
        let mut leases = Self::builtin("coordination.k8s.io", "leases", "Lease", true);
        leases.create_on_update = true;
        let mut crds = Self::builtin(
            "apiextensions.k8s.io",
            "customresourcedefinitions",
            "CustomResourceDefinition",
            false,
        );
        crds.status = true;
        vec![
            namespaces,
            Self::builtin("", "secrets", "Secret", true),
            events,
            leases,
            crds,
        ]
    }

    /// The definition served for a CRD object (None if it serves no version).
    pub fn from_crd(crd: &Value) -> Option<ResourceDef> {
        let spec = crd.get("spec")?;
        let names = spec.get("names")?;
        let kind = names.get("kind")?.as_str()?.to_string();
        let served: Vec<&Value> = spec
            .get("versions")?
            .as_array()?
            .iter()
            .filter(|v| v["served"] == true)
            .collect();
        let mut versions: Vec<String> = served
            .iter()
            .filter_map(|v| v["name"].as_str().map(String::from))
            .collect();
        // The storage version first: objects are stored (and rendered) in it.
        versions.sort_by_key(|v| {
            !served
                .iter()
                .any(|s| s["name"] == *v && s["storage"] == true)
        });
        Some(ResourceDef {
            group: spec.get("group")?.as_str()?.to_string(),
            plural: names.get("plural")?.as_str()?.to_string(),
            list_kind: names["listKind"]
                .as_str()
                .map_or_else(|| format!("{kind}List"), String::from),
            kind,
            namespaced: spec["scope"] == "Namespaced",
            status: served
                .iter()
                .any(|v| v.pointer("/subresources/status").is_some()),
            versions: (!versions.is_empty()).then_some(versions)?,
            custom: true,
            create_on_update: false,
        })
    }

    pub fn serves(&self, version: &str) -> bool {
        self.versions.iter().any(|v| v == version)
    }

    pub fn api_version(&self, version: &str) -> String {
        if self.group.is_empty() {
            version.to_string()
        } else {
            format!("{}/{version}", self.group)
        }
    }

    /// `resource.group` (or just `resource` for the core group), as in error messages.
    pub fn qualified(&self) -> String {
        if self.group.is_empty() {
            self.plural.clone()
        } else {
            format!("{}.{}", self.plural, self.group)
        }
    }

    pub fn is(&self, group: &str, plural: &str) -> bool {
        !self.custom && self.group == group && self.plural == plural
    }
}
