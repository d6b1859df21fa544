//! The live part of "your devices": `GET /sessions/live`, a server-sent-events stream that
//! stays open while the session lives and, when it ends anywhere (signed out from another
//! device, logged out in another tab, revoked by an admin, expired), sends one `ended` event
//! with the reason and closes. The page's script (`/static/devices.js`) then says so and goes
//! to the login page. Built on [`Session::ended`]; framework-free (each demo wraps the stream
//! in its own streaming body).

use std::convert::Infallible;
use std::time::Duration;

use cloakroom::session::{Ended, Session};
use futures_util::Stream;
use http::StatusCode;

use crate::app::AppState;
use crate::error::AppError;
use crate::reply::{Reply, json_error, with_type};

/// How often an idle stream sends a comment line, so proxies keep it open.
const KEEP_ALIVE: Duration = Duration::from_secs(15);

/// The script of the devices page.
pub const DEVICES_JS: &str = include_str!("../templates/devices.js");

/// `GET /static/devices.js`.
pub fn devices_js() -> Reply {
    with_type(
        StatusCode::OK,
        "text/javascript; charset=utf-8",
        DEVICES_JS.to_owned(),
    )
}

/// The headers of the stream's response (besides the security headers every answer gets).
pub const STREAM_HEADERS: [(&str, &str); 3] = [
    ("content-type", "text/event-stream"),
    ("cache-control", "no-store"),
    // nginx: do not buffer the stream.
    ("x-accel-buffering", "no"),
];

/// `GET /sessions/live`: the end signal of a logged-in session, or the answer for a request
/// without one (401: the script then goes to the login page).
pub async fn live(app: &AppState, session: &Session) -> Result<Result<Ended, Reply>, AppError> {
    if app.user_of(session).await?.is_none() {
        return Ok(Err(json_error(StatusCode::UNAUTHORIZED, "not logged in")));
    }
    Ok(Ok(session.ended().await?))
}

/// The event stream of an open devices page: `event: live` at once, a keep-alive comment
/// every 15 s, and `event: ended` (its data the reason) when `ended` fires, then the end.
pub fn events(ended: Ended) -> impl Stream<Item = Result<String, Infallible>> + Send + 'static {
    let start = "retry: 5000\nevent: live\ndata: open\n\n".to_owned();
    futures_util::stream::unfold(Some((ended, Some(start))), |state| async move {
        let (mut ended, first) = state?;
        if let Some(first) = first {
            return Some((Ok(first), Some((ended, None))));
        }
        tokio::select! {
            reason = &mut ended => {
                tracing::info!(%reason, "live devices page: session ended, stream closed");
                Some((Ok(format!("event: ended\ndata: {reason}\n\n")), None))
            }
            () = tokio::time::sleep(KEEP_ALIVE) => Some((Ok(": keep-alive\n\n".to_owned()), Some((ended, None)))),
        }
    })
}
