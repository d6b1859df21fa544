//! Request bodies read the way axum's `Form` and `Json` extractors read them (same statuses,
//! same reasons), for a framework that hands over the raw bytes.

use http::StatusCode;
use serde::de::DeserializeOwned;

use crate::app::BadInput;

/// A `application/x-www-form-urlencoded` body: 415 for another content type, 422 for a
/// body that does not decode into `T` (as axum's `Form`).
///
/// # Errors
/// As above.
pub fn form<T: DeserializeOwned>(content_type: Option<&[u8]>, body: &[u8]) -> Result<T, BadInput> {
    let is_form = content_type
        .and_then(|v| std::str::from_utf8(v).ok())
        .and_then(|v| v.split(';').next())
        .is_some_and(|v| {
            v.trim()
                .eq_ignore_ascii_case("application/x-www-form-urlencoded")
        });
    if !is_form {
        return Err(BadInput {
            status: StatusCode::UNSUPPORTED_MEDIA_TYPE,
            message: "Form requests must have `Content-Type: application/x-www-form-urlencoded`"
                .to_owned(),
        });
    }
    serde_urlencoded::from_bytes(body).map_err(|e| BadInput {
        status: StatusCode::UNPROCESSABLE_ENTITY,
        message: format!("Failed to deserialize form body: {e}"),
    })
}

/// A JSON body: 415 without a JSON content type, 400 for bad syntax, 422 for JSON that does
/// not decode into `T` (as axum's `Json`).
///
/// # Errors
/// As above.
pub fn json<T: DeserializeOwned>(content_type: Option<&[u8]>, body: &[u8]) -> Result<T, BadInput> {
    let is_json = content_type
        .and_then(|v| std::str::from_utf8(v).ok())
        .and_then(|v| v.split(';').next())
        .map(|v| v.trim().to_ascii_lowercase())
        .is_some_and(|v| {
            v == "application/json" || (v.starts_with("application/") && v.ends_with("+json"))
        });
    if !is_json {
        return Err(BadInput {
            status: StatusCode::UNSUPPORTED_MEDIA_TYPE,
            message: "Expected request with `Content-Type: application/json`".to_owned(),
        });
    }
    serde_json::from_slice(body).map_err(|e| {
        if e.is_data() {
            BadInput {
                status: StatusCode::UNPROCESSABLE_ENTITY,
                message: format!("Failed to deserialize the JSON body into the target type: {e}"),
            }
        } else {
            BadInput {
                status: StatusCode::BAD_REQUEST,
                message: format!("Failed to parse the request body as JSON: {e}"),
            }
        }
    })
}

/// A query string, `None` if it does not decode into `T` (as axum's `Query`, whose
/// rejection the demo ignores).
pub fn query<T: DeserializeOwned>(query: &str) -> Option<T> {
    serde_urlencoded::from_str(query).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(serde::Deserialize, Debug)]
    struct Note {
        text: String,
    }

    #[test]
    fn bodies_are_refused_as_axum_refuses_them() {
        let ct = Some(&b"application/x-www-form-urlencoded; charset=utf-8"[..]);
        assert_eq!(form::<Note>(ct, b"text=a+b").unwrap().text, "a b");
        let e = form::<Note>(ct, b"other=1").unwrap_err();
        assert_eq!(e.status, StatusCode::UNPROCESSABLE_ENTITY);
        assert!(e.message.contains("missing field `text`"), "{}", e.message);
        let e = form::<Note>(Some(b"text/plain"), b"text=a").unwrap_err();
        assert_eq!(e.status, StatusCode::UNSUPPORTED_MEDIA_TYPE);
        let ct = Some(&b"application/json"[..]);
        assert_eq!(json::<Note>(ct, br#"{"text":"x"}"#).unwrap().text, "x");
        assert_eq!(
            json::<Note>(ct, b"{").unwrap_err().status,
            StatusCode::BAD_REQUEST
        );
        let e = json::<Note>(ct, b"{}").unwrap_err();
        assert_eq!(e.status, StatusCode::UNPROCESSABLE_ENTITY);
        assert_eq!(
            json::<Note>(None, b"{}").unwrap_err().status,
            StatusCode::UNSUPPORTED_MEDIA_TYPE
        );
    }
}
