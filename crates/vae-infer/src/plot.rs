//! Charts as PNG: the latent scatter coloured by label and the training curves.
//!
//! Drawn by plotters into an RGB buffer and encoded by `image`. Text is rasterised by ab_glyph
//! from DejaVu Sans (matplotlib's default face), embedded in the binary by the `dejavu` crate,
//! so charts need no system fonts.

use std::path::Path;
use std::sync::OnceLock;

use plotters::prelude::*;
use plotters::style::FontStyle;

use crate::{InferError, Result};

/// matplotlib's `tab10` colours, cycled for more than ten classes.
const TAB10: [(u8, u8, u8); 10] = [
    (31, 119, 180),
    (255, 127, 14),
    (44, 160, 44),
    (214, 39, 40),
    (148, 103, 189),
    (140, 86, 75),
    (227, 119, 194),
    (127, 127, 127),
    (188, 189, 34),
    (23, 190, 207),
];

fn colour(i: usize) -> RGBColor {
    let (r, g, b) = TAB10[i % TAB10.len()];
    RGBColor(r, g, b)
}

fn plot_err(what: &str, e: impl std::fmt::Display) -> InferError {
    InferError::Plot(format!("drawing the {what}: {e}"))
}

/// Registers the embedded font under plotters' `sans-serif` family, once.
fn fonts() -> Result<()> {
    static DONE: OnceLock<bool> = OnceLock::new();
    let ok = *DONE.get_or_init(|| {
        plotters::style::register_font("sans-serif", FontStyle::Normal, dejavu::sans::regular())
            .is_ok()
    });
    if ok {
        Ok(())
    } else {
        Err(InferError::Plot(
            "the embedded DejaVu Sans font could not be read".into(),
        ))
    }
}

fn encode_png(buf: Vec<u8>, w: u32, h: u32) -> Result<Vec<u8>> {
    let img = image::RgbImage::from_raw(w, h, buf)
        .ok_or_else(|| InferError::Plot("chart buffer of the wrong size".into()))?;
    let mut out = std::io::Cursor::new(Vec::new());
    img.write_to(&mut out, image::ImageFormat::Png)
        .map_err(|e| InferError::Plot(format!("encoding PNG: {e}")))?;
    Ok(out.into_inner())
}

/// A range around `values` with 5% margins (a unit range around a single value).
fn padded_range(values: impl Iterator<Item = f64>) -> std::ops::Range<f64> {
    let (lo, hi) = values
        .filter(|v| v.is_finite())
        .fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), v| {
            (a.min(v), b.max(v))
        });
    if !lo.is_finite() {
        return 0.0..1.0;
    }
    let pad = if hi > lo { 0.05 * (hi - lo) } else { 0.5 };
    lo - pad..hi + pad
}

/// What a latent scatter shows.
pub struct Scatter<'a> {
    /// 2-D points, row-major `[n, 2]`.
    pub points: &'a [f64],
    /// A label per point (one colour per label), or none.
    pub labels: Option<&'a [u32]>,
    /// Names of the labels for the legend.
    pub names: &'a [String],
    pub title: &'a str,
    pub x_desc: &'a str,
    pub y_desc: &'a str,
}

/// The scatter plot of `s` as PNG bytes: the chart, and a legend to its right.
pub fn scatter_png(s: &Scatter) -> Result<Vec<u8>> {
    fonts()?;
    let (w, h) = (860u32, 660u32);
    let mut buf = vec![255u8; (w * h * 3) as usize];
    {
        let root = BitMapBackend::with_buffer(&mut buf, (w, h)).into_drawing_area();
        let e = |e| plot_err("latent scatter", e);
        root.fill(&WHITE).map_err(e)?;
        let (left, right) = root.split_horizontally(700);
        let xs = padded_range(s.points.iter().step_by(2).copied());
        let ys = padded_range(s.points.iter().skip(1).step_by(2).copied());
        let mut chart = ChartBuilder::on(&left)
            .caption(s.title, ("sans-serif", 22))
            .margin(12)
            .x_label_area_size(42)
            .y_label_area_size(52)
            .build_cartesian_2d(xs, ys)
            .map_err(e)?;
        chart
            .configure_mesh()
            .x_desc(s.x_desc)
            .y_desc(s.y_desc)
            .label_style(("sans-serif", 14))
            .axis_desc_style(("sans-serif", 16))
            .light_line_style(WHITE.mix(0.0))
            .draw()
            .map_err(e)?;
        let label_of = |i: usize| s.labels.map_or(0, |l| l[i] as usize);
        chart
            .draw_series(
                s.points.chunks_exact(2).enumerate().map(|(i, p)| {
                    Circle::new((p[0], p[1]), 2, colour(label_of(i)).mix(0.7).filled())
                }),
            )
            .map_err(e)?;
        if let Some(labels) = s.labels {
            let classes = labels.iter().max().map_or(0, |&m| m as usize + 1);
            for c in 0..classes {
                let y = 60 + 26 * c as i32;
                right
                    .draw(&Circle::new((14, y), 6, colour(c).filled()))
                    .map_err(e)?;
                let name = s.names.get(c).cloned().unwrap_or_else(|| c.to_string());
                right
                    .draw(&Text::new(
                        name,
                        (28, y - 8),
                        ("sans-serif", 15).into_font(),
                    ))
                    .map_err(e)?;
            }
        }
        root.present().map_err(e)?;
    }
    encode_png(buf, w, h)
}

