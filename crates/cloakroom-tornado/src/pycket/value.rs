//! Python values (as `serde-pickle` decodes them) and JSON text, both ways, plus a check that
//! a pickle holds plain data only.
//!
//! JSON to Python: `null` -> `None`, booleans, integers (of any size) -> `int`, other numbers
//! -> `float`, strings -> `str`, arrays -> `list`, objects -> `dict` (a repeated key keeps its
//! last value, as Python's `json.loads` does). A lone UTF-16 surrogate escape becomes U+FFFD.
//!
//! Python to JSON ("canonical" text: compact, dict keys in sorted order): `tuple`, `set` and
//! `frozenset` -> arrays; `bytes`/`bytearray` -> a string holding their standard base64;
//! non-finite floats -> `null`; dict keys that are not strings -> their JSON text (`1` ->
//! `"1"`, `None` -> `"null"`, bytes -> base64), as `json.dumps` does for numbers.

use std::collections::BTreeMap;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use num_bigint::BigInt;
use serde_pickle::{HashableValue, Value};

/// Deepest JSON nesting converted; deeper text is kept as a string stand-in.
const MAX_DEPTH: usize = 128;

/// The Python value standing for the JSON text `text` in a pycket dict: its conversion, or,
/// for text that is not JSON (or nests too deep), the text itself as a `str`.
pub(crate) fn stand_in(text: &str) -> Value {
    from_json(text).unwrap_or_else(|| Value::String(text.to_owned()))
}

/// Parses JSON text into a Python value; `None` when it is not JSON.
pub(crate) fn from_json(text: &str) -> Option<Value> {
    let mut p = Parser {
        s: text.as_bytes(),
        i: 0,
    };
    p.ws();
    let v = p.value(0)?;
    p.ws();
    (p.i == p.s.len()).then_some(v)
}

/// The canonical JSON text of a Python value.
pub(crate) fn to_json(v: &Value) -> String {
    let mut out = String::new();
    write_value(&mut out, v);
    out
}

fn write_value(out: &mut String, v: &Value) {
    match v {
        Value::None => out.push_str("null"),
        Value::Bool(b) => out.push_str(if *b { "true" } else { "false" }),
        Value::I64(i) => out.push_str(&i.to_string()),
        Value::Int(i) => out.push_str(&i.to_string()),
        Value::F64(f) => write_float(out, *f),
        Value::Bytes(b) => write_str(out, &STANDARD.encode(b)),
        Value::String(s) => write_str(out, s),
        Value::List(items) | Value::Tuple(items) => {
            out.push('[');
            for (n, item) in items.iter().enumerate() {
                if n > 0 {
                    out.push(',');
                }
                write_value(out, item);
            }
            out.push(']');
        }
        Value::Set(items) | Value::FrozenSet(items) => write_hashables(out, items.iter()),
        Value::Dict(map) => {
            out.push('{');
            for (n, (k, v)) in map.iter().enumerate() {
                if n > 0 {
                    out.push(',');
                }
                write_str(out, &key_text(k));
                out.push(':');
                write_value(out, v);
            }
            out.push('}');
        }
    }
}

fn write_hashables<'a>(out: &mut String, items: impl Iterator<Item = &'a HashableValue>) {
    out.push('[');
    for (n, item) in items.enumerate() {
        if n > 0 {
            out.push(',');
        }
        write_value(out, &item.clone().into_value());
    }
    out.push(']');
}

fn write_float(out: &mut String, f: f64) {
    if f.is_finite() {
        out.push_str(&serde_json::to_string(&f).expect("finite floats serialize"));
    } else {
        out.push_str("null");
    }
}

fn write_str(out: &mut String, s: &str) {
    out.push_str(&serde_json::to_string(s).expect("strings serialize"));
}

/// A dict key as a JSON object key.
pub(crate) fn key_text(k: &HashableValue) -> String {
    match k {
        HashableValue::String(s) => s.clone(),
        HashableValue::Bytes(b) => STANDARD.encode(b),
        HashableValue::F64(f) if f.is_nan() => "NaN".into(),
        HashableValue::F64(f) if f.is_infinite() => {
            if *f > 0.0 { "Infinity" } else { "-Infinity" }.into()
        }
        other => to_json(&other.clone().into_value()),
    }
}

