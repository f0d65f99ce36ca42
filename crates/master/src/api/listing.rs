//! A list's answer. With `limit` it is one page, and `meta.total` the rows
//! up to its end (a lower bound when the page is full) unless `total=1`
//! asks for a count; without, it is every row, as Buildbot answers, read from the
//! store a page at a time and streamed, so memory stays flat whatever the
//! history holds. Lists ordered by their id alone page by keyset (the
//! next page starts after the last id sent), any other order by offset.

use std::future::Future;
use std::sync::Arc;

use axum::body::{Body, Bytes};
use axum::http::header;
use axum::response::{IntoResponse, Response};
use cascade_store::{ListQuery, MAX_LIMIT, Page};
use futures_util::StreamExt;
use serde_json::{Value, json};

use super::{meta, project};
use crate::error::HttpError;

/// Reads one page of a list as JSON objects.
pub(crate) trait Fetch: Send + Sync + 'static {
    /// The page `q` asks for.
    fn fetch(&self, q: ListQuery) -> impl Future<Output = Result<Page<Value>, HttpError>> + Send;
}

impl<F, Fut> Fetch for F
where
    F: Fn(ListQuery) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<Page<Value>, HttpError>> + Send,
{
    fn fetch(&self, q: ListQuery) -> impl Future<Output = Result<Page<Value>, HttpError>> + Send {
        self(q)
    }
}

/// What a list is called and how its rows are told apart.
#[derive(Clone, Copy)]
pub(crate) struct Named {
    /// The envelope's key (`builders`).
    pub name: &'static str,
    /// Each row's id field (`builderid`), the keyset.
    pub id_field: &'static str,
}

/// The answer to a list query `q`, keeping `fields` of each row.
pub(crate) async fn answer(
    what: Named,
    q: ListQuery,
    fields: Vec<String>,
    fetch: impl Fetch,
) -> Result<Response, HttpError> {
    if let Some(limit) = q.limit {
        let (offset, counted) = (q.offset.unwrap_or(0).max(0), !q.skip_count);
        let page = fetch.fetch(q).await?;
        // A list the store did not count has a total of its page's length;
        // lists kept in memory (the configuration's) count for free.
        let rows = page.items.len() as i64;
        let meta = if counted || page.total != rows { meta(page.total) } else { uncounted_meta(offset, rows, limit) };
        let body = json!({ what.name: project(page.items, &fields), "meta": meta });
        return Ok(axum::Json(body).into_response());
    }
    let keyset = cascade_store::keyset_order(&q.order, what.id_field);
    let first = ListQuery { limit: Some(MAX_LIMIT), skip_count: true, ..q.clone() };
    // The first page is read before answering, so a bad query is a 400.
    let items = fetch.fetch(first).await?.items;
    let walk = Walk { what, q, fields, keyset, fetch: Arc::new(fetch), sent: 0, offset: 0, last_id: None };
    Ok(walk.stream(items))
}

/// `meta` of a page that was not counted: the rows up to its end, flagged
/// as a lower bound (`total_capped`) when the page is full and more may follow.
fn uncounted_meta(offset: i64, rows: i64, limit: i64) -> Value {
    let total = offset + rows;
    if rows > 0 && rows >= limit.min(MAX_LIMIT) {
        json!({ "total": total, "total_capped": true })
    } else {
        json!({ "total": total })
    }
}

struct Walk<F> {
    what: Named,
    q: ListQuery,
    fields: Vec<String>,
    keyset: bool,
    fetch: Arc<F>,
    sent: i64,
    /// Rows read by offset so far, past the client's own `offset`.
    offset: i64,
    last_id: Option<i64>,
}

enum Step<F> {
    Rows(Box<Walk<F>>, Vec<Value>),
    Done,
}

impl<F: Fetch> Walk<F> {
    fn stream(self, first: Vec<Value>) -> Response {
        let head = Bytes::from(format!("{{{}:[", json!(self.what.name)));
        let pieces = futures_util::stream::unfold(Some(Step::Rows(Box::new(self), first)), |step| async move {
            match step? {
                Step::Done => None,
                Step::Rows(walk, rows) if rows.is_empty() => {
                    let tail = format!("],\"meta\":{}}}", json!({ "total": walk.sent }));
                    Some((Bytes::from(tail), Some(Step::Done)))
                }
                Step::Rows(mut walk, rows) => {
                    let piece = walk.piece(rows);
                    match walk.next_page().await {
                        Ok(next) => Some((piece, Some(Step::Rows(walk, next)))),
                        Err(e) => {
                            // The headers are sent: the client sees a cut body.
                            tracing::warn!(list = walk.what.name, error = %e.message(), "a streamed list failed");
                            Some((piece, None))
                        }
                    }
                }
            }
        });
        let body = futures_util::stream::once(async move { head }).chain(pieces).map(Ok::<_, std::io::Error>);
        ([(header::CONTENT_TYPE, "application/json")], Body::from_stream(body)).into_response()
    }

    /// `rows` as JSON text, after those sent before.
    fn piece(&mut self, rows: Vec<Value>) -> Bytes {
        let count = rows.len() as i64;
        self.offset += count;
        self.last_id = rows.last().and_then(|r| r.get(self.what.id_field)).and_then(Value::as_i64).or(self.last_id);
        let mut out = String::new();
        for row in project(rows, &self.fields) {
            if self.sent > 0 {
                out.push(',');
            }
            out.push_str(&row.to_string());
            self.sent += 1;
        }
        Bytes::from(out)
    }

    async fn next_page(&self) -> Result<Vec<Value>, HttpError> {
        if self.offset % MAX_LIMIT != 0 {
            return Ok(Vec::new()); // the last page was short: nothing follows
        }
        let mut q = ListQuery { limit: Some(MAX_LIMIT), skip_count: true, ..self.q.clone() };
        if self.keyset {
            let Some(last) = self.last_id else { return Ok(Vec::new()) };
            (q.after_id, q.offset) = (Some(last), None);
        } else {
            q.offset = Some(self.q.offset.unwrap_or(0) + self.offset);
        }
        Ok(self.fetch.fetch(q).await?.items)
    }
}

#[cfg(test)]
mod tests {
    use super::uncounted_meta;
    use serde_json::json;

    #[test]
    fn an_uncounted_page_says_how_many_rows_reach_its_end_and_whether_more_may_follow() {
        assert_eq!(uncounted_meta(0, 3, 50), json!({ "total": 3 }), "a short page is the last");
        assert_eq!(uncounted_meta(100, 50, 50), json!({ "total": 150, "total_capped": true }));
        assert_eq!(uncounted_meta(0, 1000, 5000), json!({ "total": 1000, "total_capped": true }), "limit over the cap");
        assert_eq!(uncounted_meta(40, 0, 50), json!({ "total": 40 }), "past the end");
    }
}
