//! Package manifests read from an image's own package database, without
//! booting it: dpkg's `var/lib/dpkg/status` and apk's
//! `lib/apk/db/installed`. One `name version` per line, sorted, as every
//! manifest banger keeps.

/// The manifest of the image whose files `read` returns (by path relative
/// to its root), or `None` when it has no package database banger reads.
pub fn from_tree(read: impl Fn(&str) -> Option<Vec<u8>>) -> Option<Vec<String>> {
    if let Some(status) = read("var/lib/dpkg/status") {
        return Some(dpkg(&String::from_utf8_lossy(&status)));
    }
    if let Some(installed) = read("lib/apk/db/installed") {
        return Some(apk(&String::from_utf8_lossy(&installed)));
    }
    None
}

/// dpkg's status file: paragraphs of `Field: value`; a package counts when
/// its `Status` ends in `installed`.
pub fn dpkg(status: &str) -> Vec<String> {
    let mut out = Vec::new();
    for paragraph in status.split("\n\n") {
        let field = |name: &str| {
            paragraph
                .lines()
                .find_map(|l| l.strip_prefix(name)?.strip_prefix(':'))
                .map(str::trim)
        };
        if let (Some(name), Some(version), Some(state)) =
            (field("Package"), field("Version"), field("Status"))
            && state.ends_with(" installed")
        {
            out.push(format!("{name} {version}"));
        }
    }
    crate::system::text::normalize_lines(&out.join("\n"))
}

/// apk's database: paragraphs of `X:value` lines; `P` names, `V` versions.
pub fn apk(installed: &str) -> Vec<String> {
    let mut out = Vec::new();
    for paragraph in installed.split("\n\n") {
        let field = |key: &str| paragraph.lines().find_map(|l| l.strip_prefix(key));
        if let (Some(name), Some(version)) = (field("P:"), field("V:")) {
            out.push(format!("{name} {version}"));
        }
    }
    crate::system::text::normalize_lines(&out.join("\n"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dpkg_lists_installed_packages_only() {
        let status = "Package: zlib1g\nStatus: install ok installed\nVersion: 1:1.2.13\n\n\
                      Package: gone\nStatus: deinstall ok config-files\nVersion: 1.0\n\n\
                      Package: bash\nStatus: install ok installed\nPriority: required\nVersion: 5.2-2\nDescription: x\n a continued line\n";
        assert_eq!(dpkg(status), ["bash 5.2-2", "zlib1g 1:1.2.13"]);
    }

    #[test]
    fn apk_lists_names_and_versions() {
        let db = "C:Q1abc=\nP:musl\nV:1.2.4-r2\nA:x86_64\n\nP:busybox\nV:1.36.1-r5\n";
        assert_eq!(apk(db), ["busybox 1.36.1-r5", "musl 1.2.4-r2"]);
    }

    #[test]
    fn no_database_no_manifest() {
        assert_eq!(from_tree(|_| None), None);
    }
}
