//! Parquet: one task per row, every column a data field. Parquet needs
//! random access (the footer is at the end), so the object is first copied
//! to an anonymous temporary file (deleted when closed; disk use is the
//! object's size, memory is one chunk). The file is then read record batch
//! by record batch on a blocking thread, and rows travel through a bounded
//! channel, so memory is a couple of batches whatever the file size.
//!
//! Conversion is arrow-json's: structs become objects, lists arrays,
//! temporal values strings (named time zones through chrono-tz), binary
//! hex, NaN/infinite floats null. Before it, at any depth, decimals become
//! their exact text (as JSON numbers they would come back as f64),
//! intervals ISO 8601 durations and UUIDs their hyphenated form
//! ([`rewrite`]). A null
//! value is kept as an explicit JSON `null` (the field is present), so every
//! row has every column. `position` is `row N`, 0-based, equal to
//! `row_index` (the row's number in the whole file, across row groups).

use std::fs::File;
use std::sync::Arc;

use arrow_array::{ArrayRef, RecordBatch};
use arrow_json::writer::{LineDelimited, WriterBuilder};
use arrow_schema::{DataType, Field, Fields, IntervalUnit, Schema};
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
    let not_parquet = |message: String| {
        let _ = tx.blocking_send(vec![Err(ReadError::NotParquet {
            key: key.to_string(),
            message,
        })]);
    };
    let months_file = match file.try_clone() {
        Ok(f) => f,
        Err(e) => return not_parquet(e.to_string()),
    };
    let builder = match ParquetRecordBatchReaderBuilder::try_new(file) {
        Ok(builder) => builder,
        Err(e) => return not_parquet(e.to_string()),
    };
    // arrow-rs reads a Parquet INTERVAL (months, days, milliseconds) as
    // days and milliseconds only; the months of top-level interval columns
    // come from a second reader of those columns alone.
    let months = match months_reader(&builder, months_file, batch_rows) {
        Ok(m) => m,
        Err(e) => return not_parquet(e.to_string()),
    };
    let reader = match builder.with_batch_size(batch_rows.max(1)).build() {
        Ok(reader) => reader,
        Err(e) => return not_parquet(e.to_string()),
    };
    let mut months = months;
    let mut next_row = 0i64;
    for batch in reader {
        let month_columns = match months
            .as_mut()
            .map(|(columns, reader)| (columns.clone(), reader.next()))
        {
            None => Ok(Vec::new()),
            Some((columns, Some(Ok(b)))) => Ok(columns.into_iter().zip(b.columns().iter().cloned()).collect()),
            Some((_, Some(Err(e)))) => Err(e.to_string()),
            Some((_, None)) => Err("the months of an interval column ended early".to_string()),
        };
        let rows = batch
            .map_err(|e| e.to_string())
            .and_then(|batch| month_columns.map(|m| (batch, m)))
            .and_then(|(batch, m)| batch_rows_json(&batch, &m, next_row));
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

/// For a file with top-level interval columns: their indexes, and a reader
/// of those columns alone as `Interval(YearMonth)` (the months), in batches
/// of the same size as the main reader's. None when there are none.
fn months_reader(
    builder: &ParquetRecordBatchReaderBuilder<File>,
    file: File,
    batch_rows: usize,
) -> Result<Option<(Vec<usize>, parquet::arrow::arrow_reader::ParquetRecordBatchReader)>, parquet::errors::ParquetError>
{
    use parquet::arrow::arrow_reader::ArrowReaderOptions;
    use parquet::arrow::ProjectionMask;
    let schema = builder.schema();
    let columns: Vec<usize> = schema
        .fields()
        .iter()
        .enumerate()
        .filter(|(_, f)| matches!(f.data_type(), DataType::Interval(IntervalUnit::DayTime)))
        .map(|(i, _)| i)
        .collect();
    if columns.is_empty() {
        return Ok(None);
    }
    let hinted: Vec<Field> = schema
        .fields()
        .iter()
        .enumerate()
        .map(|(i, f)| {
            if columns.contains(&i) {
                field_of(f, DataType::Interval(IntervalUnit::YearMonth))
            } else {
                f.as_ref().clone()
            }
        })
        .collect();
    let options = ArrowReaderOptions::new().with_schema(Arc::new(Schema::new(hinted)));
    let months = ParquetRecordBatchReaderBuilder::try_new_with_options(file, options)?;
    let mask = ProjectionMask::roots(months.parquet_schema(), columns.iter().copied());
    let reader = months
        .with_projection(mask)
        .with_batch_size(batch_rows.max(1))
        .build()?;
    Ok(Some((columns, reader)))
}

/// Whether arrow-json would write a value of this type inexactly or in a
/// form nobody reads: decimals (as f64 numbers), intervals (arrow's display
/// text), UUIDs (bare hex), at any depth.
fn needs_rewrite(field: &Field) -> bool {
    match field.data_type() {
        DataType::Decimal32(..) | DataType::Decimal64(..) | DataType::Decimal128(..) | DataType::Decimal256(..) => true,
        DataType::Interval(_) => true,
        DataType::FixedSizeBinary(16) => field.extension_type_name() == Some(UUID_EXTENSION),
        DataType::List(f) | DataType::LargeList(f) | DataType::FixedSizeList(f, _) | DataType::Map(f, _) => {
            needs_rewrite(f)
        }
        DataType::Struct(fields) => fields.iter().any(|f| needs_rewrite(f)),
        DataType::Dictionary(_, value) => needs_rewrite(&Field::new("", value.as_ref().clone(), true)),
        _ => false,
    }
}

/// Arrow's canonical extension name of a UUID column (Parquet's `UUID`
/// logical type, read with `arrow_canonical_extension_types`).
const UUID_EXTENSION: &str = "arrow.uuid";

/// `column` with every value [`needs_rewrite`] picks out turned into JSON-
/// ready text, at any depth: decimals exact (`"1234567890123456789.0123456789"`),
/// intervals as ISO 8601 durations (`"P1M2DT90S"`), UUIDs hyphenated. Lists,
/// structs and maps keep their shape and nulls. `months`, when given,
/// replaces the months of a top-level interval column (see [`read_batches`]).
fn rewrite(field: &Field, column: &ArrayRef, months: Option<&ArrayRef>) -> Result<(Field, ArrayRef), String> {
    use arrow_array::cast::AsArray;
    use arrow_array::types::{IntervalDayTimeType, IntervalMonthDayNanoType, IntervalYearMonthType};
    use arrow_array::{Array, FixedSizeListArray, LargeListArray, ListArray, MapArray, StringArray, StructArray};
    if !needs_rewrite(field) {
        return Ok((field.clone(), column.clone()));
    }
    let text = |values: StringArray| {
        let field = Field::new(field.name(), DataType::Utf8, true).with_metadata(field.metadata().clone());
        Ok::<_, String>((field, Arc::new(values) as ArrayRef))
    };
    let cannot = |e: arrow_schema::ArrowError| format!("column {}: {e}", field.name());
    match field.data_type() {
        DataType::Decimal32(..) | DataType::Decimal64(..) | DataType::Decimal128(..) | DataType::Decimal256(..) => {
            let cast = arrow_cast::cast(column, &DataType::Utf8).map_err(cannot)?;
            text(cast.as_string::<i32>().clone())
        }
        DataType::Interval(IntervalUnit::DayTime) => {
            let months = months.map(|m| m.as_primitive::<IntervalYearMonthType>());
            let days_time = column.as_primitive::<IntervalDayTimeType>();
            text(
                (0..column.len())
                    .map(|i| {
                        days_time.is_valid(i).then(|| {
                            let v = days_time.value(i);
                            let m = months.map_or(0, |m| m.value(i));
                            iso_duration(m, v.days, i128::from(v.milliseconds) * 1_000_000)
                        })
                    })
                    .collect(),
            )
        }
        DataType::Interval(IntervalUnit::YearMonth) => {
            let a = column.as_primitive::<IntervalYearMonthType>();
            text(a.iter().map(|v| v.map(|m| iso_duration(m, 0, 0))).collect())
        }
        DataType::Interval(IntervalUnit::MonthDayNano) => {
            let a = column.as_primitive::<IntervalMonthDayNanoType>();
            text(
                a.iter()
                    .map(|v| v.map(|v| iso_duration(v.months, v.days, i128::from(v.nanoseconds))))
                    .collect(),
            )
        }
        DataType::FixedSizeBinary(_) => {
            let a = column.as_fixed_size_binary();
            text(
                a.iter()
                    .map(|v| {
                        v.map(|b| {
                            uuid::Uuid::from_slice(b)
                                .map(|u| u.hyphenated().to_string())
                                .unwrap_or_default()
                        })
                    })
                    .collect(),
            )
        }
        DataType::List(inner) => {
            let a = column.as_list::<i32>();
            let (inner, values) = rewrite(inner, a.values(), None)?;
            let inner = Arc::new(inner);
            let list =
                ListArray::try_new(inner.clone(), a.offsets().clone(), values, a.nulls().cloned()).map_err(cannot)?;
            Ok((field_of(field, DataType::List(inner)), Arc::new(list)))
        }
        DataType::LargeList(inner) => {
            let a = column.as_list::<i64>();
            let (inner, values) = rewrite(inner, a.values(), None)?;
            let inner = Arc::new(inner);
            let list = LargeListArray::try_new(inner.clone(), a.offsets().clone(), values, a.nulls().cloned())
                .map_err(cannot)?;
            Ok((field_of(field, DataType::LargeList(inner)), Arc::new(list)))
        }
        DataType::FixedSizeList(inner, size) => {
            let a = column.as_fixed_size_list();
            let (inner, values) = rewrite(inner, a.values(), None)?;
            let inner = Arc::new(inner);
            let list = FixedSizeListArray::try_new(inner.clone(), *size, values, a.nulls().cloned()).map_err(cannot)?;
            Ok((field_of(field, DataType::FixedSizeList(inner, *size)), Arc::new(list)))
        }
        DataType::Struct(fields) => {
            let a = column.as_struct();
            let mut new_fields = Vec::with_capacity(fields.len());
            let mut columns = Vec::with_capacity(fields.len());
            for (f, c) in fields.iter().zip(a.columns()) {
                let (f, c) = rewrite(f, c, None)?;
                new_fields.push(f);
                columns.push(c);
            }
            let fields = Fields::from(new_fields);
            let st = StructArray::try_new(fields.clone(), columns, a.nulls().cloned()).map_err(cannot)?;
            Ok((field_of(field, DataType::Struct(fields)), Arc::new(st)))
        }
        DataType::Map(entries_field, sorted) => {
            let a = column.as_map();
            let entries: ArrayRef = Arc::new(a.entries().clone());
            let (entries_field, entries) = rewrite(entries_field, &entries, None)?;
            let map = MapArray::try_new(
                Arc::new(entries_field.clone()),
                a.offsets().clone(),
                entries.as_struct().clone(),
                a.nulls().cloned(),
                *sorted,
            )
            .map_err(cannot)?;
            Ok((
                field_of(field, DataType::Map(Arc::new(entries_field), *sorted)),
                Arc::new(map),
            ))
        }
        DataType::Dictionary(_, value) => {
            let plain = arrow_cast::cast(column, value).map_err(cannot)?;
            rewrite(&field_of(field, value.as_ref().clone()), &plain, None)
        }
        _ => Ok((field.clone(), column.clone())),
    }
}

/// `field` with another type (name, nullability and metadata kept).
fn field_of(field: &Field, data_type: DataType) -> Field {
    Field::new(field.name(), data_type, field.is_nullable()).with_metadata(field.metadata().clone())
}

/// An ISO 8601 duration (`P1M2DT1H30M0.5S` style, as `P{months}M{days}DT{seconds}S`
/// with zero parts left out; `PT0S` for zero), as arrow-json writes
/// durations. Months are not turned into days (their length varies).
fn iso_duration(months: i32, days: i32, nanos: i128) -> String {
    let mut out = String::from("P");
    if months != 0 {
        out.push_str(&format!("{months}M"));
    }
    if days != 0 {
        out.push_str(&format!("{days}D"));
    }
    if nanos != 0 || out == "P" {
        let sign = if nanos < 0 { "-" } else { "" };
        let (secs, frac) = (nanos.abs() / 1_000_000_000, nanos.abs() % 1_000_000_000);
        if frac == 0 {
            out.push_str(&format!("T{sign}{secs}S"));
        } else {
            let frac = format!("{frac:09}");
            out.push_str(&format!("T{sign}{secs}.{}S", frac.trim_end_matches('0')));
        }
    }
    out
}

/// The batch with every column [`rewrite`]n where needed; `months` holds,
/// by column index, the months of top-level interval columns.
fn json_ready(batch: &RecordBatch, months: &[(usize, ArrayRef)]) -> Result<RecordBatch, String> {
    let schema = batch.schema();
    if !schema.fields().iter().any(|f| needs_rewrite(f)) {
        return Ok(batch.clone());
    }
    let mut fields = Vec::with_capacity(batch.num_columns());
    let mut columns = Vec::with_capacity(batch.num_columns());
    for (i, (field, column)) in schema.fields().iter().zip(batch.columns()).enumerate() {
        let m = months.iter().find(|(c, _)| *c == i).map(|(_, m)| m);
        let (f, c) = rewrite(field, column, m)?;
        fields.push(f);
        columns.push(c);
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
fn batch_rows_json(batch: &RecordBatch, months: &[(usize, ArrayRef)], first_row: i64) -> Result<Batch, String> {
    let batch = json_ready(batch, months)?;
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

#[cfg(test)]
mod iso_duration_tests {
    use super::iso_duration;

    #[test]
    fn iso_durations() {
        assert_eq!(iso_duration(0, 0, 0), "PT0S");
        assert_eq!(iso_duration(0, 0, 90_000_000_000), "PT90S");
        assert_eq!(iso_duration(1, 2, 90_500_000_000), "P1M2DT90.5S");
        assert_eq!(iso_duration(14, 0, 0), "P14M");
        assert_eq!(iso_duration(0, -1, -1_000_000), "P-1DT-0.001S");
        assert_eq!(iso_duration(0, 0, 1), "PT0.000000001S");
    }
}
