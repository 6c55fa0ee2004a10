//! A JSON array read element by element. A small splitter tracks nesting
//! (open brackets) and strings (with escapes) across chunk boundaries to find the
//! top-level commas; each element is then parsed on its own with serde, so
//! a bad element is an error row and the next one still comes. Only the
//! current element is held in memory.
//!
//! Choices: an empty element (`[1,,2]`, a trailing comma) is an error row;
//! a file that ends before the closing `]` is [`ReadError::UnterminatedArray`]
//! and anything but whitespace after it is [`ReadError::TrailingData`]
//! (both after the rows before them, which are fine).

use std::collections::VecDeque;
use std::sync::Arc;

use super::driver::{ChunkParser, Step};
use super::{is_json_ws, located_parse_error, oversized_message, ReadError, Row};

/// Above this, an element buffer is released after use (see jsonl.rs).
const KEEP_BUFFER_BYTES: usize = 1 << 20;

pub(super) struct ArraySplitter {
    key: Arc<str>,
    max_row_bytes: usize,
    /// 1-based line and column (in bytes) of the next byte.
    line: u64,
    col: u64,
    /// The closing `]` has been seen.
    closed: bool,
    /// The current element, from its first non-whitespace byte.
    buf: Vec<u8>,
    start: (u64, u64),
    has_content: bool,
    oversized: bool,
    /// Open `[`/`{` of the current element, innermost last, and how many
    /// of each, to recover from a missing closer (see `close`).
    open: Vec<u8>,
    open_brackets: usize,
    open_braces: usize,
    in_string: bool,
    escape: bool,
    index: i64,
    seen_comma: bool,
}

impl ArraySplitter {
    /// Starts just after the opening `[`, which is followed by the byte at
    /// `line`, `col`.
    pub(super) fn new(key: Arc<str>, max_row_bytes: usize, line: u64, col: u64) -> Self {
        ArraySplitter {
            key,
            max_row_bytes,
            line,
            col,
            closed: false,
            buf: Vec::new(),
            start: (line, col),
            has_content: false,
            oversized: false,
            open: Vec::new(),
            open_brackets: 0,
            open_braces: 0,
            in_string: false,
            escape: false,
            index: 0,
            seen_comma: false,
        }
    }

    fn push(&mut self, b: u8) {
        if self.oversized {
            return;
        }
        if self.buf.len() >= self.max_row_bytes {
            // From here on only the counts of open brackets are kept.
            self.oversized = true;
            self.buf = Vec::new();
            self.open = Vec::new();
            return;
        }
        self.buf.push(b);
    }

    /// The element ends at a top-level `,` or at the closing `]`.
    fn end_element(&mut self, closing: bool, out: &mut VecDeque<Row>) {
        if !self.has_content && closing && !self.seen_comma {
            return; // `[]`, or the end of `[ ]`
        }
        let value = if !self.has_content {
            Err("expected a JSON value before this `,` or `]` (empty element)".to_string())
        } else if self.oversized {
            Err(oversized_message("element", self.max_row_bytes))
        } else {
            serde_json::from_slice(&self.buf).map_err(|e| located_parse_error(&e, self.start))
        };
        out.push_back(Row {
            row_index: self.index,
            position: format!("element {}", self.index),
            value,
        });
        self.index += 1;
        self.has_content = false;
        self.oversized = false;
        self.open_brackets = 0;
        self.open_braces = 0;
        if self.buf.capacity() > KEEP_BUFFER_BYTES {
            self.buf = Vec::new();
            self.open = Vec::new();
        } else {
            self.buf.clear();
            self.open.clear();
        }
    }

    fn open(&mut self, opener: u8) {
        if opener == b'[' {
            self.open_brackets += 1;
        } else {
            self.open_braces += 1;
        }
        if !self.oversized {
            self.open.push(opener);
        }
    }

    /// A `]` or `}` inside an element closes the innermost matching opener
    /// and any unclosed ones inside it, so `{"a": [1, 2}` (a forgotten `]`)
    /// ends at its `}` and the next element is still found. A closer with
    /// no opener is left for serde to report.
    fn close(&mut self, opener: u8) {
        let open_of_kind = if opener == b'[' {
            self.open_brackets
        } else {
            self.open_braces
        };
        if open_of_kind == 0 {
            return;
        }
        if self.oversized {
            if opener == b'[' {
                self.open_brackets -= 1;
            } else {
                self.open_braces -= 1;
            }
            return;
        }
        while let Some(b) = self.open.pop() {
            if b == b'[' {
                self.open_brackets -= 1;
            } else {
                self.open_braces -= 1;
            }
            if b == opener {
                break;
            }
        }
    }
}

impl ChunkParser for ArraySplitter {
    fn feed(&mut self, input: &[u8], out: &mut VecDeque<Row>) -> Result<Step, ReadError> {
        for &b in input {
            let here = (self.line, self.col);
            if b == b'\n' {
                self.line += 1;
                self.col = 1;
            } else {
                self.col += 1;
            }
            if self.closed {
                if is_json_ws(b) {
                    continue;
                }
                return Err(ReadError::TrailingData {
                    key: self.key.to_string(),
                    line: here.0,
                    column: here.1,
                });
            }
            if self.in_string {
                if self.escape {
                    self.escape = false;
                } else if b == b'\\' {
                    self.escape = true;
                } else if b == b'"' {
                    self.in_string = false;
                }
                self.push(b);
                continue;
            }
            match b {
                b',' if self.open_brackets + self.open_braces == 0 => {
                    self.end_element(false, out);
                    self.seen_comma = true;
                    continue;
                }
                // A `]` with no `[` open in the element closes the array.
                b']' if self.open_brackets == 0 => {
                    self.end_element(true, out);
                    self.closed = true;
                    continue;
                }
                _ if is_json_ws(b) && !self.has_content => continue,
                b'"' => self.in_string = true,
                b'[' | b'{' => self.open(b),
                b']' => self.close(b'['),
                b'}' => self.close(b'{'),
                _ => {}
            }
            if !self.has_content {
                self.has_content = true;
                self.start = here;
            }
            self.push(b);
        }
        Ok(Step::Continue)
    }

    fn finish(&mut self, _out: &mut VecDeque<Row>) -> Result<Step, ReadError> {
        if self.closed {
            Ok(Step::Continue)
        } else {
            Err(ReadError::UnterminatedArray {
                key: self.key.to_string(),
                elements: self.index,
            })
        }
    }
}
