//! Task-file readers: JSON (one object or an array), JSONL and Parquet,
//! streamed from a connector's byte stream, yielding one row at a time with
//! its position so a bad row is reported as `key:line 4711: message` and the
//! rest of the file still imports.
//!
//! Memory stays bounded whatever the file size: files are read chunk by
//! chunk and only one row (at most [`MAX_ROW_BYTES`]) is held at a time. The
//! one exception is a `.json` file starting with `{`, which Label Studio
//! parses as one object; it is buffered up to [`MAX_OBJECT_BYTES`] (and no
//! further as soon as it is clearly JSONL). Parquet needs random access, so
//! it is spooled to an anonymous temporary file and read batch by batch.
//!
//! Row numbering: `row_index` is Label Studio's (`-1` for a file that is one
//! object, else 0, 1, 2… over array elements, non-empty JSONL lines or
//! Parquet rows). `position` is for people: `line N` is the physical, 1-based
//! line; `element N` and `row N` are 0-based and equal `row_index` (as in
//! `jq '.[N]'` or pandas' `df.iloc[N]`); `object` for a single-object file.

mod driver;
mod json;
mod json_array;
mod jsonl;
mod parquet_file;
#[cfg(test)]
mod tests;

use std::pin::Pin;
use std::sync::Arc;

use futures::{Stream, StreamExt};
use labelport_storage::{ByteStream, StorageError};

/// Largest single row (array element or JSONL line) that is parsed; a larger
/// one becomes an error row and is skipped without being held in memory.
pub const MAX_ROW_BYTES: usize = 256 << 20;

/// How much of a `.json` file starting with `{` is buffered to try it as
/// one object (Label Studio's first attempt) before treating it as JSONL.
pub const MAX_OBJECT_BYTES: usize = 256 << 20;

/// The kind of task file, chosen by the key's extension.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FileFormat {
    Json,
    Jsonl,
    Parquet,
}

impl FileFormat {
    /// `.json`, `.jsonl` or `.parquet` (any case) at the end of the key's
    /// last path segment; anything else is `None`.
    pub fn for_key(key: &str) -> Option<FileFormat> {
        let name = key.rsplit('/').next().unwrap_or(key);
        let (_, ext) = name.rsplit_once('.')?;
        if ext.eq_ignore_ascii_case("json") {
            Some(FileFormat::Json)
        } else if ext.eq_ignore_ascii_case("jsonl") {
            Some(FileFormat::Jsonl)
        } else if ext.eq_ignore_ascii_case("parquet") {
            Some(FileFormat::Parquet)
        } else {
            None
        }
    }
}

/// One task candidate read from a file.
#[derive(Debug, Clone, PartialEq)]
pub struct Row {
    /// `-1` for a file that is one JSON object; else 0, 1, 2… (array
    /// element, non-empty JSONL line, Parquet row).
    pub row_index: i64,
    /// Where the row is, for messages: `line 4711`, `element 12`, `row 5`,
    /// `object`.
    pub position: String,
    /// `Err` means this row is bad (the message says why and, for JSON,
    /// where); the rest of the file continues. Any JSON value is `Ok`, not
    /// only objects: the caller validates the shape.
    pub value: Result<serde_json::Value, String>,
}

/// A problem that ends the reading of a file. Rows yielded before it are
/// valid; the stream ends after it.
#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    #[error("could not read {key} from storage: {source}")]
    Storage {
        key: String,
        #[source]
        source: StorageError,
    },
    /// Label Studio's text, kept for parity.
    #[error(
        "Can't import JSON-formatted tasks from {key}. If you're trying to import binary objects, \
         perhaps you forgot to enable \"Tasks\" import method?"
    )]
    NotJson { key: String },
    /// Checked before anything else: the file is text, just not UTF-8.
    #[error(
        "{key} is UTF-16 text; task files must be UTF-8 (save it as UTF-8, \
         e.g. `iconv -f UTF-16 -t UTF-8 in.json > out.json`)"
    )]
    Utf16 { key: String },
    #[error(
        "{key} is an incomplete JSON array: the file ends before its closing `]` \
         (after {elements} complete elements); was the upload cut short?"
    )]
    UnterminatedArray { key: String, elements: i64 },
    #[error(
        "{key} has unexpected data after the closing `]` of its JSON array, \
         at line {line} column {column}"
    )]
    TrailingData { key: String, line: u64, column: u64 },
    #[error("{key} is not a readable Parquet file: {message}")]
    NotParquet { key: String, message: String },
    #[error("reading Parquet file {key} failed at row {row}: {message}")]
    Parquet { key: String, row: i64, message: String },
    #[error("could not copy {key} to a temporary file for reading: {source}")]
    TempFile {
        key: String,
        #[source]
        source: std::io::Error,
    },
}

