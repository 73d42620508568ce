//! What a command declares about itself: tracking, instances, maintenance,
//! drain and access (whether it only reads). Recorded in every task file, so
//! any reader — a stock `manage` looking at a site binary's tasks — knows
//! what each live task may do.

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

/// Whether a command changes the site's data: what the read-only tier asks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Access {
    /// It may write (the default): refused while READONLY_PENDING and
    /// READONLY unless `allowed`, and a run started ONLINE holds off
    /// READONLY and drains by its policy when READONLY_PENDING begins.
    #[default]
    ReadWrite,
    /// It only reads: it runs while READONLY_PENDING and READONLY, and a run
    /// started ONLINE does not hold off READONLY (it still holds off
    /// OFFLINE). A `required` command that only reads runs while READONLY
    /// too. Declared in the command's code; in manage.toml only for
    /// external commands, since marking a registered command read-only
    /// would loosen its policy.
    ReadOnly,
}

/// What becomes of the processes an external command leaves behind when it
/// exits (daemons, `ssh -f`, `git gc --auto`): set only in manage.toml.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Descendants {
    /// They stay tracked: the task lives until the last of them exits
    /// (Linux: a child subreaper keeps them).
    #[default]
    Keep,
    /// They go free: the task ends when the command exits. The one
    /// loosening manage.toml allows, for commands that start a service on
    /// purpose (`service … restart`).
    Release,
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
    /// Whether it writes or only reads. Written only when read-only, so
    /// task files of other commands stay as binaries before it wrote them.
    #[serde(default, skip_serializing_if = "Access::is_read_write")]
    pub access: Access,
}

impl Access {
    fn is_read_write(&self) -> bool {
        *self == Access::ReadWrite
    }
}

impl Policy {
    /// The defaults: tracked, single, refused, wait, read-write.
    pub const DEFAULT: Policy = Policy {
        tracking: Tracking::Tracked,
        instances: Instances::Single,
        maintenance: Maintenance::Refused,
        drain: Drain::Wait,
        access: Access::ReadWrite,
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

    /// This policy with the given access: `Policy::DEFAULT.access(Access::ReadOnly)`
    /// for a command that only reads (a report, an export).
    pub const fn access(mut self, access: Access) -> Self {
        self.access = access;
        self
    }

    /// Whether the command only reads.
    pub const fn is_read_only(&self) -> bool {
        matches!(self.access, Access::ReadOnly)
    }
}

/// A policy as `manage.toml` sets it for one command (`[commands.NAME]`):
/// each field optional.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PolicyOverride {
    /// `tracking = "tracked" | "untracked"`.
    pub tracking: Option<Tracking>,
    /// `instances = "single" | "concurrent"`.
    pub instances: Option<Instances>,
    /// `maintenance = "refused" | "allowed" | "required"`.
    pub maintenance: Option<Maintenance>,
    /// `drain = "wait" | "stop" | "block"`.
    pub drain: Option<Drain>,
    /// `descendants = "keep" | "release"` (external commands only).
    pub descendants: Option<Descendants>,
    /// `access = "read-write" | "read-only"`: `read-only` for external
    /// commands only; a registered command may only be made `read-write`.
    pub access: Option<Access>,
}

impl PolicyOverride {
    /// The policy of an external command: the defaults, with every field
    /// the file sets.
    pub fn for_external(&self) -> Policy {
        Policy {
            tracking: self.tracking.unwrap_or_default(),
            instances: self.instances.unwrap_or_default(),
            maintenance: self.maintenance.unwrap_or_default(),
            drain: self.drain.unwrap_or_default(),
            access: self.access.unwrap_or_default(),
        }
    }

