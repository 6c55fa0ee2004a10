//! Parsing of a project's labeling configuration (Label Studio's XML).
//!
//! Only what the server needs is extracted: object tags (which show task
//! data), control tags (which produce results, `toName` pointing at object
//! tags), and every place the config reads task data ([`DataRef`]), in
//! document order. The first data key is where a storage's `$undefined$`
//! payload is shown.
//!
//! Data references, as Label Studio's editor reads them (its `parseValue`:
//! `$` followed by a path of word characters, `.`, `[`, `]`, `{`, `}`):
//! - `value="$image"` on an object tag, and on a control tag for labels
//!   taken from the task (`<Choices value="$options">`): the key is required;
//! - `valueList="$pages"` (multi-page `<Image>`): required, a list;
//! - `<Repeater on="$document" indexFlag="{{idx}}">`: required, a list; its
//!   children read `$document[{{idx}}].page` and are named `page_{{idx}}`
//!   (the editor repeats them per item; the names are matched as written);
//! - a path (`$meta.image`, `$pages[0]`): the top-level key is required (a
//!   flat key spelled with the dot, `"meta.image"`, also counts), an indexed
//!   key must be a list;
//! - references inside text (`value="Question: $question"`, several `$` in
//!   one value), on tags without a name (`<Header value="$title"/>`), on
//!   labels (`<Choice value="$x">`) and in `audioUrl`, `frameRate`,
//!   `apiUrl`: optional, as the editor shows a missing one as empty.
//!
//! Label Studio itself (`label_studio/core/label_config.py`) requires only
//! `value` attributes of named tags, takes a whole templated value as one
//! key (so `"$a and $b"` can never be imported) and does not check
//! `valueList`; where this module differs it accepts what the editor can
//! show and refuses what it cannot.

use serde_json::{json, Map, Value};

use crate::ValidationErrors;

