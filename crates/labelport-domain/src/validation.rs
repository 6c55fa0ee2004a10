//! Field-keyed validation errors, shaped like Django REST framework's
//! (`{"field": ["message", ...]}`) because Label Studio clients read them so.

use std::collections::BTreeMap;

/// Messages per field; `non_field_errors` holds those about the whole body.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
#[serde(transparent)]
pub struct ValidationErrors(pub BTreeMap<String, Vec<String>>);

impl ValidationErrors {
    pub const NON_FIELD: &'static str = "non_field_errors";

    pub fn field(field: impl Into<String>, message: impl Into<String>) -> Self {
        let mut errors = Self::default();
        errors.add(field, message);
        errors
    }

    pub fn non_field(message: impl Into<String>) -> Self {
        Self::field(Self::NON_FIELD, message)
    }

    pub fn add(&mut self, field: impl Into<String>, message: impl Into<String>) {
        self.0.entry(field.into()).or_default().push(message.into());
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// All messages as `field: message` lines, for logs and tracebacks.
    pub fn summary(&self) -> String {
        self.0
            .iter()
            .flat_map(|(field, msgs)| msgs.iter().map(move |m| format!("{field}: {m}")))
            .collect::<Vec<_>>()
            .join("\n")
    }

    pub fn into_result(self) -> Result<(), ValidationErrors> {
        if self.is_empty() {
            Ok(())
        } else {
            Err(self)
        }
    }
}

impl std::fmt::Display for ValidationErrors {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.summary())
    }
}

impl std::error::Error for ValidationErrors {}
