//! The running executable: where its code is, and an identity for this build.
//!
//! A function travels between processes as its offset from [`anchor`], an
//! item of this crate. [`Image::resolve`] turns an offset back into an address
//! only if that address lies in an executable mapping of the same file as the
//! anchor, so a forged or stale offset is an error, never a jump.
//!
//! No `unsafe` here: the mappings come from `/proc/self/maps`; turning an
//! address into a callable function is the caller's (process bootstrap) job.

use std::hash::{Hash, Hasher};
use std::io;
use std::os::unix::fs::MetadataExt;
use std::sync::OnceLock;

/// The fixed point that function offsets are measured from.
#[inline(never)]
pub(crate) fn anchor() -> usize {
    // Something the optimiser cannot fold into another function.
    std::hint::black_box(0x6d70_726f_63usize)
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
