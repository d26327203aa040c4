//! A consumer group's durable position: low-water mark, settled offsets above it, and the
//! retry history of messages still pending. Saved as a small JSON snapshot (write to a temp
//! file, fsync, rename), every flush interval and on close.
//!
//! Losing the last interval of acks to a crash only causes redeliveries (at-least-once); it
//! never loses a message.

use std::collections::BTreeSet;
use std::fs;
use std::io::Write;
use std::path::Path;

use horizons_bus::Millis;
use serde::{Deserialize, Serialize};

use crate::error::LogError;

/// Retry history of one pending message.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Saved {
    /// Its offset.
    pub offset: u64,
    /// Deliveries made.
    pub attempts: u32,
    /// First handler error.
    pub first_error: Option<String>,
    /// Last handler error.
    pub last_error: Option<String>,
    /// Not to be delivered before (a pending retry).
    pub due: Option<Millis>,
}

/// The snapshot.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct GroupState {
    /// Every offset below this is settled.
    pub low_water: u64,
    /// Settled offsets at or above `low_water`.
    pub done: BTreeSet<u64>,
    /// Retry history of pending messages.
    pub saved: Vec<Saved>,
}

impl GroupState {
    /// Reads a snapshot; `None` if there is none.
    pub fn load(path: &Path) -> Result<Option<GroupState>, LogError> {
        match fs::read(path) {
            Ok(bytes) => serde_json::from_slice(&bytes).map(Some).map_err(|e| LogError::Corrupt {
                path: path.to_path_buf(),
                position: 0,
                reason: e.to_string(),
            }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(LogError::io("reading group state", path)(e)),
        }
    }

    /// Writes a snapshot atomically.
    pub fn save(&self, path: &Path) -> Result<(), LogError> {
        let tmp = path.with_extension("tmp");
        let bytes = serde_json::to_vec(self).expect("state serialises");
        let mut f = fs::File::create(&tmp).map_err(LogError::io("writing group state", &tmp))?;
        f.write_all(&bytes).map_err(LogError::io("writing group state", &tmp))?;
        f.sync_data().map_err(LogError::io("syncing group state", &tmp))?;
        fs::rename(&tmp, path).map_err(LogError::io("renaming group state", path))?;
        Ok(())
    }

    /// Marks `offset` settled and advances the low-water mark.
    pub fn settle(&mut self, offset: u64) {
        if offset < self.low_water {
            return;
        }
        if offset == self.low_water && self.done.is_empty() {
            // In-order acks, the common case, never touch the set.
            self.low_water += 1;
            return;
        }
        self.done.insert(offset);
        while self.done.first() == Some(&self.low_water) {
            self.done.pop_first();
            self.low_water += 1;
        }
    }

    /// Whether `offset` is settled.
    pub fn is_settled(&self, offset: u64) -> bool {
        offset < self.low_water || self.done.contains(&offset)
    }

    /// Forgets offsets below `start` (deleted by retention).
    pub fn skip_to(&mut self, start: u64) {
        if self.low_water < start {
            self.low_water = start;
            self.done = self.done.split_off(&start);
            while self.done.first() == Some(&self.low_water) {
                self.done.pop_first();
                self.low_water += 1;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn low_water_advances_over_contiguous_settles() {
        let mut s = GroupState::default();
        s.settle(1);
        s.settle(2);
        assert_eq!((s.low_water, s.done.len()), (0, 2));
        s.settle(0);
        assert_eq!((s.low_water, s.done.len()), (3, 0));
        s.settle(5);
        s.skip_to(4);
        assert_eq!((s.low_water, s.done.len()), (4, 1));
        s.settle(4);
        assert_eq!((s.low_water, s.done.len()), (6, 0));
        assert!(s.is_settled(5) && !s.is_settled(6));
    }

    #[test]
    fn save_and_load() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("g.state");
        assert_eq!(GroupState::load(&p).unwrap(), None);
        let mut s = GroupState { low_water: 7, ..Default::default() };
        s.settle(9);
        s.saved.push(Saved {
            offset: 8,
            attempts: 2,
            first_error: Some("a".into()),
            last_error: Some("b".into()),
            due: Some(5),
        });
        s.save(&p).unwrap();
        assert_eq!(GroupState::load(&p).unwrap(), Some(s));
        fs::write(&p, b"{not json").unwrap();
        let err = GroupState::load(&p).unwrap_err().to_string();
        assert!(err.contains("g.state"), "{err}");
    }
}
