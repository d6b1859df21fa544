//! Finding `_xsrf` in urlencoded and multipart bodies never panics on any input.
#![no_main]
use cloakroom_core::csrf::{form_kind, multipart_field, urlencoded_field};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    // First line: a Content-Type; the rest: the body.
    let split = data.iter().position(|&b| b == b'\n').unwrap_or(data.len());
    let (head, body) = data.split_at(split);
    let body = body.get(1..).unwrap_or(&[]);
    let _ = urlencoded_field(body, "_xsrf");
    if let Ok(ctype) = std::str::from_utf8(head) {
        if let Some((_, Some(boundary))) = form_kind(ctype) {
            let _ = multipart_field(body, &boundary, "_xsrf");
        }
    }
    let _ = multipart_field(body, "b", "_xsrf");
});
