//! Finding `_xsrf` in urlencoded and multipart bodies never panics on any input.
#![no_main]
use cloakroom_core::csrf::{CsrfRequest, CsrfSettings};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    // First line: a Content-Type; the rest: the body.
    let split = data.iter().position(|&b| b == b'\n').unwrap_or(data.len());
    let (head, body) = data.split_at(split);
    let body = body.get(1..).unwrap_or(&[]);
    let settings = CsrfSettings::new();
    let given = std::str::from_utf8(head).unwrap_or("");
    for ctype in [
        given,
        "application/x-www-form-urlencoded",
        "multipart/form-data; boundary=b",
    ] {
        let headers = [("content-type", ctype)];
        let req = CsrfRequest::new("POST", "/", &headers[..]);
        if let Ok(mut check) = settings.begin_check(&req) {
            if check.form_body().is_some() {
                check.read_form(body);
            }
        }
    }
});
