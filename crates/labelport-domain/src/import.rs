//! Turning submitted task elements (API import bodies, and later task files
//! in buckets) into new tasks. An element is either bare data (`{"text": …}`)
//! or a wrapped task (`{"data": {…}, "annotations": […], "predictions": […]}`).

use serde_json::{Map, Value};

#[derive(Debug, Clone, PartialEq)]
pub struct NewAnnotation {
    pub result: Value,
    pub was_cancelled: bool,
    pub ground_truth: bool,
    pub lead_time: Option<f64>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct NewPrediction {
    pub result: Value,
    pub score: Option<f64>,
    pub model_version: String,
}

#[derive(Debug, Clone, PartialEq)]
pub struct NewTask {
    pub data: Value,
    pub meta: Value,
    pub allow_skip: bool,
    pub annotations: Vec<NewAnnotation>,
    pub predictions: Vec<NewPrediction>,
}

/// Checks an annotation or prediction `result`: a list of objects.
pub fn validate_result(result: &Value) -> Result<(), String> {
    match result {
        Value::Array(items) => match items.iter().position(|i| !i.is_object()) {
            None => Ok(()),
            Some(i) => Err(format!("result[{i}] must be an object, got {}", kind(&items[i]))),
        },
        other => Err(format!("result must be a list of objects, got {}", kind(other))),
    }
}

pub fn kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "a list",
        Value::Object(_) => "an object",
    }
}

fn parse_annotation(v: &Value) -> Result<NewAnnotation, String> {
    let obj = v
        .as_object()
        .ok_or_else(|| format!("annotation must be an object, got {}", kind(v)))?;
    let result = obj.get("result").cloned().unwrap_or(Value::Array(vec![]));
    validate_result(&result).map_err(|e| format!("annotation {e}"))?;
    Ok(NewAnnotation {
        result,
        was_cancelled: obj.get("was_cancelled").and_then(Value::as_bool).unwrap_or(false),
        ground_truth: obj.get("ground_truth").and_then(Value::as_bool).unwrap_or(false),
        lead_time: obj.get("lead_time").and_then(Value::as_f64),
    })
}

pub fn parse_prediction(v: &Value) -> Result<NewPrediction, String> {
    let obj = v
        .as_object()
        .ok_or_else(|| format!("prediction must be an object, got {}", kind(v)))?;
    let result = obj.get("result").cloned().unwrap_or(Value::Array(vec![]));
    validate_result(&result).map_err(|e| format!("prediction {e}"))?;
    let score = match obj.get("score") {
        None | Some(Value::Null) => None,
        Some(Value::Number(n)) => n.as_f64(),
        Some(other) => return Err(format!("prediction score must be a number, got {}", kind(other))),
    };
    let model_version = match obj.get("model_version") {
        None | Some(Value::Null) => String::new(),
        Some(Value::String(s)) => s.clone(),
        Some(other) => other.to_string(),
    };
    Ok(NewPrediction {
        result,
        score,
        model_version,
    })
}

fn parse_list<T>(
    obj: &Map<String, Value>,
    key: &str,
    parse: impl Fn(&Value) -> Result<T, String>,
) -> Result<Vec<T>, String> {
    match obj.get(key) {
        None | Some(Value::Null) => Ok(vec![]),
        Some(Value::Array(items)) => items.iter().map(parse).collect(),
        Some(other) => Err(format!("\"{key}\" must be a list, got {}", kind(other))),
    }
}

/// Parses one element. Errors are plain messages; callers add the position.
pub fn parse_task_element(element: Value) -> Result<NewTask, String> {
    let Value::Object(mut obj) = element else {
        return Err(format!("a task must be a JSON object, got {}", kind(&element)));
    };
    let wrapped = matches!(obj.get("data"), Some(Value::Object(_)));
    if !wrapped {
        for key in ["annotations", "predictions"] {
            if obj.get(key).and_then(Value::as_array).is_some_and(|a| !a.is_empty()) {
                return Err(format!("a task with \"{key}\" must put its data under \"data\""));
            }
        }
        return Ok(NewTask {
            data: Value::Object(obj),
            meta: Value::Object(Map::new()),
            allow_skip: true,
            annotations: vec![],
            predictions: vec![],
        });
    }
    let annotations = parse_list(&obj, "annotations", parse_annotation)?;
    let predictions = parse_list(&obj, "predictions", parse_prediction)?;
    let allow_skip = obj.get("allow_skip").and_then(Value::as_bool).unwrap_or(true);
    let meta = match obj.remove("meta") {
        Some(m @ Value::Object(_)) => m,
        _ => Value::Object(Map::new()),
    };
    let data = obj.remove("data").expect("checked above");
    Ok(NewTask {
        data,
        meta,
        allow_skip,
        annotations,
        predictions,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn bare_and_wrapped_elements() {
        let t = parse_task_element(json!({"text": "hi", "meta": 1})).unwrap();
        assert_eq!(t.data, json!({"text": "hi", "meta": 1}));
        let t = parse_task_element(json!({
            "data": {"text": "hi"}, "meta": {"m": 1}, "id": 7,
            "annotations": [{"result": [{"type": "choices"}], "was_cancelled": true}],
            "predictions": [{"result": [], "score": 0.5, "model_version": "v1"}]
        }))
        .unwrap();
        assert_eq!(t.data, json!({"text": "hi"}));
        assert_eq!(t.meta, json!({"m": 1}));
        assert!(t.annotations[0].was_cancelled);
        assert_eq!(t.predictions[0].score, Some(0.5));
        assert_eq!(t.predictions[0].model_version, "v1");
    }

    #[test]
    fn rejects_bad_elements() {
        assert!(parse_task_element(json!([1])).unwrap_err().contains("JSON object"));
        assert!(parse_task_element(json!({"annotations": [{"result": []}]}))
            .unwrap_err()
            .contains("under \"data\""));
        assert!(
            parse_task_element(json!({"data": {}, "annotations": [{"result": "x"}]}))
                .unwrap_err()
                .contains("list of objects")
        );
        assert!(validate_result(&json!([1])).unwrap_err().contains("result[0]"));
        assert!(validate_result(&json!([{}])).is_ok());
    }
}
