//! tlog-tiles storage math (C2SP `tlog-tiles`, tile height 8): a tile `(level L, index i)`
//! holds up to 256 hashes of tree level `8·L`, those of nodes `i·256 .. i·256 + width`. Level
//! 0 tiles hold leaf hashes; a level-`L+1` tile holds the roots of full level-`L` tiles. Any
//! complete subtree's hash is in exactly one tile, folded from at most 128 of its hashes, so
//! a proof in a log of n leaves reads O(log n) tiles and never rehashes the log.
//!
//! Full tiles never change. The rightmost tile of each level is partial (width < 256) and
//! is rewritten, wider, as the log grows; [`Edge`] keeps those partial tiles in memory.

use std::collections::HashMap;

use crate::Error;
use crate::merkle::{Hash, HashReader, NodeId, complete_hash, fold, root_nodes};

/// Levels of the tree per tile level.
pub const TILE_HEIGHT: u8 = 8;
/// Hashes in a full tile.
pub const TILE_WIDTH: usize = 1 << TILE_HEIGHT;

/// A tile's coordinates.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TileId {
    /// Tile level (`tree level / 8`).
    pub level: u8,
    /// Position among the tiles of that level.
    pub index: u64,
}

/// The tile holding `node` and the range of its hashes the node folds:
/// `(tile, first, count)`.
pub fn locate(node: NodeId) -> (TileId, usize, usize) {
    let level = node.level / TILE_HEIGHT;
    let sub = node.level % TILE_HEIGHT;
    let first = node.index << sub;
    let tile = TileId {
        level,
        index: first / TILE_WIDTH as u64,
    };
    ((tile), (first % TILE_WIDTH as u64) as usize, 1usize << sub)
}

/// The distinct tiles holding `nodes`, sorted.
pub fn tiles_for(nodes: &[NodeId]) -> Vec<TileId> {
    let mut tiles: Vec<TileId> = nodes.iter().map(|n| locate(*n).0).collect();
    tiles.sort_unstable();
    tiles.dedup();
    tiles
}

/// Fetched tiles, as a [`HashReader`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TileSet {
    /// Tile contents by coordinates.
    pub tiles: HashMap<TileId, Vec<Hash>>,
}

impl TileSet {
    /// Adds (or replaces) a tile.
    pub fn insert(&mut self, id: TileId, hashes: Vec<Hash>) {
        self.tiles.insert(id, hashes);
    }
}

fn read_from(tiles: &HashMap<TileId, Vec<Hash>>, node: NodeId) -> Result<Hash, Error> {
    let (tile, first, count) = locate(node);
    let hashes = tiles
        .get(&tile)
        .ok_or_else(|| Error::Missing(format!("tile {tile:?} for node {node:?}")))?;
    let slice = hashes.get(first..first + count).ok_or_else(|| {
        Error::Missing(format!(
            "tile {tile:?} has {} hashes, node {node:?} needs {}..{}",
            hashes.len(),
            first,
            first + count
        ))
    })?;
    Ok(complete_hash(slice))
}

impl HashReader for TileSet {
    fn read_hashes(&self, nodes: &[NodeId]) -> Result<Vec<Hash>, Error> {
        nodes.iter().map(|n| read_from(&self.tiles, *n)).collect()
    }
}

/// Encodes a tile's hashes for storage: the 32-byte hashes concatenated (as tlog-tiles
/// serves them).
pub fn encode(hashes: &[Hash]) -> Vec<u8> {
    hashes.concat()
}

/// Decodes [`encode`]'s bytes; fails unless the length is a multiple of 32 and at most 256
/// hashes.
pub fn decode(bytes: &[u8]) -> Result<Vec<Hash>, Error> {
    if !bytes.len().is_multiple_of(32) || bytes.len() > 32 * TILE_WIDTH {
        return Err(Error::Malformed(format!("tile of {} bytes", bytes.len())));
    }
    Ok(bytes
        .chunks_exact(32)
        .map(|c| {
            let mut h = [0u8; 32];
            h.copy_from_slice(c);
            h
        })
        .collect())
}

/// The partial (rightmost) tile of each tile level of a tree of `size` leaves, with the
/// width it has: what [`Edge::load`] needs.
pub fn edge_tiles(size: u64) -> Vec<(TileId, usize)> {
    let mut out = Vec::new();
    let mut level = 0u8;
    loop {
        let shift = u32::from(level) * u32::from(TILE_HEIGHT);
        let count = size.checked_shr(shift).unwrap_or(0);
        if count == 0 {
            break;
        }
        let width = (count % TILE_WIDTH as u64) as usize;
        if width > 0 {
            out.push((
                TileId {
                    level,
                    index: count / TILE_WIDTH as u64,
                },
                width,
            ));
        }
        level += 1;
    }
    out
}

