//! The C2SP `tlog-tiles` HTTP API, pure: resource paths (encoding and strict parsing), which
//! tiles a tree of a given size has and how wide, entry bundles, and the caching and content
//! types the spec asks for. `ledger serve` answers with it; a client can build its requests
//! with it.
//!
//! Paths (relative to the log's prefix):
//! - `checkpoint`: the signed note, `text/plain; charset=utf-8`, mutable (cache a few seconds
//!   at most).
//! - `tile/<L>/<N>[.p/<W>]`: `W` (default 256) consecutive hashes of tree level `8·L`, from
//!   node `256·N`, concatenated (32 bytes each), `application/octet-stream`, immutable.
//! - `tile/entries/<N>[.p/<W>]`: the entries of leaves `256·N ..` as a bundle (each entry a
//!   big-endian `u16` length, then its bytes), `application/octet-stream`, immutable. AVL's
//!   entry is the record's 32-byte hash: its RFC 6962 leaf hash `SHA-256(0x00 || entry)` is
//!   the tree's leaf (docs/HASHING.md, "Leaves and the tree").
//!
//! `<L>` is decimal 0..=63 without leading zeros; `<N>` is written in groups of three digits,
//! every group but the last prefixed with `x` (1234067 → `x001/x234/067`), with no leading
//! all-zero group; `<W>` is decimal 1..=255 without leading zeros. Anything else is not a
//! tile path: [`parse`] accepts exactly the strings [`TileRequest::path`] writes.
//!
//! A partial tile of width `W` is the first `W` hashes of its tile: its bytes never change
//! as the tree grows (they are complete subtrees), so it is as immutable as a full tile, and
//! the tile of every earlier tree size is a prefix of the stored one.

use crate::Error;
use crate::merkle::{Hash, leaf_hash};
use crate::tile::{TILE_HEIGHT, TILE_WIDTH, TileId};

/// Highest tile level a path may name (the spec's range).
pub const MAX_LEVEL: u8 = 63;
/// `Content-Type` of `/checkpoint`.
pub const CHECKPOINT_CONTENT_TYPE: &str = "text/plain; charset=utf-8";
/// `Content-Type` of tiles and entry bundles.
pub const TILE_CONTENT_TYPE: &str = "application/octet-stream";
/// `Cache-Control` of tiles and entry bundles, full or partial: their bytes never change.
pub const IMMUTABLE_CACHE_CONTROL: &str = "public, max-age=31536000, immutable";
/// `Cache-Control` of `/checkpoint` and of answers that change as the log grows (a tile not
/// yet in the tree, a receipt): the spec asks to prevent caching beyond a few seconds.
pub const MUTABLE_CACHE_CONTROL: &str = "no-cache";

/// What a `tile/...` path names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TileKind {
    /// Hashes of the Merkle tree at tile level `L` (`tile/<L>/...`).
    Hashes(u8),
    /// Entries (`tile/entries/...`), at the leaves' level.
    Entries,
}

/// A parsed `tile/...` path.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TileRequest {
    /// Hashes or entries.
    pub kind: TileKind,
    /// `<N>`: the tile's index in its level.
    pub index: u64,
    /// Hashes (or entries) asked for: 256 for a full tile, 1..=255 for `.p/<W>`.
    pub width: usize,
}

impl TileRequest {
    /// The tree level's tile this request reads (entries: the level-0 tile they hash to).
    pub fn tile(&self) -> TileId {
        TileId {
            level: match self.kind {
                TileKind::Hashes(level) => level,
                TileKind::Entries => 0,
            },
            index: self.index,
        }
    }

    /// True for `.p/<W>` (a partial tile).
    pub fn is_partial(&self) -> bool {
        self.width < TILE_WIDTH
    }

    /// The path, without a leading `/` (`tile/0/x001/234.p/5`).
    pub fn path(&self) -> String {
        let level = match self.kind {
            TileKind::Hashes(level) => level.to_string(),
            TileKind::Entries => "entries".to_owned(),
        };
        let mut out = format!("tile/{level}/{}", encode_index(self.index));
        if self.is_partial() {
            out.push_str(&format!(".p/{}", self.width));
        }
        out
    }
}

/// `<N>` in the spec's encoding: three-digit groups, all but the last prefixed with `x`.
pub fn encode_index(index: u64) -> String {
    let mut groups = Vec::new();
    let mut n = index;
    loop {
        groups.push(n % 1000);
        n /= 1000;
        if n == 0 {
            break;
        }
    }
    let last = groups.len() - 1;
    groups
        .iter()
        .rev()
        .enumerate()
        .map(|(i, g)| {
            if i < last {
                format!("x{g:03}")
            } else {
                format!("{g:03}")
            }
        })
        .collect::<Vec<_>>()
        .join("/")
}

