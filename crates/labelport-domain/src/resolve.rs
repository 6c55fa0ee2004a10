//! Media URI rewriting for the browser (Label Studio's resolve URLs).
//!
//! Every `gs://bucket/key` in task data whose bucket belongs to one of the
//! project's import storages becomes `/tasks/<id>/resolve/?fileuri=<url-safe
//! base64 with padding>`: whole string values, and every quoted URI inside a
//! string (`<img src="gs://…">` in HTML), in nested lists and objects too.
//! The stored data is never changed; this runs on the way out.

use base64::engine::general_purpose::{URL_SAFE, URL_SAFE_NO_PAD};
use base64::Engine;
use serde_json::Value;

const SCHEME: &str = "gs://";

/// The bucket of a `gs://bucket/key` URI.
pub fn bucket_of(uri: &str) -> Option<&str> {
    let rest = uri.strip_prefix(SCHEME)?;
    let bucket = rest.split('/').next()?;
    (!bucket.is_empty()).then_some(bucket)
}

/// `(bucket, key)` of a `gs://bucket/key` URI with a non-empty key.
pub fn split_gs_uri(uri: &str) -> Option<(&str, &str)> {
    let rest = uri.strip_prefix(SCHEME)?;
    let (bucket, key) = rest.split_once('/')?;
    (!bucket.is_empty() && !key.is_empty()).then_some((bucket, key))
}

pub fn encode_fileuri(uri: &str) -> String {
    URL_SAFE.encode(uri.as_bytes())
}

/// Decodes a `fileuri` parameter: URL-safe base64 (padding optional), or,
/// for old links, the percent-decoded value itself.
pub fn decode_fileuri(raw: &str) -> String {
    let trimmed = raw.trim();
    let decoded = URL_SAFE
        .decode(trimmed)
        .or_else(|_| URL_SAFE_NO_PAD.decode(trimmed.trim_end_matches('=')))
        .ok()
        .and_then(|b| String::from_utf8(b).ok());
    match decoded {
        Some(uri) if uri.contains("://") => uri,
        _ => percent_decode(trimmed),
    }
}

fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' && i + 2 < bytes.len() {
            let hex = std::str::from_utf8(&bytes[i + 1..i + 3]).ok();
            if let Some(b) = hex.and_then(|h| u8::from_str_radix(h, 16).ok()) {
                out.push(b);
                i += 3;
                continue;
            }
        }
        out.push(if bytes[i] == b'+' { b' ' } else { bytes[i] });
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Rewrites resolvable URIs in `data` in place; `buckets` are the project's
/// storage buckets, `base` the public URL prefix ("" for relative URLs).
pub fn rewrite_uris(data: &mut Value, buckets: &[String], base: &str, task_id: i64) {
    rewrite_uris_with(data, buckets, base, task_id, &|_| String::new());
}

/// As [`rewrite_uris`], appending `suffix(uri)` to each resolve URL (extra
/// query parameters, e.g. a media-origin signature, starting with `&`).
pub fn rewrite_uris_with(
    data: &mut Value,
    buckets: &[String],
    base: &str,
    task_id: i64,
    suffix: &dyn Fn(&str) -> String,
) {
    if buckets.is_empty() {
        return;
    }
    match data {
        Value::String(s) => {
            if let Some(new) = rewrite_string(s, buckets, base, task_id, suffix) {
                *s = new;
            }
        }
        Value::Array(items) => items
            .iter_mut()
            .for_each(|v| rewrite_uris_with(v, buckets, base, task_id, suffix)),
        Value::Object(map) => map
            .values_mut()
            .for_each(|v| rewrite_uris_with(v, buckets, base, task_id, suffix)),
        _ => {}
    }
}

fn resolvable(uri: &str, buckets: &[String]) -> bool {
    split_gs_uri(uri).is_some_and(|(b, _)| buckets.iter().any(|x| x == b))
}

fn resolve_url(uri: &str, base: &str, task_id: i64) -> String {
    format!("{base}/tasks/{task_id}/resolve/?fileuri={}", encode_fileuri(uri))
}

/// The byte ranges of the URIs in one string that rewriting considers: the
/// whole string when it is a URI, else every quoted URI (an opening quote
/// right before `gs://`, up to the same quote character, as in HTML).
fn uri_spans(s: &str) -> Vec<(usize, usize)> {
    if !s.contains(SCHEME) {
        return Vec::new();
    }
    if s.starts_with(SCHEME) {
        return vec![(0, s.len())];
    }
    let mut spans = Vec::new();
    let mut from = 0;
    while let Some(found) = s[from..].find(SCHEME) {
        let pos = from + found;
        let closing = match s[..pos].chars().next_back() {
            Some(q @ ('"' | '\'')) => s[pos..].find(q).map(|end| pos + end),
            _ => None,
        };
        match closing {
            Some(end) => {
                spans.push((pos, end));
                from = end;
            }
            None => from = pos + SCHEME.len(),
        }
    }
    spans
}

