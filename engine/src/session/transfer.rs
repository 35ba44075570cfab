//! The transfer: batches sent within the window and acknowledged after
//! they are applied, End, completion, failure and the ledger entry, and
//! the retransmission of whatever the peer may still be waiting for.

use crate::ledger::LedgerEntry;
use crate::store::ApplyError;
use crate::wire::{self, Batch, Message};

use super::{Direction, Env, Event, Session, SessionError, Stage, prepare_batch};

impl Session {
    // -- transfer -----------------------------------------------------------

    /// Sends batches until the window is full, preparing each that is
    /// not prepared yet; sends `End` once everything is acknowledged.
    pub(super) fn fill_window(&mut self, env: &Env<'_>) -> Result<(), SessionError> {
        let mut frames = Vec::new();
        {
            let Some(out) = &mut self.out else { return Ok(()) };
            if !out.planned {
                // The peer's frontier has not arrived: nothing to send yet.
                return Ok(());
            }
            let window = self.config.window.clamp(1, crate::limits::WINDOW_MAX);
            while out.inflight.len() < window {
                if out.prepared.is_none() && !out.exhausted {
                    prepare_batch(out, &self.config, env).map_err(SessionError::Store)?;
                }
                let Some((frame, changes, bytes)) = out.prepared.take() else { break };
                let seq = out.next_seq;
                out.next_seq += 1;
                out.inflight.push_back((seq, frame.clone(), changes, bytes));
                self.report.sent += changes;
                if out.prepared_records.is_empty() {
                    self.moved.beyond += changes;
                }
                for key in out.prepared_records.drain(..) {
                    self.moved.add(true, &key);
                }
                out.name_records = !self.moved.is_full();
                frames.push(frame);
            }
            if out.inflight.is_empty() && out.prepared.is_none() && out.exhausted && out.end_frame.is_none() {
                let frame = wire::encode_message(&Message::End { batches: out.next_seq });
                out.end_frame = Some(frame.clone());
                frames.push(frame);
            }
        }
        for frame in frames {
            self.send(frame);
        }
        Ok(())
    }

    pub(super) fn on_ack(&mut self, seq: u64, rejected: u64, _now_ms: u64, env: &Env<'_>) -> Result<(), SessionError> {
        let Some(out) = &mut self.out else {
            return Err(SessionError::Protocol("Ack for a direction that is not sending".into()));
        };
        // The receiver applies batches in order, so an ack covers every
        // batch up to its own (an earlier ack may have been lost).
        match out.inflight.iter().position(|(s, ..)| *s == seq) {
            Some(last) => {
                self.report.rejected_by_peer += rejected;
                for (_, _, changes, bytes) in out.inflight.drain(..=last) {
                    out.changes_done += changes;
                    out.bytes_done += bytes;
                }
                self.events.push_back(Event::Progress {
                    direction: Direction::Outgoing,
                    changes_done: out.changes_done,
                    changes_total: out.plan.changes.max(out.changes_done),
                    bytes_done: out.bytes_done,
                    bytes_total: out.plan.bytes.max(out.bytes_done),
                });
                self.fill_window(env)?;
            }
            None => {
                // An old ack: our End (or the batch after it) may have been
                // lost; say it again.
                if let Some(end) = out.end_frame.clone() {
                    self.send(end);
                }
            }
        }
        Ok(())
    }

    pub(super) fn on_batch(
        &mut self,
        batch: Batch,
        frame_len: u64,
        now_ms: u64,
        env: &Env<'_>,
    ) -> Result<(), SessionError> {
        if !self.heads_exchanged {
            return Err(SessionError::Protocol("Batch before the frontiers were exchanged".into()));
        }
        let Some(inc) = &mut self.inc else {
            return Err(SessionError::Protocol("Batch for a direction that is not receiving".into()));
        };
        if batch.seq < inc.expected_seq {
            // A resend of what we applied: acknowledge again.
            let ack = wire::encode_message(&Message::Ack { seq: batch.seq, rejected: 0 });
            self.send(ack);
            return Ok(());
        }
        if batch.seq > inc.expected_seq && batch.seq < inc.expected_seq + crate::limits::WINDOW_MAX as u64 {
            // Within the window, but an earlier batch is missing (lost or
            // overtaken): drop this one; the sender resends both.
            return Ok(());
        }
        if batch.seq > inc.expected_seq {
            return Err(SessionError::Protocol(format!(
                "batch {} arrived before batch {}",
                batch.seq, inc.expected_seq
            )));
        }
        inc.plan = batch.plan;
        let (seq, count) = (batch.seq, batch.groups.iter().map(|g| g.changes.len() as u64).sum::<u64>());
        if self.moved.is_full() {
            self.moved.beyond += count;
        } else {
            for group in &batch.groups {
                for change in &group.changes {
                    let key = crate::change::RecordKey {
                        partition: group.partition.clone(),
                        record_type: group.record_type.clone(),
                        id: change.id.clone(),
                    };
                    self.moved.add(false, &key);
                }
            }
        }
        let applied = env
            .store
            .apply_batch(batch, &inc.region, &mut inc.positions, env.auth, env.verifier, now_ms)
            .map_err(|e| match e {
                ApplyError::Gap { .. } => SessionError::Protocol(e.to_string()),
                ApplyError::Store(e) => SessionError::Store(e.to_string()),
            })?;
        inc.expected_seq += 1;
        inc.changes_done += count;
        // Sizes are announced uncompressed; count this side the same way.
        let _ = frame_len;
        inc.bytes_done =
            (inc.plan.bytes * inc.changes_done.min(inc.plan.changes)).checked_div(inc.plan.changes).unwrap_or(0);
        let rejected = applied.rejected;
        self.report.absorb(applied);
        self.events.push_back(Event::Progress {
            direction: Direction::Incoming,
            changes_done: inc.changes_done,
            changes_total: inc.plan.changes.max(inc.changes_done),
            bytes_done: inc.bytes_done,
            bytes_total: inc.plan.bytes.max(inc.bytes_done),
        });
        let ack = wire::encode_message(&Message::Ack { seq, rejected });
        inc.last_ack = Some(ack.clone());
        self.send(ack);
        Ok(())
    }

