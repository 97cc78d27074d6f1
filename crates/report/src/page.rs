//! The page model and its one layout: a [`Page`] of [`Section`]s, each a list of [`Block`]s,
//! rendered by [`Page::to_html`] into one self-contained HTML file (styles, scripts, images
//! and audio inline; nothing fetched from the network).

use base64::Engine;
use std::fmt::Write;

/// One report page.
#[derive(Clone, Debug, Default)]
pub struct Page {
    /// The page title (the run's name).
    pub title: String,
    /// A line under the title.
    pub subtitle: String,
    /// The sections, in order.
    pub sections: Vec<Section>,
}

/// A titled part of a page.
#[derive(Clone, Debug, Default)]
pub struct Section {
    /// Its heading.
    pub title: String,
    /// Its content, in order.
    pub blocks: Vec<Block>,
}

impl Section {
    /// An empty section called `title`.
    pub fn new(title: impl Into<String>) -> Self {
        Self {
            title: title.into(),
            blocks: vec![],
        }
    }

    /// Appends a block.
    pub fn push(&mut self, b: Block) -> &mut Self {
        self.blocks.push(b);
        self
    }

    /// Appends a block (builder form).
    pub fn with(mut self, b: Block) -> Self {
        self.blocks.push(b);
        self
    }
}

/// One piece of content.
#[derive(Clone, Debug)]
pub enum Block {
    /// A paragraph of plain text.
    Text(String),
    /// Preformatted text (a config file).
    Pre(String),
    /// A table: a header row and rows of cells.
    Table {
        /// Column names.
        head: Vec<String>,
        /// Rows of cells.
        rows: Vec<Vec<String>>,
    },
    /// An SVG drawing (a plot from [`crate::plot`]).
    Svg(String),
    /// A PNG image, inlined.
    Png {
        /// The file's bytes.
        bytes: Vec<u8>,
        /// What it shows.
        alt: String,
        /// Display width in CSS pixels (the image is scaled without smoothing).
        width: Option<u32>,
    },
    /// A WAV clip with a player, inlined.
    Audio {
        /// The file's bytes.
        wav: Vec<u8>,
        /// What it is.
        caption: String,
    },
    /// A block with a caption under it.
    Figure {
        /// The content.
        content: Box<Block>,
        /// The caption.
        caption: String,
    },
    /// Blocks side by side (wrapping on narrow screens).
    Row(Vec<Block>),
    /// A block folded away under a one-line summary the reader clicks to open.
    Details {
        /// The line shown while folded.
        summary: String,
        /// The content.
        content: Box<Block>,
    },
}

impl Block {
    /// `content` with `caption` under it.
    pub fn figure(content: Block, caption: impl Into<String>) -> Self {
        Block::Figure {
            content: Box::new(content),
            caption: caption.into(),
        }
    }
}

/// Escapes text for HTML content and attribute values.
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

const STYLE: &str = "
:root { --fg: #1d2430; --muted: #5b6573; --line: #d8dde4; --bg: #fff; --panel: #f6f8fa; --accent: #2563eb; }
* { box-sizing: border-box; }
body { margin: 0; font: 15px/1.45 system-ui, -apple-system, 'Segoe UI', sans-serif; color: var(--fg); background: var(--bg); }
header { padding: 20px 32px 12px; border-bottom: 1px solid var(--line); background: var(--panel); }
header h1 { margin: 0 0 4px; font-size: 24px; }
header p { margin: 0; color: var(--muted); }
nav { margin-top: 10px; display: flex; flex-wrap: wrap; gap: 6px 14px; font-size: 14px; }
nav a { color: var(--accent); text-decoration: none; }
main { padding: 8px 32px 40px; max-width: 1400px; }
section { margin-top: 22px; }
h2 { font-size: 19px; border-bottom: 1px solid var(--line); padding-bottom: 4px; }
table { border-collapse: collapse; margin: 8px 0; font-size: 14px; }
th, td { border: 1px solid var(--line); padding: 3px 9px; text-align: left; vertical-align: top; }
th { background: var(--panel); }
td.num { text-align: right; font-variant-numeric: tabular-nums; }
pre { background: var(--panel); border: 1px solid var(--line); padding: 10px; overflow: auto; max-height: 420px; font-size: 13px; }
.row { display: flex; flex-wrap: wrap; gap: 18px; align-items: flex-start; }
figure { margin: 6px 0; }
figcaption { color: var(--muted); font-size: 13px; margin-top: 2px; max-width: 640px; }
img.px { image-rendering: pixelated; }
svg { max-width: 100%; height: auto; }
details { margin: 10px 0; }
summary { cursor: pointer; color: var(--muted); font-size: 14px; }
audio { display: block; width: 300px; }
";

/// Runs first: collects console errors and uncaught exceptions for the load check.
const ERROR_HOOK: &str = "window.__reportErrors = [];
(function () {
  var orig = console.error;
  console.error = function () { window.__reportErrors.push(Array.prototype.join.call(arguments, ' ')); return orig.apply(console, arguments); };
  window.addEventListener('error', function (e) { window.__reportErrors.push(String(e.message || (e.target && (e.target.src || e.target.tagName)) || 'error')); }, true);
})();";

/// Runs after the page loads: records, on `<body data-report-check>`, how many images and audio
/// clips there are and how many loaded, the errors seen, and the page's size in CSS pixels.
const LOAD_CHECK: &str = "window.addEventListener('load', function () {
  var imgs = Array.prototype.slice.call(document.images);
  var audio = Array.prototype.slice.call(document.querySelectorAll('audio'));
  function check() {
    var r = {
      images: imgs.length,
      images_loaded: imgs.filter(function (i) { return i.complete && i.naturalWidth > 0; }).length,
      audio: audio.length,
      audio_loaded: audio.filter(function (a) { return !a.error && a.readyState >= 1 && a.duration > 0; }).length,
      svgs: document.querySelectorAll('svg').length,
      errors: window.__reportErrors,
      width: document.documentElement.scrollWidth,
      height: document.documentElement.scrollHeight
    };
    document.body.setAttribute('data-report-check', JSON.stringify(r));
  }
  var pending = audio.filter(function (a) { return a.readyState < 1 && !a.error; });
  if (pending.length === 0) { check(); return; }
  var left = pending.length;
  pending.forEach(function (a) {
    function done() { left -= 1; if (left === 0) check(); }
    a.addEventListener('loadedmetadata', done, { once: true });
    a.addEventListener('error', done, { once: true });
  });
  setTimeout(check, 3000);
});";

