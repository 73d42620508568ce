//! Joining a task is a capability (DESIGN.md, "Tasks are capabilities"): a
//! nested run joins a task only with proof that it belongs to it — a
//! descriptor holding the task's lock, inherited from the task (the backend
//! checks it), or the task's secret, which
//! [`CommandTask::handoff`](crate::task::CommandTask::handoff) passes to a
//! child in [`ENV_TASK`] and which storage keeps only as a SHA-256. The id
//! alone proves nothing: ids are printed for people.

use std::fmt;

/// Environment variable carrying the join token (`<task id>:<secret>`, see
/// [`JoinToken`]) to nested runs.
pub const ENV_TASK: &str = "MANAGE_TASK";

/// A task's secret: 32 random bytes (hex), made when the task starts and
/// handed to its children in [`ENV_TASK`] only. Storage keeps only its
/// SHA-256; it is never printed (its `Debug` hides it).
#[derive(Clone, PartialEq, Eq)]
pub struct TaskSecret(String);

impl TaskSecret {
    /// A fresh secret from the kernel's random bytes.
    pub fn generate() -> Self {
        TaskSecret(crate::random::hex::<32>())
    }

    /// A secret as it arrives in a token: 64 hex digits, else `None`.
    pub fn parse(text: &str) -> Option<Self> {
        crate::hex::decode::<32>(text.as_bytes()).map(|_| TaskSecret(text.to_ascii_lowercase()))
    }

    /// Its SHA-256 as lowercase hex: what storage keeps.
    pub fn sha256_hex(&self) -> String {
        crate::digest::sha256_hex(self.0.as_bytes())
    }

    /// Whether this is the secret whose stored hash is `sha256_hex` (in
    /// either case), compared in constant time
    /// ([`digest::secret_matches`](crate::digest::secret_matches)).
    pub fn matches(&self, sha256_hex: &str) -> bool {
        crate::hex::decode::<32>(sha256_hex.as_bytes())
            .is_some_and(|stored| crate::digest::secret_matches(self.0.as_bytes(), &stored))
    }
}

impl fmt::Debug for TaskSecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("TaskSecret(…)")
    }
}

/// What a nested run presents to join a task: the task's id and, when it
/// has it, the task's secret — `<id>:<secret>` in [`ENV_TASK`]. The id
/// alone proves nothing; the backend also accepts, instead of the secret,
/// a descriptor holding the task's lock that this process inherited (the
/// file backend on Linux). Its `Debug` hides the secret.
#[derive(Clone)]
pub struct JoinToken {
    id: String,
    secret: Option<TaskSecret>,
}

impl JoinToken {
    /// Reads a token as [`ENV_TASK`] carries it. Never fails: what is not a
    /// well-formed secret after the first `:` is no secret, and an id of
    /// the wrong shape names no task (the backend says the task is gone).
    pub fn parse(text: &str) -> JoinToken {
        let (id, secret) = match text.split_once(':') {
            Some((id, secret)) => (id, TaskSecret::parse(secret)),
            None => (text, None),
        };
        JoinToken {
            id: id.chars().take(128).collect(),
            secret,
        }
    }

    /// A token for the task `id`, with its secret if known.
    pub fn new(id: impl Into<String>, secret: Option<TaskSecret>) -> JoinToken {
        JoinToken {
            id: id.into(),
            secret,
        }
    }

    /// The task id the token names (printable).
    pub fn id(&self) -> &str {
        &self.id
    }

    /// The secret it carries, if any.
    pub fn secret(&self) -> Option<&TaskSecret> {
        self.secret.as_ref()
    }

    /// The value to put in [`ENV_TASK`] for a child: `<id>:<secret>`, or
    /// the id alone when this run does not know the secret (a child can
    /// then join only by an inherited descriptor). Never print it.
    pub fn env_value(&self) -> String {
        match &self.secret {
            Some(s) => format!("{}:{}", self.id, s.0),
            None => self.id.clone(),
        }
    }
}

impl fmt::Debug for JoinToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("JoinToken")
            .field("id", &self.id)
            .field("secret", &self.secret)
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_carry_an_id_and_maybe_a_secret_that_is_never_shown() {
        let secret = TaskSecret::generate();
        let token = JoinToken::new("18f-2a-0", Some(secret.clone()));
        let text = token.env_value();
        let (id, raw) = text.split_once(':').unwrap();
        assert_eq!((id, raw.len()), ("18f-2a-0", 64));
        let back = JoinToken::parse(&text);
        assert_eq!(back.id(), "18f-2a-0");
        assert_eq!(back.secret(), Some(&secret));
        assert!(secret.matches(&secret.sha256_hex()));
        assert!(secret.matches(&secret.sha256_hex().to_uppercase()));
        assert!(!TaskSecret::generate().matches(&secret.sha256_hex()));
        assert!(!secret.matches(""));
        assert!(!format!("{token:?} {back:?} {secret:?}").contains(raw));
        // The id alone, or with something that is no secret.
        for text in ["18f-2a-0", "18f-2a-0:", "18f-2a-0:xyz", "18f-2a-0:a:b"] {
            let t = JoinToken::parse(text);
            assert_eq!((t.id(), t.secret()), ("18f-2a-0", None), "{text}");
            assert_eq!(t.env_value(), "18f-2a-0");
        }
        assert!(JoinToken::parse(&"f".repeat(10_000)).id().len() <= 128);
    }
}