    pub(super) fn on_end(&mut self, batches: u64) -> Result<(), SessionError> {
        let Some(inc) = &mut self.inc else {
            return Err(SessionError::Protocol("End for a direction that is not receiving".into()));
        };
        if batches > inc.expected_seq {
            return Err(SessionError::Protocol(format!(
                "End after {batches} batches, but only {} arrived",
                inc.expected_seq
            )));
        }
        inc.ended = true;
        Ok(())
    }

    // -- completion ---------------------------------------------------------

    pub(super) fn check_complete(&mut self, now_ms: u64, env: &Env<'_>) {
        if self.stage != Stage::Transfer {
            return;
        }
        // Until the frontiers are exchanged (or the no-op is agreed), the
        // directions are not settled.
        if !self.report.noop && !self.heads_exchanged {
            return;
        }
        let out_done = self.out.as_ref().is_none_or(|o| o.end_frame.is_some());
        let in_done = self.inc.as_ref().is_none_or(|i| i.ended);
        if out_done && in_done {
            if let Some(out) = self.out.as_ref().filter(|o| o.planned) {
                // Every batch was acknowledged after the peer applied it.
                let mut held = out.theirs.clone();
                if self.report.rejected_by_peer == 0 {
                    for (triple, last) in &out.sent {
                        let at = held.entry(triple.clone()).or_default();
                        *at = (*at).max(*last);
                    }
                }
                self.peer_holds = Some(held);
            }
            self.stage = Stage::Completed;
            self.report.duration_ms = now_ms.saturating_sub(self.config.started_at_ms);
            self.write_ledger(None, env);
            self.events.push_back(Event::Completed(self.report.clone()));
        }
    }

    pub(super) fn fail(&mut self, error: SessionError, now_ms: u64, env: &Env<'_>, tell_peer: bool) {
        if self.is_finished() {
            return;
        }
        if tell_peer {
            self.send(wire::encode_message(&Message::Abort { reason: error.to_string() }));
        }
        self.stage = Stage::Failed;
        self.report.duration_ms = now_ms.saturating_sub(self.config.started_at_ms);
        self.write_ledger(Some(&error), env);
        self.events.push_back(Event::Failed { error, report: self.report.clone() });
    }

    pub(super) fn write_ledger(&mut self, error: Option<&SessionError>, env: &Env<'_>) {
        if self.ledger_written {
            return;
        }
        self.ledger_written = true;
        let entry = LedgerEntry {
            session: partitions::hex::encode(&self.config.session),
            peer: partitions::hex::encode(&self.config.peer.0),
            via: "network".into(),
            started_at_ms: self.config.started_at_ms,
            outcome: match error {
                None if self.report.noop => "no-op".into(),
                None => "completed".into(),
                Some(e) => format!("failed: {e}"),
            },
            filter: self.filter.to_string(),
            pull: self.config.pull,
            push: self.config.push,
            report: self.report.clone(),
            blobs: Default::default(),
            records: self.moved.list.clone(),
            records_beyond: self.moved.beyond,
            purged: 0,
        };
        // A ledger that cannot be written must not hide the session's own
        // outcome; the failure shows in the next store operation anyway.
        let _ = env.store.record_session(&entry);
    }

    // -- sending ------------------------------------------------------------

    pub(super) fn send(&mut self, frame: Vec<u8>) {
        self.report.bytes_sent += frame.len() as u64 + self.config.frame_overhead_bytes;
        self.report.messages_sent += 1;
        self.transmits.push_back(frame);
    }

    pub(super) fn resend_handshake(&mut self) {
        if let Some(frame) = self.handshake.clone() {
            self.send(frame);
        }
    }

    /// Resends everything the peer may still be waiting for.
    pub(super) fn retransmit(&mut self) {
        self.resend_handshake();
        if let Some(out) = &self.out {
            let frames: Vec<Vec<u8>> = out.inflight.iter().map(|(_, frame, ..)| frame.clone()).collect();
            let end = if frames.is_empty() { out.end_frame.clone() } else { None };
            for frame in frames.into_iter().chain(end) {
                self.send(frame);
            }
        }
        if let Some(ack) = self.inc.as_ref().and_then(|i| i.last_ack.clone()) {
            self.send(ack);
        }
    }
}
