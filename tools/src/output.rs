//! Human output: aligned tables with a header row, like `kubectl get` and `psql`. Scripts
//! use `--json` instead, whose shape is documented per command.

use crate::source::EventJson;

/// Aligns `rows` under `headers`: columns are separated by two spaces, numbers (columns
/// listed in `right`) are right-aligned, the last column is never padded.
pub fn table(headers: &[&str], right: &[usize], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = headers
        .iter()
        .map(|header| header.chars().count())
        .collect();
    for row in rows {
        for (column, cell) in row.iter().enumerate() {
            widths[column] = widths[column].max(cell.chars().count());
        }
    }
    let mut text = String::new();
    let header_cells: Vec<String> = headers.iter().map(|header| (*header).to_owned()).collect();
    for row in std::iter::once(&header_cells).chain(rows) {
        let last = row.len() - 1;
        let mut line = String::new();
        for (column, cell) in row.iter().enumerate() {
            if column > 0 {
                line.push_str("  ");
            }
            let pad = widths[column] - cell.chars().count();
            if right.contains(&column) {
                line.push_str(&" ".repeat(pad));
                line.push_str(cell);
            } else {
                line.push_str(cell);
                if column != last {
                    line.push_str(&" ".repeat(pad));
                }
            }
        }
        text.push_str(line.trim_end());
        text.push('\n');
    }
    text
}

/// The payload as one line: compact JSON, or `hex:` and the bytes when no domain crate
/// decodes it.
pub fn payload_text(event: &EventJson) -> String {
    match (&event.payload, event.payload_encoding.as_str()) {
        (serde_json::Value::String(hex), "hex") => format!("hex:{hex}"),
        (payload, _) => payload.to_string(),
    }
}

/// The columns of an event table; `with_stream` for the log, where streams mix.
pub fn event_headers(with_stream: bool) -> Vec<&'static str> {
    let mut headers = vec!["POSITION"];
    if with_stream {
        headers.push("STREAM");
    }
    headers.extend(["VERSION", "TYPE", "RECORDED AT", "PAYLOAD"]);
    headers
}

/// The right-aligned (numeric) columns of an event table.
pub fn event_numeric_columns(with_stream: bool) -> Vec<usize> {
    if with_stream { vec![0, 2] } else { vec![0, 1] }
}

/// One event as a table row.
pub fn event_row(event: &EventJson, with_stream: bool) -> Vec<String> {
    let mut row = vec![event.position.to_string()];
    if with_stream {
        row.push(event.stream.clone());
    }
    row.extend([
        event.version.to_string(),
        event.event_type.clone(),
        event.recorded_at.clone(),
        payload_text(event),
    ]);
    row
}

/// A table of events.
pub fn event_table(events: &[EventJson], with_stream: bool) -> String {
    let rows: Vec<Vec<String>> = events
        .iter()
        .map(|event| event_row(event, with_stream))
        .collect();
    table(
        &event_headers(with_stream),
        &event_numeric_columns(with_stream),
        &rows,
    )
}

/// One event as one line, for `inspect tail`, where no table can be aligned ahead.
pub fn event_line(event: &EventJson) -> String {
    format!(
        "{:>8}  {}@{}  {}  {}  {}",
        event.position,
        event.stream,
        event.version,
        event.event_type,
        event.recorded_at,
        payload_text(event)
    )
}

/// One event, field by field, its metadata and its payload pretty-printed.
pub fn event_details(event: &EventJson) -> String {
    let mut fields: Vec<(String, String)> = vec![
        ("id".into(), event.id.clone()),
        ("stream".into(), event.stream.clone()),
        ("version".into(), event.version.to_string()),
        ("position".into(), event.position.to_string()),
        ("type".into(), event.event_type.clone()),
        ("schema version".into(), event.schema_version.to_string()),
        ("recorded at".into(), event.recorded_at.clone()),
    ];
    if let serde_json::Value::Object(metadata) = &event.metadata {
        for (name, value) in metadata {
            let value = value
                .as_str()
                .map_or_else(|| value.to_string(), str::to_owned);
            fields.push((name.replace('_', " "), value));
        }
    }
    if let Some(schema) = &event.payload_schema {
        fields.push(("payload schema".into(), schema.clone()));
    }
    let width = fields.iter().map(|(name, _)| name.len()).max().unwrap_or(0) + 1;
    let mut text = String::new();
    for (name, value) in fields {
        text.push_str(&format!("{:<width$} {value}\n", format!("{name}:")));
    }
    let payload = match event.payload_encoding.as_str() {
        "hex" => payload_text(event),
        _ => serde_json::to_string_pretty(&event.payload).unwrap_or_default(),
    };
    text.push_str(&format!(
        "payload ({}):\n{payload}\n",
        event.payload_encoding
    ));
    text
}
