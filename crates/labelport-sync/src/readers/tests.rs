use std::fmt::Write as _;
use std::sync::Arc;

use bytes::Bytes;
use futures::StreamExt;
use labelport_storage::{ByteStream, StorageError};
use serde_json::{json, Value};

use super::*;

const HINT_SUFFIX: &str = ". If you're trying to import binary objects, perhaps you forgot to \
                           enable \"Tasks\" import method?";

fn stream_of(chunks: Vec<Bytes>) -> ByteStream {
    Box::pin(futures::stream::iter(chunks.into_iter().map(Ok)))
}

/// `data` cut into pieces whose sizes cycle through `sizes`.
fn cut(data: &[u8], sizes: &[usize]) -> Vec<Bytes> {
    let mut out = Vec::new();
    let mut at = 0;
    for &size in sizes.iter().cycle() {
        if at >= data.len() {
            break;
        }
        let end = (at + size).min(data.len());
        out.push(Bytes::copy_from_slice(&data[at..end]));
        at = end;
    }
    out
}

/// Awkward ways to deliver the same bytes: whole, byte by byte, and chunks
/// cycling through 1–7 bytes from several phases.
fn chunkings(data: &[u8]) -> Vec<Vec<Bytes>> {
    vec![
        vec![Bytes::copy_from_slice(data)],
        cut(data, &[1]),
        cut(data, &[1, 2, 3, 4, 5, 6, 7]),
        cut(data, &[7, 6, 5, 4, 3, 2, 1]),
        cut(data, &[3, 1, 4, 1, 5, 2, 6]),
    ]
}

async fn collect(stream: RowStream) -> (Vec<Row>, Option<ReadError>) {
    let mut rows = Vec::new();
    let mut stream = stream;
    while let Some(item) = stream.next().await {
        match item {
            Ok(row) => rows.push(row),
            Err(e) => {
                assert!(stream.next().await.is_none(), "rows after an error");
                return (rows, Some(e));
            }
        }
    }
    (rows, None)
}

/// Reads `data` under every chunking and with tiny and default parse
/// pieces; all must agree. Returns the rows and the error's text.
async fn read_all(format: FileFormat, data: &[u8]) -> (Vec<Row>, Option<String>) {
    read_all_with(format, data, Limits::DEFAULT).await
}

async fn read_all_with(format: FileFormat, data: &[u8], limits: Limits) -> (Vec<Row>, Option<String>) {
    let mut first: Option<(Vec<Row>, Option<String>)> = None;
    for chunks in chunkings(data) {
        for piece_bytes in [limits.piece_bytes, 3] {
            let limits = Limits { piece_bytes, ..limits };
            let stream = read_rows_with(format, "t/file", stream_of(chunks.clone()), limits);
            let (rows, err) = collect(stream).await;
            let got = (rows, err.map(|e| e.to_string()));
            match &first {
                None => first = Some(got),
                Some(expected) => assert_eq!(&got, expected, "chunking changed the result"),
            }
        }
    }
    first.unwrap()
}

fn values(rows: &[Row]) -> Vec<Value> {
    rows.iter()
        .map(|r| r.value.clone().expect("row should be Ok"))
        .collect()
}

fn indexes(rows: &[Row]) -> Vec<i64> {
    rows.iter().map(|r| r.row_index).collect()
}

fn positions(rows: &[Row]) -> Vec<&str> {
    rows.iter().map(|r| r.position.as_str()).collect()
}

#[test]
fn format_for_key() {
    assert_eq!(FileFormat::for_key("a/b/tasks.json"), Some(FileFormat::Json));
    assert_eq!(FileFormat::for_key("TASKS.JSON"), Some(FileFormat::Json));
    assert_eq!(FileFormat::for_key("x.JsonL"), Some(FileFormat::Jsonl));
    assert_eq!(FileFormat::for_key("d/rows.parquet"), Some(FileFormat::Parquet));
    assert_eq!(FileFormat::for_key("d/rows.PARQUET"), Some(FileFormat::Parquet));
    assert_eq!(FileFormat::for_key("image.png"), None);
    assert_eq!(FileFormat::for_key("json"), None);
    assert_eq!(FileFormat::for_key("tasks.json.gz"), None);
    assert_eq!(FileFormat::for_key("dir.json/file"), None);
    assert_eq!(FileFormat::for_key("tasks.jsonx"), None);
    assert_eq!(FileFormat::for_key(""), None);
}

