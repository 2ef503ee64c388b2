//! Support for *lean* plugins: components built for `wasm32-unknown-unknown`
//! instead of `wasm32-wasip2`.
//!
//! A lean plugin imports nothing but the contract (no `wasi:cli`, files,
//! clocks or sockets), so the host instantiates one core module per call
//! (three if it logs or uses a capability, see below) instead of three plus
//! fourteen WASI interfaces, and calls it without a fiber when it uses
//! neither the Docker nor the OCI capability: a call into a fresh instance
//! costs well under half as much. A plugin that needs none of WASI
//! (builder-noop, environment-local and registry-oci of the default bundle)
//! should be built this way; one that reads files, environment variables or
//! makes `wasi:http` requests must be built for `wasm32-wasip2`. Nothing in
//! the plugin's code changes; on `wasm32-unknown-unknown` this module adds
//! two things the target lacks:
//!
//! * **an allocator made for one call.** Every call gets a fresh instance
//!   that is thrown away afterwards, so memory is handed out from the end of
//!   the data segment upwards and only the most recent allocation is ever
//!   given back (or grown in place). Rust's default allocator on this target
//!   grows the linear memory for its first allocation, which costs the host
//!   an `mprotect` on every call; this one uses the memory the module
//!   already has first. A plugin that allocates more than its memory cap
//!   over one call is stopped at the cap, as any plugin is.
//! * **panic messages.** The target has no stderr, so a panic's message is
//!   written to a record in the plugin's own memory before the instance
//!   traps; the host finds it there (in the trap's core dump) and adds it to
//!   the error that fails the job. The message does not go through the
//!   `launch:plugin/log` import, so a plugin that never logs does not import
//!   it at all: its component is a single core module. (An import that takes
//!   a string needs the module's memory, and `wit-component` provides that
//!   with two more core modules per instance, a shim and a fix-up, which cost
//!   about 1.5 µs a call.)
//!
//! The workspace's `.cargo/config.toml` links this target with
//! `wasm-component-ld` (shipped with Rust), which makes the component:
//!
//! ```toml
//! [target.wasm32-unknown-unknown]
//! linker = "wasm-component-ld"
//! rustflags = ["-C", "link-arg=-zstack-size=131072"]
//! ```
//!
//! then `cargo build --release --target wasm32-unknown-unknown`.

use core::alloc::{GlobalAlloc, Layout};
use core::cell::{Cell, UnsafeCell};

/// Wasm page size.
const PAGE: usize = 64 * 1024;

/// Hands out memory upwards from `__heap_base`; frees only the most recent
/// allocation. For instances that live for one call.
struct OneCallAllocator {
    /// The first free byte, or 0 before the first allocation.
    next: Cell<usize>,
}

// SAFETY: `wasm32-unknown-unknown` without the `atomics` feature has one
// thread.
unsafe impl Sync for OneCallAllocator {}

unsafe extern "C" {
    /// Set by the linker: the first byte after the stack and data.
    static __heap_base: u8;
}

impl OneCallAllocator {
    fn next(&self) -> usize {
        match self.next.get() {
            // Only the address of the linker's symbol is taken.
            0 => &raw const __heap_base as usize,
            next => next,
        }
    }

    /// Makes sure the memory reaches `end`, growing it if needed.
    fn reach(end: usize) -> bool {
        let have = core::arch::wasm32::memory_size(0) * PAGE;
        if end <= have {
            return true;
        }
        let pages = (end - have).div_ceil(PAGE);
        core::arch::wasm32::memory_grow(0, pages) != usize::MAX
    }
}