/// The right edge of the tree: the partial tile of each level. Appending leaves yields the
/// tiles that changed (completed full tiles and the new partial ones), and the edge alone
/// gives the root: every node of the root's decomposition lies in a partial tile.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Edge {
    size: u64,
    /// `partial[L]`: the hashes of level `8·L` in the rightmost, not yet full tile.
    partial: Vec<Vec<Hash>>,
}

impl Edge {
    /// The empty tree.
    pub fn new() -> Self {
        Self::default()
    }

    /// The edge of a stored tree of `size` leaves from its partial tiles (as
    /// [`edge_tiles`] names them); fails if one is missing or of the wrong width.
    pub fn load(size: u64, tiles: &TileSet) -> Result<Self, Error> {
        let mut partial = Vec::new();
        for (id, width) in edge_tiles(size) {
            let hashes = tiles
                .tiles
                .get(&id)
                .ok_or_else(|| Error::Missing(format!("edge tile {id:?}")))?;
            let prefix = hashes.get(..width).ok_or_else(|| {
                Error::Missing(format!(
                    "edge tile {id:?} has {} hashes, needs {width}",
                    hashes.len()
                ))
            })?;
            partial.resize(usize::from(id.level) + 1, Vec::new());
            partial[usize::from(id.level)] = prefix.to_vec();
        }
        Ok(Self { size, partial })
    }

    /// Leaves in the tree.
    pub fn size(&self) -> u64 {
        self.size
    }

    /// Appends leaf hashes; returns every tile that changed, with its new contents (full
    /// tiles completed on the way, then the partial tiles), to be written.
    pub fn append(&mut self, leaves: &[Hash]) -> Vec<(TileId, Vec<Hash>)> {
        let mut full: Vec<(TileId, Vec<Hash>)> = Vec::new();
        let start = self.size;
        for leaf in leaves {
            self.push_inner(*leaf, &mut |id, tile| full.push((id, tile)));
        }
        if self.size > start {
            // The partial tiles that differ from before: every level whose count changed.
            for (id, width) in edge_tiles(self.size) {
                let shift = u32::from(id.level) * u32::from(TILE_HEIGHT);
                if start.checked_shr(shift).unwrap_or(0)
                    != self.size.checked_shr(shift).unwrap_or(0)
                {
                    let hashes = &self.partial[usize::from(id.level)];
                    full.push((id, hashes[..width.min(hashes.len())].to_vec()));
                }
            }
        }
        full.sort_unstable_by_key(|(id, _)| *id);
        full
    }

    /// Appends one leaf hash without reporting tiles (for recomputing a tree).
    pub fn push(&mut self, leaf: Hash) {
        self.push_inner(leaf, &mut |_, _| {});
    }

    fn push_inner(&mut self, leaf: Hash, completed: &mut dyn FnMut(TileId, Vec<Hash>)) {
        let mut hash = leaf;
        let mut level = 0usize;
        let mut position = self.size;
        loop {
            if self.partial.len() <= level {
                self.partial.push(Vec::new());
            }
            self.partial[level].push(hash);
            let index = position / TILE_WIDTH as u64;
            if self.partial[level].len() < TILE_WIDTH {
                break;
            }
            let tile = std::mem::take(&mut self.partial[level]);
            hash = complete_hash(&tile);
            completed(
                TileId {
                    level: level as u8,
                    index,
                },
                tile,
            );
            level += 1;
            position = index;
        }
        self.size += 1;
    }

    /// The partial tiles as a [`TileSet`].
    pub fn tiles(&self) -> TileSet {
        let mut set = TileSet::default();
        for (id, width) in edge_tiles(self.size) {
            if let Some(hashes) = self.partial.get(usize::from(id.level)) {
                set.insert(id, hashes[..width.min(hashes.len())].to_vec());
            }
        }
        set
    }

    /// The root of the tree (MTH of all leaves appended).
    pub fn root(&self) -> Hash {
        if self.size == 0 {
            return crate::merkle::empty_root();
        }
        let tiles = self.tiles();
        // Every node of the root's decomposition is in a partial tile (see the type's doc),
        // so the read cannot miss; the fallback is unreachable.
        tiles
            .read_hashes(&root_nodes(self.size))
            .ok()
            .and_then(|h| fold(&h))
            .unwrap_or_else(crate::merkle::empty_root)
    }
}
