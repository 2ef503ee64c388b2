//! YAML input: the parser options every config and spec is read with, and
//! serde-saphyr's errors in our words.
//!
//! | the parser's class | what we say |
//! |---|---|
//! | syntax (scanner) errors: tabs, quotes, brackets, indentation, ... | `invalid YAML: ...`, one sentence per kind |
//! | duplicate key | ``the key `k` appears twice in the same map`` |
//! | several documents | `holds more than one YAML document ...` |
//! | budget: nodes, events, depth, aliases, scalar bytes | how big it may be, not the parser's counters |
//! | wrong type, bad scalar, null | ```key` must be <what>, not <what was there>`` |
//! | unknown key, unknown variant, missing key | the key and the choices |
//! | tags, anchors, aliases, merge keys | what is not allowed or not defined |
//!
//! Each message names the key's dotted path when the position lies on a
//! `key: value` line, found from indentation ([`key_path_at`]).

use super::{MAX_DEPTH, MAX_NODES, Problem};
use crate::text::{for_log, for_log_max};
use serde_saphyr::budget::BudgetBreach;
use serde_saphyr::granit_parser::ErrorKind;
use serde_saphyr::{
    Budget, DuplicateKeyPolicy, Error, ExternalMessageSource, MessageFormatter, Options,
};

/// The options every YAML input is read with: duplicate keys are errors,
/// nesting and size are bounded.
pub fn options() -> Options {
    let mut budget = Budget::default();
    budget.max_depth = MAX_DEPTH;
    budget.max_nodes = MAX_NODES;
    let mut options = Options::default();
    options.budget = Some(budget);
    options.duplicate_keys = DuplicateKeyPolicy::Error;
    options
}

/// Deserializes one YAML document with [`options`].
pub fn from_str<T: serde::de::DeserializeOwned>(text: &str) -> Result<T, Problem> {
    serde_saphyr::from_str_with_options(text, options()).map_err(|e| problem(&e, text))
}

/// The error `error`, met while reading `text`, in our words.
pub fn problem(error: &Error, text: &str) -> Problem {
    let (line, column) = error
        .location()
        .map(|l| (l.line(), l.column()))
        .unwrap_or((0, 0));
    let line32 = u32::try_from(line).unwrap_or(u32::MAX);
    let column32 = u32::try_from(column).unwrap_or(u32::MAX);
    let message = match describe(error) {
        Said::Plain(message) => message,
        Said::AboutValue(message) => {
            format!("{} {message}", spot(text, line32, column32).subject)
        }
        Said::AboutMap(message) => format!("{} {message}", spot(text, line32, column32).subject),
        Said::UnknownKey { key, expected } => {
            // The position is on the unknown key (block style) or inside the
            // `{...}` of the key that holds it (flow style).
            let on_the_key = key_indent_at(text, line32) == Some(column32.saturating_sub(1));
            let parent = key_path_at(text, line32).and_then(|path| match on_the_key {
                true => path.rsplit_once('.').map(|(parent, _)| parent.to_string()),
                false => Some(path),
            });
            format!(
                "unknown key `{}{}`; the keys accepted here are: {}",
                parent
                    .map(|p| format!("{}.", for_log(&p)))
                    .unwrap_or_default(),
                for_log_max(&key, 80),
                choices(&expected)
            )
        }
        Said::Scalar(what) => {
            let spot = spot(text, line32, column32);
            let found = spot.found.map(|f| format!(", not {f}")).unwrap_or_default();
            format!("{} must be {what}{found}", spot.subject)
        }
    };
    Problem::new(line, column, message)
}

/// A position in the text, as a message names it.
struct Spot {
    /// The key whose value is there (`` `builder.type` ``), or "this value".
    subject: String,
    /// What is written there: `` `lots` ``, "a list", "a map"; `None` when
    /// it cannot be told.
    found: Option<String>,
}

