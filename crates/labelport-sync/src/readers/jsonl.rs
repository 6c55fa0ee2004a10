//! JSONL: each non-empty line (ASCII whitespace trimmed, so `\r\n` works)
//! is one JSON value. A line that does not parse is an error row and the
//! next line goes on. Only the current line is held in memory.

use std::collections::VecDeque;

use super::driver::{ChunkParser, Step};
use super::{oversized_message, split_serde_error, ReadError, Row};

const BOM: &[u8] = b"\xEF\xBB\xBF";

/// Above this, a line buffer is released after use rather than kept for
/// the next line, so one huge line does not pin its memory for the file.
const KEEP_BUFFER_BYTES: usize = 1 << 20;

pub(super) struct LineSplitter {
    max_row_bytes: usize,
    /// Physical, 1-based number of the line being collected.
    line_no: u64,
    /// Columns before the first byte fed (when a `.json` file's leading
    /// whitespace was consumed before it turned out to be JSONL).
    first_col_offset: u64,
    first: bool,
    /// Counts non-empty lines: Label Studio's `row_index`.
    index: i64,
    buf: Vec<u8>,
    oversized: bool,
}

impl LineSplitter {
    pub(super) fn new(max_row_bytes: usize, first_line: u64, first_col_offset: u64) -> Self {
        LineSplitter {
            max_row_bytes,
            line_no: first_line,
            first_col_offset,
            first: true,
            index: 0,
            buf: Vec::new(),
            oversized: false,
        }
    }

    fn append(&mut self, bytes: &[u8]) {
        if self.oversized || bytes.is_empty() {
            return;
        }
        if self.buf.len() + bytes.len() > self.max_row_bytes {
            self.oversized = true;
            self.buf = Vec::new();
            return;
        }
        self.buf.extend_from_slice(bytes);
    }

    fn end_line(&mut self, out: &mut VecDeque<Row>) {
        let mut line = &self.buf[..];
        let mut col_offset = 0;
        if self.first {
            col_offset = self.first_col_offset;
            if let Some(rest) = line.strip_prefix(BOM) {
                line = rest;
            }
            self.first = false;
        }
        let lead = (line.len() - line.trim_ascii_start().len()) as u64;
        let trimmed = line.trim_ascii();
        if self.oversized || !trimmed.is_empty() {
            let value = if self.oversized {
                Err(oversized_message("line", self.max_row_bytes))
            } else {
                serde_json::from_slice(trimmed).map_err(|e| match split_serde_error(&e) {
                    // serde sees no newline in one line, so its line is 1.
                    (message, Some((_, column))) => {
                        format!("{message} at column {}", column + lead + col_offset)
                    }
                    (message, None) => message,
                })
            };
            out.push_back(Row {
                row_index: self.index,
                position: format!("line {}", self.line_no),
                value,
            });
            self.index += 1;
        }
        self.line_no += 1;
        self.oversized = false;
        if self.buf.capacity() > KEEP_BUFFER_BYTES {
            self.buf = Vec::new();
        } else {
            self.buf.clear();
        }
    }
}

impl ChunkParser for LineSplitter {
    fn feed(&mut self, input: &[u8], out: &mut VecDeque<Row>) -> Result<Step, ReadError> {
        let mut rest = input;
        while let Some(nl) = rest.iter().position(|&b| b == b'\n') {
            self.append(&rest[..nl]);
            self.end_line(out);
            rest = &rest[nl + 1..];
        }
        self.append(rest);
        Ok(Step::Continue)
    }

    /// A last line without a newline still counts.
    fn finish(&mut self, out: &mut VecDeque<Row>) -> Result<Step, ReadError> {
        if !self.buf.is_empty() || self.oversized {
            self.end_line(out);
        }
        Ok(Step::Continue)
    }
}
