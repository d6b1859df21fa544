//! Checks run on a pickle before it is decoded: that it holds plain data only, and that
//! decoding it stays within bounds. Both walk the opcodes (named in [`op`]) without
//! building any value.

/// The pickle opcodes (Python's `pickletools`), protocols 0 to 5.
mod op {
    pub(super) const MARK: u8 = b'(';
    pub(super) const STOP: u8 = b'.';
    pub(super) const POP: u8 = b'0';
    pub(super) const POP_MARK: u8 = b'1';
    pub(super) const DUP: u8 = b'2';
    pub(super) const FLOAT: u8 = b'F';
    pub(super) const INT: u8 = b'I';
    pub(super) const BININT: u8 = b'J';
    pub(super) const BININT1: u8 = b'K';
    pub(super) const LONG: u8 = b'L';
    pub(super) const BININT2: u8 = b'M';
    pub(super) const NONE: u8 = b'N';
    pub(super) const REDUCE: u8 = b'R';
    pub(super) const STRING: u8 = b'S';
    pub(super) const BINSTRING: u8 = b'T';
    pub(super) const SHORT_BINSTRING: u8 = b'U';
    pub(super) const UNICODE: u8 = b'V';
    pub(super) const BINUNICODE: u8 = b'X';
    pub(super) const APPEND: u8 = b'a';
    pub(super) const BUILD: u8 = b'b';
    pub(super) const GLOBAL: u8 = b'c';
    pub(super) const DICT: u8 = b'd';
    pub(super) const EMPTY_DICT: u8 = b'}';
    pub(super) const APPENDS: u8 = b'e';
    pub(super) const GET: u8 = b'g';
    pub(super) const BINGET: u8 = b'h';
    pub(super) const INST: u8 = b'i';
    pub(super) const LONG_BINGET: u8 = b'j';
    pub(super) const LIST: u8 = b'l';
    pub(super) const EMPTY_LIST: u8 = b']';
    pub(super) const OBJ: u8 = b'o';
    pub(super) const PUT: u8 = b'p';
    pub(super) const BINPUT: u8 = b'q';
    pub(super) const LONG_BINPUT: u8 = b'r';
    pub(super) const SETITEM: u8 = b's';
    pub(super) const TUPLE: u8 = b't';
    pub(super) const EMPTY_TUPLE: u8 = b')';
    pub(super) const SETITEMS: u8 = b'u';
    pub(super) const BINFLOAT: u8 = b'G';
    pub(super) const PROTO: u8 = 0x80;
    pub(super) const NEWOBJ: u8 = 0x81;
    pub(super) const TUPLE1: u8 = 0x85;
    pub(super) const TUPLE2: u8 = 0x86;
    pub(super) const TUPLE3: u8 = 0x87;
    pub(super) const NEWTRUE: u8 = 0x88;
    pub(super) const NEWFALSE: u8 = 0x89;
    pub(super) const LONG1: u8 = 0x8a;
    pub(super) const LONG4: u8 = 0x8b;
    pub(super) const BINBYTES: u8 = b'B';
    pub(super) const SHORT_BINBYTES: u8 = b'C';
    pub(super) const SHORT_BINUNICODE: u8 = 0x8c;
    pub(super) const BINUNICODE8: u8 = 0x8d;
    pub(super) const BINBYTES8: u8 = 0x8e;
    pub(super) const EMPTY_SET: u8 = 0x8f;
    pub(super) const ADDITEMS: u8 = 0x90;
    pub(super) const FROZENSET: u8 = 0x91;
    pub(super) const NEWOBJ_EX: u8 = 0x92;
    pub(super) const STACK_GLOBAL: u8 = 0x93;
    pub(super) const MEMOIZE: u8 = 0x94;
    pub(super) const FRAME: u8 = 0x95;
    pub(super) const BYTEARRAY8: u8 = 0x96;
}

use op::*;

/// Reads a pickle's opcodes and their arguments; every read is `None` past the end.
struct Reader<'a> {
    bytes: &'a [u8],
    at: usize,
}