fn malformed(path: &str, why: &str) -> Error {
    // The path is the client's: quote it bounded, so an error never carries a huge input.
    let shown: String = path.chars().take(80).collect();
    Error::Malformed(format!("tile path {shown:?}: {why}"))
}

/// A decimal without sign, leading zeros or other characters, at most `max`.
fn small_decimal(text: &str, max: u64) -> Option<u64> {
    if text.is_empty()
        || text.len() > 3
        || !text.bytes().all(|b| b.is_ascii_digit())
        || (text.len() > 1 && text.starts_with('0'))
    {
        return None;
    }
    text.parse::<u64>().ok().filter(|n| *n <= max)
}

/// Parses a tile or entry-bundle path, with or without its leading `/` (`tile/0/000`,
/// `/tile/entries/x001/234.p/17`). Only the spec's canonical encoding is accepted (see the
/// module doc); anything else is [`Error::Malformed`] (an HTTP 400).
pub fn parse(path: &str) -> Result<TileRequest, Error> {
    let rest = path.strip_prefix('/').unwrap_or(path);
    let rest = rest
        .strip_prefix("tile/")
        .ok_or_else(|| malformed(path, "not under tile/"))?;
    let (level, rest) = rest
        .split_once('/')
        .ok_or_else(|| malformed(path, "no tile index"))?;
    let kind = if level == "entries" {
        TileKind::Entries
    } else {
        let level = small_decimal(level, u64::from(MAX_LEVEL)).ok_or_else(|| {
            malformed(path, "level is not a decimal 0..=63 without leading zeros")
        })?;
        // `small_decimal` bounded it by MAX_LEVEL, which fits a u8.
        TileKind::Hashes(u8::try_from(level).unwrap_or(MAX_LEVEL))
    };
    let (index_part, width) = match rest.split_once(".p/") {
        Some((index_part, w)) => {
            let w = small_decimal(w, TILE_WIDTH as u64 - 1)
                .filter(|w| *w >= 1)
                .ok_or_else(|| {
                    malformed(path, "width is not a decimal 1..=255 without leading zeros")
                })?;
            (index_part, w as usize)
        }
        None => (rest, TILE_WIDTH),
    };
    let groups: Vec<&str> = index_part.split('/').collect();
    // u64::MAX has 20 digits: seven groups.
    if groups.len() > 7 {
        return Err(malformed(path, "index has more than seven groups"));
    }
    let mut index: u64 = 0;
    let last = groups.len() - 1;
    for (i, group) in groups.iter().enumerate() {
        let digits = if i < last {
            group
                .strip_prefix('x')
                .ok_or_else(|| malformed(path, "an index group but the last lacks its x"))?
        } else {
            group
        };
        if digits.len() != 3 || !digits.bytes().all(|b| b.is_ascii_digit()) {
            return Err(malformed(path, "an index group is not three digits"));
        }
        let value: u64 = digits
            .parse()
            .map_err(|_| malformed(path, "an index group is not three digits"))?;
        if i == 0 && i < last && value == 0 {
            return Err(malformed(path, "index has a leading zero group"));
        }
        index = index
            .checked_mul(1000)
            .and_then(|n| n.checked_add(value))
            .ok_or_else(|| malformed(path, "index out of range"))?;
    }
    Ok(TileRequest { kind, index, width })
}

/// The width of tile `tile` in a tree of `size` leaves: 256 when full, 1..=255 when it is
/// that level's partial tile, 0 when the tree does not reach it (the spec: the partial tile
/// at level `l` has `floor(size / 256^l) mod 256` hashes; empty tiles are not served).
pub fn tile_width(tile: TileId, size: u64) -> usize {
    let shift = u32::from(tile.level) * u32::from(TILE_HEIGHT);
    let count = size.checked_shr(shift).unwrap_or(0);
    let start = match tile.index.checked_mul(TILE_WIDTH as u64) {
        Some(start) if start < count => start,
        _ => return 0,
    };
    (count - start).min(TILE_WIDTH as u64) as usize
}

