//! Whether a bucket's CORS policy lets the labeling page read its objects
//! through pre-signed URLs (issue 17, item 2). The editor fetches audio,
//! text and time series by script, and a browser lets a script read a
//! cross-origin answer only when the bucket's CORS policy names the page's
//! origin and the method (GCS's rules:
//! <https://cloud.google.com/storage/docs/cross-origin>). Images shown with
//! `<img>` need no CORS.

use serde::Serialize;

/// One rule of a bucket's CORS policy, as GCS's JSON API writes it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct CorsRule {
    pub origin: Vec<String>,
    pub method: Vec<String>,
    pub response_header: Vec<String>,
    pub max_age_seconds: Option<i64>,
}

/// What a CORS check found, as Test connection answers it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct CorsReport {
    /// The origin browsers load the labeling page from.
    pub origin: String,
    /// Whether a rule lets that origin `GET` objects.
    pub allowed: bool,
    /// In plain words, with the next step when not allowed.
    pub advice: String,
}

/// Checks `rules` (a bucket's whole policy) for `origin` and `GET`, as GCS
/// matches them: an origin listed exactly or `*`, a method listed or `*`.
pub fn check(bucket: &str, origin: &str, rules: &[CorsRule]) -> CorsReport {
    let matches = |list: &[String], want: &str| list.iter().any(|v| v == "*" || v.eq_ignore_ascii_case(want));
    let allowed = rules
        .iter()
        .any(|r| matches(&r.origin, origin) && matches(&r.method, "GET"));
    let advice = if allowed {
        format!("gs://{bucket}'s CORS policy lets pages on {origin} read its objects.")
    } else if rules.is_empty() {
        format!(
            "gs://{bucket} has no CORS policy: images still show, but audio, text and time series loaded by \
             pre-signed URL fail in the labeling page. Next step: add a rule for {origin} and GET (\"Fix CORS\", \
             in the wizard or on the storage's card, does it), or turn pre-signed URLs off to use the proxy."
        )
    } else {
        format!(
            "gs://{bucket}'s CORS policy has no rule for {origin} and GET: images still show, but audio, text \
             and time series loaded by pre-signed URL fail in the labeling page. Next step: add such a rule (\"Fix CORS\", in the wizard or on the storage's card, does it), or \
             turn pre-signed URLs off to use the proxy."
        )
    };
    CorsReport {
        origin: origin.to_owned(),
        allowed,
        advice,
    }
}

/// The origin of a URL such as the server's public URL, serialized as
/// browsers send it in `Origin` (WHATWG URL: lower-case host, no
/// user-info, no default port); None when it is not an absolute http(s)
/// URL.
pub fn origin_of(url: &str) -> Option<String> {
    let parsed = url::Url::parse(url).ok()?;
    if !matches!(parsed.scheme(), "http" | "https") || parsed.host_str().is_none_or(str::is_empty) {
        return None;
    }
    Some(parsed.origin().ascii_serialization())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rule(origin: &[&str], method: &[&str]) -> CorsRule {
        CorsRule {
            origin: origin.iter().map(|s| s.to_string()).collect(),
            method: method.iter().map(|s| s.to_string()).collect(),
            ..CorsRule::default()
        }
    }

    #[test]
    fn a_rule_must_name_the_origin_and_get() {
        let page = "https://label.example.com";
        assert!(!check("b", page, &[]).allowed);
        assert!(check("b", page, &[]).advice.contains("no CORS policy"));
        assert!(check("b", page, &[rule(&[page], &["GET"])]).allowed);
        assert!(check("b", page, &[rule(&["*"], &["*"])]).allowed);
        assert!(
            check(
                "b",
                page,
                &[
                    rule(&["https://other.example.com"], &["GET"]),
                    rule(&[page], &["get", "HEAD"])
                ]
            )
            .allowed
        );
        let wrong = check(
            "b",
            page,
            &[rule(&["http://label.example.com"], &["GET"]), rule(&[page], &["PUT"])],
        );
        assert!(!wrong.allowed && wrong.advice.contains("no rule for https://label.example.com and GET"));
    }

    #[test]
    fn origins_of_urls() {
        assert_eq!(
            origin_of("https://a.example.com/x?y").as_deref(),
            Some("https://a.example.com")
        );
        assert_eq!(
            origin_of("http://127.0.0.1:8080").as_deref(),
            Some("http://127.0.0.1:8080")
        );
        assert_eq!(
            origin_of("https://u:p@Label.Example.COM:443/x").as_deref(),
            Some("https://label.example.com")
        );
        assert_eq!(origin_of("ftp://a"), None);
        assert_eq!(origin_of("https://"), None);
    }
}