impl<'a> Reader<'a> {
    fn new(bytes: &'a [u8]) -> Self {
        Reader { bytes, at: 0 }
    }

    fn opcode(&mut self) -> Option<u8> {
        let op = *self.bytes.get(self.at)?;
        self.at += 1;
        Some(op)
    }

    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        let s = self.bytes.get(self.at..self.at.checked_add(n)?)?;
        self.at += n;
        Some(s)
    }

    /// An unsigned little-endian integer of `width` bytes.
    fn uint(&mut self, width: usize) -> Option<u64> {
        let b = self.take(width)?;
        Some(b.iter().rev().fold(0, |n, &x| (n << 8) | u64::from(x)))
    }

    /// The bytes up to the next newline (which is consumed).
    fn line(&mut self) -> Option<&'a [u8]> {
        let n = self
            .bytes
            .get(self.at..)?
            .iter()
            .position(|&b| b == b'\n')?;
        let s = &self.bytes[self.at..self.at + n];
        self.at += n + 1;
        Some(s)
    }

    /// A line holding a decimal number (text memo indexes, `FLOAT`).
    fn parsed_line<T: std::str::FromStr>(&mut self) -> Option<T> {
        std::str::from_utf8(self.line()?).ok()?.trim().parse().ok()
    }

    /// A length of `width` bytes, then that many bytes; the payload's length.
    fn counted(&mut self, width: usize) -> Option<usize> {
        let n = usize::try_from(self.uint(width)?).ok()?;
        self.take(n)?;
        Some(n)
    }
}

/// Width of the length prefix of the opcodes that carry counted bytes.
fn counted_width(op: u8) -> Option<usize> {
    match op {
        LONG1 | SHORT_BINSTRING | SHORT_BINUNICODE | SHORT_BINBYTES => Some(1),
        LONG4 | BINSTRING | BINUNICODE | BINBYTES => Some(4),
        BINUNICODE8 | BINBYTES8 | BYTEARRAY8 => Some(8),
        _ => None,
    }
}

/// Width of the fixed-size argument of the opcodes that carry one.
fn fixed_width(op: u8) -> Option<usize> {
    match op {
        BININT1 | BINGET | BINPUT | PROTO => Some(1),
        BININT2 => Some(2),
        BININT | LONG_BINGET | LONG_BINPUT => Some(4),
        BINFLOAT | FRAME => Some(8),
        _ => None,
    }
}

