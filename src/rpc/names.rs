//! What may name a VM or an image. Both ends of the socket check with
//! these, so a bad name gets the same words from `banger` (before anything
//! is sent) as from `bangerd` (in a path or a body).

/// How much of a refused name an error message repeats.
const SHOWN_CHARS: usize = 64;

/// A name the API refuses, and what it accepts instead.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NameError {
    /// A VM name is its host name and its DNS name, `<name>.vm`.
    #[error(
        "invalid VM name `{name}`: it {why} (a VM name becomes its DNS name, <name>.vm: 1 to 63 of a-z, 0-9 and '-', not starting or ending with '-')"
    )]
    Vm { name: String, why: &'static str },
    /// An image name is a directory name and the stem of its build VM's name.
    #[error(
        "invalid image name `{name}`: it {why} (an image name is 1 to 63 of a-z, 0-9 and '-', not starting or ending with '-')"
    )]
    Image { name: String, why: &'static str },
}

/// Checks that `name` can name a VM.
pub fn check_vm_name(name: &str) -> Result<(), NameError> {
    crate::net::check_dns_label(name).map_err(|why| NameError::Vm {
        name: shown(name),
        why,
    })
}

/// Checks that `name` can name an image: the same rule as a VM name (it is
/// a directory under the image store, and `<name>.build` names its build VM).
pub fn check_image_name(name: &str) -> Result<(), NameError> {
    crate::net::check_dns_label(name).map_err(|why| NameError::Image {
        name: shown(name),
        why,
    })
}

/// `name` as an error message may repeat it: escaped, and cut short.
fn shown(name: &str) -> String {
    let mut chars = name.chars();
    let mut out: String = chars
        .by_ref()
        .take(SHOWN_CHARS)
        .flat_map(char::escape_debug)
        .collect();
    if chars.next().is_some() {
        out.push('…');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn vm_and_image_names_share_one_rule() {
        for good in ["testbox", "a", "web-1", &"x".repeat(63)] {
            assert_eq!(check_vm_name(good), Ok(()));
            assert_eq!(check_image_name(good), Ok(()));
        }
        for bad in ["", "a b", "Box", "a/b", "..", "-a", "a.b", &"x".repeat(64)] {
            assert!(check_vm_name(bad).is_err(), "{bad}");
            assert!(check_image_name(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn the_message_says_what_is_wrong_and_what_is_allowed() {
        let err = check_image_name("a b").unwrap_err().to_string();
        assert_eq!(
            err,
            "invalid image name `a b`: it may hold only lowercase letters, digits and '-' (an image name is 1 to 63 of a-z, 0-9 and '-', not starting or ending with '-')"
        );
        let err = check_vm_name("").unwrap_err().to_string();
        assert!(err.starts_with("invalid VM name ``: it is empty"), "{err}");
        assert!(err.contains("<name>.vm"), "{err}");
    }

    #[test]
    fn a_refused_name_is_repeated_escaped_and_short() {
        let err = check_vm_name("\u{1b}[31mred\n").unwrap_err().to_string();
        assert!(err.contains(r"`\u{1b}[31mred\n`"), "{err}");
        let err = check_vm_name(&"y".repeat(100_000)).unwrap_err().to_string();
        assert!(err.contains(&format!("`{}…`", "y".repeat(64))), "{err}");
        assert!(err.len() < 300, "{err}");
    }
}
