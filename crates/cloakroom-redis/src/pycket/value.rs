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

/// Whether a pickle holds plain data only: no class instances, persistent ids, extension
/// codes or out-of-band buffers. (`serde-pickle` reads an instance as its bare state, so a
/// store that rewrote such a session would silently drop the class; unknown globals it
/// reports itself.) `false` also for a stream this scanner cannot walk.
pub(crate) fn is_plain_data(pickle: &[u8]) -> bool {
    let mut i = 0;
    let line = |i: &mut usize| -> Option<()> {
        let n = pickle.get(*i..)?.iter().position(|&b| b == b'\n')?;
        *i += n + 1;
        Some(())
    };
    let fixed = |i: &mut usize, n: usize| -> Option<()> {
        pickle.get(*i..*i + n)?;
        *i += n;
        Some(())
    };
    let counted = |i: &mut usize, width: usize| -> Option<()> {
        let len = pickle.get(*i..*i + width)?;
        let mut n: u64 = 0;
        for (shift, b) in len.iter().enumerate() {
            n |= u64::from(*b) << (8 * shift);
        }
        *i += width;
        let n = usize::try_from(n).ok()?;
        pickle.get(*i..i.checked_add(n)?)?;
        *i += n;
        Some(())
    };
    let step = |i: &mut usize| -> Option<bool> {
        let op = *pickle.get(*i)?;
        *i += 1;
        match op {
            // STOP
            b'.' => return Some(true),
            // No argument.
            b'(' | b'0' | b'1' | b'2' | b'N' | 0x88 | 0x89 | b'}' | b']' | b')' | b't' | 0x85
            | 0x86 | 0x87 | b'a' | b'e' | b'd' | b'l' | b's' | b'u' | 0x8f | 0x90 | 0x91 | 0x94
            | b'R' | 0x93 => {}
            // A text line: INT, LONG, FLOAT, STRING, UNICODE, GET, PUT.
            b'I' | b'L' | b'F' | b'S' | b'V' | b'g' | b'p' => line(i)?,
            // GLOBAL: module and name lines (serde-pickle refuses unknown ones).
            b'c' => {
                line(i)?;
                line(i)?;
            }
            b'K' | b'h' | b'q' | 0x80 => fixed(i, 1)?,
            b'M' => fixed(i, 2)?,
            b'J' | b'j' | b'r' => fixed(i, 4)?,
            b'G' | 0x95 => fixed(i, 8)?,
            // LONG1, SHORT_BINSTRING, SHORT_BINUNICODE, SHORT_BINBYTES.
            0x8a | b'U' | 0x8c | b'C' => counted(i, 1)?,
            // LONG4, BINSTRING, BINUNICODE, BINBYTES.
            0x8b | b'T' | b'X' | b'B' => counted(i, 4)?,
            // BINUNICODE8, BINBYTES8, BYTEARRAY8.
            0x8d | 0x8e | 0x96 => counted(i, 8)?,
            // INST, OBJ, NEWOBJ, NEWOBJ_EX, BUILD, PERSID, BINPERSID, EXT1/2/4,
            // NEXT_BUFFER, READONLY_BUFFER, and anything unknown.
            _ => return None,
        }
        Some(false)
    };
    loop {
        match step(&mut i) {
            Some(true) => return true,
            Some(false) => {}
            None => return false,
        }
    }
}

/// Largest pickle accepted, in bytes.
pub(crate) const MAX_PICKLE_BYTES: usize = 4 << 20;

/// Largest decoded size accepted, in "units" (one per value plus one per byte of text).
const MAX_DECODED_UNITS: u64 = 16 << 20;

