//! Shared state of the HTTP handlers.

use std::collections::HashMap;
use std::hash::{Hash, Hasher};
use std::sync::Arc;

use labelport_db::{Db, StorageRow};
use labelport_storage::gcs::GcsStore;
use labelport_storage::{StorageEnv, StorageError};
use tokio::sync::{Mutex, Notify};

#[derive(Clone)]
pub struct AppState {
    pub db: Db,
    /// Where storage connectors connect (the GCS emulator in tests).
    pub storage_env: StorageEnv,
    /// Wakes this process's job workers when a job is queued.
    pub jobs_notify: Arc<Notify>,
    /// Public URL prefix for generated resolve URLs ("" = relative).
    pub public_url: String,
    /// Connected stores by storage, reused across media requests.
    pub stores: StoreCache,
    /// Buckets that non-admins may reach with the server's own cloud
    /// identity (a storage without credentials): names, or `*` for any.
    /// Empty: admins only. (`LABELPORT_AMBIENT_CREDENTIALS_BUCKETS`.)
    pub ambient_buckets: Vec<String>,
    /// Serve objects of types that run script (HTML, SVG, XML, JavaScript)
    /// inline instead of as attachments (`LABELPORT_MEDIA_INLINE_ACTIVE`;
    /// off by default). They are sandboxed by CSP either way.
    pub media_inline_active: bool,
    /// Login attempts allowed per account and per client address.
    pub login_limits: Arc<LoginLimits>,
    /// Session cookies carry `Secure` (the public URL is https).
    pub secure_cookies: bool,
    /// Another host name for media (`LABELPORT_MEDIA_URL`), when set.
    pub media: Option<crate::media_origin::MediaOrigin>,
    /// Checks the OIDC tokens of Pub/Sub push requests (bucket
    /// notifications), with Google's keys (`LABELPORT_PUBSUB_JWKS_URL`).
    pub push_verifier: Arc<crate::notifications::PushVerifier>,
}

/// Login rate limits (GCRA, `governor`), kept in this process: per account
/// [`LoginLimits::PER_ACCOUNT`] attempts at once then one every 30 s, per
/// address [`LoginLimits::PER_ADDRESS`] then one every 2 s. Several
/// processes each keep their own. Behind a proxy every client has the
/// proxy's address, so the per-address limit then covers all of them.
pub struct LoginLimits {
    accounts: governor::DefaultKeyedRateLimiter<String>,
    addresses: governor::DefaultKeyedRateLimiter<std::net::IpAddr>,
}

impl LoginLimits {
    pub const PER_ACCOUNT: u32 = 10;
    pub const PER_ADDRESS: u32 = 60;

    fn new() -> LoginLimits {
        use governor::{Quota, RateLimiter};
        use std::num::NonZeroU32;
        let account = Quota::with_period(std::time::Duration::from_secs(30))
            .expect("a period")
            .allow_burst(NonZeroU32::new(Self::PER_ACCOUNT).expect("not zero"));
        let address = Quota::with_period(std::time::Duration::from_secs(2))
            .expect("a period")
            .allow_burst(NonZeroU32::new(Self::PER_ADDRESS).expect("not zero"));
        LoginLimits {
            accounts: RateLimiter::keyed(account),
            addresses: RateLimiter::keyed(address),
        }
    }

    /// Counts an attempt; false when the account or the address is over
    /// its limit (the attempt is then not checked at all).
    pub fn allow(&self, login: &str, address: Option<std::net::IpAddr>) -> bool {
        // Keys are forgotten once their limit has fully recovered, so the
        // maps hold only recent attempts (the login itself is capped at
        // MAX_LOGIN_CHARS by the handler).
        for_each_full(&self.accounts);
        for_each_full(&self.addresses);
        let by_address = address.is_none_or(|a| self.addresses.check_key(&a).is_ok());
        by_address && self.accounts.check_key(&login.to_lowercase()).is_ok()
    }
}

/// Keys kept before stale ones are dropped.
const LIMITER_KEYS: usize = 10_000;

fn for_each_full<K: std::hash::Hash + Eq + Clone>(limiter: &governor::DefaultKeyedRateLimiter<K>) {
    if limiter.len() > LIMITER_KEYS {
        limiter.retain_recent();
        limiter.shrink_to_fit();
    }
}

impl AppState {
    pub fn new(db: Db) -> Self {
        AppState {
            db,
            storage_env: StorageEnv::default(),
            jobs_notify: Arc::new(Notify::new()),
            public_url: String::new(),
            stores: StoreCache::default(),
            ambient_buckets: Vec::new(),
            media_inline_active: false,
            login_limits: Arc::new(LoginLimits::new()),
            secure_cookies: false,
            media: None,
            push_verifier: Arc::new(crate::notifications::PushVerifier::new(
                crate::notifications::GOOGLE_JWKS_URL,
            )),
        }
    }
}

/// Clients per storage: building one (and, with a key, fetching a token)
/// per media request would cost more than the request. An entry is rebuilt
/// when the storage's connection settings change.
#[derive(Clone, Default)]
pub struct StoreCache {
    gcs: Arc<Mutex<HashMap<i64, (u64, GcsStore)>>>,
}

impl StoreCache {
    pub async fn get(&self, env: &StorageEnv, row: &StorageRow) -> Result<GcsStore, StorageError> {
        let mut h = std::collections::hash_map::DefaultHasher::new();
        (
            row.kind,
            row.direction(),
            &row.settings.bucket,
            &row.settings.credentials,
            &row.settings.wif,
            &env.gcs_endpoint,
            &env.emulator,
        )
            .hash(&mut h);
        let fingerprint = h.finish();
        let mut map = self.gcs.lock().await;
        if let Some((f, store)) = map.get(&row.id) {
            if *f == fingerprint {
                return Ok(store.clone());
            }
        }
        let store = env.connect(row.kind, &row.settings).await?;
        map.insert(row.id, (fingerprint, store.clone()));
        Ok(store)
    }
}