/// Whether a pickle holds plain data only: no class instances, persistent ids, extension
/// codes or out-of-band buffers. (`serde-pickle` reads an instance as its bare state, so a
/// store that rewrote such a session would silently drop the class; unknown globals it
/// reports itself.) `false` also for a stream this scanner cannot walk.
pub(crate) fn is_plain_data(pickle: &[u8]) -> bool {
    let mut r = Reader::new(pickle);
    let mut step = || -> Option<bool> {
        let op = r.opcode()?;
        if let Some(width) = counted_width(op) {
            r.counted(width)?;
        } else if let Some(width) = fixed_width(op) {
            r.take(width)?;
        } else {
            match op {
                STOP => return Some(true),
                MARK | POP | POP_MARK | DUP | NONE | NEWTRUE | NEWFALSE | EMPTY_DICT
                | EMPTY_LIST | EMPTY_TUPLE | TUPLE | TUPLE1 | TUPLE2 | TUPLE3 | APPEND
                | APPENDS | DICT | LIST | SETITEM | SETITEMS | EMPTY_SET | ADDITEMS | FROZENSET
                | MEMOIZE | REDUCE | STACK_GLOBAL => {}
                INT | LONG | FLOAT | STRING | UNICODE | GET | PUT => {
                    r.line()?;
                }
                // Module and name lines (serde-pickle refuses unknown ones).
                GLOBAL => {
                    r.line()?;
                    r.line()?;
                }
                // INST, OBJ, NEWOBJ, NEWOBJ_EX, BUILD, PERSID, BINPERSID, EXT1/2/4,
                // NEXT_BUFFER, READONLY_BUFFER, and anything unknown.
                _ => return None,
            }
        }
        Some(false)
    };
    loop {
        match step() {
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

/// Most entries on the modelled stack, and most objects modelled.
const MAX_STACK: usize = 1 << 20;
const MAX_OBJECTS: usize = 1 << 22;

/// Whether decoding `pickle` stays within bounds. A pickle can reference one object many
/// times (DUP, memo GET), and the decoder copies each reference: a hundred bytes of nested
/// duplicates decode to gigabytes (found by the `pickle_decode` fuzz target). This walks the
/// opcodes with a model of the pickle machine's stack and memo, adding up what the decoded
/// value would hold, and refuses before decoding when it would exceed the limits.
pub(crate) fn within_limits(pickle: &[u8]) -> bool {
    if pickle.len() > MAX_PICKLE_BYTES {
        return false;
    }
    Machine::default()
        .run(&mut Reader::new(pickle))
        .is_some_and(|units| units <= MAX_DECODED_UNITS)
}

/// An entry of the modelled stack: a mark, or an object (index into `sizes`).
#[derive(Clone, Copy)]
enum Slot {
    Mark,
    Obj(usize),
}

/// The pickle machine, modelled by sizes: each object is only the number of units its
/// decoded value would hold. Every method is `None` for a stream the real machine would
/// refuse, or one over the limits.
#[derive(Default)]
struct Machine {
    /// Per object: its decoded size so far.
    sizes: Vec<u64>,
    stack: Vec<Slot>,
    memo: std::collections::HashMap<u64, usize>,
}

impl Machine {
    /// Pushes a new object of `units`.
    fn push_new(&mut self, units: u64) -> Option<()> {
        if units > MAX_DECODED_UNITS {
            return None;
        }
        self.sizes.push(units);
        self.stack.push(Slot::Obj(self.sizes.len() - 1));
        Some(())
    }

    fn pop_obj(&mut self) -> Option<usize> {
        match self.stack.pop()? {
            Slot::Obj(o) => Some(o),
            Slot::Mark => None,
        }
    }

    /// The object on top of the stack, left there.
    fn top_obj(&self) -> Option<usize> {
        match *self.stack.last()? {
            Slot::Obj(o) => Some(o),
            Slot::Mark => None,
        }
    }

    /// Pops to the last mark; the total size of what was popped.
    fn pop_mark(&mut self) -> Option<u64> {
        let mut total = 0u64;
        loop {
            match self.stack.pop()? {
                Slot::Mark => return Some(total),
                Slot::Obj(o) => total = total.saturating_add(self.sizes[o]),
            }
        }
    }

    /// Adds `by` units to object `o`.
    fn grow(&mut self, o: usize, by: u64) -> Option<()> {
        self.sizes[o] = self.sizes[o].saturating_add(by);
        (self.sizes[o] <= MAX_DECODED_UNITS).then_some(())
    }

    /// Remembers the top object under memo index `idx`.
    fn memoize(&mut self, idx: u64) -> Option<()> {
        let o = self.top_obj()?;
        self.memo.insert(idx, o);
        Some(())
    }

    /// Runs to `STOP`: the decoded size of the result.
    fn run(&mut self, r: &mut Reader<'_>) -> Option<u64> {
        loop {
            let op = r.opcode()?;
            if op == STOP {
                let result = self.pop_obj()?;
                return Some(self.sizes[result]);
            }
            self.step(op, r)?;
            if self.stack.len() > MAX_STACK || self.sizes.len() > MAX_OBJECTS {
                return None;
            }
        }
    }

    fn step(&mut self, op: u8, r: &mut Reader<'_>) -> Option<()> {
        if let Some(width) = counted_width(op) {
            // Text and bytes: one unit plus one per byte.
            let n = r.counted(width)?;
            return self.push_new(1 + n as u64);
        }
        match op {
            PROTO => {
                r.take(1)?;
            }
            FRAME => {
                r.take(8)?;
            }
            MARK => self.stack.push(Slot::Mark),
            DUP => {
                let top = *self.stack.last()?;
                self.stack.push(top);
            }
            POP => {
                self.stack.pop()?;
            }
            POP_MARK => {
                self.pop_mark()?;
            }
            // Scalars.
            NONE | NEWTRUE | NEWFALSE => self.push_new(1)?,
            BININT1 | BININT2 | BININT => {
                r.take(fixed_width(op)?)?;
                self.push_new(1)?;
            }
            // NaN breaks the ordering of sets and dict keys in the decoder (a panic, found by
            // fuzzing); JSON cannot hold it either.
            BINFLOAT => {
                let f = f64::from_be_bytes(r.take(8)?.try_into().ok()?);
                if f.is_nan() {
                    return None;
                }
                self.push_new(1)?;
            }
            FLOAT => {
                let l = r.line()?;
                let f: f64 = std::str::from_utf8(l).ok()?.trim().parse().ok()?;
                if f.is_nan() {
                    return None;
                }
                self.push_new(1 + l.len() as u64)?;
            }
            INT | LONG | STRING | UNICODE => {
                let l = r.line()?;
                self.push_new(1 + l.len() as u64)?;
            }
            _ => self.build(op, r)?,
        }
        Some(())
    }

    /// The opcodes that build containers and objects, and the memo.
    fn build(&mut self, op: u8, r: &mut Reader<'_>) -> Option<()> {
        match op {
            EMPTY_DICT | EMPTY_LIST | EMPTY_TUPLE | EMPTY_SET => self.push_new(1)?,
            // Containers built from the stack.
            LIST | TUPLE | DICT | FROZENSET => {
                let total = self.pop_mark()?;
                self.push_new(1u64.saturating_add(total))?;
            }
            TUPLE1 | TUPLE2 | TUPLE3 => {
                let mut total = 1u64;
                for _ in 0..(op - TUPLE1 + 1) {
                    let o = self.pop_obj()?;
                    total = total.saturating_add(self.sizes[o]);
                }
                self.push_new(total)?;
            }
            // Adding to the container below.
            APPEND => {
                let item = self.pop_obj()?;
                let list = self.top_obj()?;
                self.grow(list, self.sizes[item])?;
            }
            SETITEM => {
                let v = self.pop_obj()?;
                let k = self.pop_obj()?;
                let dict = self.top_obj()?;
                self.grow(dict, self.sizes[k].saturating_add(self.sizes[v]))?;
            }
            APPENDS | SETITEMS | ADDITEMS => {
                let total = self.pop_mark()?;
                let target = self.top_obj()?;
                self.grow(target, total)?;
            }
            // Memo.
            PUT => {
                let idx = r.parsed_line()?;
                self.memoize(idx)?;
            }
            BINPUT | LONG_BINPUT => {
                let idx = r.uint(fixed_width(op)?)?;
                self.memoize(idx)?;
            }
            MEMOIZE => self.memoize(self.memo.len() as u64)?,
            GET | BINGET | LONG_BINGET => {
                let idx = if op == GET {
                    r.parsed_line()?
                } else {
                    r.uint(fixed_width(op)?)?
                };
                self.stack.push(Slot::Obj(*self.memo.get(&idx)?));
            }
            // Globals and object construction (decoded as stand-ins).
            GLOBAL => {
                r.line()?;
                r.line()?;
                self.push_new(1)?;
            }
            STACK_GLOBAL => {
                self.pop_obj()?;
                self.pop_obj()?;
                self.push_new(1)?;
            }
            REDUCE | NEWOBJ => {
                self.pop_obj()?;
                let f = self.pop_obj()?;
                self.stack.push(Slot::Obj(f));
            }
            NEWOBJ_EX => {
                self.pop_obj()?;
                self.pop_obj()?;
                let f = self.pop_obj()?;
                self.stack.push(Slot::Obj(f));
            }
            BUILD => {
                let state = self.pop_obj()?;
                let obj = self.top_obj()?;
                self.grow(obj, self.sizes[state])?;
            }
            INST => {
                r.line()?;
                r.line()?;
                let total = self.pop_mark()?;
                self.push_new(1u64.saturating_add(total))?;
            }
            OBJ => {
                let total = self.pop_mark()?;
                self.push_new(1u64.saturating_add(total))?;
            }
            _ => return None,
        }
        Some(())
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
