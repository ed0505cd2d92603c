//! Bounding what is echoed back. A value taken from a request, a manifest or
//! a profile is repeated in full up to a limit; beyond it, only its start and
//! end are, around `…(N bytes)…`. No input is ever repeated whole into an
//! HTTP body, an admission warning, a log line, an Event or a message.

use std::borrow::Cow;

/// How many bytes of one value are echoed: more than any valid Kubernetes
/// name (253), label value (63) or uid (36).
pub const LIMIT: usize = 256;

/// `text` as echoed: at most [`LIMIT`] bytes.
pub fn echo(text: &str) -> Cow<'_, str> {
    truncate(text, LIMIT)
}

/// `text` when it has at most `limit` bytes; else its start and end around
/// `…(N bytes)…` (`N`: its full length), in at most `limit` bytes, cut on
/// character boundaries.
pub fn truncate(text: &str, limit: usize) -> Cow<'_, str> {
    if text.len() <= limit {
        return Cow::Borrowed(text);
    }
    let marker = format!("…({} bytes)…", text.len());
    let Some(budget) = limit.checked_sub(marker.len()).filter(|&b| b >= 2) else {
        // Too small a limit for the length: the start only.
        let end = floor_char_boundary(text, limit.saturating_sub("…".len()));
        return Cow::Owned(format!("{}…", &text[..end]));
    };
    let head = floor_char_boundary(text, budget - budget / 3);
    let tail = ceil_char_boundary(text, text.len() - budget / 3);
    Cow::Owned(format!("{}{marker}{}", &text[..head], &text[tail..]))
}

/// The largest character boundary of `text` at or below `index`.
fn floor_char_boundary(text: &str, index: usize) -> usize {
    (0..=index.min(text.len()))
        .rev()
        .find(|&i| text.is_char_boundary(i))
        .unwrap_or(0)
}

/// The smallest character boundary of `text` at or above `index`.
fn ceil_char_boundary(text: &str, index: usize) -> usize {
    (index..=text.len())
        .find(|&i| text.is_char_boundary(i))
        .unwrap_or(text.len())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn short_text_is_kept_as_it_is() {
        assert!(matches!(echo("kube-system"), Cow::Borrowed("kube-system")));
        let exact = "x".repeat(LIMIT);
        assert_eq!(echo(&exact), exact);
    }

    #[test]
    fn long_text_keeps_its_start_and_end_and_says_how_long_it_was() {
        let text = format!("start-{}-end", "x".repeat(1 << 20));
        let shown = echo(&text);
        assert!(shown.len() <= LIMIT, "{}", shown.len());
        assert!(shown.starts_with("start-xxx"), "{shown}");
        assert!(shown.ends_with("xxx-end"), "{shown}");
        assert!(
            shown.contains(&format!("…({} bytes)…", text.len())),
            "{shown}"
        );
    }

    #[test]
    fn cuts_fall_on_character_boundaries() {
        for text in ["é".repeat(500), "日本語".repeat(200), "🦀".repeat(300)] {
            for limit in [0, 1, 4, 17, 30, 255, 256, 257] {
                let shown = truncate(&text, limit);
                assert!(shown.len() <= limit.max("…".len()), "{limit}: {shown}");
            }
        }
    }
}
