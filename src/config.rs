//! Reading the environment: the variable names in one place.

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
}
