//! Resolutions without a task of their own ([`Forwarder::resolve_then`]):
//! the pooled socket's reader (or the timeout sweeper) runs each next step.
//! The query a step sends joins the thread's send batch when one is open
//! ([`crate::sys::outbox`]): a worker's misses, or a reader's retries,
//! leave in one `sendmmsg`.

use std::sync::atomic::Ordering;
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

use super::sock::{CallbackQuery, PoolSock};
use super::tcp::query_tcp;
use super::{merge_key, restore_question, AttemptError, Attempts, CaseCheck, Done, Forwarder, Judged, Question};
use crate::resolve::{Reply, ResolveError};

impl Forwarder {
    /// Resolves `question` and calls `done` with the result, without a task
    /// of its own: the pooled socket's reader task (or the timeout sweeper)
    /// runs each next step and finally `done`, so a forwarded query costs no
    /// task spawn, channel or timer. Same servers, order, timeouts, fallback,
    /// metrics and health record as [`Forwarder::resolve`]. `done` must not
    /// block: it runs on a reader task. Without a socket pool
    /// (`udp_sockets = 0`) this spawns a task that awaits `resolve`.
    pub fn resolve_then(&self, question: Box<[u8]>, dnssec_ok: bool, checking_disabled: bool, done: Done) {
        let key = merge_key(&question, dnssec_ok, checking_disabled);
        let Some(done) = self.join(&key, done) else { return };
        let me = self.me.clone();
        let done: Done = Box::new(move |r| {
            if let Some(f) = me.upgrade() {
                f.release(&key, &r);
            }
            done(r);
        });
        self.resolve_then_unmerged(question, dnssec_ok, checking_disabled, done);
    }
    /// [`Forwarder::resolve_then`] without joining.
    pub(super) fn resolve_then_unmerged(&self, question: Box<[u8]>, dnssec_ok: bool, checking_disabled: bool, done: Done) {
        if self.servers.is_empty() {
            self.note_health(false);
            return done(Err(ResolveError::NoServers));
        }
        if self.pools.len() != self.servers.len() {
            let Some(me) = self.me.upgrade() else { return done(Err(ResolveError::NoServers)) };
            tokio::spawn(async move {
                let q = Question { wire: &question, dnssec_ok, checking_disabled };
                done(me.resolve_unmerged(&q).await);
            });
            return;
        }
        let Ok(permit) = self.inflight.try_acquire() else {
            self.note_health(false);
            return done(Err(ResolveError::Busy));
        };
        permit.forget(); // given back in `finish`
        self.start_sweeper();
        let now = Instant::now();
        let (question, original, case) = match self.sent_question(&question) {
            Some(sent) => (sent, Some(question), CaseCheck::Exact),
            None => (question, None, CaseCheck::Loose),
        };
        let cq = Box::new(CallbackQuery {
            question,
            original,
            case,
            wrong_case: false,
            dnssec_ok,
            checking_disabled,
            attempts: Attempts::new(self, now),
            server: 0,
            started: now,
            until: now,
            fallback: None,
            done,
        });
        self.try_next(cq, now);
    }
    /// Sends `cq` to the next server its plan allows, or finishes it.
    pub(super) fn try_next(&self, mut cq: Box<CallbackQuery>, now: Instant) {
        while let Some((i, until)) = cq.attempts.next(now, cq.fallback.is_some()) {
            let Some(pool) = self.pools.get(i) else { continue };
            cq.server = i;
            cq.started = now;
            cq.until = until;
            match pool.send_callback(cq, self.me.clone()) {
                Ok(()) => return,
                Err((back, e)) => {
                    cq = back;
                    let _ = self.judge(i, Err(e), now);
                }
            }
        }
        self.finish(cq, None);
    }
    /// One attempt of `cq` ended with `result`: done, or on to the next server.
    pub(super) fn on_attempt(&self, mut cq: Box<CallbackQuery>, result: Result<Reply, AttemptError>) {
        let result = match result {
            Err(AttemptError::Timeout) if std::mem::take(&mut cq.wrong_case) => {
                let server = self.servers.get(cq.server).copied();
                if let Some(server) = server {
                    self.case_strike(server);
                }
                if let Some(o) = cq.original.take() {
                    cq.question = o;
                }
                cq.case = CaseCheck::Loose;
                Err(AttemptError::WrongCase)
            }
            other => {
                cq.wrong_case = false;
                other
            }
        };
        match self.judge(cq.server, result, cq.started) {
            Judged::Answer(r) => self.finish(cq, Some(r)),
            Judged::Fallback(r) => {
                cq.fallback.get_or_insert(r);
                self.try_next(cq, Instant::now());
            }
            Judged::Failed => self.try_next(cq, Instant::now()),
        }
    }
    /// A matching UDP reply for `cq`; a truncated one is asked again over
    /// TCP in a task of its own.
    pub(super) fn on_reply(&self, cq: Box<CallbackQuery>, reply: Reply) {
        if !reply.scan.truncated {
            return self.on_attempt(cq, Ok(reply));
        }
        let (Some(me), Some(&server)) = (self.me.upgrade(), self.servers.get(cq.server)) else { return self.finish(cq, None) };
        tokio::spawn(async move {
            let q = Question { wire: &cq.question, dnssec_ok: cq.dnssec_ok, checking_disabled: cq.checking_disabled };
            let r = query_tcp(server, &q, cq.until).await;
            me.on_attempt(cq, r);
        });
    }
    pub(super) fn finish(&self, cq: Box<CallbackQuery>, answer: Option<Reply>) {
        self.inflight.add_permits(1);
        let CallbackQuery { fallback, done, original, .. } = *cq;
        let r = answer.or(fallback).ok_or(ResolveError::Timeout(self.timeout));
        let r = match original {
            Some(o) => r.map(|reply| restore_question(reply, &o)),
            None => r,
        };
        self.note_health(r.is_ok());
        done(r);
    }
    /// Starts (once) the task that ends timed-out callback attempts: every
    /// tick (a twentieth of the timeout, 5–50 ms) it takes those whose
    /// attempt deadline passed out of every pooled socket's table.
    pub(super) fn start_sweeper(&self) {
        if self.sweeper.swap(true, Ordering::Relaxed) {
            return;
        }
        let me = self.me.clone();
        let tick = (self.timeout / 20).clamp(Duration::from_millis(5), Duration::from_millis(50));
        tokio::spawn(async move {
            let mut every = tokio::time::interval(tick);
            every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
            loop {
                every.tick().await;
                let Some(f) = me.upgrade() else { return };
                let now = Instant::now();
                for pool in &f.pools {
                    let retired: Vec<Arc<PoolSock>> =
                        pool.retired.lock().map(|r| r.iter().filter_map(Weak::upgrade).collect()).unwrap_or_default();
                    for ps in pool.slots.iter().filter_map(|s| s.load_full()).chain(retired) {
                        for cq in ps.take_callbacks(|cq| cq.until <= now) {
                            f.on_attempt(cq, Err(AttemptError::Timeout));
                        }
                    }
                }
            }
        });
    }
}
