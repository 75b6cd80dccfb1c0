//! Registry credentials from the user's Docker config
//! (`$DOCKER_CONFIG/config.json`, else `~/.docker/config.json`): the
//! `auths` entry whose key names the registry, as `docker login` writes it.
//! Credential helpers (`credsStore`) are not run: banger starts no process
//! for this.

use std::path::PathBuf;

/// The user's Docker config file, read afresh, if there is one.
pub fn docker_config() -> Option<Vec<u8>> {
    let dir = match std::env::var_os("DOCKER_CONFIG") {
        Some(dir) => PathBuf::from(dir),
        None => PathBuf::from(std::env::var_os("HOME")?).join(".docker"),
    };
    std::fs::read(dir.join("config.json")).ok()
}

/// `(user, password)` for `registry` (or the host it `resolves` to) from a
/// Docker config's `auths`. A key may be a bare host or a URL
/// (`https://HOST/v1/`).
pub fn credentials(json: &[u8], registry: &str, resolves: &str) -> Option<(String, String)> {
    let config: serde_json::Value = serde_json::from_slice(json).ok()?;
    let auths = config.get("auths")?.as_object()?;
    let (_, entry) = auths.iter().find(|(key, _)| {
        let host = key
            .trim_start_matches("https://")
            .trim_start_matches("http://")
            .split('/')
            .next()
            .unwrap_or("");
        host == registry || host == resolves
    })?;
    if let (Some(user), Some(pass)) = (
        entry.get("username").and_then(|v| v.as_str()),
        entry.get("password").and_then(|v| v.as_str()),
    ) {
        return Some((user.to_string(), pass.to_string()));
    }
    let auth = entry.get("auth")?.as_str()?.trim();
    let decoded = banger_agent::proto::identity::base64_decode(auth.as_bytes())?;
    let text = String::from_utf8(decoded).ok()?;
    let (user, pass) = text.split_once(':')?;
    Some((user.to_string(), pass.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn credentials_come_from_the_auth_entry_of_the_registry() {
        // "alice:s3cret:x" in base64; a URL key, as `docker login` writes one.
        let json = br#"{"auths":{"https://reg.test:5000/v1/":{"auth":"YWxpY2U6czNjcmV0Ong="},"other.test":{"auth":"Ym9iOnB3"}}}"#;
        assert_eq!(
            credentials(json, "reg.test:5000", "reg.test:5000"),
            Some(("alice".into(), "s3cret:x".into()))
        );
        assert_eq!(
            credentials(json, "other.test", "other.test"),
            Some(("bob".into(), "pw".into()))
        );
        assert_eq!(credentials(json, "none.test", "none.test"), None);
        assert_eq!(credentials(b"not json", "reg.test:5000", "x"), None);
    }
}