/// What the value at 1-based `line`, `column` is and whose it is, read from
/// the text around it (block style; flow style gives the enclosing key).
fn spot(text: &str, line: u32, column: u32) -> Spot {
    let nameless = |found| Spot {
        subject: "this value".to_string(),
        found,
    };
    let named = |key: String, found| Spot {
        subject: format!("`{}`", for_log(&key)),
        found,
    };
    let Some(line_text) = usize::try_from(line)
        .ok()
        .and_then(|l| l.checked_sub(1))
        .and_then(|index| text.lines().nth(index))
    else {
        return nameless(None);
    };
    let at = usize::try_from(column)
        .unwrap_or(usize::MAX)
        .saturating_sub(1);
    let rest: String = line_text.chars().skip(at).collect();
    if rest == "-" || rest.starts_with("- ") {
        // A block list starts here: it is the value of the key above it.
        let owner = list_owner(text, line, at);
        let found = Some("a list".to_string());
        return owner.map_or_else(|| nameless(found.clone()), |key| named(key, found.clone()));
    }
    if key_indent_at(text, line) == Some(u32::try_from(at).unwrap_or(u32::MAX)) {
        // A block map starts here, with this key: it is its parent's value.
        let parent = key_path_at(text, line)
            .and_then(|path| path.rsplit_once('.').map(|(parent, _)| parent.to_string()));
        let found = Some("a map".to_string());
        return parent.map_or_else(|| nameless(found.clone()), |key| named(key, found.clone()));
    }
    let found = match rest.chars().next() {
        Some('[') => Some("a list".to_string()),
        Some('{') => Some("a map".to_string()),
        _ => scalar_at(text, line, column).map(|s| format!("`{s}`")),
    };
    // A flow-style key right before the value (`{a: 1, b: x}`), unless it is
    // the block key the line starts with.
    let block_key_at = key_indent_at(text, line).and_then(|i| usize::try_from(i).ok());
    let flow = flow_key_before(line_text, at).filter(|(_, start)| Some(*start) != block_key_at);
    match (key_path_at(text, line), flow) {
        (Some(block), Some((flow, _))) => return named(format!("{block}.{flow}"), found),
        (Some(block), None) => return named(block, found),
        (None, Some((flow, _))) => return named(flow, found),
        (None, None) => {}
    }
    if line_text.trim_start_matches(' ').starts_with("- ") {
        let dash = line_text.len() - line_text.trim_start_matches(' ').len();
        if let Some(owner) = list_owner(text, line, dash) {
            return Spot {
                subject: format!("an item of `{}`", for_log(&owner)),
                found,
            };
        }
    }
    nameless(found)
}

/// The key written right before 0-based character column `at` of `line`,
/// as `key: ` or `"key": `, and the column it starts at.
fn flow_key_before(line: &str, at: usize) -> Option<(String, usize)> {
    let before: Vec<char> = line.chars().take(at).collect();
    let mut end = before.len();
    while end > 0 && before[end - 1] == ' ' {
        end -= 1;
    }
    if end == 0 || before[end - 1] != ':' {
        return None;
    }
    end -= 1;
    let start = match before.get(end.checked_sub(1)?)? {
        quote @ ('"' | '\'') => {
            let open = before[..end - 1].iter().rposition(|c| c == quote)?;
            return Some((before[open + 1..end - 1].iter().collect(), open));
        }
        _ => before[..end]
            .iter()
            .rposition(|c| matches!(c, '{' | '[' | ',' | ' '))
            .map_or(0, |i| i + 1),
    };
    let key: String = before[start..end].iter().collect();
    (!key.is_empty()).then_some((key, start))
}

/// The key path of the block list whose `- ` is at 0-based column `dash`
/// on 1-based `line`: the nearest key above it indented no deeper.
fn list_owner(text: &str, line: u32, dash: usize) -> Option<String> {
    let index = usize::try_from(line).ok()?.checked_sub(1)?;
    let before: Vec<&str> = text.lines().take(index).collect();
    let (owner, _) = before
        .iter()
        .enumerate()
        .rev()
        .find(|(_, l)| key_of(l).is_some_and(|(indent, _)| indent <= dash))?;
    key_path_at(text, u32::try_from(owner + 1).ok()?)
}

/// What an error says before we know the key it is about.
enum Said {
    /// A whole sentence.
    Plain(String),
    /// Follows the key the position is on: "`max_jobs` must be ...".
    AboutValue(String),
    /// Follows the key of the map the position is in.
    AboutMap(String),
    /// An unknown key and the keys that are known.
    UnknownKey {
        key: String,
        expected: Vec<&'static str>,
    },
    /// A scalar that is not `what`; the scalar is quoted from the text.
    Scalar(String),
}

