//! Resolving a UserInvitation's endpoint: the one place an endpoint, the platform's policy
//! and its token are put together. Where the objects come from is a [`Source`]: the
//! controller's caches (and a `get` of the Secret), or the manifests of the one-shot mode.
//!
//! How the token is read: [`secret_location`] says which Secret and key, [`Source::secret`]
//! fetches it, [`credentials`] reads the token ([`read_token`]) and checks the Secret's
//! [`CREDENTIALS_LABEL`] where the rules require it; [`resolve`] then builds the client.

mod allowed;
mod check;
mod url_policy;

use std::collections::BTreeMap;

use k8s_openapi::{ByteString, api::core::v1::Secret};

pub use check::{
    CheckContext, check_endpoint, endpoint_display, required_flavor, selector_matches,
};
pub use url_policy::{EndpointPolicy, check_urls};

use super::plan::{Blocked, ReadyReason};
use crate::{
    api::{AnyEndpoint, ApiIdentity, UserInvitation},
    invite::{ApiToken, ConnectError, SharedApi, api_identity},
};

/// The label a Secret must carry before a namespaced InvitationEndpoint may use it.
pub const CREDENTIALS_LABEL: &str = "invite.operators.dev/credentials";

/// Where the objects a resource is resolved against come from.
pub trait Source: Sync {
    /// Why an object could not be read (not: that it does not exist).
    type Error: Send;

    /// The endpoint a resource references, if there is one.
    fn endpoint(&self, invitation: &UserInvitation) -> Option<AnyEndpoint>;

    /// The labels of a namespace (for a ClusterInvitationEndpoint's namespaceSelector).
    fn namespace_labels(
        &self,
        namespace: &str,
    ) -> impl Future<Output = Result<BTreeMap<String, String>, Self::Error>> + Send;

    /// The Secret at `location`, if it exists.
    fn secret(
        &self,
        location: &SecretLocation,
    ) -> impl Future<Output = Result<Option<Secret>, Self::Error>> + Send;

    /// The client of an endpoint that passed its checks, with its token.
    fn client(&self, endpoint: &AnyEndpoint, token: ApiToken) -> Result<SharedApi, ConnectError>;
}

/// What an endpoint is held to besides its own spec.
#[derive(Clone, Copy, Debug)]
pub struct Rules<'a> {
    /// What the platform allows endpoints to reach.
    pub policy: &'a EndpointPolicy,
    /// Namespace of ClusterInvitationEndpoint Secrets that name none.
    pub operator_namespace: &'a str,
    /// Whether a namespaced InvitationEndpoint may only use Secrets labelled
    /// [`CREDENTIALS_LABEL`]`=true`.
    pub require_credentials_label: bool,
}

/// An endpoint ready to serve a resource.
pub struct Resolved {
    /// The endpoint.
    pub endpoint: AnyEndpoint,
    /// Its client.
    pub api: SharedApi,
    /// The API it reaches.
    pub identity: ApiIdentity,
    /// Where its token is.
    pub location: SecretLocation,
}

/// Where an endpoint's token is stored.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SecretLocation {
    /// Namespace of the Secret.
    pub namespace: String,
    /// Name of the Secret.
    pub name: String,
    /// Key in the Secret's data.
    pub key: String,
}

/// An endpoint's token, or why there is none.
pub enum Credentials {
    /// The token.
    Token(ApiToken),
    /// The Secret or its key is missing.
    Missing(Blocked),
    /// The Secret is not labelled for use by namespaced endpoints ([`CREDENTIALS_LABEL`]):
    /// its value is never sent anywhere.
    NotLabelled(Blocked),
}

/// Finds the endpoint of `invitation`, checks it may serve the resource (`requested_users`
/// of them), reads its token and builds its client.
pub async fn resolve<S: Source>(
    source: &S,
    rules: Rules<'_>,
    invitation: &UserInvitation,
    requested_users: usize,
) -> Result<Result<Resolved, Blocked>, S::Error> {
    let endpoint = source.endpoint(invitation);
    let labels = match &endpoint {
        Some(AnyEndpoint::Cluster(c)) if c.spec.namespace_selector.is_some() => {
            let namespace = invitation.metadata.namespace.as_deref().unwrap_or_default();
            source.namespace_labels(namespace).await?
        }
        _ => BTreeMap::new(),
    };
    let check = CheckContext {
        namespace_labels: &labels,
        requested_users,
        policy: rules.policy,
    };
    if let Err(blocked) = check_endpoint(invitation, endpoint.as_ref(), check) {
        return Ok(Err(blocked));
    }
    let endpoint = endpoint.expect("checked above");
    let not_ready = |message: String| Ok(Err(Blocked::new(ReadyReason::EndpointNotReady, message)));
    let identity = match api_identity(endpoint.connection()) {
        Ok(identity) => identity,
        Err(invalid) => return not_ready(invalid.to_string()),
    };
    let (location, credentials) = credentials(source, rules, &endpoint).await?;
    let token = match credentials {
        Credentials::Token(token) => token,
        Credentials::Missing(blocked) | Credentials::NotLabelled(blocked) => {
            return Ok(Err(blocked));
        }
    };
    match source.client(&endpoint, token) {
        Ok(api) => Ok(Ok(Resolved {
            endpoint,
            api,
            identity,
            location,
        })),
        Err(error) => not_ready(error.to_string()),
    }
}

