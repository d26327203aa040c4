//! `GET /api/notifications/stream`: the caller's notifications as Server-Sent Events.
//!
//! The stream first sends the caller's unread notifications (or those after the
//! `Last-Event-ID` the browser resends on reconnect), then each new one as it is stored. "New"
//! is found by reading the table after the id last sent, woken either by the notify worker in
//! this process (a broadcast of user names) or, when the worker runs in another process, by a
//! one-second poll. Each event's `id` is the notification id, so reconnects resume exactly.

use std::collections::VecDeque;
use std::convert::Infallible;
use std::time::Duration;

use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::sse::{Event, KeepAlive, Sse};
use futures::Stream;
use horizons_comments::model::Notification;
use horizons_comments::Service;
use tokio::sync::broadcast;

use super::auth::Caller;
use crate::error::ApiError;
use crate::state::ApiState;

struct Feed {
    service: Service,
    user: String,
    last: String,
    pending: VecDeque<Notification>,
    live: broadcast::Receiver<String>,
    started: bool,
}

/// `GET /api/notifications/stream`
#[utoipa::path(get, path = "/api/notifications/stream", security(("bearer" = [])),
    params(("Last-Event-ID" = Option<String>, Header, description = "Resume after this notification id"),
        ("access_token" = Option<String>, Query, description = "The bearer token, for clients that cannot send headers (EventSource)")),
    responses((status = 200, description = "Server-Sent Events, `event: notification`, JSON data", content_type = "text/event-stream", body = String),
        (status = 401, body = super::routes::ErrorBody)))]
pub async fn stream(
    State(st): State<ApiState>,
    caller: Caller,
    headers: HeaderMap,
) -> Result<Sse<impl Stream<Item = Result<Event, Infallible>>>, ApiError> {
    let portal = st.portal.as_ref().ok_or_else(|| ApiError::Unavailable("the portal is not served here".into()))?;
    let resume = headers.get("last-event-id").and_then(|v| v.to_str().ok()).map(str::to_string);
    let mut pending = VecDeque::new();
    let last = match resume {
        Some(id) => id,
        None => {
            // Unread ones first, oldest first; then everything newer than the newest of them.
            let mut unread = portal.service.notifications(&caller.0.name, None, true, 100).await?;
            unread.reverse();
            let newest = portal.service.notifications(&caller.0.name, None, false, 1).await?;
            pending.extend(unread);
            newest.first().map(|n| n.id.clone()).unwrap_or_default()
        }
    };
    let feed = Feed {
        service: portal.service.clone(),
        user: caller.0.name,
        last,
        pending,
        live: portal.live.subscribe(),
        started: false,
    };
    let events = futures::stream::unfold(feed, |mut f| async move {
        loop {
            if let Some(n) = f.pending.pop_front() {
                let ev = Event::default().id(n.id.clone()).event("notification").json_data(&n).unwrap_or_default();
                return Some((Ok(ev), f));
            }
            if f.started {
                let wait = tokio::time::sleep(Duration::from_secs(1));
                tokio::pin!(wait);
                loop {
                    tokio::select! {
                        _ = &mut wait => break,
                        who = f.live.recv() => match who {
                            Ok(u) if u == f.user => break,
                            Ok(_) => continue,
                            Err(broadcast::error::RecvError::Lagged(_)) => break,
                            Err(broadcast::error::RecvError::Closed) => return None,
                        },
                    }
                }
            }
            f.started = true;
            match f.service.notifications_after(&f.user, &f.last).await {
                Ok(new) => {
                    if let Some(n) = new.last() {
                        f.last = n.id.clone();
                    }
                    f.pending.extend(new);
                }
                Err(e) => tracing::warn!(error = %e, "reading notifications for the SSE stream"),
            }
        }
    });
    Ok(Sse::new(events).keep_alive(KeepAlive::default()))
}