fn describe(error: &Error) -> Said {
    use Said::{AboutMap, AboutValue, Plain};
    let plain = |s: &str| Plain(s.to_string());
    match error {
        Error::WithSnippet { error, .. } => describe(error),
        #[allow(deprecated)]
        Error::AliasError { error, .. } => describe(error),
        Error::ExternalMessage { source, msg, .. } => match source.as_ref() {
            ExternalMessageSource::Parser(scan) => Plain(syntax(scan.kind())),
            _ => Plain(format!("is not valid: {}", for_log(msg))),
        },
        Error::Eof { .. } => plain("the file ends where a value was expected"),
        Error::MultipleDocuments { .. }
        | Error::Budget {
            breach: BudgetBreach::Documents { .. },
            ..
        } => plain(
            "holds more than one YAML document (a `---` line starts another); put everything in one",
        ),
        Error::Budget { breach, .. } => Plain(budget(breach)),
        Error::DuplicateMappingKey { key, .. } => match key {
            Some(key) => Plain(format!(
                "the key `{}` appears twice in the same map; keep one",
                for_log_max(key, 80)
            )),
            None => plain("a key appears twice in the same map; keep one"),
        },
        Error::SerdeUnknownField {
            field, expected, ..
        } => Said::UnknownKey {
            key: field.clone(),
            expected: expected.clone(),
        },
        Error::SerdeUnknownVariant {
            variant, expected, ..
        } => AboutValue(format!(
            "must be one of {}, not `{}`",
            choices(expected),
            for_log_max(variant, 80)
        )),
        Error::SerdeMissingField { field, .. } => {
            AboutMap(format!("needs the key `{field}`, which is missing"))
        }
        Error::SerdeInvalidType {
            unexpected,
            expected,
            ..
        }
        | Error::SerdeInvalidValue {
            unexpected,
            expected,
            ..
        } => AboutValue(format!(
            "must be {}, not {}",
            expectation(expected),
            for_log_max(unexpected, 100)
        )),
        Error::SerdeInvalidLength { len, expected, .. } => AboutValue(format!(
            "must be {}, not {len} items",
            expectation(expected)
        )),
        Error::InvalidScalar { ty, .. } => Said::Scalar(expectation(ty)),
        Error::InvalidBooleanStrict { .. } => Said::Scalar("true or false".into()),
        Error::NonFiniteFloat { value, .. } => AboutValue(format!(
            "must be a finite number, not `{}`",
            for_log_max(value, 80)
        )),
        Error::NullIntoString { .. } | Error::InvalidCharNull { .. } => {
            AboutValue("must have a value here, not nothing (null)".into())
        }
        Error::InvalidCharNotSingleScalar { .. } => Said::Scalar("a single character".into()),
        Error::QuotingRequired { value, .. } => AboutValue(format!(
            "must be quoted to be text: `{}`",
            for_log_max(value, 80)
        )),
        Error::Unexpected { expected, .. } => Said::Scalar(expectation(expected)),
        Error::UnexpectedSequenceEnd { .. }
        | Error::UnexpectedMappingEnd { .. }
        | Error::ContainerEndMismatch { .. }
        | Error::UnexpectedContainerEndWhileSkippingNode { .. }
        | Error::UnexpectedContainerEndWhileReadingKeyNode { .. } => {
            AboutValue("ends where a value was expected".into())
        }
        Error::UnexpectedValueForUnit { .. }
        | Error::ExpectedEmptyMappingForUnitStruct { .. }
        | Error::UnexpectedValueForUnitEnumVariant { .. } => {
            AboutValue("takes no value here".into())
        }
        Error::ExpectedStringKeyForExternallyTaggedEnum { .. }
        | Error::ExternallyTaggedEnumExpectedScalarOrMapping { .. }
        | Error::ExpectedMappingEndAfterEnumVariantValue { .. } => {
            AboutValue("must name exactly one choice, as `choice: value`".into())
        }
        Error::TaggedEnumMismatch { tagged, .. } => AboutValue(format!(
            "has a tag `!{}` that does not fit here",
            for_log_max(tagged, 80)
        )),
        Error::MergeValueNotMapOrSeqOfMaps { .. } => {
            plain("a merge key `<<` must be given a map or a list of maps")
        }
        Error::MergeKeyNotAllowed { .. } => plain("merge keys `<<` are not allowed"),
        Error::UnsupportedTag { tag, .. } => Plain(format!(
            "the tag `{}` is not supported",
            for_log_max(tag, 80)
        )),
        Error::TaggedStructFieldName { .. } => plain("a key may not carry a tag"),
        Error::InvalidBinaryBase64 { .. } => plain("a `!!binary` value is not valid base64"),
        Error::BinaryNotUtf8 { .. } => plain("a `!!binary` value is not UTF-8 text"),
        Error::BytesNotSupportedMissingBinaryTag { .. } => {
            plain("binary data must be tagged `!!binary`")
        }
        Error::TaggedScalarCannotDeserializeIntoString { .. } => {
            AboutValue("is tagged, and a tagged value cannot be text here".into())
        }
        Error::UnknownAnchor { .. } => {
            plain("an alias `*name` refers to an anchor `&name` that is not defined before it")
        }
        Error::RecursiveReferencesRequireWeakTypes { .. } => {
            plain("an alias `*name` refers to the value it is part of")
        }
        Error::AliasReplayCounterOverflow { .. }
        | Error::AliasReplayLimitExceeded { .. }
        | Error::AliasExpansionLimitExceeded { .. }
        | Error::AliasReplayStackDepthExceeded { .. } => {
            plain("its aliases (`*name`) expand to too much; expand fewer of them")
        }
        Error::FoldedBlockScalarMustIndentContent { .. } => {
            plain("the text of a `>` block must be indented")
        }
        Error::IndentationError {
            required, actual, ..
        } => Plain(format!(
            "is indented {actual} spaces, which does not fit: {}",
            for_log(&required.to_string())
        )),
        Error::CyclicInclude { .. }
        | Error::UnsupportedIncludeForm { .. }
        | Error::ResolverError { .. } => plain("`!include` is not supported"),
        Error::UnresolvedProperty { .. }
        | Error::InvalidPropertyName { .. }
        | Error::PropertyRequiredButUnset { .. }
        | Error::PropertyRequiredButEmpty { .. } => plain("`${...}` properties are not supported"),
        Error::InvalidUtf8Input => plain("is not UTF-8 text"),
        Error::IOError { cause } => {
            Plain(format!("cannot be read: {}", for_log(&cause.to_string())))
        }
        Error::Message { msg, .. } | Error::SerdeVariantId { msg, .. } => serde_message(msg),
        Error::HookError { msg, .. } | Error::InvalidOptions { msg, .. } => {
            Plain(format!("cannot be read: {}", for_log(msg)))
        }
        Error::InternalSeedReusedForMapKey { .. }
        | Error::ValueRequestedBeforeKey { .. }
        | Error::InternalDepthUnderflow { .. }
        | Error::InternalRecursionStackEmpty { .. }
        | Error::CannotBorrowTransformedString { .. } => {
            plain("cannot be read here (the YAML reader failed internally)")
        }
        other => Plain(format!(
            "cannot be read: {}",
            for_log(&serde_saphyr::UserMessageFormatter.format_message(other))
        )),
    }
}

