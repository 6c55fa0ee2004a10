//! Plain types and rules of the labeling domain, free of I/O: label-config
//! parsing, task payload shaping (`$undefined$`), import element parsing and
//! the validation errors they produce, and what a storage is (direction,
//! kind, settings and their checks: [`storage`]).

pub mod access;
pub mod cors;
pub mod import;
pub mod label_config;
pub mod resolve;
pub mod secret;
pub mod storage;
pub mod task_data;
pub mod validation;

pub use label_config::LabelConfig;
pub use validation::ValidationErrors;
