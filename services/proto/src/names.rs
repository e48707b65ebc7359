//! Name rules: `user` and `room` are 1 to 64 characters of `[A-Za-z0-9_.-]`;
//! the direct room of users a and b is `dm:<a>:<b>` with the names in byte order.

use std::{fmt, sync::Arc};

pub const MAX_NAME_LEN: usize = 64;

/// A validated user or plain room name. Cheap to clone (shared).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Name(Arc<str>);

impl Name {
    /// Validates `s` against the name rule.
    ///
    /// # Errors
    /// A static reason when `s` is empty, too long or has a character outside the set.
    pub fn parse(s: &str) -> Result<Name, &'static str> {
        if valid_name(s) {
            Ok(Name(Arc::from(s)))
        } else if s.is_empty() || s.len() > MAX_NAME_LEN {
            Err("names are 1 to 64 characters")
        } else {
            Err("names use only A-Z a-z 0-9 _ . -")
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Name {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

pub fn valid_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= MAX_NAME_LEN
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'))
}

/// A room: either a plain named room or the direct room of two users.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct RoomName {
    full: Arc<str>,
    /// For a direct room, the two parties in byte order.
    direct: Option<(Name, Name)>,
}

impl RoomName {
    /// Parses a `room` field: a plain name or `dm:<a>:<b>` with a < b... in byte
    /// order (a == b is a user's room with themself, which is allowed).
    ///
    /// # Errors
    /// A static reason when the field breaks the name rules.
    pub fn parse(s: &str) -> Result<RoomName, &'static str> {
        if let Some(rest) = s.strip_prefix("dm:") {
            let (a, b) = rest
                .split_once(':')
                .ok_or("a direct room is dm:<user>:<user>")?;
            let (a, b) = (Name::parse(a)?, Name::parse(b)?);
            if a > b {
                return Err("a direct room names its users in byte order");
            }
            return Ok(RoomName::direct(a, b));
        }
        Name::parse(s).map(|n| RoomName {
            full: n.0,
            direct: None,
        })
    }

    /// The direct room between two users, whatever order they are given in.
    pub fn direct(a: Name, b: Name) -> RoomName {
        let (a, b) = if a <= b { (a, b) } else { (b, a) };
        RoomName {
            full: Arc::from(format!("dm:{a}:{b}")),
            direct: Some((a, b)),
        }
    }

    pub fn as_str(&self) -> &str {
        &self.full
    }

    /// The two parties of a direct room.
    pub fn parties(&self) -> Option<(&Name, &Name)> {
        self.direct.as_ref().map(|(a, b)| (a, b))
    }

    /// Whether `user` may read and write this direct room without joining.
    pub fn is_party(&self, user: &Name) -> bool {
        self.direct
            .as_ref()
            .is_some_and(|(a, b)| a == user || b == user)
    }

    /// A stable hash for spreading rooms over workers (FNV-1a: the same on
    /// every node and every build, unlike `std`'s randomised hasher).
    pub fn shard_hash(&self) -> u64 {
        self.full.bytes().fold(0xcbf2_9ce4_8422_2325, |h, b| {
            (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
        })
    }
}

impl fmt::Display for RoomName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.full)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_names_of_the_allowed_alphabet_up_to_64() {
        assert!(Name::parse("a").is_ok());
        assert!(Name::parse("Alice_01.x-y").is_ok());
        assert!(Name::parse(&"x".repeat(64)).is_ok());
    }

    #[test]
    fn rejects_empty_long_and_foreign_characters() {
        assert!(Name::parse("").is_err());
        assert!(Name::parse(&"x".repeat(65)).is_err());
        for bad in ["a b", "a:b", "é", "a/b", "a\0", "dm:a:b"] {
            assert!(Name::parse(bad).is_err(), "{bad:?} must be rejected");
        }
    }

    #[test]
    fn direct_room_orders_users_bytewise() {
        let a = Name::parse("bob").unwrap();
        let b = Name::parse("Alice").unwrap();
        let room = RoomName::direct(a.clone(), b.clone());
        assert_eq!(room.as_str(), "dm:Alice:bob");
        assert_eq!(RoomName::direct(b, a), room);
    }

    #[test]
    fn parses_direct_rooms_only_in_canonical_order() {
        let room = RoomName::parse("dm:alice:bob").unwrap();
        assert!(room.is_party(&Name::parse("bob").unwrap()));
        assert!(!room.is_party(&Name::parse("carol").unwrap()));
        assert!(RoomName::parse("dm:bob:alice").is_err());
        assert!(RoomName::parse("dm:bob").is_err());
        assert!(RoomName::parse("dm:a b:c").is_err());
    }

    #[test]
    fn plain_rooms_are_not_direct() {
        let room = RoomName::parse("lobby").unwrap();
        assert!(room.parties().is_none());
        assert!(!room.is_party(&Name::parse("lobby").unwrap()));
    }

    #[test]
    fn shard_hash_is_stable() {
        let room = RoomName::parse("lobby").unwrap();
        assert_eq!(
            room.shard_hash(),
            RoomName::parse("lobby").unwrap().shard_hash()
        );
        assert_ne!(
            room.shard_hash(),
            RoomName::parse("lobby2").unwrap().shard_hash()
        );
    }
}