/// Named series of (x, y) points drawn as lines with markers.
pub type Series = (String, Vec<(f64, f64)>);

/// The label of an x tick: on an axis of whole numbers (epochs) the whole numbers alone (the
/// ticks of a short run fall between them, and would all read "1"), one decimal otherwise.
fn tick_label(v: f64, integral: bool) -> String {
    if !integral {
        format!("{v:.1}")
    } else if (v - v.round()).abs() < 1e-9 {
        format!("{v:.0}")
    } else {
        String::new()
    }
}

/// Line chart of `series` as PNG bytes; non-finite points are left out.
pub fn lines_png(series: &[Series], title: &str, x_desc: &str, y_desc: &str) -> Result<Vec<u8>> {
    fonts()?;
    let (w, h) = (860u32, 480u32);
    let mut buf = vec![255u8; (w * h * 3) as usize];
    {
        let root = BitMapBackend::with_buffer(&mut buf, (w, h)).into_drawing_area();
        let e = |e| plot_err("training curves", e);
        root.fill(&WHITE).map_err(e)?;
        let finite = |p: &&(f64, f64)| p.0.is_finite() && p.1.is_finite();
        let all = || series.iter().flat_map(|s| s.1.iter().filter(finite));
        let xs = padded_range(all().map(|p| p.0));
        let ys = padded_range(all().map(|p| p.1));
        let mut chart = ChartBuilder::on(&root)
            .caption(title, ("sans-serif", 22))
            .margin(12)
            .x_label_area_size(42)
            .y_label_area_size(64)
            .build_cartesian_2d(xs, ys)
            .map_err(e)?;
        let integral = all().all(|p| p.0.fract() == 0.0);
        let whole = |v: &f64| tick_label(*v, integral);
        chart
            .configure_mesh()
            .x_desc(x_desc)
            .y_desc(y_desc)
            .x_labels(12)
            .x_label_formatter(&whole)
            .y_label_formatter(&|v| format!("{v:.1}"))
            .label_style(("sans-serif", 14))
            .axis_desc_style(("sans-serif", 16))
            .light_line_style(WHITE.mix(0.0))
            .draw()
            .map_err(e)?;
        for (i, (name, pts)) in series.iter().enumerate() {
            let c = colour(i);
            let pts: Vec<(f64, f64)> = pts.iter().filter(finite).copied().collect();
            chart
                .draw_series(LineSeries::new(pts.iter().copied(), c.stroke_width(2)))
                .map_err(e)?
                .label(name.as_str())
                .legend(move |(x, y)| {
                    PathElement::new(vec![(x, y), (x + 20, y)], c.stroke_width(2))
                });
            chart
                .draw_series(pts.iter().map(|&p| Circle::new(p, 3, c.filled())))
                .map_err(e)?;
        }
        chart
            .configure_series_labels()
            .position(SeriesLabelPosition::UpperRight)
            .label_font(("sans-serif", 15))
            .background_style(WHITE.mix(0.85))
            .border_style(BLACK.mix(0.4))
            .draw()
            .map_err(e)?;
        root.present().map_err(e)?;
    }
    encode_png(buf, w, h)
}