struct Parser<'a> {
    s: &'a [u8],
    i: usize,
}

impl Parser<'_> {
    fn ws(&mut self) {
        while let Some(b' ' | b'\t' | b'\n' | b'\r') = self.s.get(self.i) {
            self.i += 1;
        }
    }

    fn eat(&mut self, lit: &[u8]) -> bool {
        if self.s[self.i..].starts_with(lit) {
            self.i += lit.len();
            true
        } else {
            false
        }
    }

    fn value(&mut self, depth: usize) -> Option<Value> {
        if depth > MAX_DEPTH {
            return None;
        }
        match *self.s.get(self.i)? {
            b'n' => self.eat(b"null").then_some(Value::None),
            b't' => self.eat(b"true").then_some(Value::Bool(true)),
            b'f' => self.eat(b"false").then_some(Value::Bool(false)),
            b'"' => self.string().map(Value::String),
            b'[' => {
                self.i += 1;
                let mut items = Vec::new();
                self.ws();
                if self.eat(b"]") {
                    return Some(Value::List(items));
                }
                loop {
                    self.ws();
                    items.push(self.value(depth + 1)?);
                    self.ws();
                    if self.eat(b"]") {
                        return Some(Value::List(items));
                    }
                    if !self.eat(b",") {
                        return None;
                    }
                }
            }
            b'{' => {
                self.i += 1;
                let mut map = BTreeMap::new();
                self.ws();
                if self.eat(b"}") {
                    return Some(Value::Dict(map));
                }
                loop {
                    self.ws();
                    if self.s.get(self.i) != Some(&b'"') {
                        return None;
                    }
                    let key = self.string()?;
                    self.ws();
                    if !self.eat(b":") {
                        return None;
                    }
                    self.ws();
                    let v = self.value(depth + 1)?;
                    map.insert(HashableValue::String(key), v);
                    self.ws();
                    if self.eat(b"}") {
                        return Some(Value::Dict(map));
                    }
                    if !self.eat(b",") {
                        return None;
                    }
                }
            }
            b'-' | b'0'..=b'9' => self.number(),
            _ => None,
        }
    }

    fn digits(&mut self) -> usize {
        let start = self.i;
        while let Some(b'0'..=b'9') = self.s.get(self.i) {
            self.i += 1;
        }
        self.i - start
    }

    fn number(&mut self) -> Option<Value> {
        let start = self.i;
        self.eat(b"-");
        let first = *self.s.get(self.i)?;
        let int_digits = self.digits();
        if int_digits == 0 || (first == b'0' && int_digits > 1) {
            return None;
        }
        let mut integral = true;
        if self.eat(b".") {
            integral = false;
            if self.digits() == 0 {
                return None;
            }
        }
        if let Some(b'e' | b'E') = self.s.get(self.i) {
            integral = false;
            self.i += 1;
            if let Some(b'+' | b'-') = self.s.get(self.i) {
                self.i += 1;
            }
            if self.digits() == 0 {
                return None;
            }
        }
        let text = std::str::from_utf8(&self.s[start..self.i]).ok()?;
        if integral {
            match text.parse::<i64>() {
                Ok(i) => Some(Value::I64(i)),
                Err(_) => text.parse::<BigInt>().ok().map(Value::Int),
            }
        } else {
            // Out-of-range exponents give ±inf (or 0), like Python's float().
            text.parse::<f64>().ok().map(Value::F64)
        }
    }

    fn hex4(&mut self) -> Option<u32> {
        let h = self.s.get(self.i..self.i + 4)?;
        let h = std::str::from_utf8(h).ok()?;
        let v = u32::from_str_radix(h, 16).ok()?;
        if !h.bytes().all(|b| b.is_ascii_hexdigit()) {
            return None;
        }
        self.i += 4;
        Some(v)
    }

    fn string(&mut self) -> Option<String> {
        self.i += 1; // the opening quote
        let mut out = String::new();
        loop {
            let start = self.i;
            while let Some(&b) = self.s.get(self.i) {
                if b == b'"' || b == b'\\' || b < 0x20 {
                    break;
                }
                self.i += 1;
            }
            out.push_str(std::str::from_utf8(&self.s[start..self.i]).ok()?);
            match *self.s.get(self.i)? {
                b'"' => {
                    self.i += 1;
                    return Some(out);
                }
                b'\\' => {
                    self.i += 1;
                    let esc = *self.s.get(self.i)?;
                    self.i += 1;
                    match esc {
                        b'"' => out.push('"'),
                        b'\\' => out.push('\\'),
                        b'/' => out.push('/'),
                        b'b' => out.push('\u{8}'),
                        b'f' => out.push('\u{c}'),
                        b'n' => out.push('\n'),
                        b'r' => out.push('\r'),
                        b't' => out.push('\t'),
                        b'u' => {
                            let hi = self.hex4()?;
                            let c = if (0xD800..0xDC00).contains(&hi) {
                                // A high surrogate: a low one should follow.
                                let save = self.i;
                                let lo = if self.eat(b"\\u") { self.hex4() } else { None };
                                match lo {
                                    Some(lo) if (0xDC00..0xE000).contains(&lo) => char::from_u32(
                                        0x10000 + ((hi - 0xD800) << 10) + (lo - 0xDC00),
                                    ),
                                    _ => {
                                        self.i = save;
                                        None
                                    }
                                }
                            } else {
                                char::from_u32(hi)
                            };
                            out.push(c.unwrap_or('\u{FFFD}'));
                        }
                        _ => return None,
                    }
                }
                _ => return None, // a raw control character
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn canonical_json_round_trips() {
        for text in [
            "null",
            "true",
            "false",
            "0",
            "-7",
            "12345678901234567890123",
            "1.5",
            "2.0",
            "\"ada\"",
            "\"new\\nline \\\"q\\\" \\\\ \\u0000 ü🔑\"",
            "[]",
            "{}",
            "[1,\"a\",null]",
            "{\"a\":1,\"b\":[true,{\"c\":null}]}",
        ] {
            let v = from_json(text).unwrap_or_else(|| panic!("{text} did not parse"));
            assert_eq!(to_json(&v), text);
        }
    }

    #[test]
    fn non_canonical_json_parses_to_the_same_value() {
        for (text, canonical) in [
            ("2.50", "2.5"),
            ("-0", "0"),
            (" { \"b\" : 1, \"a\" : 2 } ", "{\"a\":2,\"b\":1}"),
            ("{\"b\":1,\"a\":2,\"b\":3}", "{\"a\":2,\"b\":3}"),
            ("\"\\/\"", "\"/\""),
            ("\"\\ud83d\\ude00\"", "\"😀\""),
            ("\"\\ud83d\"", "\"\u{FFFD}\""),
            ("1e400", "null"),
            ("1E2", "100.0"),
        ] {
            let v = from_json(text).unwrap_or_else(|| panic!("{text} did not parse"));
            assert_eq!(to_json(&v), canonical, "{text}");
        }
        for bad in [
            "",
            "nul",
            "01",
            "1.",
            "[1,]",
            "{\"a\"}",
            "\"\u{1}\"",
            "[1] x",
            "'a'",
        ] {
            assert_eq!(from_json(bad), None, "{bad:?}");
        }
        let deep = "[".repeat(1000) + &"]".repeat(1000);
        assert_eq!(from_json(&deep), None);
        assert_eq!(stand_in(&deep), Value::String(deep.clone()));
    }

    #[test]
    fn python_only_values_map_to_json() {
        let set = [HashableValue::I64(2), HashableValue::I64(1)]
            .into_iter()
            .collect();
        let mut map = BTreeMap::new();
        map.insert(HashableValue::I64(1), Value::Tuple(vec![Value::None]));
        map.insert(HashableValue::None, Value::Set(set));
        map.insert(
            HashableValue::Bytes(b"k".to_vec()),
            Value::Bytes(b"\xff\x00".to_vec()),
        );
        map.insert(HashableValue::String("f".into()), Value::F64(f64::NAN));
        assert_eq!(
            to_json(&Value::Dict(map)),
            "{\"null\":[1,2],\"1\":[null],\"aw==\":\"/wA=\",\"f\":null}"
        );
    }
}