/// A serde `custom` message: our words for the ones we know.
fn serde_message(msg: &str) -> Said {
    if let Some(name) = msg.strip_prefix("data did not match any variant of untagged enum ") {
        return Said::AboutValue(match name {
            "DirGrant" => "must be a path, or a map with `path` and optionally `guest` and `write`"
                .to_string(),
            "VolumeGrant" => {
                "must be a path, or a map with `path` and optionally `write`".to_string()
            }
            _ => "is not in any of the forms accepted here".to_string(),
        });
    }
    Said::AboutValue(format!("is not valid: {}", for_log(msg)))
}

fn budget(breach: &BudgetBreach) -> String {
    match breach {
        BudgetBreach::Nodes { .. } | BudgetBreach::Events { .. } => format!(
            "is too large: it holds more than {MAX_NODES} values (keys, list items and scalars)"
        ),
        BudgetBreach::Depth { .. } => {
            format!("is nested too deeply: lists and maps may be nested at most {MAX_DEPTH} levels")
        }
        BudgetBreach::ScalarBytes { .. } => "holds too much text".to_string(),
        BudgetBreach::Aliases { .. }
        | BudgetBreach::Anchors { .. }
        | BudgetBreach::AliasAnchorRatio { .. }
        | BudgetBreach::RecordedAnchorEvents { .. }
        | BudgetBreach::RecordedAnchorBytes { .. } => {
            "uses too many anchors (`&name`) or aliases (`*name`)".to_string()
        }
        BudgetBreach::MergeKeys { .. } => "uses too many merge keys `<<`".to_string(),
        BudgetBreach::SequenceUnbalanced => {
            "closes a list or map that was never opened".to_string()
        }
        BudgetBreach::InputBytes { .. } => "is too large".to_string(),
        _ => "is too large or too complex to read".to_string(),
    }
}