fn rewrite_string(
    s: &str,
    buckets: &[String],
    base: &str,
    task_id: i64,
    suffix: &dyn Fn(&str) -> String,
) -> Option<String> {
    let mut out = String::with_capacity(s.len() + 64);
    let mut changed = false;
    let mut at = 0;
    for (start, end) in uri_spans(s) {
        if resolvable(&s[start..end], buckets) {
            out.push_str(&s[at..start]);
            out.push_str(&resolve_url(&s[start..end], base, task_id));
            out.push_str(&suffix(&s[start..end]));
            at = end;
            changed = true;
        }
    }
    out.push_str(&s[at..]);
    changed.then_some(out)
}

/// Whether `uri` is one of the URIs of `data` that rewriting shows as
/// resolve URLs (a whole string, or quoted inside one, at any depth): the
/// task-level check of `/tasks/{id}/resolve`, so a task's resolve URL
/// serves that task's media and nothing else of the bucket.
pub fn uri_occurs(data: &Value, uri: &str) -> bool {
    match data {
        Value::String(s) => uri_spans(s).into_iter().any(|(a, b)| &s[a..b] == uri),
        Value::Array(items) => items.iter().any(|v| uri_occurs(v, uri)),
        Value::Object(map) => map.values().any(|v| uri_occurs(v, uri)),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn b() -> Vec<String> {
        vec!["media".into(), "test-gs-bucket_JSON".into()]
    }

    #[test]
    fn label_studio_example_and_roundtrip() {
        let mut d = json!({"image": "gs://test-gs-bucket_JSON/manual.link.jpg"});
        rewrite_uris(&mut d, &b(), "", 7);
        assert_eq!(
            d["image"],
            "/tasks/7/resolve/?fileuri=Z3M6Ly90ZXN0LWdzLWJ1Y2tldF9KU09OL21hbnVhbC5saW5rLmpwZw=="
        );
        assert_eq!(
            decode_fileuri("Z3M6Ly90ZXN0LWdzLWJ1Y2tldF9KU09OL21hbnVhbC5saW5rLmpwZw=="),
            "gs://test-gs-bucket_JSON/manual.link.jpg"
        );
        assert_eq!(
            decode_fileuri("Z3M6Ly90ZXN0LWdzLWJ1Y2tldF9KU09OL21hbnVhbC5saW5rLmpwZw"),
            "gs://test-gs-bucket_JSON/manual.link.jpg"
        );
        assert_eq!(decode_fileuri("gs%3A%2F%2Fmedia%2Fa%20b.jpg"), "gs://media/a b.jpg");
        assert_eq!(decode_fileuri("%ü%"), "%ü%", "no panic on odd input");
        let uri = "gs://media/dir/ünï cödé+&=.jpg";
        assert_eq!(decode_fileuri(&encode_fileuri(uri)), uri);
    }

    #[test]
    fn nested_html_and_foreign_buckets() {
        let mut d = json!({
            "list": ["gs://media/a.jpg", "gs://other/b.jpg", 5, null],
            "nested": {"x": {"y": "gs://media/c d.png"}},
            "html": "<img src=\"gs://media/1.jpg\"><img src='gs://media/2.jpg'> gs://media/bare <a href=\"gs://bad-bucket/3.jpg\">",
            "text": "no uris here",
        });
        rewrite_uris(&mut d, &b(), "https://lp.example.com", 3);
        let enc = |u: &str| format!("https://lp.example.com/tasks/3/resolve/?fileuri={}", encode_fileuri(u));
        assert_eq!(d["list"][0], enc("gs://media/a.jpg"));
        assert_eq!(d["list"][1], "gs://other/b.jpg");
        assert_eq!(d["list"][2], 5);
        assert_eq!(d["nested"]["x"]["y"], enc("gs://media/c d.png"));
        let html = d["html"].as_str().unwrap();
        assert!(html.contains(&format!("src=\"{}\"", enc("gs://media/1.jpg"))), "{html}");
        assert!(html.contains(&format!("src='{}'", enc("gs://media/2.jpg"))), "{html}");
        assert!(
            html.contains(" gs://media/bare "),
            "unquoted URIs inside text stay: {html}"
        );
        assert!(html.contains("gs://bad-bucket/3.jpg"), "{html}");
        assert_eq!(d["text"], "no uris here");
        let mut none = json!({"image": "gs://media/a.jpg"});
        rewrite_uris(&mut none, &[], "", 1);
        assert_eq!(none["image"], "gs://media/a.jpg");
    }

    #[test]
    fn a_uri_occurs_only_where_rewriting_would_show_it() {
        let d = json!({
            "image": "gs://media/a.jpg",
            "pages": [{"page": "gs://media/p1.png"}],
            "html": "<img src=\"gs://media/in-html.jpg\"> gs://media/bare",
        });
        for uri in ["gs://media/a.jpg", "gs://media/p1.png", "gs://media/in-html.jpg"] {
            assert!(uri_occurs(&d, uri), "{uri}");
        }
        for uri in [
            "gs://media/bare",
            "gs://media/a",
            "gs://media/other.jpg",
            "gs://media/a.jpg.exe",
        ] {
            assert!(!uri_occurs(&d, uri), "{uri}");
        }
    }

    #[test]
    fn splits_uris() {
        assert_eq!(split_gs_uri("gs://b/k/x.jpg"), Some(("b", "k/x.jpg")));
        assert_eq!(split_gs_uri("gs://b/"), None);
        assert_eq!(split_gs_uri("s3://b/k"), None);
        assert_eq!(bucket_of("gs://b"), Some("b"));
    }
}
