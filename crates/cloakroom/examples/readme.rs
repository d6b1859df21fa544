//! The README's usage example, compiled by `cargo test` so it stays true.
//!
//! Run: `CLOAKROOM_KEYS=$(cargo run -q -p cloakroom-cli -- keygen) cargo run -p cloakroom --example readme`

use axum::{
    Router,
    routing::{get, post},
};
use cloakroom::{CsrfLayer, CsrfToken, KeyRing, Session, SessionError, SessionLayer};

async fn hello(session: Session, csrf: CsrfToken) -> Result<String, SessionError> {
    let name: Option<String> = session.get("name").await?;
    Ok(format!(
        "Hello, {} {}",
        name.as_deref().unwrap_or("stranger"),
        csrf.form_field().await?
    ))
}

async fn login(session: Session) -> Result<&'static str, SessionError> {
    session.login("alice").await?; // new id, user index, fresh CSRF secret
    session.set("name", "Alice").await?;
    Ok("welcome")
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let store = cloakroom::store::open("sqlite://sessions.db").await?;
    let keys = KeyRing::from_base64_list(&std::env::var("CLOAKROOM_KEYS")?)?; // first signs, all verify
    let app = Router::new()
        .route("/", get(hello))
        .route("/login", post(login))
        .layer(CsrfLayer::new())
        .layer(SessionLayer::new(store, keys));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:3000").await?;
    axum::serve(listener, app).await?;
    Ok(())
}