    /// The policy of a registered command that declared `declared`, with
    /// this override applied — only where it makes the policy stricter,
    /// which the command's code cannot be surprised by:
    ///
    /// - instances `concurrent` → `single`;
    /// - maintenance `allowed` → `refused`;
    /// - drain `wait` → `block`;
    /// - access `read-only` → `read-write`.
    ///
    /// Anything else is refused with a message naming the key: tracking is
    /// the command's own; a command that does not declare `drain = stop`
    /// may not honour a stop request; one that declares `required` needs
    /// the window; only the command's code knows that it never writes.
    pub fn for_registered(&self, name: &str, declared: Policy) -> Result<Policy, String> {
        let mut p = declared;
        let refuse = |key: &str, from: String, to: String| {
            Err(format!(
                "[commands.{name}] {key} = \"{to}\": `{name}` declares {key} {from}, and manage.toml \
                 may only make a registered command's policy stricter (instances concurrent → single, \
                 maintenance allowed → refused, drain wait → block, access read-only → read-write)"
            ))
        };
        if self.descendants.is_some() {
            return Err(format!(
                "[commands.{name}] descendants: `{name}` is a registered command, which runs inside \
                 the runner; descendants applies only to external `manage-<name>` commands"
            ));
        }
        if let Some(t) = self.tracking
            && t != declared.tracking
        {
            return refuse("tracking", declared.tracking.to_string(), t.to_string());
        }
        if let Some(i) = self.instances {
            match (declared.instances, i) {
                (a, b) if a == b => {}
                (Instances::Concurrent, Instances::Single) => p.instances = i,
                (a, b) => return refuse("instances", a.to_string(), b.to_string()),
            }
        }
        if let Some(m) = self.maintenance {
            match (declared.maintenance, m) {
                (a, b) if a == b => {}
                (Maintenance::Allowed, Maintenance::Refused) => p.maintenance = m,
                (a, b) => return refuse("maintenance", a.to_string(), b.to_string()),
            }
        }
        if let Some(d) = self.drain {
            match (declared.drain, d) {
                (a, b) if a == b => {}
                (Drain::Wait, Drain::Block) => p.drain = d,
                (a, b) => return refuse("drain", a.to_string(), b.to_string()),
            }
        }
        if let Some(a) = self.access {
            match (declared.access, a) {
                (x, y) if x == y => {}
                (Access::ReadOnly, Access::ReadWrite) => p.access = a,
                (x, y) => return refuse("access", x.to_string(), y.to_string()),
            }
        }
        Ok(p)
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
    Drain => { Wait => "wait", Stop => "stop", Block => "block" },
    Descendants => { Keep => "keep", Release => "release" },
    Access => { ReadWrite => "read-write", ReadOnly => "read-only" }
}

impl fmt::Display for Policy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Nothing else applies to a command that is never a task: it is
        // neither refused nor drained, and no lock makes it single.
        if self.tracking == Tracking::Untracked {
            return f.write_str("untracked");
        }
        write!(
            f,
            "{}, {}, maintenance {}, drain {}",
            self.tracking, self.instances, self.maintenance, self.drain
        )?;
        // Said only when read-only: every other policy reads as before.
        if self.is_read_only() {
            f.write_str(", read-only")?;
        }
        Ok(())
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
        // `offline` and `runserver` are listed as what they are.
        assert_eq!(
            Policy::DEFAULT.tracking(Tracking::Untracked).to_string(),
            "untracked"
        );
    }

    #[test]
    fn the_file_may_only_make_a_registered_policy_stricter() {
        let declared = Policy::DEFAULT
            .instances(Instances::Concurrent)
            .maintenance(Maintenance::Allowed);
        let stricter = PolicyOverride {
            instances: Some(Instances::Single),
            maintenance: Some(Maintenance::Refused),
            drain: Some(Drain::Block),
            tracking: None,
            descendants: None,
            access: None,
        };
        let p = stricter.for_registered("backup", declared).unwrap();
        assert_eq!(
            (p.instances, p.maintenance, p.drain),
            (Instances::Single, Maintenance::Refused, Drain::Block)
        );
        let looser = PolicyOverride {
            drain: Some(Drain::Stop),
            ..PolicyOverride::default()
        };
        let err = looser
            .for_registered("import", Policy::DEFAULT)
            .unwrap_err();
        assert!(
            err.starts_with("[commands.import] drain = \"stop\": `import` declares drain wait"),
            "{err}"
        );
        let untrack = PolicyOverride {
            tracking: Some(Tracking::Untracked),
            ..PolicyOverride::default()
        };
        assert!(untrack.for_registered("import", Policy::DEFAULT).is_err());
    }

    #[test]
    fn the_file_may_mark_only_an_external_command_read_only() {
        let read_only = PolicyOverride {
            access: Some(Access::ReadOnly),
            ..PolicyOverride::default()
        };
        assert_eq!(read_only.for_external().access, Access::ReadOnly);
        let err = read_only
            .for_registered("import", Policy::DEFAULT)
            .unwrap_err();
        assert!(
            err.starts_with(
                "[commands.import] access = \"read-only\": `import` declares access read-write"
            ),
            "{err}"
        );
        // Making a read-only command read-write is stricter: allowed.
        let writes = PolicyOverride {
            access: Some(Access::ReadWrite),
            ..PolicyOverride::default()
        };
        let declared = Policy::DEFAULT.access(Access::ReadOnly);
        assert_eq!(
            writes.for_registered("report", declared).unwrap().access,
            Access::ReadWrite
        );
        assert_eq!(
            declared.to_string(),
            "tracked, single, maintenance refused, drain wait, read-only"
        );
    }

    #[test]
    fn an_external_command_takes_every_field_from_the_file() {
        let o = PolicyOverride {
            drain: Some(Drain::Stop),
            instances: Some(Instances::Concurrent),
            ..PolicyOverride::default()
        };
        assert_eq!(
            o.for_external(),
            Policy::DEFAULT
                .drain(Drain::Stop)
                .instances(Instances::Concurrent)
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
        let json = serde_json::to_string(&Policy::DEFAULT.access(Access::ReadOnly)).unwrap();
        assert!(json.ends_with(r#","access":"read-only"}"#), "{json}");
    }
}
