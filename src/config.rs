//! Reading the environment: the variable names in one place (each the name it reads,
//! so a search for the variable finds this file; README.md and the crate docs list them
//! in one table, which a test here keeps complete).

pub(crate) const OPENAI_API_KEY: &str = "OPENAI_API_KEY";
pub(crate) const OPENAI_BASE_URL: &str = "OPENAI_BASE_URL";
pub(crate) const ANTHROPIC_API_KEY: &str = "ANTHROPIC_API_KEY";
pub(crate) const ANTHROPIC_BASE_URL: &str = "ANTHROPIC_BASE_URL";
pub(crate) const GOOGLE_API_KEY: &str = "GOOGLE_API_KEY";
pub(crate) const GEMINI_API_KEY: &str = "GEMINI_API_KEY";
pub(crate) const GOOGLE_GEMINI_BASE_URL: &str = "GOOGLE_GEMINI_BASE_URL";
pub(crate) const BEDROCK_API_KEY: &str = "BEDROCK_API_KEY";
pub(crate) const AWS_BEARER_TOKEN_BEDROCK: &str = "AWS_BEARER_TOKEN_BEDROCK";
pub(crate) const AWS_ACCESS_KEY_ID: &str = "AWS_ACCESS_KEY_ID";
pub(crate) const AWS_SECRET_ACCESS_KEY: &str = "AWS_SECRET_ACCESS_KEY";
pub(crate) const AWS_SESSION_TOKEN: &str = "AWS_SESSION_TOKEN";
pub(crate) const AWS_REGION: &str = "AWS_REGION";
pub(crate) const AWS_DEFAULT_REGION: &str = "AWS_DEFAULT_REGION";
pub(crate) const AWS_ENDPOINT_URL_BEDROCK_RUNTIME: &str = "AWS_ENDPOINT_URL_BEDROCK_RUNTIME";
pub(crate) const VOYAGE_API_KEY: &str = "VOYAGE_API_KEY";
pub(crate) const VOYAGE_BASE_URL: &str = "VOYAGE_BASE_URL";
pub(crate) const TRACIA_API_KEY: &str = "TRACIA_API_KEY";
pub(crate) const TRACIA_BASE_URL: &str = "TRACIA_BASE_URL";
pub(crate) const OTEL_EXPORTER_OTLP_ENDPOINT: &str = "OTEL_EXPORTER_OTLP_ENDPOINT";
pub(crate) const OTEL_EXPORTER_OTLP_TRACES_ENDPOINT: &str = "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT";
pub(crate) const OTEL_EXPORTER_OTLP_HEADERS: &str = "OTEL_EXPORTER_OTLP_HEADERS";
pub(crate) const OTEL_EXPORTER_OTLP_TRACES_HEADERS: &str = "OTEL_EXPORTER_OTLP_TRACES_HEADERS";
pub(crate) const OTEL_EXPORTER_OTLP_PROTOCOL: &str = "OTEL_EXPORTER_OTLP_PROTOCOL";
pub(crate) const OTEL_EXPORTER_OTLP_TRACES_PROTOCOL: &str = "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL";
pub(crate) const OTEL_EXPORTER_OTLP_TIMEOUT: &str = "OTEL_EXPORTER_OTLP_TIMEOUT";
pub(crate) const OTEL_EXPORTER_OTLP_TRACES_TIMEOUT: &str = "OTEL_EXPORTER_OTLP_TRACES_TIMEOUT";
pub(crate) const OTEL_SDK_DISABLED: &str = "OTEL_SDK_DISABLED";
pub(crate) const OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT: &str =
    "OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT";
pub(crate) const OTEL_SEMCONV_STABILITY_OPT_IN: &str = "OTEL_SEMCONV_STABILITY_OPT_IN";
pub(crate) const RUST_LOG: &str = "RUST_LOG";
pub(crate) const NO_COLOR: &str = "NO_COLOR";

