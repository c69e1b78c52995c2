//! The HTML report: one self-contained page (pictures inlined as base64 `data:` URIs, styles
//! inline, no scripts, nothing fetched) that can be mailed, archived or opened offline.

use base64::Engine;

/// A picture with a caption.
#[derive(Debug, Clone)]
pub struct Figure {
    pub caption: String,
    pub png: Vec<u8>,
}

/// A titled group of figures shown side by side (wrapping when the window is narrow).
#[derive(Debug, Clone)]
pub struct Section {
    pub heading: String,
    pub figures: Vec<Figure>,
    /// A sentence shown when the section has nothing to draw (for example no training curves).
    pub note: Option<String>,
}

/// A titled table of named values.
#[derive(Debug, Clone)]
pub struct Table {
    pub heading: String,
    pub rows: Vec<(String, String)>,
}

/// Everything on the page, in order: title, tables, sections of figures, configuration.
#[derive(Debug, Clone)]
pub struct Page {
    pub title: String,
    pub subtitle: String,
    pub tables: Vec<Table>,
    pub sections: Vec<Section>,
    /// The run's configuration as pretty-printed JSON.
    pub config_json: String,
}

/// Escapes text for HTML element content and attribute values.
pub fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// A PNG as a `data:` URI.
pub fn data_uri(png: &[u8]) -> String {
    format!(
        "data:image/png;base64,{}",
        base64::engine::general_purpose::STANDARD.encode(png)
    )
}

const STYLE: &str = "body{font-family:system-ui,-apple-system,'Segoe UI',Roboto,'DejaVu Sans',sans-serif;\
margin:24px auto;max-width:1140px;padding:0 16px;color:#1d1d1f;background:#fff}\
h1{font-size:26px;margin:0 0 4px}h2{font-size:19px;margin:28px 0 10px;border-bottom:1px solid #ddd;padding-bottom:4px}\
.sub{color:#555;margin:0 0 12px}.tables{display:flex;flex-wrap:wrap;gap:28px;align-items:flex-start}\
table{border-collapse:collapse;font-size:14px}td,th{padding:3px 14px 3px 0;text-align:left}\
td.v{font-variant-numeric:tabular-nums;text-align:right}th{font-size:15px;padding-bottom:6px}\
.row{display:flex;flex-wrap:wrap;gap:18px;align-items:flex-start}figure{margin:0}\
figure img{display:block;max-width:100%;image-rendering:pixelated;border:1px solid #e5e5e5}\
figcaption{font-size:13px;color:#555;margin-top:4px;max-width:520px}.note{color:#777;font-style:italic}\
pre{background:#f6f6f6;padding:12px;font-size:12px;overflow:auto;border-radius:4px}";

/// The page as one HTML document.
pub fn render(page: &Page) -> String {
    use std::fmt::Write;
    let mut h = String::new();
    let _ = write!(
        h,
        "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n<title>{}</title>\n<style>{STYLE}</style>\n</head>\n<body>\n<h1>{}</h1>\n<p class=\"sub\">{}</p>\n",
        escape(&page.title),
        escape(&page.title),
        escape(&page.subtitle)
    );
    h.push_str("<div class=\"tables\">\n");
    for t in &page.tables {
        let _ = write!(
            h,
            "<table>\n<tr><th colspan=\"2\">{}</th></tr>\n",
            escape(&t.heading)
        );
        for (k, v) in &t.rows {
            let _ = writeln!(
                h,
                "<tr><td>{}</td><td class=\"v\">{}</td></tr>",
                escape(k),
                escape(v)
            );
        }
        h.push_str("</table>\n");
    }
    h.push_str("</div>\n");
    for s in &page.sections {
        let _ = writeln!(h, "<h2>{}</h2>", escape(&s.heading));
        if let Some(n) = &s.note {
            let _ = writeln!(h, "<p class=\"note\">{}</p>", escape(n));
        }
        h.push_str("<div class=\"row\">\n");
        for f in &s.figures {
            let _ = writeln!(
                h,
                "<figure><img src=\"{}\" alt=\"{}\"><figcaption>{}</figcaption></figure>",
                data_uri(&f.png),
                escape(&f.caption),
                escape(&f.caption)
            );
        }
        h.push_str("</div>\n");
    }
    let _ = write!(
        h,
        "<h2>Configuration</h2>\n<pre>{}</pre>\n</body>\n</html>\n",
        escape(&page.config_json)
    );
    h
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn page_is_self_contained_and_escaped() {
        let page = Page {
            title: "report <x>".into(),
            subtitle: "a & b".into(),
            tables: vec![Table {
                heading: "Numbers".into(),
                rows: vec![("k-NN \"5\"".into(), "0.85".into())],
            }],
            sections: vec![Section {
                heading: "Pictures".into(),
                figures: vec![Figure {
                    caption: "tiny".into(),
                    png: vec![0x89, b'P', b'N', b'G'],
                }],
                note: None,
            }],
            config_json: "{\"a\": \"<b>\"}".into(),
        };
        let h = render(&page);
        assert!(h.contains("<title>report &lt;x&gt;</title>"));
        assert!(h.contains("a &amp; b"));
        assert!(h.contains("k-NN &quot;5&quot;"));
        assert!(h.contains("src=\"data:image/png;base64,iVBORw==\""));
        assert!(h.contains("{&quot;a&quot;: &quot;&lt;b&gt;&quot;}"));
        // Nothing is fetched: no external sources or links.
        assert!(!h.contains("http://") && !h.contains("https://") && !h.contains("<script"));
    }
}
