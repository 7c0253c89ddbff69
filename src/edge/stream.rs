//! [edge] A relayed stream as the client receives it: the upstream's bytes through the pure
//! stream pipe (pass-through or translation), with an idle deadline between chunks and the
//! channel's total limit, ended with one error event in the client's format if the upstream
//! breaks, and reporting what it carried exactly once — at the end, or when the client goes
//! away.

use std::cell::{Cell, RefCell};
use std::pin::Pin;
use std::rc::Rc;
use std::task::{Context as TaskContext, Poll, Waker};

use futures::channel::oneshot;
use futures::stream::LocalBoxStream;
use futures::{FutureExt, Stream, StreamExt};
use worker::wasm_bindgen::closure::Closure;
use worker::wasm_bindgen::JsCast;
use worker::{AbortController, Headers, Response};

use super::http::error_response;
use super::relay::{put_cached, Ledger, RelayCtx};
use super::state::now_ms;
use crate::error::RelayError;
use crate::formats::client::ClientRequest;
use crate::formats::neutral::Usage;
use crate::formats::translate::StreamPipe;
use crate::ledger::response_cache;
use crate::ledger::row::loggable;
use crate::ledger::usage;

/// A timer for a stream body. workers-rs's `Delay` keeps the waker of its first poll only, but
/// a response stream is polled by a new task for every read the runtime makes: the first
/// task is gone by the time the timer fires, and nothing would wake the stream. This one wakes
/// whichever task polled it last.
struct StreamTimer {
    state: Rc<TimerState>,
    timeout_id: i32,
    _callback: Closure<dyn FnMut()>,
}

#[derive(Default)]
struct TimerState {
    fired: Cell<bool>,
    waker: RefCell<Option<Waker>>,
}

impl StreamTimer {
    fn new(ms: u64) -> StreamTimer {
        let state = Rc::new(TimerState::default());
        let for_callback = state.clone();
        let callback = Closure::wrap(Box::new(move || {
            for_callback.fired.set(true);
            if let Some(waker) = for_callback.waker.borrow_mut().take() {
                waker.wake();
            }
        }) as Box<dyn FnMut()>);
        let global: worker::web_sys::WorkerGlobalScope = worker::js_sys::global().unchecked_into();
        let timeout_id = global
            .set_timeout_with_callback_and_timeout_and_arguments_0(
                callback.as_ref().unchecked_ref(),
                i32::try_from(ms).unwrap_or(i32::MAX),
            )
            .unwrap_or(0);
        StreamTimer {
            state,
            timeout_id,
            _callback: callback,
        }
    }
}

impl std::future::Future for StreamTimer {
    type Output = ();

    fn poll(self: Pin<&mut Self>, cx: &mut TaskContext<'_>) -> Poll<()> {
        if self.state.fired.get() {
            return Poll::Ready(());
        }
        *self.state.waker.borrow_mut() = Some(cx.waker().clone());
        Poll::Pending
    }
}

impl Drop for StreamTimer {
    fn drop(&mut self) {
        let global: worker::web_sys::WorkerGlobalScope = worker::js_sys::global().unchecked_into();
        global.clear_timeout_with_handle(self.timeout_id);
    }
}

/// How a relayed stream ended, reported once to the usage writer.
pub(crate) struct StreamReport {
    usage: Option<Usage>,
    completion_bytes: usize,
    produced: bool,
    first_byte_ms: Option<i64>,
    broken: bool,
    /// What the client received (up to the cache's size limit), when it is to be cached or
    /// logged; the cache takes it only from a stream that completed.
    captured: Option<Vec<u8>>,
    /// The stream ended as the upstream finished it (not broken, not abandoned).
    completed: bool,
}