/// Every variable the SDK reads itself (`OTEL_SERVICE_NAME` and `OTEL_BSP_*` are read by
/// the OpenTelemetry SDK).
#[cfg(test)]
const ALL: &[&str] = &[
    OPENAI_API_KEY,
    OPENAI_BASE_URL,
    ANTHROPIC_API_KEY,
    ANTHROPIC_BASE_URL,
    GOOGLE_API_KEY,
    GEMINI_API_KEY,
    GOOGLE_GEMINI_BASE_URL,
    BEDROCK_API_KEY,
    AWS_BEARER_TOKEN_BEDROCK,
    AWS_ACCESS_KEY_ID,
    AWS_SECRET_ACCESS_KEY,
    AWS_SESSION_TOKEN,
    AWS_REGION,
    AWS_DEFAULT_REGION,
    AWS_ENDPOINT_URL_BEDROCK_RUNTIME,
    VOYAGE_API_KEY,
    VOYAGE_BASE_URL,
    TRACIA_API_KEY,
    TRACIA_BASE_URL,
    OTEL_EXPORTER_OTLP_ENDPOINT,
    OTEL_EXPORTER_OTLP_TRACES_ENDPOINT,
    OTEL_EXPORTER_OTLP_HEADERS,
    OTEL_EXPORTER_OTLP_TRACES_HEADERS,
    OTEL_EXPORTER_OTLP_PROTOCOL,
    OTEL_EXPORTER_OTLP_TRACES_PROTOCOL,
    OTEL_EXPORTER_OTLP_TIMEOUT,
    OTEL_EXPORTER_OTLP_TRACES_TIMEOUT,
    OTEL_SDK_DISABLED,
    OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT,
    OTEL_SEMCONV_STABILITY_OPT_IN,
    RUST_LOG,
    NO_COLOR,
];

/// A non-empty environment variable.
pub(crate) fn env(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.trim().is_empty())
}

/// A boolean environment variable (`true`/`false`, `1`/`0`, any case).
pub(crate) fn env_bool(name: &str) -> Option<bool> {
    match env(name)?.trim().to_ascii_lowercase().as_str() {
        "true" | "1" | "yes" | "on" => Some(true),
        "false" | "0" | "no" | "off" => Some(false),
        _ => None,
    }
}

/// `OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT`: whether message content goes on
/// spans. Accepts the Python util's values (`NO_CONTENT`, `SPAN_ONLY`, `EVENT_ONLY`,
/// `SPAN_AND_EVENT`) and booleans. Unset means on: Tracia shows conversations.
pub(crate) fn capture_content_from(value: Option<&str>) -> bool {
    match value.map(|v| v.trim().to_ascii_uppercase()).as_deref() {
        None => true,
        Some("NO_CONTENT" | "EVENT_ONLY" | "FALSE" | "0" | "NO" | "OFF") => false,
        Some(_) => true,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn capture_switch_values() {
        assert!(capture_content_from(None));
        assert!(capture_content_from(Some("SPAN_ONLY")));
        assert!(capture_content_from(Some("true")));
        assert!(!capture_content_from(Some("NO_CONTENT")));
        assert!(!capture_content_from(Some("false")));
        assert!(!capture_content_from(Some("EVENT_ONLY")));
    }

    /// The rows of the environment table of a file (the crate docs' with `//! ` cut).
    fn env_table(path: &str) -> Vec<String> {
        let text = std::fs::read_to_string(path).unwrap();
        let rows: Vec<String> = text
            .lines()
            .map(|l| l.strip_prefix("//! ").unwrap_or(l).to_owned())
            .skip_while(|l| l != "| Variable | Default | Meaning |")
            .take_while(|l| l.starts_with('|'))
            .collect();
        assert!(rows.len() > 2, "no environment table in {path}");
        rows
    }

    #[test]
    fn one_environment_table_lists_every_variable_read() {
        let dir = env!("CARGO_MANIFEST_DIR");
        let readme = env_table(&format!("{dir}/README.md"));
        let docs = env_table(&format!("{dir}/src/lib.rs"));
        assert_eq!(
            readme, docs,
            "README.md and the crate docs list the same variables"
        );
        let table = readme.join("\n");
        for name in ALL {
            assert!(
                table.contains(&format!("`{name}`")),
                "{name} is not in the table"
            );
        }
    }
}