/// A scanner (syntax) error in our words.
fn syntax(kind: &ErrorKind) -> String {
    let says = match kind {
        ErrorKind::TabInIndentation
        | ErrorKind::TabInBlockIndentation
        | ErrorKind::TabNotAllowed
        | ErrorKind::TabAtBlockScalarStart => {
            "a tab is used to indent; YAML indents with spaces only"
        }
        ErrorKind::TabInPlainScalar => "a tab is not allowed here; use spaces",
        ErrorKind::UnclosedQuotedScalar => "a quoted string is never closed",
        ErrorKind::UnclosedFlowCollection { open: '[' } => "a `[` is never closed",
        ErrorKind::UnclosedFlowCollection { .. } => "a `{` is never closed",
        ErrorKind::MismatchedFlowCollectionEnd { .. } => {
            "a bracket is closed by the wrong kind (`[` by `}` or `{` by `]`)"
        }
        ErrorKind::MisplacedFlowCollectionEnd => "a closing bracket has no opening one",
        ErrorKind::UnexpectedEofFlowSequence
        | ErrorKind::UnexpectedEofFlowMapping
        | ErrorKind::UnexpectedEofImplicitFlowMapping => {
            "the file ends inside a `[...]` or `{...}`"
        }
        ErrorKind::UnexpectedEofBlockSequence
        | ErrorKind::UnexpectedEofBlockMapping
        | ErrorKind::UnexpectedEof => "the file ends in the middle of a value",
        ErrorKind::InvalidIndentation
        | ErrorKind::InvalidFlowScalarIndent
        | ErrorKind::InvalidQuotedScalarIndent
        | ErrorKind::InvalidBlockScalarIndent => {
            "this line's indentation does not line up with the lines around it"
        }
        ErrorKind::MappingValueNotAllowed
        | ErrorKind::InvalidColonPlacement
        | ErrorKind::MappingKeyNotAllowed
        | ErrorKind::FlowMappingValueAdjacentCollection => {
            "a `key: value` is not allowed here (a line indented wrongly, or text with `: ` that needs quotes?)"
        }
        ErrorKind::ExpectedBlockMappingKey => {
            "expected a `key:` here (is the line indented like the keys next to it?)"
        }
        ErrorKind::ExpectedBlockSequenceEntry | ErrorKind::BlockSequenceEntryNotAllowed => {
            "a `- ` list item is not allowed here (is the line indented like the items next to it?)"
        }
        ErrorKind::BlockEntryInFlowCollection => {
            "a `- ` list item cannot be inside `[...]` or `{...}`"
        }
        ErrorKind::ExpectedFlowMappingSeparator => "expected `,` or `}`",
        ErrorKind::ExpectedFlowSequenceSeparator => "expected `,` or `]`",
        ErrorKind::ExpectedNodeContent => "expected a value here",
        ErrorKind::SimpleKeyExpected | ErrorKind::InvalidSimpleKey => {
            "a key is missing its `:`, or is longer than 1024 characters"
        }
        ErrorKind::ExpectedWhitespace
        | ErrorKind::InvalidMappingValueWhitespace
        | ErrorKind::InvalidBlockEntryWhitespace => "expected a space after `:` or `-`",
        ErrorKind::CommentNotSeparated => "a `#` comment must have a space before it",
        ErrorKind::CommentInterceptedScalar => "a comment interrupts a value that goes on after it",
        ErrorKind::UnknownQuotedScalarEscape
        | ErrorKind::InvalidQuotedScalarHexEscape
        | ErrorKind::InvalidLowSurrogateHexEscape
        | ErrorKind::InvalidLowSurrogate
        | ErrorKind::MissingLowSurrogate
        | ErrorKind::UnpairedLowSurrogate
        | ErrorKind::InvalidUnicodeEscape => {
            "a `\\` escape in a double-quoted string is not valid (write `\\\\` for a backslash)"
        }
        ErrorKind::InvalidTrailingSingleQuotedScalar
        | ErrorKind::InvalidTrailingDoubleQuotedScalar => {
            "text follows a quoted string on the same line"
        }
        ErrorKind::PlainScalarStartsWithDashFlowIndicator
        | ErrorKind::UnexpectedEndOfPlainScalar => "a value here needs quotes",
        ErrorKind::UnexpectedCharacter { .. } => "a character here is not allowed; quote the value",
        ErrorKind::BomInsideDocument => "a byte-order mark (U+FEFF) is in the middle of the file",
        ErrorKind::DocumentIndicatorInQuotedScalar | ErrorKind::InvalidDocumentEnd => {
            "a `---` or `...` line is in the middle of a value"
        }
        ErrorKind::MultipleDocumentsUnsupported => {
            "holds more than one YAML document (a `---` line starts another)"
        }
        ErrorKind::RecursionLimitExceeded => "lists and maps are nested too deeply",
        ErrorKind::ZeroBlockScalarIndent | ErrorKind::InvalidBlockScalarHeader => {
            "the header of a `|` or `>` block is not valid"
        }
        ErrorKind::AnchorCountOverflow | ErrorKind::MissingAnchorOrAliasName => {
            "an anchor `&name` or alias `*name` has no valid name"
        }
        ErrorKind::UnknownAnchor => {
            "an alias `*name` refers to an anchor `&name` that is not defined before it"
        }
        ErrorKind::ExpectedTagBang
        | ErrorKind::ExpectedTagDirectiveBang
        | ErrorKind::InvalidGlobalTagCharacter
        | ErrorKind::InvalidTagTerminator
        | ErrorKind::MissingTagUri
        | ErrorKind::UnclosedVerbatimTag
        | ErrorKind::InvalidTagEscape
        | ErrorKind::InvalidTagUtf8LeadingByte
        | ErrorKind::InvalidTagUtf8TrailingByte
        | ErrorKind::InvalidTagUtf8
        | ErrorKind::UndeclaredTagHandle => "a tag `!name` is not valid",
        ErrorKind::DuplicateVersionDirective
        | ErrorKind::UnsupportedYamlMajorVersion
        | ErrorKind::DuplicateTagDirective
        | ErrorKind::MissingDocumentEndBeforeDirective
        | ErrorKind::InvalidDirectiveTerminator
        | ErrorKind::DirectiveDisallowed
        | ErrorKind::MissingYamlVersionSeparator
        | ErrorKind::MissingDirectiveName
        | ErrorKind::InvalidDirectiveName
        | ErrorKind::DirectiveByteLimitExceeded { .. }
        | ErrorKind::TooManyReservedDirectiveParams { .. }
        | ErrorKind::YamlVersionTooLong
        | ErrorKind::MissingYamlVersion
        | ErrorKind::InvalidTagDirectiveTerminator => "a `%` directive line is not valid",
        ErrorKind::InputDecoding { .. } => "is not UTF-8 text",
        _ => "the YAML cannot be read here",
    };
    format!("invalid YAML: {says}")
}