/// Whether a tree of `size` leaves holds what `request` asks for: a full tile needs the full
/// tile; `.p/<W>` needs at least `W` hashes (a narrower tile of an earlier tree size is a
/// prefix of a wider or full one).
pub fn covered(request: &TileRequest, size: u64) -> bool {
    let available = tile_width(request.tile(), size);
    if request.is_partial() {
        request.width <= available
    } else {
        available == TILE_WIDTH
    }
}

/// An entry bundle: each entry as a big-endian `u16` length, then its bytes. Fails if an
/// entry is longer than 65,535 bytes or there are more than 256.
pub fn entry_bundle<E: AsRef<[u8]>>(entries: &[E]) -> Result<Vec<u8>, Error> {
    if entries.len() > TILE_WIDTH {
        return Err(Error::OutOfRange(format!(
            "{} entries in one bundle (at most {TILE_WIDTH})",
            entries.len()
        )));
    }
    let mut out = Vec::with_capacity(entries.iter().map(|e| e.as_ref().len() + 2).sum());
    for entry in entries {
        let entry = entry.as_ref();
        let len = u16::try_from(entry.len()).map_err(|_| {
            Error::OutOfRange(format!("an entry of {} bytes (at most 65535)", entry.len()))
        })?;
        out.extend_from_slice(&len.to_be_bytes());
        out.extend_from_slice(entry);
    }
    Ok(out)
}

/// Splits an entry bundle into its entries; [`Error::Malformed`] on a truncated one.
pub fn parse_entry_bundle(bytes: &[u8]) -> Result<Vec<&[u8]>, Error> {
    let mut out = Vec::new();
    let mut rest = bytes;
    while !rest.is_empty() {
        let (len, tail) = rest
            .split_first_chunk::<2>()
            .ok_or_else(|| Error::Malformed("entry bundle ends inside a length".into()))?;
        let len = usize::from(u16::from_be_bytes(*len));
        if tail.len() < len {
            return Err(Error::Malformed(format!(
                "entry bundle: an entry of {len} bytes with {} left",
                tail.len()
            )));
        }
        let (entry, tail) = tail.split_at(len);
        out.push(entry);
        rest = tail;
    }
    Ok(out)
}

/// The tree's leaf for an AVL entry (the record's 32-byte hash): `SHA-256(0x00 || entry)`.
pub fn entry_leaf(entry: &[u8]) -> Hash {
    leaf_hash(entry)
}

#[cfg(test)]
#[allow(clippy::unwrap_used, reason = "tests fail loudly")]
mod tests {
    use super::*;

    fn req(kind: TileKind, index: u64, width: usize) -> TileRequest {
        TileRequest { kind, index, width }
    }

    #[test]
    fn index_encoding_matches_the_spec() {
        assert_eq!(encode_index(0), "000");
        assert_eq!(encode_index(7), "007");
        assert_eq!(encode_index(999), "999");
        assert_eq!(encode_index(1000), "x001/000");
        assert_eq!(encode_index(1_234_067), "x001/x234/067");
        assert_eq!(encode_index(u64::MAX), "x018/x446/x744/x073/x709/x551/615");
    }

    #[test]
    fn paths_round_trip() {
        for r in [
            req(TileKind::Hashes(0), 0, 256),
            req(TileKind::Hashes(0), 1_234_067, 17),
            req(TileKind::Hashes(63), u64::MAX, 255),
            req(TileKind::Hashes(2), 1000, 1),
            req(TileKind::Entries, 0, 1),
            req(TileKind::Entries, 999_999, 256),
        ] {
            let path = r.path();
            assert_eq!(parse(&path).unwrap(), r, "{path}");
            assert_eq!(parse(&format!("/{path}")).unwrap(), r, "{path}");
        }
        assert_eq!(
            req(TileKind::Hashes(1), 1_234_067, 5).path(),
            "tile/1/x001/x234/067.p/5"
        );
        assert_eq!(req(TileKind::Entries, 3, 256).path(), "tile/entries/003");
    }

