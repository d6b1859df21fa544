//! One-time notifications ("flash messages"): pushed by one request, shown by the next page
//! that takes them, then gone. They live in the session, so they survive a redirect.
//!
//! ```
//! # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
//! use cloakroom_core::flash::Level;
//! use cloakroom_core::{Key, KeyRing, MemoryStore, SessionSettings};
//! let engine = SessionSettings::new(MemoryStore::new(), KeyRing::single(Key::generate())).build();
//! let session = engine.session(None);
//! session.flash().push(Level::Success, "Note saved").await.unwrap();
//! let shown = session.flash().take().await.unwrap();
//! assert_eq!(shown[0].text, "Note saved");
//! assert!(session.flash().take().await.unwrap().is_empty());
//! # });
//! ```

use serde::{Deserialize, Serialize};

use crate::session::{Result, Session};

/// The session field that holds pending messages.
pub(crate) const SESSION_FIELD: &str = "__cr.flash";

impl Session {
    /// One-time notifications kept in this session.
    pub fn flash(&self) -> Flash<'_> {
        Flash::new(self)
    }
}

/// Most messages kept; older ones are dropped first (a loop cannot grow a session forever).
pub(crate) const MAX_MESSAGES: usize = 32;

/// How a message should look.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Level {
    /// Neutral information.
    Info,
    /// Something worked.
    Success,
    /// Something needs attention.
    Warning,
    /// Something failed.
    Error,
}

impl Level {
    /// The lower-case name (`info`, `success`, `warning`, `error`), handy as a CSS class.
    pub fn as_str(self) -> &'static str {
        match self {
            Level::Info => "info",
            Level::Success => "success",
            Level::Warning => "warning",
            Level::Error => "error",
        }
    }
}

/// One message.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Message {
    /// Its level.
    pub level: Level,
    /// Its text (plain text: escape it when rendering).
    pub text: String,
}

/// The flash messages of a session; see [`Session::flash`].
#[derive(Debug)]
pub struct Flash<'a> {
    session: &'a Session,
}

impl<'a> Flash<'a> {
    pub(crate) fn new(session: &'a Session) -> Self {
        Flash { session }
    }

    /// Adds a message, shown by the next [`Flash::take`]. Creates the session if needed.
    ///
    /// # Errors
    /// Session errors (store failure, committed response).
    pub async fn push(&self, level: Level, text: impl Into<String>) -> Result<()> {
        let mut messages = self.peek().await?;
        messages.push(Message {
            level,
            text: text.into(),
        });
        if messages.len() > MAX_MESSAGES {
            messages.drain(..messages.len() - MAX_MESSAGES);
        }
        let json = serde_json::to_string(&messages).expect("messages serialize");
        self.session.set_raw(SESSION_FIELD, json).await
    }

    /// The pending messages, oldest first, without removing them.
    ///
    /// # Errors
    /// Store failures.
    pub(crate) async fn peek(&self) -> Result<Vec<Message>> {
        Ok(self
            .session
            .get_raw(SESSION_FIELD)
            .await?
            .and_then(|json| serde_json::from_str(&json).ok())
            .unwrap_or_default())
    }

    /// Removes and returns the pending messages, oldest first: each is shown once.
    ///
    /// # Errors
    /// Session errors (store failure, committed response).
    pub async fn take(&self) -> Result<Vec<Message>> {
        let messages = self.peek().await?;
        if !messages.is_empty() {
            self.session.remove_raw(SESSION_FIELD).await?;
        }
        Ok(messages)
    }
}
