//! How stored task data is shown to clients.

use serde_json::Value;

/// The key under which storages store a payload whose field name is not
/// known yet; shown under the project's first data key on every read.
pub const DATA_UNDEFINED_NAME: &str = "$undefined$";

/// Moves `$undefined$` to `first_key` (when the config has one and the task
/// does not already use that key), leaving everything else as stored.
pub fn show_undefined_under(data: &mut Value, first_key: Option<&str>) {
    let (Some(key), Value::Object(map)) = (first_key, data) else {
        return;
    };
    if map.contains_key(key) {
        return;
    }
    if let Some(value) = map.remove(DATA_UNDEFINED_NAME) {
        map.insert(key.to_owned(), value);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn moves_undefined_to_first_key_only_when_free() {
        let mut d = json!({"$undefined$": "gs://b/k"});
        show_undefined_under(&mut d, Some("image"));
        assert_eq!(d, json!({"image": "gs://b/k"}));

        let mut d = json!({"$undefined$": "gs://b/k", "image": "x"});
        show_undefined_under(&mut d, Some("image"));
        assert_eq!(d, json!({"$undefined$": "gs://b/k", "image": "x"}));

        let mut d = json!({"$undefined$": "gs://b/k"});
        show_undefined_under(&mut d, None);
        assert_eq!(d, json!({"$undefined$": "gs://b/k"}));
    }
}
