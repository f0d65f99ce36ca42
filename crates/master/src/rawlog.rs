//! A log's whole text as one download, streamed piece by piece so memory
//! does not grow with the log (the API's `/raw` and the log page's).

use axum::body::{Body, Bytes};
use axum::http::header;
use axum::response::{IntoResponse, Response};
use cascade_store::{LogRecord, Store};

/// Lines read per piece.
const PIECE_LINES: i64 = 5_000;

/// The log as `text/plain`, a stdio log without its stream tags.
/// [`response`], to be shown in the browser rather than downloaded.
pub fn inline(store: &Store, log: &LogRecord) -> Response {
    let mut r = response(store, log);
    r.headers_mut().insert(header::CONTENT_DISPOSITION, axum::http::HeaderValue::from_static("inline"));
    r
}

pub fn response(store: &Store, log: &LogRecord) -> Response {
    let store = store.clone();
    let (total, stdio, log_id) = (log.num_lines, log.log_type == "s", log.logid);
    let pieces = futures_util::stream::unfold(0i64, move |first| {
        let store = store.clone();
        async move {
            if first >= total {
                return None;
            }
            let last = (first + PIECE_LINES - 1).min(total - 1);
            let piece = match store.log_lines(log_id, first, last).await {
                Ok(lines) => Ok::<_, std::io::Error>(Bytes::from(text(&lines, stdio))),
                Err(e) => Err(std::io::Error::other(e.to_string())),
            };
            Some((piece, last + 1))
        }
    });
    let filename = format!("log-{log_id}-{}.txt", log.slug);
    (
        [
            (header::CONTENT_TYPE, "text/plain; charset=utf-8".to_string()),
            (header::CONTENT_DISPOSITION, format!("attachment; filename=\"{filename}\"")),
        ],
        Body::from_stream(pieces),
    )
        .into_response()
}

/// Stored lines as text, one per line.
fn text(lines: &[String], stdio: bool) -> String {
    let mut out = String::new();
    for line in lines {
        out.push_str(if stdio { cascade_model::log::split(line).1 } else { line });
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    #[test]
    fn stdio_tags_go_other_logs_stay_whole() {
        let lines = vec!["hstart".to_string(), "oout".to_string(), "eerr".to_string()];
        assert_eq!(super::text(&lines, true), "start\nout\nerr\n");
        assert_eq!(super::text(&lines, false), "hstart\noout\neerr\n");
    }
}
