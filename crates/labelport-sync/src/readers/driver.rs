//! Turns a push parser (fed byte slices, emitting rows) into a [`RowStream`]
//! that pulls from the storage stream only when the consumer wants more
//! rows, so at most one piece's worth of rows waits in memory.

use std::collections::VecDeque;
use std::sync::Arc;

use bytes::Bytes;
use futures::StreamExt;
use labelport_storage::ByteStream;

use super::{ReadError, Row, RowStream};

/// What a parser wants after a call.
pub(super) enum Step {
    Continue,
    /// The parser changed its mind about the format (a `{` file that is not
    /// one object) and wants this input, which it had buffered, fed again
    /// before anything not yet fed.
    Replay(Bytes),
}

/// A parser fed the file in order, piece by piece.
pub(super) trait ChunkParser: Send + 'static {
    fn feed(&mut self, input: &[u8], out: &mut VecDeque<Row>) -> Result<Step, ReadError>;
    /// End of input; may be called again after a [`Step::Replay`].
    fn finish(&mut self, out: &mut VecDeque<Row>) -> Result<Step, ReadError>;
}

struct Driver<P> {
    key: Arc<str>,
    stream: ByteStream,
    parser: P,
    piece_bytes: usize,
    /// Input received but not yet fed, in file order.
    pending: VecDeque<Bytes>,
    out: VecDeque<Row>,
    error: Option<ReadError>,
    eof: bool,
    done: bool,
    /// The first bytes were checked for UTF-16.
    sniffed: bool,
}

/// Whether a file's first two bytes say UTF-16: a byte-order mark (`FF FE`,
/// `FE FF`), or a character JSON may start with (`[`, `{`, white space)
/// next to a NUL, either way round (UTF-16 without a mark). Other binary
/// files keep Label Studio's "not JSON" answer.
fn looks_utf16(head: &[u8]) -> bool {
    let starts_json = |c: u8| matches!(c, b'[' | b'{' | b' ' | b'\t' | b'\r' | b'\n');
    match head {
        [0xFF, 0xFE, ..] | [0xFE, 0xFF, ..] => true,
        [0, c, ..] | [c, 0, ..] => starts_json(*c),
        _ => false,
    }
}

pub(super) fn drive<P: ChunkParser>(key: Arc<str>, stream: ByteStream, parser: P, piece_bytes: usize) -> RowStream {
    let driver = Driver {
        key,
        stream,
        parser,
        piece_bytes: piece_bytes.max(1),
        pending: VecDeque::new(),
        out: VecDeque::new(),
        error: None,
        eof: false,
        done: false,
        sniffed: false,
    };
    Box::pin(futures::stream::unfold(driver, |mut d| async move {
        let item = d.next_item().await?;
        Some((item, d))
    }))
}

impl<P: ChunkParser> Driver<P> {
    async fn next_item(&mut self) -> Option<Result<Row, ReadError>> {
        loop {
            // Rows parsed before an error come first: they precede it in the file.
            if let Some(row) = self.out.pop_front() {
                return Some(Ok(row));
            }
            if let Some(e) = self.error.take() {
                return Some(Err(e));
            }
            if self.done {
                return None;
            }
            if !self.sniffed {
                let head: Vec<u8> = self.pending.iter().flat_map(|b| b.iter().copied()).take(2).collect();
                if head.len() < 2 && !self.eof {
                    // Read on until two bytes are there (or the file ends).
                    self.pull().await;
                    continue;
                }
                self.sniffed = true;
                if looks_utf16(&head) {
                    self.error = Some(ReadError::Utf16 {
                        key: self.key.to_string(),
                    });
                    self.done = true;
                    continue;
                }
            }
            if let Some(mut input) = self.pending.pop_front() {
                if input.len() > self.piece_bytes {
                    let rest = input.split_off(self.piece_bytes);
                    self.pending.push_front(rest);
                }
                let step = self.parser.feed(&input, &mut self.out);
                self.after(step);
                continue;
            }
            if !self.eof {
                self.pull().await;
                continue;
            }
            let step = self.parser.finish(&mut self.out);
            if matches!(step, Ok(Step::Continue) | Err(_)) {
                self.done = true;
            }
            self.after(step);
        }
    }

    /// Reads the next piece of the object into `pending` (or notes the end
    /// of the file, or the storage's error).
    async fn pull(&mut self) {
        match self.stream.next().await {
            Some(Ok(chunk)) => self.pending.push_back(chunk),
            Some(Err(source)) => {
                self.error = Some(ReadError::Storage {
                    key: self.key.to_string(),
                    source,
                });
                self.done = true;
            }
            None => self.eof = true,
        }
    }

    fn after(&mut self, step: Result<Step, ReadError>) {
        match step {
            Ok(Step::Continue) => {}
            Ok(Step::Replay(input)) => self.pending.push_front(input),
            Err(e) => {
                self.error = Some(e);
                self.done = true;
            }
        }
    }
}