/// The token of an endpoint and where it is read from. With the rules' label requirement (a
/// namespaced endpoint), only from a Secret labelled [`CREDENTIALS_LABEL`]`=true`: someone who
/// may create endpoints but not read Secrets cannot have the operator send an unlabelled
/// Secret to a host of their choice.
pub async fn credentials<S: Source>(
    source: &S,
    rules: Rules<'_>,
    endpoint: &AnyEndpoint,
) -> Result<(SecretLocation, Credentials), S::Error> {
    let location = secret_location(endpoint, rules.operator_namespace);
    let secret = source.secret(&location).await?;
    let token = match read_token(secret.as_ref(), &location) {
        Ok(token) => token,
        Err(blocked) => return Ok((location, Credentials::Missing(blocked))),
    };
    let labelled = secret
        .as_ref()
        .and_then(|s| s.metadata.labels.as_ref())
        .and_then(|l| l.get(CREDENTIALS_LABEL))
        .is_some_and(|v| v == "true");
    if endpoint.is_namespaced() && rules.require_credentials_label && !labelled {
        let blocked = Blocked::new(
            ReadyReason::EndpointNotReady,
            format!(
                "Secret {}/{} is not labelled {CREDENTIALS_LABEL}=true: a namespaced InvitationEndpoint may only use Secrets labelled for it (SecretNotLabelled)",
                location.namespace, location.name
            ),
        );
        return Ok((location, Credentials::NotLabelled(blocked)));
    }
    Ok((location, Credentials::Token(token)))
}

/// Where the endpoint's token lives. A namespaced endpoint reads its own namespace; a cluster
/// endpoint the namespace in its secretRef, or `operator_namespace`.
pub fn secret_location(endpoint: &AnyEndpoint, operator_namespace: &str) -> SecretLocation {
    let secret_ref = &endpoint.connection().credentials.secret_ref;
    let namespace = match endpoint {
        AnyEndpoint::Namespaced(e) => e.metadata.namespace.clone().unwrap_or_default(),
        AnyEndpoint::Cluster(_) => secret_ref
            .namespace
            .clone()
            .unwrap_or_else(|| operator_namespace.to_string()),
    };
    SecretLocation {
        namespace,
        name: secret_ref.name.clone(),
        key: secret_ref.key.clone(),
    }
}

/// Reads the token from the Secret (`data`, or `stringData` for manifests read from files).
pub fn read_token(secret: Option<&Secret>, location: &SecretLocation) -> Result<ApiToken, Blocked> {
    let Some(secret) = secret else {
        // Often written shortly after the endpoint (an external secret store): not Stalled.
        return Err(Blocked::waiting(
            ReadyReason::EndpointNotReady,
            format!(
                "Secret {}/{} with the API token not found",
                location.namespace, location.name
            ),
        ));
    };
    let from_data = secret
        .data
        .as_ref()
        .and_then(|d| d.get(&location.key))
        .map(|ByteString(bytes)| String::from_utf8_lossy(bytes).to_string());
    let from_string_data = || {
        secret
            .string_data
            .as_ref()
            .and_then(|d| d.get(&location.key))
            .cloned()
    };
    match from_data.or_else(from_string_data) {
        Some(token) if !token.trim().is_empty() => Ok(ApiToken::new(token)),
        _ => Err(Blocked::new(
            ReadyReason::EndpointNotReady,
            format!(
                "Secret {}/{} has no key {:?} with the API token",
                location.namespace, location.name, location.key
            ),
        )),
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::{
        check::tests::{base, cluster},
        *,
    };

    #[test]
    fn secrets_are_found_where_the_endpoint_kind_says() {
        let ep = cluster(base());
        assert_eq!(secret_location(&ep, "ops").namespace, "ops");
        let mut spec = base();
        spec["credentials"]["secretRef"]["namespace"] = json!("vault");
        assert_eq!(secret_location(&cluster(spec), "ops").namespace, "vault");
        let namespaced = AnyEndpoint::Namespaced(
            serde_json::from_value(json!({
                "apiVersion": "invite.operators.dev/v1alpha1", "kind": "InvitationEndpoint",
                "metadata": {"name": "e", "namespace": "team"}, "spec": base()
            }))
            .unwrap(),
        );
        let loc = secret_location(&namespaced, "ops");
        assert_eq!(
            (loc.namespace.as_str(), loc.name.as_str(), loc.key.as_str()),
            ("team", "tok", "token")
        );
    }

    #[test]
    fn tokens_are_read_from_data_or_string_data() {
        let loc = SecretLocation {
            namespace: "n".into(),
            name: "s".into(),
            key: "token".into(),
        };
        assert_eq!(
            read_token(None, &loc).unwrap_err().reason,
            ReadyReason::EndpointNotReady
        );
        let data: Secret =
            serde_json::from_value(json!({"data": {"token": "c2VjcmV0Cg=="}})).unwrap();
        assert_eq!(read_token(Some(&data), &loc).unwrap().expose(), "secret");
        let string_data: Secret =
            serde_json::from_value(json!({"stringData": {"token": "abc"}})).unwrap();
        assert_eq!(
            read_token(Some(&string_data), &loc).unwrap().expose(),
            "abc"
        );
        let wrong_key: Secret = serde_json::from_value(json!({"data": {"other": "YQ=="}})).unwrap();
        let err = read_token(Some(&wrong_key), &loc).unwrap_err();
        assert!(err.message.contains("no key \"token\""));
        assert!(!format!("{:?}", read_token(Some(&data), &loc).unwrap()).contains("secret"));
    }
}