/// What serde's `expected` text means, for someone writing YAML.
fn expectation(expected: &str) -> String {
    let said = match expected {
        "i8" | "i16" | "i32" | "i64" | "i128" | "isize" => "a whole number",
        "u8" => "a whole number from 0 to 255",
        "u16" => "a whole number from 0 to 65535",
        "u32" => "a whole number from 0 to 4294967295",
        "u64" | "u128" | "usize" => "a whole number, 0 or more",
        "f32" | "f64" => "a number",
        "bool" | "boolean" | "a boolean" | "bool expected" | "missing bool" => "true or false",
        "string" | "a string" | "str" | "char" | "a character" | "string scalar"
        | "str expected" | "missing string" => "a string",
        "scalar" | "binary scalar" => "a single value (not a list or map)",
        "path string" | "a path" => "a path",
        "a sequence" | "sequence" | "sequence start" => "a list",
        "a map" | "map" | "mapping" | "mapping start" | "empty mapping start" => "a map",
        "non-scalar key" => "a key that is a single value",
        "any valid JSON value" | "value" | "single YAML node" => "a value",
        other if other.starts_with("struct ") => "a map of settings",
        other if other.starts_with("enum ") => "one of the choices",
        other if other.starts_with("a sequence") || other.starts_with("tuple") => "a list",
        other => return for_log_max(other, 80).into_owned(),
    };
    said.to_string()
}

