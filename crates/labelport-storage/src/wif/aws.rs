//! The AWS subject token: a `GetCallerIdentity` request to AWS STS, signed
//! with the server's AWS credentials (SigV4) but never sent; Google STS
//! sends it to AWS to learn who the server is. Shape (Google, "Workload
//! Identity Federation with AWS", and `external_account` AIP-4117):
//!
//! ```json
//! {"url": "https://sts.{region}.amazonaws.com?Action=GetCallerIdentity&Version=2011-06-15",
//!  "method": "POST", "body": "",
//!  "headers": [{"key": "Authorization", "value": "AWS4-HMAC-SHA256 …"},
//!              {"key": "host", …}, {"key": "x-amz-date", …},
//!              {"key": "x-amz-security-token", …},
//!              {"key": "x-goog-cloud-target-resource", "value": "<audience>"}]}
//! ```
//!
//! `x-goog-cloud-target-resource` is signed, so the token is good for this
//! one pool provider only. Credentials and region come from the AWS SDK's
//! default chains: environment (`AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`,
//! `AWS_SESSION_TOKEN`, `AWS_REGION` / `AWS_DEFAULT_REGION`), profile, web
//! identity (EKS), ECS, then the EC2 metadata service with IMDSv2.

use std::time::SystemTime;

use aws_config::default_provider::credentials::DefaultCredentialsChain;
use aws_config::environment::EnvironmentVariableRegionProvider;
use aws_config::imds;
use aws_config::meta::region::RegionProviderChain;
use aws_config::profile::ProfileFileRegionProvider;
use aws_credential_types::provider::ProvideCredentials;
use aws_sigv4::http_request::{sign, SignableBody, SignableRequest, SigningSettings};
use aws_sigv4::sign::v4;
use serde_json::json;

/// The server's AWS identity: the SDK's credential and region chains,
/// built once per process (they cache what the metadata service gives).
pub struct AwsIdentity {
    credentials: Result<DefaultCredentialsChain, String>,
    region: RegionProviderChain,
}

impl std::fmt::Debug for AwsIdentity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AwsIdentity").finish_non_exhaustive()
    }
}

/// Why there is no AWS subject token.
#[derive(Debug)]
pub enum AwsError {
    /// A provider did not answer in time or answered with an error: may
    /// work on a later try.
    Transient(String),
    /// No credentials or no region where they were looked for.
    Missing(String),
}

/// An error and its causes on one line (the SDK's errors keep the reason
/// in their sources).
fn chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        let text = s.to_string();
        if !out.contains(&text) {
            out.push_str(": ");
            out.push_str(&text);
        }
        source = s.source();
    }
    out
}

impl AwsIdentity {
    /// The SDK's chains, with the EC2 metadata service at `imds_endpoint`
    /// when given (else `AWS_EC2_METADATA_SERVICE_ENDPOINT`, else
    /// `http://169.254.169.254`).
    pub async fn load(imds_endpoint: Option<String>) -> AwsIdentity {
        let imds_client = match imds_endpoint {
            Some(endpoint) => imds::Client::builder()
                .endpoint(&endpoint)
                .map(|b| b.build())
                .map_err(|e| format!("the EC2 metadata endpoint {endpoint:?} is not a URL: {e}")),
            None => Ok(imds::Client::builder().build()),
        };
        // Environment, profile, then the metadata service named here (the
        // SDK's default chain would ask its own default endpoint).
        let region_chain = |client: imds::Client| {
            RegionProviderChain::first_try(EnvironmentVariableRegionProvider::new())
                .or_else(ProfileFileRegionProvider::new())
                .or_else(imds::region::ImdsRegionProvider::builder().imds_client(client).build())
        };
        match imds_client {
            Ok(client) => AwsIdentity {
                credentials: Ok(DefaultCredentialsChain::builder()
                    .imds_client(client.clone())
                    .region(region_chain(client.clone()))
                    .build()
                    .await),
                region: region_chain(client),
            },
            Err(e) => AwsIdentity {
                credentials: Err(e),
                region: RegionProviderChain::first_try(EnvironmentVariableRegionProvider::new()),
            },
        }
    }

    /// A fresh subject token for the pool provider `audience`. The error
    /// says what was missing.
    pub async fn subject_token(&self, audience: &str) -> Result<String, AwsError> {
        use aws_credential_types::provider::error::CredentialsError;
        let chain_of = self.credentials.as_ref().map_err(|e| AwsError::Missing(e.clone()))?;
        let credentials = chain_of.provide_credentials().await.map_err(|e| {
            let message = format!(
                "no AWS credentials (tried AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY, the AWS profile, web identity, \
                 ECS and the EC2 metadata service with IMDSv2): {}",
                chain(&e)
            );
            match e {
                CredentialsError::ProviderTimedOut(_) => AwsError::Transient(message),
                _ => AwsError::Missing(message),
            }
        })?;
        let region = self.region.region().await.ok_or_else(|| {
            AwsError::Missing(
                "no AWS region (set AWS_REGION or AWS_DEFAULT_REGION, or run on EC2 where the metadata service tells it)"
                    .into(),
            )
        })?;
        signed_get_caller_identity(&credentials, region.as_ref(), audience, SystemTime::now())
            .map_err(AwsError::Missing)
    }
}

/// The subject token for `audience`, signed at `time` with `credentials`
/// for `region`: Google's JSON shape above (not yet URL-encoded; the STS
/// form encodes it).
pub fn signed_get_caller_identity(
    credentials: &aws_credential_types::Credentials,
    region: &str,
    audience: &str,
    time: SystemTime,
) -> Result<String, String> {
    let host = format!("sts.{region}.amazonaws.com");
    let url = format!("https://{host}?Action=GetCallerIdentity&Version=2011-06-15");
    let identity = credentials.clone().into();
    let params = v4::SigningParams::builder()
        .identity(&identity)
        .region(region)
        .name("sts")
        .time(time)
        .settings(SigningSettings::default())
        .build()
        .map_err(|e| format!("signing the AWS request: {e}"))?
        .into();
    let headers = [("host", host.as_str()), ("x-goog-cloud-target-resource", audience)];
    let signable = SignableRequest::new("POST", url.as_str(), headers.iter().copied(), SignableBody::Bytes(b""))
        .map_err(|e| format!("signing the AWS request: {e}"))?;
    let (instructions, _signature) = sign(signable, &params)
        .map_err(|e| format!("signing the AWS request: {e}"))?
        .into_parts();
    let mut all: Vec<(String, String)> = instructions
        .headers()
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect();
    all.extend(headers.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())));
    // Google's libraries list Authorization first, then the rest by name.
    all.sort_by_key(|(k, _)| (!k.eq_ignore_ascii_case("authorization"), k.to_ascii_lowercase()));
    let headers: Vec<_> = all
        .into_iter()
        .map(|(k, v)| {
            let key = if k.eq_ignore_ascii_case("authorization") {
                "Authorization".to_owned()
            } else {
                k.to_ascii_lowercase()
            };
            json!({"key": key, "value": v})
        })
        .collect();
    Ok(json!({"url": url, "method": "POST", "headers": headers, "body": ""}).to_string())
}
