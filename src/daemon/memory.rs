//! Handing freed heap back to the kernel after a config is read.
//!
//! Reading a config of thousands of credentials allocates several times the
//! file's size in short-lived parser state (TOML tables, spans), freed once
//! the credentials are built. glibc's malloc keeps such memory for reuse,
//! and because the credentials themselves are allocated in between, little
//! of it is ever given back on its own: a daemon holding 10 000 credentials
//! kept ~70 MiB resident for ~16 MiB of live data. `malloc_trim` returns
//! the free pages; it is called after startup and after each reload, never
//! on a request path.

/// Returns the heap's free pages to the kernel (glibc only; elsewhere a
/// no-op).
#[cfg(all(target_os = "linux", target_env = "gnu"))]
#[allow(unsafe_code)] // one call into glibc that takes no pointers; reviewed
pub(super) fn release_free_memory() {
    // SAFETY: malloc_trim only walks glibc's own arenas under their locks;
    // it takes no arguments that could be invalid and is thread-safe.
    unsafe {
        libc::malloc_trim(0);
    }
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
pub(super) fn release_free_memory() {}
