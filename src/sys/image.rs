//! The running executable: where its code is, and an identity for this build.
//!
//! A function travels between processes as its offset from [`anchor`], an
//! item of this crate. [`Image::resolve`] turns an offset back into an address
//! only if that address lies in an executable mapping of the same file as the
//! anchor, so a forged or stale offset is an error, never a jump.
//!
//! # Safety
//! Two operations are unsafe: turning a resolved address back into an
//! [`Entry`] (sound because the address was checked to lie in this file's code
//! and the peer proved it runs the same build), and conjuring a value of a
//! zero-sized function type (sound because such values carry no data).
#![allow(unsafe_code)]

use std::hash::{Hash, Hasher};
use std::io;
use std::os::unix::fs::MetadataExt;
use std::sync::OnceLock;

/// The fixed point that function offsets are measured from.
#[inline(never)]
pub(crate) fn anchor() -> usize {
    // Something the optimiser cannot fold into another function.
    std::hint::black_box(0x006d_7072_6f63_usize)
}

/// The address of [`anchor`].
pub(crate) fn anchor_addr() -> usize {
    anchor as fn() -> usize as usize
}

/// Facts about the running image, computed once per process.
#[derive(Debug)]
pub(crate) struct Image {
    /// Executable ranges `[start, end)` of the file that holds [`anchor`].
    text: Vec<(usize, usize)>,
    /// Identifies this build of this executable; equal in every process
    /// started from the same file.
    pub(crate) build_id: u64,
}

static IMAGE: OnceLock<Result<Image, String>> = OnceLock::new();

impl Image {
    /// The image of the running process.
    pub(crate) fn get() -> io::Result<&'static Image> {
        IMAGE
            .get_or_init(|| Image::load().map_err(|e| e.to_string()))
            .as_ref()
            .map_err(|e| io::Error::other(format!("cannot read the executable's mappings: {e}")))
    }

    fn load() -> io::Result<Image> {
        let maps = std::fs::read_to_string("/proc/self/maps")?;
        let anchor = anchor_addr();
        let mut rows = Vec::new();
        for line in maps.lines() {
            // start-end perms offset dev inode path
            let mut it = line.split_whitespace();
            let (Some(range), Some(perms), Some(_off), Some(_dev), Some(inode)) =
                (it.next(), it.next(), it.next(), it.next(), it.next())
            else {
                continue;
            };
            let path = it.collect::<Vec<_>>().join(" ");
            let Some((a, b)) = range.split_once('-') else {
                continue;
            };
            let (Ok(a), Ok(b)) = (usize::from_str_radix(a, 16), usize::from_str_radix(b, 16)) else {
                continue;
            };
            rows.push((
                a,
                b,
                perms.as_bytes().get(2) == Some(&b'x'),
                inode.to_string(),
                path,
            ));
        }
        let (inode, path) = rows
            .iter()
            .find(|r| r.0 <= anchor && anchor < r.1)
            .map(|r| (r.3.clone(), r.4.clone()))
            .ok_or_else(|| io::Error::other("the anchor is in no mapping"))?;
        let same_file = |r: &&(usize, usize, bool, String, String)| r.3 == inode && r.4 == path;
        let text: Vec<(usize, usize)> = rows
            .iter()
            .filter(same_file)
            .filter(|r| r.2)
            .map(|r| (r.0, r.1))
            .collect();
        let base = rows.iter().filter(same_file).map(|r| r.0).min().unwrap_or(0);
        let meta = std::fs::metadata("/proc/self/exe")?;
        let mut h = std::hash::DefaultHasher::new();
        (
            meta.dev(),
            meta.ino(),
            meta.size(),
            meta.mtime(),
            meta.mtime_nsec(),
        )
            .hash(&mut h);
        (anchor - base).hash(&mut h);
        Ok(Image {
            text,
            build_id: h.finish(),
        })
    }

    /// The offset of `addr` from the anchor.
    pub(crate) fn offset_of(addr: usize) -> i64 {
        (addr as i64).wrapping_sub(anchor_addr() as i64)
    }

    /// The address at `offset` from the anchor, if it lies in this
    /// executable's code.
    pub(crate) fn resolve(&self, offset: i64) -> Option<usize> {
        let addr = (anchor_addr() as i64).checked_add(offset)?;
        let addr = usize::try_from(addr).ok()?;
        self.text
            .iter()
            .any(|&(a, b)| a <= addr && addr < b)
            .then_some(addr)
    }
}

/// The shape of a child entry point: a monomorphised trampoline that finds its
/// inputs and leaves its outputs in a type-erased context.
pub(crate) type Entry = fn(&mut dyn std::any::Any);

/// The offset that identifies `entry` in every process running this build.
pub(crate) fn entry_offset(entry: Entry) -> i64 {
    Image::offset_of(entry as usize)
}

impl Image {
    /// The entry point at `offset`, if the address lies in this executable's
    /// code. The caller has checked that the offset comes from a process
    /// running this same build (`build_id`), where it was made by
    /// [`entry_offset`] from a real `Entry`.
    pub(crate) fn resolve_entry(&self, offset: i64) -> Option<Entry> {
        let addr = self.resolve(offset)?;
        // SAFETY: `addr` lies in an executable mapping of this very file, and
        // the build identity check guarantees the peer runs the same file
        // mapped the same way relative to the anchor, so `addr` is the address
        // of the `Entry` function the peer measured. A function pointer has the
        // size of a `usize` on every supported target.
        Some(unsafe { std::mem::transmute::<usize, Entry>(addr) })
    }
}

/// Produces a value of a zero-sized function type: a fn item or a closure that
/// captures nothing. Such a value carries no data, so one made in another process
/// (or here) is the same function.
pub(crate) fn conjure_fn<F: Copy + 'static>() -> F {
    const {
        assert!(
            std::mem::size_of::<F>() == 0,
            "multiproc: the function must be a fn item or a closure that captures nothing"
        )
    };
    // SAFETY: `F` is zero-sized (checked above at compile time), so there are
    // no bytes to initialise. The callers only use this with `F: Fn(A) -> R`,
    // and the only zero-sized types implementing the `Fn` traits (which cannot
    // be implemented by hand on stable Rust) are fn items and capture-less
    // closures, which have no validity invariant beyond their type.
    unsafe { std::mem::zeroed::<F>() }
}