    #[test]
    fn malformed_paths_are_refused() {
        for bad in [
            "",
            "/",
            "tile",
            "tile/",
            "tile/0",
            "tile/0/",
            "/tiles/0/000",
            "tile/00/000", // leading zero in the level
            "tile/01/000",
            "tile/64/000", // level out of range
            "tile/-1/000",
            "tile/+1/000",
            "tile/a/000",
            "tile/0/0", // not three digits
            "tile/0/00",
            "tile/0/0000",
            "tile/0/1000",
            "tile/0/x000/001", // leading zero group
            "tile/0/x001",     // x on the last group
            "tile/0/001/000",  // missing x
            "tile/0/x1/000",
            "tile/0/xx01/000",
            "tile/0/000/",
            "tile/0//000",
            "tile/0/000.p",
            "tile/0/000.p/",
            "tile/0/000.p/0",   // width 0
            "tile/0/000.p/256", // a full tile has no .p
            "tile/0/000.p/05",  // leading zero in the width
            "tile/0/000.p/1/",
            "tile/0/000.p/1.p/1",
            "tile/0/000.q/1",
            "tile/0/000.p/ 1",
            "tile/0/x018/x446/x744/x073/x709/x551/616", // beyond u64
            "tile/0/x001/x000/x000/x000/x000/x000/x000/000", // eight groups
            "tile/entries/",
            "tile/entries/abc",
            "tile/entries/000.p/999",
            "tile/data/000",
            "tile/0/٠٠٠", // non-ASCII digits
        ] {
            assert!(
                matches!(parse(bad), Err(Error::Malformed(_))),
                "{bad:?} was accepted: {:?}",
                parse(bad)
            );
        }
    }

    #[test]
    fn widths_follow_the_tree() {
        let t = |level, index| TileId { level, index };
        // The spec's example: a tree of 70,000 leaves.
        assert_eq!(tile_width(t(0, 272), 70_000), 256);
        assert_eq!(tile_width(t(0, 273), 70_000), 112);
        assert_eq!(tile_width(t(0, 274), 70_000), 0);
        assert_eq!(tile_width(t(1, 0), 70_000), 256);
        assert_eq!(tile_width(t(1, 1), 70_000), 17);
        assert_eq!(tile_width(t(2, 0), 70_000), 1);
        assert_eq!(tile_width(t(3, 0), 70_000), 0);
        // A tree of 256: one full level-0 tile and a level-1 tile of width 1.
        assert_eq!(tile_width(t(0, 0), 256), 256);
        assert_eq!(tile_width(t(0, 1), 256), 0);
        assert_eq!(tile_width(t(1, 0), 256), 1);
        assert_eq!(tile_width(t(0, 0), 0), 0);
        assert_eq!(tile_width(t(63, 0), u64::MAX), 0);
        assert_eq!(tile_width(t(7, 0), u64::MAX), 255);
        assert_eq!(tile_width(t(0, u64::MAX), u64::MAX), 0);

        let full = req(TileKind::Hashes(0), 0, 256);
        let p5 = req(TileKind::Hashes(0), 0, 5);
        assert!(!covered(&full, 255));
        assert!(covered(&full, 256));
        assert!(covered(&p5, 5));
        assert!(!covered(&p5, 4));
        assert!(covered(&p5, 1000), "a narrower tile of an earlier size");
        let entries = req(TileKind::Entries, 1, 1);
        assert!(!covered(&entries, 256));
        assert!(covered(&entries, 257));
    }

    proptest::proptest! {
        /// Any string parses or is refused, never panics; what parses is canonical.
        #[test]
        fn parse_never_panics_and_accepts_only_canonical(path in "(/?tile/)?[0-9a-z./x+-]{0,40}") {
            if let Ok(r) = parse(&path) {
                proptest::prop_assert_eq!(r.path(), path.trim_start_matches('/'));
            }
        }

        /// Every request's path parses back to it.
        #[test]
        fn every_request_round_trips(level in 0u8..=63, entries: bool, index: u64, width in 1usize..=256) {
            let kind = if entries { TileKind::Entries } else { TileKind::Hashes(level) };
            let r = TileRequest { kind, index, width };
            proptest::prop_assert_eq!(parse(&r.path()), Ok(r));
        }
    }

    #[test]
    fn entry_bundles_round_trip() {
        let a = [7u8; 32];
        let b = [9u8; 32];
        let bundle = entry_bundle(&[a, b]).unwrap();
        assert_eq!(bundle.len(), 2 * 34);
        assert_eq!(&bundle[..2], &[0, 32]);
        assert_eq!(parse_entry_bundle(&bundle).unwrap(), vec![&a[..], &b[..]]);
        assert_eq!(parse_entry_bundle(&[]).unwrap(), Vec::<&[u8]>::new());
        assert!(parse_entry_bundle(&bundle[..67]).is_err());
        assert!(parse_entry_bundle(&[0]).is_err());
        assert!(entry_bundle(&vec![[0u8; 1]; 257]).is_err());
        assert!(entry_bundle(&[vec![0u8; 65_536]]).is_err());
        assert_eq!(entry_leaf(&a), leaf_hash(&a));
    }
}