/// `a`, `b`, `c` as one line, or "none" when there are no choices.
fn choices(names: &[&str]) -> String {
    if names.is_empty() {
        return "none".to_string();
    }
    names
        .iter()
        .map(|n| format!("`{n}`"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// The scalar written at 1-based `line`, `column` of `text` (quoted or
/// plain, up to a comment, a flow indicator or the end of the line),
/// escaped and cut for a message.
fn scalar_at(text: &str, line: u32, column: u32) -> Option<String> {
    let line_text = text
        .lines()
        .nth(usize::try_from(line).ok()?.checked_sub(1)?)?;
    let start = usize::try_from(column).ok()?.checked_sub(1)?;
    let rest: String = line_text.chars().skip(start).collect();
    let scalar = match rest.chars().next()? {
        '[' | '{' => return None,
        quote @ ('"' | '\'') => match rest[1..].find(quote) {
            Some(end) => &rest[..end + 2],
            None => rest.as_str(),
        },
        _ => {
            let end = rest
                .find(" #")
                .into_iter()
                .chain(rest.find([',', ']', '}']))
                .min()
                .unwrap_or(rest.len());
            rest[..end].trim_end()
        }
    };
    (!scalar.is_empty()).then(|| for_log_max(scalar, 80).into_owned())
}

/// The dotted key path of the block-style mapping entry on `line` (1-based),
/// found from indentation: `builder.platform` for `  platform: x` under
/// `builder:`. `None` when the line holds no `key:`.
pub fn key_path_at(text: &str, line: u32) -> Option<String> {
    let index = usize::try_from(line).ok()?.checked_sub(1)?;
    let mut lines = text.lines();
    let before: Vec<&str> = lines.by_ref().take(index).collect();
    let (mut indent, key) = key_of(lines.next()?)?;
    let mut path = vec![key];
    for candidate in before.iter().rev() {
        if indent == 0 {
            break;
        }
        if let Some((i, k)) = key_of(candidate)
            && i < indent
        {
            path.push(k);
            indent = i;
        }
    }
    path.reverse();
    Some(path.join("."))
}

/// The 0-based column of the key on `line`, when the line holds a `key:`.
fn key_indent_at(text: &str, line: u32) -> Option<u32> {
    let index = usize::try_from(line).ok()?.checked_sub(1)?;
    let (indent, _) = key_of(text.lines().nth(index)?)?;
    u32::try_from(indent).ok()
}

/// The indentation and key of a `key: value` or `- key: value` line.
fn key_of(line: &str) -> Option<(usize, String)> {
    let trimmed = line.trim_start_matches(' ');
    if trimmed.is_empty() || trimmed.starts_with('#') {
        return None;
    }
    let mut indent = line.len() - trimmed.len();
    let mut body = trimmed;
    while let Some(rest) = body.strip_prefix("- ") {
        let inner = rest.trim_start_matches(' ');
        indent += body.len() - inner.len();
        body = inner;
    }
    let (key, _) = body.split_once(':')?;
    let key = key.trim().trim_matches(|c| c == '"' || c == '\'');
    let plain = !key.is_empty() && !key.contains(['{', '[', ' ', ',']);
    plain.then(|| (indent, key.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::Value;

    fn said(text: &str) -> Problem {
        from_str::<Value>(text).unwrap_err()
    }

    #[test]
    fn key_paths_are_found_from_indentation() {
        let text = "queues: [a]\nbuilder:\n  type: kaniko\n  kaniko-config:\n    spec:\n      backoffLimit: x\nmax_jobs: 2\n";
        assert_eq!(key_path_at(text, 3).as_deref(), Some("builder.type"));
        assert_eq!(
            key_path_at(text, 6).as_deref(),
            Some("builder.kaniko-config.spec.backoffLimit")
        );
        assert_eq!(key_path_at(text, 7).as_deref(), Some("max_jobs"));
        assert_eq!(key_path_at(text, 99), None);
        assert_eq!(key_path_at("- a: 1\n  b: 2\n", 2).as_deref(), Some("b"));
    }

    #[test]
    fn flow_keys_are_found_before_their_value() {
        assert_eq!(flow_key_before("{a: 1, bb: x}", 11), Some(("bb".into(), 7)));
        assert_eq!(
            flow_key_before("{\"max_jobs\": \"x\"}", 13),
            Some(("max_jobs".into(), 1))
        );
        assert_eq!(
            flow_key_before("max_jobs: x", 10),
            Some(("max_jobs".into(), 0))
        );
        assert_eq!(flow_key_before("[1, x]", 4), None);
        assert_eq!(flow_key_before(": x", 2), None);
        let p =
            from_str::<crate::config::LaunchConfig>("{\"queues\": [\"a\"], \"max_jobs\": \"x\"}")
                .unwrap_err();
        assert!(p.message.starts_with("`max_jobs` must be"), "{}", p.message);
        let p = from_str::<crate::config::LaunchConfig>("builder: {type: docker, platform: [x]}\n")
            .unwrap_err();
        assert!(
            p.message.starts_with("`builder.platform` must be"),
            "{}",
            p.message
        );
    }

    #[test]
    fn scalars_are_quoted_from_the_text() {
        assert_eq!(scalar_at("a: lots # c\n", 1, 4).as_deref(), Some("lots"));
        assert_eq!(scalar_at("a: [x, y]\n", 1, 5).as_deref(), Some("x"));
        assert_eq!(
            scalar_at("a: \"q # r\" z\n", 1, 4).as_deref(),
            Some("\"q # r\"")
        );
        assert_eq!(scalar_at("a:\n", 1, 9), None);
        assert_eq!(scalar_at("a: é\n", 1, 4).as_deref(), Some("é"));
    }

    #[test]
    fn duplicate_keys_are_told_without_the_library_advice() {
        let p = said("a: 1\nb: 2\na: 3\n");
        assert_eq!(p.line, 3);
        assert!(p.message.contains("`a` appears twice"), "{}", p.message);
        assert!(!p.message.contains("Policy"), "{}", p.message);
    }

    #[test]
    fn several_documents_are_told_without_the_library_advice() {
        let p = said("a: 1\n---\nb: 2\n");
        assert!(
            p.message.contains("more than one YAML document"),
            "{}",
            p.message
        );
        assert!(!p.message.contains("from_str"), "{}", p.message);
    }

    #[test]
    fn budgets_are_told_in_limits_not_counters() {
        let deep = format!("{}1{}", "[".repeat(70), "]".repeat(70));
        let p = said(&deep);
        assert!(p.message.contains("nested too deeply"), "{}", p.message);
        assert!(!p.message.contains("Depth {"), "{}", p.message);
        let many = format!("[{}]", "1,".repeat(MAX_NODES + 1));
        let p = said(&many);
        assert!(p.message.contains("too large"), "{}", p.message);
        assert!(!p.message.contains("Nodes {"), "{}", p.message);
    }

    #[test]
    fn syntax_errors_say_what_to_fix() {
        let p = said("a:\n\tb: 1\n");
        assert!(p.message.contains("tab"), "{}", p.message);
        assert!(p.line > 0);
        let p = said("a: \"open\n");
        assert!(p.message.contains("never closed"), "{}", p.message);
        let p = said("a: [1, 2\n");
        assert!(p.message.contains("`[`"), "{}", p.message);
    }
}
