//! Shared state of the HTTP handlers.

use labelport_db::Db;

#[derive(Clone)]
pub struct AppState {
    pub db: Db,
}