pub(crate) fn stream_response(
    upstream: LocalBoxStream<'static, Result<Vec<u8>, worker::Error>>,
    pipe: StreamPipe,
    client: &ClientRequest,
    abort: Option<(AbortController, u64, Option<i64>)>,
    rc: &RelayCtx<'_>,
    ledger: Ledger,
) -> Response {
    let (report_tx, report_rx) = oneshot::channel::<StreamReport>();
    let idle_ms = abort.as_ref().map(|(_, ms, _)| *ms);
    let total_until_ms = abort.as_ref().and_then(|(_, _, t)| *t);
    let first_wait = idle_ms
        .map(|ms| total_until_ms.map_or(ms, |t| ms.min(u64::try_from(t - now_ms()).unwrap_or(0))));
    let relayed = Relayed {
        upstream,
        pass: pipe,
        report: Some(report_tx),
        first_byte_ms: None,
        ended: false,
        broken: false,
        idle_ms,
        idle: first_wait.map(|ms| Box::pin(StreamTimer::new(ms))),
        total_until_ms,
        last_data_ms: now_ms(),
        abort: abort.map(|(c, _, _)| c),
        capture: (ledger.cache_fill.is_some() || ledger.log_bodies()).then(Vec::new),
    };
    let prompt_bytes = client.prompt_bytes();
    ledger.clone().record(rc, async move {
        let report = report_rx.await.ok()?;
        let logged = report
            .captured
            .as_deref()
            .filter(|_| ledger.log_bodies())
            .map(loggable);
        if let (Some((url, ttl_s)), Some(body), true) =
            (&ledger.cache_fill, report.captured, report.completed)
        {
            put_cached(url, *ttl_s, "text/event-stream; charset=utf-8", body).await;
        }
        let (usage, source) = usage::settle(
            report.usage,
            prompt_bytes,
            report.completion_bytes,
            report.produced,
        );
        let ttfb = report
            .first_byte_ms
            .map(|t| (t - ledger.draft.created_at).max(0));
        let (status, err) = if report.broken {
            (502, Some(RelayError::UpstreamStreamBroken))
        } else {
            (200, None)
        };
        let mut row = ledger.row(status, err.as_ref(), usage, source, ttfb, report.completed);
        if let Some(bodies) = row.bodies.as_mut() {
            bodies.response = logged;
        }
        Some(row)
    });
    let headers = Headers::new();
    let _ = headers.set("content-type", "text/event-stream; charset=utf-8");
    let _ = headers.set("cache-control", "no-cache");
    match Response::from_stream(relayed) {
        Ok(r) => r.with_headers(headers),
        Err(e) => error_response(&RelayError::Internal {
            detail: format!("stream response: {e}"),
        }),
    }
}

/// The upstream stream as the client receives it: passed through `StreamPassThrough`, with an
/// idle deadline between chunks, ended with an error event if the upstream breaks, and reporting
/// what it carried exactly once — at the end, or when dropped because the client went away.
struct Relayed {
    upstream: LocalBoxStream<'static, Result<Vec<u8>, worker::Error>>,
    pass: StreamPipe,
    report: Option<oneshot::Sender<StreamReport>>,
    first_byte_ms: Option<i64>,
    ended: bool,
    broken: bool,
    idle_ms: Option<u64>,
    /// Fires at the earliest moment the stream could have been idle for `idle_ms`; when it
    /// does, data that came meanwhile re-arms it for the rest (one timer per idle window,
    /// not one per chunk).
    idle: Option<Pin<Box<StreamTimer>>>,
    /// The channel's total time limit, as a moment.
    total_until_ms: Option<i64>,
    last_data_ms: i64,
    abort: Option<AbortController>,
    /// The stream as sent, when it is to be cached.
    capture: Option<Vec<u8>>,
}

impl Relayed {
    fn send_report(&mut self) {
        if let Some(tx) = self.report.take() {
            let _ = tx.send(StreamReport {
                usage: self.pass.usage(),
                completion_bytes: self.pass.completion_bytes(),
                produced: self.first_byte_ms.is_some(),
                first_byte_ms: self.first_byte_ms,
                broken: self.broken,
                captured: self.capture.take(),
                completed: self.ended && !self.broken,
            });
        }
    }

    /// Keep what the client receives, for the cache, while it stays under the size limit.
    fn capture_chunk(&mut self, chunk: &[u8]) {
        if let Some(buf) = self.capture.as_mut() {
            if buf.len() + chunk.len() > response_cache::MAX_CACHED_BYTES {
                self.capture = None;
            } else {
                buf.extend_from_slice(chunk);
            }
        }
    }

