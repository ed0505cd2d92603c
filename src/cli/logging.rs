//! `serve`'s logs on stderr: human-readable text, or one flat JSON object a
//! line for log pipelines.
//!
//! A JSON line holds `timestamp`, `level`, `target`, `message`, then the
//! fields of the spans it happened in and its own, by name, all at the top
//! level (a field of the event replaces a span's of the same name, an inner
//! span's an outer one's). Numbers and booleans stay JSON numbers and booleans;
//! a value logged with `?` whose text is a JSON array or object (a list of
//! strings or numbers) goes out as that array or object, any other as its text.

use std::fmt;

use clap::ValueEnum;
use serde_json::{Map, Value};
use tracing::field::{Field, Visit};
use tracing::{Event, Subscriber};
use tracing_subscriber::EnvFilter;
use tracing_subscriber::fmt::format::{JsonFields, Writer};
use tracing_subscriber::fmt::time::{FormatTime, SystemTime};
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields, FormattedFields};
use tracing_subscriber::registry::LookupSpan;

/// The format of `serve`'s logs.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

/// The levels `--log-level` takes on its own (else a filter directive).
const LEVELS: [&str; 6] = ["trace", "debug", "info", "warn", "error", "off"];

/// What is logged: `level` (`--log-level`) when given, else `RUST_LOG` when
/// set and valid, else `info`.
pub fn filter(level: Option<&str>) -> Result<EnvFilter, String> {
    let Some(level) = level else {
        return Ok(EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info")));
    };
    let directive = level.trim();
    let is_filter = directive.contains(['=', ',', '[', ':']);
    if !is_filter && !LEVELS.contains(&directive.to_ascii_lowercase().as_str()) {
        return Err(format!(
            "{level:?} is neither a level ({}) nor a filter such as info,eci_profile=debug (--log-level)",
            LEVELS.join(", ")
        ));
    }
    EnvFilter::builder()
        .parse(directive)
        .map_err(|e| format!("{level:?} is not a log filter: {e} (--log-level)"))
}

/// Sends the logs to stderr, in `format`, filtered by `filter`.
pub fn init(format: LogFormat, filter: EnvFilter) {
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Text => builder
            .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
            .init(),
        LogFormat::Json => builder
            .with_ansi(false)
            .fmt_fields(JsonFields::new())
            .event_format(FlatJson)
            .init(),
    }
}

/// One flat JSON object a line (see the module's documentation).
pub struct FlatJson;

impl<S, N> FormatEvent<S, N> for FlatJson
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
{
    fn format_event(
        &self,
        ctx: &FmtContext<'_, S, N>,
        mut writer: Writer<'_>,
        event: &Event<'_>,
    ) -> fmt::Result {
        let mut timestamp = String::new();
        SystemTime.format_time(&mut Writer::new(&mut timestamp))?;
        let metadata = event.metadata();
        let mut fields = Fields::default();
        if let Some(scope) = ctx.event_scope() {
            for span in scope.from_root() {
                let extensions = span.extensions();
                let Some(formatted) = extensions.get::<FormattedFields<N>>() else {
                    continue;
                };
                if let Ok(Value::Object(span_fields)) =
                    serde_json::from_str::<Value>(&formatted.fields)
                {
                    fields.0.extend(span_fields);
                }
            }
        }
        event.record(&mut fields);
        // These four first, for whoever reads the lines; then the fields by name.
        let message = fields.0.remove("message").unwrap_or_default();
        let head = [
            ("timestamp", Value::String(timestamp)),
            ("level", metadata.level().as_str().into()),
            ("target", metadata.target().into()),
            ("message", message),
        ];
        let json = |value: &Value| serde_json::to_string(value).map_err(|_| fmt::Error);
        let mut separator = '{';
        for (key, value) in head {
            fields.0.remove(key);
            write!(writer, "{separator}\"{key}\":{}", json(&value)?)?;
            separator = ',';
        }
        for (key, value) in &fields.0 {
            write!(writer, ",{}:{}", json(&key.as_str().into())?, json(value)?)?;
        }
        writeln!(writer, "}}")
    }
}

/// An event's fields, as JSON values.
#[derive(Default)]
struct Fields(Map<String, Value>);

impl Fields {
    fn insert(&mut self, field: &Field, value: Value) {
        self.0.insert(field.name().to_string(), value);
    }
}

impl Visit for Fields {
    fn record_f64(&mut self, field: &Field, value: f64) {
        self.insert(field, value.into());
    }

