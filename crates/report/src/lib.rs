//! sugarcube-report: self-contained HTML reports. A [`Page`] of [`Section`]s of [`Block`]s
//! (text, tables, plots, inline images and audio) is rendered by one layout,
//! [`Page::to_html`]; [`plot`] draws the figures with plotters' SVG backend. The page carries a
//! load check: once loaded, `<body data-report-check>` holds a JSON object with the number of
//! images and audio clips and how many loaded, the console errors seen, and the page's size,
//! which browser tests read.

pub mod page;
pub mod plot;

pub use page::{escape, Block, Page, Section};
pub use plot::Series;
