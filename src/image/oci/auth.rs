//! Registry credentials from the user's Docker config
//! (`$DOCKER_CONFIG/config.json`, else `~/.docker/config.json`): the
//! `auths` entry whose key names the registry, as `docker login` writes it.
//! Credential helpers (`credsStore`) are not run: banger starts no process
//! for this.

use std::path::PathBuf;

/// The Docker config file, if the user has one.
pub fn docker_config_path() -> Option<PathBuf> {
    let dir = match std::env::var_os("DOCKER_CONFIG") {
        Some(dir) => PathBuf::from(dir),
        None => PathBuf::from(std::env::var_os("HOME")?).join(".docker"),
    };
    Some(dir.join("config.json"))
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
    let decoded = base64_decode(entry.get("auth")?.as_str()?)?;
    let text = String::from_utf8(decoded).ok()?;
    let (user, pass) = text.split_once(':')?;
    Some((user.to_string(), pass.to_string()))
}

/// Standard base64 (padding optional); `None` on anything else.
fn base64_decode(text: &str) -> Option<Vec<u8>> {
    let value = |c: u8| -> Option<u32> {
        Some(match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'+' => 62,
            b'/' => 63,
            _ => return None,
        } as u32)
    };
    let bytes: Vec<u8> = text.trim().trim_end_matches('=').bytes().collect();
    let mut out = Vec::with_capacity(bytes.len() * 3 / 4);
    for chunk in bytes.chunks(4) {
        let mut acc = 0u32;
        for (i, &c) in chunk.iter().enumerate() {
            acc |= value(c)? << (18 - 6 * i);
        }
        let n = match chunk.len() {
            4 => 3,
            3 => 2,
            2 => 1,
            _ => return None,
        };
        out.extend_from_slice(&acc.to_be_bytes()[1..1 + n]);
    }
    Some(out)
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

    #[test]
    fn base64_decodes_with_or_without_padding() {
        assert_eq!(base64_decode("aGk=").unwrap(), b"hi");
        assert_eq!(base64_decode("aGk").unwrap(), b"hi");
        assert_eq!(base64_decode("aGVsbG8gd29ybGQ=").unwrap(), b"hello world");
        assert_eq!(base64_decode("a"), None);
        assert_eq!(base64_decode("a*b="), None);
    }
}
