//! What a command declares about itself: tracking, instances, maintenance and
//! drain. Recorded in every task file, so any reader — a stock `manage`
//! looking at a site binary's tasks — knows what each live task may do.

use std::fmt;

use serde::{Deserialize, Serialize};

/// Whether runs of a command are tracked as tasks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Tracking {
    /// Each run is a task: it holds off maintenance and may be refused by it.
    #[default]
    Tracked,
    /// Never holds off maintenance and is never refused by it (`offline`,
    /// `runserver`).
    Untracked,
}

/// How many runs of a command may be live at once.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Instances {
    /// One at a time: a second run waits up to the lock timeout, then fails
    /// naming the first.
    #[default]
    Single,
    /// Any number at once.
    Concurrent,
}

/// What a command may do while the site is in maintenance.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Maintenance {
    /// Refused while PENDING or OFFLINE (exit 75).
    #[default]
    Refused,
    /// Runs in any mode: backups and fixes run inside a window.
    Allowed,
    /// Runs only while OFFLINE or inside `offline run` (`migrate`).
    Required,
}

/// What happens to a running task while the site is PENDING.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Drain {
    /// `offline on` waits for it to end.
    #[default]
    Wait,
    /// Asked to stop when PENDING begins; `offline on` waits for it to exit.
    Stop,
    /// `offline on` refuses while it runs, unless forced.
    Block,
}

/// A command's whole policy.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
pub struct Policy {
    /// Tracked or untracked.
    #[serde(default)]
    pub tracking: Tracking,
    /// Single or concurrent.
    #[serde(default)]
    pub instances: Instances,
    /// Refused, allowed or required during maintenance.
    #[serde(default)]
    pub maintenance: Maintenance,
    /// Wait, stop or block when the site drains.
    #[serde(default)]
    pub drain: Drain,
}

impl Policy {
    /// The defaults: tracked, single, refused, wait.
    pub const DEFAULT: Policy = Policy {
        tracking: Tracking::Tracked,
        instances: Instances::Single,
        maintenance: Maintenance::Refused,
        drain: Drain::Wait,
    };

    /// This policy with the given instances.
    pub const fn instances(mut self, instances: Instances) -> Self {
        self.instances = instances;
        self
    }

    /// This policy with the given maintenance rule.
    pub const fn maintenance(mut self, maintenance: Maintenance) -> Self {
        self.maintenance = maintenance;
        self
    }

    /// This policy with the given drain rule.
    pub const fn drain(mut self, drain: Drain) -> Self {
        self.drain = drain;
        self
    }

    /// This policy with the given tracking.
    pub const fn tracking(mut self, tracking: Tracking) -> Self {
        self.tracking = tracking;
        self
    }
}

macro_rules! display_lowercase {
    ($($t:ty => { $($v:ident => $s:literal),* }),*) => {$(
        impl fmt::Display for $t {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(match self { $(Self::$v => $s),* })
            }
        }
    )*};
}

display_lowercase! {
    Tracking => { Tracked => "tracked", Untracked => "untracked" },
    Instances => { Single => "single", Concurrent => "concurrent" },
    Maintenance => { Refused => "refused", Allowed => "allowed", Required => "required" },
    Drain => { Wait => "wait", Stop => "stop", Block => "block" }
}

impl fmt::Display for Policy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}, {}, maintenance {}, drain {}",
            self.tracking, self.instances, self.maintenance, self.drain
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_tracked_single_refused_wait() {
        assert_eq!(Policy::default(), Policy::DEFAULT);
        assert_eq!(
            Policy::DEFAULT.to_string(),
            "tracked, single, maintenance refused, drain wait"
        );
    }

    #[test]
    fn serialises_lowercase() {
        let p = Policy::DEFAULT
            .instances(Instances::Concurrent)
            .maintenance(Maintenance::Allowed);
        let json = serde_json::to_string(&p).unwrap();
        assert_eq!(
            json,
            r#"{"tracking":"tracked","instances":"concurrent","maintenance":"allowed","drain":"wait"}"#
        );
    }
}
