//! Errors of the core, each with a stable kind that becomes an R condition class.

use std::fmt;

/// What went wrong, stable across versions: R sees it as the condition class
/// `safetensors_error_<kind>`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// The input is shorter than the 8-byte header length.
    HeaderTooSmall,
    /// The declared header length exceeds 100,000,000 bytes.
    HeaderTooLarge,
    /// The declared header length runs past the end of the input.
    InvalidHeaderLength,
    /// The header is not UTF-8 or not the JSON the format requires.
    InvalidHeader,
    /// A tensor's byte range is not contiguous with the previous one.
    InvalidOffset,
    /// A tensor's shape and dtype disagree with its byte range.
    InvalidTensorInfo,
    /// The data section is longer or shorter than the tensors it holds.
    IncompleteBuffer,
    /// A size computed from the header overflows.
    Overflow,
    /// A sub-byte tensor or slice does not end on a byte boundary.
    Misaligned,
    /// Two tensors share a name.
    DuplicateName,
    /// A requested tensor is not in the file.
    TensorNotFound,
    /// A slice index is out of range or malformed.
    InvalidSlice,
    /// A value can't be represented in the target type.
    Conversion,
    /// An argument is malformed (caught in Rust after the R checks).
    InvalidArgument,
    /// A valid file holds something R can't represent as asked, such as a
    /// dimension over `.Machine$integer.max` in an R array.
    Unsupported,
    /// The file does not exist.
    FileNotFound,
    /// The file changed size or content under an open handle.
    FileChanged,
    /// A handle was used after it was closed.
    Closed,
    /// A sharded checkpoint's index file is malformed.
    InvalidIndex,
    /// Any other operating-system I/O failure.
    Io,
    /// Not enough memory for the result.
    Memory,
    /// The user interrupted the operation.
    Interrupted,
    /// Rows of a tensor being written in blocks were written already.
    AlreadyWritten,
}

impl Kind {
    /// The suffix of the R condition class.
    pub fn class(self) -> &'static str {
        match self {
            Kind::HeaderTooSmall => "header_too_small",
            Kind::HeaderTooLarge => "header_too_large",
            Kind::InvalidHeaderLength => "invalid_header_length",
            Kind::InvalidHeader => "invalid_header",
            Kind::InvalidOffset => "invalid_offset",
            Kind::InvalidTensorInfo => "invalid_tensor_info",
            Kind::IncompleteBuffer => "incomplete_buffer",
            Kind::Overflow => "overflow",
            Kind::Misaligned => "misaligned",
            Kind::DuplicateName => "duplicate_name",
            Kind::TensorNotFound => "tensor_not_found",
            Kind::InvalidSlice => "invalid_slice",
            Kind::Conversion => "conversion",
            Kind::InvalidArgument => "invalid_argument",
            Kind::Unsupported => "unsupported",
            Kind::FileNotFound => "file_not_found",
            Kind::FileChanged => "file_changed",
            Kind::Closed => "closed",
            Kind::InvalidIndex => "invalid_index",
            Kind::Io => "io",
            Kind::Memory => "memory",
            Kind::Interrupted => "interrupted",
            Kind::AlreadyWritten => "already_written",
        }
    }

    /// Whether the error means the file itself is malformed; R adds the
    /// class `safetensors_error_format` to these.
    pub fn is_format(self) -> bool {
        matches!(
            self,
            Kind::HeaderTooSmall
                | Kind::HeaderTooLarge
                | Kind::InvalidHeaderLength
                | Kind::InvalidHeader
                | Kind::InvalidOffset
                | Kind::InvalidTensorInfo
                | Kind::IncompleteBuffer
                | Kind::Overflow
                | Kind::Misaligned
                | Kind::DuplicateName
                | Kind::InvalidIndex
        )
    }
}

/// An error with its kind, a lower-case message, the tensor it concerns,
/// and a hint on what to do.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Error {
    /// The stable kind.
    pub kind: Kind,
    /// Human-readable detail, without the file name (R adds it).
    pub message: String,
    /// The tensor concerned, when there is one.
    pub tensor: Option<String>,
    /// What the user can do about it, a sentence (R shows it as an `i`
    /// bullet), when there is something to say.
    pub hint: Option<String>,
}

impl Error {
    /// An error of `kind` with `message`.
    pub fn new(kind: Kind, message: impl Into<String>) -> Error {
        Error {
            kind,
            message: message.into(),
            tensor: None,
            hint: None,
        }
    }

    /// An error of `kind` about tensor `name`.
    pub fn tensor(kind: Kind, name: &str, message: impl Into<String>) -> Error {
        Error {
            kind,
            message: message.into(),
            tensor: Some(name.to_string()),
            hint: None,
        }
    }

    /// The same error with a hint on what to do.
    pub fn with_hint(mut self, hint: impl Into<String>) -> Error {
        self.hint = Some(hint.into());
        self
    }

    /// Maps an I/O error, keeping "not found" apart.
    pub fn io(err: &std::io::Error, what: &str) -> Error {
        let kind = match err.kind() {
            std::io::ErrorKind::NotFound => Kind::FileNotFound,
            std::io::ErrorKind::OutOfMemory => Kind::Memory,
            _ => Kind::Io,
        };
        Error::new(kind, format!("{what}: {err}"))
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for Error {}

/// Result type of the core.
pub type Result<T> = std::result::Result<T, Error>;
