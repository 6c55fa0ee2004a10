//! Parquet: one task per row, every column a data field. Parquet needs
//! random access (the footer is at the end), so the object is first copied
//! to an anonymous temporary file (deleted when closed; disk use is the
//! object's size, memory is one chunk). The file is then read record batch
//! by record batch on a blocking thread, and rows travel through a bounded
//! channel, so memory is a couple of batches whatever the file size.
//!
//! Conversion is arrow-json's: structs become objects, lists arrays,
//! temporal values strings (named time zones through chrono-tz), binary
//! hex, NaN/infinite floats null; top-level decimals are cast to their
//! exact text first (as JSON numbers they would come back as f64). A null
//! value is kept as an explicit JSON `null` (the field is present), so every
//! row has every column. `position` is `row N`, 0-based, equal to
//! `row_index` (the row's number in the whole file, across row groups).

use std::fs::File;
use std::sync::Arc;

use arrow_array::RecordBatch;
use arrow_json::writer::{LineDelimited, WriterBuilder};
use futures::StreamExt;
use labelport_storage::ByteStream;
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use tokio::io::AsyncWriteExt;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;

use super::{ReadError, Row, RowStream};

/// Batches in flight between the reading thread and the consumer.
const CHANNEL_BATCHES: usize = 2;

type Batch = Vec<Result<Row, ReadError>>;

pub(super) fn read(key: Arc<str>, stream: ByteStream, batch_rows: usize) -> RowStream {
    let rows = async move {
        match spool(&key, stream).await {
            Ok(file) => read_file(key, file, batch_rows),
            Err(e) => Box::pin(futures::stream::iter([Err(e)])) as RowStream,
        }
    };
    Box::pin(futures::stream::once(rows).flatten())
}

/// Copies the object to an anonymous temporary file.
async fn spool(key: &str, mut stream: ByteStream) -> Result<File, ReadError> {
    let temp_err = |source| ReadError::TempFile {
        key: key.to_string(),
        source,
    };
    let file = tempfile::tempfile().map_err(temp_err)?;
    let mut file = tokio::fs::File::from_std(file);
    let mut size = 0u64;
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.map_err(|source| ReadError::Storage {
            key: key.to_string(),
            source,
        })?;
        size += chunk.len() as u64;
        file.write_all(&chunk).await.map_err(temp_err)?;
    }
    file.flush().await.map_err(temp_err)?;
    if size == 0 {
        return Err(ReadError::NotParquet {
            key: key.to_string(),
            message: "the file is empty".to_string(),
        });
    }
    Ok(file.into_std().await)
}

/// Reads the spooled file on a blocking thread; the stream ends with an
/// error if that thread dies rather than looking like a short file.
fn read_file(key: Arc<str>, file: File, batch_rows: usize) -> RowStream {
    let (tx, rx) = mpsc::channel::<Batch>(CHANNEL_BATCHES);
    let thread_key = key.clone();
    let handle = tokio::task::spawn_blocking(move || read_batches(&thread_key, file, batch_rows, &tx));
    let rows = ReceiverStream::new(rx).flat_map(futures::stream::iter);
    let outcome = futures::stream::once(handle).filter_map(move |joined| {
        let key = key.clone();
        async move {
            let e = joined.err()?;
            Some(Err(ReadError::Parquet {
                key: key.to_string(),
                row: -1,
                message: format!("the reading thread failed: {e}"),
            }))
        }
    });
    Box::pin(rows.chain(outcome))
}

