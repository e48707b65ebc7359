//! Cache-line padding for the few counters every ask writes.
//!
//! Every ask and release writes the in-flight count, the GCRA state, the
//! admitted counter and the service-time estimate. Left next to the fields
//! that are only read on that path (limits, flags), each write would also
//! evict those from the other cores' caches (false sharing). 128 bytes, because
//! x86 prefetches cache lines in pairs.

use std::ops::Deref;

#[derive(Debug, Default)]
#[repr(align(128))]
pub(crate) struct Padded<T>(pub(crate) T);

impl<T> Deref for Padded<T> {
    type Target = T;

    fn deref(&self) -> &T {
        &self.0
    }
}
