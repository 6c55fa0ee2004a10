//! A `.json` file, decided by its first non-whitespace byte as Label Studio
//! does: `[` is an array (streamed, see json_array.rs); `{` is first tried
//! as one object and, if that fails, read as JSONL; anything else (or
//! nothing) is [`ReadError::NotJson`]. A UTF-8 byte-order mark is skipped.
//!
//! The one-object try buffers the file, but only while it could still be
//! one object: a scanner finds where the first top-level value ends, and
//! anything but whitespace after it (the second line of a JSONL file) means
//! JSONL at once, so a large JSONL file named `.json` is not buffered. The
//! buffer is capped at `max_object_bytes`, beyond which the file is JSONL.

use std::collections::VecDeque;
use std::sync::Arc;

use bytes::Bytes;

use super::driver::{ChunkParser, Step};
use super::json_array::ArraySplitter;
use super::jsonl::LineSplitter;
use super::{is_json_ws, Limits, ReadError, Row};

const BOM: &[u8] = b"\xEF\xBB\xBF";

pub(super) struct JsonParser {
    key: Arc<str>,
    limits: Limits,
    state: State,
}

enum State {
    /// Before the first non-whitespace byte: BOM bytes matched so far (3
    /// once past it) and the 1-based position of the next byte.
    Sniff {
        seen: usize,
        line: u64,
        col: u64,
    },
    Array(ArraySplitter),
    Probe(ObjectProbe),
    Lines(LineSplitter),
}

impl JsonParser {
    pub(super) fn new(key: Arc<str>, limits: Limits) -> Self {
        JsonParser {
            key,
            limits,
            state: State::Sniff {
                seen: 0,
                line: 1,
                col: 1,
            },
        }
    }

    fn not_json(&self) -> ReadError {
        ReadError::NotJson {
            key: self.key.to_string(),
        }
    }

    /// The probe gave up on one object: read what it buffered as JSONL.
    fn switch_to_lines(&mut self, buffered: Vec<u8>, line: u64, col: u64) -> Step {
        self.state = State::Lines(LineSplitter::new(self.limits.max_row_bytes, line, col - 1));
        Step::Replay(Bytes::from(buffered))
    }
}

impl ChunkParser for JsonParser {
    fn feed(&mut self, input: &[u8], out: &mut VecDeque<Row>) -> Result<Step, ReadError> {
        match &mut self.state {
            State::Sniff { seen, line, col } => {
                for (i, &b) in input.iter().enumerate() {
                    if *seen < BOM.len() {
                        if b == BOM[*seen] {
                            *seen += 1;
                            continue;
                        }
                        if *seen > 0 {
                            return Err(self.not_json()); // a partial BOM
                        }
                        *seen = BOM.len();
                    }
                    match b {
                        b'\n' => {
                            *line += 1;
                            *col = 1;
                        }
                        _ if is_json_ws(b) => *col += 1,
                        b'[' => {
                            let mut array =
                                ArraySplitter::new(self.key.clone(), self.limits.max_row_bytes, *line, *col + 1);
                            let step = array.feed(&input[i + 1..], out);
                            self.state = State::Array(array);
                            return step;
                        }
                        b'{' => {
                            let (line, col) = (*line, *col);
                            let mut probe = ObjectProbe::new(line, col);
                            let decided = probe.feed(&input[i..], self.limits.max_object_bytes);
                            if decided {
                                return Ok(self.switch_to_lines(probe.buf, line, col));
                            }
                            self.state = State::Probe(probe);
                            return Ok(Step::Continue);
                        }
                        _ => return Err(self.not_json()),
                    }
                }
                Ok(Step::Continue)
            }
            State::Array(array) => array.feed(input, out),
            State::Probe(probe) => {
                if probe.feed(input, self.limits.max_object_bytes) {
                    let buf = std::mem::take(&mut probe.buf);
                    let (line, col) = probe.start;
                    return Ok(self.switch_to_lines(buf, line, col));
                }
                Ok(Step::Continue)
            }
            State::Lines(lines) => lines.feed(input, out),
        }
    }

    fn finish(&mut self, out: &mut VecDeque<Row>) -> Result<Step, ReadError> {
        match &mut self.state {
            // Empty, whitespace-only, or only a (partial) BOM.
            State::Sniff { .. } => Err(self.not_json()),
            State::Array(array) => array.finish(out),
            State::Probe(probe) => match serde_json::from_slice(&probe.buf) {
                Ok(value) => {
                    out.push_back(Row {
                        row_index: -1,
                        position: "object".to_string(),
                        value: Ok(value),
                    });
                    probe.buf = Vec::new();
                    Ok(Step::Continue)
                }
                Err(_) => {
                    let buf = std::mem::take(&mut probe.buf);
                    let (line, col) = probe.start;
                    Ok(self.switch_to_lines(buf, line, col))
                }
            },
            State::Lines(lines) => lines.finish(out),
        }
    }
}

/// Buffers a `{` file while it may be one object.
struct ObjectProbe {
    /// From the first `{` on.
    buf: Vec<u8>,
    /// Line and column of that `{`.
    start: (u64, u64),
    depth: usize,
    in_string: bool,
    escape: bool,
    /// The first top-level value has ended.
    closed: bool,
}

impl ObjectProbe {
    fn new(line: u64, col: u64) -> Self {
        ObjectProbe {
            buf: Vec::new(),
            start: (line, col),
            depth: 0,
            in_string: false,
            escape: false,
            closed: false,
        }
    }

    /// Buffers `input`; true once the file cannot be one object (within
    /// `max_bytes`), so it is JSONL.
    fn feed(&mut self, input: &[u8], max_bytes: usize) -> bool {
        if self.buf.len() + input.len() > max_bytes {
            // Exact, so the last piece does not double a buffer near the cap.
            self.buf.reserve_exact(input.len());
            self.buf.extend_from_slice(input);
            return true;
        }
        self.buf.extend_from_slice(input);
        for &b in input {
            if self.closed {
                if !is_json_ws(b) {
                    return true;
                }
            } else if self.in_string {
                if self.escape {
                    self.escape = false;
                } else if b == b'\\' {
                    self.escape = true;
                } else if b == b'"' {
                    self.in_string = false;
                }
            } else {
                match b {
                    b'"' => self.in_string = true,
                    b'{' | b'[' => self.depth += 1,
                    b'}' | b']' => {
                        self.depth = self.depth.saturating_sub(1);
                        self.closed = self.depth == 0;
                    }
                    _ => {}
                }
            }
        }
        false
    }
}
