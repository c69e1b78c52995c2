//! Pictures of any size as images of the model's size, and back. A picture of H × W is cut
//! into ceil(H/h) × ceil(W/w) tiles of the model's h × w, row-major ([`tile_grid`]); the tiles
//! of the last row and column are padded beyond the picture ([`Padding`]: its last row and
//! column repeated, or a constant). The padding is coded with the tiles, so it is counted in
//! the rate; cropping takes the picture back out. Which padding a picture gets is the model's
//! choice ([`super::padding`]).

use vae_codec::format::{tile_grid, Padding};
use vae_core::DataShape;

use crate::{InferError, Result};

/// How many tiles of `tile` a picture of `pic` takes.
pub fn count(pic: DataShape, tile: DataShape) -> usize {
    let (rows, cols) = grid(pic, tile);
    rows * cols
}

fn grid(pic: DataShape, tile: DataShape) -> (usize, usize) {
    let (rows, cols) = tile_grid(
        pic.height as u32,
        pic.width as u32,
        tile.height as u32,
        tile.width as u32,
    );
    (rows as usize, cols as usize)
}

fn check(pic: DataShape, tile: DataShape) -> Result<()> {
    if pic.channels != tile.channels || pic.dim() == 0 || tile.dim() == 0 {
        return Err(InferError::Input(format!(
            "a {}x{}x{} picture cannot be cut into {}x{}x{} tiles",
            pic.channels, pic.height, pic.width, tile.channels, tile.height, tile.width
        )));
    }
    Ok(())
}

/// Whether a picture of `pic` leaves part of its last tiles to the padding.
pub fn is_padded(pic: DataShape, tile: DataShape) -> bool {
    !pic.height.is_multiple_of(tile.height.max(1)) || !pic.width.is_multiple_of(tile.width.max(1))
}

/// The indices of the tiles that hold padding (the last row and column of tiles, where the
/// picture does not fill them), in order.
pub fn padded_tiles(pic: DataShape, tile: DataShape) -> Vec<usize> {
    let (rows, cols) = grid(pic, tile);
    let (short_row, short_col) = (
        !pic.height.is_multiple_of(tile.height.max(1)),
        !pic.width.is_multiple_of(tile.width.max(1)),
    );
    (0..rows * cols)
        .filter(|t| (short_row && t / cols == rows - 1) || (short_col && t % cols == cols - 1))
        .collect()
}

/// The tiles of `tile` of the picture `px` (channel-major, of `pic`), one after another,
/// each channel-major, the last row and column of tiles padded with `padding`.
pub fn cut(px: &[u8], pic: DataShape, tile: DataShape, padding: Padding) -> Result<Vec<u8>> {
    cut_some(px, pic, tile, padding, 0..count(pic, tile))
}

/// The tiles `which` (indices in row-major order) of [`cut`].
pub fn cut_some(
    px: &[u8],
    pic: DataShape,
    tile: DataShape,
    padding: Padding,
    which: impl IntoIterator<Item = usize>,
) -> Result<Vec<u8>> {
    check(pic, tile)?;
    if px.len() != pic.dim() {
        return Err(InferError::Input(format!(
            "{} values for a {}x{}x{} picture",
            px.len(),
            pic.channels,
            pic.height,
            pic.width
        )));
    }
    let (rows, cols) = grid(pic, tile);
    let (h, w, th, tw) = (pic.height, pic.width, tile.height, tile.width);
    let mut out = Vec::new();
    for t in which {
        if t >= rows * cols {
            return Err(InferError::Input(format!(
                "tile {t} of a picture of {} tiles",
                rows * cols
            )));
        }
        let (y0, x0) = (t / cols * th, t % cols * tw);
        let inside = tw.min(w - x0);
        for plane in px.chunks_exact(h * w) {
            for sy in y0..y0 + th {
                let row = &plane[sy.min(h - 1) * w..][..w];
                match padding {
                    Padding::Constant(v) if sy >= h => out.extend(std::iter::repeat_n(v, tw)),
                    Padding::Constant(v) => {
                        out.extend_from_slice(&row[x0..x0 + inside]);
                        out.extend(std::iter::repeat_n(v, tw - inside));
                    }
                    Padding::Edge => {
                        out.extend_from_slice(&row[x0..x0 + inside]);
                        out.extend(std::iter::repeat_n(row[w - 1], tw - inside));
                    }
                }
            }
        }
    }
    Ok(out)
}

