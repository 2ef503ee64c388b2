//! The human-readable `queue list` table.

use super::item::QueueItem;

/// The column headers, in order.
const HEADERS: [&str; 8] = [
    "ID", "QUEUE", "STATE", "STAGE", "EXIT", "ATTEMPTS", "UPDATED", "MESSAGE",
];

/// Messages longer than this many characters are cut, ending in `…`.
const MESSAGE_WIDTH: usize = 60;

/// Renders items as the aligned table `launch-agent queue list` prints: one
/// header line and one line per item, columns ID, QUEUE, STATE, STAGE, EXIT,
/// ATTEMPTS, UPDATED (UTC, to the second) and MESSAGE (on one line, cut to
/// about 60 characters). Empty values show as `-`; a claimed or running item
/// whose stop was requested shows as e.g. `running (stopping)`. Every line
/// ends with a newline; lines carry no trailing spaces.
pub fn format_table(items: &[QueueItem]) -> String {
    let rows: Vec<[String; 8]> = items.iter().map(row).collect();
    let mut widths = HEADERS.map(|header| header.chars().count());
    for row in &rows {
        for (width, cell) in widths.iter_mut().zip(row) {
            *width = (*width).max(cell.chars().count());
        }
    }
    let mut out = String::new();
    push_line(&mut out, &HEADERS.map(str::to_owned), &widths);
    for row in &rows {
        push_line(&mut out, row, &widths);
    }
    out
}

/// The cells of one item.
fn row(item: &QueueItem) -> [String; 8] {
    let state = if item.stop_requested && item.state.is_held() {
        format!("{} (stopping)", item.state)
    } else {
        item.state.to_string()
    };
    [
        one_line(&item.id),
        one_line(&item.queue),
        state,
        item.stage.map_or_else(dash, |stage| stage.to_string()),
        item.exit_code.map_or_else(dash, |code| code.to_string()),
        item.attempts.to_string(),
        short_time(&item.updated_at),
        item.message
            .as_deref()
            .map(|message| truncate(&one_line(message), MESSAGE_WIDTH))
            .filter(|message| !message.is_empty())
            .unwrap_or_else(dash),
    ]
}

/// Appends one aligned line, without padding after the last cell.
fn push_line(out: &mut String, cells: &[String; 8], widths: &[usize; 8]) {
    let mut line = String::new();
    for (i, (cell, width)) in cells.iter().zip(widths).enumerate() {
        if i > 0 {
            line.push_str("  ");
        }
        line.push_str(cell);
        if i + 1 < cells.len() {
            let pad = width.saturating_sub(cell.chars().count());
            line.extend(std::iter::repeat_n(' ', pad));
        }
    }
    out.push_str(line.trim_end());
    out.push('\n');
}

/// The placeholder for an empty cell.
fn dash() -> String {
    "-".to_owned()
}

/// `text` with every run of whitespace or control characters made one space.
fn one_line(text: &str) -> String {
    text.split(|c: char| c.is_whitespace() || c.is_control())
        .filter(|word| !word.is_empty())
        .collect::<Vec<_>>()
        .join(" ")
}

/// `text` cut to at most `max` characters, the last one `…` if it was cut.
fn truncate(text: &str, max: usize) -> String {
    if text.chars().count() <= max {
        return text.to_owned();
    }
    let mut cut: String = text.chars().take(max.saturating_sub(1)).collect();
    cut.truncate(cut.trim_end().len());
    cut.push('…');
    cut
}

/// An RFC 3339 time as `YYYY-MM-DD HH:MM:SS` in UTC, or as given if it does
/// not parse.
fn short_time(time: &str) -> String {
    chrono::DateTime::parse_from_rfc3339(time)
        .map(|at| {
            at.with_timezone(&chrono::Utc)
                .format("%Y-%m-%d %H:%M:%S")
                .to_string()
        })
        .unwrap_or_else(|_| one_line(time))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn truncate_cuts_long_text_with_an_ellipsis() {
        assert_eq!(truncate("short", 10), "short");
        let cut = truncate(&"x".repeat(100), 60);
        assert_eq!(cut.chars().count(), 60);
        assert!(cut.ends_with('…'));
    }

    #[test]
    fn one_line_folds_newlines_and_tabs() {
        assert_eq!(one_line("a\nb\t\tc\r\n"), "a b c");
    }

    #[test]
    fn short_time_drops_fraction_and_zone() {
        assert_eq!(
            short_time("2025-01-31T12:34:56.789Z"),
            "2025-01-31 12:34:56"
        );
        assert_eq!(short_time("not a time"), "not a time");
    }
}
