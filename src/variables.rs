//! `{{name}}` interpolation, exactly as Tracia does it (it is not Jinja).

use std::collections::BTreeMap;
use std::sync::LazyLock;

use regex::Regex;

use crate::error::{Error, Result};
use crate::message::{Content, ContentPart, Message, Role};

static PLACEHOLDER: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r"\{\{(\w+)\}\}").expect("static pattern"));
static SPACED: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r"\{\{\s+(\w+)\s*\}\}|\{\{(\w+)\s+\}\}").expect("static pattern"));
static NAME: LazyLock<Regex> = LazyLock::new(|| Regex::new(r"^\w+$").expect("static pattern"));

/// Checks that every variable can ever match a placeholder, and that no template uses
/// a spaced placeholder (`{{ name }}`) for a supplied variable, which Tracia would leave
/// verbatim: both are almost always mistakes, so they fail before any request.
pub(crate) fn validate(messages: &[Message], variables: &BTreeMap<String, String>) -> Result<()> {
    if let Some(bad) = variables.keys().find(|k| !NAME.is_match(k)) {
        return Err(Error::invalid(format!(
            "Invalid variable name '{bad}': names may contain only letters, digits and underscores, \
             and are used as {{{{name}}}}"
        )));
    }
    for text in messages.iter().flat_map(|m| m.content.text_parts()) {
        for cap in SPACED.captures_iter(text) {
            let name = cap.get(1).or_else(|| cap.get(2)).map_or("", |m| m.as_str());
            if variables.contains_key(name) {
                return Err(Error::invalid(format!(
                    "Placeholder '{}' has spaces inside the braces, so it would not be replaced; \
                     write {{{{{name}}}}}",
                    &cap[0]
                )));
            }
        }
    }
    Ok(())
}

/// Replaces `{{name}}` with its value in one text; unknown names stay verbatim.
pub(crate) fn interpolate_text(text: &str, variables: &BTreeMap<String, String>) -> String {
    PLACEHOLDER
        .replace_all(text, |cap: &regex::Captures<'_>| {
            variables
                .get(&cap[1])
                .cloned()
                .unwrap_or_else(|| cap[0].to_owned())
        })
        .into_owned()
}

/// The names of the `{{name}}` placeholders in the text of the non-tool messages (those
/// that interpolation fills), each once, in order of first use.
///
/// ```
/// let messages = [tracia::Message::system("Hi {{name}}"), tracia::Message::user("{{topic}} for {{name}}")];
/// assert_eq!(tracia::template_variables(&messages), ["name", "topic"]);
/// ```
pub fn template_variables(messages: &[Message]) -> Vec<String> {
    let mut names: Vec<String> = Vec::new();
    let texts = messages
        .iter()
        .filter(|m| m.role != Role::Tool)
        .flat_map(|m| m.content.text_parts());
    for text in texts {
        for cap in PLACEHOLDER.captures_iter(text) {
            if !names.iter().any(|n| n == &cap[1]) {
                names.push(cap[1].to_owned());
            }
        }
    }
    names
}

/// Interpolates every non-tool message (text parts only), as the Python SDK does.
pub(crate) fn interpolate(
    messages: &[Message],
    variables: &BTreeMap<String, String>,
) -> Vec<Message> {
    if variables.is_empty() {
        return messages.to_vec();
    }
    messages
        .iter()
        .map(|m| {
            let mut m = m.clone();
            if m.role != Role::Tool {
                m.content = match m.content {
                    Content::Text(t) => Content::Text(interpolate_text(&t, variables)),
                    Content::Parts(parts) => Content::Parts(
                        parts
                            .into_iter()
                            .map(|p| match p {
                                ContentPart::Text { text } => ContentPart::Text {
                                    text: interpolate_text(&text, variables),
                                },
                                other => other,
                            })
                            .collect(),
                    ),
                };
            }
            m
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vars(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn unknown_names_stay_verbatim() {
        let v = vars(&[("name", "Alice")]);
        assert_eq!(
            interpolate_text("Hello {{name}}, how is {{city}}? {{ name }}", &v),
            "Hello Alice, how is {{city}}? {{ name }}"
        );
    }

    #[test]
    fn tool_messages_are_not_interpolated() {
        let v = vars(&[("x", "1")]);
        let out = interpolate(&[Message::user("{{x}}"), Message::tool("c", "{{x}}")], &v);
        assert_eq!(out[0].content.text(), "1");
        assert_eq!(out[1].content.text(), "{{x}}");
    }

    #[test]
    fn template_variables_are_those_interpolation_fills() {
        let messages = [
            Message::system("{{b}} and {{a}}, {{ spaced }}"),
            Message::user(vec![
                ContentPart::text("{{a}} again, {{c_1}}"),
                ContentPart::ToolCall(crate::ToolCall::new("t", "f", serde_json::json!({}))),
            ]),
            Message::tool("call", "{{from_tool}}"),
        ];
        assert_eq!(template_variables(&messages), ["b", "a", "c_1"]);
    }

    #[test]
    fn bad_syntax_fails_naming_the_problem() {
        let err = validate(&[], &vars(&[("first name", "A")])).unwrap_err();
        assert!(err.message().contains("'first name'"), "{err}");
        let err = validate(&[Message::user("Hi {{ name }}")], &vars(&[("name", "A")])).unwrap_err();
        assert!(err.message().contains("{{ name }}"), "{err}");
        assert!(validate(&[Message::user("Hi {{ other }}")], &vars(&[("name", "A")])).is_ok());
    }
}
