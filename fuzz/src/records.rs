//! The `records` target: the file backend's `mode.json` and the lines of
//! `history.jsonl`, read through the backend as `status` and `history` do.
//! The first byte picks which file the rest of the input becomes.
//!
//! Holds: reading never panics; a record or entry that parses writes back
//! as JSON that parses to the same value; the backend reads exactly the
//! history lines that parse on their own (every complete, non-blank line
//! is an entry or a skip naming it, the unfinished last one neither); a
//! `mode.json` that does not parse is an error naming the file, one that
//! does is read.

use std::path::Path;
use std::sync::OnceLock;

use maintenance_core::backend::Backend;
use maintenance_core::history::{HistoryEntry, HistoryQuery};
use maintenance_core::{Config, FileBackend, ModeRecord, ModeView, SystemClock};

/// The state directory and its backend, one per process.
fn backend() -> &'static (tempfile::TempDir, FileBackend) {
    static B: OnceLock<(tempfile::TempDir, FileBackend)> = OnceLock::new();
    B.get_or_init(|| {
        let dir = tempfile::tempdir().expect("a temporary directory");
        let state = dir.path().join("state");
        let backend = FileBackend::open(&Config::with_state_dir(&state), SystemClock::shared())
            .expect("a fresh state directory opens");
        (dir, backend)
    })
}

/// Replaces `name` in the state directory whole, by rename, as the
/// backend itself writes.
fn replace(state: &Path, name: &str, bytes: &[u8]) {
    let tmp = state.join(format!(".{name}.fuzz"));
    std::fs::write(&tmp, bytes).expect("write the file under test");
    std::fs::rename(&tmp, state.join(name)).expect("rename it into place");
}

/// The check.
pub fn check(data: &[u8]) {
    let Some((&which, rest)) = data.split_first() else {
        return;
    };
    if which % 2 == 0 {
        check_mode(rest);
    } else {
        check_history(rest);
    }
}

fn check_mode(bytes: &[u8]) {
    let direct = serde_json::from_slice::<ModeRecord>(bytes);
    if let Ok(record) = &direct {
        let json = serde_json::to_vec(record).expect("a record serialises");
        let back: ModeRecord = serde_json::from_slice(&json)
            .unwrap_or_else(|e| panic!("{record:?} written as {} fails: {e}", show(&json)));
        assert_eq!(&back, record, "written as {}", show(&json));
        let view = ModeView::of(record.clone());
        let _ = (
            view.writes_refused(),
            record.legacy_mode(),
            record.lapses_to(),
        );
    }
    // Larger than the backend reads (64 KiB): refused unread.
    if bytes.len() > 60 * 1024 {
        return;
    }
    let (dir, backend) = backend();
    let state = dir.path().join("state");
    replace(&state, "mode.json", bytes);
    match (backend.mode(), &direct) {
        (Ok(_), Ok(_)) => {}
        (Err(e), Err(_)) => {
            let message = e.to_string();
            assert!(message.contains("mode.json"), "{message}");
        }
        (Ok(view), Err(e)) => panic!("a record that does not parse ({e}) was read as {view:?}"),
        (Err(e), Ok(r)) => panic!("a record that parses ({r:?}) was refused: {e}"),
    }
}

fn check_history(bytes: &[u8]) {
    let (dir, backend) = backend();
    let state = dir.path().join("state");
    replace(&state, "history.jsonl", bytes);
    let read = backend
        .history(&HistoryQuery::default())
        .expect("a history file is read, whatever it holds");
    let mut complete: Vec<&[u8]> = bytes.split(|b| *b == b'\n').collect();
    complete.pop(); // no newline yet: an append under way
    complete.retain(|l| !l.iter().all(u8::is_ascii_whitespace));
    let expected: Vec<HistoryEntry> = complete
        .iter()
        .filter_map(|l| serde_json::from_slice(l).ok())
        .collect();
    assert_eq!(read.entries, expected);
    assert_eq!(read.entries.len() + read.skipped.len(), complete.len());
    for entry in &read.entries {
        let json = serde_json::to_vec(entry).expect("an entry serialises");
        let back: HistoryEntry = serde_json::from_slice(&json)
            .unwrap_or_else(|e| panic!("{entry:?} written as {} fails: {e}", show(&json)));
        assert_eq!(&back, entry, "written as {}", show(&json));
    }
}

fn show(json: &[u8]) -> String {
    String::from_utf8_lossy(json).into_owned()
}
