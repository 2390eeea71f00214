//! The little URL handling a provider client needs: joining a tree root with
//! a relative path, and resolving a redirect's `Location` against the URL
//! that answered it (RFC 3986 §5.2, for the reference forms servers send).

/// `scheme://authority` of an absolute http(s) URL.
fn origin(url: &str) -> Option<&str> {
    let after = url.find("://")? + 3;
    let end = url[after..]
        .find(['/', '?', '#'])
        .map_or(url.len(), |i| after + i);
    Some(&url[..end])
}

/// Joins a base URL (a tree root, with or without a trailing `/`) and a
/// relative path.
pub fn join(base: &str, path: &str) -> String {
    format!(
        "{}/{}",
        base.trim_end_matches('/'),
        path.trim_start_matches('/')
    )
}

/// Resolves a `Location` header against the URL that sent it. Returns `None`
/// for anything that is not an http(s) URL once resolved.
pub fn resolve(base: &str, location: &str) -> Option<String> {
    let location = location.trim();
    let lower = location.to_ascii_lowercase();
    let resolved = if lower.starts_with("http://") || lower.starts_with("https://") {
        location.to_owned()
    } else if let Some(rest) = location.strip_prefix("//") {
        let scheme = &base[..base.find("://")?];
        format!("{scheme}://{rest}")
    } else if location.starts_with('/') {
        format!("{}{location}", origin(base)?)
    } else if location.is_empty()
        || location
            .split(['/', '?', '#'])
            .next()
            .is_some_and(|first| first.contains(':'))
    {
        // A colon in the first segment makes it a scheme (RFC 3986 §3.1),
        // and every scheme but http(s) was handled above.
        return None;
    } else {
        // Relative to the base's directory (its path without the last segment).
        let origin = origin(base)?;
        let path = base[origin.len()..].split(['?', '#']).next().unwrap_or("");
        let dir = match path.rfind('/') {
            Some(i) => &path[..=i],
            None => "/",
        };
        format!("{origin}{dir}{location}")
    };
    let scheme_ok = {
        let l = resolved.to_ascii_lowercase();
        l.starts_with("http://") || l.starts_with("https://")
    };
    scheme_ok.then_some(resolved)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resolves_the_reference_forms_servers_send() {
        let base = "https://mirror.example:8443/boot/stable/x86_64/manifest.json";
        let table: &[(&str, Option<&str>)] = &[
            ("https://cdn.example/a", Some("https://cdn.example/a")),
            ("HTTP://cdn.example/a", Some("HTTP://cdn.example/a")),
            ("//cdn.example/a", Some("https://cdn.example/a")),
            ("/blobs/x", Some("https://mirror.example:8443/blobs/x")),
            (
                "manifest2.json",
                Some("https://mirror.example:8443/boot/stable/x86_64/manifest2.json"),
            ),
            ("ftp://x/y", None),
            ("javascript:alert(1)", None),
            ("", None),
        ];
        for (location, want) in table {
            assert_eq!(resolve(base, location).as_deref(), *want, "{location}");
        }
        assert_eq!(resolve("http://h", "x").as_deref(), Some("http://h/x"));
        assert_eq!(resolve("http://h?q=1", "/x").as_deref(), Some("http://h/x"));
    }

    #[test]
    fn joins_roots_and_paths() {
        assert_eq!(
            join("http://h:1/", "stable/x/manifest.json"),
            "http://h:1/stable/x/manifest.json"
        );
        assert_eq!(
            join("http://h:1/tree", "/blobs/a"),
            "http://h:1/tree/blobs/a"
        );
    }
}
