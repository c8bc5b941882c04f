//! Small text helpers the reports, the status page and the chat messages share.

/// Escapes `&`, `<` and `>`: enough for text in HTML and SVG, and what Slack reads as markup
/// (`<!channel>` would ping everyone).
pub fn escape_markup(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}
