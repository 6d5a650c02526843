//! Which API an endpoint reaches, in one canonical form: two endpoint objects whose URLs
//! differ only in spelling (`https://Wf.example.com` and `https://wf.example.com:443/`) are
//! one API, so they share one in-flight guard per person and one notion of ownership.

use crate::api::{ApiFlavor, ApiIdentity, EndpointConnection};

/// A URL that cannot name an API.
#[derive(thiserror::Error, Debug, Clone, PartialEq, Eq)]
#[error("{0}")]
pub struct InvalidUrl(String);

/// The canonical form of a base URL: scheme and host lowercased, default port dropped, path
/// normalized (dot segments resolved, repeated and trailing slashes removed), no query,
/// fragment or credentials.
pub fn canonical_url(raw: &str) -> Result<String, InvalidUrl> {
    let url = url::Url::parse(raw.trim())
        .map_err(|e| InvalidUrl(format!("url {raw:?} is not valid: {e}")))?;
    if !url.username().is_empty() || url.password().is_some() {
        return Err(InvalidUrl(
            "the url must not carry credentials; put the token in the Secret".into(),
        ));
    }
    let host = url
        .host_str()
        .ok_or_else(|| InvalidUrl(format!("url {raw:?} has no host")))?
        .to_ascii_lowercase();
    let port = url
        .port() // `None` when it is the scheme's default
        .map(|p| format!(":{p}"))
        .unwrap_or_default();
    let segments: Vec<&str> = url
        .path_segments()
        .map(|s| s.filter(|seg| !seg.is_empty()).collect())
        .unwrap_or_default();
    let path = if segments.is_empty() {
        String::new()
    } else {
        format!("/{}", segments.join("/"))
    };
    Ok(format!("{}://{host}{port}{path}", url.scheme()))
}

/// The API an endpoint's connection reaches: its canonical URL and, for OrgInvitation, the
/// organization.
pub fn api_identity(connection: &EndpointConnection) -> Result<ApiIdentity, InvalidUrl> {
    Ok(ApiIdentity {
        url: canonical_url(&connection.url)?,
        organization_id: match connection.api {
            ApiFlavor::UserInvite => None,
            ApiFlavor::OrgInvitation => {
                connection.organization_id.clone().filter(|o| !o.is_empty())
            }
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spellings_of_one_api_are_one_url() {
        for raw in [
            "https://Wf.example.com",
            "https://wf.example.com:443/",
            "HTTPS://WF.EXAMPLE.COM//",
            "https://wf.example.com/./",
        ] {
            assert_eq!(
                canonical_url(raw).unwrap(),
                "https://wf.example.com",
                "{raw}"
            );
        }
        assert_eq!(
            canonical_url("http://127.0.0.1:80/api/../x//y/").unwrap(),
            "http://127.0.0.1/x/y"
        );
        assert_eq!(
            canonical_url("https://wf.example.com:8443").unwrap(),
            "https://wf.example.com:8443"
        );
        assert_ne!(
            canonical_url("https://wf.example.com").unwrap(),
            canonical_url("http://wf.example.com").unwrap()
        );
    }

    #[test]
    fn urls_with_credentials_or_without_host_are_refused() {
        assert!(canonical_url("https://user:pw@wf.example.com").is_err());
        assert!(canonical_url("https://token@wf.example.com").is_err());
        assert!(canonical_url("not a url").is_err());
    }
}