impl ReadError {
    /// True when trying the file again later may succeed (storage hiccup).
    pub fn is_transient(&self) -> bool {
        matches!(self, ReadError::Storage { source, .. } if source.is_transient())
    }
}

/// Rows of one file, in order; ends after the first `Err`.
pub type RowStream = Pin<Box<dyn Stream<Item = Result<Row, ReadError>> + Send>>;

/// Reads `stream` (the content of object `key`) as a task file of `format`.
/// Lazy: nothing is read until the stream is polled.
pub fn read_rows(format: FileFormat, key: &str, stream: ByteStream) -> RowStream {
    read_rows_with(format, key, stream, Limits::DEFAULT)
}

/// As [`read_rows`], within the bounds of a preview ([`PREVIEW_LIMITS`]):
/// a row or a single-object file over 1 MiB is an error, not 256 MiB read.
pub fn read_rows_for_preview(format: FileFormat, key: &str, stream: ByteStream) -> RowStream {
    read_rows_with(format, key, stream, PREVIEW_LIMITS)
}

/// A preview's bounds: 1 MiB a row (or a whole `.json` object).
pub(crate) const PREVIEW_LIMITS: Limits = Limits {
    max_row_bytes: 1 << 20,
    max_object_bytes: 1 << 20,
    ..Limits::DEFAULT
};

/// Sizes that bound memory; smaller in tests to exercise the limits.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Limits {
    pub max_row_bytes: usize,
    pub max_object_bytes: usize,
    /// Input is parsed this much at a time, so rows produced per step (and
    /// held before the consumer takes them) stay few.
    pub piece_bytes: usize,
    pub parquet_batch_rows: usize,
}

impl Limits {
    pub const DEFAULT: Limits = Limits {
        max_row_bytes: MAX_ROW_BYTES,
        max_object_bytes: MAX_OBJECT_BYTES,
        piece_bytes: 64 << 10,
        parquet_batch_rows: 1024,
    };
}

pub(crate) fn read_rows_with(format: FileFormat, key: &str, stream: ByteStream, limits: Limits) -> RowStream {
    let key: Arc<str> = Arc::from(key);
    let rows: RowStream = match format {
        FileFormat::Json => driver::drive(
            key.clone(),
            stream,
            json::JsonParser::new(key, limits),
            limits.piece_bytes,
        ),
        FileFormat::Jsonl => driver::drive(
            key,
            stream,
            jsonl::LineSplitter::new(limits.max_row_bytes, 1, 0),
            limits.piece_bytes,
        ),
        FileFormat::Parquet => parquet_file::read(key, stream, limits.parquet_batch_rows),
    };
    // Fused so that polling after the end is harmless.
    Box::pin(rows.fuse())
}

/// JSON's insignificant whitespace.
fn is_json_ws(b: u8) -> bool {
    matches!(b, b' ' | b'\t' | b'\n' | b'\r')
}

/// serde's message without its ` at line L column C` suffix, and that
/// position (1-based, relative to the parsed slice) when it has one, so
/// callers can restate it relative to the whole file.
fn split_serde_error(e: &serde_json::Error) -> (String, Option<(u64, u64)>) {
    let text = e.to_string();
    if e.line() == 0 {
        return (text, None);
    }
    let suffix = format!(" at line {} column {}", e.line(), e.column());
    let message = text.strip_suffix(&suffix).unwrap_or(&text).to_string();
    (message, Some((e.line() as u64, e.column() as u64)))
}

/// A row that failed to parse, located relative to the file: the slice
/// given to serde began at `start` (1-based line and column in the file).
fn located_parse_error(e: &serde_json::Error, start: (u64, u64)) -> String {
    match split_serde_error(e) {
        (message, Some((1, column))) => format!(
            "{message} at line {} column {}",
            start.0,
            start.1 + column.saturating_sub(1)
        ),
        (message, Some((line, column))) => {
            format!("{message} at line {} column {column}", start.0 + line - 1)
        }
        (message, None) => message,
    }
}

/// Too large to parse: the row is skipped, not buffered.
fn oversized_message(what: &str, limit: usize) -> String {
    format!("{what} is larger than the limit of {limit} bytes; skipped")
}