/// Whether decoding `pickle` stays within bounds. A pickle can reference one object many
/// times (DUP, memo GET), and the decoder copies each reference: a hundred bytes of nested
/// duplicates decode to gigabytes (found by the `pickle_decode` fuzz target). This walks the
/// opcodes with a model of the pickle machine's stack and memo, adding up what the decoded
/// value would hold, and refuses before decoding when it would exceed the limits.
pub(crate) fn within_limits(pickle: &[u8]) -> bool {
    if pickle.len() > MAX_PICKLE_BYTES {
        return false;
    }
    bounded_size(pickle).is_some_and(|units| units <= MAX_DECODED_UNITS)
}

/// An entry of the modelled stack: a mark, or an object (index into `sizes`).
#[derive(Clone, Copy)]
enum Slot {
    Mark,
    Obj(usize),
}

fn bounded_size(p: &[u8]) -> Option<u64> {
    let mut sizes: Vec<u64> = Vec::new(); // per object: its decoded size so far
    let mut stack: Vec<Slot> = Vec::new();
    let mut memo: std::collections::HashMap<u64, usize> = std::collections::HashMap::new();
    let mut i = 0usize;
    let take = |i: &mut usize, n: usize| -> Option<&[u8]> {
        let s = p.get(*i..i.checked_add(n)?)?;
        *i += n;
        Some(s)
    };
    let le = |b: &[u8]| b.iter().rev().fold(0u64, |n, &x| (n << 8) | u64::from(x));
    let line = |i: &mut usize| -> Option<&[u8]> {
        let n = p.get(*i..)?.iter().position(|&b| b == b'\n')?;
        let s = &p[*i..*i + n];
        *i += n + 1;
        Some(s)
    };
    macro_rules! new {
        ($units:expr) => {{
            let u: u64 = $units;
            if u > MAX_DECODED_UNITS {
                return None;
            }
            sizes.push(u);
            stack.push(Slot::Obj(sizes.len() - 1));
        }};
    }
    macro_rules! pop_obj {
        () => {
            match stack.pop()? {
                Slot::Obj(o) => o,
                Slot::Mark => return None,
            }
        };
    }
    // Pops to the last mark; the total size of what was popped.
    macro_rules! pop_mark {
        () => {{
            let mut total = 0u64;
            loop {
                match stack.pop()? {
                    Slot::Mark => break,
                    Slot::Obj(o) => total = total.saturating_add(sizes[o]),
                }
            }
            total
        }};
    }
    macro_rules! grow {
        ($obj:expr, $by:expr) => {{
            let o = $obj;
            sizes[o] = sizes[o].saturating_add($by);
            if sizes[o] > MAX_DECODED_UNITS {
                return None;
            }
        }};
    }
    loop {
        let op = *p.get(i)?;
        i += 1;
        match op {
            b'.' => {
                return Some(match stack.pop()? {
                    Slot::Obj(o) => sizes[o],
                    Slot::Mark => return None,
                });
            }
            0x80 => {
                take(&mut i, 1)?;
            }
            0x95 => {
                take(&mut i, 8)?;
            }
            b'(' => stack.push(Slot::Mark),
            b'2' => {
                let top = *stack.last()?;
                stack.push(top);
            }
            b'0' => {
                stack.pop()?;
            }
            b'1' => {
                pop_mark!();
            }
            // Scalars.
            b'N' | 0x88 | 0x89 => new!(1),
            b'K' => {
                take(&mut i, 1)?;
                new!(1)
            }
            b'M' => {
                take(&mut i, 2)?;
                new!(1)
            }
            b'J' => {
                take(&mut i, 4)?;
                new!(1)
            }
            // NaN breaks the ordering of sets and dict keys in the decoder (a panic, found by
            // fuzzing); JSON cannot hold it either.
            b'G' => {
                let f = f64::from_be_bytes(take(&mut i, 8)?.try_into().ok()?);
                if f.is_nan() {
                    return None;
                }
                new!(1)
            }
            b'F' => {
                let l = line(&mut i)?;
                let f: f64 = std::str::from_utf8(l).ok()?.trim().parse().ok()?;
                if f.is_nan() {
                    return None;
                }
                new!(1 + l.len() as u64)
            }
            b'I' | b'L' => {
                let l = line(&mut i)?;
                new!(1 + l.len() as u64)
            }
            b'S' | b'V' => {
                let l = line(&mut i)?;
                new!(1 + l.len() as u64)
            }
            0x8a | b'U' | 0x8c | b'C' => {
                let n = le(take(&mut i, 1)?) as usize;
                take(&mut i, n)?;
                new!(1 + n as u64)
            }
            0x8b | b'T' | b'X' | b'B' => {
                let n = usize::try_from(le(take(&mut i, 4)?)).ok()?;
                take(&mut i, n)?;
                new!(1 + n as u64)
            }
            0x8d | 0x8e | 0x96 => {
                let n = usize::try_from(le(take(&mut i, 8)?)).ok()?;
                take(&mut i, n)?;
                new!(1 + n as u64)
            }
            // Empty containers.
            b'}' | b']' | b')' | 0x8f => new!(1),
            // Containers built from the stack.
            b'l' | b't' | b'd' | 0x91 => {
                let total = pop_mark!();
                new!(1u64.saturating_add(total))
            }
            0x85..=0x87 => {
                let n = (op - 0x84) as usize;
                let mut total = 1u64;
                for _ in 0..n {
                    total = total.saturating_add(sizes[pop_obj!()]);
                }
                new!(total)
            }
            // Adding to the container below.
            b'a' => {
                let item = pop_obj!();
                let list = match *stack.last()? {
                    Slot::Obj(o) => o,
                    Slot::Mark => return None,
                };
                grow!(list, sizes[item]);
            }
            b's' => {
                let v = pop_obj!();
                let k = pop_obj!();
                let dict = match *stack.last()? {
                    Slot::Obj(o) => o,
                    Slot::Mark => return None,
                };
                grow!(dict, sizes[k].saturating_add(sizes[v]));
            }
            b'e' | b'u' | 0x90 => {
                let total = pop_mark!();
                let target = match *stack.last()? {
                    Slot::Obj(o) => o,
                    Slot::Mark => return None,
                };
                grow!(target, total);
            }
            // Memo.
            b'p' => {
                let idx: u64 = std::str::from_utf8(line(&mut i)?)
                    .ok()?
                    .trim()
                    .parse()
                    .ok()?;
                let o = match *stack.last()? {
                    Slot::Obj(o) => o,
                    Slot::Mark => return None,
                };
                memo.insert(idx, o);
            }
            b'q' | b'r' => {
                let idx = le(take(&mut i, if op == b'q' { 1 } else { 4 })?);
                let o = match *stack.last()? {
                    Slot::Obj(o) => o,
                    Slot::Mark => return None,
                };
                memo.insert(idx, o);
            }
            0x94 => {
                let idx = memo.len() as u64;
                let o = match *stack.last()? {
                    Slot::Obj(o) => o,
                    Slot::Mark => return None,
                };
                memo.insert(idx, o);
            }
            b'g' | b'h' | b'j' => {
                let idx = if op == b'g' {
                    std::str::from_utf8(line(&mut i)?)
                        .ok()?
                        .trim()
                        .parse()
                        .ok()?
                } else {
                    le(take(&mut i, if op == b'h' { 1 } else { 4 })?)
                };
                stack.push(Slot::Obj(*memo.get(&idx)?));
            }
            // Globals and object construction (decoded as stand-ins).
            b'c' => {
                line(&mut i)?;
                line(&mut i)?;
                new!(1)
            }
            0x93 => {
                pop_obj!();
                pop_obj!();
                new!(1)
            }
            b'R' | 0x81 => {
                pop_obj!();
                let f = pop_obj!();
                stack.push(Slot::Obj(f));
            }
            0x92 => {
                pop_obj!();
                pop_obj!();
                let f = pop_obj!();
                stack.push(Slot::Obj(f));
            }
            b'b' => {
                let state = pop_obj!();
                let obj = match *stack.last()? {
                    Slot::Obj(o) => o,
                    Slot::Mark => return None,
                };
                grow!(obj, sizes[state]);
            }
            b'i' => {
                line(&mut i)?;
                line(&mut i)?;
                let total = pop_mark!();
                new!(1u64.saturating_add(total))
            }
            b'o' => {
                let total = pop_mark!();
                new!(1u64.saturating_add(total))
            }
            _ => return None,
        }
        if stack.len() > 1 << 20 || sizes.len() > 1 << 22 {
            return None;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn base64_decode(text: &str) -> Vec<u8> {
        use base64::Engine as _;
        base64::engine::general_purpose::STANDARD
            .decode(text)
            .unwrap()
    }

    /// Regression (fuzz finding, `pickle_decode`, oom-009ade13…): 104 bytes of nested DUPs
    /// and TUPLE3s decoded to over 2 GiB. Refused before decoding now.
    #[test]
    fn pickle_bombs_are_refused_before_decoding() {
        let bomb: &[u8] = &[
            143, 50, 50, 135, 50, 50, 50, 135, 50, 50, 50, 50, 135, 50, 50, 50, 135, 50, 50, 50,
            135, 50, 50, 50, 50, 135, 50, 50, 50, 135, 50, 50, 50, 50, 135, 50, 50, 50, 135, 50,
            50, 50, 135, 50, 50, 50, 50, 135, 50, 50, 50, 135, 50, 50, 50, 135, 50, 50, 135, 50,
            135, 50, 135, 50, 97, 135, 255, 255, 255, 0, 50, 50, 50, 50, 50, 135, 50, 50, 50, 135,
            50, 50, 50, 135, 50, 50, 135, 50, 135, 50, 135, 50, 97, 135, 255, 255, 255, 0, 50, 50,
            50, 50, 135, 50, 97,
        ];
        assert!(!within_limits(bomb));
        // A doubling list: x = []; x = [x, x] thirty times.
        let mut doubling = vec![0x80, 4, b']'];
        for _ in 0..30 {
            doubling.extend_from_slice(&[b'2', 0x86]);
        }
        doubling.push(b'.');
        assert!(!within_limits(&doubling));
        // Regression (fuzz finding, crash-a6401f26…): a NaN float inside a frozenset made the
        // decoder's sort panic ("comparison does not implement a total order").
        let nan_set = base64_decode(
            "KCkpKU0wTk5OMk5HR0dHR0dHR0dHhpEpTTB6Tk5OMk5HR0dHV0dHR0dH////////AZQyTpRLhpRHR0c/RUdHR0dH/////////wCUKZGULg==",
        );
        assert!(!within_limits(&nan_set));
        let mut float_nan = vec![0x80, 2, b'G'];
        float_nan.extend_from_slice(&f64::NAN.to_be_bytes());
        float_nan.push(b'.');
        assert!(!within_limits(&float_nan));
        assert!(!within_limits(b"Fnan\n."));
        assert!(within_limits(b"F1.5\n."));
        // Ordinary session pickles pass (Python's protocol 4 output for {'ID': 42}).
        let id42 = b"\x80\x04\x95\x0b\x00\x00\x00\x00\x00\x00\x00}\x94\x8c\x02ID\x94K*s.";
        assert!(within_limits(id42));
    }

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

    #[test]
    fn plain_pickles_are_told_from_objects() {
        // {'ID': 42}, protocol 4, as pycket writes it.
        let known = b"\x80\x04\x95\x0b\x00\x00\x00\x00\x00\x00\x00}\x94\x8c\x02ID\x94K*s.";
        assert!(is_plain_data(known));
        assert!(!is_plain_data(&known[..known.len() - 1]), "truncated");
        // An instance: NEWOBJ and BUILD.
        assert!(!is_plain_data(
            b"\x80\x04\x95\x00\x00\x00\x00\x00\x00\x00\x00\x8c\x01m\x8c\x01C\x93)\x81}b."
        ));
    }
}