/// The per-epoch `train_loss` and `val_loss` of a run's metrics.jsonl (the last line of each
/// epoch wins; "NaN" strings read as NaN).
pub fn read_curves(path: &Path) -> Result<Vec<Series>> {
    let text = std::fs::read_to_string(path).map_err(|e| InferError::File {
        path: path.into(),
        msg: e.to_string(),
    })?;
    let mut rows: std::collections::BTreeMap<u64, (f64, f64)> = Default::default();
    let num = |v: &serde_json::Value| match v {
        serde_json::Value::Number(n) => n.as_f64().unwrap_or(f64::NAN),
        _ => f64::NAN,
    };
    for (i, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let v: serde_json::Value = serde_json::from_str(line).map_err(|e| InferError::File {
            path: path.into(),
            msg: format!("line {}: not JSON: {e}", i + 1),
        })?;
        let epoch = v.get("epoch").and_then(serde_json::Value::as_u64);
        let (Some(epoch), Some(tl), Some(vl)) = (epoch, v.get("train_loss"), v.get("val_loss"))
        else {
            return Err(InferError::File {
                path: path.into(),
                msg: format!("line {}: needs `epoch`, `train_loss` and `val_loss`", i + 1),
            });
        };
        rows.insert(epoch, (num(tl), num(vl)));
    }
    let pick = |f: fn(&(f64, f64)) -> f64| rows.iter().map(|(&e, r)| (e as f64, f(r))).collect();
    Ok(vec![
        ("train loss".to_string(), pick(|r| r.0)),
        ("validation loss".to_string(), pick(|r| r.1)),
    ])
}

#[cfg(test)]
mod tests {
    use super::*;

    fn non_white(png: &[u8]) -> (f64, usize) {
        let img = image::load_from_memory(png).map(|i| i.to_rgb8());
        let img = match img {
            Ok(i) => i,
            Err(e) => panic!("not a PNG: {e}"),
        };
        let nw = img.pixels().filter(|p| p.0 != [255, 255, 255]).count();
        let colours: std::collections::HashSet<[u8; 3]> = img.pixels().map(|p| p.0).collect();
        (
            nw as f64 / (img.width() * img.height()) as f64,
            colours.len(),
        )
    }

    #[test]
    fn scatter_and_curves_draw_something() -> Result<()> {
        let points: Vec<f64> = (0..200)
            .flat_map(|i| [i as f64 % 17.0, i as f64 / 7.0])
            .collect();
        let labels: Vec<u32> = (0..200).map(|i| i % 4).collect();
        let names = vae_data::named::class_labels(Some("fashion-mnist"), 4);
        assert_eq!(names[3], "3 Dress");
        let png = scatter_png(&Scatter {
            points: &points,
            labels: Some(&labels),
            names: &names,
            title: "latent means",
            x_desc: "z0",
            y_desc: "z1",
        })?;
        let (share, colours) = non_white(&png);
        // Axes, text and 200 dots in four colours: some ink, far from all of it.
        assert!(share > 0.005 && share < 0.5, "{share}");
        assert!(
            colours > 20,
            "{colours} colours (antialiased text and four classes expected)"
        );

        let series = vec![
            (
                "train".to_string(),
                vec![(1.0, 300.0), (2.0, 280.0), (3.0, f64::NAN)],
            ),
            (
                "val".to_string(),
                vec![(1.0, 290.0), (2.0, 285.0), (3.0, 283.0)],
            ),
        ];
        let png = lines_png(&series, "curves", "epoch", "nats")?;
        let (share, _) = non_white(&png);
        assert!(share > 0.005 && share < 0.5, "{share}");
        Ok(())
    }

    /// A one-epoch run's axis runs from about 0.9 to 1.1: only its tick at 1 is labelled.
    #[test]
    fn epoch_ticks_label_whole_numbers_only() {
        let labels: Vec<String> = (0..=10)
            .map(|i| tick_label(0.9 + 0.02 * f64::from(i), true))
            .filter(|l| !l.is_empty())
            .collect();
        assert_eq!(labels, ["1"]);
        assert_eq!(tick_label(0.3, false), "0.3");
        assert_eq!(tick_label(3.0, true), "3");
    }

    #[test]
    fn metrics_lines_become_curves() -> Result<()> {
        let dir = tempfile::tempdir().map_err(|e| InferError::Plot(e.to_string()))?;
        let p = dir.path().join("metrics.jsonl");
        std::fs::write(
            &p,
            "{\"epoch\":1,\"train_loss\":300.5,\"val_loss\":290}\n{\"epoch\":2,\"train_loss\":\"NaN\",\"val_loss\":280}\n",
        )
        .map_err(|e| InferError::Plot(e.to_string()))?;
        let c = read_curves(&p)?;
        assert_eq!(c[0].1[0], (1.0, 300.5));
        assert!(c[0].1[1].1.is_nan());
        assert_eq!(c[1].1, vec![(1.0, 290.0), (2.0, 280.0)]);
        std::fs::write(&p, "{\"epoch\":1}\n").map_err(|e| InferError::Plot(e.to_string()))?;
        let e = read_curves(&p)
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(e.contains("metrics.jsonl") && e.contains("line 1"), "{e}");
        Ok(())
    }
}
