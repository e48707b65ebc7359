//! argon2id for one hash thread, with its 19 MiB of working memory kept
//! between jobs.
//!
//! `Argon2::hash_password` allocates that memory for every hash and frees
//! it after. Whether glibc then serves the next one from its heap or maps
//! fresh pages depends on its dynamic mmap threshold, which earlier large
//! frees anywhere in the process set: on a one-core node, three runs in ten
//! mapped every hash anew, took ~4,900 page faults per hash (4.9 million in
//! a 15 s login storm against ~40,000) and hashed at 50/s instead of 88/s
//! (docs/OVERLOAD.md). Reusing the blocks makes every run the fast one,
//! at the price of 19 MiB held per hash thread once it has hashed.
//! The PHC strings are the crate's own: [`PasswordHasher`] and
//! [`PasswordVerifier`] accept what this writes and the other way round
//! (tests below).

use argon2::{
    Algorithm, Argon2, Block, Params, Version,
    password_hash::{
        self,
        phc::{Output, ParamsString, PasswordHash, Salt},
    },
};

/// One thread's argon2 working memory.
#[derive(Default)]
pub struct Memory(Vec<Block>);

impl Memory {
    /// The blocks `params` needs, grown on first use (and kept at the
    /// largest size seen: every hash this node writes uses the defaults).
    fn blocks(&mut self, params: &Params) -> &mut [Block] {
        let n = params.block_count();
        if self.0.len() < n {
            self.0.resize(n, Block::default());
        }
        &mut self.0[..n]
    }

    /// A PHC string of `password` with a fresh salt and the default
    /// parameters; `None` if the RNG or argon2 fails.
    pub fn hash(&mut self, password: &[u8]) -> Option<String> {
        let argon = Argon2::default();
        let params = argon.params().clone();
        let salt = password_hash::try_generate_salt().ok()?;
        let len = params.output_len().unwrap_or(Params::DEFAULT_OUTPUT_LEN);
        let mut out = [0u8; Output::MAX_LENGTH];
        let out = out.get_mut(..len)?;
        argon
            .hash_password_into_with_memory(password, &salt, &mut *out, self.blocks(&params))
            .ok()?;
        let phc = PasswordHash {
            algorithm: Algorithm::default().ident(),
            version: Some(Version::default().into()),
            params: ParamsString::try_from(&params).ok()?,
            salt: Some(Salt::new(&salt).ok()?),
            hash: Some(Output::new(out).ok()?),
        };
        Some(phc.to_string())
    }

    /// Whether `password` matches the PHC string `hash` (with the algorithm,
    /// version and parameters it names). A malformed `hash` matches nothing.
    pub fn verify(&mut self, password: &[u8], hash: &str) -> bool {
        let Ok(phc) = PasswordHash::new(hash) else {
            return false;
        };
        let (Some(salt), Some(expected)) = (&phc.salt, &phc.hash) else {
            return false;
        };
        let Ok(algorithm) = Algorithm::try_from(phc.algorithm.as_str()) else {
            return false;
        };
        let Ok(version) = phc
            .version
            .map_or(Ok(Version::default()), Version::try_from)
        else {
            return false;
        };
        let Ok(params) = Params::try_from(&phc) else {
            return false;
        };
        let argon = Argon2::new(algorithm, version, params.clone());
        let mut out = [0u8; Output::MAX_LENGTH];
        let Some(out) = out.get_mut(..expected.len()) else {
            return false;
        };
        argon
            .hash_password_into_with_memory(password, salt, &mut *out, self.blocks(&params))
            .is_ok()
            // `Output`'s equality is constant-time.
            && Output::new(out).is_ok_and(|computed| &computed == expected)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use argon2::password_hash::{PasswordHasher, PasswordVerifier};

    #[test]
    fn hashes_verify_both_ways_with_the_crates_own_api() {
        let mut mem = Memory::default();
        let ours = mem.hash(b"pw").unwrap();
        assert!(
            ours.starts_with("$argon2id$v=19$m=19456,t=2,p=1$"),
            "{ours}"
        );
        assert!(
            Argon2::default()
                .verify_password(b"pw", ours.as_str())
                .is_ok()
        );
        assert!(
            Argon2::default()
                .verify_password(b"px", ours.as_str())
                .is_err()
        );
        let theirs = Argon2::default().hash_password(b"pw").unwrap().to_string();
        assert!(mem.verify(b"pw", &theirs));
        assert!(!mem.verify(b"px", &theirs));
        assert_ne!(mem.hash(b"pw").unwrap(), ours, "a fresh salt each time");
    }

    #[test]
    fn other_parameters_and_bad_strings_are_handled() {
        let mut mem = Memory::default();
        // Smaller memory and more passes than the default, hashed by the crate.
        let params = Params::new(4096, 3, 1, None).unwrap();
        let small = Argon2::new(Algorithm::Argon2id, Version::V0x13, params)
            .hash_password(b"pw")
            .unwrap()
            .to_string();
        assert!(mem.verify(b"pw", &small));
        assert!(!mem.verify(b"px", &small));
        // The default needs more blocks than were used: they grow.
        let big = mem.hash(b"pw").unwrap();
        assert!(mem.verify(b"pw", &big));
        for bad in ["", "not a hash", "$argon2id$v=19$m=19456,t=2,p=1$c2FsdA"] {
            assert!(!mem.verify(b"pw", bad), "{bad}");
        }
    }
}
