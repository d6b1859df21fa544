//! pycket's pickled session dict <-> Cloakroom's [`Record`]: the Redis key of a session, the
//! reserved metadata entry, times read back from the TTL.

use super::*;

/// The fields of a pickled pycket session dict, as [`PycketStore`] reads them: JSON text per
/// `str` key, without `__cr.meta`.
///
/// # Errors
/// [`ErrorKind::Corrupt`] for bytes that are not a pickled dict.
pub fn fields_from_pickle(pickle: &[u8]) -> Result<Fields> {
    let stored = Stored::decode(pickle, false)?;
    let meta = stored.meta();
    Ok(stored.fields(&meta.json))
}

/// A pickle (protocol 3) of a dict holding the Python values of `fields` (JSON text per
/// key), as [`PycketStore`] writes session data (without its metadata).
///
/// # Errors
/// [`ErrorKind::Corrupt`] if the pickle cannot be made.
pub fn pickle_from_fields(fields: &Fields) -> Result<Vec<u8>> {
    let dict = fields
        .iter()
        .map(|(k, v)| (HashableValue::String(k.clone()), value::stand_in(v)))
        .collect();
    Stored { dict }.encode()
}

pub(super) fn corrupt(message: impl Into<std::borrow::Cow<'static, str>>) -> Error {
    Error::new(ErrorKind::Corrupt, message)
}

pub(super) fn config(message: impl Into<std::borrow::Cow<'static, str>>) -> Error {
    Error::new(ErrorKind::Config, message)
}

/// A session dict as pickled in Redis.
pub(super) struct Stored {
    pub(super) dict: BTreeMap<HashableValue, Value>,
}

/// What `__cr.meta` holds (every part optional: Tornado-made records have none).
#[derive(Default)]
pub(super) struct StoredMeta {
    pub(super) created: Option<i64>,
    pub(super) seen: Option<i64>,
    pub(super) exp: Option<i64>,
    pub(super) user: Option<String>,
    pub(super) user_agent: Option<String>,
    pub(super) remember: bool,
    /// Verbatim JSON texts of fields whose Python value does not reproduce them.
    pub(super) json: BTreeMap<String, String>,
}

pub(super) fn key(name: &str) -> HashableValue {
    HashableValue::String(name.to_owned())
}

/// serde-pickle's decoder, with a panic inside it (a bug of the decoder on hostile input)
/// turned into an error: a session store must never take the request down.
pub(super) fn decode_guarded(bytes: &[u8], options: DeOptions) -> serde_pickle::Result<Value> {
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        serde_pickle::value_from_slice(bytes, options)
    }))
    .unwrap_or_else(|_| {
        Err(serde_pickle::Error::Syntax(
            serde_pickle::ErrorCode::Structure("the pickle decoder failed on this input".into()),
        ))
    })
}

impl Stored {
    /// Decodes a pickled dict. `strict`: refuse what a rewrite would lose (class instances,
    /// unknown globals); otherwise those read as `None` or their bare state.
    pub(super) fn decode(bytes: &[u8], strict: bool) -> Result<Stored> {
        if !guard::within_limits(bytes) {
            return Err(corrupt(
                "the pycket session pickle is too large or too deeply self-referencing to decode \
                 safely (limits: 4 MiB pickled, 16 Mi values and bytes decoded)",
            ));
        }
        let options = DeOptions::new().decode_strings();
        let decoded = if strict {
            if !guard::is_plain_data(bytes) {
                return Err(corrupt(
                    "the pycket session holds Python objects other than plain data (e.g. class \
                     instances); Cloakroom will not rewrite it and lose them",
                ));
            }
            decode_guarded(bytes, options).map_err(|e| {
                corrupt(
                    "the pycket session holds values Cloakroom cannot rewrite without loss \
                     (e.g. a datetime); store plain values",
                )
                .with_source(e)
            })?
        } else {
            decode_guarded(
                bytes,
                options
                    .replace_unresolved_globals()
                    .replace_recursive_structures(),
            )
            .map_err(|e| corrupt("not a pickle").with_source(e))?
        };
        match decoded {
            Value::Dict(dict) => Ok(Stored { dict }),
            _ => Err(corrupt("the pickle is not a dict")),
        }
    }

    pub(super) fn encode(&self) -> Result<Vec<u8>> {
        // Protocol 3: what serde-pickle writes by default, read by every Python 3.
        serde_pickle::value_to_vec(&Value::Dict(self.dict.clone()), SerOptions::new())
            .map_err(|e| corrupt("cannot pickle the session").with_source(e))
    }

