//! The history as the tests read it through the binary (`offline history
//! --json`), and readers of both kinds racing to notice a change nobody
//! lived to record.

use maintenance_core::history::HistoryEntry;

use crate::cli_site::CliSite;
use crate::process::Proc;

impl CliSite {
    /// `manage offline history --json -n N`, parsed (one entry a line),
    /// checked to exit 0 without warnings.
    pub fn history(&self, n: usize) -> Vec<HistoryEntry> {
        let out = self.run(&["offline", "history", "--json", "-n", &n.to_string()]);
        assert_eq!(out.code(), Some(0), "{out}");
        assert_eq!(out.stderr, "", "{out}");
        out.stdout
            .iter()
            .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not an entry ({e}): {l}")))
            .collect()
    }

    /// Starts `readers` processes at once, `offline status` and `offline
    /// history --json` by turns — each notices what nobody lived to record
    /// — and checks that every one exits 0 without warnings.
    pub fn notice_at_once(&self, readers: usize) {
        let readers: Vec<Proc> = (0..readers)
            .map(|i| {
                if i % 2 == 0 {
                    self.spawn(&["offline", "status"])
                } else {
                    self.spawn(&["offline", "history", "--json"])
                }
            })
            .collect();
        for r in readers {
            let out = r.finish();
            assert_eq!(out.code(), Some(0), "{out}");
            assert_eq!(out.stderr, "", "{out}");
        }
    }
}