unsafe impl GlobalAlloc for OneCallAllocator {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let Some(start) = self.next().checked_next_multiple_of(layout.align()) else {
            return core::ptr::null_mut();
        };
        let Some(end) = start.checked_add(layout.size()) else {
            return core::ptr::null_mut();
        };
        if !Self::reach(end) {
            return core::ptr::null_mut();
        }
        self.next.set(end);
        start as *mut u8
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // Only the most recent allocation can be given back.
        if ptr as usize + layout.size() == self.next() {
            self.next.set(ptr as usize);
        }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        let start = ptr as usize;
        if start + layout.size() == self.next() {
            // The most recent allocation grows or shrinks in place.
            let Some(end) = start.checked_add(new_size) else {
                return core::ptr::null_mut();
            };
            if !Self::reach(end) {
                return core::ptr::null_mut();
            }
            self.next.set(end);
            return ptr;
        }
        if new_size <= layout.size() {
            return ptr;
        }
        // SAFETY: the caller guarantees `layout` with `new_size` is valid.
        let new_layout = unsafe { Layout::from_size_align_unchecked(new_size, layout.align()) };
        // SAFETY: as above.
        let new = unsafe { self.alloc(new_layout) };
        if !new.is_null() {
            // SAFETY: both regions are valid for `layout.size()` bytes and
            // do not overlap (the new one lies above the old one's end).
            unsafe { core::ptr::copy_nonoverlapping(ptr, new, layout.size()) };
        }
        new
    }
}

#[global_allocator]
static ALLOCATOR: OneCallAllocator = OneCallAllocator { next: Cell::new(0) };

/// Size of the panic record's text, in bytes; a longer message is cut at a
/// character boundary.
const PANIC_TEXT: usize = 2048;

/// Marker that starts the panic record once a panic has filled it in. It is
/// kept in the module inverted, so these bytes appear in the plugin's memory
/// only in a filled-in record. The host looks for the same bytes.
const PANIC_MARKER_INVERTED: [u8; 16] = invert(*b"launch-panic-rec");

const fn invert(bytes: [u8; 16]) -> [u8; 16] {
    let mut out = [0u8; 16];
    let mut i = 0;
    while i < 16 {
        out[i] = !bytes[i];
        i += 1;
    }
    out
}

/// Where a panic leaves its message for the host: the marker, the text's
/// length (little-endian `u32`) and the text (UTF-8).
#[repr(C)]
struct PanicRecord {
    marker: [u8; 16],
    len: [u8; 4],
    text: [u8; PANIC_TEXT],
}

/// The record, zeroed until a panic fills it in (it lies in `.bss`, which
/// costs the instance nothing until then). Nothing in the module reads it,
/// so it is marked `#[used]` and [`record_panic`] lets its address escape:
/// otherwise the optimiser would drop the writes.
#[used]
static PANIC_RECORD: RecordCell = RecordCell(UnsafeCell::new(PanicRecord {
    marker: [0; 16],
    len: [0; 4],
    text: [0; PANIC_TEXT],
}));

/// The panic record's cell.
struct RecordCell(UnsafeCell<PanicRecord>);

// SAFETY: `wasm32-unknown-unknown` without the `atomics` feature has one
// thread.
unsafe impl Sync for RecordCell {}

/// Writes `message` to the panic record.
fn record_panic(message: &str) {
    let mut end = message.len().min(PANIC_TEXT);
    while !message.is_char_boundary(end) {
        end -= 1;
    }
    // SAFETY: one thread, and a panic is the last thing the instance does;
    // nothing else touches the record.
    let record = unsafe { &mut *PANIC_RECORD.0.get() };
    record.text[..end].copy_from_slice(&message.as_bytes()[..end]);
    record.len = (end as u32).to_le_bytes();
    // The marker last: the host trusts a record only once it is complete.
    for (byte, inverted) in record.marker.iter_mut().zip(PANIC_MARKER_INVERTED) {
        // `black_box` keeps the optimiser from folding the inverted constant
        // back into the marker itself, which would put the marker in the
        // module's data.
        *byte = !core::hint::black_box(inverted);
    }
    core::hint::black_box(PANIC_RECORD.0.get());
}

/// Installs the panic hook that fills in the panic record.
extern "C" fn install_panic_hook() {
    std::panic::set_hook(Box::new(|info| {
        record_panic(&format!("plugin panicked: {info}"));
    }));
}

/// Runs [`install_panic_hook`] when the instance starts: the linker calls
/// every `.init_array` entry from `__wasm_call_ctors`, which the bindings
/// run before the first export.
#[used]
#[unsafe(link_section = ".init_array")]
static INSTALL_PANIC_HOOK: extern "C" fn() = install_panic_hook;