    pub(super) fn meta(&self) -> StoredMeta {
        let Some(Value::Dict(m)) = self.dict.get(&key(META_KEY)) else {
            return StoredMeta::default();
        };
        let int = |name: &str| match m.get(&key(name)) {
            Some(Value::I64(i)) => Some(*i),
            _ => None,
        };
        let text = |name: &str| match m.get(&key(name)) {
            Some(Value::String(s)) => Some(s.clone()),
            _ => None,
        };
        let json = match m.get(&key("json")) {
            Some(Value::Dict(j)) => j
                .iter()
                .filter_map(|(k, v)| match (k, v) {
                    (HashableValue::String(k), Value::String(v)) => Some((k.clone(), v.clone())),
                    _ => None,
                })
                .collect(),
            _ => BTreeMap::new(),
        };
        StoredMeta {
            created: int("created"),
            seen: int("seen"),
            exp: int("exp"),
            user: text("user"),
            user_agent: text("ua"),
            remember: matches!(m.get(&key("remember")), Some(Value::Bool(true))),
            json,
        }
    }

    /// The session fields (JSON text), `json` giving verbatim texts.
    pub(super) fn fields(&self, json: &BTreeMap<String, String>) -> Fields {
        self.dict
            .iter()
            .filter_map(|(k, v)| {
                let HashableValue::String(name) = k else {
                    return None;
                };
                if name == META_KEY || name == FLASH_FIELD {
                    return None;
                }
                let text = match json.get(name) {
                    Some(t) if value::stand_in(t) == *v => t.clone(),
                    _ => value::to_json(v),
                };
                Some((name.clone(), text))
            })
            .collect()
    }

    pub(super) fn set_field(
        &mut self,
        json: &mut BTreeMap<String, String>,
        name: &str,
        text: &str,
    ) {
        let v = value::stand_in(text);
        if value::to_json(&v) == text {
            json.remove(name);
        } else {
            json.insert(name.to_owned(), text.to_owned());
        }
        self.dict.insert(key(name), v);
    }

    pub(super) fn remove_field(&mut self, json: &mut BTreeMap<String, String>, name: &str) {
        self.dict.remove(&key(name));
        json.remove(name);
    }

    /// Writes `__cr.meta`.
    pub(super) fn set_meta(&mut self, meta: &Meta, mut json: BTreeMap<String, String>) {
        json.retain(|name, _| self.dict.contains_key(&key(name)));
        let opt = |s: &Option<String>| s.clone().map_or(Value::None, Value::String);
        let mut m = BTreeMap::new();
        m.insert(key("v"), Value::I64(1));
        m.insert(key("created"), Value::I64(meta.created_at.as_millis()));
        m.insert(key("seen"), Value::I64(meta.last_seen.as_millis()));
        m.insert(key("exp"), Value::I64(meta.expires_at.as_millis()));
        m.insert(key("user"), opt(&meta.user));
        m.insert(key("ua"), opt(&meta.user_agent));
        m.insert(key("remember"), Value::Bool(meta.remember));
        if !json.is_empty() {
            let j = json
                .into_iter()
                .map(|(k, v)| (HashableValue::String(k), Value::String(v)))
                .collect();
            m.insert(key("json"), Value::Dict(j));
        }
        self.dict.insert(key(META_KEY), Value::Dict(m));
    }

    /// A record's data and metadata as a session dict.
    pub(super) fn from_record(record: &Record) -> Result<Stored> {
        let mut stored = Stored {
            dict: BTreeMap::new(),
        };
        let mut json = BTreeMap::new();
        for (name, text) in &record.data {
            if name == FLASH_FIELD {
                continue;
            }
            check_field(name)?;
            stored.set_field(&mut json, name, text);
        }
        stored.set_meta(&record.meta, json);
        Ok(stored)
    }
}

pub(super) fn check_field(name: &str) -> Result<()> {
    if name == META_KEY {
        return Err(config(
            "the field name __cr.meta is reserved by the pycket store for its metadata",
        ));
    }
    Ok(())
}

/// The engine's view of a stored record's times and owner; see the module docs for the
/// rules on records written by Tornado.
pub(super) fn record_meta(stored: &StoredMeta, pttl: i64, now: Timestamp) -> Meta {
    let day = PYCKET_EXPIRE.as_millis() as i64;
    let ttl_exp = (pttl >= 0).then(|| now.as_millis() + pttl);
    let (expires_at, rewritten) = match (stored.exp, ttl_exp) {
        (Some(exp), Some(t)) if (t - exp).abs() <= TTL_TOLERANCE_MS => (exp, false),
        (Some(exp), None) => (exp, false),
        (_, Some(t)) => (t, true),
        (None, None) => (now.as_millis() + day, true),
    };
    // When pycket last wrote: its EXPIRE gives the key 24 hours.
    let pycket_write = ttl_exp.map_or(now.as_millis(), |t| (t - day).min(now.as_millis()));
    let last_seen = match stored.seen {
        Some(seen) if !rewritten => seen,
        Some(seen) => seen.max(pycket_write),
        None => pycket_write,
    };
    Meta {
        created_at: Timestamp::from_millis(stored.created.unwrap_or(last_seen)),
        last_seen: Timestamp::from_millis(last_seen),
        expires_at: Timestamp::from_millis(expires_at),
        user: stored.user.clone(),
        user_agent: stored.user_agent.clone(),
        remember: stored.remember,
    }
}
