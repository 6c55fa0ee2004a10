//! Parsing of a project's labeling configuration (Label Studio's XML).
//!
//! Only what the server needs is extracted: object tags (which read task data
//! through `value="$key"`), control tags (which produce results, `toName`
//! pointing at object tags), and the data keys in document order. The first
//! data key is where a storage's `$undefined$` payload is shown.

use serde_json::{json, Map, Value};

use crate::ValidationErrors;

/// Used when a project is created without a config, as Label Studio does.
pub const DEFAULT_LABEL_CONFIG: &str = "<View></View>";

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObjectTag {
    pub tag: String,
    pub name: String,
    /// The data key read, without the `$`.
    pub value: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ControlTag {
    pub tag: String,
    pub name: String,
    pub to_name: Vec<String>,
    pub labels: Vec<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LabelConfig {
    pub objects: Vec<ObjectTag>,
    pub controls: Vec<ControlTag>,
}

/// Child tags whose `value` is a label, not a data reference.
const LABEL_TAGS: &[&str] = &["Label", "Choice", "Relation"];

impl LabelConfig {
    /// Parses without judging completeness (used on stored configs).
    pub fn parse(xml: &str) -> Result<Self, String> {
        let doc = roxmltree::Document::parse(xml).map_err(|e| format!("Label config is not valid XML: {e}"))?;
        let root = doc.root_element();
        if root.tag_name().name() != "View" {
            return Err(format!(
                "Label config root tag must be <View>, found <{}>",
                root.tag_name().name()
            ));
        }
        let mut config = LabelConfig::default();
        for node in root.descendants().filter(|n| n.is_element()) {
            let tag = node.tag_name().name();
            let name = node.attribute("name");
            if let (Some(name), Some(to_name)) = (name, node.attribute("toName")) {
                let labels = node
                    .children()
                    .filter(|c| c.is_element() && LABEL_TAGS.contains(&c.tag_name().name()))
                    .filter_map(|c| c.attribute("value").or_else(|| c.attribute("alias")))
                    .map(str::to_owned)
                    .collect();
                config.controls.push(ControlTag {
                    tag: tag.to_owned(),
                    name: name.to_owned(),
                    to_name: to_name.split(',').map(|s| s.trim().to_owned()).collect(),
                    labels,
                });
            } else if let (Some(name), Some(value)) = (name, node.attribute("value")) {
                if let Some(key) = value.strip_prefix('$') {
                    if !LABEL_TAGS.contains(&tag) && !key.is_empty() {
                        config.objects.push(ObjectTag {
                            tag: tag.to_owned(),
                            name: name.to_owned(),
                            value: key.to_owned(),
                        });
                    }
                }
            }
        }
        Ok(config)
    }

    /// Parses a config a user submits: it must be well-formed, have at least
    /// one object or control tag, and every `toName` must name an object tag.
    pub fn validate(xml: &str) -> Result<Self, ValidationErrors> {
        let config = Self::parse(xml).map_err(|e| ValidationErrors::field("label_config", e))?;
        if config.objects.is_empty() && config.controls.is_empty() {
            return Err(ValidationErrors::field(
                "label_config",
                "Label config has no object tag (such as <Image value=\"$image\"/>) and no control tag (such as <Choices toName=\"...\"/>)",
            ));
        }
        let mut errors = ValidationErrors::default();
        for control in &config.controls {
            for target in &control.to_name {
                if !config.objects.iter().any(|o| &o.name == target) {
                    errors.add(
                        "label_config",
                        format!(
                            "toName=\"{target}\" of <{} name=\"{}\"> names no object tag",
                            control.tag, control.name
                        ),
                    );
                }
            }
        }
        errors.into_result().map(|()| config)
    }

    /// Data keys in document order, without duplicates.
    pub fn data_keys(&self) -> Vec<&str> {
        let mut keys: Vec<&str> = Vec::new();
        for object in &self.objects {
            if !keys.contains(&object.value.as_str()) {
                keys.push(&object.value);
            }
        }
        keys
    }

    pub fn first_data_key(&self) -> Option<&str> {
        self.objects.first().map(|o| o.value.as_str())
    }

    /// Label Studio's `parsed_label_config` shape, keyed by control name.
    pub fn parsed_json(&self) -> Value {
        let mut out = Map::new();
        for control in &self.controls {
            let inputs: Vec<Value> = control
                .to_name
                .iter()
                .filter_map(|t| self.objects.iter().find(|o| &o.name == t))
                .map(|o| json!({"type": o.tag, "value": o.value}))
                .collect();
            out.insert(
                control.name.clone(),
                json!({
                    "type": control.tag,
                    "to_name": control.to_name,
                    "inputs": inputs,
                    "labels": control.labels,
                }),
            );
        }
        Value::Object(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn extracts_objects_controls_and_first_key() {
        let c = LabelConfig::validate(
            r#"<View><Header value="Look"/><Image name="img" value="$image_url"/>
               <Text name="t" value="$text"/>
               <Choices name="c" toName="img,t"><Choice value="a"/><Choice value="b"/></Choices></View>"#,
        )
        .unwrap();
        assert_eq!(c.first_data_key(), Some("image_url"));
        assert_eq!(c.data_keys(), vec!["image_url", "text"]);
        assert_eq!(c.controls[0].labels, vec!["a", "b"]);
        let parsed = c.parsed_json();
        assert_eq!(parsed["c"]["inputs"][1]["value"], "text");
    }

    #[test]
    fn rejects_malformed_empty_and_dangling() {
        let e = LabelConfig::validate("<View><Image name='i' value='$x'></View>").unwrap_err();
        assert!(e.summary().contains("not valid XML"), "{e}");
        let e = LabelConfig::validate("<View></View>").unwrap_err();
        assert!(e.summary().contains("no object tag"), "{e}");
        let e = LabelConfig::validate("<Other/>").unwrap_err();
        assert!(e.summary().contains("root tag"), "{e}");
        let e = LabelConfig::validate("<View><Image name='i' value='$x'/><Choices name='c' toName='nope'/></View>")
            .unwrap_err();
        assert!(e.summary().contains("toName=\"nope\""), "{e}");
    }
}