/// Used when a project is created without a config, as Label Studio does.
pub const DEFAULT_LABEL_CONFIG: &str = "<View></View>";

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObjectTag {
    pub tag: String,
    pub name: String,
    /// What it shows: the data path without the `$` (`image`,
    /// `document[{{idx}}].page`, the `valueList` path), or a literal value.
    pub value: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ControlTag {
    pub tag: String,
    pub name: String,
    pub to_name: Vec<String>,
    pub labels: Vec<String>,
}

/// One place where the config reads task data.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DataRef {
    /// The top-level key of the task's data (`document` for
    /// `$document[{{idx}}].page`).
    pub key: String,
    /// The path as written after the `$`.
    pub path: String,
    /// Where it is read, for messages: `<Image valueList="$pages">`.
    pub source: String,
    /// Tasks must have the key (see the module documentation).
    pub required: bool,
    /// The key's value must be a list.
    pub list: bool,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LabelConfig {
    pub objects: Vec<ObjectTag>,
    pub controls: Vec<ControlTag>,
    /// Every data reference, in document order.
    pub refs: Vec<DataRef>,
}

/// Child tags whose `value` is a label, not a data reference.
const LABEL_TAGS: &[&str] = &["Label", "Choice", "Relation"];

/// Attributes that may read task data besides `value` and `valueList`;
/// never required.
const OPTIONAL_DATA_ATTRIBUTES: &[&str] = &["audioUrl", "frameRate", "apiUrl"];

/// Characters of a data path after `$` (the editor's pattern).
fn path_char(c: char) -> bool {
    c.is_alphanumeric() || matches!(c, '_' | '.' | '[' | ']' | '{' | '}')
}

/// The `$path`s in an attribute value, and whether the value is one whole
/// reference (`"$x"`, not `"Q: $x"` or `"$a $b"`).
fn references(value: &str) -> (Vec<&str>, bool) {
    let mut out = Vec::new();
    let mut rest = value;
    while let Some(at) = rest.find('$') {
        let after = &rest[at + 1..];
        let len = after.find(|c: char| !path_char(c)).unwrap_or(after.len());
        if len > 0 {
            out.push(&after[..len]);
        }
        rest = &after[len..];
    }
    let whole = out.len() == 1 && value.len() == out[0].len() + 1 && value.starts_with('$');
    (out, whole)
}

/// The top-level key of a path (`a` of `a.b`, `a[0]`, `a`), and whether
/// the path indexes it as a list.
fn top_key(path: &str) -> (&str, bool) {
    match path.find(['.', '[']) {
        Some(i) => (&path[..i], path[i..].starts_with('[')),
        None => (path, false),
    }
}

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
            let is_label = LABEL_TAGS.contains(&tag);
            for attribute in node.attributes() {
                let (attr, value) = (attribute.name(), attribute.value());
                let (paths, whole) = references(value);
                let (required, list) = match attr {
                    "valueList" => (whole, true),
                    "on" if tag == "Repeater" => (whole, true),
                    "value" => (whole && name.is_some() && !is_label, false),
                    a if OPTIONAL_DATA_ATTRIBUTES.contains(&a) => (false, false),
                    _ => continue,
                };
                for path in paths {
                    let (key, indexed) = top_key(path);
                    if key.is_empty() {
                        continue;
                    }
                    config.refs.push(DataRef {
                        key: key.to_owned(),
                        path: path.to_owned(),
                        source: format!("<{tag} {attr}=\"{value}\">"),
                        required,
                        list: (list && whole) || (indexed && required),
                    });
                }
            }
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
            } else if let (Some(name), Some(value)) = (name, node.attribute("value").or(node.attribute("valueList"))) {
                if !is_label && !value.is_empty() {
                    config.objects.push(ObjectTag {
                        tag: tag.to_owned(),
                        name: name.to_owned(),
                        value: value.strip_prefix('$').unwrap_or(value).to_owned(),
                    });
                }
            }
        }
        Ok(config)
    }

    /// Parses a config a user submits: it must be well-formed, have at least
    /// one object or control tag, give each tag a name of its own, and every
    /// `toName` must name an object tag.
    pub fn validate(xml: &str) -> Result<Self, ValidationErrors> {
        let config = Self::parse(xml).map_err(|e| ValidationErrors::field("label_config", e))?;
        if config.objects.is_empty() && config.controls.is_empty() {
            return Err(ValidationErrors::field(
                "label_config",
                "Label config has no object tag (such as <Image value=\"$image\"/>) and no control tag (such as <Choices toName=\"...\"/>)",
            ));
        }
        let mut errors = ValidationErrors::default();
        // Names identify tags in results and in `toName`: two tags with one
        // name leave the editor unable to tell them apart (it renders
        // nothing), so Label Studio refuses them too.
        let mut names: Vec<(&str, &str)> = Vec::new();
        let tags = config
            .objects
            .iter()
            .map(|o| (o.tag.as_str(), o.name.as_str()))
            .chain(config.controls.iter().map(|c| (c.tag.as_str(), c.name.as_str())));
        for (tag, name) in tags {
            if name.is_empty() {
                continue;
            }
            match names.iter().find(|(_, n)| *n == name) {
                Some((first, _)) => errors.add(
                    "label_config",
                    format!("name=\"{name}\" is used by both <{first}> and <{tag}>; each tag needs a name of its own"),
                ),
                None => names.push((tag, name)),
            }
        }
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

    /// Required data keys in document order, without duplicates.
    pub fn data_keys(&self) -> Vec<&str> {
        let mut keys: Vec<&str> = Vec::new();
        for r in self.refs.iter().filter(|r| r.required) {
            if !keys.contains(&r.key.as_str()) {
                keys.push(&r.key);
            }
        }
        keys
    }

    /// Where a storage's `$undefined$` payload is shown: the first key an
    /// object tag reads as a whole (`value="$image"`), else the first
    /// required key.
    pub fn first_data_key(&self) -> Option<&str> {
        let object_key = self.objects.iter().find_map(|o| {
            self.refs
                .iter()
                .find(|r| r.required && r.path == o.value)
                .map(|r| r.key.as_str())
        });
        object_key.or_else(|| self.data_keys().first().copied())
    }

    /// Checks a task's data against the references it must satisfy: an
    /// object with every required key (a flat key spelled as the whole path,
    /// `"meta.image"`, counts for `$meta.image`), lists where the config
    /// reads a list. A task whose data holds `$undefined$` (a storage's
    /// payload) passes, as it is shown under the first key.
    ///
    /// Errors: the first problem, naming the key and the tag that reads it.
    pub fn check_task_data(&self, data: &Value) -> Result<(), String> {
        let Value::Object(map) = data else {
            return Err(format!(
                "task data must be a JSON object, got {}",
                crate::import::kind(data)
            ));
        };
        if map.contains_key(crate::task_data::DATA_UNDEFINED_NAME) {
            return Ok(());
        }
        for r in self.refs.iter().filter(|r| r.required) {
            let value = match map.get(&r.key) {
                Some(v) => v,
                None if map.contains_key(&r.path) => continue,
                None => {
                    return Err(format!(
                        "data has no \"{}\" key, which the label config reads in {}",
                        r.key, r.source
                    ))
                }
            };
            if r.list && !value.is_array() {
                return Err(format!(
                    "data \"{}\" must be a list for {}, got {}",
                    r.key,
                    r.source,
                    crate::import::kind(value)
                ));
            }
        }
        Ok(())
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
        let e = LabelConfig::validate(
            "<View><Image name='image' value='$x'/><Choices name='image' toName='image'/></View>",
        )
        .unwrap_err();
        assert!(
            e.summary()
                .contains("name=\"image\" is used by both <Image> and <Choices>"),
            "{e}"
        );
    }

    /// Each way a config reads task data (Label Studio's tags and editor):
    /// the config is accepted, and tasks of the shape the editor needs pass
    /// while others are refused naming the key and the tag.
    #[test]
    fn every_reference_form() {
        struct Case {
            config: &'static str,
            first_key: Option<&'static str>,
            required: &'static [&'static str],
            good: &'static [&'static str],
            bad: &'static [(&'static str, &'static str)],
        }
        let cases = [
            // Plain value.
            Case {
                config: r#"<View><Image name="img" value="$image"/><Choices name="c" toName="img"><Choice value="a"/></Choices></View>"#,
                first_key: Some("image"),
                required: &["image"],
                good: &[
                    r#"{"image": "gs://b/1.jpg"}"#,
                    r#"{"image": ["gs://b/1.jpg"], "extra": 1}"#,
                ],
                bad: &[(
                    r#"{"img": "gs://b/1.jpg"}"#,
                    r#"no "image" key, which the label config reads in <Image value="$image">"#,
                )],
            },
            // Multi-page image: valueList, toName names the tag.
            Case {
                config: r#"<View><Image name="pages" valueList="$images"/><Choices name="c" toName="pages" perItem="true"><Choice value="a"/></Choices></View>"#,
                first_key: Some("images"),
                required: &["images"],
                good: &[r#"{"images": ["gs://b/1.jpg", "gs://b/2.jpg"]}"#],
                bad: &[
                    (r#"{"image": ["gs://b/1.jpg"]}"#, r#"no "images" key"#),
                    (
                        r#"{"images": "gs://b/1.jpg"}"#,
                        r#""images" must be a list for <Image valueList="$images">, got a string"#,
                    ),
                ],
            },
            // Repeater over a list of objects, names templated with the index flag.
            Case {
                config: r#"<View><Repeater on="$document" indexFlag="{{idx}}"><Image name="page_{{idx}}" value="$document[{{idx}}].page"/><Choices name="c_{{idx}}" toName="page_{{idx}}"><Choice value="a"/></Choices></Repeater></View>"#,
                first_key: Some("document"),
                required: &["document"],
                good: &[r#"{"document": [{"page": "gs://b/1.jpg"}, {"page": "gs://b/2.jpg"}]}"#],
                bad: &[
                    (
                        r#"{"pages": []}"#,
                        r#"no "document" key, which the label config reads in <Repeater on="$document">"#,
                    ),
                    (
                        r#"{"document": {"page": "gs://b/1.jpg"}}"#,
                        r#""document" must be a list"#,
                    ),
                ],
            },
            // Nested path; a flat key spelled with the dot also counts.
            Case {
                config: r#"<View><Image name="img" value="$meta.image"/><Choices name="c" toName="img"><Choice value="a"/></Choices></View>"#,
                first_key: Some("meta"),
                required: &["meta"],
                good: &[
                    r#"{"meta": {"image": "gs://b/1.jpg"}}"#,
                    r#"{"meta.image": "gs://b/1.jpg"}"#,
                ],
                bad: &[(r#"{"image": "gs://b/1.jpg"}"#, r#"no "meta" key"#)],
            },
            // Indexed path outside a Repeater: the key must be a list.
            Case {
                config: r#"<View><Image name="img" value="$pages[0]"/></View>"#,
                first_key: Some("pages"),
                required: &["pages"],
                good: &[r#"{"pages": ["gs://b/1.jpg"]}"#],
                bad: &[(r#"{"pages": "gs://b/1.jpg"}"#, r#""pages" must be a list"#)],
            },
            // Text around references, several references, unnamed tags: optional.
            Case {
                config: r#"<View><Header value="Question: $question"/><Header value="$title"/><Text name="t" value="$a and $b"/><Text name="body" value="$text"/><Choices name="c" toName="body"><Choice value="$x"/></Choices></View>"#,
                first_key: Some("text"),
                required: &["text"],
                good: &[
                    r#"{"text": "hello"}"#,
                    r#"{"text": "hello", "question": "q", "a": 1, "b": 2}"#,
                ],
                bad: &[(r#"{"question": "q"}"#, r#"no "text" key"#)],
            },
            // Labels taken from the task (dynamic Choices and Labels).
            Case {
                config: r#"<View><Text name="t" value="$text"/><Choices name="c" toName="t" value="$options"/><Labels name="l" toName="t" value="$labels"/></View>"#,
                first_key: Some("text"),
                required: &["text", "options", "labels"],
                good: &[r#"{"text": "x", "options": [{"value": "A"}], "labels": [{"value": "L"}]}"#],
                bad: &[(
                    r#"{"text": "x", "labels": []}"#,
                    r#"no "options" key, which the label config reads in <Choices value="$options">"#,
                )],
            },
            // Paragraphs with an optional audio URL; TimeSeries columns are not keys.
            Case {
                config: r#"<View><Paragraphs name="p" value="$dialogue" nameKey="author" textKey="text" audioUrl="$audio"/><TimeSeries name="ts" value="$csv" valueType="url" timeColumn="time"><Channel column="s1"/></TimeSeries><Choices name="c" toName="p,ts"><Choice value="a"/></Choices></View>"#,
                first_key: Some("dialogue"),
                required: &["dialogue", "csv"],
                good: &[r#"{"dialogue": [{"author": "A", "text": "hi"}], "csv": "gs://b/x.csv"}"#],
                bad: &[(
                    r#"{"dialogue": []}"#,
                    r#"no "csv" key, which the label config reads in <TimeSeries value="$csv">"#,
                )],
            },
            // A literal object value needs no data.
            Case {
                config: r#"<View><Text name="intro" value="Read this"/><Choices name="c" toName="intro"><Choice value="a"/></Choices></View>"#,
                first_key: None,
                required: &[],
                good: &[r#"{}"#, r#"{"anything": 1}"#],
                bad: &[(r#"[1]"#, "must be a JSON object")],
            },
        ];
        for case in cases {
            let config = LabelConfig::validate(case.config).unwrap_or_else(|e| panic!("{}: {e}", case.config));
            assert_eq!(config.first_data_key(), case.first_key, "{}", case.config);
            assert_eq!(config.data_keys(), case.required, "{}", case.config);
            for good in case.good {
                let data: Value = serde_json::from_str(good).unwrap();
                assert_eq!(config.check_task_data(&data), Ok(()), "{} with {good}", case.config);
            }
            for (bad, needle) in case.bad {
                let data: Value = serde_json::from_str(bad).unwrap();
                let e = config.check_task_data(&data).expect_err(bad);
                assert!(e.contains(needle), "{} with {bad}: {e}", case.config);
            }
            // A storage's payload is shown under the first key, never refused.
            assert_eq!(
                config.check_task_data(&serde_json::json!({"$undefined$": "gs://b/k"})),
                Ok(())
            );
        }
    }
}
