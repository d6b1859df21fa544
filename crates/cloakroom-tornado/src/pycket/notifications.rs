//! pycket's notifications <-> Cloakroom's flash messages.

use super::*;

/// The `__cr.flash` JSON of a notifications dict; `None` when it holds no message.
pub(super) fn flash_from_notes(notes: &BTreeMap<HashableValue, Value>) -> Option<String> {
    let mut messages = Vec::new();
    for (name, v) in notes {
        let level = match value::key_text(name).as_str() {
            "success" => Level::Success,
            "warning" => Level::Warning,
            "error" => Level::Error,
            _ => Level::Info,
        };
        let text_of = |v: &Value| match v {
            Value::String(s) => Some(s.clone()),
            Value::None => None,
            other => Some(value::to_json(other)),
        };
        match v {
            Value::List(items) | Value::Tuple(items) => {
                messages.extend(
                    items
                        .iter()
                        .filter_map(text_of)
                        .map(|text| Message { level, text }),
                );
            }
            other => messages.extend(text_of(other).map(|text| Message { level, text })),
        }
    }
    (!messages.is_empty()).then(|| serde_json::to_string(&messages).expect("messages serialize"))
}

/// The notifications dict for a `__cr.flash` JSON text; `None` for no message.
pub(super) fn notes_from_flash(json: &str) -> Result<Option<Vec<u8>>> {
    let messages: Vec<Message> = serde_json::from_str(json).map_err(|e| {
        config("the __cr.flash field must be a JSON list of {level, text} messages").with_source(e)
    })?;
    if messages.is_empty() {
        return Ok(None);
    }
    let mut texts: BTreeMap<&'static str, Vec<String>> = BTreeMap::new();
    for m in messages {
        texts.entry(m.level.as_str()).or_default().push(m.text);
    }
    let dict = texts
        .into_iter()
        .map(|(level, texts)| (key(level), Value::String(texts.join("\n"))))
        .collect();
    Stored { dict }.encode().map(Some)
}