#[tokio::test]
async fn empty_arrays_give_no_rows() {
    for data in ["[]", "  [ ]  \n", "\n[\n\n]\n", "\u{feff}[]"] {
        let (rows, err) = read_all(FileFormat::Json, data.as_bytes()).await;
        assert!(rows.is_empty(), "{data:?}");
        assert_eq!(err, None, "{data:?}");
    }
}

#[tokio::test]
async fn array_elements_with_tricky_strings_and_nesting() {
    let data = r#"[
  {"a": "x\"],b", "n": [1, [2, {"c": "]"}]], "e": {}},
  "plain, with ] and [ and } and {",
  3.5, -7, null, true,
  {"u": "h\u00e9 \ud83d\ude00 ☃ 😀", "q": "\\", "qq": "\\\"", "s": "a\\\"],b"},
  [[[]]], [],
  {"data": {"text": "line\nbreak"}, "predictions": [{"result": []}]}
]"#;
    let expected: Vec<Value> = serde_json::from_str(data).unwrap();
    let (rows, err) = read_all(FileFormat::Json, data.as_bytes()).await;
    assert_eq!(err, None);
    assert_eq!(values(&rows), expected);
    assert_eq!(indexes(&rows), (0..expected.len() as i64).collect::<Vec<_>>());
    assert_eq!(rows[3].position, "element 3");
    assert_eq!(rows[6].value.as_ref().unwrap()["u"], "hé 😀 ☃ 😀");
}

#[tokio::test]
async fn bad_array_element_is_an_error_row_and_reading_goes_on() {
    let data = "[\n  {\"a\": 1},\n  {\"b\": },\n  {\"c\": 3}, tru,\n  {\"d\": [1, 2}, 5\n]\n";
    let (rows, err) = read_all(FileFormat::Json, data.as_bytes()).await;
    assert_eq!(err, None);
    assert_eq!(indexes(&rows), vec![0, 1, 2, 3, 4, 5]);
    assert_eq!(rows[0].value, Ok(json!({"a": 1})));
    // The location is in the file, not in the element: line 3 is `  {"b": }`.
    let bad = rows[1].value.as_ref().unwrap_err();
    assert_eq!(bad, "expected value at line 3 column 9");
    assert_eq!(rows[1].position, "element 1");
    assert_eq!(rows[2].value, Ok(json!({"c": 3})));
    assert!(rows[3].value.is_err());
    assert!(rows[4].value.is_err(), "{:?}", rows[4]);
    assert_eq!(rows[5].value, Ok(json!(5)));
}

