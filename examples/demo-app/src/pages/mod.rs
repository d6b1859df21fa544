//! The pages, framework-free: each takes what the framework extracted (the [`Visit`], a
//! parsed body or why it could not be parsed, the client's address) and answers a
//! [`Reply`](crate::reply::Reply). One file per area (`auth`, `account`, `notes`, `devices`,
//! `api`, `ops`).
//!
//! A session store failure becomes a 503, anything unexpected a logged 500 ([`AppError`]).
//! Bad input is answered here, with a 4xx page or JSON body, never a panic.
//!
//! [`AppError`]: crate::error::AppError
//! [`Visit`]: crate::app::Visit

mod account;
mod api;
mod auth;
mod devices;
mod notes;
mod ops;
mod words;

pub use account::{
    ConfirmForm, ConfirmQuery, NewPassword, PasswordOnly, api_confirm, api_revoke_others,
    change_password, confirm, confirm_form, delete_account, delete_form, password_form,
};
pub use api::{NewNote, api_add_note, api_csrf, api_me};
pub use auth::{
    Credentials, LoginHint, api_login, api_logout, login, login_form, logout, register,
    register_form,
};
pub use devices::{RevokeForm, revoke, revoke_others, sessions_page};
pub use notes::{DeleteNote, add_note_form, clear_notes_form, delete_note_form, home};
pub use ops::{
    APP_HTML, APP_JS, NOTES_JS, app_js, app_page, healthz, metrics, not_found, notes_js,
};

/// Session field with the user's notes (a `Vec<String>`).
const NOTES: &str = "notes";
/// Longest note, in characters.
const MAX_NOTE_CHARS: usize = 500;
/// Most notes kept; older ones are dropped (the session has a size limit).
const MAX_NOTES: usize = 50;
/// Longest user name, in characters.
const MAX_NAME_CHARS: usize = 64;
/// Password length bounds, in characters (the upper one bounds hashing work).
const MIN_PASSWORD_CHARS: usize = 8;
const MAX_PASSWORD_CHARS: usize = 1024;
