//! Work under way per user in this process: uploads and publishes hold memory and object-storage
//! requests for as long as a client takes, so one account may only have a few at once.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use crate::db::UserId;

/// Counts each user's uploads and publishes under way. An entry exists only while its user has
/// one under way, so the map never holds more users than there are open requests.
#[derive(Debug, Default)]
pub struct InFlight {
    counts: Mutex<HashMap<UserId, u32>>,
}

/// One unit of a user's allowance, given back when dropped.
#[derive(Debug)]
pub struct Slot {
    owner: Arc<InFlight>,
    user: UserId,
}

impl InFlight {
    /// Takes one of `user`'s `max` slots; None when all are taken.
    pub fn enter(self: &Arc<Self>, user: UserId, max: u32) -> Option<Slot> {
        let mut counts = self.counts.lock().ok()?;
        let count = counts.entry(user).or_insert(0);
        if *count >= max {
            return None;
        }
        *count += 1;
        Some(Slot {
            owner: self.clone(),
            user,
        })
    }

    /// How many of `user`'s slots are taken.
    pub fn taken(&self, user: UserId) -> u32 {
        self.counts
            .lock()
            .map(|counts| counts.get(&user).copied().unwrap_or(0))
            .unwrap_or(0)
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        if let Ok(mut counts) = self.owner.counts.lock()
            && let Some(count) = counts.get_mut(&self.user)
        {
            *count -= 1;
            if *count == 0 {
                counts.remove(&self.user);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slots_are_capped_per_user_and_given_back() {
        let in_flight = Arc::new(InFlight::default());
        let (a, b) = (UserId::new_random(), UserId::new_random());
        let first = in_flight.enter(a, 2).expect("first");
        let second = in_flight.enter(a, 2).expect("second");
        assert!(in_flight.enter(a, 2).is_none());
        assert!(
            in_flight.enter(b, 2).is_some(),
            "another user is not affected"
        );
        drop(first);
        let third = in_flight.enter(a, 2).expect("a slot came back");
        drop((second, third));
        assert_eq!(in_flight.taken(a), 0);
        assert!(in_flight.counts.lock().expect("lock").is_empty());
    }
}