fn read_batches(key: &str, file: File, batch_rows: usize, tx: &mpsc::Sender<Batch>) {
    let reader = ParquetRecordBatchReaderBuilder::try_new(file)
        .and_then(|builder| builder.with_batch_size(batch_rows.max(1)).build());
    let reader = match reader {
        Ok(reader) => reader,
        Err(e) => {
            let _ = tx.blocking_send(vec![Err(ReadError::NotParquet {
                key: key.to_string(),
                message: e.to_string(),
            })]);
            return;
        }
    };
    let mut next_row = 0i64;
    for batch in reader {
        let rows = batch
            .map_err(|e| e.to_string())
            .and_then(|batch| batch_rows_json(&batch, next_row));
        let rows = match rows {
            Ok(rows) => rows,
            Err(message) => {
                let _ = tx.blocking_send(vec![Err(ReadError::Parquet {
                    key: key.to_string(),
                    row: next_row,
                    message,
                })]);
                return;
            }
        };
        next_row += rows.len() as i64;
        if tx.blocking_send(rows).is_err() {
            return; // the consumer is gone
        }
    }
}

/// Decimal columns as their exact text (`"1234567890123456789.0123456789"`):
/// as JSON numbers they would be read back as 64-bit floats and rounded.
fn exact_decimals(batch: &RecordBatch) -> Result<RecordBatch, String> {
    use arrow_schema::{DataType, Field, Schema};
    let is_decimal = |t: &DataType| {
        matches!(
            t,
            DataType::Decimal32(..) | DataType::Decimal64(..) | DataType::Decimal128(..) | DataType::Decimal256(..)
        )
    };
    if !batch.schema().fields().iter().any(|f| is_decimal(f.data_type())) {
        return Ok(batch.clone());
    }
    let mut fields = Vec::with_capacity(batch.num_columns());
    let mut columns = Vec::with_capacity(batch.num_columns());
    for (field, column) in batch.schema().fields().iter().zip(batch.columns()) {
        if is_decimal(field.data_type()) {
            let text = arrow_cast::cast(column, &DataType::Utf8)
                .map_err(|e| format!("column {}: cannot convert to text: {e}", field.name()))?;
            fields.push(Field::new(field.name(), DataType::Utf8, true));
            columns.push(text);
        } else {
            fields.push(field.as_ref().clone());
            columns.push(column.clone());
        }
    }
    RecordBatch::try_new(Arc::new(Schema::new(fields)), columns).map_err(|e| e.to_string())
}

/// The batch as JSON lines (arrow-json).
fn json_lines(batch: &RecordBatch) -> Result<Vec<u8>, String> {
    let mut writer = WriterBuilder::new()
        .with_explicit_nulls(true)
        .build::<_, LineDelimited>(Vec::new());
    writer
        .write(batch)
        .and_then(|()| writer.finish())
        .map_err(|e| format!("cannot convert to JSON: {e}"))?;
    Ok(writer.into_inner())
}

/// One row per record of the batch, numbered from `first_row`. When the
/// batch does not convert, each record is converted alone, so a bad value
/// is an error of its row (naming the problem), not of the file.
fn batch_rows_json(batch: &RecordBatch, first_row: i64) -> Result<Batch, String> {
    let batch = exact_decimals(batch)?;
    let json = match json_lines(&batch) {
        Ok(json) => json,
        Err(_) => {
            return Ok((0..batch.num_rows())
                .zip(first_row..)
                .map(|(i, row_index)| {
                    let value = json_lines(&batch.slice(i, 1))
                        .and_then(|line| serde_json::from_slice(line.trim_ascii_end()).map_err(|e| e.to_string()));
                    Ok(Row {
                        row_index,
                        position: format!("row {row_index}"),
                        value,
                    })
                })
                .collect());
        }
    };
    // Every record is one line: JSON strings escape their newlines.
    let rows: Batch = json
        .split(|&b| b == b'\n')
        .filter(|line| !line.is_empty())
        .zip(first_row..)
        .map(|(line, row_index)| {
            Ok(Row {
                row_index,
                position: format!("row {row_index}"),
                value: serde_json::from_slice(line).map_err(|e| e.to_string()),
            })
        })
        .collect();
    if rows.len() != batch.num_rows() {
        return Err(format!(
            "converting a batch of {} rows to JSON gave {} rows",
            batch.num_rows(),
            rows.len()
        ));
    }
    Ok(rows)
}