    /// End the client's stream with an OpenAI-shaped error event, the way OpenAI reports a
    /// failure after a stream has started.
    fn break_off(&mut self, why: &str) -> Vec<u8> {
        worker::console_warn!("stream broke: {}", why);
        self.broken = true;
        self.ended = true;
        if let Some(controller) = self.abort.take() {
            controller.abort();
        }
        let mut out = Vec::new();
        // An error the upstream sent in-stream has already reached the client in its format.
        if !self.pass.errored() {
            self.pass
                .break_off(&RelayError::UpstreamStreamBroken, &mut out);
        }
        self.send_report();
        out
    }
}

impl Stream for Relayed {
    type Item = Result<Vec<u8>, worker::Error>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut TaskContext<'_>) -> Poll<Option<Self::Item>> {
        let this = self.get_mut();
        loop {
            if this.ended {
                this.send_report();
                return Poll::Ready(None);
            }
            match this.upstream.poll_next_unpin(cx) {
                Poll::Ready(Some(Ok(bytes))) => {
                    let now = now_ms();
                    this.first_byte_ms.get_or_insert(now);
                    this.last_data_ms = now;
                    if this.total_until_ms.is_some_and(|t| now >= t) {
                        return Poll::Ready(Some(Ok(
                            this.break_off("the stream ran past the channel's total timeout")
                        )));
                    }
                    let mut out = Vec::new();
                    if let Err(e) = this.pass.push(&bytes, &mut out) {
                        return Poll::Ready(Some(Ok(this.break_off(&e.to_string()))));
                    }
                    if !out.is_empty() {
                        this.capture_chunk(&out);
                        return Poll::Ready(Some(Ok(out)));
                    }
                }
                Poll::Ready(Some(Err(e))) => {
                    return Poll::Ready(Some(Ok(this.break_off(&e.to_string()))))
                }
                Poll::Ready(None) => {
                    let mut out = Vec::new();
                    let finished = this.pass.finish(&mut out);
                    if finished.is_err() || !this.pass.completed() {
                        // The upstream closed without finishing (no `[DONE]`, no finish reason),
                        // or reported an error: it broke off, whatever it sent.
                        let mut tail = this.break_off("upstream closed the stream early");
                        out.append(&mut tail);
                        return Poll::Ready(Some(Ok(out)));
                    }
                    this.ended = true;
                    this.capture_chunk(&out);
                    this.send_report();
                    return Poll::Ready(if out.is_empty() { None } else { Some(Ok(out)) });
                }
                Poll::Pending => {
                    let (Some(idle_ms), Some(idle)) = (this.idle_ms, this.idle.as_mut()) else {
                        return Poll::Pending;
                    };
                    if idle.poll_unpin(cx).is_pending() {
                        return Poll::Pending;
                    }
                    let now = now_ms();
                    let quiet_ms = u64::try_from(now - this.last_data_ms).unwrap_or(0);
                    if quiet_ms >= idle_ms {
                        return Poll::Ready(Some(Ok(
                            this.break_off("no data from the upstream within the channel timeout")
                        )));
                    }
                    let total_left = this
                        .total_until_ms
                        .map(|t| u64::try_from(t - now).unwrap_or(0));
                    if total_left == Some(0) {
                        return Poll::Ready(Some(Ok(
                            this.break_off("the stream ran past the channel's total timeout")
                        )));
                    }
                    let wait = total_left.map_or(idle_ms - quiet_ms, |t| t.min(idle_ms - quiet_ms));
                    let mut rearmed = Box::pin(StreamTimer::new(wait));
                    // Polled once so it holds this task's waker.
                    let _ = rearmed.poll_unpin(cx);
                    this.idle = Some(rearmed);
                    return Poll::Pending;
                }
            }
        }
    }
}

impl Drop for Relayed {
    fn drop(&mut self) {
        // The client went away mid-stream: still record what was produced.
        if let Some(controller) = self.abort.take() {
            if !self.ended {
                controller.abort();
            }
        }
        self.send_report();
    }
}
