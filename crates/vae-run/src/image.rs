//! Pictures: grids of examples written as PNG.

use std::path::Path;

use image::{ImageBuffer, ImageFormat, Rgb};
use vae_core::DataShape;

use crate::{Result, RunError};

/// Lays out `n` examples (each `shape.dim()` values, channel-major, nominally in [0, 1]) in a
/// grid of `cols` columns with a 2-pixel border, scaled up `scale` times, and encodes it as PNG.
pub fn grid_png(values: &[f32], shape: DataShape, cols: usize, scale: u32) -> Result<Vec<u8>> {
    if !shape.is_image() {
        return Err(RunError::Mismatch(format!(
            "data of shape {}x{}x{} cannot be drawn as pictures",
            shape.channels, shape.height, shape.width
        )));
    }
    let d = shape.dim();
    let n = values.len() / d;
    let cols = cols.max(1).min(n.max(1));
    let rows = n.div_ceil(cols);
    let (h, w, c) = (shape.height, shape.width, shape.channels);
    let pad = 2;
    let cell_w = w as u32 * scale + pad;
    let cell_h = h as u32 * scale + pad;
    let mut img = ImageBuffer::from_pixel(
        cols as u32 * cell_w + pad,
        rows as u32 * cell_h + pad,
        Rgb([255u8, 255, 255]),
    );
    let to_u8 = |v: f32| (v.clamp(0.0, 1.0) * 255.0).round() as u8;
    for k in 0..n {
        let ex = &values[k * d..(k + 1) * d];
        let (gx, gy) = (
            (k % cols) as u32 * cell_w + pad,
            (k / cols) as u32 * cell_h + pad,
        );
        for y in 0..h {
            for x in 0..w {
                let px = if c == 1 {
                    let g = to_u8(ex[y * w + x]);
                    [g, g, g]
                } else {
                    [0, 1, 2].map(|ch| to_u8(ex[ch * h * w + y * w + x]))
                };
                for dy in 0..scale {
                    for dx in 0..scale {
                        img.put_pixel(
                            gx + x as u32 * scale + dx,
                            gy + y as u32 * scale + dy,
                            Rgb(px),
                        );
                    }
                }
            }
        }
    }
    let mut out = std::io::Cursor::new(Vec::new());
    img.write_to(&mut out, ImageFormat::Png)
        .map_err(|e| RunError::Png(e.to_string()))?;
    Ok(out.into_inner())
}

/// Writes a grid PNG atomically (no half-written picture is ever left behind).
pub fn write_grid(path: &Path, values: &[f32], shape: DataShape, cols: usize) -> Result<()> {
    let bytes = grid_png(values, shape, cols, 2)?;
    vae_core::weights::atomic_write(path, &bytes)?;
    Ok(())
}