#[tokio::test]
async fn element_missing_its_closer_does_not_swallow_the_array() {
    // `]` with no `[` open in the element ends the array.
    let (rows, err) = read_all(FileFormat::Json, br#"[{"a": 1]"#).await;
    assert_eq!(err, None);
    assert_eq!(rows.len(), 1);
    assert!(rows[0].value.is_err());
    // `}` closes the forgotten `[` inside it.
    let (rows, err) = read_all(FileFormat::Json, br#"[{"a": [1}, {"b": [{"c": 2]}, 3]"#).await;
    assert_eq!(err, None);
    assert_eq!(indexes(&rows), vec![0, 1, 2]);
    assert!(rows[0].value.is_err());
    assert!(rows[1].value.is_err());
    assert_eq!(rows[2].value, Ok(json!(3)));
}

#[tokio::test]
async fn empty_array_elements_are_error_rows() {
    let (rows, err) = read_all(FileFormat::Json, b"[1,,2,]").await;
    assert_eq!(err, None);
    assert_eq!(indexes(&rows), vec![0, 1, 2, 3]);
    assert_eq!(rows[0].value, Ok(json!(1)));
    assert!(rows[1].value.as_ref().unwrap_err().contains("empty element"));
    assert_eq!(rows[2].value, Ok(json!(2)));
    assert!(rows[3].value.is_err());
}

#[tokio::test]
async fn truncated_array_is_a_read_error_after_the_good_rows() {
    let (rows, err) = read_all(FileFormat::Json, br#"[{"a":1}, {"b":2}, {"c": "x"#).await;
    assert_eq!(values(&rows), vec![json!({"a": 1}), json!({"b": 2})]);
    let err = err.unwrap();
    assert!(err.contains("t/file is an incomplete JSON array"), "{err}");
    assert!(err.contains("after 2 complete elements"), "{err}");
}

#[tokio::test]
async fn data_after_the_array_is_a_read_error() {
    let (rows, err) = read_all(FileFormat::Json, b"[1, 2]\n \n x").await;
    assert_eq!(values(&rows), vec![json!(1), json!(2)]);
    assert_eq!(
        err.unwrap(),
        "t/file has unexpected data after the closing `]` of its JSON array, at line 3 column 2"
    );
    let (rows, err) = read_all(FileFormat::Json, b"[1]  \r\n\n ").await;
    assert_eq!(values(&rows), vec![json!(1)]);
    assert_eq!(err, None);
}

#[tokio::test]
async fn single_object_is_one_row_with_index_minus_one() {
    let data = "\n  {\n  \"data\": {\"text\": \"a ] } \\\" {\"},\n  \"x\": [1, {}]\n}\n\n";
    let (rows, err) = read_all(FileFormat::Json, data.as_bytes()).await;
    assert_eq!(err, None);
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0].row_index, -1);
    assert_eq!(rows[0].position, "object");
    assert_eq!(rows[0].value, Ok(json!({"data": {"text": "a ] } \" {"}, "x": [1, {}]})));
}

#[tokio::test]
async fn brace_file_that_is_jsonl_is_read_as_lines() {
    let data = "{\"a\": 1}\n{\"b\": 2}\n\n{\"c\": [3]}\n";
    let (rows, err) = read_all(FileFormat::Json, data.as_bytes()).await;
    assert_eq!(err, None);
    assert_eq!(values(&rows), vec![json!({"a": 1}), json!({"b": 2}), json!({"c": [3]})]);
    assert_eq!(indexes(&rows), vec![0, 1, 2]);
    assert_eq!(positions(&rows), vec!["line 1", "line 2", "line 4"]);
}

#[tokio::test]
async fn brace_file_with_bad_lines_reports_them_by_line() {
    // The first value never closes, so the one-object try fails at the end.
    let data = "{\"a\": 1\n{\"b\": 2}\n";
    let (rows, err) = read_all(FileFormat::Json, data.as_bytes()).await;
    assert_eq!(err, None);
    assert_eq!(indexes(&rows), vec![0, 1]);
    assert_eq!(positions(&rows), vec!["line 1", "line 2"]);
    assert!(rows[0].value.is_err());
    assert_eq!(rows[1].value, Ok(json!({"b": 2})));

    // Two objects on one line, after leading blank lines and indentation:
    // the column is that of the physical line.
    let data = "\n\n  {\"a\":1} {\"b\":2}\n{\"c\":3}";
    let (rows, err) = read_all(FileFormat::Json, data.as_bytes()).await;
    assert_eq!(err, None);
    assert_eq!(positions(&rows), vec!["line 3", "line 4"]);
    assert_eq!(rows[0].value, Err("trailing characters at column 11".to_string()));
    assert_eq!(rows[1].value, Ok(json!({"c": 3})));
}

#[tokio::test]
async fn brace_file_that_is_jsonl_is_not_buffered_to_the_end() {
    // Rows arrive before the (failing) rest of the file is read.
    let chunks: Vec<Result<Bytes, StorageError>> = vec![
        Ok(Bytes::from_static(b"{\"a\": 1}\n{\"b\": 2}\n")),
        Err(StorageError::Transient("timeout".into())),
    ];
    let stream = read_rows(FileFormat::Json, "k.json", Box::pin(futures::stream::iter(chunks)));
    let (rows, err) = collect(stream).await;
    assert_eq!(values(&rows), vec![json!({"a": 1}), json!({"b": 2})]);
    assert!(matches!(err, Some(ReadError::Storage { .. })));
}

#[tokio::test]
async fn brace_file_beyond_the_object_cap_is_read_as_jsonl() {
    let limits = Limits {
        max_object_bytes: 16,
        ..Limits::DEFAULT
    };
    // One object, but pretty-printed beyond the cap: read line by line.
    let data = "{\n\"text\": \"a long enough value\"\n}\n";
    let (rows, err) = read_all_with(FileFormat::Json, data.as_bytes(), limits).await;
    assert_eq!(err, None);
    assert_eq!(rows.len(), 3);
    assert!(rows.iter().all(|r| r.value.is_err()));
    // JSONL lines longer than the cap are fine.
    let data = "{\"text\": \"a long enough value\"}\n{\"text\": \"another long value\"}";
    let (rows, err) = read_all_with(FileFormat::Json, data.as_bytes(), limits).await;
    assert_eq!(err, None);
    assert_eq!(indexes(&rows), vec![0, 1]);
    assert_eq!(rows[1].value, Ok(json!({"text": "another long value"})));
}

#[tokio::test]
async fn not_json_gets_label_studios_hint() {
    let cases: [&[u8]; 7] = [
        b"",
        b"   \n\t\r\n ",
        b"\x00\x01\x02PK\x03\x04binary",
        b"\x89PNG\r\n\x1a\n",
        b"\"just a string\"",
        b"42",
        b"\xEF\xBB[1]",
    ];
    for data in cases {
        let (rows, err) = read_all(FileFormat::Json, data).await;
        assert!(rows.is_empty());
        assert_eq!(
            err.as_deref(),
            Some(format!("Can't import JSON-formatted tasks from t/file{HINT_SUFFIX}").as_str()),
            "{data:?}"
        );
    }
}

#[tokio::test]
async fn jsonl_blank_lines_and_crlf() {
    let data = "{\"a\": 1}\r\n\r\n   \r\n[1, 2]\r\n\t\"s\" \r\n";
    let (rows, err) = read_all(FileFormat::Jsonl, data.as_bytes()).await;
    assert_eq!(err, None);
    assert_eq!(values(&rows), vec![json!({"a": 1}), json!([1, 2]), json!("s")]);
    assert_eq!(indexes(&rows), vec![0, 1, 2]);
    assert_eq!(positions(&rows), vec!["line 1", "line 4", "line 5"]);
}

#[tokio::test]
async fn jsonl_bad_line_three_of_five() {
    let data = "{\"n\": 1}\n{\"n\": 2}\n  {\"oops\": }\n{\"n\": 4}\n{\"n\": 5}\n";
    let (rows, err) = read_all(FileFormat::Jsonl, data.as_bytes()).await;
    assert_eq!(err, None);
    assert_eq!(indexes(&rows), vec![0, 1, 2, 3, 4]);
    assert_eq!(rows[2].position, "line 3");
    assert_eq!(rows[2].value, Err("expected value at column 12".to_string()));
    for i in [0, 1, 3, 4] {
        assert_eq!(rows[i].value, Ok(json!({"n": i + 1})));
    }
}

#[tokio::test]
async fn jsonl_last_line_without_newline_and_bom() {
    let data = "\u{feff}{\"a\": 1}\n{\"b\": 2}";
    let (rows, err) = read_all(FileFormat::Jsonl, data.as_bytes()).await;
    assert_eq!(err, None);
    assert_eq!(values(&rows), vec![json!({"a": 1}), json!({"b": 2})]);
    assert_eq!(positions(&rows), vec!["line 1", "line 2"]);

    let (rows, err) = read_all(FileFormat::Jsonl, b"").await;
    assert!(rows.is_empty());
    assert_eq!(err, None);
}

#[tokio::test]
async fn five_megabyte_rows() {
    let text = "x".repeat(5 << 20);
    let line = format!("{{\"text\": \"{text}\", \"tail\": \"\\\"],\"}}");
    let expected = json!({"text": text, "tail": "\"],"});
    for (format, data) in [
        (FileFormat::Jsonl, format!("{{\"n\": 0}}\n{line}\n{{\"n\": 2}}")),
        (FileFormat::Json, format!("[{{\"n\": 0}},{line},{{\"n\": 2}}]")),
    ] {
        for sizes in [&[65_536][..], &[1_000, 7, 4_093]] {
            let stream = read_rows(format, "big", stream_of(cut(data.as_bytes(), sizes)));
            let (rows, err) = collect(stream).await;
            assert!(err.is_none());
            assert_eq!(indexes(&rows), vec![0, 1, 2]);
            assert_eq!(rows[1].value.as_ref().unwrap(), &expected);
            assert_eq!(rows[2].value, Ok(json!({"n": 2})));
        }
    }
}

#[tokio::test]
async fn rows_over_the_size_limit_are_skipped_error_rows() {
    let limits = Limits {
        max_row_bytes: 32,
        ..Limits::DEFAULT
    };
    let long = format!("{{\"text\": \"{}\"}}", "y".repeat(100));
    let data = format!("{{\"n\": 0}}\n{long}\n{{\"n\": 2}}\n");
    let (rows, err) = read_all_with(FileFormat::Jsonl, data.as_bytes(), limits).await;
    assert_eq!(err, None);
    assert_eq!(indexes(&rows), vec![0, 1, 2]);
    assert_eq!(
        rows[1].value,
        Err("line is larger than the limit of 32 bytes; skipped".to_string())
    );
    assert_eq!(rows[2].value, Ok(json!({"n": 2})));

    let data = format!("[{{\"n\": 0}}, {long}, {{\"n\": 2}}]");
    let (rows, err) = read_all_with(FileFormat::Json, data.as_bytes(), limits).await;
    assert_eq!(err, None);
    assert_eq!(indexes(&rows), vec![0, 1, 2]);
    assert!(rows[1].value.as_ref().unwrap_err().contains("element is larger"));
    assert_eq!(rows[2].value, Ok(json!({"n": 2})));
}

#[tokio::test]
async fn storage_error_ends_the_file_after_the_rows_before_it() {
    let chunks: Vec<Result<Bytes, StorageError>> = vec![
        Ok(Bytes::from_static(b"[1, 2, ")),
        Err(StorageError::Transient("connection reset".into())),
        Ok(Bytes::from_static(b"3]")),
    ];
    let stream = read_rows(FileFormat::Json, "k.json", Box::pin(futures::stream::iter(chunks)));
    let (rows, err) = collect(stream).await;
    assert_eq!(values(&rows), vec![json!(1), json!(2)]);
    let err = err.unwrap();
    assert!(err.is_transient());
    assert_eq!(
        err.to_string(),
        "could not read k.json from storage: storage temporarily unavailable: connection reset"
    );
}

/// Streams `lines` generated lines without ever holding the file.
fn generated_jsonl(lines: usize) -> ByteStream {
    let per_chunk = 1_000;
    Box::pin(futures::stream::iter(0..lines.div_ceil(per_chunk)).map(move |c| {
        let mut chunk = String::new();
        for i in c * per_chunk..((c + 1) * per_chunk).min(lines) {
            writeln!(chunk, "{{\"text\": \"line {i}\", \"n\": {i}}}").unwrap();
        }
        Ok(Bytes::from(chunk))
    }))
}

#[tokio::test]
async fn two_hundred_thousand_lines_stream_through() {
    let mut rows = read_rows(FileFormat::Jsonl, "big.jsonl", generated_jsonl(200_000));
    let mut count = 0i64;
    while let Some(row) = rows.next().await {
        let row = row.unwrap();
        assert_eq!(row.row_index, count);
        assert_eq!(row.value.unwrap()["n"], count);
        count += 1;
    }
    assert_eq!(count, 200_000);
}

mod parquet_files {
    use super::*;
    use arrow_array::builder::{Int32Builder, ListBuilder};
    use arrow_array::{
        ArrayRef, BooleanArray, Float64Array, Int32Array, Int64Array, RecordBatch, StringArray, StructArray,
    };
    use arrow_schema::{DataType, Field, Fields};
    use parquet::arrow::ArrowWriter;
    use parquet::file::properties::WriterProperties;

    fn parquet_bytes(batches: &[RecordBatch], row_group: usize) -> Vec<u8> {
        let mut out = Vec::new();
        let props = WriterProperties::builder().set_max_row_group_size(row_group).build();
        let mut writer = ArrowWriter::try_new(&mut out, batches[0].schema(), Some(props)).unwrap();
        for batch in batches {
            writer.write(batch).unwrap();
        }
        writer.close().unwrap();
        out
    }

    fn sample_batch() -> RecordBatch {
        let data_fields = Fields::from(vec![
            Field::new("image", DataType::Utf8, true),
            Field::new("n", DataType::Int32, true),
        ]);
        let data = StructArray::new(
            data_fields,
            vec![
                Arc::new(StringArray::from(vec!["gs://b/1.png", "gs://b/2.png", "gs://b/3.png"])) as ArrayRef,
                Arc::new(Int32Array::from(vec![Some(1), None, Some(3)])) as ArrayRef,
            ],
            None,
        );
        let mut nums = ListBuilder::new(Int32Builder::new());
        nums.append_value([Some(1), Some(2)]);
        nums.append_value([]);
        nums.append_null();
        RecordBatch::try_from_iter(vec![
            ("id", Arc::new(Int64Array::from(vec![10, 20, 30])) as ArrayRef),
            (
                "text",
                Arc::new(StringArray::from(vec![Some("a"), None, Some("c \"q\"\nx")])) as ArrayRef,
            ),
            ("score", Arc::new(Float64Array::from(vec![0.5, 1.5, 2.25])) as ArrayRef),
            ("ok", Arc::new(BooleanArray::from(vec![true, false, true])) as ArrayRef),
            ("data", Arc::new(data) as ArrayRef),
            ("nums", Arc::new(nums.finish()) as ArrayRef),
        ])
        .unwrap()
    }

    #[tokio::test]
    async fn rows_come_back_as_json_objects() {
        let batch = sample_batch();
        // Row groups of 2 and batches of 2: row numbers run across both.
        let file = parquet_bytes(&[batch.clone(), batch], 2);
        let limits = Limits {
            parquet_batch_rows: 2,
            ..Limits::DEFAULT
        };
        for chunks in [cut(&file, &[1, 2, 3, 4, 5, 6, 7]), vec![Bytes::from(file.clone())]] {
            let stream = read_rows_with(FileFormat::Parquet, "p.parquet", stream_of(chunks), limits);
            let (rows, err) = collect(stream).await;
            assert!(err.is_none(), "{err:?}");
            assert_eq!(indexes(&rows), vec![0, 1, 2, 3, 4, 5]);
            assert_eq!(positions(&rows)[4], "row 4");
            let values = values(&rows);
            assert_eq!(
                values[0],
                json!({"id": 10, "text": "a", "score": 0.5, "ok": true,
                       "data": {"image": "gs://b/1.png", "n": 1}, "nums": [1, 2]})
            );
            assert_eq!(
                values[1],
                json!({"id": 20, "text": null, "score": 1.5, "ok": false,
                       "data": {"image": "gs://b/2.png", "n": null}, "nums": []})
            );
            assert_eq!(
                values[5],
                json!({"id": 30, "text": "c \"q\"\nx", "score": 2.25, "ok": true,
                       "data": {"image": "gs://b/3.png", "n": 3}, "nums": null})
            );
        }
    }

    /// Every type writers produce (pyarrow/pandas, polars, DuckDB, Spark
    /// all write these Arrow/Parquet types), with the exact JSON a row
    /// must give.
    fn type_matrix() -> RecordBatch {
        use arrow_array::builder::{MapBuilder, StringBuilder};
        use arrow_array::types::Int32Type;
        use arrow_array::{
            BinaryArray, Date32Array, Decimal128Array, DictionaryArray, DurationSecondArray, FixedSizeBinaryArray,
            LargeStringArray, NullArray, Time64MicrosecondArray, TimestampMicrosecondArray, TimestampMillisecondArray,
            TimestampNanosecondArray, UInt64Array,
        };
        let mut map = MapBuilder::new(None, StringBuilder::new(), Int32Builder::new());
        map.keys().append_value("a");
        map.values().append_value(1);
        map.append(true).unwrap();
        let mut nested = ListBuilder::new(ListBuilder::new(Int32Builder::new()));
        nested.values().append_value([Some(1), None]);
        nested.values().append_value([]);
        nested.append(true);
        let micros = 1_704_110_400_000_000i64; // 2024-01-01T12:00:00Z
        RecordBatch::try_from_iter(vec![
            (
                "ts_utc",
                Arc::new(TimestampMicrosecondArray::from(vec![micros]).with_timezone("UTC")) as ArrayRef,
            ),
            (
                "ts_berlin",
                Arc::new(TimestampMillisecondArray::from(vec![micros / 1000]).with_timezone("Europe/Berlin"))
                    as ArrayRef,
            ),
            (
                "ts_naive",
                Arc::new(TimestampNanosecondArray::from(vec![micros * 1000 + 5])) as ArrayRef,
            ),
            ("date", Arc::new(Date32Array::from(vec![19723])) as ArrayRef),
            (
                "time",
                Arc::new(Time64MicrosecondArray::from(vec![45_296_000_001])) as ArrayRef,
            ),
            ("duration", Arc::new(DurationSecondArray::from(vec![90])) as ArrayRef),
            (
                "decimal",
                Arc::new(
                    Decimal128Array::from(vec![12_345_678_901_234_567_890_123_456_789i128])
                        .with_precision_and_scale(38, 10)
                        .unwrap(),
                ) as ArrayRef,
            ),
            (
                "big",
                Arc::new(Int64Array::from(vec![9_007_199_254_740_993])) as ArrayRef,
            ),
            ("ubig", Arc::new(UInt64Array::from(vec![u64::MAX])) as ArrayRef),
            ("bin", Arc::new(BinaryArray::from(vec![&b"\x00\xffab"[..]])) as ArrayRef),
            (
                "fixed",
                Arc::new(FixedSizeBinaryArray::try_from_iter(vec![b"\x01\x02"].into_iter()).unwrap()) as ArrayRef,
            ),
            (
                "dict",
                Arc::new(vec!["cat"].into_iter().collect::<DictionaryArray<Int32Type>>()) as ArrayRef,
            ),
            ("large", Arc::new(LargeStringArray::from(vec!["ü"])) as ArrayRef),
            ("map", Arc::new(map.finish()) as ArrayRef),
            ("nested", Arc::new(nested.finish()) as ArrayRef),
            ("nothing", Arc::new(NullArray::new(1)) as ArrayRef),
        ])
        .unwrap()
    }

    #[tokio::test]
    async fn every_type_keeps_its_value() {
        let file = parquet_bytes(&[type_matrix()], 1_000);
        let stream = read_rows(FileFormat::Parquet, "types.parquet", stream_of(vec![Bytes::from(file)]));
        let (rows, err) = collect(stream).await;
        assert!(err.is_none(), "{err:?}");
        let row = values(&rows).remove(0);
        assert_eq!(
            row,
            json!({
                "ts_utc": "2024-01-01T12:00:00Z",
                "ts_berlin": "2024-01-01T13:00:00+01:00",
                "ts_naive": "2024-01-01T12:00:00.000000005",
                "date": "2024-01-01",
                "time": "12:34:56.000001",
                "duration": "PT90S",
                "decimal": "1234567890123456789.0123456789",
                "big": 9_007_199_254_740_993i64,
                "ubig": u64::MAX,
                "bin": "00ff6162",
                "fixed": "0102",
                "dict": "cat",
                "large": "ü",
                "map": {"a": 1},
                "nested": [[1, null], []],
                "nothing": null,
            })
        );
    }

    #[tokio::test]
    async fn many_rows_in_default_batches() {
        let n = 2_500;
        let batch =
            RecordBatch::try_from_iter(vec![("n", Arc::new(Int64Array::from_iter_values(0..n)) as ArrayRef)]).unwrap();
        let file = parquet_bytes(&[batch], 1_000);
        let stream = read_rows(FileFormat::Parquet, "p.parquet", stream_of(cut(&file, &[4096])));
        let (rows, err) = collect(stream).await;
        assert!(err.is_none());
        assert_eq!(rows.len(), n as usize);
        for (i, row) in rows.iter().enumerate() {
            assert_eq!(row.row_index, i as i64);
            assert_eq!(row.value, Ok(json!({"n": i})));
        }
    }

    #[tokio::test]
    async fn not_parquet_is_a_read_error_naming_the_key() {
        for data in [&b"{\"this\": \"is json\"}\n"[..], b"PAR1 but not really PAR1", b""] {
            let stream = read_rows(FileFormat::Parquet, "dir/x.parquet", stream_of(cut(data, &[5])));
            let (rows, err) = collect(stream).await;
            assert!(rows.is_empty());
            let err = err.unwrap();
            assert!(matches!(err, ReadError::NotParquet { .. }), "{err:?}");
            assert!(
                err.to_string()
                    .starts_with("dir/x.parquet is not a readable Parquet file: "),
                "{err}"
            );
        }
    }

    #[tokio::test]
    async fn storage_error_while_spooling() {
        let chunks: Vec<Result<Bytes, StorageError>> = vec![
            Ok(Bytes::from_static(b"PAR1")),
            Err(StorageError::NotFound("x.parquet".into())),
        ];
        let stream = read_rows(
            FileFormat::Parquet,
            "x.parquet",
            Box::pin(futures::stream::iter(chunks)),
        );
        let (rows, err) = collect(stream).await;
        assert!(rows.is_empty());
        assert!(matches!(err, Some(ReadError::Storage { .. })), "{err:?}");
    }
}

#[tokio::test]
async fn big_array_streams_through() {
    let n = 200_000usize;
    let stream: ByteStream = Box::pin(futures::stream::iter(0..n / 1_000).map(move |c| {
        let mut chunk = String::new();
        if c == 0 {
            chunk.push('[');
        }
        for i in c * 1_000..(c + 1) * 1_000 {
            let sep = if i + 1 == n { "]" } else { ",\n" };
            write!(chunk, "{{\"n\": {i}}}{sep}").unwrap();
        }
        Ok(Bytes::from(chunk))
    }));
    let mut rows = read_rows(FileFormat::Json, "big.json", stream);
    let mut count = 0i64;
    while let Some(row) = rows.next().await {
        let row = row.unwrap();
        assert_eq!(row.row_index, count);
        assert_eq!(row.value.unwrap()["n"], count);
        count += 1;
    }
    assert_eq!(count, n as i64);
}

/// A UTF-16 file (with or without its byte-order mark) is reported as
/// UTF-16, in both JSON formats, whatever the chunking.
#[tokio::test]
async fn utf16_task_files_are_named_as_such() {
    let text = "[{\"text\": \"a\"}]";
    let mut le_bom: Vec<u8> = vec![0xFF, 0xFE];
    le_bom.extend(text.encode_utf16().flat_map(|u| u.to_le_bytes()));
    let be: Vec<u8> = text.encode_utf16().flat_map(|u| u.to_be_bytes()).collect();
    let le: Vec<u8> = text.encode_utf16().flat_map(|u| u.to_le_bytes()).collect();
    for (name, bytes) in [("le_bom", le_bom), ("be", be), ("le", le)] {
        for format in [FileFormat::Json, FileFormat::Jsonl] {
            for chunks in chunkings(&bytes) {
                let mut rows = read_rows(format, "t/u16.json", stream_of(chunks));
                let first = rows.next().await.expect("an item");
                let e = first.expect_err(name).to_string();
                assert!(e.contains("UTF-16") && e.contains("t/u16.json"), "{name}: {e}");
                assert!(!e.contains("Tasks\" import"), "{name}: the wrong hint: {e}");
            }
        }
    }
    // UTF-8 (with its mark) still reads.
    let mut utf8 = b"\xEF\xBB\xBF".to_vec();
    utf8.extend_from_slice(text.as_bytes());
    let mut rows = read_rows(FileFormat::Json, "t/u8.json", stream_of(vec![Bytes::from(utf8)]));
    assert!(rows.next().await.unwrap().is_ok());
}