/// The picture of `pic` cropped out of its tiles (as [`cut`] makes them).
pub fn crop(tiles: &[u8], pic: DataShape, tile: DataShape) -> Result<Vec<u8>> {
    check(pic, tile)?;
    let (rows, cols) = grid(pic, tile);
    if tiles.len() != rows * cols * tile.dim() {
        return Err(InferError::Input(format!(
            "{} values for the {} tiles of a {}x{}x{} picture",
            tiles.len(),
            rows * cols,
            pic.channels,
            pic.height,
            pic.width
        )));
    }
    let (h, w, th, tw) = (pic.height, pic.width, tile.height, tile.width);
    let mut out = vec![0u8; pic.dim()];
    for (t, px) in tiles.chunks_exact(tile.dim()).enumerate() {
        let (y0, x0) = (t / cols * th, t % cols * tw);
        let inside = tw.min(w - x0);
        for (c, plane) in px.chunks_exact(th * tw).enumerate() {
            for y in 0..th.min(h - y0) {
                let to = c * h * w + (y0 + y) * w + x0;
                out[to..to + inside].copy_from_slice(&plane[y * tw..][..inside]);
            }
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    fn picture(pic: DataShape) -> Vec<u8> {
        (0..pic.dim()).map(|i| (i * 7 % 251) as u8).collect()
    }

    /// Pictures smaller than, as large as and larger than a tile, in grey and colour: the
    /// tiles' count is the grid's, cropping gives the picture back, and a picture of exactly
    /// one tile is its own tile.
    #[test]
    fn cut_then_crop_gives_the_picture_back() {
        for c in [1, 3] {
            let tile = DataShape::image(c, 4, 5);
            for (h, w, n) in [
                (1, 1, 1),
                (4, 5, 1),
                (3, 2, 1),
                (8, 10, 4),
                (9, 11, 9),
                (13, 5, 4),
            ] {
                let pic = DataShape::image(c, h, w);
                let px = picture(pic);
                assert_eq!(count(pic, tile), n, "{h}x{w}");
                for padding in [Padding::Edge, Padding::Constant(0), Padding::Constant(9)] {
                    let tiles = cut(&px, pic, tile, padding).unwrap();
                    assert_eq!(tiles.len(), n * tile.dim(), "{h}x{w}");
                    assert_eq!(crop(&tiles, pic, tile).unwrap(), px, "{h}x{w}");
                    if (h, w) == (4, 5) {
                        assert_eq!(tiles, px);
                    }
                }
            }
        }
    }

    /// Edge padding repeats the last column and row, constant padding fills: a 3x5 picture
    /// in 2x2 tiles (2 x 3 tiles, the last row and column of them padded).
    #[test]
    fn padding_repeats_the_edges_or_fills() {
        let (pic, tile) = (DataShape::image(1, 3, 5), DataShape::image(1, 2, 2));
        let px: Vec<u8> = (10..25).collect();
        assert!(is_padded(pic, tile));
        assert_eq!(padded_tiles(pic, tile), [2, 3, 4, 5]);
        // rows: 10..15, 15..20, 20..25
        let tiles = cut(&px, pic, tile, Padding::Edge).unwrap();
        assert_eq!(
            cut_some(&px, pic, tile, Padding::Edge, [2, 5]).unwrap(),
            [&tiles[8..12], &tiles[20..24]].concat()
        );
        assert!(cut_some(&px, pic, tile, Padding::Edge, [6]).is_err());
        let want: Vec<u8> = [
            [10, 11, 15, 16],
            [12, 13, 17, 18],
            [14, 14, 19, 19],
            [20, 21, 20, 21],
            [22, 23, 22, 23],
            [24, 24, 24, 24],
        ]
        .concat();
        assert_eq!(tiles, want);
        let tiles = cut(&px, pic, tile, Padding::Constant(1)).unwrap();
        let want: Vec<u8> = [
            [10, 11, 15, 16],
            [12, 13, 17, 18],
            [14, 1, 19, 1],
            [20, 21, 1, 1],
            [22, 23, 1, 1],
            [24, 1, 1, 1],
        ]
        .concat();
        assert_eq!(tiles, want);
        let whole = DataShape::image(1, 4, 6);
        assert!(!is_padded(whole, tile));
        assert!(padded_tiles(whole, tile).is_empty());
        assert_eq!(padded_tiles(DataShape::image(1, 4, 5), tile), [2, 5]);
    }

    /// Colour tiles are channel-major, each plane padded from its own edge.
    #[test]
    fn colour_tiles_are_channel_major() {
        let pic = DataShape::image(3, 1, 1);
        let tiles = cut(&[1, 2, 3], pic, DataShape::image(3, 2, 1), Padding::Edge).unwrap();
        assert_eq!(tiles, [1, 1, 2, 2, 3, 3]);
        let tiles = cut(
            &[1, 2, 3],
            pic,
            DataShape::image(3, 2, 1),
            Padding::Constant(0),
        )
        .unwrap();
        assert_eq!(tiles, [1, 0, 2, 0, 3, 0]);
    }

    #[test]
    fn sizes_that_disagree_are_refused() {
        let (pic, tile) = (DataShape::image(1, 3, 3), DataShape::image(1, 2, 2));
        assert!(cut(&[0; 8], pic, tile, Padding::Edge).is_err());
        assert!(crop(&[0; 15], pic, tile).is_err());
        assert!(cut(&[0; 9], pic, DataShape::image(3, 2, 2), Padding::Edge).is_err());
    }
}
