//! Import (and later export) engines over the storage connector trait, and
//! the readers that turn task files into rows.

pub mod import;
pub mod job;
pub mod readers;
