//! A provided-buffer ring (`IORING_REGISTER_PBUF_RING`): a page-aligned
//! array of buffer descriptors the kernel picks receive buffers from, so
//! multishot receives need no buffer per pending operation. After a
//! completion has been handled its buffer goes back on the ring.

use std::io;
use std::sync::atomic::{AtomicU16, Ordering};

use io_uring::IoUring;
use io_uring::types::BufRingEntry;

/// Backing memory for the ring and its buffers, from `mmap` (page aligned,
/// as the kernel requires for the descriptor array).
struct Mapping {
    ptr: *mut u8,
    len: usize,
}

impl Mapping {
    fn new(len: usize) -> io::Result<Mapping> {
        // SAFETY: an anonymous private mapping; the kernel chooses the
        // address, and the result is checked against MAP_FAILED.
        let ptr = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
                -1,
                0,
            )
        };
        if ptr == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        Ok(Mapping {
            ptr: ptr.cast(),
            len,
        })
    }
}

impl Drop for Mapping {
    fn drop(&mut self) {
        // SAFETY: ptr/len come from the successful mmap in `new`.
        unsafe {
            libc::munmap(self.ptr.cast(), self.len);
        }
    }
}

pub(crate) struct BufRing {
    ring: Mapping,
    bufs: Mapping,
    entries: u16,
    buf_len: usize,
    /// Our copy of the tail; published to the kernel after each batch.
    tail: u16,
}

impl BufRing {
    /// Allocates `entries` (a power of two) buffers of `buf_len` bytes and
    /// registers them with `ring` as buffer group `group`.
    pub(crate) fn register(
        uring: &IoUring,
        group: u16,
        entries: u16,
        buf_len: usize,
    ) -> io::Result<BufRing> {
        if !entries.is_power_of_two() {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "entries must be a power of two",
            ));
        }
        let ring_bytes = usize::from(entries) * std::mem::size_of::<BufRingEntry>();
        let ring = Mapping::new(ring_bytes.max(4096))?;
        let bufs = Mapping::new(usize::from(entries) * buf_len)?;
        let mut r = BufRing {
            ring,
            bufs,
            entries,
            buf_len,
            tail: 0,
        };
        for bid in 0..entries {
            r.push(bid);
        }
        r.publish();
        // SAFETY: the descriptor array lives as long as `r`, which the
        // caller keeps beside the io_uring instance and drops after it.
        unsafe {
            uring
                .submitter()
                .register_buf_ring_with_flags(r.ring.ptr as u64, entries, group, 0)?;
        }
        Ok(r)
    }

    fn entry(&mut self, idx: u16) -> &mut BufRingEntry {
        let i = usize::from(idx & (self.entries - 1));
        // SAFETY: i < entries, and the mapping holds `entries` descriptors.
        unsafe { &mut *self.ring.ptr.cast::<BufRingEntry>().add(i) }
    }

    fn push(&mut self, bid: u16) {
        let addr = self.buf_ptr(bid) as u64;
        let len = u32::try_from(self.buf_len).unwrap_or(u32::MAX);
        let tail = self.tail;
        let e = self.entry(tail);
        e.set_addr(addr);
        e.set_len(len);
        e.set_bid(bid);
        self.tail = self.tail.wrapping_add(1);
    }

    /// Makes the buffers pushed since the last call visible to the kernel.
    pub(crate) fn publish(&mut self) {
        // SAFETY: the tail field overlays the first descriptor's reserved
        // field; the kernel reads it with acquire semantics.
        unsafe {
            let tail = BufRingEntry::tail(self.ring.ptr.cast::<BufRingEntry>()) as *const AtomicU16;
            (*tail).store(self.tail, Ordering::Release);
        }
    }

    fn buf_ptr(&self, bid: u16) -> *mut u8 {
        // SAFETY: bid < entries, so the offset stays inside the mapping.
        unsafe { self.bufs.ptr.add(usize::from(bid) * self.buf_len) }
    }

    /// The first `len` bytes of buffer `bid`, as filled by the kernel.
    pub(crate) fn buffer(&self, bid: u16, len: usize) -> &[u8] {
        let bid = bid & (self.entries - 1);
        let len = len.min(self.buf_len);
        // SAFETY: the kernel wrote `len` bytes into this buffer and does not
        // touch it again until we give it back with `recycle`.
        unsafe { std::slice::from_raw_parts(self.buf_ptr(bid), len) }
    }

    /// Gives buffer `bid` back to the kernel at the next [`Self::publish`].
    pub(crate) fn recycle(&mut self, bid: u16) {
        self.push(bid & (self.entries - 1));
    }
}
