//! The turns running in this process: each one's events, kept so that a client can attach, go
//! away and attach again (`Last-Event-ID`), and a switch to stop it. A finished turn's events are
//! kept a little while for late readers; after that its durable state is in the database.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::{Notify, watch};
use uuid::Uuid;

/// How long a finished turn's events stay.
const KEEP_FINISHED: Duration = Duration::from_secs(120);

/// One event as sent: its sequence number, name and JSON data.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sent {
    pub id: u64,
    pub name: &'static str,
    /// Shared by every reader: a reader takes a reference, not a copy.
    pub data: Arc<str>,
}

#[derive(Debug, Default)]
struct Log {
    events: Vec<Sent>,
    finished: Option<Instant>,
}

/// One running (or just finished) turn.
#[derive(Debug)]
pub struct Channel {
    log: Mutex<Log>,
    wake: Notify,
    cancel: watch::Sender<bool>,
}

impl Channel {
    /// Appends an event.
    pub fn send(&self, name: &'static str, data: String) {
        if let Ok(mut log) = self.log.lock() {
            let id = log.events.len() as u64 + 1;
            log.events.push(Sent {
                id,
                name,
                data: data.into(),
            });
        }
        self.wake.notify_waiters();
    }

    /// No more events will come.
    pub fn finish(&self) {
        if let Ok(mut log) = self.log.lock() {
            log.finished = Some(Instant::now());
        }
        self.wake.notify_waiters();
    }

    /// Events after `after`, and whether the turn is over.
    pub fn after(&self, after: u64) -> (Vec<Sent>, bool) {
        match self.log.lock() {
            Ok(log) => (
                log.events.iter().skip(after as usize).cloned().collect(),
                log.finished.is_some(),
            ),
            Err(_) => (Vec::new(), true),
        }
    }

    /// Waits for events after `after` (or the end), and returns them.
    pub async fn wait_after(&self, after: u64) -> (Vec<Sent>, bool) {
        loop {
            let notified = self.wake.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            let (events, finished) = self.after(after);
            if !events.is_empty() || finished {
                return (events, finished);
            }
            notified.await;
        }
    }

    pub fn is_finished(&self) -> bool {
        self.log.lock().map_or(true, |log| log.finished.is_some())
    }

    /// Asks the turn to stop.
    pub fn cancel(&self) {
        let _ = self.cancel.send(true);
    }

    pub fn cancelled(&self) -> watch::Receiver<bool> {
        self.cancel.subscribe()
    }
}

impl Channel {
    /// A channel of no running turn, for replaying a turn's recorded start and end.
    pub fn closed() -> Self {
        let (cancel, _) = watch::channel(false);
        Channel {
            log: Mutex::new(Log::default()),
            wake: Notify::new(),
            cancel,
        }
    }
}

/// Every turn this process runs.
#[derive(Debug, Default)]
pub struct TurnHub {
    turns: Mutex<HashMap<Uuid, Arc<Channel>>>,
}

impl TurnHub {
    /// A channel for a new turn.
    pub fn open(&self, turn: Uuid) -> Arc<Channel> {
        let channel = Arc::new(Channel::closed());
        if let Ok(mut turns) = self.turns.lock() {
            let now = Instant::now();
            turns.retain(|_, c| {
                c.log
                    .lock()
                    .map(|l| {
                        l.finished
                            .is_none_or(|at| now.duration_since(at) < KEEP_FINISHED)
                    })
                    .unwrap_or(false)
            });
            turns.insert(turn, channel.clone());
        }
        channel
    }

    pub fn get(&self, turn: Uuid) -> Option<Arc<Channel>> {
        self.turns.lock().ok()?.get(&turn).cloned()
    }

    /// Turns still running here.
    fn running(&self) -> Vec<Arc<Channel>> {
        self.turns
            .lock()
            .map(|turns| {
                turns
                    .values()
                    .filter(|c| !c.is_finished())
                    .cloned()
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Waits up to `limit` for every running turn to end; whether they all did.
    pub async fn wait_idle(&self, limit: Duration) -> bool {
        let deadline = Instant::now() + limit;
        loop {
            if self.running().is_empty() {
                return true;
            }
            if Instant::now() >= deadline {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Stops every turn running here (at shutdown); each records itself as interrupted.
    pub fn cancel_all(&self) {
        for channel in self.running() {
            channel.cancel();
        }
    }

    /// Stops `turn` if it is running here; whether it was.
    pub fn cancel(&self, turn: Uuid) -> bool {
        match self.get(turn) {
            Some(channel) if !channel.is_finished() => {
                channel.cancel();
                true
            }
            _ => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn readers_attach_at_any_point_and_see_the_end() {
        let hub = TurnHub::default();
        let turn = Uuid::new_v4();
        let channel = hub.open(turn);
        channel.send("a", "1".into());
        let reader = {
            let channel = hub.get(turn).expect("open");
            tokio::spawn(async move {
                let mut seen = Vec::new();
                let mut after = 0;
                loop {
                    let (events, finished) = channel.wait_after(after).await;
                    after += events.len() as u64;
                    seen.extend(events.into_iter().map(|e| (e.id, e.name)));
                    if finished && channel.after(after).0.is_empty() {
                        return seen;
                    }
                }
            })
        };
        tokio::task::yield_now().await;
        channel.send("b", "2".into());
        channel.send("c", "3".into());
        channel.finish();
        let seen = reader.await.expect("reader");
        assert_eq!(seen, vec![(1, "a"), (2, "b"), (3, "c")]);
        // A late reader from event 2 gets the rest.
        let (rest, finished) = channel.after(2);
        assert!(finished);
        assert_eq!(rest.len(), 1);
        // A finished turn is not stopped again; a running one is.
        assert!(!hub.cancel(turn));
        let running = Uuid::new_v4();
        let cancelled = hub.open(running).cancelled();
        assert!(hub.cancel(running));
        assert!(*cancelled.borrow());
        assert!(!hub.cancel(Uuid::new_v4()));
    }
}