    fn record_i64(&mut self, field: &Field, value: i64) {
        self.insert(field, value.into());
    }

    fn record_u64(&mut self, field: &Field, value: u64) {
        self.insert(field, value.into());
    }

    fn record_bool(&mut self, field: &Field, value: bool) {
        self.insert(field, value.into());
    }

    fn record_str(&mut self, field: &Field, value: &str) {
        self.insert(field, value.into());
    }

    fn record_error(&mut self, field: &Field, value: &(dyn std::error::Error + 'static)) {
        self.insert(field, value.to_string().into());
    }

    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        let text = format!("{value:?}");
        let structured = matches!(text.as_bytes().first(), Some(b'[' | b'{'))
            .then(|| serde_json::from_str::<Value>(&text).ok())
            .flatten()
            .filter(|v| v.is_array() || v.is_object());
        self.insert(field, structured.unwrap_or(Value::String(text)));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::{Arc, Mutex};

    /// What a subscriber with [`FlatJson`] writes while `log` runs.
    fn logged(log: impl FnOnce()) -> Vec<Value> {
        #[derive(Clone, Default)]
        struct Buffer(Arc<Mutex<Vec<u8>>>);
        impl std::io::Write for Buffer {
            fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
                self.0.lock().unwrap().extend_from_slice(bytes);
                Ok(bytes.len())
            }
            fn flush(&mut self) -> std::io::Result<()> {
                Ok(())
            }
        }
        let buffer = Buffer::default();
        let writer = buffer.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_max_level(tracing::Level::DEBUG)
            .with_ansi(false)
            .fmt_fields(JsonFields::new())
            .event_format(FlatJson)
            .with_writer(move || writer.clone())
            .finish();
        tracing::subscriber::with_default(subscriber, log);
        let text = String::from_utf8(buffer.0.lock().unwrap().clone()).unwrap();
        text.lines()
            .map(|line| serde_json::from_str(line).unwrap())
            .collect()
    }

    #[test]
    fn json_lines_are_flat_with_typed_values_and_arrays() {
        let lines = logged(|| {
            let span = tracing::debug_span!(
                "admission",
                uid = "u-1",
                pod = tracing::field::Empty,
                rules = "a,b"
            );
            let _entered = span.enter();
            span.record("pod", "web-1");
            let warnings = vec!["first \"one\"".to_string(), "second".to_string()];
            let expiry: Option<i64> = Some(1_900_000_000);
            let missing: Option<i64> = None;
            tracing::info!(
                rules = "b",
                operations = 3_u64,
                dry_run = false,
                ratio = 0.5,
                ?warnings,
                expiry,
                missing,
                odd = ?"not [json",
                "pod {}",
                "mutated"
            );
        });
        let [line] = lines.as_slice() else {
            panic!("{lines:?}")
        };
        let object = line.as_object().unwrap();
        assert_eq!(line["level"], "INFO");
        assert_eq!(line["message"], "pod mutated");
        assert!(line["timestamp"].as_str().unwrap().ends_with('Z'), "{line}");
        assert_eq!(line["target"], module_path!());
        assert_eq!(line["uid"], "u-1");
        assert_eq!(line["pod"], "web-1");
        assert_eq!(line["rules"], "b", "the event's own field wins");
        assert_eq!(line["operations"], 3);
        assert_eq!(line["dry_run"], false);
        assert_eq!(line["ratio"], 0.5);
        assert_eq!(
            line["warnings"],
            serde_json::json!(["first \"one\"", "second"])
        );
        assert_eq!(line["expiry"], 1_900_000_000_i64);
        assert!(!object.contains_key("missing"), "{line}");
        assert_eq!(line["odd"], "\"not [json\"");
        for nested in ["fields", "span", "spans"] {
            assert!(!object.contains_key(nested), "{line}");
        }
    }

    #[test]
    fn the_log_level_is_a_level_or_a_filter_and_names_its_flag() {
        assert!(filter(Some("debug")).is_ok());
        assert!(filter(Some("WARN")).is_ok());
        assert!(filter(Some("info,eci_profile=debug")).is_ok());
        assert!(filter(Some("eci_profile::server=trace")).is_ok());
        let error = filter(Some("verbose")).unwrap_err();
        assert!(error.contains("--log-level"), "{error}");
        assert!(error.contains("\"verbose\""), "{error}");
        let error = filter(Some("info,eci_profile=loud")).unwrap_err();
        assert!(error.contains("--log-level"), "{error}");
    }
}
