//! `external_account` credential configurations (Google AIP-4117), pasted
//! into a `gcs` storage or found as Application Default Credentials, read
//! into the same [`Exchange`] a `gcswif` storage makes from its fields.
//!
//! A configuration names URLs the server would send its own identity to,
//! so none is taken on trust: `token_url` must be Google's STS and
//! `service_account_impersonation_url` Google's IAM Credentials (or the
//! endpoints the server's settings name); the requests go to the server's
//! configured endpoints. A pasted configuration may only use the AWS
//! source: a file or URL source would read the server's files or reach
//! addresses a user chose (the server's operator sets those with
//! `LABELPORT_WIF_CREDENTIAL_SOURCE` for `gcswif` storages, or in the ADC
//! file).

use serde_json::Value;

use super::{Exchange, SubjectConfig, SubjectSource, WifEnv, DEFAULT_IAM_ENDPOINT, DEFAULT_STS_ENDPOINT};

/// Whether `json` is an `external_account` configuration.
pub fn is_external_account(json: &str) -> bool {
    serde_json::from_str::<Value>(json)
        .ok()
        .and_then(|v| v.get("type").and_then(Value::as_str).map(|t| t == "external_account"))
        .unwrap_or(false)
}

/// A checked `external_account` configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExternalAccount {
    pub exchange: Exchange,
}

fn endpoints(configured: &str, google: &str) -> Vec<String> {
    let mut out = vec![google.to_owned()];
    let configured = configured.trim_end_matches('/');
    if configured != google {
        out.push(configured.to_owned());
    }
    out
}

impl ExternalAccount {
    /// Reads and checks `text`. `pasted`: it came from a user (only the AWS
    /// source is allowed); else from the server's own ADC file. Errors name
    /// the field and never echo secrets (a configuration holds none).
    pub fn parse(text: &str, env: &WifEnv, pasted: bool) -> Result<ExternalAccount, String> {
        let value: Value =
            serde_json::from_str(text).map_err(|e| format!("the external_account configuration is not JSON: {e}"))?;
        let field = |name: &str| {
            value
                .get(name)
                .and_then(Value::as_str)
                .map(str::trim)
                .unwrap_or_default()
        };
        if field("type") != "external_account" {
            return Err("not an external_account configuration".into());
        }
        let audience = field("audience");
        if audience.contains("/workforcePools/") || !value["workforce_pool_user_project"].is_null() {
            return Err("workforce identity pools are not supported; use a workload identity pool".into());
        }
        if !(audience.starts_with("//iam.googleapis.com/projects/") && audience.contains("/workloadIdentityPools/")) {
            return Err(format!(
                "the external_account audience {audience:?} is not a workload identity pool provider \
                 (//iam.googleapis.com/projects/NUMBER/locations/global/workloadIdentityPools/POOL/providers/PROVIDER)"
            ));
        }
        let token_url = field("token_url");
        let allowed_sts: Vec<String> = endpoints(&env.sts_endpoint, DEFAULT_STS_ENDPOINT)
            .into_iter()
            .map(|e| format!("{e}/v1/token"))
            .collect();
        if !allowed_sts.iter().any(|u| u == token_url) {
            return Err(format!(
                "the external_account token_url must be Google's STS ({DEFAULT_STS_ENDPOINT}/v1/token), not {token_url:?}"
            ));
        }
        let impersonation = field("service_account_impersonation_url");
        let service_account_email = if impersonation.is_empty() {
            None
        } else {
            let email = endpoints(&env.iam_endpoint, DEFAULT_IAM_ENDPOINT)
                .iter()
                .find_map(|base| {
                    impersonation
                        .strip_prefix(&format!("{base}/v1/projects/-/serviceAccounts/"))
                        .and_then(|rest| rest.strip_suffix(":generateAccessToken"))
                })
                .map(|email| email.replace("%40", "@"))
                .filter(|email| email.contains('@') && !email.contains(['/', '?', '#', ' ']))
                .ok_or_else(|| {
                    format!(
                        "the external_account service_account_impersonation_url must be \
                         {DEFAULT_IAM_ENDPOINT}/v1/projects/-/serviceAccounts/EMAIL:generateAccessToken, not {impersonation:?}"
                    )
                })?;
            Some(email)
        };
        let subject = SubjectConfig::from_json(&value)?;
        if pasted && subject.source != SubjectSource::Aws {
            return Err(
                "a pasted external_account configuration may only use the AWS credential source; a token file \
                 or URL is set on the server (LABELPORT_WIF_CREDENTIAL_SOURCE) and used by gcswif storages"
                    .into(),
            );
        }
        Ok(ExternalAccount {
            exchange: Exchange {
                audience: audience.to_owned(),
                subject,
                service_account_email,
            },
        })
    }
}