impl Page {
    /// The page as one self-contained HTML document.
    pub fn to_html(&self) -> String {
        let mut h = String::with_capacity(1 << 16);
        let _ = write!(
            h,
            "<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
             <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\
             <title>{}</title><script>{ERROR_HOOK}</script><style>{STYLE}</style></head><body>\n",
            escape(&self.title)
        );
        let _ = write!(h, "<header><h1>{}</h1>", escape(&self.title));
        if !self.subtitle.is_empty() {
            let _ = write!(h, "<p>{}</p>", escape(&self.subtitle));
        }
        h.push_str("<nav>");
        for (i, s) in self.sections.iter().enumerate() {
            let _ = write!(h, "<a href=\"#s{i}\">{}</a>", escape(&s.title));
        }
        h.push_str("</nav></header>\n<main>\n");
        for (i, s) in self.sections.iter().enumerate() {
            let _ = writeln!(h, "<section id=\"s{i}\"><h2>{}</h2>", escape(&s.title));
            for b in &s.blocks {
                render(&mut h, b);
                h.push('\n');
            }
            h.push_str("</section>\n");
        }
        let _ = writeln!(h, "</main><script>{LOAD_CHECK}</script></body></html>");
        h
    }
}

fn b64(bytes: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

fn is_number(s: &str) -> bool {
    !s.is_empty() && s.trim().parse::<f64>().is_ok()
}

fn render(h: &mut String, b: &Block) {
    match b {
        Block::Text(t) => {
            let _ = write!(h, "<p>{}</p>", escape(t));
        }
        Block::Pre(t) => {
            let _ = write!(h, "<pre>{}</pre>", escape(t));
        }
        Block::Table { head, rows } => {
            h.push_str("<table><thead><tr>");
            for c in head {
                let _ = write!(h, "<th>{}</th>", escape(c));
            }
            h.push_str("</tr></thead><tbody>");
            for r in rows {
                h.push_str("<tr>");
                for c in r {
                    if is_number(c) {
                        let _ = write!(h, "<td class=\"num\">{}</td>", escape(c));
                    } else {
                        let _ = write!(h, "<td>{}</td>", escape(c));
                    }
                }
                h.push_str("</tr>");
            }
            h.push_str("</tbody></table>");
        }
        Block::Svg(s) => h.push_str(s),
        Block::Png { bytes, alt, width } => {
            let w = width.map(|w| format!(" width=\"{w}\"")).unwrap_or_default();
            let _ = write!(
                h,
                "<img class=\"px\" alt=\"{}\"{w} src=\"data:image/png;base64,{}\">",
                escape(alt),
                b64(bytes)
            );
        }
        Block::Audio { wav, caption } => {
            let _ = write!(
                h,
                "<figure><audio controls preload=\"metadata\" src=\"data:audio/wav;base64,{}\"></audio><figcaption>{}</figcaption></figure>",
                b64(wav),
                escape(caption)
            );
        }
        Block::Figure { content, caption } => {
            h.push_str("<figure>");
            render(h, content);
            let _ = write!(h, "<figcaption>{}</figcaption></figure>", escape(caption));
        }
        Block::Row(items) => {
            h.push_str("<div class=\"row\">");
            for i in items {
                render(h, i);
            }
            h.push_str("</div>");
        }
        Block::Details { summary, content } => {
            let _ = write!(h, "<details><summary>{}</summary>", escape(summary));
            render(h, content);
            h.push_str("</details>");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn html_is_escaped_and_media_inline() {
        let page = Page {
            title: "run <a>".into(),
            subtitle: "x & y".into(),
            sections: vec![Section::new("S")
                .with(Block::Text("1 < 2".into()))
                .with(Block::Table {
                    head: vec!["metric".into(), "value".into()],
                    rows: vec![vec!["fd".into(), "0.5".into()]],
                })
                .with(Block::Png {
                    bytes: vec![1, 2, 3],
                    alt: "grid".into(),
                    width: Some(10),
                })],
        };
        let h = page.to_html();
        assert!(h.contains("<title>run &lt;a&gt;</title>"));
        assert!(h.contains("<p>1 &lt; 2</p>"));
        assert!(h.contains("<td class=\"num\">0.5</td>"));
        assert!(h.contains("src=\"data:image/png;base64,AQID\""));
        assert!(
            !h.contains("http://") && !h.contains("https://"),
            "nothing fetched"
        );
    }
}
